//! Launchers of `shaders/conv.wgsl`: 2-D convolution (PyTorch `Conv2d` without bias, a
//! cross-correlation) with any stride, rectangular kernel, zero padding and channel groups, as
//! an implicit GEMM on the tile engine of [`super::gemm`] (or of [`super::tiles_gpu`]) —
//! forward, backward-data and backward-weight, with no im2col buffer. Groups are batch entries
//! of the GEMM.
//!
//! Layouts are PyTorch's: activations NCHW, weights OIHW `[c_out, c_in / groups, kh, kw]`; shapes
//! are described by [`Conv2dShape`]. Every output is a fixed-order sum, so results are
//! bit-reproducible on one adapter.

use super::gemm::TAP_MAJOR_IMAGES;
use super::gemm::{check_tensor, launch_tiles, tile_key, CpuTile, TileParams, Variant, CHUNK};
use super::gemm::{
    PORTABLE_A4B4_SHADER, PORTABLE_A4_SHADER, PORTABLE_SHADER, SUBGROUP_A4B4_SHADER,
    SUBGROUP_A4_SHADER, SUBGROUP_SHADER,
};
use super::tiles_gpu::{self, Pass};
use crate::gpu::{Binding, Encoder, Engine, Gpu, PipelineKey, Tensor};
use crate::spec::Conv2dShape;
use crate::{Error, Result};

/// Forward (`MODE` 1), subgroup variant.
pub static SUBGROUP_FORWARD: PipelineKey = tile_key!(&SUBGROUP_SHADER, 1, 0, 0);
/// Forward, portable variant.
pub static PORTABLE_FORWARD: PipelineKey = tile_key!(&PORTABLE_SHADER, 1, 0, 0);
/// Forward reading the weights through a vec4 view (`c_in/groups·kh·kw` a multiple of 4),
/// subgroup.
pub static SUBGROUP_FORWARD_VEC: PipelineKey = tile_key!(&SUBGROUP_A4_SHADER, 1, 0, 0);
/// Forward with the vec4 weight view, portable variant.
pub static PORTABLE_FORWARD_VEC: PipelineKey = tile_key!(&PORTABLE_A4_SHADER, 1, 0, 0);
/// Forward with vec4 views of the weights and of `x` (`c_in/groups·kh·kw % 4 == 0`,
/// `w_out % 8 == 0`, `w % 4 == 0`, horizontal stride 1), subgroup variant.
pub static SUBGROUP_FORWARD_VEC2: PipelineKey = tile_key!(&SUBGROUP_A4B4_SHADER, 1, 0, 0);
/// Forward with vec4 views of the weights and of `x`, portable variant.
pub static PORTABLE_FORWARD_VEC2: PipelineKey = tile_key!(&PORTABLE_A4B4_SHADER, 1, 0, 0);
/// Forward with both vec4 views where kernel rows have three taps (`kw == 3`, `k % 12 == 0`):
/// chunks of four whole kernel rows, each row's source window loaded once for its three taps
/// (`ROWS3`), subgroup variant.
pub static SUBGROUP_FORWARD_ROWS3: PipelineKey = tile_key!(&SUBGROUP_A4B4_SHADER, 1, 0, 0, 0, 1);
/// Forward over 3-tap kernel rows, portable variant.
pub static PORTABLE_FORWARD_ROWS3: PipelineKey = tile_key!(&PORTABLE_A4B4_SHADER, 1, 0, 0, 0, 1);
/// Forward with both vec4 views where the weights' rows do not start 16-byte aligned
/// (`c_in/groups·kh·kw % 4 != 0`, e.g. a first layer's 27 taps; the weight length a multiple
/// of 4): each row's 8 steps of a chunk from three vec4 shifted into place (`A_UNALIGNED`),
/// subgroup variant.
pub static SUBGROUP_FORWARD_UNALIGNED: PipelineKey =
    tile_key!(&SUBGROUP_A4B4_SHADER, 1, 0, 0, 0, 0, 1);
/// Forward with unaligned weight rows, portable variant.
pub static PORTABLE_FORWARD_UNALIGNED: PipelineKey =
    tile_key!(&PORTABLE_A4B4_SHADER, 1, 0, 0, 0, 0, 1);
/// Forward with unaligned weight rows of 3-tap kernel rows (VGG-7's first layer, 27 taps):
/// `ROWS3` chunks of four kernel rows, each row's 12 steps from four vec4 shifted into place;
/// the last chunk's rows past the end read zero, subgroup variant.
pub static SUBGROUP_FORWARD_ROWS3_UNALIGNED: PipelineKey =
    tile_key!(&SUBGROUP_A4B4_SHADER, 1, 0, 0, 0, 1, 1);
