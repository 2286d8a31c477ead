// Bayesian Bits quantizer kernels: gate sampling, fused forward, fused backward with
// deterministic two-level reductions, and the finalisation that turns gate gradients into
// logit gradients and adds the BOP-weighted regulariser (spec §1–§3); and the fixed-gate
// fine-tuning quantizer (spec §7.4, fixed_* entry points).
// bb_common.wgsl is prepended by the host.

struct QuantParams {
    len: u32,
    // Output channels carrying a pruning gate (0 without pruning).
    prune_channels: u32,
    // Elements per output channel (len when there is no pruning).
    channel_len: u32,
    signed: u32,
    quantizer: u32,
    // Backward slices: each covers at most slice_len elements of one channel.
    slices_per_channel: u32,
    slice_len: u32,
    num_slices: u32,
    mac_ratio: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct StepParams {
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    training: u32,
    mu: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const HC_BETA: f32 = 0.6666666666666666;
const HC_OFFSET: f32 = -1.598596848532247;
// -0.93530256 = 0xbf6f6ffd, the official float32 boundary (spec §2.4), not the real-number one.
const TEST_GATE_THRESHOLD: f32 = -0.93530256f;
const LOGIT_CUTOFF: f32 = -2.0;
const RED_WG: u32 = 256u;
const PARTIALS: u32 = 6u;

override PER_THREAD: u32 = 8u;

@group(0) @binding(0) var<uniform> params: QuantParams;
@group(0) @binding(1) var<uniform> step: StepParams;
@group(0) @binding(2) var<storage, read> x_max_buf: array<f32>;
// [l4, l8, l16, l32, l2[0..C]]
@group(0) @binding(3) var<storage, read> logits: array<f32>;
// [g4, g8, g16, g32, z2[0..C]]
@group(0) @binding(4) var<storage, read_write> gates: array<f32>;
// d gate / d logit, same layout as gates.
@group(0) @binding(5) var<storage, read_write> gate_dlogit: array<f32>;
@group(0) @binding(6) var<storage, read> x: array<f32>;
// y = Q(x) in the forward pass, dL/dx in the backward pass.
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read> dy: array<f32>;
@group(0) @binding(9) var<storage, read_write> partials: array<f32>;
// [dx_max, dl4, dl8, dl16, dl32, dl2[0..C]] for the gradient buffers, [R_q] for reg_value.
@group(0) @binding(10) var<storage, read_write> x_max_grad: array<f32>;
@group(0) @binding(11) var<storage, read_write> logit_grad: array<f32>;
@group(0) @binding(12) var<storage, read_write> reg_value: array<f32>;
// vec4 views of x, out and dy (forward_vec4, backward_partials_vec4).
@group(0) @binding(13) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read> dy4: array<vec4<f32>>;

// ---- counter-based noise: Philox4x32-10 keyed by (seed), counter (step, quantizer, gate) ----

fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let cross = (lo_lo >> 16u) + (hi_lo & 0xffffu) + lo_hi;
    let hi = a_hi * b_hi + (hi_lo >> 16u) + (cross >> 16u);
    return vec2<u32>(hi, (cross << 16u) | (lo_lo & 0xffffu));
}

fn philox4x32(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if round > 0u {
            k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
        }
        let p0 = mulhilo(0xD2511F53u, c.x);
        let p1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

fn gate_noise(index: u32) -> f32 {
    let bits = philox4x32(vec4<u32>(step.step, params.quantizer, index, 0u), vec2<u32>(step.seed_lo, step.seed_hi)).x;
    return (f32(bits >> 9u) + 0.5) * (1.0 / 8388608.0);
}

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

// Hard-concrete sample (training) or deterministic threshold (eval) of gate `index`.
fn gate_value(logit: f32, index: u32) {
    if step.training == 0u {
        gates[index] = select(0.0, 1.0, logit > TEST_GATE_THRESHOLD);
        gate_dlogit[index] = 0.0;
        return;
    }
    let u = gate_noise(index);
    let s = sigmoid((log(u) - log(1.0 - u) + logit) / HC_BETA);
    let stretched = s * 1.2 - 0.1;
    gates[index] = clamp(stretched, 0.0, 1.0);
    gate_dlogit[index] = select(0.0, 1.2 / HC_BETA * s * (1.0 - s), stretched >= 0.0 && stretched <= 1.0);
}

@compute @workgroup_size(256)
fn sample_gates(@builtin(local_invocation_index) t: u32) {
    if t < 4u {
        // The <= -2 rule: a chain gate is a constant 0 once it or any lower logit is <= -2.
        var alive = true;
        for (var i = 0u; i <= t; i++) {
            alive = alive && logits[i] > LOGIT_CUTOFF;
        }
        if alive {
            gate_value(logits[t], t);
        } else {
            gates[t] = 0.0;
            gate_dlogit[t] = 0.0;
        }
    }
    for (var c = t; c < params.prune_channels; c += RED_WG) {
        gate_value(logits[4u + c], 4u + c);
    }
}

fn chain_gates() -> vec4<f32> {
    return vec4<f32>(gates[0], gates[1], gates[2], gates[3]);
}

fn prune_gate(element: u32) -> f32 {
    if params.prune_channels == 0u {
        return 1.0;
    }
    return gates[4u + element / params.channel_len];
}

// y = z2[channel] * Q(x). Each thread handles PER_THREAD elements strided by the workgroup.
@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let quantizer = bb_quantizer(x_max_buf[0], params.signed != 0u, chain_gates());
    let base = (wg.x + wg.y * nwg.x) * 256u * PER_THREAD + t;
    for (var j = 0u; j < PER_THREAD; j++) {
        let i = base + j * 256u;
        if i < params.len {
            out[i] = prune_gate(i) * bb_quantize(quantizer, x[i]);
        }
    }
}

// forward through the vec4 views (channel_len a multiple of 4: four elements share a gate).
@compute @workgroup_size(256)
fn forward_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let quantizer = bb_quantizer(x_max_buf[0], params.signed != 0u, chain_gates());
    let base = (wg.x + wg.y * nwg.x) * 256u * PER_THREAD + t;
    for (var j = 0u; j < PER_THREAD; j++) {
        let q = base + j * 256u;
        if q < params.len / 4u {
            let z = prune_gate(4u * q);
            let v = x4[q];
            out4[q] = vec4<f32>(
                z * bb_quantize(quantizer, v.x),
                z * bb_quantize(quantizer, v.y),
                z * bb_quantize(quantizer, v.z),
                z * bb_quantize(quantizer, v.w),
            );
        }
    }
}

