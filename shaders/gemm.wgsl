// Register-blocked (implicit) GEMM engine, shared by the matrix products and the convolutions:
//
//     C[z][row][col] (+)= Σ_p A(z, row, p) · B(z, p, col)
//
// A workgroup computes one tile of TM rows × (WG · TN) columns of one batch entry z: every lane
// owns the same TM rows and TN consecutive columns of its own, so the TM values of A a reduction
// step needs are the same for all lanes. The reduction runs in chunks of CHUNK = 8 steps: the
// lane first loads B for the whole chunk, then walks its rows, each row's accumulators staying in
// registers for the 8 steps (one load and one store of an accumulator per chunk, not per step).
// The subgroup variant loads A once per subgroup and shares it with subgroupBroadcast; the
// portable variant loads it in every lane. Where the shader has vec4 views of the operands
// (VEC_A, VEC_B: 16-byte aligned rows, chosen by the launcher), A rows contiguous along the
// reduction are loaded as vec4 (lane l holds rows 8i + l of the chunk) and GEMM B rows too;
// convolutions whose kernel rows have three taps load one source window per row (ROWS3), and
// backward data over a large padding visits only the taps inside the source (TAP_MAJOR). No
// workgroup memory, no barriers (both are slow on CPU adapters; see BENCHMARKS.md). Partial
// tiles clamp their loads to valid rows and columns and skip the stores; reduction steps past
// the end read A as zero.
//
// The operand views (A, B, the reduction cursor and the output index) depend on MODE:
//   0: row-major GEMM, A stored [m,k] or [k,m] (TRANS_A), B stored [k,n] or [n,k] (TRANS_B);
//   1: convolution as a correlation (forward, and backward data over the rotated weights),
//      conv.wgsl;
//   2: convolution weight gradient, split over images, conv.wgsl.
// tile_params.wgsl, prepended, holds TileParams, the bindings P, a, b, c and sum_splits (shared
// with the GPU engine). The launcher's shader appends the vec4 views (or stand-ins: VEC_A,
// load_a4, VEC_B, load_b4, store_c4) and the variant (subgroup or portable): the entry point
// `tiles`, chunk_fragment, chunk_row and chunk_block.

// Largest tile the accumulator arrays hold; TM and TN (multiples of 4) choose the tile.
const MAX_TM: u32 = 64u;
const MAX_TN: u32 = 12u;
const MAX_TN4: u32 = 3u;
// Reduction steps per chunk: the lanes of a subgroup that load A.
const CHUNK: u32 = 8u;
// Steps per chunk of a ROWS3 correlation (four kernel rows of three taps), and the most of any.
const ROW_CHUNK: u32 = 12u;
// The A fragment: per 8 rows of the row layout, one vec4 per 4 steps of the chunk.
alias Frag = array<vec4<f32>, 24>;

override MODE: u32 = 0u;
override TRANS_A: bool = false;
override TRANS_B: bool = false;
// MODE 1 only: the source is dilated by (P.dil_h, P.dil_w) (strided backward data).
override DILATE: bool = false;
// Kernel rows of three taps (kw == 3) with both vec4 views: one window of four vec4 source
// loads serves the three taps of a row. MODE 1: the reduction runs in chunks of ROW_CHUNK
// steps, four whole kernel rows (load_kernel_row; with A_UNALIGNED the last chunk's rows past
// the end read zero, else k is a multiple of 12). MODE 2 (TN = 12): each lane's columns are
// four whole kernel rows (load_wgrad_row).
override ROWS3: bool = false;
// MODE 1 with VEC_A: rows of A start anywhere (k % 4 != 0, e.g. a first layer's 27 taps), so
// the row layout loads the three vec4 around a row's 8 steps (four around 12 with ROWS3) and
// shifts them into place (a_window) instead of one scalar load per row and step.
override A_UNALIGNED: bool = false;
// MODE 1 with VEC_A and VEC_B, never with ROWS3, A_UNALIGNED or DILATE (backward data of a
// padded convolution whose reduction channels are a multiple of CHUNK): A is laid out tap-major
// [row][u][v][channel] and the source channels-last [image][y][x][channel]; the tile's columns
// are images of one destination position (P.n / (dst_h · dst_w) per position, a multiple of the
// tile's columns), so the kernel taps that read the source rather than the zero padding are the
// same for the whole workgroup and the reduction visits only those (tile_taps): a correlation
// over a small source with a large padding (LeNet-5 conv2's backward data, 55 % of its taps in
// the padding) skips the rest.
override TAP_MAJOR: bool = false;
override TM: u32 = 32u;
// 8, or 12 for a MODE 2 ROWS3 pipeline only.
override TN: u32 = 8u;
override WG: u32 = 64u;

// Whether chunks hold ROW_CHUNK steps (a ROWS3 correlation) instead of CHUNK.
fn row_chunks() -> bool {
    return ROWS3 && MODE == 1u;
}

// The lane's accumulators: acc[j][r] holds row r, columns 4j..4j+3 (column blocks outermost, so
// that pipelines of TN = 8 use two contiguous blocks of the array and leave the third alone).
alias Acc = array<array<vec4<f32>, MAX_TM>, MAX_TN4>;

// Per-column state: the base index into B and, for convolutions, the two coordinates whose
// sums with the cursor decide whether a tap falls in the zero padding.
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
    let cv = conv_column(z, col);
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
    return select(select(gemm_a(z, row, p), conv_a(z, row, p), MODE == 1u), wgrad_a(z, s, row, p), MODE == 2u);
}

