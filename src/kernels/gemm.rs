//! Launchers of `shaders/gemm.wgsl`: row-major SGEMM `C (+)= op(A) · op(B)`, batched or not,
//! and the register-blocked tile engine the convolutions in [`super::conv`] share.
//!
//! Two variants of every pipeline exist ([`Variant`]): one shares the A operand across a
//! subgroup with `subgroupBroadcast` (needs `Features::SUBGROUP` and subgroups of at least
//! [`CHUNK`] lanes), the portable one loads it in every lane. [`Variant::best`] picks one for a
//! device; both give results equal up to rounding, each deterministic.
//!
//! Each variant also comes with vec4 views of A or of both operands (`*_A4_SHADER`,
//! `*_A4B4_SHADER`): the launchers use them when the rows they read start 16-byte aligned
//! (dimensions multiples of 4), which on CPU adapters makes the loads several times cheaper.

use super::tiles_gpu::{self, Pass};
use crate::gpu::{Binding, Encoder, Engine, Gpu, PipelineKey, Shader, Tensor};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Entry point and helpers of the subgroup variant (appended to the engine).
macro_rules! subgroup_variant {
    () => {
        r#"
// Subgroup variant. Row layout (a_by_row): lane l loads rows 8i + l of the tile, steps k0 .. k0+7
// of the chunk (k0 .. k0+11 in ROW_CHUNK chunks), as a vec4 per 4 steps; row r is read from lane r % 8. Otherwise lane l loads step
// k0 + l of the chunk for all TM rows; step q reads them from lane q.
fn chunk_fragment(z: u32, s: u32, row0: u32, k0: u32, lane: u32) -> Frag {
    if a_by_row() {
        let l = lane % CHUNK;
        var v: Frag;
        put_row_steps(&v, 0u, a_row_steps(z, s, row0 + l, k0));
        if TM > 8u { put_row_steps(&v, 1u, a_row_steps(z, s, row0 + 8u + l, k0)); }
        if TM > 16u { put_row_steps(&v, 2u, a_row_steps(z, s, row0 + 16u + l, k0)); }
        if TM > 24u { put_row_steps(&v, 3u, a_row_steps(z, s, row0 + 24u + l, k0)); }
        if TM > 32u { put_row_steps(&v, 4u, a_row_steps(z, s, row0 + 32u + l, k0)); }
        if TM > 40u { put_row_steps(&v, 5u, a_row_steps(z, s, row0 + 40u + l, k0)); }
        if TM > 48u { put_row_steps(&v, 6u, a_row_steps(z, s, row0 + 48u + l, k0)); }
        if TM > 56u { put_row_steps(&v, 7u, a_row_steps(z, s, row0 + 56u + l, k0)); }
        return v;
    }
    return a_rows(z, s, row0, k0 + lane % CHUNK);
}

// The lane's row of group g (rows 8g + l) in the fragment's row layout.
fn put_row_steps(v: ptr<function, Frag>, g: u32, a: array<vec4<f32>, 3>) {
    (*v)[3u * g] = a[0];
    (*v)[3u * g + 1u] = a[1];
    (*v)[3u * g + 2u] = a[2];
}

fn broadcast(x: vec4<f32>, l: u32) -> vec4<f32> {
    switch l {
        case 0u: { return subgroupBroadcast(x, 0u); }
        case 1u: { return subgroupBroadcast(x, 1u); }
        case 2u: { return subgroupBroadcast(x, 2u); }
        case 3u: { return subgroupBroadcast(x, 3u); }
        case 4u: { return subgroupBroadcast(x, 4u); }
        case 5u: { return subgroupBroadcast(x, 5u); }
        case 6u: { return subgroupBroadcast(x, 6u); }
        default: { return subgroupBroadcast(x, 7u); }
    }
}

// A(row0 + r, k0 .. k0+7), or k0 .. k0+11 in ROW_CHUNK chunks, in the row layout.
fn chunk_row(frag: ptr<function, Frag>, z: u32, s: u32, row0: u32, k0: u32, r: u32) -> array<vec4<f32>, 3> {
    let i = 3u * (r / 8u);
    let l = r % 8u;
    let tail = select(vec4<f32>(0.0), broadcast((*frag)[i + 2u], l), row_chunks());
    return array<vec4<f32>, 3>(broadcast((*frag)[i], l), broadcast((*frag)[i + 1u], l), tail);
}

// A(4·blk .. 4·blk+3, k0 + q) for the CHUNK steps q of the chunk, from lane q.
fn chunk_block(frag: ptr<function, Frag>, z: u32, s: u32, row0: u32, k0: u32, blk: u32) -> array<vec4<f32>, CHUNK> {
    let x = (*frag)[blk];
    return array<vec4<f32>, CHUNK>(
        subgroupBroadcast(x, 0u),
        subgroupBroadcast(x, 1u),
        subgroupBroadcast(x, 2u),
        subgroupBroadcast(x, 3u),
        subgroupBroadcast(x, 4u),
        subgroupBroadcast(x, 5u),
        subgroupBroadcast(x, 6u),
        subgroupBroadcast(x, 7u),
    );
}

@compute @workgroup_size(WG)
fn tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) lane: u32) {
    run_tiles(wid.x + wid.y * nwg.x, lid, lane);
}
"#
    };
}

