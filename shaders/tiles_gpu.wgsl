// The GPU tile engine: (implicit) GEMM with workgroup-memory tiles and a small register block
// per invocation, for adapters that are real GPUs (the register-only engine of gemm.wgsl is
// shaped for CPU drivers and spills on GPUs).
//
//     C[z][row][col] (+)= Σ_p A(z, row, p) · B(z, p, col)
//
// A workgroup computes a BM × BN tile of one batch entry z. The reduction runs in K-steps of BK:
// the invocations first stage A(rows, k0 .. k0+BK) and B(k0 .. k0+BK, cols) in workgroup memory
// (as vec4 of 4 rows / 4 columns), then each invocation adds its TM × TN block (4×4 or 8×8)
// from there, reading one vec4 of A rows and one of B columns per step per 4×4 quarter. Two
// barriers per K-step; no subgroup operations (any subgroup size works, or none). Every output
// is summed over p = 0, 1, … in order by one invocation: results are deterministic. Staging
// reads one float at a time, except a GEMM B stored [k,n] with n a multiple of 4 (VEC_B, chosen
// by the launcher): each quad is one vec4 of B's view.
//
// MODE selects the operand views, with the same TileParams as gemm.wgsl:
//   0: row-major GEMM, A stored [m,k] or [k,m] (TRANS_A), B stored [k,n] or [n,k] (TRANS_B);
//   1: convolution as a correlation: rows destination channels of group z, columns destination
//      positions (image, y, x) at source (y·stride_h − pad_h, x·stride_w − pad_w), the
//      reduction over taps (ci, u, v) of the group's source channels. Forward: A the OIHW
//      weight; with FLIP (backward data) the weight transposed and rotated by 180°, and with
//      DILATE (stride > 1) dy read as dilated by the stride: taps between strides read zero;
//   2: weight gradient: rows output channels of a group, columns taps (ci, u, v), the reduction
//      over the positions of the images of a split (A = dy, B = x); z = split · groups + group;
//      each split writes its own partial sums, which sum_splits adds in a fixed order.
// The convolution views, strides, groups and padding (a wrapping u32) are those of conv.wgsl.
// tile_params.wgsl, prepended, holds TileParams, the bindings P, a, b, c and sum_splits (shared
// with the CPU engine); the launcher appends VEC_B with B's view (load_b4) or a stand-in.


override MODE: u32 = 0u;
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override FLIP: bool = false;
// MODE 1 only: the source is dilated by (P.dil_h, P.dil_w) (strided backward data).
override DILATE: bool = false;
// Tile rows and columns, K-step, and the register block of one invocation (4 or 8 each).
override BM: u32 = 32u;
override BN: u32 = 32u;
override BK: u32 = 16u;
override TM: u32 = 4u;
override TN: u32 = 4u;
// Invocations: (BM / TM) · (BN / TN); a multiple of BN / 4.
override WG: u32 = 64u;
// vec4 elements of the staged tiles: BK · BM / 4 and BK · BN / 4.
override A_LEN: u32 = 128u;
override B_LEN: u32 = 128u;

// A(k0 + q, rows 4i .. 4i+3) at [q · BM/4 + i]; B(k0 + q, columns 4j .. 4j+3) at [q · BN/4 + j].
var<workgroup> As: array<vec4<f32>, A_LEN>;
var<workgroup> Bs: array<vec4<f32>, B_LEN>;

// A gathered column of B (MODE 1 and 2): index base and the two coordinates whose sums with a
// reduction step's tap decide whether it falls in the zero padding (wrapping u32 arithmetic).
struct Column {
    base: u32,
    dy: u32,
    dx: u32,
}

// Whether the staging of A walks the reduction fastest (A contiguous along it).
fn a_k_fastest() -> bool {
    return (MODE == 0u && !TRANS_A) || (MODE == 1u && !FLIP) || MODE == 2u;
}

// Images of split z (MODE 2): first and one past the last.
fn split_images(z: u32) -> vec2<u32> {
    let first = (z / P.groups) * P.images_per_split;
    return vec2<u32>(first, min(first + P.images_per_split, P.images));
}