fn load_b(col: Column, cur: Cursor) -> f32 {
    let pc = min(cur.p, P.k - 1u);
    let gemm = col.base + select(pc * P.n, pc, TRANS_B);
    let inside = MODE == 0u || conv_inside(col, cur);
    let index = select(conv_index(col, cur), gemm, MODE == 0u);
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
            if n.tx == P.kw {
                n.tx = 0u;
                n.ty += 1u;
                n.off += P.src_w - P.kw;
                if n.ty == P.kh {
                    n.ty = 0u;
                    n.ci += 1u;
                    n.off = n.ci * P.src_h * P.src_w;
                }
            }
        }
        case 2u: {
            // Output positions (i, j) of one image, j fastest; ty, tx are their source offsets
            // (i·stride_h, j·stride_w).
            n.tx += P.stride_w;
            n.off += P.stride_w;
            if n.tx == P.dst_w * P.stride_w {
                n.tx = 0u;
                n.ty += P.stride_h;
                n.off += P.stride_h * P.src_w - P.dst_w * P.stride_w;
            }
        }
        default: {}
    }
    return n;
}

// Segments of the reduction for batch entry z: MODE 2 walks the images of its split,
// TAP_MAJOR the kernel rows u of the tile's taps (taps: u in [x, y), v in [z, w)).
fn segments(z: u32, taps: vec4<u32>) -> vec2<u32> {
    if MODE == 2u {
        let first = (z / P.groups) * P.images_per_split;
        return vec2<u32>(first, min(first + P.images_per_split, P.images));
    }
    if TAP_MAJOR {
        return taps.xy;
    }
    return vec2<u32>(0u, 1u);
}

// The reduction steps [x, y) of segment s: all of them, or with TAP_MAJOR the channels of the
// kernel row's taps v in [taps.z, taps.w) (contiguous in the tap-major A).
fn segment_steps(s: u32, taps: vec4<u32>) -> vec2<u32> {
    if TAP_MAJOR {
        let channels = tap_channels();
        return vec2<u32>((s * P.kw + taps.z) * channels, (s * P.kw + taps.w) * channels);
    }
    return vec2<u32>(0u, P.k);
}

// TAP_MAJOR: source channels per tap (a multiple of CHUNK, so that a chunk lies in one tap),
// and destination columns per position (images, padded to whole tiles).
fn tap_channels() -> u32 {
    return P.k / max(P.kh * P.kw, 1u);
}
fn tap_position_cols() -> u32 {
    return max(P.n / max(P.dst_h * P.dst_w, 1u), 1u);
}

// TAP_MAJOR: the taps (u in [x, y), v in [z, w)) of the destination position of the tile whose
// first column is col0 that read the source, not the zero padding.
fn tile_taps(col0: u32) -> vec4<u32> {
    if !TAP_MAJOR {
        return vec4<u32>(0u);
    }
    let pos = col0 / tap_position_cols();
    let rows = tap_range((pos / P.dst_w) * P.stride_h - P.pad_h, P.src_h, P.kh);
    let cols = tap_range((pos % P.dst_w) * P.stride_w - P.pad_w, P.src_w, P.kw);
    return vec4<u32>(rows, cols);
}

// Taps t < taps with 0 <= origin + t < size (origin a wrapping u32, below zero in the padding).
fn tap_range(origin: u32, size: u32, taps: u32) -> vec2<u32> {
    let o = bitcast<i32>(origin);
    let first = u32(max(-o, 0));
    let end = u32(clamp(i32(size) - o, 0, i32(taps)));
    return vec2<u32>(first, max(first, end));
}

// Loops whose bodies touch storage buffers are not unrolled by every shader compiler (Mesa's
// llvmpipe keeps them, and then also counts their iterations against its 65 535-iteration
// limit), so the code that loads and stores is written out per 4-row / 4-column block, with
// blocks beyond TM and TN removed by the pipeline constants.

// A(row .. row+3, p), rows past the end repeating the last; zero unless `live`.
fn a_block(z: u32, s: u32, row: u32, p: u32, live: bool) -> vec4<f32> {
    if VEC_A && MODE == 0u && TRANS_A {
        // m is a multiple of 4: a block is wholly inside or wholly past the end.
        let i = z * P.a_stride + p * P.m + min(row, P.m - 4u);
        return select(vec4<f32>(0.0), load_a4(i / 4u), live);
    }
    let last = P.m - 1u;
    let v = vec4<f32>(
        a[a_index(z, s, min(row, last), p)],
        a[a_index(z, s, min(row + 1u, last), p)],
        a[a_index(z, s, min(row + 2u, last), p)],
        a[a_index(z, s, min(row + 3u, last), p)],
    );
    return select(vec4<f32>(0.0), v, live);
}

// Whether the A fragment holds whole rows (A contiguous along the reduction, loaded as vec4):
// then lane l of a subgroup loads rows 8i + l, steps k0 .. k0+7, of the chunk.
fn a_by_row() -> bool {
    return VEC_A && ((MODE == 0u && !TRANS_A) || MODE >= 1u);
}

// A(row, p .. p+3) through the vec4 view (k is a multiple of 4), zero past the end.
fn a_vec(z: u32, s: u32, row: u32, p: u32) -> vec4<f32> {
    let i = a_index(z, s, min(row, P.m - 1u), min(p, P.k - 4u));
    return select(vec4<f32>(0.0), load_a4(i / 4u), p < P.k);
}

