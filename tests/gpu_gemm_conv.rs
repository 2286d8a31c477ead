//! The GEMM and convolution kernels on the GPU against the CPU reference, for both variants of
//! the tile engine, on awkward sizes (edge tiles everywhere).

mod common;

use bayesian_bits::gpu::{Encoder, Engine, Gpu, KernelConfig, Tensor, TileShape};
use bayesian_bits::kernels::conv::{self, backward_data_scratch_len, backward_weight_scratch_len};
use bayesian_bits::kernels::gemm::{self, GemmShape, Variant};
use bayesian_bits::kernels::tiles_gpu;
use bayesian_bits::reference::layers as reference;
use bayesian_bits::spec::Conv2dShape;
use bayesian_bits::Error;
use common::{assert_close, gpu, uniform};
use std::sync::OnceLock;

const REL: f32 = 1e-5;

/// A device created without `Features::SUBGROUP`, wrapped as an application would.
fn portable_gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
            .expect("a wgpu adapter");
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("no subgroups"),
            required_features: wgpu::Features::empty(),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .expect("a device");
        Gpu::from_device(device, queue)
    })
}

/// The variants to test on the default device.
fn variants() -> Vec<Variant> {
    let mut v = vec![Variant::Portable];
    if Variant::Subgroup.supported(gpu()) {
        v.push(Variant::Subgroup);
    }
    v
}

/// The default device with the CPU engine forced, every product on the 64 × 512 tile: the
/// awkward sizes below then compile one pipeline per kernel, and
/// `cpu_engine_narrow_tiles_match_reference` covers the narrow shapes.
fn cpu_engine() -> Gpu {
    cpu_engine_with(false)
}

fn cpu_engine_with(narrow_cpu_tiles: bool) -> Gpu {
    let g = gpu().with_engine(Engine::Cpu);
    let config = KernelConfig {
        narrow_cpu_tiles,
        ..g.kernel_config().clone()
    };
    g.with_kernel_config(config)
}

/// The default device with the GPU engine forced, using `large` for big products and a
/// split-K target low enough that the small test products reach it (so every tile shape runs).
fn gpu_engine(large: TileShape) -> Gpu {
    let g = gpu().with_engine(Engine::Gpu);
    let config = KernelConfig {
        large_tile: large,
        split_k_workgroups: 4,
        ..g.kernel_config().clone()
    };
    g.with_kernel_config(config)
}

/// Every (handle, variant) to test: the CPU engine with each variant the device runs, and the
/// GPU engine (which uses no subgroup operations) with the 128×128 large tile, falling back to
/// 64×64, 32×32, 16×128 or 128×16 by shape, so that every tile shape runs.
fn setups() -> Vec<(Gpu, Variant)> {
    let mut v: Vec<(Gpu, Variant)> = variants().into_iter().map(|v| (cpu_engine(), v)).collect();
    v.push((gpu_engine(TileShape::XL), Variant::best(gpu())));
    v
}

fn upload(g: &Gpu, data: &[f32]) -> Tensor {
    g.upload("test input", &[data.len()], data).unwrap()
}

fn run(g: &Gpu, record: impl FnOnce(&mut Encoder) -> bayesian_bits::Result<()>) {
    let mut encoder = g.encoder("test");
    record(&mut encoder).unwrap();
    g.submit(encoder);
}

fn check_gemm(g: &Gpu, variant: Variant, shape: GemmShape, seed: u64) {
    let GemmShape { batch, m, n, k, .. } = shape;
    let a = uniform(seed, batch * m * k, -1.0, 1.0);
    let b = uniform(seed + 1, batch * k * n, -1.0, 1.0);
    let c0 = uniform(seed + 2, batch * m * n, -1.0, 1.0);
    let (ta, tb, tc) = (upload(g, &a), upload(g, &b), upload(g, &c0));
    run(g, |e| gemm::gemm(g, e, variant, &shape, &ta, &tb, &tc));
    let mut expected = Vec::with_capacity(batch * m * n);
    for z in 0..batch {
        let mut part = reference::gemm(
            m,
            n,
            k,
            &a[z * m * k..(z + 1) * m * k],
            &b[z * k * n..(z + 1) * k * n],
            shape.trans_a,
            shape.trans_b,
        );
        if shape.accumulate {
            for (v, c) in part.iter_mut().zip(&c0[z * m * n..]) {
                *v += c;
            }
        }
        expected.extend(part);
    }
    let what = format!("{} engine {variant:?} gemm {shape:?}", g.engine());
    assert_close(&g.read(&tc).unwrap(), &expected, REL, &what);
}