var<workgroup> red: array<array<f32, RED_WG>, PARTIALS>;

// Values each thread of the first reduction level adds.
const RED_GROUP: u32 = 16u;

// Fixed-order reduction of red[0..PARTIALS] over the workgroup, the sums ending in red[*][0]:
// RED_WG / RED_GROUP threads add RED_GROUP consecutive values each, then thread 0 adds their
// results in order. Three barriers where a tree takes nine: on CPU adapters the barriers, not
// the additions, are what a reduction costs.
fn reduce_workgroup(t: u32) {
    workgroupBarrier();
    if t < RED_WG / RED_GROUP {
        for (var p = 0u; p < PARTIALS; p++) {
            var sum = red[p][t * RED_GROUP];
            for (var j = 1u; j < RED_GROUP; j++) {
                sum += red[p][t * RED_GROUP + j];
            }
            red[p][t * RED_GROUP] = sum;
        }
    }
    workgroupBarrier();
    if t == 0u {
        for (var p = 0u; p < PARTIALS; p++) {
            var sum = red[p][0];
            for (var j = 1u; j < RED_WG / RED_GROUP; j++) {
                sum += red[p][j * RED_GROUP];
            }
            red[p][0] = sum;
        }
    }
    workgroupBarrier();
}

// What every element of a backward slice shares.
struct BackwardSlice {
    quantizer: BbQuantizer,
    // The channel's pruning gate.
    z: f32,
    rho: f32,
    // Stage weights of the step-size gradient: (1-P4), (P4-P8), (P8-P16), (P16-P32), P32.
    weight: array<f32, 5>,
}

