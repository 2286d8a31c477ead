//! Conv and linear layers: weight quantizer, the product, bias or folded BN (spec §5.2),
//! activation and activation quantizer.

use super::{activation_backward, activation_forward, add, layers, Context, Gradients, Layer};
use super::{Mode, QuantUse};
use crate::reference::layers::BnParams;
use crate::spec::{LayerKind, LayerSpec, LinearShape, Nchw};

/// A conv/linear layer; keeps its forward state.
#[derive(Debug)]
pub(super) struct Weighted {
    spec: LayerSpec,
    saved: Option<Saved>,
}

/// Forward state of a conv/linear layer.
#[derive(Debug)]
struct Saved {
    weight_q: Vec<f32>,
    weight_quant: QuantUse,
    /// Train-mode folded BN.
    bn: Option<BnSaved>,
    act_quant: Option<QuantUse>,
}

/// Train-mode folded BN state: both conv outputs and the running statistics *before* this
/// step's update (the ones the forward folded with).
#[derive(Debug)]
struct BnSaved {
    y_q: Vec<f32>,
    y_fp: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
}

impl Weighted {
    pub(super) fn new(spec: LayerSpec) -> Self {
        Self { spec, saved: None }
    }
}

impl Layer for Weighted {
    fn forward(&mut self, cx: &mut Context<'_>, inputs: &[&[f32]]) -> Vec<f32> {
        let (l, n, x) = (&self.spec, cx.n, inputs[0]);
        let name = &l.name;
        let raw_w = cx.params[&format!("{name}.weight")].clone();
        let w_used = if l.batch_norm {
            layers::fold_weight(
                &raw_w,
                &cx.params[&format!("{name}.gamma")],
                &cx.params[&format!("{name}.running_var")],
            )
        } else {
            raw_w.clone()
        };
        let (wprefix, infos) = (l.weight_quantizer(), cx.infos);
        let winfo = infos
            .iter()
            .find(|q| q.prefix == wprefix)
            .expect("weight quantizer");
        let (weight_q, weight_quant) = QuantUse::apply(cx, winfo, w_used);
        let dims = output_dims(l, n);
        let mut y = product(l, n, x, &weight_q);
        let mut bn = None;
        if l.batch_norm {
            let get = |t: &str| cx.params[&format!("{name}.{t}")].clone();
            let (gamma, beta, mean, var) = (
                get("gamma"),
                get("beta"),
                get("running_mean"),
                get("running_var"),
            );
            let p = BnParams {
                gamma: &gamma,
                beta: &beta,
                running_mean: &mean,
                running_var: &var,
            };
            assert!(
                cx.mode != Mode::FixedGates,
                "fixed-gate networks have no BN (fixed_gate_arch)"
            );
            if cx.mode == Mode::Eval {
                per_channel_add(&mut y, &dims, &layers::fold_bias(&p));
            } else {
                let y_fp = product(l, n, x, &raw_w);
                let r = layers::folded_bn_train_forward(&dims, &y, &y_fp, &p);
                cx.params
                    .insert(format!("{name}.running_mean"), r.running_mean);
                cx.params
                    .insert(format!("{name}.running_var"), r.running_var);
                let y_q = std::mem::replace(&mut y, r.out);
                bn = Some(BnSaved {
                    y_q,
                    y_fp,
                    running_mean: mean,
                    running_var: var,
                });
            }
        } else if l.bias {
            per_channel_add(&mut y, &dims, &cx.params[&format!("{name}.bias")]);
        }
        let a = activation_forward(l.activation, y);
        let (out, act_quant) = if l.act_quant {
            let (q, u) = cx.quantize_output(l, a);
            (q, Some(u))
        } else {
            (a, None)
        };
        self.saved = Some(Saved {
            weight_q,
            weight_quant,
            bn,
            act_quant,
        });
        out
    }

