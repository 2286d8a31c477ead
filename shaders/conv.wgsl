// Convolution views of the GEMM engine in gemm.wgsl (appended to it): any stride, rectangular
// kernel of P.kh × P.kw, zero padding, channel groups, NCHW activations, OIHW weights
// [c_out, c_in / groups, kh, kw]. No im2col buffer is materialised: the B operand is gathered
// from the activations through the per-column state and the cursor. Groups are batch entries:
// z is the group (MODE 1) or split · groups + group (MODE 2), offsetting A by P.a_stride (one
// group's weights) and B by P.b_stride (one group's source channels).
//
// MODE 1, correlation: rows are destination channels of group z, columns destination positions
// (image, y, x), the reduction runs over taps (ci, u, v) of the group's source channels.
// Forward: source x, destination position (i, j) at source (i·sh − pad_h, j·sw − pad_w), weight
// A[o][ci·kh·kw + u·kw + v]. Backward data: source dy, destination dx, padding kh−1−pad_h
// (kw−1−pad_w) and A the weight transposed and rotated by 180° (flip_weights writes that copy;
// with TAP_MAJOR the reduction runs over (u, v, ci) instead and skips the taps in the padding);
// with stride > 1 (DILATE) dy is read as dilated by the stride, so the taps that fall between
// strides read zero (a gather that spends (1 − 1/(sh·sw)) of its steps on zeros: correct first,
// not fast).
// MODE 2, weight gradient: rows are output channels o of the group, columns taps (ci, u, v), the
// reduction runs over the positions (i, j) of each image of a split: A = dy, B = x at
// (i·sh + u − pad_h, j·sw + v − pad_w). Each split writes its own partial dw; sum_splits adds the
// splits in a fixed order.

fn conv_column(z: u32, col: u32) -> Column {
    let hw = P.dst_h * P.dst_w;
    // TAP_MAJOR: columns are images of one position (a position's padding images read the last).
    let per_pos = tap_position_cols();
    let image = select(col / hw, min(col % per_pos, P.images - 1u), TAP_MAJOR);
    let pos = select(col % hw, col / per_pos, TAP_MAJOR);
    let dy = (pos / P.dst_w) * P.stride_h - P.pad_h;
    let dx = (pos % P.dst_w) * P.stride_w - P.pad_w;
    let image_start = image * P.src_c * P.src_h * P.src_w;
    let origin = image_start + z * P.b_stride;
    // TAP_MAJOR reads the source channels-last: the group's channels within each position.
    let channels_last = image_start + (dy * P.src_w + dx) * P.src_c + z * tap_channels();
    let base = select(select(origin + dy * P.src_w + dx, origin, DILATE), channels_last, TAP_MAJOR);
    return Column(base, dy, dx, (image * P.groups + z) * P.m * hw + pos);
}

fn wgrad_column(z: u32, col: u32) -> Column {
    let kk = P.kh * P.kw;
    let tap = col % kk;
    let dy = tap / P.kw - P.pad_h;
    let dx = tap % P.kw - P.pad_w;
    let base = (z % P.groups) * P.b_stride + (col / kk) * P.src_h * P.src_w + dy * P.src_w + dx;
    return Column(base, dy, dx, z * P.c_stride + col);
}

fn conv_a(z: u32, row: u32, p: u32) -> u32 {
    return z * P.a_stride + row * P.k + p;
}

fn wgrad_a(z: u32, image: u32, row: u32, p: u32) -> u32 {
    return ((image * P.groups + z % P.groups) * P.m + row) * P.k + p;
}

// c = the backward-data correlation's weights: for each of the P.batches groups of P.m output
// channels o and P.n input channels ci with P.k = kh·kw taps, c[g][ci][o][t] = a[g][o][ci][P.k − 1 − t]
// (transposed, and rotated by 180°: tap (u, v) ↦ (kh − 1 − u, kw − 1 − v)); with TAP_MAJOR
// c[g][ci][t][o], the layout of that correlation's tap-major A.
@compute @workgroup_size(64)
fn flip_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group_len = P.m * P.n * P.k;
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    if i >= group_len * P.batches {
        return;
    }
    let t = select(i % P.k, (i / P.m) % P.k, TAP_MAJOR);
    let o = select((i / P.k) % P.m, i % P.m, TAP_MAJOR);
    let gc = i / (P.k * P.m);
    let ci = gc % P.n;
    let g = gc / P.n;
    c[i] = a[g * group_len + (o * P.n + ci) * P.k + P.k - 1u - t];
}

// c4 = a4 channels-last: c[i][y][x][ch] = a[i][ch][y][x] for P.images images of P.src_c ×
// P.src_h × P.src_w (channels and positions multiples of 4), the source of a TAP_MAJOR
// correlation. Each thread moves 4 channels × 4 positions as 4 vec4 loads and 4 vec4 stores
// (one element at a time, llvmpipe takes a per-lane loop for every load and store). Dispatched
// from a shader with the vec4 view of A. c4 is also the tile engine's vec4 view of C (store_c4,
// in shaders with the vec4 view of B).
@group(0) @binding(6) var<storage, read_write> c4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn channels_last(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let quads = P.src_h * P.src_w / 4u;
    let blocks = P.src_c / 4u;
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    if i >= P.images * blocks * quads {
        return;
    }
    let block = i % blocks;
    let quad = (i / blocks) % quads;
    let image = i / (blocks * quads);
    // Channels 4·block + r, positions 4·quad .. 4·quad + 3.
    let src = (image * P.src_c + 4u * block) * quads + quad;
    let r0 = load_a4(src);
    let r1 = load_a4(src + quads);
    let r2 = load_a4(src + 2u * quads);
    let r3 = load_a4(src + 3u * quads);
    // Position 4·quad + t, channels 4·block .. 4·block + 3.
    let dst = (image * quads * 4u + 4u * quad) * blocks + block;
    c4[dst] = vec4<f32>(r0.x, r1.x, r2.x, r3.x);
    c4[dst + blocks] = vec4<f32>(r0.y, r1.y, r2.y, r3.y);
    c4[dst + 2u * blocks] = vec4<f32>(r0.z, r1.z, r2.z, r3.z);
    c4[dst + 3u * blocks] = vec4<f32>(r0.w, r1.w, r2.w, r3.w);
}
