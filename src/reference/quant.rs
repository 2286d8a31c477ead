//! CPU reference of the backward passes of the Bayesian Bits quantizer (spec §1.8) and of the
//! fixed-gate quantizer (spec §7.4), and of the regulariser (spec §3). The forward math lives in
//! [`crate::spec::quant`] and is re-exported here, so the oracle reads as one module.

use crate::spec::quant::channel_len;
pub use crate::spec::quant::*;

/// Gradients of one quantizer's backward pass (spec §1.8).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantGrads {
    /// ∂L/∂x per element.
    pub dx: Vec<f32>,
    /// ∂L/∂x_max.
    pub dx_max: f64,
    /// ∂L/∂g4 … ∂L/∂g32.
    pub dgates: [f64; 4],
    /// ∂L/∂z2 per output channel (empty without pruning).
    pub dz2: Vec<f64>,
}

/// Straight-through backward of [`quantize`] for upstream gradient `dy` (closed form of §1.8).
///
/// Reductions accumulate in f64 so the reference is more accurate than any GPU order.
pub fn quantize_backward(
    x: &[f32],
    dy: &[f32],
    x_max: f32,
    signed: bool,
    gates: [f32; 4],
    z2: Option<&[f32]>,
) -> QuantGrads {
    let per_channel = channel_len(x.len(), z2);
    let rho = if signed { 2.0 / 3.0 } else { 1.0 / 3.0 };
    let [g4, g8, g16, g32] = gates.map(f64::from);
    // Probability-like weights of each stage in the step-size gradient: (1−P4), (P4−P8), …, P32.
    let (p4, p8, p16, p32) = (g4, g4 * g8, g4 * g8 * g16, g4 * g8 * g16 * g32);
    let stage_weight = [1.0 - p4, p4 - p8, p8 - p16, p16 - p32, p32];
    let mut grads = QuantGrads {
        dx: vec![0.0; x.len()],
        dx_max: 0.0,
        dgates: [0.0; 4],
        dz2: vec![0.0; z2.map_or(0, <[f32]>::len)],
    };
    for (i, (&v, &g)) in x.iter().zip(dy).enumerate() {
        let channel = i / per_channel;
        let z = z2.map_or(1.0, |z| z[channel]);
        let gz = f64::from(g) * f64::from(z);
        let d = decompose(v, x_max, signed, gates);
        let region = clip(v, x_max, signed).1;
        if region == Region::Inside {
            grads.dx[i] = g * z;
        }
        let kappa = match region {
            Region::Above => 1.0,
            Region::Below if signed => -1.0,
            _ => 0.0,
        };
        let step_term: f64 = (0..d.stages)
            .map(|b| {
                let delta = f64::from(d.k[b]) - f64::from(d.quotient[b]);
                stage_weight[b] * delta * STAGE_LEVELS[0] / STAGE_LEVELS[b]
            })
            .sum();
        grads.dx_max += gz * (f64::from(CLIP_SHRINK) * kappa + rho * step_term);
        let e = d.parts.map(f64::from);
        let inner32 = e[4];
        let inner16 = e[3] + g32 * inner32;
        let inner8 = e[2] + g16 * inner16;
        let inner4 = e[1] + g8 * inner8;
        grads.dgates[0] += gz * inner4;
        grads.dgates[1] += gz * g4 * inner8;
        grads.dgates[2] += gz * g4 * g8 * inner16;
        grads.dgates[3] += gz * g4 * g8 * g16 * inner32;
        if z2.is_some() {
            grads.dz2[channel] += f64::from(g) * (e[0] + g4 * inner4);
        }
    }
    grads
}

/// Gradients of [`fixed_quantize`]'s straight-through backward.
#[derive(Clone, Debug, PartialEq)]
pub struct FixedQuantGrads {
    /// ∂L/∂x per element.
    pub dx: Vec<f32>,
    /// ∂L/∂x_max.
    pub dx_max: f64,
}

