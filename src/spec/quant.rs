//! The Bayesian Bits quantizer's forward math (spec §1–§2): constants, clip, staged residual
//! rounding, nested gates, hard-concrete gates and the counter-based gate noise. The GPU kernels,
//! the model and the CPU reference all compute from these definitions.
//!
//! Every function follows the official code's float32 operation order; rounding is
//! `round_ties_even` (what `torch.round` does), never `f32::round`.

/// `fl32(1 - 1e-7) = 1 - 2^-23`: the clip bound is `CLIP_SHRINK · x_max` (spec §1.4).
pub const CLIP_SHRINK: f32 = 1.0 - 1.0 / 8_388_608.0;
/// Divisors of the step-size chain s2 = R/3, s4 = s2/5, s8 = s4/17, s16 = s8/257, s32 = s16/65537.
pub const STAGE_DIVISORS: [f32; 5] = [3.0, 5.0, 17.0, 257.0, 65537.0];
/// `2^b − 1` for b = 2, 4, 8, 16, 32: the step of stage b is `R / STAGE_LEVELS[b]` (spec §1.3).
pub const STAGE_LEVELS: [f64; 5] = [3.0, 15.0, 255.0, 65535.0, 4_294_967_295.0];
/// Largest |k| each residual stage can produce (spec P3); the 2-bit stage bound depends on signedness.
pub const RESIDUAL_BOUNDS: [f32; 4] = [2.0, 8.0, 128.0, 32768.0];
/// Hard-concrete temperature β.
pub const HC_BETA: f32 = 2.0 / 3.0;
/// Hard-concrete stretch: s̄ = s·(ζ − γ) + γ with ζ = 1.1, γ = −0.1.
pub const HC_STRETCH: f32 = 1.2;
/// Hard-concrete shift γ = −0.1.
pub const HC_SHIFT: f32 = -0.1;
/// β·ln(−γ/ζ): P(gate ≠ 0) = sigmoid(ℓ − HC_OFFSET) (spec §2.1).
pub const HC_OFFSET: f32 = -1.598_596_8;
/// Test-time gate is on iff ℓ > this (spec §2.4): the largest float32 logit that the official
/// float32 recipe `1 / (1 + exp(−fl32(o − ℓ))) < fl32(0.34)` turns off, −0.93530256
/// (`0xbf6f6ffd`). The real-number threshold `o − logit(0.34) ≈ −0.9353026` is one float32 step
/// lower and would turn this one logit on.
pub const TEST_GATE_THRESHOLD: f32 = -0.935_302_56;
/// Gate logits at or below this switch their gate and all higher gates off (spec §2.3).
pub const LOGIT_CUTOFF: f32 = -2.0;
/// Bit widths of the residual stages.
pub const STAGE_BITS: [u32; 5] = [2, 4, 8, 16, 32];

/// Step sizes `[s2, s4, s8, s16, s32]`, chained float32 divisions of the unshrunk range.
pub fn scales(x_max: f32, signed: bool) -> [f32; 5] {
    let mut s = [0.0; 5];
    let range = if signed { x_max + x_max } else { x_max };
    s[0] = range / STAGE_DIVISORS[0];
    for i in 1..5 {
        s[i] = s[i - 1] / STAGE_DIVISORS[i];
    }
    s
}

/// Which side of the clip range an element fell on (spec §1.8 regions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// `x − lo ≤ 0`.
    Below,
    /// Strictly inside the range: gradient passes to x.
    Inside,
    /// `x − lo > 0` and `(hi − lo) − (x − lo) ≤ 0`.
    Above,
}

/// PACT-style clip in the official relu form (spec §1.4); not a `min/max` clamp.
pub fn clip(x: f32, x_max: f32, signed: bool) -> (f32, Region) {
    let hi = CLIP_SHRINK * x_max;
    let lo = if signed { -hi } else { 0.0 };
    let a = x - lo;
    let b = (hi - lo) - a.max(0.0);
    let region = if a <= 0.0 {
        Region::Below
    } else if b <= 0.0 {
        Region::Above
    } else {
        Region::Inside
    };
    (hi - b.max(0.0), region)
}

/// One element's residual decomposition: integers `k`, unrounded quotients `r/s`, and parts `s·k`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Decomposition {
    /// Clipped input x_c.
    pub clipped: f32,
    /// Rounded stage integers k2…k32 (0 for stages not evaluated).
    pub k: [f32; 5],
    /// Unrounded quotients r_b / s_b (0 for stages not evaluated).
    pub quotient: [f32; 5],
    /// Parts x2, e4, e8, e16, e32 (0 for stages not evaluated).
    pub parts: [f32; 5],
    /// Number of stages evaluated (1 = only the 2-bit base).
    pub stages: usize,
}

