//! Launchers of `shaders/bn.wgsl`: batch norm folded into the preceding conv or linear layer
//! (spec §5.2, P13), mirroring `reference::layers::{fold_weight, fold_weight_backward,
//! folded_bn_train_forward, folded_bn_train_backward, fold_bias}`.
//!
//! One training step of a folded layer, as recorded by its owner (`σ_r = sqrt(v_r + ε)` from the
//! running statistics *before* the step):
//! 1. [`FoldedBn::fold_weight`]: `W_f = W·γ/σ_r`; quantize it; `y_q = layer(x, Q(W_f))` and
//!    `y_fp = layer(x, W)`.
//! 2. [`FoldedBn::train_stats`]: `μ_B`, `σ_B` of `y_fp` per channel into [`FoldedBn::stats`], and
//!    the affine `scale = σ_r/σ_B`, `shift = β − γ·μ_B/σ_B` into [`FoldedBn::scale`] /
//!    [`FoldedBn::shift`], which the layer's epilogue applies to `y_q`.
//! 3. Backward: the epilogue's backward gives `dy_q = scale·dout`, `Σ dout` (written straight
//!    into dβ) and `Σ dout·y_q`; [`FoldedBn::backward`] gives `dy_fp` and writes the bias part of
//!    dγ; after the quantizer's backward has produced `dW_f`, [`FoldedBn::fold_weight_backward`]
//!    *adds* `dW_f·γ/σ_r` to dW (which must already hold the `y_fp` path's weight gradient) and
//!    the folding part of dγ.
//! 4. [`FoldedBn::update_running`] after the last use of the old running statistics.
//!
//! Eval: [`FoldedBn::eval_affine`] writes `scale = 1`, `shift = β − γ·μ_r/σ_r`.

use super::channels::{ChannelLayout, ChannelPlan, PER_THREAD};
use crate::gpu::{Binding, Encoder, Gpu, PipelineKey, Shader, Tensor};
use crate::{Error, Result};

/// The batch-norm module, with the channel helpers prepended.
pub static SHADER: Shader = Shader {
    name: "bn",
    source: concat!(
        include_str!("../../shaders/channels.wgsl"),
        include_str!("../../shaders/bn.wgsl")
    ),
    requires: wgpu::Features::empty(),
    trusted: false,
};

const ELEMENTWISE: &[(&str, u32)] = &[("PER_THREAD", PER_THREAD)];

macro_rules! pipeline {
    ($name:ident, $entry:literal, $constants:expr, $doc:literal) => {
        #[doc = $doc]
        pub static $name: PipelineKey = PipelineKey {
            shader: &SHADER,
            entry: $entry,
            constants: $constants,
        };
    };
}

pipeline!(FOLD_WEIGHT, "fold_weight", ELEMENTWISE, "`W_f = W·γ/σ_r`.");
pipeline!(
    FOLD_WEIGHT_BACKWARD,
    "fold_weight_backward",
    &[],
    "`dW += dW_f·γ/σ_r`, `dγ += Σ dW_f·W / σ_r`."
);
pipeline!(
    STATS_PARTIALS,
    "stats_partials",
    &[],
    "Batch statistics, level 1: per-slice sum and squared deviations."
);
pipeline!(
    STATS_FINALIZE,
    "stats_finalize",
    &[],
    "Batch statistics, level 2: per-channel mean, std, and the train-mode affine."
);
pipeline!(
    EVAL_AFFINE,
    "eval_affine",
    &[],
    "Eval-mode affine: scale 1, shift `β − γ·μ_r/σ_r`."
);
pipeline!(
    UPDATE_RUNNING,
    "update_running",
    &[],
    "Running statistics update (momentum 0.1, unbiased variance)."
);
pipeline!(
    BACKWARD,
    "backward",
    ELEMENTWISE,
    "`dL/dy_fp` and the bias part of `dγ`."
);
pipeline!(
    BACKWARD_VEC4,
    "backward_vec4",
    ELEMENTWISE,
    "[`BACKWARD`] through vec4 views, for `h·w` a multiple of 4."
);

