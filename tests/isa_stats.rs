//! Register pressure on real GPU instruction sets, checked without a GPU: every pipeline of the
//! GPU engine, compiled by Mesa's AMD shader compiler (RADV's null device) for laptop and desktop
//! families, fits in 128 VGPRs and spills nothing.
//!
//! Needs Mesa's RADV driver (`mesa-vulkan-drivers` on Debian/Ubuntu), which CI installs; without
//! it the test fails and says so.

#[path = "../examples/isa_stats/radv.rs"]
mod radv;

use bayesian_bits::gpu::PipelineKey;
use bayesian_bits::kernels;

/// Most VGPRs a pipeline may use: RDNA3 laptop chips spill past 128 in wave64, and 128 is what
/// Apple and Intel Xe (SIMD8) give a thread.
const MAX_VGPRS: u64 = 128;

/// Every pipeline the GPU engine dispatches, elementwise kernels included.
fn gpu_engine_pipelines() -> Vec<&'static PipelineKey> {
    kernels::pipelines_for(kernels::Engine::Gpu)
}

#[test]
fn gpu_engine_fits_registers_on_amd_families() {
    let pipelines = gpu_engine_pipelines();
    assert!(!pipelines.is_empty());
    // A child process of this test binary compiles each family (see `radv::collect`).
    let child_args = [
        "gpu_engine_fits_registers_on_amd_families",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ]
    .map(String::from);
    let start = std::time::Instant::now();
    let records =
        radv::collect(&pipelines, &radv::FAMILIES, &child_args).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{} pipelines x {} families compiled in {:.1} s",
        pipelines.len(),
        radv::FAMILIES.len(),
        start.elapsed().as_secs_f64()
    );
    assert_eq!(records.len(), pipelines.len() * radv::FAMILIES.len());

    let mut failures = Vec::new();
    for r in &records {
        let name = radv::label(pipelines[r.pipeline]);
        match &r.stats {
            Ok(s) if s.spilled_vgprs > 0 || s.scratch > 0 || s.vgprs > MAX_VGPRS => {
                failures.push(format!("{name} on {}: {}", r.family, s.summary()))
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{name} on {}: did not compile: {e}", r.family)),
        }
    }
    assert!(
        failures.is_empty(),
        "pipelines over budget (0 spilled VGPRs, 0 scratch, at most {MAX_VGPRS} VGPRs):\n{}",
        failures.join("\n")
    );
}