const GEMM_SIZES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (131, 129, 19),
    (7, 33, 65),
    (65, 100, 7),
    (33, 1, 100),
    (100, 65, 33),
    (1, 517, 9),
    (130, 7, 1),
    (64, 600, 40),
];

#[test]
fn gemm_matches_reference_all_transposes() {
    for (g, variant) in setups() {
        for (i, &(m, n, k)) in GEMM_SIZES.iter().enumerate() {
            for t in 0..4 {
                let shape = GemmShape::new(m, n, k, t & 2 != 0, t & 1 != 0);
                check_gemm(&g, variant, shape, 10 * i as u64 + t as u64);
            }
        }
    }
}

#[test]
fn gemm_batched_and_accumulating() {
    for (g, variant) in setups() {
        for &(m, n, k) in &GEMM_SIZES[2..6] {
            let shape = GemmShape {
                batch: 3,
                accumulate: true,
                ..GemmShape::new(m, n, k, false, true)
            };
            check_gemm(&g, variant, shape, 7);
            check_gemm(
                &g,
                variant,
                GemmShape {
                    batch: 2,
                    ..GemmShape::new(m, n, k, true, false)
                },
                8,
            );
        }
    }
}

#[test]
fn gemm_vec4_views_all_transposes_and_edges() {
    // Every dimension a multiple of 4 (the vec4 loads), with edge tiles, steps past the end of
    // the last chunk (k % 8 == 4) and batches; the last shape fills the GPU engine's 128×128
    // tile (its B view with K-steps of 8).
    for (g, variant) in setups() {
        let sizes = [(68, 516, 12), (4, 4, 4), (132, 8, 36), (132, 136, 20)];
        for (i, &(m, n, k)) in sizes.iter().enumerate() {
            for t in 0..4 {
                let shape = GemmShape {
                    batch: 2,
                    accumulate: t == 1 || t == 2,
                    ..GemmShape::new(m, n, k, t & 2 != 0, t & 1 != 0)
                };
                check_gemm(&g, variant, shape, 40 + 10 * i as u64 + t as u64);
            }
        }
    }
}

#[test]
fn gemm_long_reductions() {
    // Long reductions run past the loop-iteration limits of software adapters when the inner
    // loops are not unrolled.
    let g = cpu_engine();
    for variant in variants() {
        check_gemm(&g, variant, GemmShape::new(3, 5, 20_001, false, false), 11);
        check_gemm(&g, variant, GemmShape::new(2, 9, 4_000, true, true), 12);
        // Dimensions that are multiples of 4 take the vec4 loads (and a reduction of 20 000).
        check_gemm(&g, variant, GemmShape::new(4, 12, 20_000, false, false), 13);
        check_gemm(&g, variant, GemmShape::new(8, 4, 4_004, true, true), 14);
    }
    // The GPU engine spends more loop iterations per step: its budget is a 16th.
    let gg = gpu().with_engine(Engine::Gpu);
    let gpu_limit = gg.kernel_config().reduction_limit(Engine::Gpu);
    if let Some(limit) = gpu_limit {
        assert_eq!(limit, gemm::MAX_REDUCTION / 16);
    }
    check_gemm(
        &gg,
        Variant::Portable,
        GemmShape::new(3, 5, 16_001, false, false),
        15,
    );
    check_gemm(
        &gg,
        Variant::Portable,
        GemmShape::new(2, 9, 4_000, true, true),
        16,
    );
    let cpu_limit = g.kernel_config().reduction_limit(Engine::Cpu);
    for (g, limit) in [(g, cpu_limit), (gg, gpu_limit)] {
        let Some(limit) = limit else { continue };
        let t = g.zeros("t", &[limit + 1]).unwrap();
        let mut e = g.encoder("test");
        let shape = GemmShape::new(1, 1, limit + 1, false, false);
        let one = g.zeros("one", &[1]).unwrap();
        let err = gemm::gemm(&g, &mut e, Variant::Portable, &shape, &t, &t, &one);
        assert!(matches!(err, Err(Error::Limit { .. })), "{err:?}");
    }
}

