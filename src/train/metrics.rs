//! Gate probabilities while training: the per-step lines of `metrics.jsonl` and the "next gate
//! to flip" of the epoch table.
//!
//! Test-time bit widths change only when a gate's deterministic test-time decision flips, which
//! with the paper's initial logits takes thousands of steps (spec §2.7). What moves before that
//! is P(g ≠ 0) = sigmoid(ℓ − β·ln(−γ/ζ)) (spec §2.1), recorded here per quantizer.
//!
//! Every on/off decision below is the crate's test-time gate
//! ([`crate::spec::quant::test_gate`]), and the threshold drawn in plots is its
//! probability, [`threshold_probability`].

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::nn::Arch;
use crate::quant::QuantizerState;
use crate::spec::quant::{prob_nonzero, test_gate, LOGIT_CUTOFF, TEST_GATE_THRESHOLD};

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

fn nan_if_null_f64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn nan_if_null_4<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<[f32; 4], D::Error> {
    Ok(<[Option<f32>; 4]>::deserialize(d)?.map(|v| v.unwrap_or(f32::NAN)))
}

/// P(g ≠ 0) of a logit exactly at the test-time threshold (≈ 0.66: a gate is on at test time
/// when P(g = 0) < 0.34, spec §2.4).
pub fn threshold_probability() -> f32 {
    prob_nonzero(TEST_GATE_THRESHOLD)
}

/// Whether the crate's test-time gate is on for `logit`.
fn on(logit: f32) -> bool {
    test_gate(logit) > 0.0
}

/// Names of the chain gates g4, g8, g16, g32.
pub const CHAIN_GATES: [&str; 4] = ["g4", "g8", "g16", "g32"];

/// The pruning gates z2 of one weight quantizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneMetrics {
    /// Mean over channels of P(z2 ≠ 0).
    #[serde(deserialize_with = "nan_if_null")]
    pub mean: f32,
    /// Smallest P(z2 ≠ 0) of any channel.
    #[serde(deserialize_with = "nan_if_null")]
    pub min: f32,
    /// Fraction of channels whose test-time gate is off (pruned at test time).
    #[serde(deserialize_with = "nan_if_null")]
    pub below_threshold: f32,
}

/// The gate of one quantizer nearest to flipping its test-time decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateFlip {
    /// `g4`…`g32`, or `z2[c]` for the pruning gate of output channel c.
    pub gate: String,
    /// Its logit ℓ.
    #[serde(deserialize_with = "nan_if_null")]
    pub logit: f32,
    /// P(gate ≠ 0).
    #[serde(deserialize_with = "nan_if_null")]
    pub p: f32,
    /// Whether the gate is on at test time now (so it would flip off).
    pub on: bool,
}

impl GateFlip {
    /// Distance of the logit to the test-time threshold.
    pub fn distance(&self) -> f32 {
        (self.logit - TEST_GATE_THRESHOLD).abs()
    }

    /// e.g. `g8 0.9993 ↓` (on, would switch off) or `z2[3] 0.2100 ↑`.
    pub fn label(&self) -> String {
        let arrow = if self.on { '↓' } else { '↑' };
        format!("{} {:.4} {arrow}", self.gate, self.p)
    }
}

/// Gate probabilities and range of one quantizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizerMetrics {
    /// P(g ≠ 0) for g4, g8, g16, g32, each from its own logit.
    #[serde(deserialize_with = "nan_if_null_4")]
    pub p: [f32; 4],
    /// The range x_max.
    #[serde(deserialize_with = "nan_if_null")]
    pub x_max: f32,
    /// Test-time bit width (spec §2.5).
    pub bits: u32,
    /// Pruning gates (`null` for a quantizer without them).
    pub prune: Option<PruneMetrics>,
    /// The gate whose logit is nearest the test-time threshold among those whose flip would
    /// change the quantizer: the highest of the leading chain gates that are on, the first
    /// chain gate after them unless it is at or below the cut-off ℓ ≤ −2 (constant 0 in
    /// training, spec §2.3), and the pruning gates nearest the threshold from either side.
    pub next_flip: Option<GateFlip>,
}

impl QuantizerMetrics {
    /// The metrics of a quantizer's host state.
    pub fn from_state(state: &QuantizerState) -> Self {
        let prune = (!state.prune_logits.is_empty()).then(|| {
            let p: Vec<f32> = state
                .prune_logits
                .iter()
                .map(|&l| prob_nonzero(l))
                .collect();
            let n = p.len() as f32;
            PruneMetrics {
                mean: (p.iter().map(|&v| f64::from(v)).sum::<f64>() / p.len() as f64) as f32,
                min: p.iter().copied().fold(f32::INFINITY, f32::min),
                below_threshold: state.prune_logits.iter().filter(|&&l| !on(l)).count() as f32 / n,
            }
        });
        Self {
            p: state.chain_probabilities(),
            x_max: state.x_max,
            bits: state.bit_width(),
            prune,
            next_flip: next_flip(state),
        }
    }
}

