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
// (kw−1−pad_w) and A the weight transposed and rotated by 180° (flip_weights writes that copy);
// with stride > 1 (DILATE) dy is read as dilated by the stride, so the taps that fall between
// strides read zero (a gather that spends (1 − 1/(sh·sw)) of its steps on zeros: correct first,
// not fast).
// MODE 2, weight gradient: rows are output channels o of the group, columns taps (ci, u, v), the
// reduction runs over the positions (i, j) of each image of a split: A = dy, B = x at
// (i·sh + u − pad_h, j·sw + v − pad_w). Each split writes its own partial dw; sum_splits adds the
// splits in a fixed order.

fn conv_column(z: u32, col: u32) -> Column {
    let hw = P.dst_h * P.dst_w;
    let image = col / hw;
    let pos = col % hw;
    let dy = (pos / P.dst_w) * P.stride_h - P.pad_h;
    let dx = (pos % P.dst_w) * P.stride_w - P.pad_w;
    let origin = image * P.src_c * P.src_h * P.src_w + z * P.b_stride;
    let base = select(origin + dy * P.src_w + dx, origin, DILATE);
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