// A(row .. row+3, p), zero for rows past the end or p >= kt. Every view is affine in the row:
// index = base(p) + row · stride.
fn load_a_quad(z: u32, first: u32, row: u32, p: u32, kt: u32) -> vec4<f32> {
    var base = 0u;
    var stride = 0u;
    let pc = min(p, kt - 1u);
    switch MODE {
        case 1u: {
            if FLIP {
                let kk = P.kh * P.kw;
                let o = pc / kk;
                base = z * P.a_stride + o * P.m * kk + kk - 1u - (pc - o * kk);
                stride = kk;
            } else {
                base = z * P.a_stride + pc;
                stride = P.k;
            }
        }
        case 2u: {
            let image = first + pc / P.k;
            base = (image * P.groups + z % P.groups) * P.m * P.k + pc % P.k;
            stride = P.k;
        }
        default: {
            base = z * P.a_stride + select(pc, pc * P.m, TRANS_A);
            stride = select(P.k, 1u, TRANS_A);
        }
    }
    let last = P.m - 1u;
    let live = p < kt;
    return vec4<f32>(
        select(0.0, a[base + min(row, last) * stride], live && row < P.m),
        select(0.0, a[base + min(row + 1u, last) * stride], live && row + 1u < P.m),
        select(0.0, a[base + min(row + 2u, last) * stride], live && row + 2u < P.m),
        select(0.0, a[base + min(row + 3u, last) * stride], live && row + 3u < P.m),
    );
}

// The gathered column `col` (clamped to the last one) of batch entry z for MODE 1 and 2.
fn column(z: u32, col: u32) -> Column {
    let hw = P.src_h * P.src_w;
    if MODE == 2u {
        let kk = P.kh * P.kw;
        let tap = col % kk;
        let dy = tap / P.kw - P.pad_h;
        let dx = tap % P.kw - P.pad_w;
        let base = (z % P.groups) * P.b_stride + (col / kk) * hw + dy * P.src_w + dx;
        return Column(base, dy, dx);
    }
    let dst = P.dst_h * P.dst_w;
    let image = col / dst;
    let pos = col % dst;
    let dy = (pos / P.dst_w) * P.stride_h - P.pad_h;
    let dx = (pos % P.dst_w) * P.stride_w - P.pad_w;
    let origin = image * P.src_c * hw + z * P.b_stride;
    if DILATE {
        // The tap's coordinates are divided back per element (see gather).
        return Column(origin, dy, dx);
    }
    return Column(origin + dy * P.src_w + dx, dy, dx);
}

// B at a column's tap (ty, tx), `off` past its base (with DILATE: the tap's channel only).
fn gather(col: Column, live: bool, off: u32, ty: u32, tx: u32) -> f32 {
    let y = col.dy + ty;
    let x = col.dx + tx;
    if DILATE {
        let on_grid = y % P.dil_h == 0u && x % P.dil_w == 0u;
        let yi = y / P.dil_h;
        let xi = x / P.dil_w;
        let inside = live && on_grid && yi < P.src_h && xi < P.src_w;
        let index = col.base + off + yi * P.src_w + xi;
        return select(0.0, b[select(0u, index, inside)], inside);
    }
    let inside = live && y < P.src_h && x < P.src_w;
    return select(0.0, b[select(0u, col.base + off, inside)], inside);
}

// B(p, col .. col+3) of a gathered view (MODE 1 and 2) from the invocation's four columns.
fn gather_quad(c0: Column, c1: Column, c2: Column, c3: Column, col: u32, first: u32, p: u32, kt: u32) -> vec4<f32> {
    let pc = min(p, kt - 1u);
    var off = 0u;
    var ty = 0u;
    var tx = 0u;
    if MODE == 2u {
        // p walks the positions (i, j) of the split's images, j fastest.
        let image = first + pc / P.k;
        let pos = pc % P.k;
        ty = (pos / P.dst_w) * P.stride_h;
        tx = (pos % P.dst_w) * P.stride_w;
        off = image * P.src_c * P.src_h * P.src_w + ty * P.src_w + tx;
    } else {
        // p walks the taps (ci, u, v), v fastest.
        let kk = P.kh * P.kw;
        let ci = pc / kk;
        let t = pc - ci * kk;
        ty = t / P.kw;
        tx = t % P.kw;
        off = ci * P.src_h * P.src_w + select(ty * P.src_w + tx, 0u, DILATE);
    }
    let live = p < kt;
    return vec4<f32>(
        gather(c0, live && col < P.n, off, ty, tx),
        gather(c1, live && col + 1u < P.n, off, ty, tx),
        gather(c2, live && col + 2u < P.n, off, ty, tx),
        gather(c3, live && col + 3u < P.n, off, ty, tx),
    );
}