    fn backward(
        &self,
        cx: &mut Gradients<'_>,
        inputs: &[&[f32]],
        output: &[f32],
        dout: Vec<f32>,
    ) -> Vec<Vec<f32>> {
        let Saved {
            weight_q,
            weight_quant,
            bn,
            act_quant,
        } = self.saved.as_ref().expect("backward after forward");
        let (l, n, input) = (&self.spec, cx.n, inputs[0]);
        let name = &l.name;
        let dy = match act_quant {
            Some(aq) => {
                let da = aq.backward(cx, &dout);
                activation_backward(l.activation, true, &aq.input, da)
            }
            None => activation_backward(l.activation, false, output, dout),
        };
        let dims = output_dims(l, n);
        let params = cx.params;
        let raw_w = &params[&format!("{name}.weight")];
        let dx = if let Some(b) = bn {
            let gamma = &params[&format!("{name}.gamma")];
            let beta = &params[&format!("{name}.beta")];
            let p = BnParams {
                gamma,
                beta,
                running_mean: &b.running_mean,
                running_var: &b.running_var,
            };
            let g = layers::folded_bn_train_backward(&dims, &dy, &b.y_q, &b.y_fp, &p);
            let (dx_q, dwq) = product_backward(l, n, input, weight_q, &g.dy_q);
            let (dx_fp, dw_fp) = product_backward(l, n, input, raw_w, &g.dy_fp);
            let dwf = weight_quant.backward(cx, &dwq);
            let (dw_fold, dgamma_fold) =
                layers::fold_weight_backward(&dwf, raw_w, gamma, &b.running_var);
            let grads = &mut *cx.grads;
            add(grads, &format!("{name}.weight"), &dw_fold);
            add(grads, &format!("{name}.weight"), &dw_fp);
            add(grads, &format!("{name}.gamma"), &g.dgamma);
            add(grads, &format!("{name}.gamma"), &dgamma_fold);
            add(grads, &format!("{name}.beta"), &g.dbeta);
            dx_q.iter().zip(&dx_fp).map(|(a, b)| a + b).collect()
        } else {
            if l.bias {
                add(
                    cx.grads,
                    &format!("{name}.bias"),
                    &per_channel_sum(&dy, &dims),
                );
            }
            let (dx, dwq) = product_backward(l, n, input, weight_q, &dy);
            let dw = weight_quant.backward(cx, &dwq);
            add(cx.grads, &format!("{name}.weight"), &dw);
            dx
        };
        vec![dx]
    }
}

/// y = conv/linear(x, w) for `n` samples, no bias.
fn product(l: &LayerSpec, n: usize, x: &[f32], w: &[f32]) -> Vec<f32> {
    match (l.conv_shape(n), l.kind) {
        (Some(s), _) => layers::conv2d_forward(&s, x, w, None),
        (None, LayerKind::Linear { d_in, d_out }) => {
            layers::linear_forward(&LinearShape::new(n, d_in, d_out), x, w, None)
        }
        _ => unreachable!("only conv and linear layers have weights"),
    }
}

/// (dL/dx, dL/dw) of [`product`].
fn product_backward(
    l: &LayerSpec,
    n: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    match (l.conv_shape(n), l.kind) {
        (Some(s), _) => (
            layers::conv2d_backward_data(&s, dy, w),
            layers::conv2d_backward_weight(&s, x, dy).0,
        ),
        (None, LayerKind::Linear { d_in, d_out }) => {
            let g = layers::linear_backward(&LinearShape::new(n, d_in, d_out), x, w, dy);
            (g.dx, g.dw)
        }
        _ => unreachable!("only conv and linear layers have weights"),
    }
}

fn output_dims(l: &LayerSpec, n: usize) -> Nchw {
    Nchw::new(n, l.output[0], l.output[1], l.output[2])
}

fn per_channel_add(y: &mut [f32], dims: &Nchw, shift: &[f32]) {
    let plane = dims.h * dims.w;
    for (i, v) in y.iter_mut().enumerate() {
        *v += shift[(i / plane) % dims.c];
    }
}

fn per_channel_sum(dy: &[f32], dims: &Nchw) -> Vec<f32> {
    let plane = dims.h * dims.w;
    let mut out = vec![0.0; dims.c];
    for (i, v) in dy.iter().enumerate() {
        out[(i / plane) % dims.c] += v;
    }
    out
}
