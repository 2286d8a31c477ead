//! The GPU tile engine (`shaders/tiles_gpu.wgsl`): GEMM and implicit-GEMM convolutions with
//! workgroup-memory tiles and a 4×4 (8×8 for large tiles on discrete GPUs) register block per
//! invocation, for adapters that are real GPUs ([`Engine::Gpu`]).
//!
//! [`super::gemm::gemm`] and the launchers of [`super::conv`] dispatch here when the [`Gpu`]'s
//! [`KernelConfig`](crate::gpu::KernelConfig) says [`Engine::Gpu`]; this module picks the tile
//! shape per call: [`TileShape::WIDE`] for few rows (convolutions with few output channels),
//! [`TileShape::TALL`] for few columns (small fully connected layers), the configuration's
//! large tile for big products, [`TileShape::SMALL`] otherwise. The engine uses no subgroup
//! operations, so one set of pipelines serves every subgroup size (or none).

use super::gemm::TileParams;
use crate::gpu::{Binding, Encoder, Engine, Gpu, PipelineKey, Shader, Tensor, TileShape};
use crate::{Error, Result};

/// The vec4 view of B (binding 5) and its load, or a stand-in that is never called.
macro_rules! b_view {
    (on) => {
        "const VEC_B: bool = true;
@group(0) @binding(5) var<storage, read> b4: array<vec4<f32>>;
fn load_b4(i: u32) -> vec4<f32> { return b4[i]; }
"
    };
    (off) => {
        "const VEC_B: bool = false;
fn load_b4(i: u32) -> vec4<f32> { return vec4<f32>(); }
"
    };
}

/// One shader of the engine (entry points `tiles` and `sum_splits`, the latter and the
/// parameters shared with the CPU engine through `shaders/tile_params.wgsl`), with B's vec4
/// view on or off.
macro_rules! gpu_shader {
    ($name:literal, $b:ident) => {
        Shader {
            name: $name,
            source: concat!(
                include_str!("../../shaders/tile_params.wgsl"),
                include_str!("../../shaders/tiles_gpu.wgsl"),
                b_view!($b)
            ),
            requires: wgpu::Features::empty(),
            // Every loop counts up by a constant to a bound below 2³¹ (the reduction length is
            // bounded by the elements of a storage binding), so none wraps; workgroup-memory
            // indices are below A_LEN and B_LEN by construction, and every operand index is
            // clamped to the tensor or selected away where it would leave it. Without naga's
            // checks ACO's multiply-add phase of a 4×4 K-step is 309 instructions instead of
            // 512 plus 32 branches (BENCHMARKS.md, "loop bound").
            trusted: true,
        }
    };
}

/// The engine's shader reading its operands one float at a time.
pub static SHADER: Shader = gpu_shader!("tiles_gpu", off);
/// The engine's shader reading a GEMM's B stored `[k, n]` through its vec4 view.
pub static SHADER_B4: Shader = gpu_shader!("tiles_gpu_b4", on);

/// The tile shapes the engine has pipelines for, in the order of [`PIPELINES`].
pub const TILES: [TileShape; 5] = [
    TileShape::SMALL,
    TileShape::LARGE,
    TileShape::XL,
    TileShape::WIDE,
    TileShape::TALL,
];

/// What a pipeline computes; its index in a row of [`PIPELINES`] is [`Pass::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// GEMM with the given transposes (A stored `[k, m]`, B stored `[n, k]`).
    Gemm {
        /// A is stored transposed.
        trans_a: bool,
        /// B is stored transposed.
        trans_b: bool,
    },
    /// Convolution forward (correlation of `x` with the weights).
    Forward,
    /// Convolution backward data (correlation of `dy` with the rotated, transposed weights).
    BackwardData,
    /// Convolution weight gradient, per-split partial sums.
    BackwardWeight,
    /// Strided convolution backward data: [`Pass::BackwardData`] reading `dy` as dilated by the
    /// stride (a gather in which the taps between strides read zero).
    BackwardDataStrided,
}

impl Pass {
    /// Index of the pass in a row of [`PIPELINES`].
    pub fn index(self) -> usize {
        match self {
            Self::Gemm { trans_a, trans_b } => 2 * usize::from(trans_a) + usize::from(trans_b),
            Self::Forward => 4,
            Self::BackwardData => 5,
            Self::BackwardWeight => 6,
            Self::BackwardDataStrided => 7,
        }
    }
}