// B(p, col .. col+3) of the GEMM view: index = base(p) + col · stride.
fn gemm_b_quad(z: u32, col: u32, p: u32) -> vec4<f32> {
    let pc = min(p, P.k - 1u);
    if VEC_B && !TRANS_B {
        // The quad is contiguous and 16-byte aligned (n is a multiple of 4, col of 4): wholly
        // inside or past the columns.
        let index = z * P.b_stride + pc * P.n + min(col, P.n - 4u);
        return select(vec4<f32>(), load_b4(index / 4u), p < P.k && col < P.n);
    }
    let base = z * P.b_stride + select(pc * P.n, pc, TRANS_B);
    let stride = select(1u, P.k, TRANS_B);
    let last = P.n - 1u;
    let live = p < P.k;
    return vec4<f32>(
        select(0.0, b[base + min(col, last) * stride], live && col < P.n),
        select(0.0, b[base + min(col + 1u, last) * stride], live && col + 1u < P.n),
        select(0.0, b[base + min(col + 2u, last) * stride], live && col + 2u < P.n),
        select(0.0, b[base + min(col + 3u, last) * stride], live && col + 3u < P.n),
    );
}

// The invocation's accumulators: row r, columns 4h .. 4h+3 at [2r + h].
alias Acc = array<vec4<f32>, 16>;

// Adds step q of the staged tiles to the register block at (rows 4·ra, columns 4·cb) of the tile.
fn mac_step(acc: ptr<function, Acc>, q: u32, ra: u32, cb: u32) {
    let a0 = As[q * (BM / 4u) + ra];
    let b0 = Bs[q * (BN / 4u) + cb];
    (*acc)[0] += a0.x * b0;
    (*acc)[2] += a0.y * b0;
    (*acc)[4] += a0.z * b0;
    (*acc)[6] += a0.w * b0;
    if TN > 4u {
        let b1 = Bs[q * (BN / 4u) + cb + 1u];
        (*acc)[1] += a0.x * b1;
        (*acc)[3] += a0.y * b1;
        (*acc)[5] += a0.z * b1;
        (*acc)[7] += a0.w * b1;
        if TM > 4u {
            let a1 = As[q * (BM / 4u) + ra + 1u];
            (*acc)[8] += a1.x * b0;
            (*acc)[10] += a1.y * b0;
            (*acc)[12] += a1.z * b0;
            (*acc)[14] += a1.w * b0;
            (*acc)[9] += a1.x * b1;
            (*acc)[11] += a1.y * b1;
            (*acc)[13] += a1.z * b1;
            (*acc)[15] += a1.w * b1;
        }
    } else if TM > 4u {
        let a1 = As[q * (BM / 4u) + ra + 1u];
        (*acc)[8] += a1.x * b0;
        (*acc)[10] += a1.y * b0;
        (*acc)[12] += a1.z * b0;
        (*acc)[14] += a1.w * b0;
    }
}

// Where column `col` of the output starts (row 0) and the distance between its rows.
fn out_index(z: u32, col: u32) -> u32 {
    if MODE == 1u {
        let hw = P.dst_h * P.dst_w;
        return ((col / hw) * P.groups + z) * P.m * hw + col % hw;
    }
    return z * P.c_stride + col;
}

fn out_row_stride() -> u32 {
    return select(P.n, P.dst_h * P.dst_w, MODE == 1u);
}

// Stores row `row` of the block's columns col .. col+3 (out: their output indices).
fn store_quad(row: u32, col: u32, out: vec4<u32>, v: vec4<f32>) {
    if row >= P.m {
        return;
    }
    let o = row * out_row_stride();
    if col < P.n { store_one(out.x + o, v.x); }
    if col + 1u < P.n { store_one(out.y + o, v.y); }
    if col + 2u < P.n { store_one(out.z + o, v.z); }
    if col + 3u < P.n { store_one(out.w + o, v.w); }
}