/// Entry point and helpers of the portable variant (appended to the engine).
macro_rules! portable_variant {
    () => {
        r#"
// Portable variant: every lane loads the A values of the chunk itself.
fn chunk_fragment(z: u32, s: u32, row0: u32, k0: u32, lane: u32) -> Frag {
    return Frag();
}

fn chunk_row(frag: ptr<function, Frag>, z: u32, s: u32, row0: u32, k0: u32, r: u32) -> array<vec4<f32>, 3> {
    return a_row_steps(z, s, row0 + r, k0);
}

fn chunk_block(frag: ptr<function, Frag>, z: u32, s: u32, row0: u32, k0: u32, blk: u32) -> array<vec4<f32>, CHUNK> {
    let row = row0 + 4u * blk;
    return array<vec4<f32>, CHUNK>(
        a_step(z, s, row, k0),
        a_step(z, s, row, k0 + 1u),
        a_step(z, s, row, k0 + 2u),
        a_step(z, s, row, k0 + 3u),
        a_step(z, s, row, k0 + 4u),
        a_step(z, s, row, k0 + 5u),
        a_step(z, s, row, k0 + 6u),
        a_step(z, s, row, k0 + 7u),
    );
}

@compute @workgroup_size(WG)
fn tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    run_tiles(wid.x + wid.y * nwg.x, lid, 0u);
}
"#
    };
}

/// vec4 view of A (binding 4), or its stand-in.
macro_rules! vec_a {
    (on) => {
        r#"
@group(0) @binding(4) var<storage, read> a4: array<vec4<f32>>;
const VEC_A: bool = true;
fn load_a4(i: u32) -> vec4<f32> { return a4[i]; }
"#
    };
    (off) => {
        r#"
const VEC_A: bool = false;
fn load_a4(i: u32) -> vec4<f32> { return vec4<f32>(0.0); }
"#
    };
}

/// vec4 views of B (binding 5) and C (binding 6, `c4` of conv.wgsl), or their stand-ins.
macro_rules! vec_b {
    (on) => {
        r#"
@group(0) @binding(5) var<storage, read> b4: array<vec4<f32>>;
const VEC_B: bool = true;
fn load_b4(i: u32) -> vec4<f32> { return b4[i]; }
fn store_c4(i: u32, v: vec4<f32>) {
    var sum = v;
    if P.accumulate != 0u { sum += c4[i]; }
    c4[i] = sum;
}
"#
    };
    (off) => {
        r#"
const VEC_B: bool = false;
fn load_b4(i: u32) -> vec4<f32> { return vec4<f32>(0.0); }
fn store_c4(i: u32, v: vec4<f32>) {}
"#
    };
}

/// One shader of the tile engine: its name, variant piece, vec4 views and required features.
macro_rules! engine_shader {
    ($name:literal, $variant:ident, $a:ident, $b:ident, $requires:expr) => {
        Shader {
            name: $name,
            source: concat!(
                include_str!("../../shaders/tile_params.wgsl"),
                include_str!("../../shaders/gemm.wgsl"),
                include_str!("../../shaders/conv.wgsl"),
                vec_a!($a),
                vec_b!($b),
                $variant!()
            ),
            requires: $requires,
            trusted: false,
        }
    };
}

