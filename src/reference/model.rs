//! CPU reference of a whole Bayesian Bits model: initialisation, range initialisation, one
//! training step (forward, backward, three Adam groups) and evaluation (spec §4–§7).
//!
//! Parameters live in a map keyed by the official PyTorch `state_dict` names
//! ([`crate::nn::Arch::state_dict_shapes`]), so the GPU model, checkpoints and this reference
//! are compared name by name.

use super::layers::{self, AdamState, BnParams};
use super::quant;
use crate::spec::fixed::{fixed_gates_of, FixedGates};
use crate::spec::{Activation, Arch, LayerKind, LayerSpec, LinearShape, Nchw, Pool2dShape};
pub use crate::spec::{Group, Params, QuantizerInfo};
use std::collections::BTreeMap;

pub use crate::spec::init::{init_params, InitConfig};

/// Every quantizer of `arch`, weights before activations within a layer
/// ([`Arch::quantizers`]).
pub fn quantizers(arch: &Arch) -> Vec<QuantizerInfo> {
    arch.quantizers()
}

/// How a forward pass treats gates, ranges and batch norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Range initialisation (spec §4.1): sets every x_max from the tensor it first sees, then
    /// proceeds as `Train`.
    RangeInit,
    /// Hard-concrete gates, BN batch statistics and running-stat updates.
    Train,
    /// Deterministic gates, BN running statistics.
    Eval,
    /// Fixed-gate fine-tuning (spec §7.4): every quantizer at its test-time bit width and mask
    /// with direct rounding ([`quant::fixed_quantize`]); the network has no BN
    /// ([`crate::spec::fixed::fixed_gate_arch`]). Gradients reach weights, biases and ranges only.
    FixedGates,
}

/// Gate noise and regulariser strength of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepKey {
    /// Run seed.
    pub seed: u64,
    /// Noise counter: 0 for range initialisation, `k + 1` for the k-th training step.
    pub step: u32,
}

fn scalar(params: &Params, name: &str) -> f32 {
    params[name][0]
}