fn out_quad(z: u32, col: u32) -> vec4<u32> {
    let last = P.n - 1u;
    return vec4<u32>(
        out_index(z, min(col, last)),
        out_index(z, min(col + 1u, last)),
        out_index(z, min(col + 2u, last)),
        out_index(z, min(col + 3u, last)),
    );
}

// Rows r0 .. r0+3 of the block (accumulators from index 2·(r0 − row0)).
fn store_rows(acc: ptr<function, Acc>, i: u32, row: u32, col: u32, out0: vec4<u32>, out1: vec4<u32>) {
    store_quad(row, col, out0, (*acc)[i]);
    store_quad(row + 1u, col, out0, (*acc)[i + 2u]);
    store_quad(row + 2u, col, out0, (*acc)[i + 4u]);
    store_quad(row + 3u, col, out0, (*acc)[i + 6u]);
    if TN > 4u {
        store_quad(row, col + 4u, out1, (*acc)[i + 1u]);
        store_quad(row + 1u, col + 4u, out1, (*acc)[i + 3u]);
        store_quad(row + 2u, col + 4u, out1, (*acc)[i + 5u]);
        store_quad(row + 3u, col + 4u, out1, (*acc)[i + 7u]);
    }
}

@compute @workgroup_size(WG)
fn tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tile = wid.x + wid.y * nwg.x;
    if tile >= P.tiles * P.batches {
        return;
    }
    let z = tile / P.tiles;
    let t = tile % P.tiles;
    let row0 = (t / P.tiles_n) * BM;
    let col0 = (t % P.tiles_n) * BN;
    // Reduction length of this batch entry (MODE 2: the positions of the split's images).
    var first = 0u;
    var kt = P.k;
    if MODE == 2u {
        let images = split_images(z);
        first = images.x;
        kt = (images.y - images.x) * P.k;
    }
    // The column quad this invocation stages in every K-step (WG is a multiple of BN / 4, so it
    // never changes) and, for gathered views, its four columns' state.
    let bn4 = BN / 4u;
    let b_col = col0 + 4u * (lid % bn4);
    var g0 = Column(0u, 0u, 0u);
    var g1 = g0;
    var g2 = g0;
    var g3 = g0;
    if MODE != 0u {
        let last = P.n - 1u;
        g0 = column(z, min(b_col, last));
        g1 = column(z, min(b_col + 1u, last));
        g2 = column(z, min(b_col + 2u, last));
        g3 = column(z, min(b_col + 3u, last));
    }
    // The invocation's block: rows ra·4 .., columns cb·4 .. of the tile.
    let bx = BN / TN;
    let ra = (lid / bx) * (TM / 4u);
    let cb = (lid % bx) * (TN / 4u);
    var acc: Acc;
    let k_fast_b = MODE == 0u && TRANS_B;
    for (var k0 = 0u; k0 < kt; k0 += BK) {
        for (var i = lid; i < A_LEN; i += WG) {
            var q = i / (BM / 4u);
            var r = i % (BM / 4u);
            if a_k_fastest() {
                q = i % BK;
                r = i / BK;
            }
            As[q * (BM / 4u) + r] = load_a_quad(z, first, row0 + 4u * r, k0 + q, kt);
        }
        for (var i = lid; i < B_LEN; i += WG) {
            if k_fast_b {
                let q = i % BK;
                let j = i / BK;
                Bs[q * bn4 + j] = gemm_b_quad(z, col0 + 4u * j, k0 + q);
            } else {
                let q = i / bn4;
                if MODE == 0u {
                    Bs[i] = gemm_b_quad(z, b_col, k0 + q);
                } else {
                    Bs[i] = gather_quad(g0, g1, g2, g3, b_col, first, k0 + q, kt);
                }
            }
        }
        workgroupBarrier();
        for (var q = 0u; q < BK; q++) {
            mac_step(&acc, q, ra, cb);
        }
        workgroupBarrier();
    }
    let row = row0 + 4u * ra;
    let col = col0 + 4u * cb;
    let out0 = out_quad(z, col);
    var out1 = out0;
    if TN > 4u {
        out1 = out_quad(z, col + 4u);
    }
    store_rows(&acc, 0u, row, col, out0, out1);
    if TM > 4u {
        store_rows(&acc, 8u, row + 4u, col, out0, out1);
    }
}
