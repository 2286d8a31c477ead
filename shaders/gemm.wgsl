// Register-blocked (implicit) GEMM engine, shared by the matrix products and the convolutions:
//
//     C[z][row][col] (+)= Σ_p A(z, row, p) · B(z, p, col)
//
// A workgroup computes one tile of TM rows × (WG · TN) columns of one batch entry z: every lane
// owns the same TM rows and TN consecutive columns of its own, so the TM values of A a reduction
// step needs are the same for all lanes. The subgroup variant loads them once per subgroup (lane
// l loads step k0 + l of a chunk of 8) and shares them with subgroupBroadcast; the portable
// variant loads them in every lane. No workgroup memory, no barriers (both are slow on CPU
// adapters; see BENCHMARKS.md). Partial tiles clamp their loads to valid rows and columns and
// skip the stores; reduction steps past the end read A as zero.
//
// The operand views (A, B, the reduction cursor and the output index) depend on MODE:
//   0: row-major GEMM, A stored [m,k] or [k,m] (TRANS_A), B stored [k,n] or [n,k] (TRANS_B);
//   1: convolution as a correlation (forward; with FLIP the backward-data pass), conv.wgsl;
//   2: convolution weight gradient, split over images, conv.wgsl.
// The variant (subgroup or portable) appends the entry point `tiles` and `chunk_rows`.

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
    // Convolution geometry: source (input of the correlation) channels, height and width; the
    // output height and width; the padding; the kernel size; images per split (MODE 2).
    src_c: u32,
    src_h: u32,
    src_w: u32,
    dst_h: u32,
    dst_w: u32,
    pad: u32,
    ks: u32,
    images_per_split: u32,
    images: u32,
    _pad0: u32,
}

// Largest tile the accumulator arrays hold; TM and TN (multiples of 4) choose the tile.
const MAX_TM: u32 = 64u;
const MAX_TN: u32 = 8u;
const MAX_TM4: u32 = 16u;
const MAX_TN4: u32 = 2u;
// Reduction steps per chunk: the lanes of a subgroup that load A.
const CHUNK: u32 = 8u;

override MODE: u32 = 0u;
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override FLIP: bool = false;
override TM: u32 = 32u;
override TN: u32 = 8u;
override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> P: TileParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// Per-column state: the base index into B and, for convolutions, the two coordinates whose
// sums with the cursor decide whether a tap falls in the zero padding.
// The lane's accumulators: row r, columns 4j..4j+3.
alias Acc = array<array<vec4<f32>, MAX_TN4>, MAX_TM>;

struct Column {
    base: u32,
    dy: u32,
    dx: u32,
    out: u32,
}

// Where the reduction stands: the offset added to every column base and the tap coordinates.
struct Cursor {
    p: u32,
    off: u32,
    ty: u32,
    tx: u32,
    ci: u32,
}

fn gemm_column(z: u32, col: u32) -> Column {
    let base = z * P.b_stride + select(col, col * P.k, TRANS_B);
    return Column(base, 0u, 0u, z * P.c_stride + col);
}

fn gemm_a(z: u32, row: u32, p: u32) -> u32 {
    return z * P.a_stride + select(row * P.k + p, p * P.m + row, TRANS_A);
}

// The operand views below select by MODE instead of branching: MODE is a pipeline constant, so
// the selects fold away, and loops around them stay free of control flow (and get unrolled).
fn column(z: u32, col: u32) -> Column {
    let g = gemm_column(z, col);
    let cv = conv_column(col);
    let w = wgrad_column(z, col);
    return Column(
        select(select(g.base, cv.base, MODE == 1u), w.base, MODE == 2u),
        select(select(g.dy, cv.dy, MODE == 1u), w.dy, MODE == 2u),
        select(select(g.dx, cv.dx, MODE == 1u), w.dx, MODE == 2u),
        select(select(g.out, cv.out, MODE == 1u), w.out, MODE == 2u),
    );
}

// Index into `a` of A(z, row, p) for step p < k of segment s.
fn a_index(z: u32, s: u32, row: u32, p: u32) -> u32 {
    return select(select(gemm_a(z, row, p), conv_a(row, p), MODE == 1u), wgrad_a(s, row, p), MODE == 2u);
}