// A(row, k0 .. k0+7), and k0+8 .. k0+11 in ROW_CHUNK chunks (else zero), where rows of A start
// anywhere (A_UNALIGNED): the three (four) vec4 around the steps, shifted into place; zero past
// the end of the reduction (loads there may cross into the next row or past the tensor: their
// elements are replaced, never used).
fn a_window(z: u32, s: u32, row: u32, k0: u32) -> array<vec4<f32>, 3> {
    let start = a_index(z, s, min(row, P.m - 1u), k0);
    let i = start / 4u;
    let shift = start & 3u;
    let last = select(vec4<f32>(0.0), load_a4(i + 3u), row_chunks());
    let e = array<vec4<f32>, 4>(load_a4(i), load_a4(i + 1u), load_a4(i + 2u), last);
    let tail = vec4<f32>(a_pick(e, k0, 8u, shift), a_pick(e, k0, 9u, shift), a_pick(e, k0, 10u, shift), a_pick(e, k0, 11u, shift));
    return array<vec4<f32>, 3>(
        vec4<f32>(a_pick(e, k0, 0u, shift), a_pick(e, k0, 1u, shift), a_pick(e, k0, 2u, shift), a_pick(e, k0, 3u, shift)),
        vec4<f32>(a_pick(e, k0, 4u, shift), a_pick(e, k0, 5u, shift), a_pick(e, k0, 6u, shift), a_pick(e, k0, 7u, shift)),
        select(vec4<f32>(0.0), tail, row_chunks()),
    );
}

// Step k0 + q of a_window's elements e, zero past the end of the reduction.
fn a_pick(e: array<vec4<f32>, 4>, k0: u32, q: u32, shift: u32) -> f32 {
    return select(0.0, pick16(e, q, shift), k0 + q < P.k);
}

// A(row, k0 .. k0+7) in the row layout, and k0+8 .. k0+11 in ROW_CHUNK chunks (else zero).
fn a_row_steps(z: u32, s: u32, row: u32, k0: u32) -> array<vec4<f32>, 3> {
    if A_UNALIGNED {
        return a_window(z, s, row, k0);
    }
    let tail = select(vec4<f32>(0.0), a_vec(z, s, row, k0 + 8u), row_chunks());
    return array<vec4<f32>, 3>(a_vec(z, s, row, k0), a_vec(z, s, row, k0 + 4u), tail);
}

// A(row .. row+3, p), zero when the step is past the end of the segment.
fn a_step(z: u32, s: u32, row: u32, p: u32) -> vec4<f32> {
    return a_block(z, s, row, min(p, P.k - 1u), p < P.k);
}