/// The tile engine with the subgroup variant's entry point (scalar loads).
pub static SUBGROUP_SHADER: Shader = engine_shader!(
    "gemm_subgroup",
    subgroup_variant,
    off,
    off,
    wgpu::Features::SUBGROUP
);
/// Subgroup variant reading A through a vec4 view (reductions contiguous in A, `k % 4 == 0`).
pub static SUBGROUP_A4_SHADER: Shader = engine_shader!(
    "gemm_subgroup_a4",
    subgroup_variant,
    on,
    off,
    wgpu::Features::SUBGROUP
);
/// Subgroup variant reading A and B through vec4 views (GEMM with 4-aligned rows).
pub static SUBGROUP_A4B4_SHADER: Shader = engine_shader!(
    "gemm_subgroup_a4b4",
    subgroup_variant,
    on,
    on,
    wgpu::Features::SUBGROUP
);
/// The tile engine with the portable variant's entry point (scalar loads).
pub static PORTABLE_SHADER: Shader = engine_shader!(
    "gemm_portable",
    portable_variant,
    off,
    off,
    wgpu::Features::empty()
);
/// Portable variant reading A through a vec4 view.
pub static PORTABLE_A4_SHADER: Shader = engine_shader!(
    "gemm_portable_a4",
    portable_variant,
    on,
    off,
    wgpu::Features::empty()
);
/// Portable variant reading A and B through vec4 views.
pub static PORTABLE_A4B4_SHADER: Shader = engine_shader!(
    "gemm_portable_a4b4",
    portable_variant,
    on,
    on,
    wgpu::Features::empty()
);

/// Which vec4 views (A, B) a shader of the tile engine binds.
fn vec_views(shader: &Shader) -> (bool, bool) {
    (shader.name.contains("_a4"), shader.name.contains("b4"))
}

/// Reduction steps per chunk, i.e. the subgroup lanes that share A (`CHUNK` in the shader).
pub const CHUNK: u32 = 8;
/// Rows per workgroup tile (`override TM`, a multiple of 4, at most `MAX_TM` = 64).
pub const TILE_M: u32 = 64;
/// Columns per lane (`override TN`; the shader holds up to `MAX_TN` = 12, for
/// [`ROW_LANE_COLS`]).
pub const TILE_N: u32 = 8;
/// Lanes per workgroup (`override WG`).
pub const WORKGROUP: u32 = 64;

/// A tile shape of the CPU engine: `rows` (`TM`) × `lanes · TILE_N` columns, one workgroup of
/// `lanes` invocations. The static keys carry [`CpuTile::FULL`]; narrow products (few output
/// channels, small fully connected layers, weight gradients of small kernels) get smaller
/// shapes, so that no tile computes mostly rows or columns past the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuTile {
    /// Output rows per tile (`TM`): a multiple of 8 (the subgroup variant's row layout).
    pub rows: u32,
    /// Invocations per workgroup (`WG`), each owning `TILE_N` columns.
    pub lanes: u32,
}

impl CpuTile {
    /// 64 × 512: the static keys' shape, dispatched only where the kernel configuration turns
    /// narrow tiles off (`bench --full-tiles`, A/B runs against the first engine).
    pub const FULL: Self = Self {
        rows: TILE_M,
        lanes: WORKGROUP,
    };
    /// Every shape the CPU engine dispatches: [`CpuTile::choose`]'s, and with narrow tiles off
    /// [`CpuTile::FULL`] (8 lanes of it for tap-major backward data).
    pub const ALL: [Self; 6] = [
        Self::FULL,
        Self::new(32, WORKGROUP),
        Self::new(16, WORKGROUP),
        Self::new(TILE_M, CHUNK),
        Self::new(32, CHUNK),
        Self::new(16, CHUNK),
    ];

    const fn new(rows: u32, lanes: u32) -> Self {
        Self { rows, lanes }
    }