/// Forward with unaligned 3-tap kernel rows, portable variant.
pub static PORTABLE_FORWARD_ROWS3_UNALIGNED: PipelineKey =
    tile_key!(&PORTABLE_A4B4_SHADER, 1, 0, 0, 0, 1, 1);
/// Strided backward data: the forward correlation over `dy` read as dilated by the stride
/// (`DILATE`), subgroup variant. Unstrided backward data runs the forward pipelines, or the
/// tap-major ones below.
pub static SUBGROUP_BACKWARD_DATA_STRIDED: PipelineKey = tile_key!(&SUBGROUP_SHADER, 1, 0, 0, 1, 0);
/// Strided backward data, portable variant.
pub static PORTABLE_BACKWARD_DATA_STRIDED: PipelineKey = tile_key!(&PORTABLE_SHADER, 1, 0, 0, 1, 0);
/// Unstrided backward data that visits only the taps reading `dy`, not its zero padding
/// (`TAP_MAJOR`), from a channels-last copy of `dy`: chosen where `dy` rows have no vec4 view,
/// `c_out / groups` is a multiple of 8, `h_out·w_out` a multiple of 4, and padding each
/// position's images to a multiple of 64 adds at most a third (LeNet-5 conv2), subgroup variant.
pub static SUBGROUP_BACKWARD_DATA_TAPS: PipelineKey =
    tile_key!(&SUBGROUP_A4B4_SHADER, 1, 0, 0, 0, 0, 0, 1);
/// Tap-major backward data, portable variant.
pub static PORTABLE_BACKWARD_DATA_TAPS: PipelineKey =
    tile_key!(&PORTABLE_A4B4_SHADER, 1, 0, 0, 0, 0, 0, 1);
/// Backward weight, per-split partial sums (`MODE` 2), subgroup variant.
pub static SUBGROUP_BACKWARD_WEIGHT: PipelineKey = tile_key!(&SUBGROUP_SHADER, 2, 0, 0);
/// Backward weight, per-split partial sums, portable variant.
pub static PORTABLE_BACKWARD_WEIGHT: PipelineKey = tile_key!(&PORTABLE_SHADER, 2, 0, 0);
/// Backward weight reading `dy` through a vec4 view (`h_out·w_out` a multiple of 4), subgroup.
pub static SUBGROUP_BACKWARD_WEIGHT_VEC: PipelineKey = tile_key!(&SUBGROUP_A4_SHADER, 2, 0, 0);
/// Backward weight with the vec4 view of `dy`, portable variant.
pub static PORTABLE_BACKWARD_WEIGHT_VEC: PipelineKey = tile_key!(&PORTABLE_A4_SHADER, 2, 0, 0);
/// Backward weight with vec4 views of `dy` and `x` (`h_out·w_out % 4 == 0`, `w_out % 8 == 0`,
/// `w % 4 == 0`, horizontal stride 1), subgroup variant.
pub static SUBGROUP_BACKWARD_WEIGHT_VEC2: PipelineKey = tile_key!(&SUBGROUP_A4B4_SHADER, 2, 0, 0);
/// Backward weight with vec4 views of `dy` and `x`, portable variant.
pub static PORTABLE_BACKWARD_WEIGHT_VEC2: PipelineKey = tile_key!(&PORTABLE_A4B4_SHADER, 2, 0, 0);
/// Backward weight with vec4 views where kernel rows have three taps (`kw == 3`): each lane
/// owns 12 columns, four whole kernel rows, and loads each row's source window once for its
/// three taps (`ROWS3`), subgroup variant.
pub static SUBGROUP_BACKWARD_WEIGHT_ROWS3: PipelineKey =
    tile_key!(&SUBGROUP_A4B4_SHADER, 2, 0, 0, 0, 1);
/// Backward weight over 3-tap kernel rows, portable variant.
pub static PORTABLE_BACKWARD_WEIGHT_ROWS3: PipelineKey =
    tile_key!(&PORTABLE_A4B4_SHADER, 2, 0, 0, 0, 1);