/// Number of stages evaluated for these gates: stage b runs only if all gates g4…g_b are > 0.
pub fn evaluated_stages(gates: [f32; 4]) -> usize {
    1 + gates.iter().take_while(|&&g| g > 0.0).count()
}

/// Staged residual rounding with per-stage integer clamps (spec §1.5, P3).
pub fn decompose(x: f32, x_max: f32, signed: bool, gates: [f32; 4]) -> Decomposition {
    let s = scales(x_max, signed);
    let (clipped, _) = clip(x, x_max, signed);
    let stages = evaluated_stages(gates);
    let mut d = Decomposition {
        clipped,
        stages,
        ..Default::default()
    };
    let (k2_lo, k2_hi) = if signed { (-1.0, 1.0) } else { (0.0, 3.0) };
    let mut residual = clipped;
    for b in 0..stages {
        if b > 0 {
            // Left-to-right subtraction of all previous parts (the order matters at 16/32 bits).
            residual = d.parts[..b].iter().fold(clipped, |r, &p| r - p);
        }
        let q = residual / s[b];
        let (lo, hi) = if b == 0 {
            (k2_lo, k2_hi)
        } else {
            (-RESIDUAL_BOUNDS[b - 1], RESIDUAL_BOUNDS[b - 1])
        };
        d.quotient[b] = q;
        d.k[b] = q.round_ties_even().clamp(lo, hi);
        d.parts[b] = s[b] * d.k[b];
    }
    d
}

/// Nested gate combination `x2 + g4·(e4 + g8·(e8 + g16·(e16 + g32·e32)))`, innermost first.
pub fn combine(parts: [f32; 5], gates: [f32; 4]) -> f32 {
    let mut acc = parts[4];
    for b in (0..4).rev() {
        acc = parts[b] + gates[b] * acc;
    }
    acc
}

/// Elements per output channel when `z2` (one value per channel along axis 0) applies.
pub(crate) fn channel_len(len: usize, z2: Option<&[f32]>) -> usize {
    match z2 {
        Some(z) if !z.is_empty() => len / z.len(),
        _ => len.max(1),
    }
}

/// Quantizes a tensor: clip, residual stages, nested gates, then the pruning gate on axis 0.
pub fn quantize(
    x: &[f32],
    x_max: f32,
    signed: bool,
    gates: [f32; 4],
    z2: Option<&[f32]>,
) -> Vec<f32> {
    let per_channel = channel_len(x.len(), z2);
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let y = combine(decompose(v, x_max, signed, gates).parts, gates);
            z2.map_or(y, |z| z[i / per_channel] * y)
        })
        .collect()
}

/// The fixed-gate fine-tuning quantizer (spec §7.4): `mask[c] · s_b · rne(x_c / s_b)` with the
/// clip of [`clip`], `s_b` from the chain of [`scales`] and **direct** rounding: no integer
/// clamp, so a signed clipped extreme may land on ±2^(b−1) (spec §1.7). `mask` holds one 0/1
/// value per output channel (axis 0). Panics unless `bits` is one of [`STAGE_BITS`].
pub fn fixed_quantize(
    x: &[f32],
    x_max: f32,
    signed: bool,
    bits: u32,
    mask: Option<&[f32]>,
) -> Vec<f32> {
    let s = scales(x_max, signed)[stage_of_bits(bits).expect("fixed_quantize: bits")];
    let per_channel = channel_len(x.len(), mask);
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let y = s * (clip(v, x_max, signed).0 / s).round_ties_even();
            mask.map_or(y, |m| m[i / per_channel] * y)
        })
        .collect()
}