fn load_b(col: Column, cur: Cursor) -> f32 {
    let pc = min(cur.p, P.k - 1u);
    let gemm = col.base + select(pc * P.n, pc, TRANS_B);
    let inside = MODE == 0u || (col.dy + cur.ty < P.src_h && col.dx + cur.tx < P.src_w);
    let index = select(col.base + cur.off, gemm, MODE == 0u);
    return select(0.0, b[select(0u, index, inside)], inside);
}

fn cursor_start(s: u32) -> Cursor {
    switch MODE {
        case 2u: { return Cursor(0u, s * P.src_c * P.src_h * P.src_w, 0u, 0u, 0u); }
        default: { return Cursor(0u, 0u, 0u, 0u, 0u); }
    }
}

fn cursor_next(cur: Cursor) -> Cursor {
    var n = cur;
    n.p += 1u;
    switch MODE {
        case 1u: {
            // Taps (ci, u, v) in OIHW order: v fastest.
            n.tx += 1u;
            n.off += 1u;
            if n.tx == P.ks {
                n.tx = 0u;
                n.ty += 1u;
                n.off += P.src_w - P.ks;
                if n.ty == P.ks {
                    n.ty = 0u;
                    n.ci += 1u;
                    n.off = n.ci * P.src_h * P.src_w;
                }
            }
        }
        case 2u: {
            // Output positions (i, j) of one image: j fastest.
            n.tx += 1u;
            n.off += 1u;
            if n.tx == P.dst_w {
                n.tx = 0u;
                n.ty += 1u;
                n.off += P.src_w - P.dst_w;
            }
        }
        default: {}
    }
    return n;
}

// Segments of the reduction for batch entry z: MODE 2 walks the images of its split.
fn segments(z: u32) -> vec2<u32> {
    if MODE == 2u {
        let first = z * P.images_per_split;
        return vec2<u32>(first, min(first + P.images_per_split, P.images));
    }
    return vec2<u32>(0u, 1u);
}

// Loops whose bodies touch storage buffers are not unrolled by every shader compiler (Mesa's
// llvmpipe keeps them, and then also counts their iterations against its 65 535-iteration
// limit), so the code that loads and stores is written out per 4-row / 4-column block, with
// blocks beyond TM and TN removed by the pipeline constants.

// A(row .. row+3, p), rows past the end repeating the last; zero unless `live`.
fn a_block(z: u32, s: u32, row: u32, p: u32, live: bool) -> vec4<f32> {
    let last = P.m - 1u;
    let v = vec4<f32>(
        a[a_index(z, s, min(row, last), p)],
        a[a_index(z, s, min(row + 1u, last), p)],
        a[a_index(z, s, min(row + 2u, last), p)],
        a[a_index(z, s, min(row + 3u, last), p)],
    );
    return select(vec4<f32>(0.0), v, live);
}

// A(row0 + r, p) for every row of the tile, zero when the step is past the end of the segment.
fn a_rows(z: u32, s: u32, row0: u32, p: u32) -> array<vec4<f32>, MAX_TM4> {
    var v: array<vec4<f32>, MAX_TM4>;
    let pc = min(p, P.k - 1u);
    let live = p < P.k;
    v[0] = a_block(z, s, row0, pc, live);
    if TM > 4u { v[1] = a_block(z, s, row0 + 4u, pc, live); }
    if TM > 8u { v[2] = a_block(z, s, row0 + 8u, pc, live); }
    if TM > 12u { v[3] = a_block(z, s, row0 + 12u, pc, live); }
    if TM > 16u { v[4] = a_block(z, s, row0 + 16u, pc, live); }
    if TM > 20u { v[5] = a_block(z, s, row0 + 20u, pc, live); }
    if TM > 24u { v[6] = a_block(z, s, row0 + 24u, pc, live); }
    if TM > 28u { v[7] = a_block(z, s, row0 + 28u, pc, live); }
    if TM > 32u { v[8] = a_block(z, s, row0 + 32u, pc, live); }
    if TM > 36u { v[9] = a_block(z, s, row0 + 36u, pc, live); }
    if TM > 40u { v[10] = a_block(z, s, row0 + 40u, pc, live); }
    if TM > 44u { v[11] = a_block(z, s, row0 + 44u, pc, live); }
    if TM > 48u { v[12] = a_block(z, s, row0 + 48u, pc, live); }
    if TM > 52u { v[13] = a_block(z, s, row0 + 52u, pc, live); }
    if TM > 56u { v[14] = a_block(z, s, row0 + 56u, pc, live); }
    if TM > 60u { v[15] = a_block(z, s, row0 + 60u, pc, live); }
    return v;
}