/// Fixed-order sum of the backward-weight splits (no subgroup operations).
pub static SUM_SPLITS: PipelineKey = PipelineKey {
    shader: &PORTABLE_SHADER,
    entry: "sum_splits",
    constants: &[],
};
/// Threads per workgroup of `sum_splits` and `flip_weights` (fixed in
/// `shaders/tile_params.wgsl`).
pub const SUM_WORKGROUP: u32 = 64;
/// The weights of the backward-data correlation, transposed and rotated by 180° (no subgroup
/// operations).
pub static FLIP_WEIGHTS: PipelineKey = PipelineKey {
    shader: &PORTABLE_SHADER,
    entry: "flip_weights",
    constants: &[],
};
/// The rotated weights laid out for [`SUBGROUP_BACKWARD_DATA_TAPS`]: `[groups][cg][kh][kw][c_out /
/// groups]`.
pub static FLIP_WEIGHTS_TAP_MAJOR: PipelineKey = PipelineKey {
    shader: &PORTABLE_SHADER,
    entry: "flip_weights",
    constants: &[("TAP_MAJOR", 1)],
};
/// `dy` copied channels-last (`[n][h_out][w_out][c_out]`) for [`SUBGROUP_BACKWARD_DATA_TAPS`],
/// through vec4 views (4 channels × 4 positions per thread).
pub static CHANNELS_LAST: PipelineKey = PipelineKey {
    shader: &PORTABLE_A4_SHADER,
    entry: "channels_last",
    constants: &[],
};

/// Every convolution pipeline.
pub static PIPELINES: [&PipelineKey; 28] = [
    &SUBGROUP_FORWARD,
    &PORTABLE_FORWARD,
    &SUBGROUP_FORWARD_VEC,
    &PORTABLE_FORWARD_VEC,
    &SUBGROUP_FORWARD_VEC2,
    &PORTABLE_FORWARD_VEC2,
    &SUBGROUP_FORWARD_ROWS3,
    &PORTABLE_FORWARD_ROWS3,
    &SUBGROUP_FORWARD_UNALIGNED,
    &PORTABLE_FORWARD_UNALIGNED,
    &SUBGROUP_FORWARD_ROWS3_UNALIGNED,
    &PORTABLE_FORWARD_ROWS3_UNALIGNED,
    &SUBGROUP_BACKWARD_DATA_STRIDED,
    &PORTABLE_BACKWARD_DATA_STRIDED,
    &SUBGROUP_BACKWARD_DATA_TAPS,
    &PORTABLE_BACKWARD_DATA_TAPS,
    &SUBGROUP_BACKWARD_WEIGHT,
    &PORTABLE_BACKWARD_WEIGHT,
    &SUBGROUP_BACKWARD_WEIGHT_VEC,
    &PORTABLE_BACKWARD_WEIGHT_VEC,
    &SUBGROUP_BACKWARD_WEIGHT_VEC2,
    &PORTABLE_BACKWARD_WEIGHT_VEC2,
    &SUBGROUP_BACKWARD_WEIGHT_ROWS3,
    &PORTABLE_BACKWARD_WEIGHT_ROWS3,
    &SUM_SPLITS,
    &FLIP_WEIGHTS,
    &FLIP_WEIGHTS_TAP_MAJOR,
    &CHANNELS_LAST,
];

/// Whether a correlation can read its source through a vec4 view: each lane's `TILE_N` = 8
/// columns lie in one destination row (`dst_w % 8 == 0`) and read consecutive source elements
/// (horizontal stride 1, no dilation), and source rows start 16-byte aligned (`src_w % 4 == 0`;
/// tensors start at multiples of 256 bytes, and groups at multiples of whole rows).
fn source_rows_aligned(p: &TileParams) -> bool {
    super::gemm::TILE_N == 8
        && p.dst_w.is_multiple_of(8)
        && p.src_w.is_multiple_of(4)
        && p.stride_w == 1
        && p.dil_w == 1
        && p.n > 0
}

/// Largest padded input height or width (and stride): the shaders' coordinates are wrapping
/// `u32`s, which tell taps in the padding apart while they stay below 2³¹.
const MAX_EXTENT: usize = 1 << 31;

/// Validates the shape ([`Conv2dShape::check`], and padded sizes and strides below 2³¹) and
/// returns `(h_out, w_out)`.
fn output_size(op: &'static str, s: &Conv2dShape) -> Result<(usize, usize)> {
    s.check().map_err(|e| Error::InvalidArgument {
        op,
        msg: format!("{e} ({s:?})"),
    })?;
    let [ph, pw] = s.padded();
    let largest = ph.max(pw).max(s.stride[0]).max(s.stride[1]);
    if largest >= MAX_EXTENT {
        return Err(Error::Limit {
            op,
            what: "padded input size or stride",
            value: largest as u64,
            limit: MAX_EXTENT as u64 - 1,
        });
    }
    Ok((s.h_out(), s.w_out()))
}

/// `a − b` as a wrapping `u32` (the shaders add it back modulo 2³²).
fn wrapping(a: usize, b: usize) -> u32 {
    (a as u32).wrapping_sub(b as u32)
}