fn chain_logits(params: &Params, prefix: &str) -> [f32; 4] {
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
    fn apply(
        params: &mut Params,
        info: &QuantizerInfo,
        input: Vec<f32>,
        key: StepKey,
        mode: Mode,
    ) -> (Vec<f32>, Self) {
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

    /// Backward: returns dL/dinput and adds the x_max and logit gradients (data part) to `grads`.
    fn backward(&self, params: &Params, dy: &[f32], grads: &mut Params) -> Vec<f32> {
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

fn add(grads: &mut Params, name: &str, values: &[f32]) {
    let slot = grads
        .entry(name.to_string())
        .or_insert_with(|| vec![0.0; values.len()]);
    for (s, v) in slot.iter_mut().zip(values) {
        *s += v;
    }
}

/// What the backward pass of one layer needs.
#[derive(Debug)]
enum Saved {
    /// Max-pool: the argmax of every output.
    MaxPool {
        input_len: usize,
        argmax: Vec<u32>,
    },
    /// Layers whose backward needs only their spec (average pools, flatten).
    Passthrough(LayerSpec),
    /// Residual add: the quantizer applied to the (ReLU'd) sum.
    Add(QuantUse),
    Weighted(Box<WeightedSaved>),
}

/// Forward state of a conv/linear layer.
#[derive(Debug)]
struct WeightedSaved {
    layer: LayerSpec,
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

/// y = conv/linear(x, w) for `n` samples, no bias.
fn weighted_forward(l: &LayerSpec, n: usize, x: &[f32], w: &[f32]) -> Vec<f32> {
    match (l.conv_shape(n), l.kind) {
        (Some(s), _) => layers::conv2d_forward(&s, x, w, None),
        (None, LayerKind::Linear { d_in, d_out }) => {
            layers::linear_forward(&LinearShape::new(n, d_in, d_out), x, w, None)
        }
        _ => unreachable!("only conv and linear layers have weights"),
    }
}

/// (dL/dx, dL/dw) of [`weighted_forward`].
fn weighted_backward(
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

/// Result of a forward pass: logits and what backward needs.
#[derive(Debug)]
pub struct Forward {
    /// `[n, classes]`.
    pub logits: Vec<f32>,
    saved: Vec<Saved>,
    /// Every value (0: the input, `i + 1`: layer `i`'s output) that a backward pass reads.
    values: Vec<Vec<f32>>,
    arch: Arch,
    n: usize,
}

impl Forward {
    /// Value `v` of the forward pass: 0 is the input, `i + 1` the output of layer `i`.
    pub fn value(&self, v: usize) -> &[f32] {
        &self.values[v]
    }
}

/// The activation quantizer of `l`'s output (batch of `n`), applied to `a`.
fn quantize_output(
    params: &mut Params,
    infos: &[QuantizerInfo],
    l: &LayerSpec,
    n: usize,
    a: Vec<f32>,
    key: StepKey,
    mode: Mode,
) -> (Vec<f32>, QuantUse) {
    let prefix = l.activation_quantizer();
    let mut info = infos
        .iter()
        .find(|q| q.prefix == prefix)
        .expect("activation quantizer")
        .clone();
    info.len *= n;
    QuantUse::apply(params, &info, a, key, mode)
}

/// Runs the network on `n` images. `RangeInit` and `Train` update BN running statistics and
/// (`RangeInit`) the ranges in `params`.
pub fn forward(
    arch: &Arch,
    params: &mut Params,
    images: &[f32],
    n: usize,
    key: StepKey,
    mode: Mode,
) -> Forward {
    let infos = arch.quantizers();
    let mut values = vec![images.to_vec()];
    let mut saved = Vec::new();
    for l in &arch.layers {
        let x = &values[l.inputs[0]];
        let (y, s) = match l.kind {
            LayerKind::MaxPool { .. } => {
                let (y, argmax) = layers::maxpool2d_forward(&pool_shape(l, n), x);
                let input_len = x.len();
                (y, Saved::MaxPool { input_len, argmax })
            }
            LayerKind::AvgPool { .. } => (
                layers::avgpool2d_forward(&pool_shape(l, n), x),
                Saved::Passthrough(l.clone()),
            ),
            LayerKind::GlobalAvgPool => (
                layers::avgpool2d_forward(&pool_shape(l, n), x),
                Saved::Passthrough(l.clone()),
            ),
            LayerKind::Flatten => (x.clone(), Saved::Passthrough(l.clone())),
            LayerKind::Add => {
                let sum: Vec<f32> = x
                    .iter()
                    .zip(&values[l.inputs[1]])
                    .map(|(a, b)| a + b)
                    .collect();
                let a = activation_forward(l.activation, sum);
                let (q, u) = quantize_output(params, &infos, l, n, a, key, mode);
                (q, Saved::Add(u))
            }
            LayerKind::Conv { .. } | LayerKind::Linear { .. } => {
                let (y, w) = weighted_layer_forward(params, &infos, l, n, x, key, mode);
                (y, Saved::Weighted(Box::new(w)))
            }
        };
        values.push(y);
        saved.push(s);
    }
    Forward {
        logits: values.last().cloned().unwrap_or_default(),
        saved,
        values,
        arch: arch.clone(),
        n,
    }
}

/// A conv/linear layer with its weight quantizer, bias or folded BN, ReLU and activation
/// quantizer; returns the output and what the backward pass needs.
fn weighted_layer_forward(
    params: &mut Params,
    infos: &[QuantizerInfo],
    l: &LayerSpec,
    n: usize,
    x: &[f32],
    key: StepKey,
    mode: Mode,
) -> (Vec<f32>, WeightedSaved) {
    let name = &l.name;
    let raw_w = params[&format!("{name}.weight")].clone();
    let w_used = if l.batch_norm {
        layers::fold_weight(
            &raw_w,
            &params[&format!("{name}.gamma")],
            &params[&format!("{name}.running_var")],
        )
    } else {
        raw_w.clone()
    };
    let wprefix = l.weight_quantizer();
    let winfo = infos
        .iter()
        .find(|q| q.prefix == wprefix)
        .expect("weight quantizer");
    let (weight_q, weight_quant) = QuantUse::apply(params, winfo, w_used, key, mode);
    let dims = output_dims(l, n);
    let mut y = weighted_forward(l, n, x, &weight_q);
    let mut bn = None;
    if l.batch_norm {
        let get = |t: &str| params[&format!("{name}.{t}")].clone();
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
            mode != Mode::FixedGates,
            "fixed-gate networks have no BN (fixed_gate_arch)"
        );
        if mode == Mode::Eval {
            per_channel_add(&mut y, &dims, &layers::fold_bias(&p));
        } else {
            let y_fp = weighted_forward(l, n, x, &raw_w);
            let r = layers::folded_bn_train_forward(&dims, &y, &y_fp, &p);
            params.insert(format!("{name}.running_mean"), r.running_mean);
            params.insert(format!("{name}.running_var"), r.running_var);
            let y_q = std::mem::replace(&mut y, r.out);
            bn = Some(BnSaved {
                y_q,
                y_fp,
                running_mean: mean,
                running_var: var,
            });
        }
    } else if l.bias {
        per_channel_add(&mut y, &dims, &params[&format!("{name}.bias")]);
    }
    let a = activation_forward(l.activation, y);
    let (out, act_quant) = if l.act_quant {
        let (q, u) = quantize_output(params, infos, l, n, a, key, mode);
        (q, Some(u))
    } else {
        (a, None)
    };
    let saved = WeightedSaved {
        layer: l.clone(),
        weight_q,
        weight_quant,
        bn,
        act_quant,
    };
    (out, saved)
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

/// The pooling window of a pooling layer at batch size `n`.
fn pool_shape(l: &LayerSpec, n: usize) -> Pool2dShape {
    let [c, h, w] = l.input;
    match l.kind {
        LayerKind::MaxPool {
            kernel,
            stride,
            pad,
        }
        | LayerKind::AvgPool {
            kernel,
            stride,
            pad,
        } => Pool2dShape::square(n, c, h, w, kernel, stride, pad),
        _ => Pool2dShape::global(n, c, h, w),
    }
}

/// Sum over all quantizers of R_q and its gradient (added to `grads`, times `mu`).
pub fn regularizer(arch: &Arch, params: &Params, mu: f32, grads: &mut Params) -> f64 {
    let mut total = 0.0;
    for q in quantizers(arch) {
        let prune =
            (q.prune_channels > 0).then(|| params[&format!("{}.gamma_2", q.prefix)].clone());
        let r = quant::regularizer(
            chain_logits(params, &q.prefix),
            prune.as_deref(),
            f64::from(q.mac_ratio),
        );
        total += r.value;
        for (b, name) in ["gamma_4", "gamma_8", "gamma_16", "gamma_32"]
            .iter()
            .enumerate()
        {
            add(
                grads,
                &format!("{}.{name}", q.prefix),
                &[(f64::from(mu) * r.dchain[b]) as f32],
            );
        }
        if prune.is_some() {
            let d: Vec<f32> = r
                .dprune
                .iter()
                .map(|v| (f64::from(mu) * v) as f32)
                .collect();
            add(grads, &format!("{}.gamma_2", q.prefix), &d);
        }
    }
    total
}

fn accumulate(slot: &mut Option<Vec<f32>>, g: Vec<f32>) {
    match slot {
        Some(s) => s.iter_mut().zip(&g).for_each(|(s, g)| *s += g),
        None => *slot = Some(g),
    }
}

/// Gradients of the mean cross-entropy w.r.t. every parameter, by backpropagating `dlogits`.
/// A value read by two layers (a block input feeding the main path and the shortcut) sums the
/// gradients of both.
pub fn backward(params: &Params, fwd: &Forward, dlogits: &[f32]) -> Params {
    let mut grads = Params::new();
    let n = fwd.n;
    let mut dvalues: Vec<Option<Vec<f32>>> = vec![None; fwd.values.len()];
    dvalues[fwd.values.len() - 1] = Some(dlogits.to_vec());
    for (i, s) in fwd.saved.iter().enumerate().rev() {
        let spec = &fwd.arch.layers[i];
        let Some(dy) = dvalues[i + 1].take() else {
            continue;
        };
        let first = spec.inputs[0];
        match s {
            Saved::MaxPool { input_len, argmax } => {
                let dx = layers::maxpool2d_backward(*input_len, argmax, &dy);
                accumulate(&mut dvalues[first], dx);
            }
            Saved::Passthrough(l) => {
                let dx = match l.kind {
                    LayerKind::AvgPool { .. } | LayerKind::GlobalAvgPool => {
                        layers::avgpool2d_backward(&pool_shape(l, n), &dy)
                    }
                    _ => dy,
                };
                accumulate(&mut dvalues[first], dx);
            }
            Saved::Add(q) => {
                // The unsigned quantizer's backward carries the ReLU mask (see below).
                let da = q.backward(params, &dy, &mut grads);
                let ds = activation_backward(spec.activation, true, &q.input, da);
                accumulate(&mut dvalues[spec.inputs[1]], ds.clone());
                accumulate(&mut dvalues[first], ds);
            }
            Saved::Weighted(saved) => {
                let input = &fwd.values[first];
                let output = &fwd.values[i + 1];
                let dx = weighted_layer_backward(params, saved, n, input, output, dy, &mut grads);
                if first > 0 {
                    accumulate(&mut dvalues[first], dx);
                }
            }
        }
    }
    grads
}

fn weighted_layer_backward(
    params: &Params,
    saved: &WeightedSaved,
    n: usize,
    input: &[f32],
    output: &[f32],
    mut dy: Vec<f32>,
    grads: &mut Params,
) -> Vec<f32> {
    let WeightedSaved {
        layer: l,
        weight_q,
        weight_quant,
        bn,
        act_quant,
    } = saved;
    let name = &l.name;
    dy = match act_quant {
        Some(aq) => {
            let da = aq.backward(params, &dy, grads);
            activation_backward(l.activation, true, &aq.input, da)
        }
        None => activation_backward(l.activation, false, output, dy),
    };
    let dims = output_dims(l, n);
    let raw_w = &params[&format!("{name}.weight")];
    if let Some(b) = bn {
        let gamma = &params[&format!("{name}.gamma")];
        let beta = &params[&format!("{name}.beta")];
        let p = BnParams {
            gamma,
            beta,
            running_mean: &b.running_mean,
            running_var: &b.running_var,
        };
        let g = layers::folded_bn_train_backward(&dims, &dy, &b.y_q, &b.y_fp, &p);
        let (dx_q, dwq) = weighted_backward(l, n, input, weight_q, &g.dy_q);
        let (dx_fp, dw_fp) = weighted_backward(l, n, input, raw_w, &g.dy_fp);
        let dwf = weight_quant.backward(params, &dwq, grads);
        let (dw_fold, dgamma_fold) =
            layers::fold_weight_backward(&dwf, raw_w, gamma, &b.running_var);
        add(grads, &format!("{name}.weight"), &dw_fold);
        add(grads, &format!("{name}.weight"), &dw_fp);
        add(grads, &format!("{name}.gamma"), &g.dgamma);
        add(grads, &format!("{name}.gamma"), &dgamma_fold);
        add(grads, &format!("{name}.beta"), &g.dbeta);
        dx_q.iter().zip(&dx_fp).map(|(a, b)| a + b).collect()
    } else {
        if l.bias {
            add(grads, &format!("{name}.bias"), &per_channel_sum(&dy, &dims));
        }
        let (dx, dwq) = weighted_backward(l, n, input, weight_q, &dy);
        let dw = weight_quant.backward(params, &dwq, grads);
        add(grads, &format!("{name}.weight"), &dw);
        dx
    }
}

/// Learning rates and regulariser strength of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepConfig {
    /// Gate noise key.
    pub key: StepKey,
    /// Regulariser strength μ.
    pub mu: f32,
    /// Learning rate of the weights group (after the schedule).
    pub lr_weights: f32,
    /// Learning rate of the gate logits.
    pub lr_gates: f32,
    /// Learning rate of the ranges.
    pub lr_scales: f32,
}

/// Adam state per parameter name.
pub type Optimizer = BTreeMap<String, AdamState>;

/// Loss and accuracy of one training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy over the batch.
    pub cross_entropy: f32,
    /// Σ_q R_q (before μ).
    pub regularizer: f64,
    /// Correct predictions in the batch.
    pub correct: usize,
}

/// One training step (spec §7.1): sample gates, forward, CE + μ·ΣR, backward, three Adam groups.
pub fn train_step(
    arch: &Arch,
    params: &mut Params,
    optimizer: &mut Optimizer,
    images: &[f32],
    labels: &[u32],
    cfg: &StepConfig,
) -> StepStats {
    let fwd = forward(arch, params, images, labels.len(), cfg.key, Mode::Train);
    let ce = layers::softmax_cross_entropy(&fwd.logits, labels, arch.classes);
    let mut grads = backward(params, &fwd, &ce.dlogits);
    let regularizer = regularizer(arch, params, cfg.mu, &mut grads);
    for (name, grad) in &grads {
        let lr = match Group::of(name) {
            Some(Group::Weights) => cfg.lr_weights,
            Some(Group::Gates) => cfg.lr_gates,
            Some(Group::Scales) => cfg.lr_scales,
            None => continue,
        };
        let param = params.get_mut(name).expect("gradient of a known parameter");
        optimizer
            .entry(name.clone())
            .or_insert_with(|| AdamState::new(grad.len()))
            .update(param, grad, lr);
    }
    StepStats {
        cross_entropy: ce.loss,
        regularizer,
        correct: ce.correct,
    }
}

/// Range initialisation (spec §4.1) on a few training images (the official code uses 2).
pub fn range_init(arch: &Arch, params: &mut Params, images: &[f32], n: usize, seed: u64) {
    forward(
        arch,
        params,
        images,
        n,
        StepKey { seed, step: 0 },
        Mode::RangeInit,
    );
}

/// Correct predictions with test-time gates and BN running statistics.
pub fn evaluate(arch: &Arch, params: &Params, images: &[f32], labels: &[u32]) -> usize {
    let mut p = params.clone();
    let fwd = forward(
        arch,
        &mut p,
        images,
        labels.len(),
        StepKey { seed: 0, step: 0 },
        Mode::Eval,
    );
    layers::softmax_cross_entropy(&fwd.logits, labels, arch.classes).correct
}
