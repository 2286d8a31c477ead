//! Typed launchers, one module per WGSL kernel family in `shaders/`.
//!
//! Each module exposes its [`Shader`] and the [`PipelineKey`]s its launchers dispatch; the
//! registry below lists them all so a test can validate every specialisation with naga.

pub mod quant;

use crate::gpu::{PipelineKey, Shader};

/// Every shader module compiled into the crate.
pub fn shaders() -> Vec<&'static Shader> {
    vec![&quant::SHADER]
}

/// Every pipeline (shader, entry point, `override` constants) the launchers can dispatch.
pub fn pipelines() -> Vec<&'static PipelineKey> {
    quant::PIPELINES.to_vec()
}