/// Checks the three tensors of a pass: input `[n,c_in,h,w]`, weight, output `[n,c_out,h',w']`.
fn check_tensors(
    gpu: &Gpu,
    op: &'static str,
    variant: Variant,
    s: &Conv2dShape,
    x: &Tensor,
    weight: &Tensor,
    y: &Tensor,
) -> Result<()> {
    if gpu.engine() == Engine::Cpu {
        variant.check(gpu, op)?;
    }
    output_size(op, s)?;
    check_tensor(gpu, op, x, s.input().len())?;
    check_tensor(gpu, op, weight, s.weight_len())?;
    check_tensor(gpu, op, y, s.output().len())
}

/// Parameters of a correlation producing `m` channels (all groups) of `dst_h × dst_w` from a
/// source of `src_c × src_h × src_w`, one batch entry per group (all values fit u32: every
/// tensor fits a storage binding). Stride, dilation and padding are the forward pass's; the
/// backward-data launcher adjusts them.
fn correlation(s: &Conv2dShape, m: usize, src: [usize; 3], dst: [usize; 2]) -> TileParams {
    let kk = s.kernel[0] * s.kernel[1];
    let g = s.groups;
    TileParams {
        m: (m / g) as u32,
        n: (s.n * dst[0] * dst[1]) as u32,
        k: (src[0] / g * kk) as u32,
        batches: g as u32,
        a_stride: (s.weight_len() / g) as u32,
        b_stride: (src[0] / g * src[1] * src[2]) as u32,
        src_c: src[0] as u32,
        src_h: src[1] as u32,
        src_w: src[2] as u32,
        dst_h: dst[0] as u32,
        dst_w: dst[1] as u32,
        pad_h: s.pad[0] as u32,
        pad_w: s.pad[1] as u32,
        kh: s.kernel[0] as u32,
        kw: s.kernel[1] as u32,
        stride_h: s.stride[0] as u32,
        stride_w: s.stride[1] as u32,
        dil_h: 1,
        dil_w: 1,
        groups: g as u32,
        images: s.n as u32,
        ..TileParams::default()
    }
}

/// Records `y[n,o,i,j] = Σ_c Σ_u Σ_v x[n, g·cg + c, i·sh+u−pad_h, j·sw+v−pad_w] · w[o,c,u,v]`
/// over the `cg = c_in / groups` channels of `o`'s group `g` (zero padding, no bias; summed over
/// `(c, u, v)` in that order): `x` `[n, c_in, h, w]`, `weight` `[c_out, cg, kh, kw]`, `y`
/// `[n, c_out, h_out, w_out]`.
///
/// Fails with [`Error::InvalidArgument`] for a shape [`Conv2dShape::check`] rejects and a
/// variant the device cannot run, [`Error::Shape`] for a tensor of the wrong length and
/// [`Error::Limit`] beyond a storage binding or the workgroup limit.
pub fn conv2d_forward(
    gpu: &Gpu,
    encoder: &mut Encoder,
    variant: Variant,
    s: &Conv2dShape,
    x: &Tensor,
    weight: &Tensor,
    y: &Tensor,
) -> Result<()> {
    const OP: &str = "conv2d forward";
    check_tensors(gpu, OP, variant, s, x, weight, y)?;
    if y.is_empty() {
        return Ok(());
    }
    let (h_out, w_out) = output_size(OP, s)?;
    let params = correlation(s, s.c_out, [s.c_in, s.h, s.w], [h_out, w_out]);
    // The weights are [c_out, cg·kh·kw], rows (and groups) 16-byte aligned when cg·kh·kw is a
    // multiple of 4.
    if gpu.engine() == Engine::Gpu {
        return tiles_gpu::launch(gpu, encoder, OP, Pass::Forward, params, [weight, x, y]);
    }
    let key = correlation_key(variant, &params);
    launch_tiles(gpu, encoder, OP, key, params, [weight, x, y])
}

