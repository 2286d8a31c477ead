//! The layers of the GPU model, one module per kind: [`pool`] (max, average and global average
//! pooling), [`flatten`], [`add`] (residual add and its quantizer) and [`weighted`] (conv or
//! linear with its weight quantizer, bias or folded BN, epilogue and activation quantizer).
//!
//! A [`Layer`] is one layer at one batch size. It records its forward and backward passes into
//! the step's encoder; [`Context`] carries what the layers of a plan share (the values and
//! their gradient buffers, backward scratch, the step state, fixed-gate quantizers, gradient
//! accumulation). [`build`] is the one place a [`LayerSpec`] becomes a layer. The model keeps
//! the orchestration: buffers, plans, the loss, the optimizers and the batches.

mod add;
mod flatten;
mod pool;
mod weighted;

pub(super) use weighted::WeightSide;

use crate::gpu::{Encoder, Gpu, Tensor};
use crate::kernels::elementwise::Add;
use crate::kernels::gemm::Variant;
use crate::kernels::quant::{FixedBuffers, FixedQuant};
use crate::kernels::range::RangeInit;
use crate::quant::{Quantizer, StepState};
use crate::spec::{LayerKind, LayerSpec};
use crate::Result;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One layer of a model at one batch size.
pub(super) trait Layer: std::fmt::Debug + Send + Sync {
    /// Records the forward pass: reads the layer's inputs from [`Context::values`] and writes
    /// its output value.
    fn forward(&self, cx: &Context<'_>, enc: &mut Encoder) -> Result<()>;

    /// Records the backward pass from `dout` = dL/d(output): the gradients of the layer's
    /// parameters and, through [`Context::target`], of its inputs.
    fn backward(&self, cx: &mut Context<'_>, enc: &mut Encoder, dout: &Tensor) -> Result<()>;

    /// The layer's Bayesian Bits quantizers, weight before activation (the order of
    /// [`crate::spec::Arch::quantizers`]).
    fn quantizers(&self) -> Vec<&Quantizer>;
}

/// What building one layer at batch size `n` needs.
pub(super) struct Build<'a> {
    pub gpu: &'a Gpu,
    pub n: usize,
    /// Index of the layer: its output is value `index + 1`.
    pub index: usize,
    pub spec: &'a LayerSpec,
    /// The max-pool argmax at this batch size (max pooling).
    pub argmax: Option<Tensor>,
    /// The conv/linear output y before the epilogue (weighted layers).
    pub y: Option<Tensor>,
    /// The full-precision conv output (BN layers).
    pub y_fp: Option<Tensor>,
    /// The activation quantizer at this batch size and its input `a`.
    pub act_quant: Option<(Quantizer, Tensor)>,
    /// The batch-independent part of a weighted layer.
    pub side: Option<Arc<WeightSide>>,
}

impl Build<'_> {
    fn io(&self) -> Io {
        Io {
            inputs: self.spec.inputs.clone(),
            output: self.index + 1,
        }
    }
}

/// The layer of `b.spec` at batch size `b.n`.
pub(super) fn build(b: Build<'_>) -> Result<Box<dyn Layer>> {
    Ok(match b.spec.kind {
        LayerKind::MaxPool { .. } => Box::new(pool::MaxPool::new(b)?),
        LayerKind::AvgPool { .. } | LayerKind::GlobalAvgPool => Box::new(pool::AvgPool::new(b)?),
        LayerKind::Flatten => Box::new(flatten::Flatten),
        LayerKind::Add => Box::new(add::ResidualAdd::new(b)?),
        LayerKind::Conv { .. } | LayerKind::Linear { .. } => Box::new(weighted::Weighted::new(b)?),
    })
}

/// The values a layer reads and writes (0: the network input, `i + 1`: layer `i`'s output).
#[derive(Clone, Debug)]
struct Io {
    inputs: Vec<usize>,
    output: usize,
}

/// What a recorded forward pass does besides computing the layers.
#[derive(Clone, Copy)]
pub(super) enum Pass<'a> {
    /// Sampled gates, batch statistics; the loss and its gradient for the backward pass.
    Train,
    /// Test-time gates, running statistics; the loss and accuracy into the metrics.
    Eval,
    /// Test-time gates, running statistics, logits only (no labels).
    Infer,
    /// Range initialisation (spec §7.1): as `Train`, but each quantizer first sets its range from
    /// its input, and BN updates its running statistics; no loss.
    RangeInit(&'a RangeInits),
}

impl Pass<'_> {
    /// Batch statistics (and sampled gates) rather than running statistics.
    fn batch_stats(self) -> bool {
        matches!(self, Pass::Train | Pass::RangeInit(_))
    }
}

/// The range kernels of one range-initialisation pass, keyed by quantizer prefix, each with a
/// one-word tensor that receives the quantizer's `x_min`.
#[derive(Debug, Default)]
pub(super) struct RangeInits(pub BTreeMap<String, (RangeInit, Tensor)>);

