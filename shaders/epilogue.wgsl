// Fused layer epilogue: a = act(scale[c] * y + shift[c]) with act the identity, ReLU or ReLU6,
// optionally followed by the layer's (unpruned) activation quantizer q = Q(a), unsigned after a
// ReLU or ReLU6, signed (SIGNED_QUANT) where the layer has none (a residual block's last
// convolution); and its backward: dy = scale[c] * da with per-channel sums of da and da * y
// (bias / BN shift and scale gradients). The unsigned quantizer's backward already masks a <= 0;
// after ReLU6, backward_partials_relu6 also zeroes the gradient where a >= 6 (PyTorch's hardtanh
// backward), reading the forward output a.
// bb_common.wgsl and channels.wgsl are prepended by the host.

@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> shift: array<f32>;
@group(0) @binding(4) var<storage, read> y: array<f32>;
// The affine output a (kept for the backward pass).
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> q: array<f32>;
// The activation quantizer's [x_max] and [g4, g8, g16, g32].
@group(0) @binding(7) var<storage, read> x_max_buf: array<f32>;
@group(0) @binding(8) var<storage, read> gates: array<f32>;
@group(0) @binding(9) var<storage, read> da: array<f32>;
@group(0) @binding(10) var<storage, read_write> dy: array<f32>;
// Per channel: sum of da, sum of da * y.
@group(0) @binding(11) var<storage, read_write> sum_da: array<f32>;
@group(0) @binding(12) var<storage, read_write> sum_da_y: array<f32>;
// The forward output a, read by backward_partials_relu6 for the ReLU6 gradient mask.
@group(0) @binding(13) var<storage, read> a_fwd: array<f32>;
// vec4 views of y, out, q, da and dy (the *_vec4 entries, for channels of h·w a multiple of 4:
// the four elements of a vec4 share a channel).
@group(0) @binding(14) var<storage, read> y4: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(16) var<storage, read_write> q4: array<vec4<f32>>;
@group(0) @binding(17) var<storage, read> da4: array<vec4<f32>>;
@group(0) @binding(18) var<storage, read_write> dy4: array<vec4<f32>>;

const RELU6_BOUND: f32 = 6.0;

fn channel_scale(c: u32) -> f32 {
    if (cp.flags & FLAG_UNIT_SCALE) != 0u {
        return 1.0;
    }
    return scale[c];
}

fn affine(i: u32) -> f32 {
    let c = channel_of(i);
    return activate(y[i] * channel_scale(c) + shift[c]);
}

fn activate(v: f32) -> f32 {
    if (cp.flags & FLAG_RELU) != 0u {
        return select(0.0, v, v > 0.0);
    }
    if (cp.flags & FLAG_RELU6) != 0u {
        // As the reference: 0 where v <= 0, 6 where v >= 6, v otherwise.
        return select(select(v, RELU6_BOUND, v >= RELU6_BOUND), 0.0, v <= 0.0);
    }
    return v;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let base = element_base(wg, nwg, t);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if i < cp.len {
            out[i] = affine(i);
        }
    }
}

// The activation quantizer's signedness (spec §1.2).
override SIGNED_QUANT: bool = false;

@compute @workgroup_size(256)
fn forward_quant(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let quantizer = bb_quantizer(x_max_buf[0], SIGNED_QUANT, vec4<f32>(gates[0], gates[1], gates[2], gates[3]));
    let base = element_base(wg, nwg, t);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if i < cp.len {
            let a = affine(i);
            out[i] = a;
            q[i] = bb_quantize(quantizer, a);
        }
    }
}