// A(row0 + r, p) for every row of the tile, zero when the step is past the end of the segment.
fn a_rows(z: u32, s: u32, row0: u32, p: u32) -> Frag {
    var v: Frag;
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

// B(p, col) of the lane's columns for the steps of a chunk.
alias Bq = array<array<vec4<f32>, MAX_TN4>, ROW_CHUNK>;

fn load_bq(bq: ptr<function, Bq>, q: u32, cols: ptr<function, array<Column, MAX_TN>>, cur: Cursor) -> Cursor {
    (*bq)[q][0] = b_block(cols, 0u, cur);
    if TN > 4u { (*bq)[q][1] = b_block(cols, 4u, cur); }
    return cursor_next(cur);
}

// B(k0 + q, col) for the chunk from the vec4 view (GEMM; n, or k when TRANS_B, a multiple of 4).
fn load_b_rows(bq: ptr<function, Bq>, q: u32, cols: ptr<function, array<Column, MAX_TN>>, k0: u32) {
    let row = min(k0 + q, P.k - 1u) * P.n;
    (*bq)[q][0] = load_b4(((*cols)[0].base + row) / 4u);
    if TN > 4u { (*bq)[q][1] = load_b4(((*cols)[4].base + row) / 4u); }
}

// Column j of B stored transposed, 4 steps from element `off` of the column on.
fn b_col(cols: ptr<function, array<Column, MAX_TN>>, j: u32, off: u32) -> vec4<f32> {
    return load_b4(((*cols)[j].base + off) / 4u);
}

// The chunk's 8 steps of columns stored transposed (8 consecutive elements from element `off`
// of each column: a GEMM's B with TRANS_B, a TAP_MAJOR tile's channels), two vec4 loads per
// column, transposed into place. `tail` is off + 4, or less where that would pass the end.
fn load_b_cols(bq: ptr<function, Bq>, cols: ptr<function, array<Column, MAX_TN>>, off: u32, tail: u32) {
    put_col_steps(bq, 0u, 0u, cols, off);
    put_col_steps(bq, 4u, 0u, cols, tail);
    if TN > 4u {
        put_col_steps(bq, 0u, 1u, cols, off);
        put_col_steps(bq, 4u, 1u, cols, tail);
    }
}

// Steps q0 .. q0+3 of columns 4·blk .. 4·blk+3 stored transposed, from element `off` of each.
fn put_col_steps(bq: ptr<function, Bq>, q0: u32, blk: u32, cols: ptr<function, array<Column, MAX_TN>>, off: u32) {
    let c0 = b_col(cols, 4u * blk, off);
    let c1 = b_col(cols, 4u * blk + 1u, off);
    let c2 = b_col(cols, 4u * blk + 2u, off);
    let c3 = b_col(cols, 4u * blk + 3u, off);
    (*bq)[q0][blk] = vec4<f32>(c0.x, c1.x, c2.x, c3.x);
    (*bq)[q0 + 1u][blk] = vec4<f32>(c0.y, c1.y, c2.y, c3.y);
    (*bq)[q0 + 2u][blk] = vec4<f32>(c0.z, c1.z, c2.z, c3.z);
    (*bq)[q0 + 3u][blk] = vec4<f32>(c0.w, c1.w, c2.w, c3.w);
}

// Whether a tap reads the source (not the zero padding, nor, when DILATE, a zero between the
// rows or columns of the dilated source, nor a step past the end of the reduction, which would
// read the next image: its weight is zero, but 0 · NaN is not); coordinates wrap below zero.
fn conv_inside(col: Column, cur: Cursor) -> bool {
    let y = col.dy + cur.ty;
    let x = col.dx + cur.tx;
    let plain = y < P.src_h && x < P.src_w;
    let dilated = y % P.dil_h == 0u && y / P.dil_h < P.src_h && x % P.dil_w == 0u && x / P.dil_w < P.src_w;
    return select(plain, dilated, DILATE) && cur.p < P.k;
}

// Index into `b` of a tap inside the source: the column base plus the cursor's offset, or with
// DILATE the dilated coordinates divided back (the base then holds the image and group only).
fn conv_index(col: Column, cur: Cursor) -> u32 {
    let y = (col.dy + cur.ty) / P.dil_h;
    let x = (col.dx + cur.tx) / P.dil_w;
    let dilated = col.base + (cur.ci * P.src_h + y) * P.src_w + x;
    return select(col.base + cur.off, dilated, DILATE);
}

fn vec4_index(start: u32) -> u32 {
    return bitcast<u32>(bitcast<i32>(start) >> 2u);
}

// Column j of the weight gradient's B for the 8 steps of a chunk, which are 8 consecutive
// positions of one output row (dst_w % 8 == 0), from a window e of source elements: step q reads
// element v + q + shift (tap v of the window's kernel row); zero where it falls in the padding
// (`x`: the source column of step 0, tap 0).
fn put_wgrad_col(bq: ptr<function, Bq>, j: u32, e: array<vec4<f32>, 4>, v: u32, shift: u32, row_in: bool, x: u32) {
    let jj = j / 4u;
    let c = j % 4u;
    (*bq)[0][jj][c] = select(0.0, pick16(e, v, shift), row_in && x + v < P.src_w);
    (*bq)[1][jj][c] = select(0.0, pick16(e, v + 1u, shift), row_in && x + v + 1u < P.src_w);
    (*bq)[2][jj][c] = select(0.0, pick16(e, v + 2u, shift), row_in && x + v + 2u < P.src_w);
    (*bq)[3][jj][c] = select(0.0, pick16(e, v + 3u, shift), row_in && x + v + 3u < P.src_w);
    (*bq)[4][jj][c] = select(0.0, pick16(e, v + 4u, shift), row_in && x + v + 4u < P.src_w);
    (*bq)[5][jj][c] = select(0.0, pick16(e, v + 5u, shift), row_in && x + v + 5u < P.src_w);
    (*bq)[6][jj][c] = select(0.0, pick16(e, v + 6u, shift), row_in && x + v + 6u < P.src_w);
    (*bq)[7][jj][c] = select(0.0, pick16(e, v + 7u, shift), row_in && x + v + 7u < P.src_w);
}

// Column j of the weight gradient's B for the chunk from the vec4 view: its 8 consecutive
// source elements, three vec4 loads.
fn load_wgrad_col(bq: ptr<function, Bq>, j: u32, cols: ptr<function, array<Column, MAX_TN>>, cur: Cursor) {
    let col = (*cols)[j];
    let start = col.base + cur.off;
    let i = vec4_index(start);
    let e = array<vec4<f32>, 4>(load_b4(i), load_b4(i + 1u), load_b4(i + 2u), vec4<f32>(0.0));
    put_wgrad_col(bq, j, e, 0u, start & 3u, col.dy + cur.ty < P.src_h, col.dx + cur.tx);
}

// Columns 3r .. 3r+2 (ROWS3, MODE 2): the three taps of one kernel row, whose 8 steps read 10
// consecutive source elements: one window of four vec4 loads, where the columns one by one take
// nine.
fn load_wgrad_row(bq: ptr<function, Bq>, r: u32, cols: ptr<function, array<Column, MAX_TN>>, cur: Cursor) {
    let col = (*cols)[3u * r];
    let start = col.base + cur.off;
    let shift = start & 3u;
    let i = vec4_index(start);
    let e = array<vec4<f32>, 4>(load_b4(i), load_b4(i + 1u), load_b4(i + 2u), load_b4(i + 3u));
    let row_in = col.dy + cur.ty < P.src_h;
    let x = col.dx + cur.tx;
    put_wgrad_col(bq, 3u * r, e, 0u, shift, row_in, x);
    put_wgrad_col(bq, 3u * r + 1u, e, 1u, shift, row_in, x);
    put_wgrad_col(bq, 3u * r + 2u, e, 2u, shift, row_in, x);
}

// One step of the convolution's B from the vec4 view: the lane's 8 columns are 8 consecutive
// positions of one output row (dst_w % 8 == 0), so their taps are 8 consecutive source elements
// that start at the same offset within a vec4 in every lane (src_w % 4 == 0): three vec4 loads
// and a shift replace eight scalar loads; taps in the zero padding read zero.
fn load_conv_b(bq: ptr<function, Bq>, q: u32, cols: ptr<function, array<Column, MAX_TN>>, cur: Cursor) -> Cursor {
    let start = (*cols)[0].base + cur.off;
    let shift = start & 3u;
    // start may lie before the tensor (a tap in the padding): divide as a signed value.
    let i = vec4_index(start);
    let e = array<vec4<f32>, 4>(load_b4(i), load_b4(i + 1u), load_b4(i + 2u), vec4<f32>(0.0));
    (*bq)[q][0] = vec4<f32>(
        select(0.0, pick16(e, 0u, shift), conv_inside((*cols)[0], cur)),
        select(0.0, pick16(e, 1u, shift), conv_inside((*cols)[1], cur)),
        select(0.0, pick16(e, 2u, shift), conv_inside((*cols)[2], cur)),
        select(0.0, pick16(e, 3u, shift), conv_inside((*cols)[3], cur)),
    );
    (*bq)[q][1] = vec4<f32>(
        select(0.0, pick16(e, 4u, shift), conv_inside((*cols)[4], cur)),
        select(0.0, pick16(e, 5u, shift), conv_inside((*cols)[5], cur)),
        select(0.0, pick16(e, 6u, shift), conv_inside((*cols)[6], cur)),
        select(0.0, pick16(e, 7u, shift), conv_inside((*cols)[7], cur)),
    );
    return cursor_next(cur);
}

// Element first + shift of the 16 in e (first + shift < 16).
fn pick16(e: array<vec4<f32>, 4>, first: u32, shift: u32) -> f32 {
    let f = array<f32, 16>(
        e[0].x, e[0].y, e[0].z, e[0].w, e[1].x, e[1].y, e[1].z, e[1].w,
        e[2].x, e[2].y, e[2].z, e[2].w, e[3].x, e[3].y, e[3].z, e[3].w,
    );
    let lo = select(f[first], f[first + 1u], shift == 1u);
    let hi = select(f[first + 2u], f[first + 3u], shift == 3u);
    return select(lo, hi, shift >= 2u);
}

// Tap v of columns j .. j+3 from the window e of a source row that starts `shift` elements
// into it; zero where the tap falls in the padding (`x`: the source column of column 0, tap 0).
fn tap_block(e: array<vec4<f32>, 4>, j: u32, v: u32, shift: u32, row_in: bool, x: u32) -> vec4<f32> {
    return vec4<f32>(
        select(0.0, pick16(e, j + v, shift), row_in && x + j + v < P.src_w),
        select(0.0, pick16(e, j + v + 1u, shift), row_in && x + j + v + 1u < P.src_w),
        select(0.0, pick16(e, j + v + 2u, shift), row_in && x + j + v + 2u < P.src_w),
        select(0.0, pick16(e, j + v + 3u, shift), row_in && x + j + v + 3u < P.src_w),
    );
}

// Steps q .. q+2 (ROWS3): the three taps v of kernel row (cur.ci, cur.ty). The lane's 8
// columns are consecutive positions of one destination row (as in load_conv_b), so the row's 24
// taps read 10 consecutive source elements: one window of four vec4 loads, where the taps one
// by one take nine. A row past the end of the reduction (the last chunk of an A_UNALIGNED
// pipeline) reads zero: its weights are zero, but 0 · NaN is not.
fn load_kernel_row(bq: ptr<function, Bq>, q: u32, cols: ptr<function, array<Column, MAX_TN>>, cur: Cursor) -> Cursor {
    let col = (*cols)[0];
    let start = col.base + cur.off;
    let shift = start & 3u;
    let i = vec4_index(start);
    let e = array<vec4<f32>, 4>(load_b4(i), load_b4(i + 1u), load_b4(i + 2u), load_b4(i + 3u));
    let row_in = col.dy + cur.ty < P.src_h && cur.p < P.k;
    (*bq)[q][0] = tap_block(e, 0u, 0u, shift, row_in, col.dx);
    (*bq)[q][1] = tap_block(e, 4u, 0u, shift, row_in, col.dx);
    (*bq)[q + 1u][0] = tap_block(e, 0u, 1u, shift, row_in, col.dx);
    (*bq)[q + 1u][1] = tap_block(e, 4u, 1u, shift, row_in, col.dx);
    (*bq)[q + 2u][0] = tap_block(e, 0u, 2u, shift, row_in, col.dx);
    (*bq)[q + 2u][1] = tap_block(e, 4u, 2u, shift, row_in, col.dx);
    // The next kernel row: (ci, u + 1), or (ci + 1, 0).
    var n = cur;
    n.p += 3u;
    n.ty += 1u;
    n.off += P.src_w;
    if n.ty == P.kh {
        n.ty = 0u;
        n.ci += 1u;
        n.off = n.ci * P.src_h * P.src_w;
    }
    return n;
}

// TAP_MAJOR: B of the chunk's 8 steps, 8 source channels at one tap that reads the source
// for all of the lane's columns (images at one destination position; no padding to test), from
// the channels-last source: 8 consecutive elements per column.
fn load_tap_chunk(bq: ptr<function, Bq>, cols: ptr<function, array<Column, MAX_TN>>, k0: u32) {
    let channels = tap_channels();
    let tap = k0 / channels;
    let off = ((tap / P.kw) * P.src_w + tap % P.kw) * P.src_c + k0 % channels;
    load_b_cols(bq, cols, off, off + 4u);
}

// B of the whole chunk; returns the cursor past it.
fn load_chunk_b(bq: ptr<function, Bq>, cols: ptr<function, array<Column, MAX_TN>>, cur: Cursor, k0: u32) -> Cursor {
    if TAP_MAJOR {
        load_tap_chunk(bq, cols, k0);
        return cur;
    }
    if row_chunks() {
        var c = load_kernel_row(bq, 0u, cols, cur);
        c = load_kernel_row(bq, 3u, cols, c);
        c = load_kernel_row(bq, 6u, cols, c);
        return load_kernel_row(bq, 9u, cols, c);
    }
    if VEC_B && MODE == 0u {
        if TRANS_B {
            load_b_cols(bq, cols, min(k0, P.k - 4u), min(k0 + 4u, P.k - 4u));
        } else {
            load_b_rows(bq, 0u, cols, k0);
            load_b_rows(bq, 1u, cols, k0);
            load_b_rows(bq, 2u, cols, k0);
            load_b_rows(bq, 3u, cols, k0);
            load_b_rows(bq, 4u, cols, k0);
            load_b_rows(bq, 5u, cols, k0);
            load_b_rows(bq, 6u, cols, k0);
            load_b_rows(bq, 7u, cols, k0);
        }
        var n = cur;
        n.p += CHUNK;
        return n;
    }
    if VEC_B && MODE == 2u {
        if ROWS3 {
            load_wgrad_row(bq, 0u, cols, cur);
            load_wgrad_row(bq, 1u, cols, cur);
            load_wgrad_row(bq, 2u, cols, cur);
            load_wgrad_row(bq, 3u, cols, cur);
        } else {
            load_wgrad_col(bq, 0u, cols, cur);
            load_wgrad_col(bq, 1u, cols, cur);
            load_wgrad_col(bq, 2u, cols, cur);
            load_wgrad_col(bq, 3u, cols, cur);
            load_wgrad_col(bq, 4u, cols, cur);
            load_wgrad_col(bq, 5u, cols, cur);
            load_wgrad_col(bq, 6u, cols, cur);
            load_wgrad_col(bq, 7u, cols, cur);
        }
        var c = cur;
        c = cursor_next(c);
        c = cursor_next(c);
        c = cursor_next(c);
        c = cursor_next(c);
        c = cursor_next(c);
        c = cursor_next(c);
        c = cursor_next(c);
        return cursor_next(c);
    }
    if VEC_B && MODE == 1u {
        var c = load_conv_b(bq, 0u, cols, cur);
        c = load_conv_b(bq, 1u, cols, c);
        c = load_conv_b(bq, 2u, cols, c);
        c = load_conv_b(bq, 3u, cols, c);
        c = load_conv_b(bq, 4u, cols, c);
        c = load_conv_b(bq, 5u, cols, c);
        c = load_conv_b(bq, 6u, cols, c);
        return load_conv_b(bq, 7u, cols, c);
    }
    var c = load_bq(bq, 0u, cols, cur);
    c = load_bq(bq, 1u, cols, c);
    c = load_bq(bq, 2u, cols, c);
    c = load_bq(bq, 3u, cols, c);
    c = load_bq(bq, 4u, cols, c);
    c = load_bq(bq, 5u, cols, c);
    c = load_bq(bq, 6u, cols, c);
    return load_bq(bq, 7u, cols, c);
}

// Row r of the lane's tile over the whole chunk: a[q / 4][q % 4] = A(r, k0 + q). The row's
// accumulators stay in registers for the chunk's steps.
fn mac_row(acc: ptr<function, Acc>, r: u32, a: array<vec4<f32>, 3>, bq: ptr<function, Bq>) {
    (*acc)[0][r] = mac_cols((*acc)[0][r], a, bq, 0u);
    if TN > 4u { (*acc)[1][r] = mac_cols((*acc)[1][r], a, bq, 1u); }
    if TN > 8u { (*acc)[2][r] = mac_cols((*acc)[2][r], a, bq, 2u); }
}

// Columns 4j .. 4j+3 of one row: s plus the chunk's steps.
fn mac_cols(s: vec4<f32>, a: array<vec4<f32>, 3>, bq: ptr<function, Bq>, j: u32) -> vec4<f32> {
    var t = s;
    t += a[0].x * (*bq)[0][j];
    t += a[0].y * (*bq)[1][j];
    t += a[0].z * (*bq)[2][j];
    t += a[0].w * (*bq)[3][j];
    t += a[1].x * (*bq)[4][j];
    t += a[1].y * (*bq)[5][j];
    t += a[1].z * (*bq)[6][j];
    t += a[1].w * (*bq)[7][j];
    if row_chunks() {
        t += a[2].x * (*bq)[8][j];
        t += a[2].y * (*bq)[9][j];
        t += a[2].z * (*bq)[10][j];
        t += a[2].w * (*bq)[11][j];
    }
    return t;
}

// Rows 4·blk .. 4·blk+3 over a chunk of CHUNK steps; av[q] holds their A values of step k0 + q.
fn mac_block(acc: ptr<function, Acc>, blk: u32, av: array<vec4<f32>, CHUNK>, bq: ptr<function, Bq>) {
    let r = 4u * blk;
    let z = vec4<f32>(0.0);
    mac_row(acc, r, array(vec4(av[0].x, av[1].x, av[2].x, av[3].x), vec4(av[4].x, av[5].x, av[6].x, av[7].x), z), bq);
    mac_row(acc, r + 1u, array(vec4(av[0].y, av[1].y, av[2].y, av[3].y), vec4(av[4].y, av[5].y, av[6].y, av[7].y), z), bq);
    mac_row(acc, r + 2u, array(vec4(av[0].z, av[1].z, av[2].z, av[3].z), vec4(av[4].z, av[5].z, av[6].z, av[7].z), z), bq);
    mac_row(acc, r + 3u, array(vec4(av[0].w, av[1].w, av[2].w, av[3].w), vec4(av[4].w, av[5].w, av[6].w, av[7].w), z), bq);
}

// One chunk of reduction steps for the lane's whole tile.
fn mac_chunk(acc: ptr<function, Acc>, frag: ptr<function, Frag>, bq: ptr<function, Bq>, z: u32, s: u32, row0: u32, k0: u32) {
    if a_by_row() {
        { mac_row(acc, 0u, chunk_row(frag, z, s, row0, k0, 0u), bq); }
        if TM > 1u { mac_row(acc, 1u, chunk_row(frag, z, s, row0, k0, 1u), bq); }
        if TM > 2u { mac_row(acc, 2u, chunk_row(frag, z, s, row0, k0, 2u), bq); }
        if TM > 3u { mac_row(acc, 3u, chunk_row(frag, z, s, row0, k0, 3u), bq); }
        if TM > 4u { mac_row(acc, 4u, chunk_row(frag, z, s, row0, k0, 4u), bq); }
        if TM > 5u { mac_row(acc, 5u, chunk_row(frag, z, s, row0, k0, 5u), bq); }
        if TM > 6u { mac_row(acc, 6u, chunk_row(frag, z, s, row0, k0, 6u), bq); }
        if TM > 7u { mac_row(acc, 7u, chunk_row(frag, z, s, row0, k0, 7u), bq); }
        if TM > 8u { mac_row(acc, 8u, chunk_row(frag, z, s, row0, k0, 8u), bq); }
        if TM > 9u { mac_row(acc, 9u, chunk_row(frag, z, s, row0, k0, 9u), bq); }
        if TM > 10u { mac_row(acc, 10u, chunk_row(frag, z, s, row0, k0, 10u), bq); }
        if TM > 11u { mac_row(acc, 11u, chunk_row(frag, z, s, row0, k0, 11u), bq); }
        if TM > 12u { mac_row(acc, 12u, chunk_row(frag, z, s, row0, k0, 12u), bq); }
        if TM > 13u { mac_row(acc, 13u, chunk_row(frag, z, s, row0, k0, 13u), bq); }
        if TM > 14u { mac_row(acc, 14u, chunk_row(frag, z, s, row0, k0, 14u), bq); }
        if TM > 15u { mac_row(acc, 15u, chunk_row(frag, z, s, row0, k0, 15u), bq); }
        if TM > 16u { mac_row(acc, 16u, chunk_row(frag, z, s, row0, k0, 16u), bq); }
        if TM > 17u { mac_row(acc, 17u, chunk_row(frag, z, s, row0, k0, 17u), bq); }
        if TM > 18u { mac_row(acc, 18u, chunk_row(frag, z, s, row0, k0, 18u), bq); }
        if TM > 19u { mac_row(acc, 19u, chunk_row(frag, z, s, row0, k0, 19u), bq); }
        if TM > 20u { mac_row(acc, 20u, chunk_row(frag, z, s, row0, k0, 20u), bq); }
        if TM > 21u { mac_row(acc, 21u, chunk_row(frag, z, s, row0, k0, 21u), bq); }
        if TM > 22u { mac_row(acc, 22u, chunk_row(frag, z, s, row0, k0, 22u), bq); }
        if TM > 23u { mac_row(acc, 23u, chunk_row(frag, z, s, row0, k0, 23u), bq); }
        if TM > 24u { mac_row(acc, 24u, chunk_row(frag, z, s, row0, k0, 24u), bq); }
        if TM > 25u { mac_row(acc, 25u, chunk_row(frag, z, s, row0, k0, 25u), bq); }
        if TM > 26u { mac_row(acc, 26u, chunk_row(frag, z, s, row0, k0, 26u), bq); }
        if TM > 27u { mac_row(acc, 27u, chunk_row(frag, z, s, row0, k0, 27u), bq); }
        if TM > 28u { mac_row(acc, 28u, chunk_row(frag, z, s, row0, k0, 28u), bq); }
        if TM > 29u { mac_row(acc, 29u, chunk_row(frag, z, s, row0, k0, 29u), bq); }
        if TM > 30u { mac_row(acc, 30u, chunk_row(frag, z, s, row0, k0, 30u), bq); }
        if TM > 31u { mac_row(acc, 31u, chunk_row(frag, z, s, row0, k0, 31u), bq); }
        if TM > 32u { mac_row(acc, 32u, chunk_row(frag, z, s, row0, k0, 32u), bq); }
        if TM > 33u { mac_row(acc, 33u, chunk_row(frag, z, s, row0, k0, 33u), bq); }
        if TM > 34u { mac_row(acc, 34u, chunk_row(frag, z, s, row0, k0, 34u), bq); }
        if TM > 35u { mac_row(acc, 35u, chunk_row(frag, z, s, row0, k0, 35u), bq); }
        if TM > 36u { mac_row(acc, 36u, chunk_row(frag, z, s, row0, k0, 36u), bq); }
        if TM > 37u { mac_row(acc, 37u, chunk_row(frag, z, s, row0, k0, 37u), bq); }
        if TM > 38u { mac_row(acc, 38u, chunk_row(frag, z, s, row0, k0, 38u), bq); }
        if TM > 39u { mac_row(acc, 39u, chunk_row(frag, z, s, row0, k0, 39u), bq); }
        if TM > 40u { mac_row(acc, 40u, chunk_row(frag, z, s, row0, k0, 40u), bq); }
        if TM > 41u { mac_row(acc, 41u, chunk_row(frag, z, s, row0, k0, 41u), bq); }
        if TM > 42u { mac_row(acc, 42u, chunk_row(frag, z, s, row0, k0, 42u), bq); }
        if TM > 43u { mac_row(acc, 43u, chunk_row(frag, z, s, row0, k0, 43u), bq); }
        if TM > 44u { mac_row(acc, 44u, chunk_row(frag, z, s, row0, k0, 44u), bq); }
        if TM > 45u { mac_row(acc, 45u, chunk_row(frag, z, s, row0, k0, 45u), bq); }
        if TM > 46u { mac_row(acc, 46u, chunk_row(frag, z, s, row0, k0, 46u), bq); }
        if TM > 47u { mac_row(acc, 47u, chunk_row(frag, z, s, row0, k0, 47u), bq); }
        if TM > 48u { mac_row(acc, 48u, chunk_row(frag, z, s, row0, k0, 48u), bq); }
        if TM > 49u { mac_row(acc, 49u, chunk_row(frag, z, s, row0, k0, 49u), bq); }
        if TM > 50u { mac_row(acc, 50u, chunk_row(frag, z, s, row0, k0, 50u), bq); }
        if TM > 51u { mac_row(acc, 51u, chunk_row(frag, z, s, row0, k0, 51u), bq); }
        if TM > 52u { mac_row(acc, 52u, chunk_row(frag, z, s, row0, k0, 52u), bq); }
        if TM > 53u { mac_row(acc, 53u, chunk_row(frag, z, s, row0, k0, 53u), bq); }
        if TM > 54u { mac_row(acc, 54u, chunk_row(frag, z, s, row0, k0, 54u), bq); }
        if TM > 55u { mac_row(acc, 55u, chunk_row(frag, z, s, row0, k0, 55u), bq); }
        if TM > 56u { mac_row(acc, 56u, chunk_row(frag, z, s, row0, k0, 56u), bq); }
        if TM > 57u { mac_row(acc, 57u, chunk_row(frag, z, s, row0, k0, 57u), bq); }
        if TM > 58u { mac_row(acc, 58u, chunk_row(frag, z, s, row0, k0, 58u), bq); }
        if TM > 59u { mac_row(acc, 59u, chunk_row(frag, z, s, row0, k0, 59u), bq); }
        if TM > 60u { mac_row(acc, 60u, chunk_row(frag, z, s, row0, k0, 60u), bq); }
        if TM > 61u { mac_row(acc, 61u, chunk_row(frag, z, s, row0, k0, 61u), bq); }
        if TM > 62u { mac_row(acc, 62u, chunk_row(frag, z, s, row0, k0, 62u), bq); }
        if TM > 63u { mac_row(acc, 63u, chunk_row(frag, z, s, row0, k0, 63u), bq); }
        return;
    }
    mac_block(acc, 0u, chunk_block(frag, z, s, row0, k0, 0u), bq);
    if TM > 4u { mac_block(acc, 1u, chunk_block(frag, z, s, row0, k0, 1u), bq); }
    if TM > 8u { mac_block(acc, 2u, chunk_block(frag, z, s, row0, k0, 2u), bq); }
    if TM > 12u { mac_block(acc, 3u, chunk_block(frag, z, s, row0, k0, 3u), bq); }
    if TM > 16u { mac_block(acc, 4u, chunk_block(frag, z, s, row0, k0, 4u), bq); }
    if TM > 20u { mac_block(acc, 5u, chunk_block(frag, z, s, row0, k0, 5u), bq); }
    if TM > 24u { mac_block(acc, 6u, chunk_block(frag, z, s, row0, k0, 6u), bq); }
    if TM > 28u { mac_block(acc, 7u, chunk_block(frag, z, s, row0, k0, 7u), bq); }
    if TM > 32u { mac_block(acc, 8u, chunk_block(frag, z, s, row0, k0, 8u), bq); }
    if TM > 36u { mac_block(acc, 9u, chunk_block(frag, z, s, row0, k0, 9u), bq); }
    if TM > 40u { mac_block(acc, 10u, chunk_block(frag, z, s, row0, k0, 10u), bq); }
    if TM > 44u { mac_block(acc, 11u, chunk_block(frag, z, s, row0, k0, 11u), bq); }
    if TM > 48u { mac_block(acc, 12u, chunk_block(frag, z, s, row0, k0, 12u), bq); }
    if TM > 52u { mac_block(acc, 13u, chunk_block(frag, z, s, row0, k0, 13u), bq); }
    if TM > 56u { mac_block(acc, 14u, chunk_block(frag, z, s, row0, k0, 14u), bq); }
    if TM > 60u { mac_block(acc, 15u, chunk_block(frag, z, s, row0, k0, 15u), bq); }
}

// Whether a lane's output columns lie in blocks of four consecutive, 16-byte aligned elements
// of C, each wholly inside or wholly past its end, stored through the vec4 view of C (store_c4,
// which comes with B's view): a GEMM with B's vec4 row view (n a multiple of 4), or a
// correlation with the source's (8 consecutive positions of one destination row per lane). On
// llvmpipe every store or load of a lane is a loop over the subgroup: one vec4 store replaces
// four of those loops.
fn vec_c() -> bool {
    return VEC_B && ((MODE == 0u && !TRANS_B) || (MODE == 1u && !TAP_MAJOR && !DILATE));
}

fn store_vec(row: u32, j: u32, v: vec4<f32>, col0: u32, cols: ptr<function, array<Column, MAX_TN>>) {
    let stride = row * out_row_stride();
    let live = row < P.m;
    if vec_c() {
        if live && column_live(col0 + j) { store_c4(((*cols)[j].out + stride) / 4u, v); }
        return;
    }
    if live && column_live(col0 + j) { store_one((*cols)[j].out + stride, v.x); }
    if live && column_live(col0 + j + 1u) { store_one((*cols)[j + 1u].out + stride, v.y); }
    if live && column_live(col0 + j + 2u) { store_one((*cols)[j + 2u].out + stride, v.z); }
    if live && column_live(col0 + j + 3u) { store_one((*cols)[j + 3u].out + stride, v.w); }
}

// Whether output column col exists (TAP_MAJOR: not one of a position's padding images).
fn column_live(col: u32) -> bool {
    return col < P.n && (!TAP_MAJOR || col % tap_position_cols() < P.images);
}

fn store_row(acc: ptr<function, Acc>, r: u32, row0: u32, col0: u32, cols: ptr<function, array<Column, MAX_TN>>) {
    store_vec(row0 + r, 0u, (*acc)[0][r], col0, cols);
    if TN > 4u { store_vec(row0 + r, 4u, (*acc)[1][r], col0, cols); }
    if TN > 8u { store_vec(row0 + r, 8u, (*acc)[2][r], col0, cols); }
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
    let taps = tile_taps(col0 - lid * TN);
    let segs = segments(z, taps);
    for (var s = segs.x; s < segs.y; s++) {
        var cur = cursor_start(s);
        let steps = segment_steps(s, taps);
        for (var k0 = steps.x; k0 < steps.y; k0 += select(CHUNK, ROW_CHUNK, row_chunks())) {
            var frag = chunk_fragment(z, s, row0, k0, lane);
            var bq: Bq;
            cur = load_chunk_b(&bq, &cols, cur, k0);
            mac_chunk(&acc, &frag, &bq, z, s, row0, k0);
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