    /// The smallest shape that covers `m` rows (16 or 32 per tile), and a workgroup of
    /// [`CHUNK`] lanes where that leaves fewer columns of the last tile idle than 64 lanes do,
    /// for a pipeline of `lane_cols` columns per lane ([`lane_cols`]; 64 or 512 columns per
    /// tile with [`TILE_N`]): a weight gradient's `c_in·kh·kw` columns (1,152 for 128 channels
    /// of 3×3) would leave a quarter of the last 512-column tiles idle, and ran 1.2–1.45× faster
    /// on 64-column tiles (BENCHMARKS.md). Ties keep 64 lanes (8-lane workgroups were slower
    /// for short reductions over 1,024 columns), except for [`ROW_LANE_COLS`] (below).
    ///
    /// Products of more rows take 32-row tiles too, not [`CpuTile::FULL`]'s 64: on llvmpipe a
    /// lane's 32 × 8 accumulators ran VGG-7's 3×3 passes ~1.2× faster than 64 × 8, GEMM 2048
    /// no slower, and llvmpipe compiles a 32-row pipeline at its first dispatch in a third of
    /// the time (BENCHMARKS.md, 2026-12-07, fourth session).
    pub fn choose(m: u32, n: u32, lane_cols: u32) -> Self {
        let rows = if m <= 16 { 16 } else { 32 };
        let waste = |cols: u32| n.div_ceil(cols) * cols - n;
        // Weight gradients over 3-tap kernel rows always take 8 lanes (96 columns): as fast as
        // 768-column tiles where both fit (VGG-7's 2,304 and 4,608 columns), and one pipeline
        // fewer per row count for llvmpipe to compile.
        let lanes = if lane_cols == ROW_LANE_COLS
            || waste(CHUNK * lane_cols) < waste(WORKGROUP * lane_cols)
        {
            CHUNK
        } else {
            WORKGROUP
        };
        Self::new(rows, lanes)
    }

    /// The tile for an `m × n` product on `gpu`: [`CpuTile::choose`], or [`CpuTile::FULL`] where
    /// the kernel configuration turns narrow tiles off.
    pub fn for_product(gpu: &Gpu, m: u32, n: u32, lane_cols: u32) -> Self {
        if gpu.kernel_config().narrow_cpu_tiles {
            Self::choose(m, n, lane_cols)
        } else {
            Self::FULL
        }
    }

    /// Output columns per tile of a pipeline with `lane_cols` columns per lane.
    pub fn cols(self, lane_cols: u32) -> u32 {
        self.lanes * lane_cols
    }

    /// Tiles covering an `m × n` output (at least one).
    pub fn count(self, m: usize, n: usize, lane_cols: u32) -> usize {
        let cols = self.cols(lane_cols) as usize;
        m.div_ceil(self.rows as usize).max(1) * n.div_ceil(cols).max(1)
    }

