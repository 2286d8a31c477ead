//! Where one training step's GPU time goes: every dispatch of a step of a preset timed with
//! timestamp queries, summed per kernel.
//!
//! `cargo run --release --example profile [-- --model lenet5|vgg7|resnet20] [--batch N]
//! [--engine cpu|gpu] [--full-tiles] [--dispatches] [--first-step] [--json]`
//!
//! The model is built with range initialisation (timed: it compiles every pipeline, the cold
//! start of a run) and takes one timed warm-up step, then three unprofiled steps and one
//! profiled step on random images; with `--first-step` the warm-up step is the profiled one.
//! Needs an adapter with timestamp queries.

#[path = "common/exit.rs"]
mod exit;

use bayesian_bits::gpu::{Engine, Gpu, KernelConfig, KernelTime};
use bayesian_bits::nn::{Arch, InitConfig, LearningRates, Model, StepConfig};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Preset {
    Lenet5,
    Vgg7,
    Resnet20,
}

#[derive(Parser)]
#[command(about = "Per-kernel GPU time of one Bayesian Bits training step")]
struct Args {
    /// The network.
    #[arg(long, value_enum, default_value_t = Preset::Lenet5)]
    model: Preset,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Force a tile engine (`cpu` or `gpu`) instead of the adapter's choice.
    #[arg(long)]
    engine: Option<String>,
    /// CPU engine: every product on the 64×512 tile, no narrow tiles (A/B runs in one binary).
    #[arg(long)]
    full_tiles: bool,
    /// Also list every dispatch in order, with its pipeline's override constants.
    #[arg(long)]
    dispatches: bool,
    /// Profile the first step instead of a later one. Where the driver compiles a pipeline at
    /// its first dispatch (llvmpipe), each dispatch's time then includes that compilation: run
    /// with `MESA_SHADER_CACHE_DISABLE=true` to see where a cold start goes.
    #[arg(long)]
    first_step: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    exit::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let args = Args::parse();
    let mut gpu = Gpu::new_blocking()?;
    if let Some(engine) = &args.engine {
        gpu = gpu.with_engine(Engine::parse(engine)?);
    }
    if args.full_tiles {
        let config = KernelConfig {
            narrow_cpu_tiles: false,
            ..gpu.kernel_config().clone()
        };
        gpu = gpu.with_kernel_config(config);
    }
    let arch = match args.model {
        Preset::Lenet5 => Arch::lenet5(),
        Preset::Vgg7 => Arch::vgg7(),
        Preset::Resnet20 => Arch::resnet20(),
    };
    let n = args.batch;
    let image_len: usize = arch.input.iter().product();
    // Deterministic pseudo-random pixels in [-1, 1) and labels: timing does not need real data.
    let images: Vec<f32> = (0..n * image_len)
        .map(|i| ((i as u64 * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % arch.classes) as u32).collect();
    let init = InitConfig {
        chain_logits: [6.0; 4],
        prune_logit: 6.0,
        seed: 1,
    };
    let name = arch.name.clone();
    // Building the model compiles every pipeline a step needs (the cold start of a run).
    let start = std::time::Instant::now();
    let mut model = Model::init(&gpu, arch, n, &init, &images[..2 * image_len])?;
    let built = start.elapsed().as_secs_f64();
    let step = |step: u32| StepConfig {
        seed: 1,
        step,
        mu: 0.01,
        lr: LearningRates {
            weights: 1e-3,
            gates: 1e-3,
            scales: 1e-3,
        },
    };
    // A timestamp pair around every dispatch (each in its own compute pass) of the profiled
    // step: the first with --first-step, else the one after the unprofiled steps.
    let profiling = gpu.profiling(2048)?;
    let first = if args.first_step { &profiling } else { &gpu };
    let start = std::time::Instant::now();
    model.train_step(first, &images, &labels, &step(1))?;
    first.wait()?;
    let first_step = start.elapsed().as_secs_f64();
    // Wall clock of unprofiled steps (submit and wait).
    const REPS: u32 = 3;
    let start = std::time::Instant::now();
    for k in 0..REPS {
        model.train_step(&gpu, &images, &labels, &step(2 + k))?;
    }
    gpu.wait()?;
    let wall = start.elapsed().as_secs_f64() / f64::from(REPS);
    if !args.first_step {
        model.train_step(&profiling, &images, &labels, &step(2 + REPS))?;
        profiling.wait()?;
    }
    let each = profiling.read_dispatches()?;
    let times = KernelTime::per_kernel(&each);
    let total: f64 = times.iter().map(|t| t.seconds).sum();
    let dispatches: usize = times.iter().map(|t| t.dispatches).sum();
    if args.json {
        let kernels: Vec<_> = times
            .iter()
            .map(|t| {
                serde_json::json!({
                    "kernel": t.kernel, "dispatches": t.dispatches, "ms": 1e3 * t.seconds,
                })
            })
            .collect();
        let mut out = serde_json::json!({
            "adapter": gpu.adapter_name(), "engine": gpu.engine().name(), "model": name,
            "batch": n, "dispatches": dispatches, "gpu_ms": 1e3 * total, "wall_ms": 1e3 * wall,
            "build_s": built, "first_step_s": first_step,
            "kernels": kernels,
        });
        if args.dispatches {
            out["dispatches_in_order"] = each
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "kernel": d.kernel, "constants": d.constants, "ms": 1e3 * d.seconds,
                    })
                })
                .collect();
        }
        println!("{out}");
        return Ok(());
    }
    println!(
        "{name}, batch {n}: one training step on {} ({}), timestamp queries per dispatch",
        gpu.adapter_name(),
        gpu.kernel_config()
    );
    println!(
        "model built (pipelines compiled, ranges initialised) in {built:.2} s; first step {first_step:.2} s"
    );
    if args.dispatches {
        for (i, d) in each.iter().enumerate() {
            println!(
                "{i:>4} {:<32} {:>10.3} ms  {}",
                d.kernel,
                1e3 * d.seconds,
                d.constants
            );
        }
    }
    println!("{:<44} {:>6} {:>10} {:>6}", "kernel", "calls", "ms", "%");
    for t in &times {
        println!(
            "{:<44} {:>6} {:>10.3} {:>6.1}",
            t.kernel,
            t.dispatches,
            1e3 * t.seconds,
            100.0 * t.seconds / total
        );
    }
    println!(
        "{:<44} {dispatches:>6} {:>10.3} (unprofiled step: {:.3} ms wall clock, {:.1} images/s)",
        "total",
        1e3 * total,
        1e3 * wall,
        n as f64 / wall
    );
    Ok(())
}
