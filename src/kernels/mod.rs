//! Typed launchers, one module per WGSL kernel family in `shaders/`.
//!
//! Each module exposes its [`Shader`] and the [`PipelineKey`]s its launchers dispatch; the
//! registry below lists them all so a test can validate every specialisation with naga.

pub mod bn;
pub mod channels;
pub mod conv;
pub mod elementwise;
pub mod epilogue;
pub mod gemm;
pub mod int_infer;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod quant;
pub mod range;
pub mod tiles_gpu;

pub use crate::gpu::Engine;
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

/// Every pipeline (shader, entry point, `override` constants) the launchers can dispatch: the
/// union of [`pipelines_for`] over both engines.
pub fn pipelines() -> Vec<&'static PipelineKey> {
    let mut keys = pipelines_for(Engine::Cpu);
    for key in pipelines_for(Engine::Gpu) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Every pipeline a [`Gpu`](crate::gpu::Gpu) whose kernel configuration says `engine` can
/// dispatch, with the override constants it is created with: the engine's GEMM and
/// convolution pipelines and every elementwise and reduction kernel (shared by both engines).
pub fn pipelines_for(engine: Engine) -> Vec<&'static PipelineKey> {
    let mut keys = match engine {
        Engine::Cpu => {
            let mut keys = gemm::pipelines();
            keys.extend(gemm::every_shape(conv::PIPELINES));
            keys
        }
        Engine::Gpu => tiles_gpu::pipelines(),
    };
    keys.extend(quant::PIPELINES);
    keys.extend(pool::PIPELINES);
    keys.extend(elementwise::PIPELINES);
    keys.extend(loss::PIPELINES);
    keys.extend(optim::PIPELINES);
    keys.extend(bn::PIPELINES);
    keys.extend(epilogue::PIPELINES);
    keys.extend(int_infer::PIPELINES);
    keys.extend(range::PIPELINES);
    keys
}