    /// `key` (a CPU-engine `tiles` pipeline, whose constants carry [`CpuTile::FULL`]) with this
    /// shape's `TM` and `WG`. Keys are interned: each (pipeline, shape) pair is one `'static`
    /// key, created once (a bounded set: the engine's keys times [`CpuTile::ALL`]).
    pub fn key(self, key: &'static PipelineKey) -> &'static PipelineKey {
        if self == Self::FULL {
            return key;
        }
        type Interned = HashMap<(PipelineKey, CpuTile), &'static PipelineKey>;
        static SHAPED: OnceLock<Mutex<Interned>> = OnceLock::new();
        let mut shaped = SHAPED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        shaped.entry((key.clone(), self)).or_insert_with(|| {
            let constants: Vec<(&'static str, u32)> = key
                .constants
                .iter()
                .map(|&(name, value)| match name {
                    "TM" => (name, self.rows),
                    "WG" => (name, self.lanes),
                    _ => (name, value),
                })
                .collect();
            Box::leak(Box::new(PipelineKey {
                shader: key.shader,
                entry: key.entry,
                constants: Box::leak(constants.into_boxed_slice()),
            }))
        })
    }
}

/// Longest reduction one dispatch of this engine accepts on a software adapter (reduction
/// steps per output, summed over the images of a weight-gradient split). Software adapters stop
/// any shader after 65 535 loop iterations (Mesa's llvmpipe), and the engine spends one
/// iteration per [`CHUNK`] steps; longer reductions fail with [`Error::Limit`] instead of
/// silently stopping early. Other adapters have no such budget
/// ([`KernelConfig::max_reduction`](crate::gpu::KernelConfig::max_reduction) is `None`).
pub const MAX_REDUCTION: usize = crate::gpu::config::MAX_REDUCTION;

/// The value of override constant `name` in `key`, if it sets one.
fn constant(key: &PipelineKey, name: &str) -> Option<u32> {
    key.constants
        .iter()
        .find(|&&(n, _)| n == name)
        .map(|&(_, value)| value)
}

/// Columns per lane (`TN`) of a tile-engine pipeline: [`TILE_N`], or [`ROW_LANE_COLS`] for a
/// weight gradient over kernel rows of three taps.
pub fn lane_cols(key: &PipelineKey) -> u32 {
    constant(key, "TN").unwrap_or(TILE_N)
}

/// Whether a tile-engine pipeline is a tap-major correlation (`TAP_MAJOR`): its columns are the
/// images of one destination position, [`TAP_MAJOR_IMAGES`] to a tile, so that the whole
/// workgroup shares the kernel taps that read the source and skips those in the padding.
pub fn is_tap_major(key: &PipelineKey) -> bool {
    constant(key, "TAP_MAJOR") == Some(1)
}

/// Columns of a tap-major tile (always [`CHUNK`] lanes of [`TILE_N`]): images of one position,
/// the launcher padding each position's images to a multiple of it.
pub const TAP_MAJOR_IMAGES: u32 = CHUNK * TILE_N;

/// Columns per lane of a weight gradient with `ROWS3`: four kernel rows of three taps.
pub const ROW_LANE_COLS: u32 = 12;

/// A pipeline of the tile engine: the shader, the operand view (`MODE`), transposes, (strided
/// backward data) the dilated source, `ROWS3` (kernel rows of three taps: see gemm.wgsl), which
/// gives a weight gradient [`ROW_LANE_COLS`] columns per lane, `A_UNALIGNED` (rows of A read
/// through the vec4 view wherever they start) and `TAP_MAJOR` (a correlation that skips the taps
/// in the padding: [`is_tap_major`]).
macro_rules! tile_key {
    ($shader:expr, $mode:expr, $trans_a:expr, $trans_b:expr) => {
        $crate::kernels::gemm::tile_key!($shader, $mode, $trans_a, $trans_b, 0, 0)
    };
    ($shader:expr, $mode:expr, $trans_a:expr, $trans_b:expr, $dilate:expr, $rows3:expr) => {
        $crate::kernels::gemm::tile_key!($shader, $mode, $trans_a, $trans_b, $dilate, $rows3, 0)
    };
    ($shader:expr, $mode:expr, $trans_a:expr, $trans_b:expr, $dilate:expr, $rows3:expr, $a_unaligned:expr) => {
        $crate::kernels::gemm::tile_key!(
            $shader,
            $mode,
            $trans_a,
            $trans_b,
            $dilate,
            $rows3,
            $a_unaligned,
            0
        )
    };
    ($shader:expr, $mode:expr, $trans_a:expr, $trans_b:expr, $dilate:expr, $rows3:expr, $a_unaligned:expr, $tap_major:expr) => {
        PipelineKey {
            shader: $shader,
            entry: "tiles",
            constants: &[
                ("MODE", $mode),
                ("TRANS_A", $trans_a),
                ("TRANS_B", $trans_b),
                ("DILATE", $dilate),
                ("ROWS3", $rows3),
                ("A_UNALIGNED", $a_unaligned),
                ("TAP_MAJOR", $tap_major),
                ("TM", $crate::kernels::gemm::TILE_M),
                (
                    "TN",
                    if $rows3 == 1 && $mode == 2 {
                        $crate::kernels::gemm::ROW_LANE_COLS
                    } else {
                        $crate::kernels::gemm::TILE_N
                    },
                ),
                ("WG", $crate::kernels::gemm::WORKGROUP),
            ],
        }
    };
}
pub(crate) use tile_key;

/// GEMM pipelines of the subgroup variant, indexed by `2·trans_a + trans_b`.
pub static SUBGROUP_GEMM: [PipelineKey; 4] = [
    tile_key!(&SUBGROUP_SHADER, 0, 0, 0),
    tile_key!(&SUBGROUP_SHADER, 0, 0, 1),
    tile_key!(&SUBGROUP_SHADER, 0, 1, 0),
    tile_key!(&SUBGROUP_SHADER, 0, 1, 1),
];
/// GEMM pipelines of the portable variant, indexed by `2·trans_a + trans_b`.
pub static PORTABLE_GEMM: [PipelineKey; 4] = [
    tile_key!(&PORTABLE_SHADER, 0, 0, 0),
    tile_key!(&PORTABLE_SHADER, 0, 0, 1),
    tile_key!(&PORTABLE_SHADER, 0, 1, 0),
    tile_key!(&PORTABLE_SHADER, 0, 1, 1),
];

/// GEMM pipelines of the subgroup variant with vec4 views of A and B.
pub static SUBGROUP_GEMM_VEC: [PipelineKey; 4] = [
    tile_key!(&SUBGROUP_A4B4_SHADER, 0, 0, 0),
    tile_key!(&SUBGROUP_A4B4_SHADER, 0, 0, 1),
    tile_key!(&SUBGROUP_A4B4_SHADER, 0, 1, 0),
    tile_key!(&SUBGROUP_A4B4_SHADER, 0, 1, 1),
];
/// GEMM pipelines of the portable variant with vec4 views of A and B.
pub static PORTABLE_GEMM_VEC: [PipelineKey; 4] = [
    tile_key!(&PORTABLE_A4B4_SHADER, 0, 0, 0),
    tile_key!(&PORTABLE_A4B4_SHADER, 0, 0, 1),
    tile_key!(&PORTABLE_A4B4_SHADER, 0, 1, 0),
    tile_key!(&PORTABLE_A4B4_SHADER, 0, 1, 1),
];

/// Every GEMM pipeline, in every [`CpuTile`] shape.
pub fn pipelines() -> Vec<&'static PipelineKey> {
    every_shape(
        SUBGROUP_GEMM
            .iter()
            .chain(&PORTABLE_GEMM)
            .chain(&SUBGROUP_GEMM_VEC)
            .chain(&PORTABLE_GEMM_VEC),
    )
}

/// Each `tiles` key of `keys` in every [`CpuTile`] shape; other keys as they are.
pub(crate) fn every_shape(
    keys: impl IntoIterator<Item = &'static PipelineKey>,
) -> Vec<&'static PipelineKey> {
    let mut all = Vec::new();
    for key in keys {
        if key.entry == "tiles" {
            all.extend(CpuTile::ALL.map(|tile| tile.key(key)));
        } else {
            all.push(key);
        }
    }
    all
}

