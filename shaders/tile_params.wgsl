// Shared by both tile engines (prepended to gemm.wgsl + conv.wgsl and to tiles_gpu.wgsl): the
// uniform parameters, the operand bindings, the store of one output and the fixed-order sum of
// weight-gradient splits.

struct TileParams {
    // Output rows, columns and reduction length (per segment for MODE 2).
    m: u32,
    n: u32,
    k: u32,
    // Column tiles and tiles per batch entry (row tiles × column tiles).
    tiles_n: u32,
    tiles: u32,
    // Batch entries (GEMM batch, or weight-gradient splits).
    batches: u32,
    // Elements between batch entries of A, B and C.
    a_stride: u32,
    b_stride: u32,
    c_stride: u32,
    // 1: C += A·B; 0: C = A·B.
    accumulate: u32,
    // Convolution geometry: source (input of the correlation) channels (all groups), height and
    // width; the output height and width; the padding (a wrapping u32: the backward-data
    // correlation's kh − 1 − pad may be negative), the kernel height and width, the stride of the
    // destination positions over the source, the dilation of the source (DILATE: the strided
    // backward-data gather reads dy as if zeros stood between its rows and columns), the channel
    // groups; images per split and images (MODE 2).
    src_c: u32,
    src_h: u32,
    src_w: u32,
    dst_h: u32,
    dst_w: u32,
    pad_h: u32,
    pad_w: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    dil_h: u32,
    dil_w: u32,
    groups: u32,
    images_per_split: u32,
    images: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: TileParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// C[i] (+)= v. C is read only when accumulating, under a uniform branch: a load selected away
// still runs (on llvmpipe it reads memory, on a GPU it issues a global load per output).
fn store_one(i: u32, v: f32) {
    var sum = v;
    if P.accumulate != 0u { sum += c[i]; }
    c[i] = sum;
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