fn flip(gate: String, logit: f32) -> GateFlip {
    GateFlip {
        gate,
        logit,
        p: prob_nonzero(logit),
        on: on(logit),
    }
}

/// The gate of `state` nearest to changing its test-time decision (see
/// [`QuantizerMetrics::next_flip`]); ties go to the chain, then the lower channel.
pub fn next_flip(state: &QuantizerState) -> Option<GateFlip> {
    let l = state.chain_logits;
    // The bit width counts the leading gates that are on: only the last of them and the first
    // gate after them change it by flipping.
    let leading = l.iter().take_while(|&&v| on(v)).count();
    let mut candidates = Vec::new();
    if leading > 0 {
        candidates.push(flip(CHAIN_GATES[leading - 1].into(), l[leading - 1]));
    }
    // A chain gate at or below the cut-off is a constant 0 in training (spec §2.3): no data
    // gradient reaches its logit and the regulariser only lowers it, so it cannot turn on.
    if leading < 4 && l[leading] > LOGIT_CUTOFF {
        candidates.push(flip(CHAIN_GATES[leading].into(), l[leading]));
    }
    let nearest = |want_on: bool| {
        state
            .prune_logits
            .iter()
            .enumerate()
            .filter(|(_, &v)| on(v) == want_on)
            .min_by(|a, b| {
                let d = |v: f32| (v - TEST_GATE_THRESHOLD).abs();
                d(*a.1).total_cmp(&d(*b.1))
            })
            .map(|(c, &v)| flip(format!("z2[{c}]"), v))
    };
    candidates.extend(nearest(true));
    candidates.extend(nearest(false));
    candidates
        .into_iter()
        .reduce(|a, b| if b.distance() < a.distance() { b } else { a })
}

/// Gate metrics of one weighted layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerGates {
    /// `state_dict` prefix of the layer, e.g. `features.0`.
    pub name: String,
    /// The weight quantizer.
    pub weight: QuantizerMetrics,
    /// The output activation quantizer (`null` for the logit layer).
    pub activation: Option<QuantizerMetrics>,
}

impl LayerGates {
    /// The nearer to flipping of the weight's and the activation's next flips, with `w.` or
    /// `a.` before the gate name.
    pub fn next_flip(&self) -> Option<GateFlip> {
        let tag = |q: &QuantizerMetrics, t: &str| {
            q.next_flip.clone().map(|f| GateFlip {
                gate: format!("{t}.{}", f.gate),
                ..f
            })
        };
        let w = tag(&self.weight, "w");
        let a = self.activation.as_ref().and_then(|q| tag(q, "a"));
        match (w, a) {
            (Some(w), Some(a)) => Some(if a.distance() < w.distance() { a } else { w }),
            (w, a) => w.or(a),
        }
    }
}

/// Gate metrics of every weighted layer of `arch`, in network order, from the quantizer
/// states by `state_dict` prefix (as [`crate::nn::Model::quantizer_states`] returns them).
/// Layers whose weight quantizer is missing from `states` are left out.
pub fn layer_gates(arch: &Arch, states: &BTreeMap<String, QuantizerState>) -> Vec<LayerGates> {
    arch.weighted_layers()
        .filter_map(|l| {
            let weight = states.get(&format!("{}.weight_quantizer.quantizer", l.name))?;
            let act = states.get(&format!("{}.activation_quantizer.quantizer", l.name));
            Some(LayerGates {
                name: l.name.to_string(),
                weight: QuantizerMetrics::from_state(weight),
                activation: act.map(QuantizerMetrics::from_state),
            })
        })
        .collect()
}

/// One per-step line of `metrics.jsonl`, written every `log_every` training steps (and after
/// an epoch's last step). A line with a `step` key is a step line; epoch lines have none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The 1-based epoch in progress.
    pub epoch: u64,
    /// Training steps completed since the start of the run.
    pub step: u64,
    /// Mean training loss over the steps since the previous line.
    #[serde(deserialize_with = "nan_if_null_f64")]
    pub loss: f64,
    /// Training accuracy in percent over the steps since the previous line.
    #[serde(deserialize_with = "nan_if_null_f64")]
    pub accuracy: f64,
    /// Regulariser ΣR (without μ) of the last step.
    #[serde(deserialize_with = "nan_if_null_f64")]
    pub regularizer: f64,
    /// Training images per second since the epoch started.
    #[serde(deserialize_with = "nan_if_null_f64")]
    pub images_per_second: f64,
    /// Per weighted layer, in network order.
    pub layers: Vec<LayerGates>,
}
