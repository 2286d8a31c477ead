//! The layers of the reference model, one module per kind, as on the GPU ([`crate::nn`]'s
//! `layer` module): [`pool`] (max, average and global average pooling), [`flatten`], [`add`]
//! (residual add and its quantizer) and [`weighted`] (conv or linear with its weight quantizer,
//! bias or folded BN, activation and activation quantizer). The primitive operations they call
//! are in [`super::layers`].
//!
//! A [`Layer`] is one layer of one forward pass: [`Layer::forward`] computes its output and
//! keeps what [`Layer::backward`] needs. [`of`] is the one place a [`LayerSpec`] becomes a layer.

mod add;
mod flatten;
mod pool;
mod weighted;

use super::layers;
use super::model::{Mode, StepKey};
use super::quant;
use crate::spec::fixed::{fixed_gates_of, FixedGates};
use crate::spec::{Activation, LayerKind, LayerSpec, Params, QuantizerInfo};

/// One layer of one forward pass.
pub(super) trait Layer: std::fmt::Debug {
    /// The layer's output for its `inputs` (the values of [`LayerSpec::inputs`]); keeps what
    /// the backward pass needs.
    fn forward(&mut self, cx: &mut Context<'_>, inputs: &[&[f32]]) -> Vec<f32>;

    /// dL/d(input) for every input, from `dout` = dL/d(output); adds the gradients of the
    /// layer's parameters to `cx.grads`.
    fn backward(
        &self,
        cx: &mut Gradients<'_>,
        inputs: &[&[f32]],
        output: &[f32],
        dout: Vec<f32>,
    ) -> Vec<Vec<f32>>;
}

/// The layer of `spec`, before its forward pass.
pub(super) fn of(spec: &LayerSpec) -> Box<dyn Layer> {
    let spec = spec.clone();
    match spec.kind {
        LayerKind::MaxPool { .. } => Box::new(pool::MaxPool::new(spec)),
        LayerKind::AvgPool { .. } | LayerKind::GlobalAvgPool => Box::new(pool::AvgPool(spec)),
        LayerKind::Flatten => Box::new(flatten::Flatten),
        LayerKind::Add => Box::new(add::ResidualAdd::new(spec)),
        LayerKind::Conv { .. } | LayerKind::Linear { .. } => {
            Box::new(weighted::Weighted::new(spec))
        }
    }
}

/// What the layers of a forward pass share.
pub(super) struct Context<'a> {
    /// Parameters; range initialisation writes the ranges and training the BN running
    /// statistics.
    pub params: &'a mut Params,
    pub infos: &'a [QuantizerInfo],
    /// Batch size.
    pub n: usize,
    pub key: StepKey,
    pub mode: Mode,
}

impl Context<'_> {
    /// The activation quantizer of `l`'s output applied to `a`.
    fn quantize_output(&mut self, l: &LayerSpec, a: Vec<f32>) -> (Vec<f32>, QuantUse) {
        let prefix = l.activation_quantizer();
        let mut info = self
            .infos
            .iter()
            .find(|q| q.prefix == prefix)
            .expect("activation quantizer")
            .clone();
        info.len *= self.n;
        QuantUse::apply(self, &info, a)
    }
}

/// What the layers of a backward pass share.
pub(super) struct Gradients<'a> {
    pub params: &'a Params,
    /// Parameter gradients by `state_dict` name, summed over every contribution.
    pub grads: &'a mut Params,
    /// Batch size.
    pub n: usize,
}

pub(super) fn scalar(params: &Params, name: &str) -> f32 {
    params[name][0]
}

pub(super) fn chain_logits(params: &Params, prefix: &str) -> [f32; 4] {
    ["gamma_4", "gamma_8", "gamma_16", "gamma_32"].map(|g| scalar(params, &format!("{prefix}.{g}")))
}

/// Signedness is fixed at range initialisation: `x_min < 0` (spec §1.2).
fn signed(params: &Params, prefix: &str) -> bool {
    scalar(params, &format!("{prefix}.x_min")) < 0.0
}

fn gates_of(params: &Params, q: &QuantizerInfo, key: StepKey, mode: Mode) -> quant::Gates {
    let prune: &[f32] = if q.prune_channels > 0 {
        &params[&format!("{}.gamma_2", q.prefix)]
    } else {
        &[]
    };
    quant::gates(
        chain_logits(params, &q.prefix),
        prune,
        mode != Mode::Eval,
        |i| quant::gate_noise(key.seed, key.step, q.id, i),
    )
}

/// Adds `values` to the gradient `name`.
pub(super) fn add(grads: &mut Params, name: &str, values: &[f32]) {
    let slot = grads
        .entry(name.to_string())
        .or_insert_with(|| vec![0.0; values.len()]);
    for (s, v) in slot.iter_mut().zip(values) {
        *s += v;
    }
}