#[test]
fn gemm_beyond_65535_workgroups_uses_a_2d_grid() {
    // 65 537 row tiles: more than one grid dimension holds.
    let g = cpu_engine();
    let tile_rows = gemm::CpuTile::choose(u32::MAX, 1, gemm::TILE_N).rows as usize;
    let shape = GemmShape::new(tile_rows * 65_536 + 5, 1, 1, false, false);
    check_gemm(&g, Variant::best(&g), shape, 3);
    // The GPU engine's tile for one column has TALL's rows.
    let g = gpu().with_engine(Engine::Gpu);
    let rows = TileShape::TALL.bm as usize * 65_536 + 5;
    check_gemm(
        &g,
        Variant::Portable,
        GemmShape::new(rows, 1, 1, false, false),
        4,
    );
}

fn conv_shapes() -> Vec<Conv2dShape> {
    let shape = Conv2dShape::square;
    vec![
        shape(1, 1, 5, 5, 1, 3, 1),
        shape(2, 3, 7, 9, 5, 3, 1),
        shape(1, 4, 11, 6, 33, 5, 0),
        shape(3, 17, 5, 5, 7, 3, 1),
        shape(2, 5, 13, 12, 40, 5, 0),
        shape(1, 9, 8, 8, 70, 3, 1),
        shape(4, 2, 6, 7, 3, 5, 0),
        // c_in·k·k and h_out·w_out multiples of 4: the vec4 views of the weights and of dy.
        shape(2, 8, 8, 8, 68, 3, 1),
        // Output rows of 8 and source rows of a multiple of 4: the vec4 view of the source (x
        // in forward, dy in backward data), with every shift of the taps within a vec4.
        shape(2, 4, 12, 12, 8, 5, 0),
        shape(1, 3, 16, 16, 5, 5, 0),
        shape(2, 4, 16, 16, 12, 3, 1),
        // Weight rows of 27 taps (not 16-byte aligned) in kernel rows of three: VGG-7's first
        // layer in small, its last chunk of four kernel rows one row long.
        shape(2, 3, 16, 16, 4, 3, 1),
    ]
}

fn check_conv(g: &Gpu, variant: Variant, s: &Conv2dShape, seed: u64) {
    let x = uniform(seed, s.input().len(), -1.0, 1.0);
    let w = uniform(seed + 1, s.weight_len(), -1.0, 1.0);
    let dy = uniform(seed + 2, s.output().len(), -1.0, 1.0);
    let (tx, tw, tdy) = (upload(g, &x), upload(g, &w), upload(g, &dy));
    let y = g.zeros("y", &[s.output().len()]).unwrap();
    // dx accumulates onto these values.
    let dx0 = uniform(seed + 3, s.input().len(), -1.0, 1.0);
    let dx = upload(g, &dx0);
    let dw = g.zeros("dw", &[s.weight_len()]).unwrap();
    let scratch = g
        .zeros("scratch", &[conv::backward_scratch_len(g, s)])
        .unwrap();
    run(g, |e| {
        conv::conv2d_forward(g, e, variant, s, &tx, &tw, &y)?;
        conv::conv2d_backward_data(g, e, variant, s, &tdy, &tw, &dx, &scratch, true)?;
        conv::conv2d_backward_weight(g, e, variant, s, &tx, &tdy, &dw, &scratch)
    });
    let out = g.read_blocking(&[&y, &dx, &dw]).unwrap();
    let what = format!("{} engine {variant:?} {s:?}", g.engine());
    assert_close(
        &out[0],
        &reference::conv2d_forward(s, &x, &w, None),
        REL,
        &format!("forward {what}"),
    );
    assert_close(
        &out[1],
        &reference::conv2d_backward_data(s, &dy, &w)
            .iter()
            .zip(&dx0)
            .map(|(a, b)| a + b)
            .collect::<Vec<_>>(),
        REL,
        &format!("backward data {what}"),
    );
    assert_close(
        &out[2],
        &reference::conv2d_backward_weight(s, &x, &dy).0,
        REL,
        &format!("backward weight {what}"),
    );
}

