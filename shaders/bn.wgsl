// Batch norm folded into the preceding conv / linear layer (spec §5.2, P13), mirroring
// src/reference/layers/batch_norm.rs operation for operation:
//   fold_weight            W_f = W * (gamma / sigma_r), per output channel (axis 0)
//   fold_weight_backward   dW += dW_f * (gamma / sigma_r), dgamma += (sum dW_f * W) / sigma_r
//   stats_partials/_finalize   batch mean, std and sum of squared deviations of y_fp, and the
//                          train-mode affine scale = sigma_r / sigma_B, shift = beta - gamma * mu_B / sigma_B
//   eval_affine            scale = 1, shift = beta - gamma * mu_r / sigma_r
//   update_running         mu_r, v_r with momentum 0.1 and the unbiased batch variance
//   backward               dL/dy_fp and the bias-term dgamma from the per-channel sums of dL/dout
// channels.wgsl is prepended by the host. Weights use the layout [c_out, k] (n = 1, hw = k).

const BN_EPS: f32 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;

@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
// Running statistics (read_write everywhere so that one declaration serves every entry point).
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;
// Input per element: W, y_fp or dW_f.
@group(0) @binding(6) var<storage, read> x: array<f32>;
// Second input per element: W in fold_weight_backward.
@group(0) @binding(7) var<storage, read> w: array<f32>;
// Output per element: W_f, dW or dy_fp.
@group(0) @binding(8) var<storage, read_write> out: array<f32>;
// Per-channel output: dgamma (or its bias part).
@group(0) @binding(9) var<storage, read_write> dgamma: array<f32>;
// [mean[c], sigma_b[c], ssd[c]] planar: batch mean, sqrt(biased var + eps), sum of squared deviations.
@group(0) @binding(10) var<storage, read_write> stats: array<f32>;
@group(0) @binding(11) var<storage, read_write> scale: array<f32>;
@group(0) @binding(12) var<storage, read_write> shift: array<f32>;
// Per-channel sums of dL/dout and dL/dout * y_q (read_write: sum_g is a gradient slice that may
// share its buffer with dgamma).
@group(0) @binding(13) var<storage, read_write> sum_g: array<f32>;
@group(0) @binding(14) var<storage, read_write> sum_gy: array<f32>;
// vec4 views of x (y_fp) and out (dy_fp) for backward_vec4, where h·w is a multiple of 4: the
// four elements of a vec4 share a channel.
@group(0) @binding(15) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(16) var<storage, read_write> out4: array<vec4<f32>>;

fn running_std(c: u32) -> f32 {
    return sqrt(running_var[c] + BN_EPS);
}

@compute @workgroup_size(256)
fn fold_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let base = element_base(wg, nwg, t);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if i < cp.len {
            let c = channel_of(i);
            out[i] = x[i] * (gamma[c] / running_std(c));
        }
    }
}

// One workgroup per output channel (its k weights are contiguous).
@compute @workgroup_size(256)
fn fold_weight_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = workgroup_index(wg, nwg);
    var dot = vec2<f32>(0.0);
    if c < cp.channels {
        let fold = gamma[c] / running_std(c);
        for (var i = c * cp.hw + t; i < (c + 1u) * cp.hw; i += WG) {
            let d = x[i];
            out[i] = out[i] + d * fold;
            dot.x += d * w[i];
        }
    }
    let total = workgroup_sum(t, dot);
    if t == 0u && c < cp.channels {
        dgamma[c] = dgamma[c] + total.x / running_std(c);
    }
}

// Level 1 per slice: (sum, sum of squared deviations from the slice mean).
@compute @workgroup_size(256)
fn stats_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let slice = workgroup_index(wg, nwg);
    let valid = slice < cp.num_slices;
    var sl = Slice(0u, 0u, 0u);
    if valid {
        sl = slice_range(slice);
    }
    var acc = vec2<f32>(0.0);
    for (var j = sl.start + t; j < sl.end; j += WG) {
        acc.x += x[channel_element(sl.channel, j)];
    }
    let sum = workgroup_sum(t, acc).x;
    let mean = sum / f32(max(sl.end - sl.start, 1u));
    acc = vec2<f32>(0.0);
    for (var j = sl.start + t; j < sl.end; j += WG) {
        let d = x[channel_element(sl.channel, j)] - mean;
        acc.x += d * d;
    }
    let ssd = workgroup_sum(t, acc).x;
    if t == 0u && valid {
        partials[slice] = vec2<f32>(sum, ssd);
    }
}

