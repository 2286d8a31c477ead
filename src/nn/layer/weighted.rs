//! Conv and linear layers: weight quantizer, the product, bias or folded BN, the fused
//! epilogue (ReLU or ReLU6, activation quantizer).
//!
//! Forward (spec §5, §7.1): [BN: fold W with σ_r] → weight quantizer → conv/linear → [BN: second
//! conv with the raw W, batch statistics] → fused epilogue (bias or BN correction, activation,
//! activation quantizer). Backward in reverse: activation quantizer → epilogue → [BN: both
//! convolutions, statistics] → weight quantizer (+μ·∂R/∂ℓ) → [BN: folding, running-stat update].

use super::{Build, Context, Io, Layer, Pass};
use crate::gpu::{Encoder, Gpu, Tensor};
use crate::kernels::bn::{BnBackward, BnBindings, FoldBackward, FoldedBn};
use crate::kernels::channels::ChannelLayout;
use crate::kernels::conv;
use crate::kernels::epilogue::{
    ActQuant, Epilogue, EpilogueBackward, EpilogueConfig, EpilogueForward,
};
use crate::kernels::gemm::{self, GemmShape};
use crate::quant::Quantizer;
use crate::spec::{Activation, LayerKind, LayerSpec};
use crate::Result;
use std::sync::Arc;

/// The view of a layer's parameter (by `state_dict` leaf, e.g. `weight`) and of its gradient.
pub(in crate::nn) type ParamViews<'a> = &'a dyn Fn(&str, &[usize]) -> Result<(Tensor, Tensor)>;

/// Tensors of one weighted layer that do not depend on the batch size.
#[derive(Debug)]
pub(in crate::nn) struct WeightSide {
    spec: LayerSpec,
    weight: Tensor,
    weight_grad: Tensor,
    bias: Option<(Tensor, Tensor)>,
    /// γ, β, running mean, running var and the γ, β gradients.
    bn: Option<BnParams>,
    quantizer: Quantizer,
    /// Folded weight (BN) and its gradient.
    folded: Option<(Tensor, Tensor)>,
    weight_q: Tensor,
    weight_q_grad: Tensor,
    /// Scratch of the convolution's backward passes, which use it in turn: the weight
    /// gradient's per-split partial sums, then the backward data's rotated weights (empty for
    /// linear layers).
    scratch: Tensor,
}

impl WeightSide {
    /// The layer `spec` with weight quantizer `quantizer`, for batches of up to `max_batch`;
    /// `param(leaf, shape)` gives the view of parameter `{spec.name}.{leaf}` and of its gradient.
    pub(in crate::nn) fn new(
        gpu: &Gpu,
        spec: &LayerSpec,
        quantizer: Quantizer,
        max_batch: usize,
        param: ParamViews<'_>,
    ) -> Result<Self> {
        let wshape = spec.weight_shape();
        let c = [spec.out_channels()];
        let bias = match spec.bias {
            true => Some(param("bias", &c)?),
            false => None,
        };
        let bn = match spec.batch_norm {
            true => {
                let (gamma, gamma_grad) = param("gamma", &c)?;
                let (beta, beta_grad) = param("beta", &c)?;
                Some(BnParams {
                    gamma,
                    beta,
                    running_mean: param("running_mean", &c)?.0,
                    running_var: param("running_var", &c)?.0,
                    gamma_grad,
                    beta_grad,
                })
            }
            false => None,
        };
        let folded = match spec.batch_norm {
            true => Some((
                gpu.zeros("folded weight", &wshape)?,
                gpu.zeros("folded weight grad", &wshape)?,
            )),
            false => None,
        };
        let scratch_len = match spec.conv_shape(max_batch) {
            Some(s) => conv::backward_scratch_len(gpu, &s),
            None => 0,
        };
        let (weight, weight_grad) = param("weight", &wshape)?;
        Ok(Self {
            spec: spec.clone(),
            weight,
            weight_grad,
            bias,
            bn,
            quantizer,
            folded,
            weight_q: gpu.zeros("quantized weight", &wshape)?,
            weight_q_grad: gpu.zeros("quantized weight grad", &wshape)?,
            scratch: gpu.zeros("conv scratch", &[scratch_len])?,
        })
    }
}