/// A pipeline of the engine: the pass (`MODE`, transposes, flip, dilated source) and the tile
/// shape.
macro_rules! gpu_key {
    ($shader:expr, $tile:expr, $mode:expr, $trans_a:expr, $trans_b:expr, $flip:expr, $dilate:expr) => {
        PipelineKey {
            shader: &$shader,
            entry: "tiles",
            constants: &[
                ("MODE", $mode),
                ("TRANS_A", $trans_a),
                ("TRANS_B", $trans_b),
                ("FLIP", $flip),
                ("DILATE", $dilate),
                ("BM", $tile.bm),
                ("BN", $tile.bn),
                ("BK", $tile.bk),
                ("TM", $tile.tm),
                ("TN", $tile.tn),
                ("WG", $tile.workgroup()),
                ("A_LEN", $tile.a_len()),
                ("B_LEN", $tile.b_len()),
            ],
        }
    };
}

/// The eight passes of one tile shape.
macro_rules! gpu_keys {
    ($tile:expr) => {
        [
            gpu_key!(SHADER, $tile, 0, 0, 0, 0, 0),
            gpu_key!(SHADER, $tile, 0, 0, 1, 0, 0),
            gpu_key!(SHADER, $tile, 0, 1, 0, 0, 0),
            gpu_key!(SHADER, $tile, 0, 1, 1, 0, 0),
            gpu_key!(SHADER, $tile, 1, 0, 0, 0, 0),
            gpu_key!(SHADER, $tile, 1, 0, 0, 1, 0),
            gpu_key!(SHADER, $tile, 2, 0, 0, 0, 0),
            gpu_key!(SHADER, $tile, 1, 0, 0, 1, 1),
        ]
    };
}

/// The GEMM passes of one tile shape that read B (stored `[k, n]`) through its vec4 view:
/// `[trans_a]`.
macro_rules! gpu_b4_keys {
    ($tile:expr) => {
        [
            gpu_key!(SHADER_B4, $tile, 0, 0, 0, 0, 0),
            gpu_key!(SHADER_B4, $tile, 0, 1, 0, 0, 0),
        ]
    };
}

/// Every `tiles` pipeline, `[tile][pass]` (tiles as in [`TILES`], passes by [`Pass::index`]).
pub static PIPELINES: [[PipelineKey; 8]; 5] = [
    gpu_keys!(TileShape::SMALL),
    gpu_keys!(TileShape::LARGE),
    gpu_keys!(TileShape::XL),
    gpu_keys!(TileShape::WIDE),
    gpu_keys!(TileShape::TALL),
];

/// The GEMM pipelines reading B through its vec4 view, `[tile][trans_a]`.
pub static B4_PIPELINES: [[PipelineKey; 2]; 5] = [
    gpu_b4_keys!(TileShape::SMALL),
    gpu_b4_keys!(TileShape::LARGE),
    gpu_b4_keys!(TileShape::XL),
    gpu_b4_keys!(TileShape::WIDE),
    gpu_b4_keys!(TileShape::TALL),
];

/// Fixed-order sum of the weight-gradient splits.
pub static SUM_SPLITS: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "sum_splits",
    constants: &[],
};
/// Threads per workgroup of `sum_splits` (the CPU engine's: one WGSL source).
pub const SUM_WORKGROUP: u32 = super::conv::SUM_WORKGROUP;

/// Every pipeline of the engine.
pub fn pipelines() -> Vec<&'static PipelineKey> {
    PIPELINES
        .iter()
        .flatten()
        .chain(B4_PIPELINES.iter().flatten())
        .chain(std::iter::once(&SUM_SPLITS))
        .collect()
}

fn tile_count(t: &TileShape, m: u32, n: u32) -> u64 {
    u64::from(m.div_ceil(t.bm)) * u64::from(n.div_ceil(t.bn))
}

/// The index in [`TILES`] of the tile shape for an `m × n` output (`batches` entries) on `gpu`.
pub fn choose_tile(gpu: &Gpu, m: u32, n: u32, batches: u32) -> usize {
    let config = gpu.kernel_config();
    let limits = gpu.limits();
    let index = |t: TileShape| TILES.iter().position(|&x| x == t).unwrap_or(0);
    let fits = |t: TileShape| t.fits(&limits);
    if m <= 16 && n >= 64 && fits(TileShape::WIDE) {
        return index(TileShape::WIDE);
    }
    if n <= 16 && m >= 64 && fits(TileShape::TALL) {
        return index(TileShape::TALL);
    }
    // The large tile when the product fills it and still gives enough workgroups.
    let enough = (config.split_k_workgroups / 4) as u64;
    let mut candidates = vec![config.large_tile];
    if config.large_tile == TileShape::XL {
        candidates.push(TileShape::LARGE);
    }
    for t in candidates {
        let full = m >= t.bm && n >= t.bn;
        if t != TileShape::SMALL
            && full
            && fits(t)
            && tile_count(&t, m, n) * u64::from(batches) >= enough
        {
            return index(t);
        }
    }
    index(TileShape::SMALL)
}

