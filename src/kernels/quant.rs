//! Launchers of `shaders/quant.wgsl`: gate sampling, fused quantizer forward and backward.

use crate::gpu::{Binding, Gpu, PipelineKey, Shader};
use crate::Result;

/// The quantizer module, with the shared per-element functions prepended.
pub static SHADER: Shader = Shader {
    name: "quant",
    source: concat!(
        include_str!("../../shaders/bb_common.wgsl"),
        include_str!("../../shaders/quant.wgsl")
    ),
    requires: wgpu::Features::empty(),
};

/// Threads per workgroup of every quantizer entry point (fixed in the shader).
pub const WORKGROUP: u32 = 256;
/// Elements per thread of the forward kernel (`override PER_THREAD`).
pub const PER_THREAD: u32 = 8;
/// Elements per backward slice: one workgroup reduces one slice of one channel.
pub const SLICE_LEN: u32 = WORKGROUP * PER_THREAD;
/// Partial sums per slice: dx_max, dg4, dg8, dg16, dg32, dz2.
pub const PARTIALS: u32 = 6;

/// Samples (training) or thresholds (eval) the gates.
pub static SAMPLE_GATES: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "sample_gates",
    constants: &[],
};
/// Fused forward.
pub static FORWARD: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "forward",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// Backward level 1: dx and per-slice partial sums.
pub static BACKWARD_PARTIALS: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "backward_partials",
    constants: &[],
};
/// Backward level 2: fixed-order sums, logit gradients and the regulariser.
pub static BACKWARD_FINALIZE: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "backward_finalize",
    constants: &[],
};
/// Every pipeline of this module.
pub static PIPELINES: [&PipelineKey; 4] = [
    &SAMPLE_GATES,
    &FORWARD,
    &BACKWARD_PARTIALS,
    &BACKWARD_FINALIZE,
];

/// Per-quantizer constants (`struct QuantParams` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct QuantParams {
    /// Elements of the quantized tensor.
    pub len: u32,
    /// Output channels with a pruning gate (0 without pruning).
    pub prune_channels: u32,
    /// Elements per output channel (`len` without pruning).
    pub channel_len: u32,
    /// 1 for a signed (symmetric) range.
    pub signed: u32,
    /// Quantizer id, part of the gate-noise counter.
    pub quantizer: u32,
    /// Backward slices per channel.
    pub slices_per_channel: u32,
    /// Elements per backward slice.
    pub slice_len: u32,
    /// Total backward slices.
    pub num_slices: u32,
    /// mac_count / max_macs of the regulariser.
    pub mac_ratio: f32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 3],
}

/// Per-step values shared by all quantizers (`struct StepParams` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepParams {
    /// Low 32 bits of the run's seed.
    pub seed_lo: u32,
    /// High 32 bits of the run's seed.
    pub seed_hi: u32,
    /// Training step (part of the gate-noise counter).
    pub step: u32,
    /// 1: sample hard-concrete gates; 0: deterministic test-time gates.
    pub training: u32,
    /// Regulariser strength μ.
    pub mu: f32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 3],
}

/// Buffers of one quantizer, named as the shader binds them.
#[derive(Clone, Copy, Debug)]
pub struct QuantBuffers<'a> {
    /// Uniform `QuantParams`.
    pub params: Binding<'a>,
    /// Uniform `StepParams`.
    pub step: Binding<'a>,
    /// `[x_max]`.
    pub x_max: Binding<'a>,
    /// `[ℓ4, ℓ8, ℓ16, ℓ32, ℓ2…]`.
    pub logits: Binding<'a>,
    /// `[g4, g8, g16, g32, z2…]`.
    pub gates: Binding<'a>,
    /// ∂gate/∂logit, same layout as `gates`.
    pub gate_dlogit: Binding<'a>,
    /// Backward partial sums, `PARTIALS` per slice.
    pub partials: Binding<'a>,
    /// `[∂L/∂x_max]`.
    pub x_max_grad: Binding<'a>,
    /// ∂L/∂logits, same layout as `logits`.
    pub logit_grad: Binding<'a>,
    /// `[R_q]`.
    pub reg_value: Binding<'a>,
}

/// Records gate sampling.
pub fn sample_gates(gpu: &Gpu, encoder: &mut wgpu::CommandEncoder, b: &QuantBuffers) -> Result<()> {
    let bindings = [
        (0, b.params),
        (1, b.step),
        (3, b.logits),
        (4, b.gates),
        (5, b.gate_dlogit),
    ];
    gpu.dispatch(encoder, &SAMPLE_GATES, &bindings, [1, 1, 1])
}

/// Records `y = z2 · Q(x)` over `len` elements.
pub fn forward(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    b: &QuantBuffers,
    len: u32,
    x: Binding,
    y: Binding,
) -> Result<()> {
    let grid = gpu.grid("quantizer forward", len.div_ceil(SLICE_LEN))?;
    let bindings = [(0, b.params), (2, b.x_max), (4, b.gates), (6, x), (7, y)];
    gpu.dispatch(encoder, &FORWARD, &bindings, grid)?;
    Ok(())
}

/// Records the backward pass: `dx`, then `x_max_grad`, `logit_grad` (data + μ·regulariser)
/// and `reg_value`. Deterministic: fixed-order reductions, no atomics.
pub fn backward(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    b: &QuantBuffers,
    num_slices: u32,
    x: Binding,
    dy: Binding,
    dx: Binding,
) -> Result<()> {
    let grid = gpu.grid("quantizer backward", num_slices)?;
    let bindings = [
        (0, b.params),
        (2, b.x_max),
        (4, b.gates),
        (6, x),
        (7, dx),
        (8, dy),
        (9, b.partials),
    ];
    gpu.dispatch(encoder, &BACKWARD_PARTIALS, &bindings, grid)?;
    let bindings = [
        (0, b.params),
        (1, b.step),
        (3, b.logits),
        (5, b.gate_dlogit),
        (9, b.partials),
        (10, b.x_max_grad),
        (11, b.logit_grad),
        (12, b.reg_value),
    ];
    gpu.dispatch(encoder, &BACKWARD_FINALIZE, &bindings, [1, 1, 1])?;
    Ok(())
}