#[test]
fn cpu_engine_narrow_tiles_match_reference() {
    let g = cpu_engine_with(true);
    let best = Variant::best(&g);
    // GEMMs and convolution passes that land on every narrow CpuTile shape, with rows and
    // columns left over in the last tile. Each shape compiles its own pipelines (seconds each
    // on a CPU adapter), so every case uses a different one and the portable variant, whose
    // shape-dependent code is the subgroup variant's, runs once.
    let gemms = [
        (5, 37, 19, false, false, best), // 16 rows, 8 lanes
        (5, 37, 19, false, false, Variant::Portable),
        (3, 500, 11, true, true, best), // 16 rows, 64 lanes (12 columns to spare either way)
        (20, 64, 9, false, true, best), // 32 rows, 8 lanes
        (29, 470, 13, true, false, best), // 32 rows, 64 lanes (42 to spare either way)
        (200, 60, 1100, false, false, best), // 32 rows, 8 lanes, seven row tiles
        (12, 40, 16, false, false, best), // 16 rows, 8 lanes, vec4 views
    ];
    let mut seen = std::collections::HashSet::new();
    for (i, (m, n, k, trans_a, trans_b, variant)) in gemms.into_iter().enumerate() {
        seen.insert(gemm::CpuTile::for_product(
            &g,
            m as u32,
            n as u32,
            gemm::TILE_N,
        ));
        let shape = GemmShape::new(m, n, k, trans_a, trans_b);
        check_gemm(&g, variant, shape, 900 + i as u64);
    }
    // Every narrow shape; 64 rows only with narrow tiles off.
    assert_eq!(seen.len(), gemm::CpuTile::ALL.len() - 2, "{seen:?}");
    assert!(seen.iter().all(|t| t.rows <= 32), "{seen:?}");
    // More than 16 rows take 32 per tile, however large the product.
    let rows = |m, n| gemm::CpuTile::choose(m, n, gemm::TILE_N).rows;
    assert_eq!([rows(16, 9), rows(17, 9), rows(45, 9)], [16, 32, 32]);
    assert_eq!(rows(512, 128 * 64), 32);
    // Columns go to 8-lane workgroups where they leave fewer columns of the last tile idle.
    let lanes = |n| gemm::CpuTile::choose(16, n, gemm::TILE_N).lanes;
    assert_eq!(
        [lanes(64), lanes(130), lanes(500), lanes(1152)],
        [8, 8, 64, 8]
    );
    assert_eq!([lanes(1024), lanes(4608)], [64, 64]);
    // Weight gradients over 3-tap kernel rows: 12 columns per lane, 8 lanes even on a tie.
    let lanes = |n| gemm::CpuTile::choose(16, n, gemm::ROW_LANE_COLS).lanes;
    assert_eq!([lanes(1152), lanes(2304), lanes(768)], [8, 8, 8]);
    let shape = Conv2dShape::square;
    // Forward 16×64, backward data 16×64, backward weight 16×8.
    check_conv(&g, best, &shape(2, 3, 16, 16, 5, 3, 1), 950);
    // Forward 32×8, backward data 32×8, backward weight 32×64.
    check_conv(&g, best, &shape(2, 56, 5, 5, 24, 3, 0), 951);
}

#[test]
fn conv_matches_reference() {
    for (g, variant) in setups() {
        for (i, s) in conv_shapes().iter().enumerate() {
            check_conv(&g, variant, s, 100 + i as u64);
        }
    }
}

/// A convolution with every size given.
#[allow(clippy::too_many_arguments)]
fn conv(
    n: usize,
    c_in: usize,
    [h, w]: [usize; 2],
    c_out: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    groups: usize,
) -> Conv2dShape {
    let s = Conv2dShape {
        n,
        c_in,
        h,
        w,
        c_out,
        kernel,
        stride,
        pad,
        groups,
    };
    assert_eq!(s.check(), Ok(()), "{s:?}");
    s
}