/// Every pipeline of this module.
pub static PIPELINES: [&PipelineKey; 8] = [
    &FOLD_WEIGHT,
    &FOLD_WEIGHT_BACKWARD,
    &STATS_PARTIALS,
    &STATS_FINALIZE,
    &EVAL_AFFINE,
    &UPDATE_RUNNING,
    &BACKWARD,
    &BACKWARD_VEC4,
];

/// Per-channel parameters and running statistics of one BN layer, each `[c]`. γ and β may be
/// slices of one packed parameter buffer; the running statistics are written by
/// [`FoldedBn::update_running`].
#[derive(Clone, Copy, Debug)]
pub struct BnBindings<'a> {
    /// Scale γ.
    pub gamma: Binding<'a>,
    /// Shift β.
    pub beta: Binding<'a>,
    /// Running mean μ_r.
    pub running_mean: Binding<'a>,
    /// Running (unbiased) variance v_r.
    pub running_var: Binding<'a>,
}

/// Buffers of [`FoldedBn::fold_weight_backward`].
#[derive(Clone, Copy, Debug)]
pub struct FoldBackward<'a> {
    /// `dL/dW_f`, layout of the weight.
    pub dw_f: Binding<'a>,
    /// The raw weight `W`.
    pub w: Binding<'a>,
    /// `dL/dW`, added to.
    pub dw: Binding<'a>,
    /// `dL/dγ` `[c]`, added to.
    pub dgamma: Binding<'a>,
}

/// Buffers of [`FoldedBn::backward`].
#[derive(Clone, Copy, Debug)]
pub struct BnBackward<'a> {
    /// `Σ dout` per channel `[c]` (= dβ, as the epilogue's backward writes it).
    pub sum_g: Binding<'a>,
    /// `Σ dout·y_q` per channel `[c]` (the epilogue's `sum_da_y`).
    pub sum_gy: Binding<'a>,
    /// The forward's `y_fp`.
    pub y_fp: Binding<'a>,
    /// Output `dL/dy_fp`, layout of `y_fp`.
    pub dy_fp: Binding<'a>,
    /// Output `[c]`: the bias part of `dL/dγ`, `−(μ_B/σ_B)·Σ dout` (overwritten).
    pub dgamma: Binding<'a>,
}

/// One folded-BN layer: validated layouts, kernel parameters and per-step state.
#[derive(Debug)]
pub struct FoldedBn {
    activations: ChannelLayout,
    weight: ChannelLayout,
    act_plan: ChannelPlan,
    weight_plan: ChannelPlan,
    partials: Tensor,
    /// `[3·c]`, planar: batch mean μ_B, batch std σ_B = sqrt(v_B + ε), and the sum of squared
    /// deviations Σ(y_fp − μ_B)², after [`FoldedBn::train_stats`].
    pub stats: Tensor,
    /// `[c]`: the epilogue's per-channel scale (σ_r/σ_B in training, 1 in eval).
    pub scale: Tensor,
    /// `[c]`: the epilogue's per-channel shift (β − γ·μ_B/σ_B in training, β − γ·μ_r/σ_r in eval).
    pub shift: Tensor,
}