/// The CPU engine's pipeline for an undilated correlation whose weights are rows of
/// `params.k` taps: vec4 views of the weights where rows start 16-byte aligned, and of the
/// source too where [`source_rows_aligned`], then in chunks of whole kernel rows where those
/// have three taps (`k` is then a multiple of 12). Unaligned rows take both views too where the
/// source allows and the weights' vec4 view reaches their last element (length a multiple of 4),
/// in chunks of whole kernel rows too where those have three taps.
fn correlation_key(variant: Variant, params: &TileParams) -> &'static PipelineKey {
    let rows_aligned = params.k > 0 && params.k.is_multiple_of(4);
    let weights_len = u64::from(params.a_stride) * u64::from(params.batches);
    if !rows_aligned && source_rows_aligned(params) && weights_len.is_multiple_of(4) {
        if params.kw == 3 {
            variant.pick(
                &SUBGROUP_FORWARD_ROWS3_UNALIGNED,
                &PORTABLE_FORWARD_ROWS3_UNALIGNED,
            )
        } else {
            variant.pick(&SUBGROUP_FORWARD_UNALIGNED, &PORTABLE_FORWARD_UNALIGNED)
        }
    } else if rows_aligned && source_rows_aligned(params) && params.kw == 3 {
        debug_assert!(params.k.is_multiple_of(12));
        variant.pick(&SUBGROUP_FORWARD_ROWS3, &PORTABLE_FORWARD_ROWS3)
    } else if rows_aligned && source_rows_aligned(params) {
        variant.pick(&SUBGROUP_FORWARD_VEC2, &PORTABLE_FORWARD_VEC2)
    } else if rows_aligned {
        variant.pick(&SUBGROUP_FORWARD_VEC, &PORTABLE_FORWARD_VEC)
    } else {
        variant.pick(&SUBGROUP_FORWARD, &PORTABLE_FORWARD)
    }
}

/// Elements of the scratch tensor [`conv2d_backward_data`] needs: on the CPU engine, which
/// correlates `dy` with a transposed, rotated copy of the weights written there, the weight
/// length, and where the shape's geometry allows the tap-major correlation
/// ([`SUBGROUP_BACKWARD_DATA_TAPS`], at any batch) room for a channels-last copy of `dy` after
/// it; 0 on the GPU engine, which stages the weights rotated in workgroup memory (any tensor,
/// even an empty one, will do).
pub fn backward_data_scratch_len(gpu: &Gpu, s: &Conv2dShape) -> usize {
    match gpu.engine() {
        Engine::Cpu if s.check().is_ok() && tap_major_geometry(&backward_data_params(s)) => {
            channels_last_offset(gpu, s) + s.output().len()
        }
        Engine::Cpu => s.weight_len(),
        Engine::Gpu => 0,
    }
}

/// Where the channels-last copy of `dy` starts in the backward-data scratch: after the weights,
/// at the device's storage-binding offset alignment.
fn channels_last_offset(gpu: &Gpu, s: &Conv2dShape) -> usize {
    let align = (gpu.limits().min_storage_buffer_offset_alignment as usize / 4).max(1);
    s.weight_len().next_multiple_of(align)
}

/// Elements of one scratch tensor that [`conv2d_backward_weight`] and
/// [`conv2d_backward_data`] can share when recorded one after the other (each overwrites it).
pub fn backward_scratch_len(gpu: &Gpu, s: &Conv2dShape) -> usize {
    backward_weight_scratch_len(gpu, s).max(backward_data_scratch_len(gpu, s))
}