/// Strided, grouped, depthwise and rectangular convolutions, with odd sizes, `pad >= k`, channel
/// counts that fill no tile, and the shapes that take the vec4 views with strides and groups.
fn general_conv_shapes() -> Vec<Conv2dShape> {
    vec![
        // Stride 2 on odd sizes.
        conv(3, 3, [9, 7], 5, [3, 3], [2, 2], [1, 1], 1),
        // A 1×1 stride-2 projection.
        conv(1, 6, [7, 9], 10, [1, 1], [2, 2], [0, 0], 1),
        // Two groups; depthwise; depthwise with stride 2.
        conv(3, 4, [6, 5], 6, [3, 3], [1, 1], [1, 1], 2),
        conv(1, 5, [7, 6], 5, [3, 3], [1, 1], [1, 1], 5),
        conv(3, 8, [9, 9], 8, [3, 3], [2, 2], [1, 1], 8),
        // 1×3 and 3×1 kernels with per-axis stride and padding.
        conv(1, 3, [6, 9], 4, [1, 3], [1, 2], [0, 1], 1),
        conv(3, 4, [9, 5], 7, [3, 1], [2, 1], [1, 0], 1),
        // Padding at least the kernel, strides 2 and 3, groups 3.
        conv(1, 3, [4, 5], 6, [2, 3], [2, 3], [3, 2], 3),
        // c_out not a multiple of any tile, grouped and strided.
        conv(1, 4, [10, 10], 70, [3, 3], [2, 2], [1, 1], 2),
        // vec4 views of the weights and of x (forward, weight gradient) with a vertical stride.
        conv(2, 4, [9, 16], 12, [3, 3], [2, 1], [1, 1], 1),
        // vec4 views with two groups (dy read as vec4 in backward data).
        conv(2, 8, [8, 16], 6, [3, 3], [1, 1], [1, 1], 2),
        // Kernel rows of three taps (ROWS3) that are not 3×3: 1×3 (every row a new channel) in
        // all three passes; 5×3 forward and weight gradient.
        conv(2, 4, [5, 16], 8, [1, 3], [1, 1], [0, 1], 1),
        conv(1, 4, [7, 8], 5, [5, 3], [1, 1], [2, 1], 1),
        // Weight rows not 16-byte aligned, read through the vec4 view (A_UNALIGNED) in the
        // forward: 27 taps over 12 channels (rows of every shift), 25 taps of one channel, and
        // two groups of 27 (the second group's weights start unaligned) with a vertical stride.
        conv(2, 3, [8, 16], 12, [3, 3], [1, 1], [1, 1], 1),
        conv(2, 1, [12, 12], 4, [5, 5], [1, 1], [0, 0], 1),
        conv(1, 6, [5, 16], 4, [3, 3], [2, 1], [1, 1], 2),
    ]
}

#[test]
fn general_conv_matches_reference() {
    for (g, variant) in setups() {
        for (i, s) in general_conv_shapes().iter().enumerate() {
            check_conv(&g, variant, s, 400 + i as u64);
        }
    }
}

/// Backward data that visits only the taps reading `dy` (tap-major, CPU engine): `dy` planes of
/// a multiple of 4 positions, `dx` rows that are not vec4-aligned, channels per group a multiple
/// of 8, enough images per position. Images not a multiple of the tile's 64 (the last tile's
/// padding images read, never stored), two groups with a negative backward padding, and
/// LeNet-5 conv2's geometry.
#[test]
fn tap_major_backward_data_matches_reference() {
    let shapes = [
        conv(56, 4, [6, 6], 8, [3, 3], [1, 1], [1, 1], 1),
        conv(64, 6, [5, 4], 16, [2, 3], [1, 1], [3, 2], 2),
        conv(48, 3, [12, 12], 8, [5, 5], [1, 1], [0, 0], 1),
    ];
    for variant in variants() {
        for (i, s) in shapes.iter().enumerate() {
            check_conv(&cpu_engine(), variant, s, 600 + i as u64);
        }
    }
}

/// The reduction's last chunk runs past the taps (27 in chunks of 8): those steps read the
/// next image's first channel with a zero weight. A NaN there must not reach this image
/// (0 · NaN is NaN), on the vec4 paths (rows of 16) and the scalar one (rows of 12).
#[test]
fn a_nan_in_one_image_stays_in_it() {
    for (g, variant) in setups() {
        for w in [16, 12] {
            let s = conv(2, 3, [6, w], 4, [3, 3], [1, 1], [1, 1], 1);
            let mut x = uniform(70, s.input().len(), -1.0, 1.0);
            let image = s.input().len() / 2;
            x[image..image + 6 * w].fill(f32::NAN);
            let weights = uniform(71, s.weight_len(), -1.0, 1.0);
            let (tx, tw) = (upload(&g, &x), upload(&g, &weights));
            let y = g.zeros("y", &[s.output().len()]).unwrap();
            run(&g, |e| {
                conv::conv2d_forward(&g, e, variant, &s, &tx, &tw, &y)
            });
            let out = g.read_blocking(&[&y]).unwrap().remove(0);
            let first = s.output().len() / 2;
            let expected = reference::conv2d_forward(&s, &x, &weights, None);
            let what = format!("{} engine {variant:?} {s:?}", g.engine());
            assert_close(&out[..first], &expected[..first], REL, &what);
        }
    }
}

