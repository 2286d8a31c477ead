//! Typed launchers, one module per WGSL kernel family in `shaders/`.
//!
//! Each module exposes its [`Shader`] and the [`PipelineKey`]s its launchers dispatch; the
//! registry below lists them all so a test can validate every specialisation with naga.

pub mod bn;
pub mod channels;
pub mod conv;
pub mod epilogue;
pub mod gemm;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod quant;

use crate::gpu::{PipelineKey, Shader};

/// Every shader module compiled into the crate.
pub fn shaders() -> Vec<&'static Shader> {
    vec![
        &gemm::SUBGROUP_SHADER,
        &gemm::PORTABLE_SHADER,
        &quant::SHADER,
        &pool::SHADER,
        &loss::SHADER,
        &optim::SHADER,
        &bn::SHADER,
        &epilogue::SHADER,
    ]
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
    keys
}
