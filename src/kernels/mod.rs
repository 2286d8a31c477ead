//! Typed launchers, one module per WGSL kernel family in `shaders/`.
//!
//! Each module exposes its [`Shader`] and the [`PipelineKey`]s its launchers dispatch; the
//! registry below lists them all so a test can validate every specialisation with naga.

pub mod bn;
pub mod channels;
pub mod conv;
pub mod epilogue;
pub mod gemm;
pub mod int_infer;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod quant;

use crate::gpu::{PipelineKey, Shader};

/// Every shader module the launchers use (the shaders of [`pipelines`], each once).
pub fn shaders() -> Vec<&'static Shader> {
    let mut shaders: Vec<&'static Shader> = Vec::new();
    for key in pipelines() {
        if !shaders.iter().any(|s| s.name == key.shader.name) {
            shaders.push(key.shader);
        }
    }
    shaders
}

/// Every pipeline (shader, entry point, `override` constants) the launchers can dispatch.
pub fn pipelines() -> Vec<&'static PipelineKey> {
    let mut keys = quant::PIPELINES.to_vec();
    keys.extend(gemm::pipelines());
    keys.extend(conv::PIPELINES);
    keys.extend(pool::PIPELINES);
    keys.extend(loss::PIPELINES);
    keys.extend(optim::PIPELINES);
    keys.extend(bn::PIPELINES);
    keys.extend(epilogue::PIPELINES);
    keys.extend(int_infer::PIPELINES);
    keys
}