#[derive(Debug)]
struct BnParams {
    gamma: Tensor,
    beta: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    gamma_grad: Tensor,
    beta_grad: Tensor,
}

impl BnParams {
    fn bindings(&self) -> BnBindings<'_> {
        BnBindings {
            gamma: self.gamma.binding(),
            beta: self.beta.binding(),
            running_mean: self.running_mean.binding(),
            running_var: self.running_var.binding(),
        }
    }
}

/// A weighted layer at one batch size.
#[derive(Debug)]
pub(super) struct Weighted {
    io: Io,
    side: Arc<WeightSide>,
    epilogue: Epilogue,
    bn: Option<FoldedBn>,
    /// The activation quantizer and its input `a`, kept for the backward pass; `None` for the
    /// logit layer, whose output is `a` itself.
    act_quant: Option<(Quantizer, Tensor)>,
    y: Tensor,
    y_fp: Option<Tensor>,
}

impl Weighted {
    pub(super) fn new(b: Build<'_>) -> Result<Self> {
        let (l, n) = (b.spec, b.n);
        let layout = match l.kind {
            LayerKind::Conv { c_out, .. } => {
                ChannelLayout::nchw(n, c_out, l.output[1], l.output[2])
            }
            _ => ChannelLayout::rows(n, l.out_channels()),
        };
        let epilogue = Epilogue::new(
            b.gpu,
            EpilogueConfig {
                layout,
                activation: l.activation,
                scaled: l.batch_norm,
            },
        )?;
        let bn = match l.batch_norm {
            true => Some(FoldedBn::new(
                b.gpu,
                layout,
                l.weight_shape().iter().product(),
            )?),
            false => None,
        };
        Ok(Self {
            io: b.io(),
            side: b.side.expect("weighted layers have a weight side"),
            epilogue,
            bn,
            act_quant: b.act_quant,
            y: b.y.expect("weighted layers keep y"),
            y_fp: b.y_fp,
        })
    }

    /// The BN parameters and this batch size's folding kernels (BN layers).
    fn folded_bn(&self) -> Option<(&BnParams, &FoldedBn)> {
        self.side.bn.as_ref().zip(self.bn.as_ref())
    }
}