/// A fixed quantizer (spec §7.4) at one batch size: the kernel, its partial-sum scratch and the
/// quantizer's 0/1 channel mask.
#[derive(Debug)]
pub(super) struct PlanFixed {
    pub quant: FixedQuant,
    pub partials: Tensor,
    pub mask: Option<Tensor>,
}

/// Backward temporaries, sized for the largest layer at the largest batch.
#[derive(Debug)]
pub(super) struct Scratch {
    /// dL/da (before the activation quantizer), and the sum's gradient of a residual add.
    pub da: Tensor,
    /// dL/dy (after the epilogue), and a pooling gradient that is added rather than written.
    pub dy: Tensor,
    /// dL/dy of BN's full-precision convolution.
    pub dy_fp: Tensor,
}

/// What the layers of one plan share while a pass is recorded.
pub(super) struct Context<'a> {
    pub gpu: &'a Gpu,
    pub n: usize,
    pub variant: Variant,
    pub pass: Pass<'a>,
    pub step: &'a StepState,
    /// Every value at this batch size: 0 the input, `i + 1` layer `i`'s output.
    pub values: &'a [Tensor],
    /// Gradient buffers, indexed by value (`None`: no gradient needed).
    pub dvalues: &'a [Option<Tensor>],
    /// The value whose gradient buffer each value uses (a flatten shares its input's).
    pub canonical: &'a [usize],
    /// Gradient accumulation (`dst += src`) per tensor length.
    pub accumulate: &'a HashMap<usize, Add>,
    pub scratch: &'a Scratch,
    /// Fixed-gate fine-tuning: the fixed quantizer of every prefix; `None` for Bayesian Bits.
    pub fixed: Option<&'a BTreeMap<String, PlanFixed>>,
    /// Per canonical value, whether a layer has written its gradient during this backward pass.
    pub written: Vec<bool>,
}

impl Context<'_> {
    /// The first `len` words of `t`.
    fn sized(&self, t: &Tensor, len: usize) -> Result<Tensor> {
        t.slice(self.gpu, 0, &[len])
    }

    /// Where a layer's gradient w.r.t. value `v` goes, and whether to add to it (another reader
    /// of `v` wrote it first); `None` when `v` needs no gradient.
    fn target(&mut self, v: usize) -> Option<(Tensor, bool)> {
        let t = self.dvalues[v].clone()?;
        let add = std::mem::replace(&mut self.written[self.canonical[v]], true);
        Some((t, add))
    }

    /// Records `dst += src`.
    fn add_into(&self, enc: &mut Encoder, src: &Tensor, dst: &Tensor) -> Result<()> {
        self.accumulate[&src.len()].accumulate(self.gpu, enc, src, dst)
    }

    /// In a range-initialisation pass, records the range of `x` into `x_max` and quantizer
    /// `prefix`'s `x_min`.
    fn record_range(
        &self,
        enc: &mut Encoder,
        prefix: &str,
        x: &Tensor,
        x_max: &Tensor,
    ) -> Result<()> {
        match self.pass {
            Pass::RangeInit(ranges) => {
                let (range, x_min) = &ranges.0[prefix];
                range.record(self.gpu, enc, x, x_max, x_min)
            }
            _ => Ok(()),
        }
    }

    /// The fixed quantizer of `prefix` in fixed-gate mode, with its buffers (the range is the
    /// Bayesian Bits quantizer `bb`'s); `None` in Bayesian Bits mode.
    fn fixed_quantizer<'b>(
        &'b self,
        prefix: &str,
        bb: &'b Quantizer,
    ) -> Option<(&'b FixedQuant, FixedBuffers<'b>)> {
        let fixed = self.fixed?.get(prefix)?;
        let buffers = FixedBuffers {
            x_max: bb.x_max.binding(),
            mask: fixed.mask.as_ref().map(Tensor::binding),
            partials: fixed.partials.binding(),
            x_max_grad: bb.x_max_grad.binding(),
        };
        Some((&fixed.quant, buffers))
    }

    /// Records `y = Q(x)` with quantizer `prefix`: fixed in fixed-gate mode, else `bb`.
    fn quantize(
        &self,
        enc: &mut Encoder,
        prefix: &str,
        bb: &Quantizer,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<()> {
        match self.fixed_quantizer(prefix, bb) {
            Some((f, b)) => f.forward(self.gpu, enc, &b, x.binding(), y.binding()),
            None => bb.forward(self.gpu, enc, self.step, x, y),
        }
    }

    /// Records the backward of [`Context::quantize`] for upstream gradient `dy`.
    fn quantize_backward(
        &self,
        enc: &mut Encoder,
        prefix: &str,
        bb: &Quantizer,
        x: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
    ) -> Result<()> {
        match self.fixed_quantizer(prefix, bb) {
            Some((f, b)) => f.backward(self.gpu, enc, &b, x.binding(), dy.binding(), dx.binding()),
            None => bb.backward(self.gpu, enc, self.step, x, dy, dx),
        }
    }
}