// Level 2, one thread per channel: mean = (sum of slice sums) / m; the squared deviations
// combine as sum over slices of ssd_k + n_k * (mean_k - mean)^2, in slice order.
@compute @workgroup_size(256)
fn stats_finalize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = workgroup_index(wg, nwg) * WG + t;
    if c >= cp.channels {
        return;
    }
    let first = c * cp.slices_per_channel;
    var total = 0.0;
    for (var k = 0u; k < cp.slices_per_channel; k++) {
        total += partials[first + k].x;
    }
    let m = f32(cp.m);
    let mean = total / m;
    var ssd = 0.0;
    for (var k = 0u; k < cp.slices_per_channel; k++) {
        let p = partials[first + k];
        let count = f32(min(cp.slice_len, cp.m - k * cp.slice_len));
        let d = p.x / count - mean;
        ssd += p.y + count * d * d;
    }
    let sigma_b = sqrt(ssd / m + BN_EPS);
    stats[c] = mean;
    stats[cp.channels + c] = sigma_b;
    stats[2u * cp.channels + c] = ssd;
    scale[c] = running_std(c) / sigma_b;
    shift[c] = beta[c] - gamma[c] * mean / sigma_b;
}

@compute @workgroup_size(256)
fn eval_affine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = workgroup_index(wg, nwg) * WG + t;
    if c < cp.channels {
        scale[c] = 1.0;
        shift[c] = beta[c] - gamma[c] * running_mean[c] / running_std(c);
    }
}

@compute @workgroup_size(256)
fn update_running(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = workgroup_index(wg, nwg) * WG + t;
    if c < cp.channels {
        let keep = 1.0 - BN_MOMENTUM;
        running_mean[c] = keep * running_mean[c] + BN_MOMENTUM * stats[c];
        let unbiased = stats[2u * cp.channels + c] / f32(cp.m - 1u);
        running_var[c] = keep * running_var[c] + BN_MOMENTUM * unbiased;
    }
}

// The backward through the batch statistics of channel c: dL/dy_fp = d_mean / m +
// d_std · (y_fp − mean) / (m · sigma_b), and the bias part of dgamma.
struct StatsGrad {
    mean: f32,
    sigma_b: f32,
    d_mean: f32,
    d_std: f32,
    dgamma_bias: f32,
}

fn stats_grad(c: u32) -> StatsGrad {
    let mean = stats[c];
    let sigma_b = stats[cp.channels + c];
    let g = sum_g[c];
    let d_mean = -(gamma[c] / sigma_b) * g;
    let d_std = -(sum_gy[c] * running_std(c) - gamma[c] * mean * g) / (sigma_b * sigma_b);
    return StatsGrad(mean, sigma_b, d_mean, d_std, -(mean / sigma_b) * g);
}

// dL/dy_fp per element; the first element of each channel also writes the bias part of dgamma.
@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let base = element_base(wg, nwg, t);
    let m = f32(cp.m);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if i < cp.len {
            let c = channel_of(i);
            let s = stats_grad(c);
            out[i] = s.d_mean / m + s.d_std * (x[i] - s.mean) / (m * s.sigma_b);
            if i < cp.channels * cp.hw && i % cp.hw == 0u {
                dgamma[c] = s.dgamma_bias;
            }
        }
    }
}

// backward through the vec4 views: one channel per four elements.
@compute @workgroup_size(256)
fn backward_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let base = element_base(wg, nwg, t);
    let m = f32(cp.m);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if 4u * i < cp.len {
            let c = channel_of(4u * i);
            let s = stats_grad(c);
            out4[i] = vec4<f32>(s.d_mean / m) + s.d_std * (x4[i] - vec4<f32>(s.mean)) / (m * s.sigma_b);
            if 4u * i < cp.channels * cp.hw && (4u * i) % cp.hw == 0u {
                dgamma[c] = s.dgamma_bias;
            }
        }
    }
}
