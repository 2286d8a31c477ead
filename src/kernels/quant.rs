//! Launchers of `shaders/quant.wgsl`: gate sampling, fused quantizer forward and backward, and
//! the fixed-gate fine-tuning quantizer of spec §7.4 ([`FixedQuant`]).

use crate::gpu::{Binding, Encoder, Gpu, PipelineKey, Shader};
use crate::spec::quant::stage_of_bits;
use crate::{Error, Result};

/// The quantizer module, with the shared per-element functions prepended.
pub static SHADER: Shader = Shader {
    name: "quant",
    source: concat!(
        include_str!("../../shaders/bb_common.wgsl"),
        include_str!("../../shaders/quant.wgsl")
    ),
    requires: wgpu::Features::empty(),
    trusted: false,
};

/// Threads per workgroup of every quantizer entry point (fixed in the shader).
pub const WORKGROUP: u32 = 256;
/// Elements per thread of the forward kernel (`override PER_THREAD`).
pub const PER_THREAD: u32 = 8;
/// Elements per workgroup of the forward kernels and of the fixed-width quantizer's backward.
pub const SLICE_LEN: u32 = WORKGROUP * PER_THREAD;
/// Elements per backward slice: one workgroup reduces one slice of one channel.
pub const BACKWARD_SLICE_LEN: u32 = WORKGROUP * 32;
// The vec4 backward starts every slice at a multiple of 4 elements.
const _: () = assert!(BACKWARD_SLICE_LEN.is_multiple_of(4));
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
/// Forward through vec4 views of `x` and `y`, for channels of a multiple of 4 elements.
pub static FORWARD_VEC4: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "forward_vec4",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// Backward level 1: dx and per-slice partial sums.
pub static BACKWARD_PARTIALS: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "backward_partials",
    constants: &[],
};
/// Backward level 1 through vec4 views of `x`, `dx` and `dy`, for channels of a multiple of 4
/// elements: a quarter of the loads on CPU adapters, which load every lane's element in turn.
pub static BACKWARD_PARTIALS_VEC4: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "backward_partials_vec4",
    constants: &[],
};
/// Backward level 2: fixed-order sums, logit gradients and the regulariser.
pub static BACKWARD_FINALIZE: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "backward_finalize",
    constants: &[],
};
/// Fixed-gate quantizer forward.
pub static FIXED_FORWARD: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "fixed_forward",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// Fixed-gate quantizer backward level 1: dx and per-workgroup partial sums of ∂L/∂x_max.
pub static FIXED_BACKWARD_PARTIALS: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "fixed_backward_partials",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// Fixed-gate quantizer backward level 2: ∂L/∂x_max in a fixed order.
pub static FIXED_BACKWARD_FINALIZE: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "fixed_backward_finalize",
    constants: &[],
};
/// Every pipeline of this module.
pub static PIPELINES: [&PipelineKey; 9] = [
    &SAMPLE_GATES,
    &FORWARD,
    &FORWARD_VEC4,
    &BACKWARD_PARTIALS,
    &BACKWARD_PARTIALS_VEC4,
    &BACKWARD_FINALIZE,
    &FIXED_FORWARD,
    &FIXED_BACKWARD_PARTIALS,
    &FIXED_BACKWARD_FINALIZE,
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
pub fn sample_gates(gpu: &Gpu, encoder: &mut Encoder, b: &QuantBuffers) -> Result<()> {
    let bindings = [
        (0, b.params),
        (1, b.step),
        (3, b.logits),
        (4, b.gates),
        (5, b.gate_dlogit),
    ];
    gpu.dispatch(encoder, &SAMPLE_GATES, &bindings, [1, 1, 1])
}

/// Records `y = z2 · Q(x)` over `len` elements; `quads` as for [`backward`].
pub fn forward(
    gpu: &Gpu,
    encoder: &mut Encoder,
    b: &QuantBuffers,
    len: u32,
    quads: bool,
    x: Binding,
    y: Binding,
) -> Result<()> {
    let common = [(0, b.params), (2, b.x_max), (4, b.gates)];
    let (key, views, elements) = match quads {
        true => (&FORWARD_VEC4, [(13, x), (14, y)], len / 4),
        false => (&FORWARD, [(6, x), (7, y)], len),
    };
    let grid = gpu.grid("quantizer forward", elements.div_ceil(SLICE_LEN))?;
    gpu.dispatch(encoder, key, &[&common[..], &views[..]].concat(), grid)
}

/// Records the backward pass: `dx`, then `x_max_grad`, `logit_grad` (data + μ·regulariser)
/// and `reg_value`. Deterministic: fixed-order reductions, no atomics. `quads`: every channel
/// holds a multiple of 4 elements, so `x`, `dy` and `dx` are read through vec4 views.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    encoder: &mut Encoder,
    b: &QuantBuffers,
    num_slices: u32,
    quads: bool,
    x: Binding,
    dy: Binding,
    dx: Binding,
) -> Result<()> {
    let grid = gpu.grid("quantizer backward", num_slices)?;
    let common = [(0, b.params), (2, b.x_max), (4, b.gates), (9, b.partials)];
    let (key, views) = match quads {
        true => (&BACKWARD_PARTIALS_VEC4, [(13, x), (14, dx), (15, dy)]),
        false => (&BACKWARD_PARTIALS, [(6, x), (7, dx), (8, dy)]),
    };
    gpu.dispatch(encoder, key, &[&common[..], &views[..]].concat(), grid)?;
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

/// `struct FixedParams` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct FixedParams {
    len: u32,
    mask_channels: u32,
    channel_len: u32,
    signed: u32,
    stage: u32,
    num_partials: u32,
    _pad: [u32; 2],
}

