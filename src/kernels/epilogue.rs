//! Launchers of `shaders/epilogue.wgsl`: the fused per-channel affine (+ReLU or ReLU6) epilogue
//! of a layer, optionally with the activation quantizer, and its backward.
//!
//! Forward: `a = act(scale[c]·y + shift[c])` (`act`: identity, ReLU or ReLU6) and, with a
//! quantizer,
//! `q = Q_act(a)` in the same pass. The per-channel `scale`/`shift` are: LeNet layers 1 and the
//! bias; folded BN in training σ_r/σ_B and β − γ·μ_B/σ_B; folded BN in eval 1 and the eval bias
//! (both written by [`crate::kernels::bn::FoldedBn`]).
//!
//! Backward, given `da = dL/da` (from the quantizer's backward, which already includes the
//! ReLU mask, or from the loss): `dy = scale[c]·da`, and per channel `Σ da` (the bias or β
//! gradient) and `Σ da·y` (what the folded-BN backward needs), reduced in a fixed order. After
//! ReLU6, `da` is first zeroed where the forward output `a` is not inside `(0, 6)` (PyTorch's
//! `hardtanh` backward; the unsigned quantizer masks only `a ≤ 0`).

use super::channels::{
    ChannelLayout, ChannelPlan, FLAG_RELU, FLAG_RELU6, FLAG_UNIT_SCALE, PER_THREAD,
};
use crate::gpu::{Binding, Encoder, Gpu, PipelineKey, Shader, Tensor};
pub use crate::spec::Activation;
use crate::{Error, Result};

/// The epilogue module, with the quantizer functions and the channel helpers prepended.
pub static SHADER: Shader = Shader {
    name: "epilogue",
    source: concat!(
        include_str!("../../shaders/bb_common.wgsl"),
        include_str!("../../shaders/channels.wgsl"),
        include_str!("../../shaders/epilogue.wgsl")
    ),
    requires: wgpu::Features::empty(),
    trusted: false,
};

/// `out = act(scale·y + shift)`.
pub static FORWARD: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "forward",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// `a = act(scale·y + shift)`, `q = Q_act(a)` with an unsigned quantizer.
pub static FORWARD_QUANT: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "forward_quant",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// `a = act(scale·y + shift)` (the identity, in practice), `q = Q_act(a)` with a signed
/// quantizer.
pub static FORWARD_QUANT_SIGNED: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "forward_quant",
    constants: &[("PER_THREAD", PER_THREAD), ("SIGNED_QUANT", 1)],
};
/// [`FORWARD_QUANT`] through vec4 views (`hw` a multiple of 4).
pub static FORWARD_QUANT_VEC4: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "forward_quant_vec4",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// [`FORWARD_QUANT_SIGNED`] through vec4 views.
pub static FORWARD_QUANT_SIGNED_VEC4: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "forward_quant_vec4",
    constants: &[("PER_THREAD", PER_THREAD), ("SIGNED_QUANT", 1)],
};
/// [`BACKWARD_PARTIALS`] through vec4 views (`hw` a multiple of 4).
pub static BACKWARD_PARTIALS_VEC4: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "backward_partials_vec4",
    constants: &[],
};
/// Backward level 1: `dy` and per-slice partial sums.
pub static BACKWARD_PARTIALS: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "backward_partials",
    constants: &[],
};
/// Backward level 1 after ReLU6: `da` masked by `0 < a < 6`, then as [`BACKWARD_PARTIALS`].
pub static BACKWARD_PARTIALS_RELU6: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "backward_partials_relu6",
    constants: &[],
};
/// Backward level 2: per-channel sums in slice order.
pub static BACKWARD_SUMS: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "backward_sums",
    constants: &[],
};
/// Every pipeline of this module.
pub static PIPELINES: [&PipelineKey; 9] = [
    &FORWARD,
    &FORWARD_QUANT,
    &FORWARD_QUANT_SIGNED,
    &FORWARD_QUANT_VEC4,
    &FORWARD_QUANT_SIGNED_VEC4,
    &BACKWARD_PARTIALS,
    &BACKWARD_PARTIALS_VEC4,
    &BACKWARD_PARTIALS_RELU6,
    &BACKWARD_SUMS,
];