/// Which implementation of the tile engine to dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// A operand shared with `subgroupBroadcast` (fastest where available).
    Subgroup,
    /// No subgroup operations: runs on every device.
    Portable,
}

impl Variant {
    /// [`Variant::Subgroup`] when the device has `Features::SUBGROUP` and subgroups of at least
    /// [`CHUNK`] lanes, else [`Variant::Portable`].
    pub fn best(gpu: &Gpu) -> Self {
        if Self::Subgroup.supported(gpu) {
            Self::Subgroup
        } else {
            Self::Portable
        }
    }

    /// Whether the device can run this variant.
    pub fn supported(self, gpu: &Gpu) -> bool {
        match self {
            Self::Portable => true,
            Self::Subgroup => {
                gpu.has_subgroups() && gpu.device().adapter_info().subgroup_min_size >= CHUNK
            }
        }
    }

    /// Fails with [`Error::InvalidArgument`] naming `op` unless the device can run the variant.
    pub(crate) fn check(self, gpu: &Gpu, op: &'static str) -> Result<()> {
        if self.supported(gpu) {
            return Ok(());
        }
        Err(Error::InvalidArgument {
            op,
            msg: format!(
                "the subgroup variant needs Features::SUBGROUP and subgroups of at least {CHUNK} lanes"
            ),
        })
    }