#[test]
fn grouped_strided_backward_weight_with_many_splits() {
    let s = conv(16, 4, [8, 7], 6, [3, 2], [2, 1], [1, 0], 2);
    for g in [cpu_engine(), gpu().with_engine(Engine::Gpu)] {
        assert!(conv::backward_weight_splits(&g, &s).0 > 1, "{}", g.engine());
        check_conv(&g, Variant::best(&g), &s, 6);
    }
}

#[test]
fn conv_backward_weight_with_many_splits_is_deterministic() {
    // 16 images of 8×8: several splits, summed in a fixed order.
    let s = Conv2dShape::square(16, 3, 8, 8, 6, 3, 1);
    for g in [cpu_engine(), gpu().with_engine(Engine::Gpu)] {
        let g = &g;
        assert!(conv::backward_weight_splits(g, &s).0 > 1);
        check_conv(g, Variant::best(g), &s, 5);
        let x = upload(g, &uniform(1, s.input().len(), -1.0, 1.0));
        let dy = upload(g, &uniform(2, s.output().len(), -1.0, 1.0));
        let scratch = g
            .zeros("scratch", &[backward_weight_scratch_len(g, &s)])
            .unwrap();
        let results: Vec<Vec<f32>> = (0..2)
            .map(|_| {
                let dw = g.zeros("dw", &[s.weight_len()]).unwrap();
                run(g, |e| {
                    let v = Variant::best(g);
                    conv::conv2d_backward_weight(g, e, v, &s, &x, &dy, &dw, &scratch)
                });
                g.read(&dw).unwrap()
            })
            .collect();
        assert_eq!(results[0], results[1], "{} engine", g.engine());
    }
}

#[test]
fn portable_variant_on_a_device_without_subgroups() {
    // The GPU engine uses no subgroup operations: it runs here with either variant argument.
    let gg = portable_gpu().with_engine(Engine::Gpu);
    for (i, s) in conv_shapes().iter().enumerate().step_by(3) {
        check_conv(&gg, Variant::Subgroup, s, 300 + i as u64);
    }
    check_gemm(
        &gg,
        Variant::Subgroup,
        GemmShape::new(65, 100, 33, false, true),
        3,
    );
    let g = &portable_gpu().with_engine(Engine::Cpu);
    assert!(!g.has_subgroups());
    assert_eq!(Variant::best(g), Variant::Portable);
    check_gemm(
        g,
        Variant::Portable,
        GemmShape::new(65, 100, 33, false, true),
        1,
    );
    check_gemm(
        g,
        Variant::Portable,
        GemmShape::new(7, 33, 65, true, false),
        2,
    );
    for (i, s) in conv_shapes().iter().enumerate().skip(1).step_by(2) {
        check_conv(g, Variant::Portable, s, 200 + i as u64);
    }
    let t = g.zeros("t", &[1]).unwrap();
    let mut e = g.encoder("test");
    let err = gemm::gemm(
        g,
        &mut e,
        Variant::Subgroup,
        &GemmShape::new(1, 1, 1, false, false),
        &t,
        &t,
        &t,
    );
    assert!(matches!(err, Err(Error::InvalidArgument { .. })), "{err:?}");
}

/// The value of a `const` of the engine's WGSL.
fn wgsl_const(module: &naga::Module, name: &str) -> u32 {
    let (_, c) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no const {name}"));
    match module.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v,
        ref other => panic!("{name} is {other:?}"),
    }
}