impl Layer for Weighted {
    fn forward(&self, cx: &Context<'_>, enc: &mut Encoder) -> Result<()> {
        let (w, gpu, pass) = (&*self.side, cx.gpu, cx.pass);
        let input = &cx.values[self.io.inputs[0]];
        let output = &cx.values[self.io.output];
        let source = match (self.folded_bn(), &w.folded) {
            (Some((bn, fbn)), Some((folded, _))) => {
                fbn.fold_weight(gpu, enc, &bn.bindings(), &w.weight, folded)?;
                folded
            }
            _ => &w.weight,
        };
        let prefix = w.spec.weight_quantizer();
        cx.record_range(enc, &prefix, source, &w.quantizer.x_max)?;
        cx.quantize(enc, &prefix, &w.quantizer, source, &w.weight_q)?;
        let product = Product { cx, side: w };
        product.forward(enc, input, &w.weight_q, &self.y)?;
        let (scale, shift) = match self.folded_bn() {
            Some((bn, fbn)) => {
                if pass.batch_stats() {
                    let y_fp = self.y_fp.as_ref().expect("BN layers keep y_fp");
                    product.forward(enc, input, &w.weight, y_fp)?;
                    fbn.train_stats(gpu, enc, &bn.bindings(), y_fp)?;
                    if let Pass::RangeInit(_) = pass {
                        // No backward follows, so the running statistics update here.
                        fbn.update_running(gpu, enc, &bn.bindings())?;
                    }
                } else {
                    fbn.eval_affine(gpu, enc, &bn.bindings())?;
                }
                (Some(fbn.scale.binding()), fbn.shift.binding())
            }
            None => (
                None,
                w.bias
                    .as_ref()
                    .map(|(b, _)| b.binding())
                    .expect("layers without BN have a bias"),
            ),
        };
        let separate = matches!(pass, Pass::RangeInit(_)) || cx.fixed.is_some();
        if let (true, Some((q, a))) = (separate, &self.act_quant) {
            // A range needs the whole activation before quantizing it, and the epilogue fuses
            // only the Bayesian Bits quantizer: the epilogue writes the activation unquantized,
            // then the quantizer runs on its own.
            let unquantized = EpilogueForward {
                y: self.y.binding(),
                scale,
                shift,
                a: a.binding(),
                quant: None,
            };
            self.epilogue.forward(gpu, enc, &unquantized)?;
            let prefix = w.spec.activation_quantizer();
            cx.record_range(enc, &prefix, a, &q.x_max)?;
            return cx.quantize(enc, &prefix, q, a, output);
        }
        let quant = self.act_quant.as_ref().map(|(q, _)| ActQuant {
            signed: q.config().signed,
            x_max: q.x_max.binding(),
            gates: q.gates.binding(),
            q: output.binding(),
        });
        let a = self.act_quant.as_ref().map_or(output, |(_, a)| a);
        self.epilogue.forward(
            gpu,
            enc,
            &EpilogueForward {
                y: self.y.binding(),
                scale,
                shift,
                a: a.binding(),
                quant,
            },
        )
    }

    fn backward(&self, cx: &mut Context<'_>, enc: &mut Encoder, dout: &Tensor) -> Result<()> {
        let (w, gpu) = (&*self.side, cx.gpu);
        let first = self.io.inputs[0];
        let dx = cx.target(first);
        let cx = &*cx;
        let input = &cx.values[first];
        let out_len = self.y.len();
        let da = match &self.act_quant {
            Some((q, a)) => {
                let da = cx.sized(&cx.scratch.da, out_len)?;
                let prefix = w.spec.activation_quantizer();
                cx.quantize_backward(enc, &prefix, q, a, dout, &da)?;
                da
            }
            None => dout.clone(),
        };
        let dy = cx.sized(&cx.scratch.dy, out_len)?;
        let product = Product { cx, side: w };
        let (scale, sum_da) = match self.folded_bn() {
            Some((bn, fbn)) => (Some(fbn.scale.binding()), bn.beta_grad.binding()),
            None => (
                None,
                w.bias.as_ref().map(|(_, g)| g.binding()).expect("bias"),
            ),
        };
        self.epilogue.backward(
            gpu,
            enc,
            &EpilogueBackward {
                da: da.binding(),
                y: self.y.binding(),
                scale,
                dy: dy.binding(),
                sum_da,
                a: match (&self.act_quant, w.spec.activation) {
                    (Some((_, a)), Activation::Relu6) => Some(a.binding()),
                    _ => None,
                },
            },
        )?;
        let folded_bn = match (self.folded_bn(), &w.folded) {
            (Some((bn, fbn)), Some(folded)) => Some((bn, fbn, folded)),
            _ => None,
        };
        if let Some((bn, fbn, _)) = folded_bn {
            // Full-precision path (batch statistics): writes dW and dx.
            let y_fp = self.y_fp.as_ref().expect("BN layers keep y_fp");
            let dy_fp = cx.sized(&cx.scratch.dy_fp, out_len)?;
            let args = BnBackward {
                sum_g: bn.beta_grad.binding(),
                sum_gy: self.epilogue.sum_da_y.binding(),
                y_fp: y_fp.binding(),
                dy_fp: dy_fp.binding(),
                dgamma: bn.gamma_grad.binding(),
            };
            fbn.backward(gpu, enc, &bn.bindings(), &args)?;
            let dx = dx.as_ref().map(|(t, add)| (t, *add));
            product.backward(enc, input, &w.weight, &dy_fp, dx, &w.weight_grad)?;
        }
        // Quantized path: adds to dx when the full-precision path wrote it.
        let dx = dx.as_ref().map(|(t, add)| (t, *add || folded_bn.is_some()));
        product.backward(enc, input, &w.weight_q, &dy, dx, &w.weight_q_grad)?;
        let (source, source_grad) = match folded_bn {
            Some((_, _, (folded, folded_grad))) => (folded, folded_grad),
            None => (&w.weight, &w.weight_grad),
        };
        let prefix = w.spec.weight_quantizer();
        let dw_q = &w.weight_q_grad;
        cx.quantize_backward(enc, &prefix, &w.quantizer, source, dw_q, source_grad)?;
        if let Some((bn, fbn, (_, folded_grad))) = folded_bn {
            // dL/dW_f → dW (added to the full-precision path's) and the folding part of dγ.
            let args = FoldBackward {
                dw_f: folded_grad.binding(),
                w: w.weight.binding(),
                dw: w.weight_grad.binding(),
                dgamma: bn.gamma_grad.binding(),
            };
            fbn.fold_weight_backward(gpu, enc, &bn.bindings(), &args)?;
            fbn.update_running(gpu, enc, &bn.bindings())?;
        }
        Ok(())
    }