/// Straight-through backward of [`fixed_quantize`] for upstream gradient `dy`: §1.8 with one
/// stage, `∂L/∂x = G·m·1[inside]` and `∂L/∂x_max = Σ G·m·(c·κ + ρ·(k − x_c/s_b)·3/(2^b − 1))`
/// (the mask is fixed and gets no gradient). The sum accumulates in f64.
pub fn fixed_quantize_backward(
    x: &[f32],
    dy: &[f32],
    x_max: f32,
    signed: bool,
    bits: u32,
    mask: Option<&[f32]>,
) -> FixedQuantGrads {
    let stage = stage_of_bits(bits).expect("fixed_quantize_backward: bits");
    let s = scales(x_max, signed)[stage];
    let per_channel = channel_len(x.len(), mask);
    let rho = if signed { 2.0 / 3.0 } else { 1.0 / 3.0 };
    let mut grads = FixedQuantGrads {
        dx: vec![0.0; x.len()],
        dx_max: 0.0,
    };
    for (i, (&v, &g)) in x.iter().zip(dy).enumerate() {
        let m = mask.map_or(1.0, |m| m[i / per_channel]);
        let (clipped, region) = clip(v, x_max, signed);
        if region == Region::Inside {
            grads.dx[i] = g * m;
        }
        let kappa = match region {
            Region::Above => 1.0,
            Region::Below if signed => -1.0,
            _ => 0.0,
        };
        let q = clipped / s;
        let delta = f64::from(q.round_ties_even()) - f64::from(q);
        let step_term = delta * STAGE_LEVELS[0] / STAGE_LEVELS[stage];
        grads.dx_max +=
            f64::from(g) * f64::from(m) * (f64::from(CLIP_SHRINK) * kappa + rho * step_term);
    }
    grads
}

/// The BOP-weighted regulariser of one quantizer and its gradient (spec §3).
#[derive(Clone, Debug, PartialEq)]
pub struct Regularizer {
    /// R_q.
    pub value: f64,
    /// ∂R_q/∂ℓ4 … ∂R_q/∂ℓ32.
    pub dchain: [f64; 4],
    /// ∂R_q/∂ℓ2 per channel (empty without pruning).
    pub dprune: Vec<f64>,
}

/// R_q for chain logits ℓ4…ℓ32, optional pruning logits ℓ2, and `mac_ratio = mac_count / max_macs`.
///
/// With pruning: `mean_c p2[c] · (2m + chain)`; without: `1 + chain`, where
/// `chain = m·(4·p4 + 8·p4·p8 + 16·p4·p8·p16 + 32·p4·p8·p16·p32)`.
pub fn regularizer(
    chain_logits: [f32; 4],
    prune_logits: Option<&[f32]>,
    mac_ratio: f64,
) -> Regularizer {
    let p = chain_logits.map(|l| f64::from(prob_nonzero(l)));
    let bits = [4.0, 8.0, 16.0, 32.0];
    // chain = m·Σ_j bits_j·Π_{i≤j} p_i and its derivative w.r.t. each p_k.
    let mut chain = 0.0;
    let mut prefix = 1.0;
    for j in 0..4 {
        prefix *= p[j];
        chain += mac_ratio * bits[j] * prefix;
    }
    let dchain_dp: [f64; 4] = std::array::from_fn(|k| {
        (k..4)
            .map(|j| {
                mac_ratio * bits[j] * (0..=j).filter(|&i| i != k).map(|i| p[i]).product::<f64>()
            })
            .sum()
    });
    let (scale, value, dprune) = match prune_logits {
        Some(l2) => {
            let c = l2.len() as f64;
            let p2: Vec<f64> = l2.iter().map(|&l| f64::from(prob_nonzero(l))).collect();
            let mean_p2 = p2.iter().sum::<f64>() / c;
            let per_channel = 2.0 * mac_ratio + chain;
            let dprune = p2
                .iter()
                .map(|&q| per_channel / c * q * (1.0 - q))
                .collect();
            (mean_p2, mean_p2 * per_channel, dprune)
        }
        None => (1.0, 1.0 + chain, Vec::new()),
    };
    Regularizer {
        value,
        dchain: std::array::from_fn(|k| scale * dchain_dp[k] * p[k] * (1.0 - p[k])),
        dprune,
    }
}