#[test]
fn host_tile_constants_match_the_shader() {
    // Needs no GPU: the tile the launchers assume is one the shader can hold.
    for shader in [
        &gemm::SUBGROUP_SHADER,
        &gemm::SUBGROUP_A4_SHADER,
        &gemm::SUBGROUP_A4B4_SHADER,
        &gemm::PORTABLE_SHADER,
        &gemm::PORTABLE_A4_SHADER,
        &gemm::PORTABLE_A4B4_SHADER,
    ] {
        let module = naga::front::wgsl::parse_str(shader.source).expect("parses");
        assert_eq!(wgsl_const(&module, "CHUNK"), gemm::CHUNK);
        assert!(gemm::TILE_M.is_multiple_of(4) && gemm::TILE_M <= wgsl_const(&module, "MAX_TM"));
        for tn in [gemm::TILE_N, gemm::ROW_LANE_COLS] {
            assert!(tn.is_multiple_of(4) && tn <= wgsl_const(&module, "MAX_TN"));
        }
        let sum = module
            .entry_points
            .iter()
            .find(|ep| ep.name == "sum_splits")
            .expect("sum_splits");
        assert_eq!(sum.workgroup_size, [conv::SUM_WORKGROUP, 1, 1]);
    }
    let max_tm = wgsl_const(
        &naga::front::wgsl::parse_str(gemm::SUBGROUP_SHADER.source).expect("parses"),
        "MAX_TM",
    );
    for tile in gemm::CpuTile::ALL {
        assert!(
            tile.rows.is_multiple_of(gemm::CHUNK) && tile.rows <= max_tm,
            "{tile:?}"
        );
    }
    // Every CPU-engine tile pipeline carries the constants of one CpuTile shape.
    for key in gemm::pipelines().into_iter().chain(conv::PIPELINES) {
        if key.entry == "tiles" {
            let constant = |name| key.constants.iter().find(|c| c.0 == name).map(|c| c.1);
            let tile = gemm::CpuTile {
                rows: constant("TM").expect("TM"),
                lanes: constant("WG").expect("WG"),
            };
            assert!(gemm::CpuTile::ALL.contains(&tile), "{key:?}");
        }
    }
    // The GPU engine: every row of pipelines carries its tile's constants, and sum_splits the
    // host's workgroup size.
    let module = naga::front::wgsl::parse_str(tiles_gpu::SHADER.source).expect("parses");
    let sum = module
        .entry_points
        .iter()
        .find(|ep| ep.name == "sum_splits")
        .expect("sum_splits");
    assert_eq!(sum.workgroup_size, [tiles_gpu::SUM_WORKGROUP, 1, 1]);
    for (tile, row) in tiles_gpu::TILES.iter().zip(&tiles_gpu::PIPELINES) {
        assert!(tile.is_valid(), "{tile}");
        for key in row {
            for (name, value) in [
                ("BM", tile.bm),
                ("BN", tile.bn),
                ("BK", tile.bk),
                ("TM", tile.tm),
                ("TN", tile.tn),
                ("WG", tile.workgroup()),
                ("A_LEN", tile.a_len()),
                ("B_LEN", tile.b_len()),
            ] {
                assert!(key.constants.contains(&(name, value)), "{name} {key:?}");
            }
        }
    }
}

#[test]
fn engines_list_their_pipelines() {
    use bayesian_bits::kernels;
    let cpu = kernels::pipelines_for(Engine::Cpu);
    let gpu_keys = kernels::pipelines_for(Engine::Gpu);
    let all = kernels::pipelines();
    // The union, and the elementwise kernels in both.
    assert_eq!(
        all.len(),
        cpu.len() + gpu_keys.len()
            - kernels::quant::PIPELINES.len()
            - kernels::pool::PIPELINES.len()
            - kernels::elementwise::PIPELINES.len()
            - kernels::loss::PIPELINES.len()
            - kernels::optim::PIPELINES.len()
            - kernels::bn::PIPELINES.len()
            - kernels::epilogue::PIPELINES.len()
            - kernels::int_infer::PIPELINES.len()
            - kernels::range::PIPELINES.len()
    );
    for key in cpu.iter().chain(&gpu_keys) {
        assert!(all.contains(key), "{key:?}");
    }
    for key in kernels::quant::PIPELINES
        .iter()
        .chain(&kernels::bn::PIPELINES)
    {
        assert!(cpu.contains(key) && gpu_keys.contains(key), "{key:?}");
    }
    // Neither engine's tile pipelines are in the other's list.
    assert!(gpu_keys.iter().all(|k| !gemm::pipelines().contains(k)));
    assert!(cpu.iter().all(|k| k.shader.name != tiles_gpu::SHADER.name));
    for row in &tiles_gpu::PIPELINES {
        for key in row {
            assert!(gpu_keys.contains(&key), "{key:?}");
        }
    }
}

#[test]
fn bad_shapes_are_typed_errors() {
    for g in [cpu_engine(), gpu().with_engine(Engine::Gpu)] {
        bad_shapes(&g);
    }
}