/// The fixed-gate fine-tuning quantizer of one tensor (spec §7.4): a fixed bit width b, a
/// learned x_max, the BB quantizer's signedness and an optional fixed 0/1 mask per output
/// channel (axis 0). Forward `y = mask[c] · s_b · rne(clip(x) / s_b)` with the clip and step
/// chain of the BB quantizer and direct rounding (spec §1.7); straight-through backward with
/// ∂L/∂x and ∂L/∂x_max (a deterministic two-level sum). Mirrors
/// [`crate::spec::quant::fixed_quantize`] and its backward ([`crate::reference::quant`]).
#[derive(Debug)]
pub struct FixedQuant {
    uniform: wgpu::Buffer,
    num_partials: u32,
    mask_channels: u32,
}

/// Buffers of a [`FixedQuant`] step besides the activations.
#[derive(Clone, Copy, Debug)]
pub struct FixedBuffers<'a> {
    /// `[x_max]`.
    pub x_max: Binding<'a>,
    /// One 0/1 value per output channel; `None` without a mask.
    pub mask: Option<Binding<'a>>,
    /// Scratch of [`FixedQuant::partials_len`] words.
    pub partials: Binding<'a>,
    /// `[∂L/∂x_max]`, written by the backward pass.
    pub x_max_grad: Binding<'a>,
}

impl FixedQuant {
    /// A quantizer of `len` elements at `bits` (2, 4, 8, 16 or 32) with `mask_channels`
    /// mask values (0: no mask; otherwise it must divide `len`).
    pub fn new(
        gpu: &Gpu,
        len: usize,
        bits: u32,
        signed: bool,
        mask_channels: usize,
    ) -> Result<Self> {
        const OP: &str = "FixedQuant::new";
        let stage = stage_of_bits(bits).ok_or_else(|| Error::InvalidArgument {
            op: OP,
            msg: format!("bit width {bits} is not one of 2, 4, 8, 16, 32"),
        })?;
        if len == 0 || (mask_channels > 0 && !len.is_multiple_of(mask_channels)) {
            return Err(Error::Shape {
                op: OP,
                expected: "a non-empty tensor whose length the mask channels divide".into(),
                actual: format!("{len} elements, {mask_channels} mask channels"),
            });
        }
        let len = u32::try_from(len).map_err(|_| Error::Limit {
            op: OP,
            what: "elements",
            value: len as u64,
            limit: u64::from(u32::MAX),
        })?;
        let num_partials = len.div_ceil(SLICE_LEN);
        let mask_channels = mask_channels as u32;
        let params = FixedParams {
            len,
            mask_channels,
            channel_len: len.checked_div(mask_channels).unwrap_or(len),
            signed: u32::from(signed),
            stage: stage as u32,
            num_partials,
            _pad: [0; 2],
        };
        Ok(Self {
            uniform: gpu.constant_uniform(&params),
            num_partials,
            mask_channels,
        })
    }

    /// Words of the `partials` scratch buffer.
    pub fn partials_len(&self) -> usize {
        self.num_partials as usize
    }

    /// The mask binding, checked against the construction. Without a mask `x` is bound in
    /// its place: the shader never reads it then, and a binding must still be present.
    fn mask<'a>(&self, b: &FixedBuffers<'a>, x: Binding<'a>) -> Result<Binding<'a>> {
        match (b.mask, self.mask_channels) {
            (Some(m), c) if c > 0 => Ok(m),
            (None, 0) => Ok(x),
            (m, c) => Err(Error::InvalidArgument {
                op: "FixedQuant",
                msg: format!(
                    "built with {c} mask channels but {} mask",
                    if m.is_some() { "given a" } else { "given no" }
                ),
            }),
        }
    }

    /// Records `y = mask · s_b · rne(clip(x) / s_b)`.
    pub fn forward(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        b: &FixedBuffers,
        x: Binding,
        y: Binding,
    ) -> Result<()> {
        let grid = gpu.grid("fixed quantizer forward", self.num_partials)?;
        let bindings = [
            (13, Binding::whole(&self.uniform)),
            (2, b.x_max),
            (14, self.mask(b, x)?),
            (6, x),
            (7, y),
        ];
        gpu.dispatch(encoder, &FIXED_FORWARD, &bindings, grid)
    }

    /// Records the straight-through backward for upstream gradient `dy`: `dx`, then
    /// `x_max_grad`. Deterministic: fixed-order reductions, no atomics.
    pub fn backward(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        b: &FixedBuffers,
        x: Binding,
        dy: Binding,
        dx: Binding,
    ) -> Result<()> {
        let grid = gpu.grid("fixed quantizer backward", self.num_partials)?;
        let uniform = Binding::whole(&self.uniform);
        let bindings = [
            (13, uniform),
            (2, b.x_max),
            (14, self.mask(b, x)?),
            (6, x),
            (7, dx),
            (8, dy),
            (9, b.partials),
        ];
        gpu.dispatch(encoder, &FIXED_BACKWARD_PARTIALS, &bindings, grid)?;
        let bindings = [(13, uniform), (9, b.partials), (10, b.x_max_grad)];
        gpu.dispatch(encoder, &FIXED_BACKWARD_FINALIZE, &bindings, [1, 1, 1])
    }
}