/// How a quantizer was applied: Bayesian Bits gates, or a fixed bit width and mask.
#[derive(Clone, Debug)]
enum Applied {
    Gated(quant::Gates),
    Fixed(FixedGates),
}

/// Saved forward state of one quantizer application.
#[derive(Clone, Debug)]
struct QuantUse {
    info: QuantizerInfo,
    input: Vec<f32>,
    applied: Applied,
}

impl QuantUse {
    fn apply(cx: &mut Context<'_>, info: &QuantizerInfo, input: Vec<f32>) -> (Vec<f32>, Self) {
        let (params, key, mode) = (&mut *cx.params, cx.key, cx.mode);
        if mode == Mode::RangeInit {
            let (lo, hi) = input
                .iter()
                .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            params.insert(format!("{}.x_min", info.prefix), vec![lo]);
            params.insert(format!("{}.x_max", info.prefix), vec![hi]);
        }
        let prefix = &info.prefix;
        let (x_max, signed) = (
            scalar(params, &format!("{prefix}.x_max")),
            signed(params, prefix),
        );
        let (out, applied) = if mode == Mode::FixedGates {
            let fixed = fixed_gates_of(info, params).expect("quantizer logits");
            let mask = fixed.mask.as_deref();
            let out = quant::fixed_quantize(&input, x_max, signed, fixed.bits, mask);
            (out, Applied::Fixed(fixed))
        } else {
            let gates = gates_of(params, info, key, mode);
            let z2 = (info.prune_channels > 0).then_some(&gates.prune[..]);
            let out = quant::quantize(&input, x_max, signed, gates.chain, z2);
            (out, Applied::Gated(gates))
        };
        let info = info.clone();
        (
            out,
            Self {
                info,
                input,
                applied,
            },
        )
    }

    /// Backward: returns dL/dinput and adds the x_max and logit gradients (data part) to
    /// `cx.grads`.
    fn backward(&self, cx: &mut Gradients<'_>, dy: &[f32]) -> Vec<f32> {
        let (params, grads) = (cx.params, &mut *cx.grads);
        let prefix = &self.info.prefix;
        let (x_max, signed) = (
            scalar(params, &format!("{prefix}.x_max")),
            signed(params, prefix),
        );
        let gates = match &self.applied {
            Applied::Gated(gates) => gates,
            Applied::Fixed(fixed) => {
                let mask = fixed.mask.as_deref();
                let g = quant::fixed_quantize_backward(
                    &self.input,
                    dy,
                    x_max,
                    signed,
                    fixed.bits,
                    mask,
                );
                add(grads, &format!("{prefix}.x_max"), &[g.dx_max as f32]);
                return g.dx;
            }
        };
        let z2 = (self.info.prune_channels > 0).then_some(&gates.prune[..]);
        let g = quant::quantize_backward(&self.input, dy, x_max, signed, gates.chain, z2);
        add(grads, &format!("{prefix}.x_max"), &[g.dx_max as f32]);
        for (b, name) in ["gamma_4", "gamma_8", "gamma_16", "gamma_32"]
            .iter()
            .enumerate()
        {
            add(
                grads,
                &format!("{prefix}.{name}"),
                &[(g.dgates[b] * f64::from(gates.chain_dlogit[b])) as f32],
            );
        }
        if z2.is_some() {
            let d: Vec<f32> = g
                .dz2
                .iter()
                .zip(&gates.prune_dlogit)
                .map(|(&d, &s)| (d * f64::from(s)) as f32)
                .collect();
            add(grads, &format!("{prefix}.gamma_2"), &d);
        }
        g.dx
    }
}

/// A layer's activation function.
fn activation_forward(activation: Activation, y: Vec<f32>) -> Vec<f32> {
    match activation {
        Activation::None => y,
        Activation::Relu => layers::relu_forward(&y),
        Activation::Relu6 => layers::relu6_forward(&y),
    }
}

/// The activation's backward from dL/da to dL/dy, given its output `a`, after the activation
/// quantizer's backward (`quantized`) or without one. The unsigned quantizer's "inside" region
/// implies a > 0, so its backward already carries the ReLU mask; ReLU6's upper mask (a ≥ 6) is
/// applied here in any case.
fn activation_backward(
    activation: Activation,
    quantized: bool,
    a: &[f32],
    da: Vec<f32>,
) -> Vec<f32> {
    match activation {
        Activation::None => da,
        Activation::Relu if quantized => da,
        Activation::Relu => layers::relu_backward(a, &da),
        Activation::Relu6 => layers::relu6_backward(a, &da),
    }
}