/// How an [`Epilogue`] is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpilogueConfig {
    /// Layout of `y` (NCHW or `[n, c]`); channel = `(i / hw) % c`.
    pub layout: ChannelLayout,
    /// The activation after the affine map.
    pub activation: Activation,
    /// Multiply by a per-channel `scale` (folded BN); `false`: the scale is 1 (bias only).
    pub scaled: bool,
}

/// The activation quantizer applied in the forward pass (no pruning gate).
#[derive(Clone, Copy, Debug)]
pub struct ActQuant<'a> {
    /// Signed (after a layer without activation) or unsigned (after a ReLU or ReLU6).
    pub signed: bool,
    /// The quantizer's `[x_max]`.
    pub x_max: Binding<'a>,
    /// The quantizer's gates `[g4, g8, g16, g32, …]` (only the first four are read).
    pub gates: Binding<'a>,
    /// Output `q = Q_act(a)`, layout of `y`.
    pub q: Binding<'a>,
}

/// Buffers of [`Epilogue::forward`].
#[derive(Clone, Copy, Debug)]
pub struct EpilogueForward<'a> {
    /// Input `y`, e.g. the conv/linear output.
    pub y: Binding<'a>,
    /// Per-channel scale `[c]`; `None` exactly when the epilogue is not `scaled`.
    pub scale: Option<Binding<'a>>,
    /// Per-channel shift `[c]` (bias).
    pub shift: Binding<'a>,
    /// Output `a = act(scale·y + shift)`, layout of `y`.
    pub a: Binding<'a>,
    /// The activation quantizer, if the layer has one.
    pub quant: Option<ActQuant<'a>>,
}

/// Buffers of [`Epilogue::backward`].
#[derive(Clone, Copy, Debug)]
pub struct EpilogueBackward<'a> {
    /// `dL/da`, layout of `y`.
    pub da: Binding<'a>,
    /// The forward input `y`.
    pub y: Binding<'a>,
    /// The forward scale; `None` exactly when the epilogue is not `scaled`.
    pub scale: Option<Binding<'a>>,
    /// Output `dL/dy = scale·da` (ReLU6: `scale·da·1[0 < a < 6]`), layout of `y`.
    pub dy: Binding<'a>,
    /// The forward output `a` (ReLU6's gradient mask); `Some` exactly when the activation is
    /// [`Activation::Relu6`].
    pub a: Option<Binding<'a>>,
    /// Output `[c]`: `Σ da` per channel (the shift's gradient: a bias or β gradient slice).
    pub sum_da: Binding<'a>,
}

/// A layer's epilogue: validated layout, kernel parameters and reduction scratch.
#[derive(Debug)]
pub struct Epilogue {
    config: EpilogueConfig,
    plan: ChannelPlan,
    partials: Tensor,
    /// `[c]`: `Σ da·y` per channel after [`Epilogue::backward`] (read by the folded-BN backward).
    pub sum_da_y: Tensor,
}

impl Epilogue {
    /// Validates the layout against the device and allocates the reduction scratch.
    pub fn new(gpu: &Gpu, config: EpilogueConfig) -> Result<Self> {
        const OP: &str = "Epilogue::new";
        let mut flags = match config.activation {
            Activation::None => 0,
            Activation::Relu => FLAG_RELU,
            Activation::Relu6 => FLAG_RELU6,
        };
        if !config.scaled {
            flags |= FLAG_UNIT_SCALE;
        }
        let plan = config.layout.plan(gpu, OP, flags)?;
        Ok(Self {
            partials: gpu.zeros("epilogue partials", &[plan.partials_len()])?,
            sum_da_y: gpu.zeros("epilogue sum da*y", &[config.layout.channels])?,
            config,
            plan,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EpilogueConfig {
        &self.config
    }

    fn check(
        &self,
        op: &'static str,
        per_element: &[Binding],
        scale: Option<&Binding>,
    ) -> Result<()> {
        let layout = &self.config.layout;
        for b in per_element {
            b.expect_len(op, layout.len())?;
        }
        match (scale, self.config.scaled) {
            (Some(s), true) => s.expect_len(op, layout.channels),
            (None, false) => Ok(()),
            (_, scaled) => Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "the epilogue was built with scaled = {scaled}; pass a scale exactly when scaled"
                ),
            }),
        }
    }