/// Whether `pass` is a GEMM whose B, stored `[k, n]`, is read through its vec4 view: n a
/// multiple of 4, so that with tensors starting 256-byte aligned every row of B starts 16-byte
/// aligned. Where A runs along the reduction a vec4 view would need 4×4 blocks transposed in
/// registers, which raised the register count (BENCHMARKS.md): A stays scalar.
fn b_view(pass: Pass, params: &TileParams) -> bool {
    matches!(pass, Pass::Gemm { trans_b: false, .. }) && params.n.is_multiple_of(4)
}

/// Records one dispatch of the engine for `pass` over `params.batches` batch entries with the
/// tile [`choose_tile`] picks, after checking the device limits and (on software adapters) the
/// reduction length.
pub(crate) fn launch(
    gpu: &Gpu,
    encoder: &mut Encoder,
    op: &'static str,
    pass: Pass,
    mut params: TileParams,
    tensors: [&Tensor; 3],
) -> Result<()> {
    let steps = u64::from(params.images_per_split.max(1)) * u64::from(params.k);
    if let Some(limit) = gpu.kernel_config().reduction_limit(Engine::Gpu) {
        if steps > limit as u64 {
            return Err(Error::Limit {
                op,
                what: "reduction steps per dispatch (software adapter loop budget)",
                value: steps,
                limit: limit as u64,
            });
        }
    }
    let tile_index = choose_tile(gpu, params.m, params.n, params.batches);
    let tile = TILES[tile_index];
    let limits = gpu.limits();
    if tile.workgroup_bytes() > limits.max_compute_workgroup_storage_size {
        return Err(Error::Limit {
            op,
            what: "workgroup storage bytes",
            value: u64::from(tile.workgroup_bytes()),
            limit: u64::from(limits.max_compute_workgroup_storage_size),
        });
    }
    if tile.workgroup() > limits.max_compute_invocations_per_workgroup {
        return Err(Error::Limit {
            op,
            what: "invocations per workgroup",
            value: u64::from(tile.workgroup()),
            limit: u64::from(limits.max_compute_invocations_per_workgroup),
        });
    }
    params.tiles_n = params.n.div_ceil(tile.bn);
    let tiles = tile_count(&tile, params.m, params.n);
    let grid = gpu.grid_for_count(op, tiles * u64::from(params.batches))?;
    params.tiles = tiles as u32;
    let uniform = gpu.constant_uniform(&params);
    let [a, b, c] = tensors.map(Tensor::binding);
    let mut bindings = vec![(0, Binding::whole(&uniform)), (1, a), (2, b), (3, c)];
    let key = match pass {
        Pass::Gemm { trans_a, .. } if b_view(pass, &params) => {
            bindings.push((5, b));
            &B4_PIPELINES[tile_index][usize::from(trans_a)]
        }
        _ => &PIPELINES[tile_index][pass.index()],
    };
    gpu.dispatch(encoder, key, &bindings, grid)
}

/// How the GPU engine's weight-gradient pass splits `images` images for `groups` groups of `m`
/// output channels and `n` taps each, and `positions` output positions per image:
/// `(splits, images per split)`.
///
/// Enough splits for the configuration's split-K target, each split's reduction within the
/// software adapters' budget, no more splits than images and (within those bounds) few enough
/// that the partial sums fit one storage binding.
pub(crate) fn backward_weight_splits(
    gpu: &Gpu,
    m: usize,
    n: usize,
    groups: usize,
    positions: usize,
    images: usize,
) -> (usize, usize) {
    let tile = TILES[choose_tile(gpu, m as u32, n as u32, groups as u32)];
    let tiles = tile_count(&tile, m as u32, n as u32).max(1) as usize * groups.max(1);
    let limits = gpu.limits();
    let binding = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    let fit = (binding / (4 * (groups * m * n).max(1) as u64)).max(1) as usize;
    let most_per_split = match gpu.kernel_config().reduction_limit(Engine::Gpu) {
        Some(limit) => (limit / positions.max(1)).max(1),
        None => usize::MAX,
    };
    let wanted = gpu
        .kernel_config()
        .split_k_workgroups
        .div_ceil(tiles)
        .min(fit)
        .max(images.div_ceil(most_per_split))
        .min(images)
        .max(1);
    let per_split = images.div_ceil(wanted).max(1);
    (images.div_ceil(per_split).max(1), per_split)
}