fn bad_shapes(g: &Gpu) {
    let v = Variant::best(g);
    let t = g.zeros("t", &[10]).unwrap();
    let mut e = g.encoder("test");
    let err = gemm::gemm(
        g,
        &mut e,
        v,
        &GemmShape::new(2, 2, 2, false, false),
        &t,
        &t,
        &t,
    );
    assert!(matches!(err, Err(Error::Shape { .. })), "{err:?}");
    // Padding at least the kernel is a valid shape: the tensors are what is wrong.
    let s = Conv2dShape::square(1, 1, 4, 4, 1, 3, 3);
    let err = conv::conv2d_forward(g, &mut e, v, &s, &t, &t, &t);
    assert!(matches!(err, Err(Error::Shape { .. })), "{err:?}");
    let s = Conv2dShape {
        kernel: [7, 7],
        pad: [1, 1],
        ..s
    };
    let err = conv::conv2d_backward_data(g, &mut e, v, &s, &t, &t, &t, &t, false);
    assert!(matches!(err, Err(Error::InvalidArgument { .. })), "{err:?}");
    let s = Conv2dShape {
        kernel: [3, 3],
        pad: [1, 1],
        ..s
    };
    let err = conv::conv2d_backward_weight(g, &mut e, v, &s, &t, &t, &t, &t);
    assert!(matches!(err, Err(Error::Shape { .. })), "{err:?}");
    // The CPU engine's backward data names a scratch tensor too small for the rotated weights.
    let s = Conv2dShape::square(1, 2, 4, 4, 3, 3, 1);
    if backward_data_scratch_len(g, &s) > t.len() {
        let x = g.zeros("x", &[s.input().len()]).unwrap();
        let w = g.zeros("w", &[s.weight_len()]).unwrap();
        let y = g.zeros("y", &[s.output().len()]).unwrap();
        match conv::conv2d_backward_data(g, &mut e, v, &s, &y, &w, &x, &t, false) {
            Err(Error::Shape { expected, .. }) => {
                assert!(expected.contains("scratch"), "{expected}")
            }
            other => panic!("{other:?}"),
        }
    }
    // Shapes Conv2dShape::check rejects, with tensors of the right lengths: groups that do not
    // divide the channels, no groups, a zero stride, a kernel wider than the padded input.
    let invalid = [
        Conv2dShape::square(1, 6, 4, 4, 4, 3, 1).with_groups(4),
        Conv2dShape::square(1, 8, 4, 4, 8, 3, 1).with_groups(0),
        Conv2dShape::square(1, 2, 4, 4, 2, 3, 1).with_stride(0),
        Conv2dShape {
            kernel: [1, 5],
            pad: [0, 0],
            ..Conv2dShape::square(1, 1, 4, 4, 1, 1, 0)
        },
    ];
    for s in invalid {
        // Sizing the scratch of a shape that will be refused does not panic.
        conv::backward_scratch_len(g, &s);
        let x = g.zeros("x", &[s.input().len()]).unwrap();
        let w = g
            .zeros("w", &[s.c_out * s.kernel[0] * s.kernel[1] * 6])
            .unwrap();
        let y = g.zeros("y", &[s.n * s.c_out * s.h * s.w]).unwrap();
        let errs = [
            conv::conv2d_forward(g, &mut e, v, &s, &x, &w, &y),
            conv::conv2d_backward_data(g, &mut e, v, &s, &y, &w, &x, &t, false),
            conv::conv2d_backward_weight(g, &mut e, v, &s, &x, &y, &w, &t),
        ];
        for err in errs {
            match err {
                Err(Error::InvalidArgument { op, msg }) => {
                    assert!(
                        op.starts_with("conv2d") && msg.contains("Conv2dShape"),
                        "{msg}"
                    )
                }
                other => panic!("{s:?}: {other:?}"),
            }
        }
    }
    // A valid shape whose padding lies beyond the shaders' wrapping coordinates.
    let s = Conv2dShape {
        stride: [1 << 32, 1],
        pad: [1 << 31, 0],
        ..Conv2dShape::square(1, 1, 1, 1, 1, 1, 0)
    };
    let one = g.zeros("one", &[1]).unwrap();
    let err = conv::conv2d_forward(g, &mut e, v, &s, &one, &one, &one);
    assert!(matches!(err, Err(Error::Limit { .. })), "{err:?}");
}