impl FoldedBn {
    /// A folded-BN layer whose output has layout `activations` (NCHW for conv, `[n, c]` for
    /// linear) and whose weight has `weight_len` elements, `[c, weight_len / c]`.
    ///
    /// Training statistics need at least two values per channel (`n·h·w ≥ 2`), as in PyTorch.
    pub fn new(gpu: &Gpu, activations: ChannelLayout, weight_len: usize) -> Result<Self> {
        const OP: &str = "FoldedBn::new";
        let c = activations.channels;
        if c == 0 || weight_len == 0 || !weight_len.is_multiple_of(c) {
            return Err(Error::Shape {
                op: OP,
                expected: format!("a non-empty weight [{c}, k]"),
                actual: format!("{weight_len} elements"),
            });
        }
        if activations.per_channel() < 2 {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: format!(
                    "batch statistics need more than one value per channel, got {activations:?}"
                ),
            });
        }
        let weight = ChannelLayout::weight(c, weight_len / c);
        let act_plan = activations.plan(gpu, OP, 0)?;
        let weight_plan = weight.plan(gpu, OP, 0)?;
        Ok(Self {
            partials: gpu.zeros("bn partials", &[act_plan.partials_len()])?,
            stats: gpu.zeros("bn batch stats", &[3 * c])?,
            scale: gpu.zeros("bn scale", &[c])?,
            shift: gpu.zeros("bn shift", &[c])?,
            activations,
            weight,
            act_plan,
            weight_plan,
        })
    }

    /// Layout of the layer's output.
    pub fn activations(&self) -> &ChannelLayout {
        &self.activations
    }

    /// Layout of the weight, `[c, k]`.
    pub fn weight(&self) -> &ChannelLayout {
        &self.weight
    }

    fn check(&self, op: &'static str, bn: &BnBindings) -> Result<()> {
        let c = self.activations.channels;
        for b in [bn.gamma, bn.beta, bn.running_mean, bn.running_var] {
            b.expect_len(op, c)?;
        }
        Ok(())
    }

    /// Records `w_f = w·γ/σ_r` per output channel.
    pub fn fold_weight<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        bn: &BnBindings,
        w: impl Into<Binding<'a>>,
        w_f: impl Into<Binding<'a>>,
    ) -> Result<()> {
        const OP: &str = "FoldedBn::fold_weight";
        let (w, w_f) = (w.into(), w_f.into());
        self.check(OP, bn)?;
        w.expect_len(OP, self.weight.len())?;
        w_f.expect_len(OP, self.weight.len())?;
        let bindings = [
            (0, Binding::whole(&self.weight_plan.uniform)),
            (2, bn.gamma),
            (5, bn.running_var),
            (6, w),
            (8, w_f),
        ];
        gpu.dispatch(
            encoder,
            &FOLD_WEIGHT,
            &bindings,
            self.weight_plan.elementwise,
        )?;
        Ok(())
    }

    /// Records `dw += dw_f·γ/σ_r` and `dgamma += (Σ dw_f·w over the channel)/σ_r`.
    pub fn fold_weight_backward(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        bn: &BnBindings,
        args: &FoldBackward,
    ) -> Result<()> {
        const OP: &str = "FoldedBn::fold_weight_backward";
        self.check(OP, bn)?;
        for b in [args.dw_f, args.w, args.dw] {
            b.expect_len(OP, self.weight.len())?;
        }
        args.dgamma.expect_len(OP, self.weight.channels)?;
        let bindings = [
            (0, Binding::whole(&self.weight_plan.uniform)),
            (2, bn.gamma),
            (5, bn.running_var),
            (6, args.dw_f),
            (7, args.w),
            (8, args.dw),
            (9, args.dgamma),
        ];
        let grid = self.weight_plan.channel_groups;
        gpu.dispatch(encoder, &FOLD_WEIGHT_BACKWARD, &bindings, grid)?;
        Ok(())
    }

    /// Records the batch statistics of `y_fp` into [`Self::stats`] and the train-mode affine
    /// into [`Self::scale`] and [`Self::shift`]. Deterministic two-level reduction.
    pub fn train_stats<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        bn: &BnBindings,
        y_fp: impl Into<Binding<'a>>,
    ) -> Result<()> {
        const OP: &str = "FoldedBn::train_stats";
        let y_fp = y_fp.into();
        self.check(OP, bn)?;
        y_fp.expect_len(OP, self.activations.len())?;
        let uniform = Binding::whole(&self.act_plan.uniform);
        let partials = Binding::from(&self.partials);
        // Scalar loads: the vec4 view's grouping of the partial sums doubled the gap to the
        // reference in VGG-7's two-image step test (BENCHMARKS.md, third 2026-12-06 session).
        let bindings = [(0, uniform), (1, partials), (6, y_fp)];
        gpu.dispatch(encoder, &STATS_PARTIALS, &bindings, self.act_plan.slices)?;
        let bindings = [
            (0, uniform),
            (1, partials),
            (2, bn.gamma),
            (3, bn.beta),
            (5, bn.running_var),
            (10, Binding::from(&self.stats)),
            (11, Binding::from(&self.scale)),
            (12, Binding::from(&self.shift)),
        ];
        let grid = self.act_plan.channel_threads;
        gpu.dispatch(encoder, &STATS_FINALIZE, &bindings, grid)?;
        Ok(())
    }

    /// Records the eval-mode affine: [`Self::scale`] = 1, [`Self::shift`] = `β − γ·μ_r/σ_r`.
    pub fn eval_affine(&self, gpu: &Gpu, encoder: &mut Encoder, bn: &BnBindings) -> Result<()> {
        self.check("FoldedBn::eval_affine", bn)?;
        let bindings = [
            (0, Binding::whole(&self.act_plan.uniform)),
            (2, bn.gamma),
            (3, bn.beta),
            (4, bn.running_mean),
            (5, bn.running_var),
            (11, Binding::from(&self.scale)),
            (12, Binding::from(&self.shift)),
        ];
        let grid = self.act_plan.channel_threads;
        gpu.dispatch(encoder, &EVAL_AFFINE, &bindings, grid)?;
        Ok(())
    }

    /// Records the running-statistics update from [`Self::stats`]:
    /// `μ_r ← 0.9·μ_r + 0.1·μ_B`, `v_r ← 0.9·v_r + 0.1·Σ(y_fp − μ_B)²/(m − 1)`.
    /// Record it after the step's last use of σ_r (the backward included).
    pub fn update_running(&self, gpu: &Gpu, encoder: &mut Encoder, bn: &BnBindings) -> Result<()> {
        self.check("FoldedBn::update_running", bn)?;
        let bindings = [
            (0, Binding::whole(&self.act_plan.uniform)),
            (4, bn.running_mean),
            (5, bn.running_var),
            (10, Binding::from(&self.stats)),
        ];
        let grid = self.act_plan.channel_threads;
        gpu.dispatch(encoder, &UPDATE_RUNNING, &bindings, grid)?;
        Ok(())
    }

    /// Records the backward through the batch statistics: `dy_fp` and the bias part of dγ,
    /// from the per-channel sums of `dout` the epilogue's backward produced.
    pub fn backward(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        bn: &BnBindings,
        args: &BnBackward,
    ) -> Result<()> {
        const OP: &str = "FoldedBn::backward";
        self.check(OP, bn)?;
        let c = self.activations.channels;
        for b in [args.sum_g, args.sum_gy, args.dgamma] {
            b.expect_len(OP, c)?;
        }
        args.y_fp.expect_len(OP, self.activations.len())?;
        args.dy_fp.expect_len(OP, self.activations.len())?;
        // Where h·w is a multiple of 4, y_fp and dy_fp through the vec4 views.
        let (key, [y_slot, dy_slot], grid) = match self.act_plan.quads {
            true => (&BACKWARD_VEC4, [15, 16], self.act_plan.elementwise_quads),
            false => (&BACKWARD, [6, 8], self.act_plan.elementwise),
        };
        let bindings = [
            (0, Binding::whole(&self.act_plan.uniform)),
            (2, bn.gamma),
            (5, bn.running_var),
            (y_slot, args.y_fp),
            (dy_slot, args.dy_fp),
            (9, args.dgamma),
            (10, Binding::from(&self.stats)),
            (13, args.sum_g),
            (14, args.sum_gy),
        ];
        gpu.dispatch(encoder, key, &bindings, grid)?;
        Ok(())
    }
}