/// Records `dx = dL/dx` of [`conv2d_forward`] from `dy = dL/dy` `[n, c_out, h_out, w_out]`:
/// `dx[n,c,y,x] = Σ_o Σ_u Σ_v dy[n, o, (y−u+pad_h)/sh, (x−v+pad_w)/sw] · w[o, c mod cg, u, v]`
/// over the output channels `o` of `c`'s group and the output positions that exist (the
/// divisions exact), summed over `(o, u, v)` with `u` and `v` descending (on the CPU engine's
/// tap-major path, over `(u, v, o)`, the taps that fall outside `dy` skipped). `dx` is
/// `[n, c_in, h, w]`; with `accumulate` the sum is added to it (`dx += …`). `scratch` holds at
/// least [`backward_data_scratch_len`] elements; its contents are overwritten. Errors as
/// [`conv2d_forward`], and [`Error::Shape`] for a scratch tensor that is too small.
///
/// With a stride above 1 this is a gather over every tap, of which the ones between strides
/// read zero: it spends `sh·sw` times the multiply-adds of the useful ones.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_data(
    gpu: &Gpu,
    encoder: &mut Encoder,
    variant: Variant,
    s: &Conv2dShape,
    dy: &Tensor,
    weight: &Tensor,
    dx: &Tensor,
    scratch: &Tensor,
    accumulate: bool,
) -> Result<()> {
    const OP: &str = "conv2d backward data";
    check_tensors(gpu, OP, variant, s, dx, weight, dy)?;
    check_scratch(OP, scratch, backward_data_scratch_len(gpu, s))?;
    if dx.is_empty() {
        return Ok(());
    }
    output_size(OP, s)?;
    let strided = s.stride != [1, 1];
    let params = TileParams {
        accumulate: u32::from(accumulate),
        ..backward_data_params(s)
    };
    if gpu.engine() == Engine::Gpu {
        let tensors = [weight, dy, dx];
        let pass = if strided {
            Pass::BackwardDataStrided
        } else {
            Pass::BackwardData
        };
        return tiles_gpu::launch(gpu, encoder, OP, pass, params, tensors);
    }
    // The CPU engine reads the weights as the forward pass does, from a copy laid out
    // [groups][cg][c_out / groups][kh][kw] and rotated: vec4 rows instead of a strided gather
    // ([groups][cg][kh][kw][c_out / groups] for the tap-major correlation).
    let tap_major = !strided && tap_major_fits(&params);
    let weights = scratch.slice(gpu, 0, &[s.weight_len()])?;
    flip_weights(gpu, encoder, OP, s, weight, &weights, tap_major)?;
    if strided {
        let key = variant.pick(
            &SUBGROUP_BACKWARD_DATA_STRIDED,
            &PORTABLE_BACKWARD_DATA_STRIDED,
        );
        return launch_tiles(gpu, encoder, OP, key, params, [&weights, dy, dx]);
    }
    if !tap_major {
        let key = correlation_key(variant, &params);
        return launch_tiles(gpu, encoder, OP, key, params, [&weights, dy, dx]);
    }
    let dy_last = scratch.slice(gpu, channels_last_offset(gpu, s), &[dy.len()])?;
    channels_last(gpu, encoder, OP, &params, dy, &dy_last)?;
    let key = variant.pick(&SUBGROUP_BACKWARD_DATA_TAPS, &PORTABLE_BACKWARD_DATA_TAPS);
    // Each position's images padded to whole tiles.
    let images = params.images.next_multiple_of(TAP_MAJOR_IMAGES);
    let n = params.dst_h * params.dst_w * images;
    let params = TileParams { n, ..params };
    launch_tiles(gpu, encoder, OP, key, params, [&weights, &dy_last, dx])
}

/// The backward-data correlation of `s` (a shape that passes [`Conv2dShape::check`]): a full
/// correlation of `dy`, dilated by the stride, with the rotated, transposed kernel, overwriting
/// `dx`.
fn backward_data_params(s: &Conv2dShape) -> TileParams {
    TileParams {
        pad_h: wrapping(s.kernel[0] - 1, s.pad[0]),
        pad_w: wrapping(s.kernel[1] - 1, s.pad[1]),
        stride_h: 1,
        stride_w: 1,
        dil_h: s.stride[0] as u32,
        dil_w: s.stride[1] as u32,
        ..correlation(s, s.c_in, [s.c_out, s.h_out(), s.w_out()], [s.h, s.w])
    }
}

/// Whether a backward-data correlation's geometry allows it to run tap-major: unstrided, taps
/// that span whole chunks of channels (`c_out / groups` a multiple of [`CHUNK`]), `dy` planes of
/// a multiple of 4 positions (its channels-last copy moves 4 × 4 blocks), and only where it
/// would otherwise read `dy` one element at a time (no vec4 view of its rows).
fn tap_major_geometry(params: &TileParams) -> bool {
    let channels = params.k / (params.kh * params.kw).max(1);
    params.dil_h == 1
        && params.dil_w == 1
        && (params.src_h * params.src_w).is_multiple_of(4)
        && !source_rows_aligned(params)
        && channels > 0
        && channels.is_multiple_of(CHUNK)
}

/// Whether an unstrided backward-data correlation runs tap-major ([`tap_major_geometry`]),
/// visiting only the taps of each position that read `dy` — the padding is skipped, not read as
/// zero — from a channels-last copy of `dy` (two vec4 loads per column and chunk): where
/// padding each position's images to whole tiles of [`TAP_MAJOR_IMAGES`] adds at most a third
/// (LeNet-5 conv2 at batch 128: 8×8 `dy` padded by 4 on each side, 55 % of the taps in the
/// padding).
fn tap_major_fits(params: &TileParams) -> bool {
    let padded = params.images.next_multiple_of(TAP_MAJOR_IMAGES);
    tap_major_geometry(params) && params.images > 0 && 3 * padded <= 4 * params.images
}

/// Records `dy_last[i][y][x][c] = dy[i][c][y][x]` (`dy` the source of the correlation `params`).
fn channels_last(
    gpu: &Gpu,
    encoder: &mut Encoder,
    op: &'static str,
    params: &TileParams,
    dy: &Tensor,
    dy_last: &Tensor,
) -> Result<()> {
    // One thread per 16 elements.
    let grid = gpu.grid(op, (dy.len() as u32).div_ceil(16 * SUM_WORKGROUP))?;
    let uniform = gpu.constant_uniform(params);
    let bindings = [
        (0, Binding::whole(&uniform)),
        (4, dy.binding()),
        (6, dy_last.binding()),
    ];
    gpu.dispatch(encoder, &CHANNELS_LAST, &bindings, grid)
}