fn backward_slice(channel: u32) -> BackwardSlice {
    let signed = params.signed != 0u;
    let g = chain_gates();
    let p4 = g.x;
    let p8 = p4 * g.y;
    let p16 = p8 * g.z;
    let p32 = p16 * g.w;
    return BackwardSlice(
        bb_quantizer(x_max_buf[0], signed, g),
        select(1.0, gates[4u + channel], params.prune_channels > 0u),
        select(1.0 / 3.0, 2.0 / 3.0, signed),
        array<f32, 5>(1.0 - p4, p4 - p8, p8 - p16, p16 - p32, p32),
    );
}

// dL/dx of one element with upstream gradient `grad`; its terms of the slice's partial sums are
// added to `acc`.
fn backward_element(b: BackwardSlice, grad: f32, x_i: f32, acc: ptr<function, array<f32, PARTIALS>>) -> f32 {
    let g = b.quantizer.gates;
    let gz = grad * b.z;
    let d = bb_decompose_with(b.quantizer, x_i);
    var kappa = 0.0;
    if d.region == 2u {
        kappa = 1.0;
    } else if d.region == 0u && b.quantizer.signed {
        kappa = -1.0;
    }
    var step_term = 0.0;
    // A constant trip count lets drivers unroll the loop and keep `d` in registers; with
    // `k < stages` as the bound llvmpipe indexes the arrays in memory (1.6x slower).
    for (var k = 0u; k < 5u; k++) {
        if k < b.quantizer.stages {
            step_term += b.weight[k] * (d.k[k] - d.quotient[k]) * STAGE_TO_S2[k];
        }
    }
    (*acc)[0] += gz * (CLIP_SHRINK * kappa + b.rho * step_term);
    let inner16 = d.parts[3] + g.w * d.parts[4];
    let inner8 = d.parts[2] + g.z * inner16;
    let inner4 = d.parts[1] + g.y * inner8;
    (*acc)[1] += gz * inner4;
    (*acc)[2] += gz * g.x * inner8;
    (*acc)[3] += gz * g.x * g.y * inner16;
    (*acc)[4] += gz * g.x * g.y * g.z * d.parts[4];
    (*acc)[5] += grad * (d.parts[0] + g.x * inner4);
    return select(0.0, gz, d.region == 1u);
}

// Elements [start, end) of a backward slice: at most slice_len elements of one channel.
fn slice_elements(slice: u32) -> vec2<u32> {
    let channel = slice / params.slices_per_channel;
    let start = channel * params.channel_len + (slice % params.slices_per_channel) * params.slice_len;
    return vec2<u32>(start, min(start + params.slice_len, (channel + 1u) * params.channel_len));
}

// The workgroup's partial sums, stored as the slice's.
fn store_partials(t: u32, slice: u32, acc: array<f32, PARTIALS>) {
    for (var p = 0u; p < PARTIALS; p++) {
        red[p][t] = acc[p];
    }
    reduce_workgroup(t);
    if t == 0u && slice < params.num_slices {
        for (var p = 0u; p < PARTIALS; p++) {
            partials[slice * PARTIALS + p] = red[p][0];
        }
    }
}

// Backward, level 1: dx per element, and per slice (channel, chunk) the partial sums of
// [dL/dx_max, dL/dg4, dL/dg8, dL/dg16, dL/dg32, dL/dz2[channel]] (spec §1.8 closed form).
@compute @workgroup_size(256)
fn backward_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let slice = wg.x + wg.y * nwg.x;
    var acc = array<f32, PARTIALS>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    if slice < params.num_slices {
        let b = backward_slice(slice / params.slices_per_channel);
        let range = slice_elements(slice);
        for (var i = range.x + t; i < range.y; i += RED_WG) {
            out[i] = backward_element(b, dy[i], x[i], &acc);
        }
    }
    store_partials(t, slice, acc);
}

