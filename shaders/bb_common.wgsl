// Bayesian Bits residual quantizer: the per-element functions (spec §1), shared by the
// quantizer kernels and by layer epilogues that quantize activations in place.
// Mirrors src/reference/quant.rs operation for operation.

const CLIP_SHRINK: f32 = 0.99999988079071044921875; // 1 - 2^-23
const RESIDUAL_BOUNDS = array<f32, 4>(2.0, 8.0, 128.0, 32768.0);
// 3 / (2^b - 1) for b = 2, 4, 8, 16, 32: converts a stage's delta into units of s2.
const STAGE_TO_S2 = array<f32, 5>(1.0, 0.2, 0.011764705882352941, 4.5777065690089265e-05, 6.984919311242e-10);

struct Decomposition {
    clipped: f32,
    // 0 below, 1 inside, 2 above the clip range.
    region: u32,
    k: array<f32, 5>,
    quotient: array<f32, 5>,
    parts: array<f32, 5>,
}

// Step sizes s2..s32: chained float32 divisions of the unshrunk range.
fn bb_scales(x_max: f32, signed: bool) -> array<f32, 5> {
    var s: array<f32, 5>;
    let range = select(x_max, x_max + x_max, signed);
    s[0] = range / 3.0;
    s[1] = s[0] / 5.0;
    s[2] = s[1] / 17.0;
    s[3] = s[2] / 257.0;
    s[4] = s[3] / 65537.0;
    return s;
}

// Stages evaluated: stage b runs only if all gates g4..g_b are > 0 (early exit).
fn bb_stages(gates: vec4<f32>) -> u32 {
    if gates.x <= 0.0 { return 1u; }
    if gates.y <= 0.0 { return 2u; }
    if gates.z <= 0.0 { return 3u; }
    if gates.w <= 0.0 { return 4u; }
    return 5u;
}

struct Clipped {
    value: f32,
    // 0 below, 1 inside, 2 above the clip range.
    region: u32,
}

// PACT-style clip in the official relu form (spec §1.4), not a min/max clamp.
fn bb_clip(x: f32, x_max: f32, signed: bool) -> Clipped {
    let hi = CLIP_SHRINK * x_max;
    let lo = select(0.0, -hi, signed);
    let a = x - lo;
    let b = (hi - lo) - max(a, 0.0);
    return Clipped(hi - max(b, 0.0), select(select(1u, 2u, b <= 0.0), 0u, a <= 0.0));
}

// The clip, then staged ties-to-even rounding with per-stage integer clamps (spec §1.5, P3).
fn bb_decompose(x: f32, x_max: f32, s: array<f32, 5>, signed: bool, stages: u32) -> Decomposition {
    var d: Decomposition;
    let c = bb_clip(x, x_max, signed);
    d.clipped = c.value;
    d.region = c.region;
    let q0 = d.clipped / s[0];
    d.quotient[0] = q0;
    d.k[0] = clamp(round(q0), select(0.0, -1.0, signed), select(3.0, 1.0, signed));
    d.parts[0] = s[0] * d.k[0];
    // Stage b's residual is clipped − parts[0] − … − parts[b−1], subtracted left to right (the
    // order matters at 16/32 bits): carried from stage to stage, not recomputed. The constant
    // trip count lets drivers unroll the loop and keep `d` in registers; with `stage < stages`
    // as the bound llvmpipe indexes the arrays in memory.
    var r = d.clipped;
    for (var stage = 1u; stage < 5u; stage++) {
        if stage < stages {
            r = r - d.parts[stage - 1u];
            let q = r / s[stage];
            let bound = RESIDUAL_BOUNDS[stage - 1u];
            d.quotient[stage] = q;
            d.k[stage] = clamp(round(q), -bound, bound);
            d.parts[stage] = s[stage] * d.k[stage];
        }
    }
    return d;
}

// x2 + g4*(e4 + g8*(e8 + g16*(e16 + g32*e32))), innermost first.
fn bb_combine(parts: array<f32, 5>, gates: vec4<f32>) -> f32 {
    var acc = parts[4];
    acc = parts[3] + gates.w * acc;
    acc = parts[2] + gates.z * acc;
    acc = parts[1] + gates.y * acc;
    return parts[0] + gates.x * acc;
}

// What every element of one quantizer shares within a dispatch: the range and signedness, the
// step sizes, the chain gates g4..g32 and the stages they leave running.
struct BbQuantizer {
    x_max: f32,
    signed: bool,
    s: array<f32, 5>,
    gates: vec4<f32>,
    stages: u32,
}

fn bb_quantizer(x_max: f32, signed: bool, gates: vec4<f32>) -> BbQuantizer {
    return BbQuantizer(x_max, signed, bb_scales(x_max, signed), gates, bb_stages(gates));
}

fn bb_decompose_with(q: BbQuantizer, x: f32) -> Decomposition {
    return bb_decompose(x, q.x_max, q.s, q.signed, q.stages);
}

fn bb_quantize(q: BbQuantizer, x: f32) -> f32 {
    return bb_combine(bb_decompose_with(q, x).parts, q.gates);
}