/// Fails with [`Error::Shape`] when `scratch` holds fewer than `needed` elements.
fn check_scratch(op: &'static str, scratch: &Tensor, needed: usize) -> Result<()> {
    if scratch.len() < needed {
        return Err(Error::Shape {
            op,
            expected: format!("a scratch tensor of at least {needed} elements"),
            actual: format!("{:?}", scratch.shape()),
        });
    }
    Ok(())
}

/// Records `flipped[g][c][o][u][v] = weight[g·(c_out/groups) + o][c][kh−1−u][kw−1−v]`: each
/// group's weights transposed and rotated by 180°, the backward-data correlation's A operand
/// (`flipped[g][c][u][v][o]` when `tap_major`).
fn flip_weights(
    gpu: &Gpu,
    encoder: &mut Encoder,
    op: &'static str,
    s: &Conv2dShape,
    weight: &Tensor,
    flipped: &Tensor,
    tap_major: bool,
) -> Result<()> {
    let params = TileParams {
        m: s.c_out_per_group() as u32,
        n: s.c_in_per_group() as u32,
        k: (s.kernel[0] * s.kernel[1]) as u32,
        batches: s.groups as u32,
        ..TileParams::default()
    };
    let grid = gpu.grid(op, (s.weight_len() as u32).div_ceil(SUM_WORKGROUP))?;
    let uniform = gpu.constant_uniform(&params);
    let bindings = [
        (0, Binding::whole(&uniform)),
        (1, weight.binding()),
        (3, flipped.binding()),
    ];
    let key = if tap_major {
        &FLIP_WEIGHTS_TAP_MAJOR
    } else {
        &FLIP_WEIGHTS
    };
    gpu.dispatch(encoder, key, &bindings, grid)
}

/// How the backward-weight pass splits the images: `(splits, images per split)`.
///
/// Enough splits for the kernel configuration's split-K target (8 per host thread on CPU
/// adapters) and for every split's reduction to stay within the software adapters' budget
/// ([`MAX_REDUCTION`](super::gemm::MAX_REDUCTION) for the CPU engine), no more than there are images, and (within
/// those bounds) few enough that the partial sums fit one storage binding. Depends on the
/// [`Gpu`]'s engine.
pub fn backward_weight_splits(gpu: &Gpu, s: &Conv2dShape) -> (usize, usize) {
    let (m, cols, groups) = (s.c_out_per_group(), s.fan_in(), s.groups.max(1));
    if gpu.engine() == Engine::Gpu {
        let positions = s.h_out() * s.w_out();
        return tiles_gpu::backward_weight_splits(gpu, m, cols, groups, positions, s.n);
    }
    // Both variants' pipelines carry the same tile constants.
    let tn = super::gemm::lane_cols(backward_weight_key(Variant::Portable, s));
    let tile = CpuTile::for_product(gpu, m as u32, cols as u32, tn);
    let tiles = groups * tile.count(m, cols, tn);
    let limits = gpu.limits();
    let binding = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    let fit = (binding / (4 * s.weight_len().max(1) as u64)).max(1) as usize;
    // Each split's reduction must stay within MAX_REDUCTION (one chunk of slack per image).
    let hw = s.h_out() * s.w_out();
    let per_image = (hw.div_ceil(CHUNK as usize) + 1) * CHUNK as usize;
    let most_per_split = match gpu.kernel_config().reduction_limit(Engine::Cpu) {
        Some(limit) => (limit / per_image).max(1),
        None => usize::MAX,
    };
    let wanted = gpu
        .kernel_config()
        .split_k_workgroups
        .div_ceil(tiles)
        .min(fit)
        .max(s.n.div_ceil(most_per_split))
        .min(s.n)
        .max(1);
    let per_split = s.n.div_ceil(wanted).max(1);
    (s.n.div_ceil(per_split).max(1), per_split)
}

