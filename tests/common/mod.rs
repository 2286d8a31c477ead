//! Helpers shared by the GPU test files: one device per test binary, deterministic data.
#![allow(dead_code)]

use bayesian_bits::gpu::Gpu;
use bayesian_bits::reference::quant::gate_noise;
use std::sync::OnceLock;

/// The adapter wgpu picks (lavapipe in CI), created once per test binary.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        Gpu::new_blocking()
            .expect("a wgpu adapter (on Linux without a GPU: apt-get install mesa-vulkan-drivers)")
    })
}

/// `n` deterministic values uniform in `[lo, hi)`, from the same Philox stream the gates use.
pub fn uniform(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|i| lo + (hi - lo) * gate_noise(seed, (i >> 20) as u32, 7, i as u32))
        .collect()
}

/// Asserts `|a − e| ≤ rel · scale` element-wise, naming the first offender.
pub fn assert_close(actual: &[f32], expected: &[f32], rel: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    let scale = expected
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(1e-30);
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= rel * scale,
            "{what}[{i}]: gpu {a}, reference {e} (scale {scale})"
        );
    }
}