fn b_block(cols: ptr<function, array<Column, MAX_TN>>, j: u32, cur: Cursor) -> vec4<f32> {
    return vec4<f32>(
        load_b((*cols)[j], cur),
        load_b((*cols)[j + 1u], cur),
        load_b((*cols)[j + 2u], cur),
        load_b((*cols)[j + 3u], cur),
    );
}

// One reduction step: acc[row][col] += A(row, p) · B(p, col) for the lane's tile.
fn mac(acc: ptr<function, Acc>, av: array<vec4<f32>, MAX_TM4>, cols: ptr<function, array<Column, MAX_TN>>, cur: Cursor) -> Cursor {
    var bv: array<vec4<f32>, MAX_TN4>;
    bv[0] = b_block(cols, 0u, cur);
    if TN > 4u { bv[1] = b_block(cols, 4u, cur); }
    mac_block(acc, 0u, av[0], bv);
    if TM > 4u { mac_block(acc, 4u, av[1], bv); }
    if TM > 8u { mac_block(acc, 8u, av[2], bv); }
    if TM > 12u { mac_block(acc, 12u, av[3], bv); }
    if TM > 16u { mac_block(acc, 16u, av[4], bv); }
    if TM > 20u { mac_block(acc, 20u, av[5], bv); }
    if TM > 24u { mac_block(acc, 24u, av[6], bv); }
    if TM > 28u { mac_block(acc, 28u, av[7], bv); }
    if TM > 32u { mac_block(acc, 32u, av[8], bv); }
    if TM > 36u { mac_block(acc, 36u, av[9], bv); }
    if TM > 40u { mac_block(acc, 40u, av[10], bv); }
    if TM > 44u { mac_block(acc, 44u, av[11], bv); }
    if TM > 48u { mac_block(acc, 48u, av[12], bv); }
    if TM > 52u { mac_block(acc, 52u, av[13], bv); }
    if TM > 56u { mac_block(acc, 56u, av[14], bv); }
    if TM > 60u { mac_block(acc, 60u, av[15], bv); }
    return cursor_next(cur);
}

// Rows r .. r+3 of the lane's tile.
fn mac_block(acc: ptr<function, Acc>, r: u32, a4: vec4<f32>, bv: array<vec4<f32>, MAX_TN4>) {
    (*acc)[r][0] += a4.x * bv[0];
    (*acc)[r + 1u][0] += a4.y * bv[0];
    (*acc)[r + 2u][0] += a4.z * bv[0];
    (*acc)[r + 3u][0] += a4.w * bv[0];
    if TN > 4u {
        (*acc)[r][1] += a4.x * bv[1];
        (*acc)[r + 1u][1] += a4.y * bv[1];
        (*acc)[r + 2u][1] += a4.z * bv[1];
        (*acc)[r + 3u][1] += a4.w * bv[1];
    }
}

fn store_one(i: u32, v: f32) {
    c[i] = v + select(0.0, c[i], P.accumulate != 0u);
}

fn store_vec(row: u32, j: u32, v: vec4<f32>, col0: u32, cols: ptr<function, array<Column, MAX_TN>>) {
    let stride = row * out_row_stride();
    let live = row < P.m;
    if live && col0 + j < P.n { store_one((*cols)[j].out + stride, v.x); }
    if live && col0 + j + 1u < P.n { store_one((*cols)[j + 1u].out + stride, v.y); }
    if live && col0 + j + 2u < P.n { store_one((*cols)[j + 2u].out + stride, v.z); }
    if live && col0 + j + 3u < P.n { store_one((*cols)[j + 3u].out + stride, v.w); }
}