// forward_quant through the vec4 views: one scale and shift per four elements.
@compute @workgroup_size(256)
fn forward_quant_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let quantizer = bb_quantizer(x_max_buf[0], SIGNED_QUANT, vec4<f32>(gates[0], gates[1], gates[2], gates[3]));
    let base = element_base(wg, nwg, t);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if i < cp.len / 4u {
            let c = channel_of(4u * i);
            let scale_c = channel_scale(c);
            let shift_c = shift[c];
            let v = y4[i];
            let a = vec4<f32>(
                activate(v.x * scale_c + shift_c),
                activate(v.y * scale_c + shift_c),
                activate(v.z * scale_c + shift_c),
                activate(v.w * scale_c + shift_c),
            );
            out4[i] = a;
            q4[i] = vec4<f32>(
                bb_quantize(quantizer, a.x),
                bb_quantize(quantizer, a.y),
                bb_quantize(quantizer, a.z),
                bb_quantize(quantizer, a.w),
            );
        }
    }
}

// One element of the backward: writes dy = s * g and returns its (g, g * y) for the sums.
fn backward_element(i: u32, g: f32, s: f32) -> vec2<f32> {
    dy[i] = g * s;
    return vec2<f32>(g, g * y[i]);
}

// The workgroup's total of the slice's (sum da, sum da * y), stored as the slice's partial.
fn store_partial(t: u32, slice: u32, acc: vec2<f32>) {
    let total = workgroup_sum(t, acc);
    if t == 0u && slice < cp.num_slices {
        partials[slice] = total;
    }
}

// Level 1: dy for the slice's elements and the slice's (sum da, sum da * y).
@compute @workgroup_size(256)
fn backward_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let slice = workgroup_index(wg, nwg);
    var acc = vec2<f32>(0.0);
    if slice < cp.num_slices {
        let sl = slice_range(slice);
        let s = channel_scale(sl.channel);
        for (var j = sl.start + t; j < sl.end; j += WG) {
            let i = channel_element(sl.channel, j);
            acc += backward_element(i, da[i], s);
        }
    }
    store_partial(t, slice, acc);
}

// backward_partials through the vec4 views (slices start at multiples of 4 elements).
@compute @workgroup_size(256)
fn backward_partials_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let slice = workgroup_index(wg, nwg);
    var acc = vec2<f32>(0.0);
    if slice < cp.num_slices {
        let sl = slice_range(slice);
        let s = channel_scale(sl.channel);
        for (var j = sl.start + 4u * t; j < sl.end; j += 4u * WG) {
            let i = channel_element(sl.channel, j) / 4u;
            let g = da4[i];
            let y_i = y4[i];
            dy4[i] = g * s;
            acc += vec2<f32>(g.x, g.x * y_i.x);
            acc += vec2<f32>(g.y, g.y * y_i.y);
            acc += vec2<f32>(g.z, g.z * y_i.z);
            acc += vec2<f32>(g.w, g.w * y_i.w);
        }
    }
    store_partial(t, slice, acc);
}

// Level 1 after ReLU6: the incoming gradient is zeroed where the forward output is not strictly
// inside (0, 6), as the reference's relu6_backward.
@compute @workgroup_size(256)
fn backward_partials_relu6(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let slice = workgroup_index(wg, nwg);
    var acc = vec2<f32>(0.0);
    if slice < cp.num_slices {
        let sl = slice_range(slice);
        let s = channel_scale(sl.channel);
        for (var j = sl.start + t; j < sl.end; j += WG) {
            let i = channel_element(sl.channel, j);
            let a = a_fwd[i];
            let g = select(0.0, da[i], a > 0.0 && a < RELU6_BOUND);
            acc += backward_element(i, g, s);
        }
    }
    store_partial(t, slice, acc);
}

// Level 2, one thread per channel: the channel's partials in slice order.
@compute @workgroup_size(256)
fn backward_sums(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = workgroup_index(wg, nwg) * WG + t;
    if c >= cp.channels {
        return;
    }
    var acc = vec2<f32>(0.0);
    for (var k = 0u; k < cp.slices_per_channel; k++) {
        acc += partials[c * cp.slices_per_channel + k];
    }
    sum_da[c] = acc.x;
    sum_da_y[c] = acc.y;
}