// backward_partials through vec4 views (channel_len a multiple of 4): each thread takes four
// consecutive elements per load, which CPU adapters, loading every lane's element in turn,
// need a quarter as many loads for.
@compute @workgroup_size(256)
fn backward_partials_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let slice = wg.x + wg.y * nwg.x;
    var acc = array<f32, PARTIALS>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    if slice < params.num_slices {
        let b = backward_slice(slice / params.slices_per_channel);
        let range = slice_elements(slice) / 4u;
        for (var q = range.x + t; q < range.y; q += RED_WG) {
            let grad = dy4[q];
            let x_q = x4[q];
            out4[q] = vec4<f32>(
                backward_element(b, grad.x, x_q.x, &acc),
                backward_element(b, grad.y, x_q.y, &acc),
                backward_element(b, grad.z, x_q.z, &acc),
                backward_element(b, grad.w, x_q.w, &acc),
            );
        }
    }
    store_partials(t, slice, acc);
}

fn prob_nonzero(logit: f32) -> f32 {
    return sigmoid(logit - HC_OFFSET);
}

// Backward, level 2 (one workgroup): sums the slices in a fixed order, converts gate gradients
// into logit gradients through d gate / d logit, and adds mu * dR_q/dlogit (spec §3).
@compute @workgroup_size(256)
fn backward_finalize(@builtin(local_invocation_index) t: u32) {
    // Per-tensor sums over all slices: thread t takes slices t, t+256, ...; then a tree.
    var acc = array<f32, PARTIALS>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var sl = t; sl < params.num_slices; sl += RED_WG) {
        for (var p = 0u; p < 5u; p++) {
            acc[p] += partials[sl * PARTIALS + p];
        }
    }
    // Mean pruning probability for the regulariser, reduced alongside.
    for (var c = t; c < params.prune_channels; c += RED_WG) {
        acc[5] += prob_nonzero(logits[4u + c]);
    }
    for (var p = 0u; p < PARTIALS; p++) {
        red[p][t] = acc[p];
    }
    reduce_workgroup(t);

    let mu = select(0.0, step.mu, step.training != 0u);
    let m = params.mac_ratio;
    let pr = vec4<f32>(prob_nonzero(logits[0]), prob_nonzero(logits[1]), prob_nonzero(logits[2]), prob_nonzero(logits[3]));
    // chain = m * (4 p4 + 8 p4 p8 + 16 p4 p8 p16 + 32 p4 p8 p16 p32) and d chain / d p_k.
    let c4 = 4.0 * pr.x;
    let c8 = 8.0 * pr.x * pr.y;
    let c16 = 16.0 * pr.x * pr.y * pr.z;
    let c32 = 32.0 * pr.x * pr.y * pr.z * pr.w;
    let chain = m * (c4 + c8 + c16 + c32);
    let dchain = vec4<f32>(
        m * (4.0 + 8.0 * pr.y + 16.0 * pr.y * pr.z + 32.0 * pr.y * pr.z * pr.w),
        m * pr.x * (8.0 + 16.0 * pr.z + 32.0 * pr.z * pr.w),
        m * pr.x * pr.y * (16.0 + 32.0 * pr.w),
        m * pr.x * pr.y * pr.z * 32.0,
    );
    let pruned = params.prune_channels > 0u;
    let mean_p2 = select(1.0, red[5][0] / f32(params.prune_channels), pruned);
    let per_channel = 2.0 * m + chain;

    if t == 0u {
        x_max_grad[0] = red[0][0];
        reg_value[0] = select(1.0 + chain, mean_p2 * per_channel, pruned);
    }
    if t < 4u {
        let dreg = mean_p2 * dchain[t] * pr[t] * (1.0 - pr[t]);
        logit_grad[t] = red[1u + t][0] * gate_dlogit[t] + mu * dreg;
    }
    // Pruning logits: the per-channel dL/dz2 sums the slices of channel c in order.
    for (var c = t; c < params.prune_channels; c += RED_WG) {
        var dz = 0.0;
        for (var k = 0u; k < params.slices_per_channel; k++) {
            dz += partials[(c * params.slices_per_channel + k) * PARTIALS + 5u];
        }
        let p2 = prob_nonzero(logits[4u + c]);
        let dreg = per_channel / f32(params.prune_channels) * p2 * (1.0 - p2);
        logit_grad[4u + c] = dz * gate_dlogit[4u + c] + mu * dreg;
    }
}