    /// The pipeline of this variant out of a subgroup / portable pair.
    pub(crate) fn pick<'a>(
        self,
        subgroup: &'a PipelineKey,
        portable: &'a PipelineKey,
    ) -> &'a PipelineKey {
        match self {
            Self::Subgroup => subgroup,
            Self::Portable => portable,
        }
    }
}

/// Uniform parameters of the tile engine (`struct TileParams` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TileParams {
    /// Output rows.
    pub m: u32,
    /// Output columns.
    pub n: u32,
    /// Reduction length (per image for the weight gradient).
    pub k: u32,
    /// Column tiles (set by the launcher).
    pub tiles_n: u32,
    /// Tiles per batch entry (set by the launcher).
    pub tiles: u32,
    /// Batch entries, or weight-gradient splits.
    pub batches: u32,
    /// Elements between batch entries of A.
    pub a_stride: u32,
    /// Elements between batch entries of B.
    pub b_stride: u32,
    /// Elements between batch entries of C.
    pub c_stride: u32,
    /// 1: accumulate into C.
    pub accumulate: u32,
    /// Convolution source channels (all groups).
    pub src_c: u32,
    /// Convolution source height.
    pub src_h: u32,
    /// Convolution source width.
    pub src_w: u32,
    /// Convolution destination height.
    pub dst_h: u32,
    /// Convolution destination width.
    pub dst_w: u32,
    /// Zero padding above and below, as a wrapping `u32` (the backward-data correlation's
    /// `kh − 1 − pad` may be negative).
    pub pad_h: u32,
    /// Zero padding left and right, wrapping like `pad_h`.
    pub pad_w: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Vertical step of the destination positions over the source.
    pub stride_h: u32,
    /// Horizontal step of the destination positions over the source.
    pub stride_w: u32,
    /// Vertical dilation of the source (pipelines with `DILATE`: strided backward data).
    pub dil_h: u32,
    /// Horizontal dilation of the source.
    pub dil_w: u32,
    /// Channel groups (convolutions).
    pub groups: u32,
    /// Images per weight-gradient split.
    pub images_per_split: u32,
    /// Images.
    pub images: u32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 2],
}

/// Records one dispatch of the tile engine over `params.batches` batch entries.
pub(crate) fn launch_tiles(
    gpu: &Gpu,
    encoder: &mut Encoder,
    op: &'static str,
    key: &'static PipelineKey,
    mut params: TileParams,
    tensors: [&Tensor; 3],
) -> Result<()> {
    let segments = u64::from(params.images_per_split.max(1));
    let steps = segments * u64::from(params.k.div_ceil(CHUNK) + 1) * u64::from(CHUNK);
    if let Some(limit) = gpu.kernel_config().reduction_limit(Engine::Cpu) {
        if steps > limit as u64 {
            return Err(Error::Limit {
                op,
                what: "reduction steps per dispatch",
                value: steps,
                limit: limit as u64,
            });
        }
    }
    let tn = lane_cols(key);
    let mut tile = CpuTile::for_product(gpu, params.m, params.n, tn);
    if is_tap_major(key) {
        // One position's images per tile: the launcher padded them to TAP_MAJOR_IMAGES.
        tile.lanes = CHUNK;
    }
    let key = tile.key(key);
    params.tiles_n = params.n.div_ceil(tile.cols(tn));
    let tiles = u64::from(params.m.div_ceil(tile.rows)) * u64::from(params.tiles_n);
    let grid = gpu.grid_for_count(op, tiles * u64::from(params.batches))?;
    params.tiles = tiles as u32;
    let uniform = gpu.constant_uniform(&params);
    let [a, b, c] = tensors.map(Tensor::binding);
    let mut bindings = vec![(0, Binding::whole(&uniform)), (1, a), (2, b), (3, c)];
    let (vec_a, vec_b) = vec_views(key.shader);
    if vec_a {
        bindings.push((4, a));
    }
    if vec_b {
        // With B's view comes C's (binding 6), for the shapes whose stores it serves.
        bindings.extend([(5, b), (6, c)]);
    }
    gpu.dispatch(encoder, key, &bindings, grid)?;
    Ok(())
}