fn store_row(acc: ptr<function, Acc>, r: u32, row0: u32, col0: u32, cols: ptr<function, array<Column, MAX_TN>>) {
    store_vec(row0 + r, 0u, (*acc)[r][0], col0, cols);
    if TN > 4u { store_vec(row0 + r, 4u, (*acc)[r][1], col0, cols); }
}

fn store_rows(acc: ptr<function, Acc>, r: u32, row0: u32, col0: u32, cols: ptr<function, array<Column, MAX_TN>>) {
    store_row(acc, r, row0, col0, cols);
    store_row(acc, r + 1u, row0, col0, cols);
    store_row(acc, r + 2u, row0, col0, cols);
    store_row(acc, r + 3u, row0, col0, cols);
}

fn run_tiles(tile: u32, lid: u32, lane: u32) {
    if tile >= P.tiles * P.batches {
        return;
    }
    let z = tile / P.tiles;
    let t = tile % P.tiles;
    let row0 = (t / P.tiles_n) * TM;
    let col0 = (t % P.tiles_n) * (WG * TN) + lid * TN;
    var cols: array<Column, MAX_TN>;
    for (var j = 0u; j < TN; j++) {
        cols[j] = column(z, min(col0 + j, P.n - 1u));
    }
    var acc: Acc;
    let segs = segments(z);
    for (var s = segs.x; s < segs.y; s++) {
        var cur = cursor_start(s);
        // Written out: the subgroup variant broadcasts from constant lanes.
        for (var k0 = 0u; k0 < P.k; k0 += CHUNK) {
            var frag = chunk_fragment(z, s, row0, k0, lane);
            cur = mac(&acc, chunk_rows(&frag, z, s, row0, k0, 0u), &cols, cur);
            cur = mac(&acc, chunk_rows(&frag, z, s, row0, k0, 1u), &cols, cur);
            cur = mac(&acc, chunk_rows(&frag, z, s, row0, k0, 2u), &cols, cur);
            cur = mac(&acc, chunk_rows(&frag, z, s, row0, k0, 3u), &cols, cur);
            cur = mac(&acc, chunk_rows(&frag, z, s, row0, k0, 4u), &cols, cur);
            cur = mac(&acc, chunk_rows(&frag, z, s, row0, k0, 5u), &cols, cur);
            cur = mac(&acc, chunk_rows(&frag, z, s, row0, k0, 6u), &cols, cur);
            cur = mac(&acc, chunk_rows(&frag, z, s, row0, k0, 7u), &cols, cur);
        }
    }
    store_rows(&acc, 0u, row0, col0, &cols);
    if TM > 4u { store_rows(&acc, 4u, row0, col0, &cols); }
    if TM > 8u { store_rows(&acc, 8u, row0, col0, &cols); }
    if TM > 12u { store_rows(&acc, 12u, row0, col0, &cols); }
    if TM > 16u { store_rows(&acc, 16u, row0, col0, &cols); }
    if TM > 20u { store_rows(&acc, 20u, row0, col0, &cols); }
    if TM > 24u { store_rows(&acc, 24u, row0, col0, &cols); }
    if TM > 28u { store_rows(&acc, 28u, row0, col0, &cols); }
    if TM > 32u { store_rows(&acc, 32u, row0, col0, &cols); }
    if TM > 36u { store_rows(&acc, 36u, row0, col0, &cols); }
    if TM > 40u { store_rows(&acc, 40u, row0, col0, &cols); }
    if TM > 44u { store_rows(&acc, 44u, row0, col0, &cols); }
    if TM > 48u { store_rows(&acc, 48u, row0, col0, &cols); }
    if TM > 52u { store_rows(&acc, 52u, row0, col0, &cols); }
    if TM > 56u { store_rows(&acc, 56u, row0, col0, &cols); }
    if TM > 60u { store_rows(&acc, 60u, row0, col0, &cols); }
}

fn out_row_stride() -> u32 {
    switch MODE {
        case 1u: { return P.dst_h * P.dst_w; }
        default: { return P.n; }
    }
}