// ---- fixed-gate fine-tuning quantizer (spec §7.4), mirroring reference::quant::fixed_quantize ----
// y = mask[c] · s_b · rne(x_c / s_b): the same clip and step chain, direct rounding without an
// integer clamp (spec §1.7), a fixed 0/1 mask per output channel and a learned x_max.

struct FixedParams {
    len: u32,
    // Output channels of the mask (0: no mask; the mask binding is then never read).
    mask_channels: u32,
    channel_len: u32,
    signed: u32,
    // Index of b in the step chain: 0 for 2 bits … 4 for 32 bits.
    stage: u32,
    // Backward level-1 workgroups, one partial sum of dL/dx_max each.
    num_partials: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(13) var<uniform> fixed: FixedParams;
@group(0) @binding(14) var<storage, read> mask: array<f32>;

fn fixed_mask(element: u32) -> f32 {
    if fixed.mask_channels == 0u {
        return 1.0;
    }
    return mask[element / fixed.channel_len];
}

@compute @workgroup_size(256)
fn fixed_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let x_max = x_max_buf[0];
    let signed = fixed.signed != 0u;
    let s = bb_scales(x_max, signed)[fixed.stage];
    let base = (wg.x + wg.y * nwg.x) * 256u * PER_THREAD + t;
    for (var j = 0u; j < PER_THREAD; j++) {
        let i = base + j * 256u;
        if i < fixed.len {
            out[i] = fixed_mask(i) * (s * round(bb_clip(x[i], x_max, signed).value / s));
        }
    }
}

// Backward level 1: dx per element; per workgroup (PER_THREAD · 256 consecutive elements) the
// partial sum of dL/dx_max = G·m·(c·κ + ρ·(k − q)·3/(2^b − 1)), as §1.8 with one stage.
@compute @workgroup_size(256)
fn fixed_backward_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let group = wg.x + wg.y * nwg.x;
    var acc = 0.0;
    if group < fixed.num_partials {
        let x_max = x_max_buf[0];
        let signed = fixed.signed != 0u;
        let s = bb_scales(x_max, signed)[fixed.stage];
        let rho = select(1.0 / 3.0, 2.0 / 3.0, signed);
        let base = group * 256u * PER_THREAD + t;
        for (var j = 0u; j < PER_THREAD; j++) {
            let i = base + j * 256u;
            if i < fixed.len {
                let gm = dy[i] * fixed_mask(i);
                let c = bb_clip(x[i], x_max, signed);
                out[i] = select(0.0, gm, c.region == 1u);
                var kappa = 0.0;
                if c.region == 2u {
                    kappa = 1.0;
                } else if c.region == 0u && signed {
                    kappa = -1.0;
                }
                let q = c.value / s;
                acc += gm * (CLIP_SHRINK * kappa + rho * (round(q) - q) * STAGE_TO_S2[fixed.stage]);
            }
        }
    }
    red[0][t] = acc;
    for (var p = 1u; p < PARTIALS; p++) {
        red[p][t] = 0.0;
    }
    reduce_workgroup(t);
    if t == 0u && group < fixed.num_partials {
        partials[group] = red[0][0];
    }
}

// Backward level 2 (one workgroup): dL/dx_max = the partial sums in a fixed order.
@compute @workgroup_size(256)
fn fixed_backward_finalize(@builtin(local_invocation_index) t: u32) {
    var acc = 0.0;
    for (var i = t; i < fixed.num_partials; i += 256u) {
        acc += partials[i];
    }
    red[0][t] = acc;
    for (var p = 1u; p < PARTIALS; p++) {
        red[p][t] = 0.0;
    }
    reduce_workgroup(t);
    if t == 0u {
        x_max_grad[0] = red[0][0];
    }
}
