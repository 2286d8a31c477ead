//! Register use of every compute pipeline on AMD GPUs, checked without a GPU.
//!
//! Compiles each pipeline of `kernels::pipelines()` with Mesa's RADV driver on its null device
//! for four AMD families and prints, per pipeline and family: VGPRs, spilled VGPRs, scratch
//! bytes per wave, LDS bytes per workgroup, waves per SIMD and instructions.
//!
//! ```sh
//! cargo run --release --example isa_stats                    # plain table
//! cargo run --release --example isa_stats -- --markdown      # table for BENCHMARKS.md
//! cargo run --release --example isa_stats -- --exclude ::tiles --only bn --family NAVI21
//! cargo run --release --example isa_stats -- --list          # labels only
//! ```
//!
//! Needs Mesa's RADV driver (`mesa-vulkan-drivers` on Debian/Ubuntu), no GPU. The CPU engine's
//! `tiles` pipelines spill so much that ACO takes about a CPU minute and several GB of memory for
//! each on `GFX1103_R1`; `--exclude ::tiles` or `--family` keeps a run short.

#[path = "radv.rs"]
mod radv;

use bayesian_bits::kernels;
use clap::Parser;
use std::time::Instant;

/// Register use of the crate's compute pipelines on AMD GPUs (RADV null device).
#[derive(Parser)]
struct Cli {
    /// Only pipelines whose label (`shader::entry CONST=value ...`) contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Leave out pipelines whose label contains this text (e.g. `::tiles`).
    #[arg(long)]
    exclude: Option<String>,
    /// Only this family (repeatable; default: all four).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(radv::FAMILIES))]
    family: Vec<String>,
    /// Only list the pipelines that would be compiled.
    #[arg(long)]
    list: bool,
    /// Print a markdown table (one row per pipeline, one column per family).
    #[arg(long)]
    markdown: bool,
}

/// `VGPRs/spilled/scratch/LDS/waves/instructions` in one short cell.
fn cell(s: &radv::Stats) -> String {
    format!(
        "{}/{}/{}/{}/{}/{}",
        s.vgprs,
        s.spilled_vgprs,
        radv::bytes(s.scratch),
        radv::bytes(s.lds),
        s.waves,
        s.instructions
    )
}

fn main() {
    let cli = Cli::parse();
    let pipelines: Vec<_> = kernels::pipelines()
        .into_iter()
        .filter(|k| {
            let label = radv::label(k);
            cli.only.as_ref().is_none_or(|t| label.contains(t.as_str()))
                && cli
                    .exclude
                    .as_ref()
                    .is_none_or(|t| !label.contains(t.as_str()))
        })
        .collect();
    if cli.list {
        for p in &pipelines {
            println!("{}", radv::label(p));
        }
        return;
    }
    let start = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let families: Vec<&'static str> = radv::FAMILIES
        .into_iter()
        .filter(|f| cli.family.is_empty() || cli.family.iter().any(|c| c == f))
        .collect();
    let records = match radv::collect(&pipelines, &families, &args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let elapsed = start.elapsed();

    // cells[pipeline][family]
    let mut cells = vec![vec![String::new(); families.len()]; pipelines.len()];
    let mut spilling: Vec<(usize, &str, String)> = Vec::new();
    let mut failed = 0;
    for r in &records {
        let f = families.iter().position(|&f| f == r.family).unwrap_or(0);
        cells[r.pipeline][f] = match &r.stats {
            Ok(s) => {
                if s.spilled_vgprs > 0 || s.spilled_sgprs > 0 || s.scratch > 0 {
                    spilling.push((r.pipeline, r.family, s.summary()));
                }
                cell(s)
            }
            Err(e) => {
                failed += 1;
                eprintln!(
                    "{} on {}: {e}",
                    radv::label(pipelines[r.pipeline]),
                    r.family
                );
                "error".into()
            }
        };
    }

    println!(
        "cells: VGPRs/spilled VGPRs/scratch bytes per wave/LDS bytes per workgroup/waves per SIMD/instructions (K = KiB)"
    );
    if cli.markdown {
        println!("\n| pipeline | {} |", families.join(" | "));
        println!("|---{}|", "|---".repeat(families.len()));
        for (p, row) in pipelines.iter().zip(&cells) {
            println!("| `{}` | {} |", radv::label(p), row.join(" | "));
        }
    } else {
        let width = pipelines
            .iter()
            .map(|p| radv::label(p).len())
            .max()
            .unwrap_or(8);
        print!("\n{:width$}", "pipeline");
        for f in &families {
            print!("  {f:>26}");
        }
        println!();
        for (p, row) in pipelines.iter().zip(&cells) {
            print!("{:width$}", radv::label(p));
            for c in row {
                print!("  {c:>26}");
            }
            println!();
        }
    }

    println!();
    if spilling.is_empty() {
        println!("No pipeline spills on any family.");
    } else {
        println!("Pipelines that spill ({}):", spilling.len());
        for (p, family, summary) in &spilling {
            println!("  {} on {family}: {summary}", radv::label(pipelines[*p]));
        }
    }
    println!(
        "\n{} pipelines x {} families compiled in {:.1} s{}",
        pipelines.len(),
        families.len(),
        elapsed.as_secs_f64(),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