/// Checks that a tensor fits one storage binding and has `expected` elements.
pub(crate) fn check_tensor(
    gpu: &Gpu,
    op: &'static str,
    tensor: &Tensor,
    expected: usize,
) -> Result<()> {
    gpu.check_binding(op, tensor.len())?;
    tensor.expect_len(op, expected)
}

/// Dimensions of a (batched) matrix product `C = op(A) · op(B)` (or `C += …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    /// Independent products, stored one after another in each of A, B and C.
    pub batch: usize,
    /// Rows of `op(A)` and `C`.
    pub m: usize,
    /// Columns of `op(B)` and `C`.
    pub n: usize,
    /// Columns of `op(A)`, rows of `op(B)`.
    pub k: usize,
    /// A is stored `[k, m]` (`op(A) = Aᵀ`) instead of `[m, k]`.
    pub trans_a: bool,
    /// B is stored `[n, k]` (`op(B) = Bᵀ`) instead of `[k, n]`.
    pub trans_b: bool,
    /// Add the product to C instead of overwriting it.
    pub accumulate: bool,
}

impl GemmShape {
    /// An unbatched, overwriting product `C[m×n] = op(A) · op(B)`.
    pub const fn new(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Self {
        Self {
            batch: 1,
            m,
            n,
            k,
            trans_a,
            trans_b,
            accumulate: false,
        }
    }
}

/// Records the row-major product `C[b] (+)= op(A[b]) · op(B[b])` for `b < shape.batch`.
///
/// `a` holds `batch` matrices `[m, k]` (`[k, m]` when `trans_a`), `b` holds `[k, n]` (`[n, k]`
/// when `trans_b`), `c` holds `[m, n]`, each batch entry after the previous one. Every output is
/// summed over `p = 0, 1, …, k−1` in that order. Fails with [`Error::Shape`] when a tensor has the
/// wrong length, [`Error::Limit`] when one exceeds a storage binding or the dispatch the adapter's
/// workgroup limit, and [`Error::InvalidArgument`] when the device cannot run `variant`.
///
/// The [`Gpu`]'s engine decides the kernel: with [`Engine::Gpu`] the workgroup-memory engine of
/// [`super::tiles_gpu`] runs, which uses no subgroup operations and so ignores `variant`.
pub fn gemm(
    gpu: &Gpu,
    encoder: &mut Encoder,
    variant: Variant,
    shape: &GemmShape,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
) -> Result<()> {
    const OP: &str = "gemm";
    if gpu.engine() == Engine::Cpu {
        variant.check(gpu, OP)?;
    }
    let GemmShape { batch, m, n, k, .. } = *shape;
    check_tensor(gpu, OP, a, batch * m * k)?;
    check_tensor(gpu, OP, b, batch * k * n)?;
    check_tensor(gpu, OP, c, batch * m * n)?;
    if c.is_empty() {
        return Ok(());
    }
    // Every length fits a binding (< 2³² bytes), so the dimensions fit u32.
    let index = 2 * usize::from(shape.trans_a) + usize::from(shape.trans_b);
    // vec4 views need every row of A and B (as stored) to start 16-byte aligned; tensors start
    // at multiples of 256 bytes.
    let a_row = if shape.trans_a { m } else { k };
    let b_row = if shape.trans_b { k } else { n };
    let key = if a_row.is_multiple_of(4) && b_row.is_multiple_of(4) && k > 0 {
        variant.pick(&SUBGROUP_GEMM_VEC[index], &PORTABLE_GEMM_VEC[index])
    } else {
        variant.pick(&SUBGROUP_GEMM[index], &PORTABLE_GEMM[index])
    };
    let params = TileParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        batches: batch as u32,
        a_stride: (m * k) as u32,
        b_stride: (k * n) as u32,
        c_stride: (m * n) as u32,
        accumulate: u32::from(shape.accumulate),
        ..TileParams::default()
    };
    if gpu.engine() == Engine::Gpu {
        let pass = Pass::Gemm {
            trans_a: shape.trans_a,
            trans_b: shape.trans_b,
        };
        return tiles_gpu::launch(gpu, encoder, OP, pass, params, [a, b, c]);
    }
    launch_tiles(gpu, encoder, OP, key, params, [a, b, c])
}
