//! CPU reference of a whole Bayesian Bits model: initialisation, range initialisation, one
//! training step (forward, backward, three Adam groups) and evaluation (spec §4–§7).
//!
//! Parameters live in a map keyed by the official PyTorch `state_dict` names
//! ([`crate::nn::Arch::state_dict_shapes`]), so the GPU model, checkpoints and this reference
//! are compared name by name.
//!
//! [`forward`] and [`backward`] iterate the layers; each layer kind is a module of
//! `reference/layer/`, as on the GPU (`nn/layer/`).

use super::layer::{self, add, chain_logits, Context, Gradients, Layer};
use super::layers::{self, AdamState};
use super::quant;
use crate::spec::Arch;
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

/// Result of a forward pass: logits and what backward needs.
#[derive(Debug)]
pub struct Forward {
    /// `[n, classes]`.
    pub logits: Vec<f32>,
    /// Every layer with its forward state.
    layers: Vec<Box<dyn Layer>>,
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

/// The values `v` of `values`.
fn gather<'a>(values: &'a [Vec<f32>], v: &[usize]) -> Vec<&'a [f32]> {
    v.iter().map(|&v| values[v].as_slice()).collect()
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
    let mut cx = Context {
        params,
        infos: &infos,
        n,
        key,
        mode,
    };
    let mut values = vec![images.to_vec()];
    let mut layers = Vec::new();
    for spec in &arch.layers {
        let mut l = layer::of(spec);
        let y = l.forward(&mut cx, &gather(&values, &spec.inputs));
        values.push(y);
        layers.push(l);
    }
    Forward {
        logits: values.last().cloned().unwrap_or_default(),
        layers,
        values,
        arch: arch.clone(),
        n,
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
    let mut cx = Gradients {
        params,
        grads: &mut grads,
        n: fwd.n,
    };
    let mut dvalues: Vec<Option<Vec<f32>>> = vec![None; fwd.values.len()];
    dvalues[fwd.values.len() - 1] = Some(dlogits.to_vec());
    for (i, l) in fwd.layers.iter().enumerate().rev() {
        let Some(dout) = dvalues[i + 1].take() else {
            continue;
        };
        let spec = &fwd.arch.layers[i];
        let inputs = gather(&fwd.values, &spec.inputs);
        let dinputs = l.backward(&mut cx, &inputs, &fwd.values[i + 1], dout);
        for (&v, dx) in spec.inputs.iter().zip(dinputs) {
            // The network input needs no gradient.
            if v > 0 {
                accumulate(&mut dvalues[v], dx);
            }
        }
    }
    grads
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