/// The stage of bit width `bits` (2, 4, 8, 16 or 32) in [`STAGE_BITS`], `None` for any other.
pub fn stage_of_bits(bits: u32) -> Option<usize> {
    STAGE_BITS.iter().position(|&b| b == bits)
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// A hard-concrete sample `z = clamp(1.2·sigmoid((ln u − ln(1−u) + ℓ)/β) − 0.1, 0, 1)` and
/// `∂z/∂ℓ = 1.8·s·(1−s)` where the stretched value lies in [0, 1] (inclusive), else 0.
pub fn hard_concrete(logit: f32, u: f32) -> (f32, f32) {
    let s = sigmoid((u.ln() - (1.0 - u).ln() + logit) / HC_BETA);
    let stretched = s * HC_STRETCH + HC_SHIFT;
    let dz = if (0.0..=1.0).contains(&stretched) {
        HC_STRETCH / HC_BETA * s * (1.0 - s)
    } else {
        0.0
    };
    (stretched.clamp(0.0, 1.0), dz)
}

/// P(gate ≠ 0) = sigmoid(ℓ − β·ln(−γ/ζ)).
pub fn prob_nonzero(logit: f32) -> f32 {
    sigmoid(logit - HC_OFFSET)
}

/// Deterministic test-time gate: 1 iff P(z = 0) < 0.34 in the official float32 recipe.
pub fn test_gate(logit: f32) -> f32 {
    if logit > TEST_GATE_THRESHOLD {
        1.0
    } else {
        0.0
    }
}

/// Gates of one quantizer for one step, with ∂gate/∂logit for the backward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Gates {
    /// g4, g8, g16, g32.
    pub chain: [f32; 4],
    /// ∂g/∂ℓ for g4…g32 (0 where the gate is constant).
    pub chain_dlogit: [f32; 4],
    /// Pruning gates z2, one per output channel (empty without pruning).
    pub prune: Vec<f32>,
    /// ∂z2/∂ℓ2 per channel.
    pub prune_dlogit: Vec<f32>,
}

/// Samples (training) or thresholds (eval) the gates of one quantizer (spec §2.3–2.4).
///
/// `uniform(i)` supplies the noise of gate `i`: 0…3 for g4…g32, `4 + c` for channel c's z2.
/// The ≤ −2 rule switches a chain gate and all higher ones to a constant 0, in both modes.
pub fn gates(
    chain_logits: [f32; 4],
    prune_logits: &[f32],
    training: bool,
    uniform: impl Fn(u32) -> f32,
) -> Gates {
    let gate = |logit: f32, index: u32| {
        if training {
            hard_concrete(logit, uniform(index))
        } else {
            (test_gate(logit), 0.0)
        }
    };
    let mut g = Gates {
        chain: [0.0; 4],
        chain_dlogit: [0.0; 4],
        prune: Vec::with_capacity(prune_logits.len()),
        prune_dlogit: Vec::with_capacity(prune_logits.len()),
    };
    for (i, &logit) in chain_logits.iter().enumerate() {
        if logit <= LOGIT_CUTOFF {
            break;
        }
        (g.chain[i], g.chain_dlogit[i]) = gate(logit, i as u32);
    }
    for (c, &logit) in prune_logits.iter().enumerate() {
        let (z, dz) = gate(logit, 4 + c as u32);
        g.prune.push(z);
        g.prune_dlogit.push(dz);
    }
    g
}

/// Test-time bit width `2^(1 + q4 + q4·(q8 + q8·(q16 + q16·q32)))` (spec §2.5).
pub fn bit_width(chain_logits: [f32; 4]) -> u32 {
    let chain = gates(chain_logits, &[], false, |_| 0.5).chain;
    STAGE_BITS[evaluated_stages(chain) - 1]
}

/// Philox4x32-10 (Salmon et al., SC 2011), the counter-based generator behind the gate noise.
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = M0 * u64::from(c[0]);
        let p1 = M1 * u64::from(c[2]);
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// Maps 32 random bits to a float in `[2^-24, 1 − 2^-24]`, so `ln u` and `ln(1 − u)` are finite.
pub fn unit_uniform(bits: u32) -> f32 {
    ((bits >> 9) as f32 + 0.5) * (1.0 / 8_388_608.0)
}

/// Gate noise keyed by (seed, step, quantizer, gate index): the same on CPU and GPU.
pub fn gate_noise(seed: u64, step: u32, quantizer: u32, index: u32) -> f32 {
    let key = [seed as u32, (seed >> 32) as u32];
    unit_uniform(philox4x32([step, quantizer, index, 0], key)[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answers() {
        // Random123's published known-answer tests for philox4x32_10.
        assert_eq!(
            philox4x32([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniform_stays_open() {
        assert_eq!(unit_uniform(0), 1.0 / 16_777_216.0);
        assert_eq!(unit_uniform(u32::MAX), 1.0 - 1.0 / 16_777_216.0);
    }

    #[test]
    fn rounding_is_ties_to_even() {
        // Unsigned x_max = 7.5 gives s2 = 2.5; x = 6.25 → 2.5 steps, a tie that must go to 2.
        let d = decompose(6.25, 7.5, false, [0.0; 4]);
        assert_eq!(d.k[0], 2.0);
    }
}