    /// Records the forward pass: `a`, and `q = Q_act(a)` when `args.quant` is given.
    pub fn forward(&self, gpu: &Gpu, encoder: &mut Encoder, args: &EpilogueForward) -> Result<()> {
        const OP: &str = "Epilogue::forward";
        self.check(OP, &[args.y, args.a], args.scale.as_ref())?;
        args.shift.expect_len(OP, self.config.layout.channels)?;
        // Unit scale: the shader does not read binding 2, which still needs a buffer.
        let scale = args.scale.unwrap_or(args.shift);
        let mut bindings = vec![
            (0, Binding::whole(&self.plan.uniform)),
            (2, scale),
            (3, args.shift),
            (4, args.y),
            (5, args.a),
        ];
        let key = match &args.quant {
            None => &FORWARD,
            Some(quant) => {
                quant.q.expect_len(OP, self.config.layout.len())?;
                quant.x_max.expect_len(OP, 1)?;
                if quant.gates.len() < 4 {
                    return Err(Error::Shape {
                        op: OP,
                        expected: "at least 4 gates".into(),
                        actual: format!("{} elements", quant.gates.len()),
                    });
                }
                bindings.extend([(7, quant.x_max), (8, quant.gates)]);
                if self.plan.quads {
                    // The same buffers through the vec4 views.
                    bindings.retain(|(slot, _)| *slot != 4 && *slot != 5);
                    bindings.extend([(14, args.y), (15, args.a), (16, quant.q)]);
                    let grid = self.plan.elementwise_quads;
                    let key = match quant.signed {
                        true => &FORWARD_QUANT_SIGNED_VEC4,
                        false => &FORWARD_QUANT_VEC4,
                    };
                    return gpu.dispatch(encoder, key, &bindings, grid);
                }
                bindings.push((6, quant.q));
                if quant.signed {
                    &FORWARD_QUANT_SIGNED
                } else {
                    &FORWARD_QUANT
                }
            }
        };
        gpu.dispatch(encoder, key, &bindings, self.plan.elementwise)?;
        Ok(())
    }

    /// Records the backward pass: `dy`, `sum_da` and [`Self::sum_da_y`]. Deterministic.
    pub fn backward(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        args: &EpilogueBackward,
    ) -> Result<()> {
        const OP: &str = "Epilogue::backward";
        self.check(OP, &[args.da, args.y, args.dy], args.scale.as_ref())?;
        args.sum_da.expect_len(OP, self.config.layout.channels)?;
        let uniform = Binding::whole(&self.plan.uniform);
        let partials = Binding::from(&self.partials);
        // Unit scale: binding 2 is not read; `da` is another read-only buffer.
        let scale = args.scale.unwrap_or(args.da);
        let mut bindings = vec![
            (0, uniform),
            (1, partials),
            (2, scale),
            (4, args.y),
            (9, args.da),
            (10, args.dy),
        ];
        let relu6 = self.config.activation == Activation::Relu6;
        let key = match (args.a, relu6) {
            (Some(a), true) => {
                a.expect_len(OP, self.config.layout.len())?;
                bindings.push((13, a));
                &BACKWARD_PARTIALS_RELU6
            }
            (None, false) if self.plan.quads => {
                bindings.retain(|(slot, _)| ![4, 9, 10].contains(slot));
                bindings.extend([(14, args.y), (17, args.da), (18, args.dy)]);
                &BACKWARD_PARTIALS_VEC4
            }
            (None, false) => &BACKWARD_PARTIALS,
            _ => {
                return Err(Error::InvalidArgument {
                    op: OP,
                    msg: format!(
                        "the epilogue was built with activation {:?}; pass the forward output a \
                         exactly when it is ReLU6",
                        self.config.activation
                    ),
                })
            }
        };
        gpu.dispatch(encoder, key, &bindings, self.plan.slices)?;
        let bindings = [
            (0, uniform),
            (1, partials),
            (11, args.sum_da),
            (12, Binding::from(&self.sum_da_y)),
        ];
        gpu.dispatch(
            encoder,
            &BACKWARD_SUMS,
            &bindings,
            self.plan.channel_threads,
        )?;
        Ok(())
    }
}