    fn quantizers(&self) -> Vec<&Quantizer> {
        let act = self.act_quant.as_ref().map(|(q, _)| q);
        [Some(&self.side.quantizer), act]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The conv/linear products of one weighted layer at the context's batch size.
struct Product<'a> {
    cx: &'a Context<'a>,
    side: &'a WeightSide,
}

impl Product<'_> {
    /// `y = layer(x, w)` (no bias).
    fn forward(&self, enc: &mut Encoder, x: &Tensor, w: &Tensor, y: &Tensor) -> Result<()> {
        let (gpu, variant, n) = (self.cx.gpu, self.cx.variant, self.cx.n);
        match (self.side.spec.kind, self.side.spec.conv_shape(n)) {
            (_, Some(s)) => conv::conv2d_forward(gpu, enc, variant, &s, x, w, y),
            (LayerKind::Linear { d_in, d_out }, None) => gemm::gemm(
                gpu,
                enc,
                variant,
                &GemmShape::new(n, d_out, d_in, false, true),
                x,
                w,
                y,
            ),
            _ => unreachable!("weighted layers are conv or linear"),
        }
    }

    /// `dw = dL/dw` and, if given, `dx (=, or += when flagged) dL/dx` for upstream `dy`.
    fn backward(
        &self,
        enc: &mut Encoder,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        dx: Option<(&Tensor, bool)>,
        dw: &Tensor,
    ) -> Result<()> {
        let (gpu, variant, n) = (self.cx.gpu, self.cx.variant, self.cx.n);
        match (self.side.spec.kind, self.side.spec.conv_shape(n)) {
            (_, Some(s)) => {
                conv::conv2d_backward_weight(gpu, enc, variant, &s, x, dy, dw, &self.side.scratch)?;
                if let Some((dx, accumulate)) = dx {
                    let scratch = &self.side.scratch;
                    conv::conv2d_backward_data(
                        gpu, enc, variant, &s, dy, w, dx, scratch, accumulate,
                    )?;
                }
                Ok(())
            }
            (LayerKind::Linear { d_in, d_out }, None) => {
                gemm::gemm(
                    gpu,
                    enc,
                    variant,
                    &GemmShape::new(d_out, d_in, n, true, false),
                    dy,
                    x,
                    dw,
                )?;
                if let Some((dx, accumulate)) = dx {
                    let shape = GemmShape {
                        accumulate,
                        ..GemmShape::new(n, d_in, d_out, false, false)
                    };
                    gemm::gemm(gpu, enc, variant, &shape, dy, w, dx)?;
                }
                Ok(())
            }
            _ => unreachable!("weighted layers are conv or linear"),
        }
    }
}
