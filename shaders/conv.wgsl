// Convolution views of the GEMM engine in gemm.wgsl (appended to it): stride 1, square kernel
// of P.ks, zero padding, NCHW activations, OIHW weights. No im2col buffer is materialised: the
// B operand is gathered from the activations through the per-column state and the cursor.
//
// MODE 1, correlation: rows are destination channels, columns destination positions (image,
// y, x), the reduction runs over taps (ci, u, v) of the source. Forward: source x, weight
// A[o][ci·k·k + u·k + v]. Backward data (FLIP): source dy, destination dx, padding k−1−pad and
// the weight read transposed and rotated by 180°.
// MODE 2, weight gradient: rows are output channels o, columns taps (ci, u, v), the reduction
// runs over the positions (i, j) of each image of a split: A = dy, B = x at (i+u−pad, j+v−pad).
// Each split writes its own partial dw; sum_splits adds the splits in a fixed order.

fn conv_column(col: u32) -> Column {
    let hw = P.dst_h * P.dst_w;
    let image = col / hw;
    let pos = col % hw;
    let dy = pos / P.dst_w - P.pad;
    let dx = pos % P.dst_w - P.pad;
    let base = image * P.src_c * P.src_h * P.src_w + dy * P.src_w + dx;
    return Column(base, dy, dx, image * P.m * hw + pos);
}

fn wgrad_column(z: u32, col: u32) -> Column {
    let kk = P.ks * P.ks;
    let tap = col % kk;
    let dy = tap / P.ks - P.pad;
    let dx = tap % P.ks - P.pad;
    return Column((col / kk) * P.src_h * P.src_w + dy * P.src_w + dx, dy, dx, z * P.c_stride + col);
}

fn conv_a(row: u32, p: u32) -> u32 {
    let kk = P.ks * P.ks;
    return select(row * P.k + p, ((p / kk) * P.m + row) * kk + kk - 1u - p % kk, FLIP);
}

fn wgrad_a(image: u32, row: u32, p: u32) -> u32 {
    return (image * P.m + row) * P.k + p;
}

// c[i] = Σ_z a[z·m·n + i] over the P.batches splits, in order z = 0, 1, …
@compute @workgroup_size(64)
fn sum_splits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let len = P.m * P.n;
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    if i >= len {
        return;
    }
    var sum = 0.0;
    for (var z = 0u; z < P.batches; z++) {
        sum += a[z * len + i];
    }
    c[i] = sum;
}