/// The CPU engine's weight-gradient pipeline. `dy` is `[n, c_out, h_out·w_out]`, rows 16-byte
/// aligned when `h_out·w_out` is a multiple of 4: read as vec4. Each chunk of 8 positions lies in
/// one output row when `w_out % 8 == 0`, and reads 8 consecutive elements of `x` with stride 1:
/// `x` is read as vec4 too, and where kernel rows have three taps, a lane's columns are whole
/// rows.
fn backward_weight_key(variant: Variant, s: &Conv2dShape) -> &'static PipelineKey {
    let positions = s.h_out() * s.w_out();
    let dy_rows = s.n > 0 && positions.is_multiple_of(4);
    let x_rows = s.w_out().is_multiple_of(8) && s.w.is_multiple_of(4) && s.stride[1] == 1;
    if dy_rows && x_rows && s.kernel[1] == 3 {
        variant.pick(
            &SUBGROUP_BACKWARD_WEIGHT_ROWS3,
            &PORTABLE_BACKWARD_WEIGHT_ROWS3,
        )
    } else if dy_rows && x_rows {
        variant.pick(
            &SUBGROUP_BACKWARD_WEIGHT_VEC2,
            &PORTABLE_BACKWARD_WEIGHT_VEC2,
        )
    } else if dy_rows {
        variant.pick(&SUBGROUP_BACKWARD_WEIGHT_VEC, &PORTABLE_BACKWARD_WEIGHT_VEC)
    } else {
        variant.pick(&SUBGROUP_BACKWARD_WEIGHT, &PORTABLE_BACKWARD_WEIGHT)
    }
}

/// Elements of the scratch tensor [`conv2d_backward_weight`] needs: `splits` times the weight
/// length when it splits the images, else 0 (any tensor, even an empty one, will do).
pub fn backward_weight_scratch_len(gpu: &Gpu, s: &Conv2dShape) -> usize {
    match backward_weight_splits(gpu, s) {
        (1, _) => 0,
        (splits, _) => splits * s.weight_len(),
    }
}

/// Records `dw = dL/dw` of [`conv2d_forward`] (`[c_out, cg, kh, kw]`) from the input `x` and
/// `dy = dL/dy`: `dw[o,c,u,v] = Σ_n Σ_i Σ_j dy[n,o,i,j] · x[n, g·cg + c, i·sh+u−pad_h,
/// j·sw+v−pad_w]` (`g` the group of `o`, `cg = c_in / groups`), summed over `(i, j)` in order.
///
/// Deterministic: the images are split as [`backward_weight_splits`] says; each split sums its
/// images in order into `scratch` (at least [`backward_weight_scratch_len`] elements), and a
/// second pass adds the splits in order. Errors as [`conv2d_forward`], and [`Error::Shape`] for
/// a scratch tensor that is too small.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    encoder: &mut Encoder,
    variant: Variant,
    s: &Conv2dShape,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    scratch: &Tensor,
) -> Result<()> {
    const OP: &str = "conv2d backward weight";
    check_tensors(gpu, OP, variant, s, x, dw, dy)?;
    if dw.is_empty() {
        return Ok(());
    }
    let (h_out, w_out) = output_size(OP, s)?;
    let (splits, per_split) = backward_weight_splits(gpu, s);
    check_scratch(OP, scratch, backward_weight_scratch_len(gpu, s))?;
    // Batch entry z = split · groups + group: rows the group's output channels, columns its taps.
    let cols = s.fan_in();
    let params = TileParams {
        m: s.c_out_per_group() as u32,
        n: cols as u32,
        k: (h_out * w_out) as u32,
        batches: (splits * s.groups) as u32,
        b_stride: (s.c_in_per_group() * s.h * s.w) as u32,
        c_stride: (s.c_out_per_group() * cols) as u32,
        images_per_split: per_split as u32,
        ..correlation(s, s.c_out, [s.c_in, s.h, s.w], [h_out, w_out])
    };
    let key = backward_weight_key(variant, s);
    let target = if splits == 1 { dw } else { scratch };
    let sum = if gpu.engine() == Engine::Gpu {
        let pass = Pass::BackwardWeight;
        tiles_gpu::launch(gpu, encoder, OP, pass, params, [dy, x, target])?;
        &tiles_gpu::SUM_SPLITS
    } else {
        launch_tiles(gpu, encoder, OP, key, params, [dy, x, target])?;
        &SUM_SPLITS
    };
    if splits == 1 {
        return Ok(());
    }
    // dw = Σ_z scratch[z] over the splits, in order.
    let sum_params = TileParams {
        m: s.c_out as u32,
        n: cols as u32,
        batches: splits as u32,
        ..TileParams::default()
    };
    let grid = gpu.grid(OP, (s.weight_len() as u32).div_ceil(SUM_WORKGROUP))?;
    let uniform = gpu.constant_uniform(&sum_params);
    let bindings = [
        (0, Binding::whole(&uniform)),
        (1, scratch.binding()),
        (3, dw.binding()),
    ];
    gpu.dispatch(encoder, sum, &bindings, grid)
}
