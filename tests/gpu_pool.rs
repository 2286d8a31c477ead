//! Max and average pooling, global average pooling, the residual add and the gradient
//! accumulation on the GPU against the CPU reference, on awkward shapes: odd sizes, overlapping
//! windows, padding, 1×1 outputs, batches of 1 and 3.

mod common;

use bayesian_bits::gpu::{Encoder, Tensor};
use bayesian_bits::kernels::elementwise::{self, Add};
use bayesian_bits::kernels::pool::{self, AvgPool2d, MaxPool2d, MaxPool2x2};
use bayesian_bits::reference::layers as reference;
use bayesian_bits::spec::Pool2dShape;
use bayesian_bits::Error;
use common::{assert_close, gpu, uniform};

fn upload(data: &[f32]) -> Tensor {
    gpu().upload("test", &[data.len()], data).unwrap()
}

fn zeros(len: usize) -> Tensor {
    gpu().zeros("test", &[len]).unwrap()
}

fn run(record: impl FnOnce(&mut Encoder)) {
    let mut encoder = gpu().encoder("test");
    record(&mut encoder);
    gpu().submit(encoder);
}

fn read(t: &Tensor) -> Vec<f32> {
    gpu().read(t).unwrap()
}

/// Odd sizes, overlapping 3/2 windows with padding 1, stride 1 (every input in up to nine
/// windows), a rectangular window, 2×2 windows dropping an odd row, and 1×1 outputs.
fn shapes() -> Vec<Pool2dShape> {
    vec![
        Pool2dShape::square(1, 3, 7, 5, 3, 2, 1),
        Pool2dShape::square(3, 2, 9, 8, 3, 2, 1),
        Pool2dShape::square(1, 2, 6, 5, 3, 1, 1),
        Pool2dShape {
            kernel: [2, 3],
            stride: [1, 2],
            pad: [1, 1],
            ..Pool2dShape::square(3, 1, 4, 7, 1, 1, 0)
        },
        Pool2dShape::square(3, 5, 5, 4, 2, 2, 0),
        Pool2dShape::square(1, 4, 3, 3, 3, 3, 0),
        // Windows that tile the input exactly: the backward scatters one window per thread
        // instead of gathering; 2×2 windows over rows of a multiple of 4 (LeNet-5's and
        // VGG-7's pools) go two windows per thread through vec4 views, forward and backward.
        Pool2dShape::square(2, 3, 6, 4, 2, 2, 0),
        Pool2dShape::square(2, 3, 8, 12, 2, 2, 0),
        Pool2dShape::square(2, 2, 4, 6, 2, 2, 0),
        Pool2dShape::square(1, 2, 6, 9, 3, 3, 0),
        Pool2dShape::square(3, 2, 2, 2, 3, 2, 1),
    ]
}

#[test]
fn maxpool_matches_reference_with_ties_and_overlaps() {
    let g = gpu();
    for (seed, s) in shapes().into_iter().enumerate() {
        let seed = seed as u64;
        // Three distinct values: many windows tie, and overlapping windows pick the same input,
        // whose gradient then sums several outputs.
        let x: Vec<f32> = uniform(seed, s.input().len(), 0.0, 3.0)
            .iter()
            .map(|v| v.floor())
            .collect();
        let (y_ref, argmax_ref) = reference::maxpool2d_forward(&s, &x);
        let dy = uniform(seed + 100, y_ref.len(), -1.0, 1.0);
        let dx_ref = reference::maxpool2d_backward(x.len(), &argmax_ref, &dy);
        let pool = MaxPool2d::new(g, &s).unwrap();
        assert_eq!(pool.output_len(), y_ref.len(), "{s:?}");
        let (xt, dyt) = (upload(&x), upload(&dy));
        let (yt, it) = (zeros(y_ref.len()), zeros(y_ref.len()));
        // dx starts non-zero: the backward must write every element.
        let dxt = upload(&vec![7.0; x.len()]);
        run(|enc| {
            pool.forward(g, enc, &xt, &yt, &it).unwrap();
            pool.backward(g, enc, &dyt, &it, &dxt).unwrap();
        });
        assert_eq!(read(&yt), y_ref, "y {s:?}");
        assert_eq!(g.read_u32(&it).unwrap(), argmax_ref, "argmax {s:?}");
        // Same sums in the same order: equal to the bit.
        assert_eq!(read(&dxt), dx_ref, "dx {s:?}");
    }
}

#[test]
fn maxpool2x2_is_the_general_special_case() {
    let g = gpu();
    let pool = MaxPool2x2::new(g, 3, 2, 5, 7).unwrap();
    assert_eq!(pool.shape(), &Pool2dShape::square(3, 2, 5, 7, 2, 2, 0));
    let s = bayesian_bits::spec::Nchw::new(3, 2, 5, 7);
    let x = uniform(9, s.len(), -1.0, 1.0);
    let (y_ref, argmax_ref) = reference::maxpool2x2_forward(&s, &x);
    let (xt, yt, it) = (upload(&x), zeros(y_ref.len()), zeros(y_ref.len()));
    run(|enc| pool.forward(g, enc, &xt, &yt, &it).unwrap());
    assert_eq!(read(&yt), y_ref);
    assert_eq!(g.read_u32(&it).unwrap(), argmax_ref);
}

fn check_avgpool(pool: &AvgPool2d, seed: u64) {
    let g = gpu();
    let s = *pool.shape();
    let x = uniform(seed, s.input().len(), -2.0, 2.0);
    let y_ref = reference::avgpool2d_forward(&s, &x);
    let dy = uniform(seed + 100, y_ref.len(), -1.0, 1.0);
    let dx_ref = reference::avgpool2d_backward(&s, &dy);
    assert_eq!(pool.output_len(), y_ref.len(), "{s:?}");
    let (xt, dyt, yt) = (upload(&x), upload(&dy), zeros(y_ref.len()));
    let dxt = upload(&vec![7.0; x.len()]);
    run(|enc| {
        pool.forward(g, enc, &xt, &yt).unwrap();
        pool.backward(g, enc, &dyt, &dxt).unwrap();
    });
    // The same sums in the same order; WGSL division may be off by an ulp or two.
    assert_close(&read(&yt), &y_ref, 1e-6, &format!("avg y {s:?}"));
    assert_close(&read(&dxt), &dx_ref, 1e-6, &format!("avg dx {s:?}"));
}

#[test]
fn avgpool_matches_reference() {
    for (seed, s) in shapes().into_iter().enumerate() {
        check_avgpool(&AvgPool2d::new(gpu(), &s).unwrap(), seed as u64);
    }
}

#[test]
fn global_avgpool_matches_reference() {
    for (seed, (n, c, h, w)) in [(1, 5, 7, 7), (3, 4, 7, 7), (1, 3, 1, 1), (3, 6, 1, 1)]
        .into_iter()
        .enumerate()
    {
        let pool = AvgPool2d::global(gpu(), n, c, h, w).unwrap();
        assert_eq!(pool.output_len(), n * c);
        check_avgpool(&pool, 20 + seed as u64);
    }
}

#[test]
fn residual_add_and_accumulate_match_reference() {
    let g = gpu();
    for (seed, len) in [1usize, 255, 1027, 4099].into_iter().enumerate() {
        let seed = 40 + 3 * seed as u64;
        let (a, b, d) = (
            uniform(seed, len, -1.0, 1.0),
            uniform(seed + 1, len, -1.0, 1.0),
            uniform(seed + 2, len, -1.0, 1.0),
        );
        let add = Add::new(g, len).unwrap();
        let (at, bt, dt) = (upload(&a), upload(&b), upload(&d));
        let yt = upload(&vec![7.0; len]);
        run(|enc| {
            add.forward(g, enc, &at, &bt, &yt).unwrap();
            add.accumulate(g, enc, &at, &dt).unwrap();
        });
        assert_eq!(read(&yt), reference::add_forward(&a, &b), "add {len}");
        let mut d_ref = d.clone();
        reference::accumulate(&mut d_ref, &a);
        assert_eq!(read(&dt), d_ref, "accumulate {len}");
    }
}

#[test]
fn bad_shapes_and_lengths_are_errors() {
    let g = gpu();
    let shape_error =
        |r: Result<(), Error>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    for s in [
        Pool2dShape::square(1, 1, 2, 2, 3, 1, 0), // window larger than the input
        Pool2dShape::square(1, 1, 4, 4, 3, 1, 2), // padding over half the window
        Pool2dShape::square(1, 0, 4, 4, 2, 2, 0), // no channels
        Pool2dShape::square(1, 1, 4, 4, 2, 0, 0), // stride 0
        Pool2dShape::square(0, 1, 4, 4, 2, 2, 0), // empty batch
    ] {
        shape_error(MaxPool2d::new(g, &s).map(drop));
        shape_error(AvgPool2d::new(g, &s).map(drop));
    }
    shape_error(MaxPool2x2::new(g, 1, 1, 1, 4).map(drop));
    shape_error(AvgPool2d::global(g, 1, 1, 0, 3).map(drop));
    shape_error(Add::new(g, 0).map(drop));

    let mut enc = g.encoder("errors");
    // 2 planes of 5×5 → 3×3 outputs: 50 inputs, 18 outputs.
    let s = Pool2dShape::square(1, 2, 5, 5, 3, 2, 1);
    let (max, avg) = (
        MaxPool2d::new(g, &s).unwrap(),
        AvgPool2d::new(g, &s).unwrap(),
    );
    let (t18, t50, t49) = (zeros(18), zeros(50), zeros(49));
    shape_error(max.forward(g, &mut enc, &t49, &t18, &t18));
    shape_error(max.forward(g, &mut enc, &t50, &t50, &t18));
    shape_error(max.forward(g, &mut enc, &t50, &t18, &t49));
    shape_error(max.backward(g, &mut enc, &t18, &t18, &t49));
    shape_error(max.backward(g, &mut enc, &t50, &t18, &t50));
    shape_error(avg.forward(g, &mut enc, &t50, &t49));
    shape_error(avg.backward(g, &mut enc, &t18, &t49));
    let add = Add::new(g, 18).unwrap();
    shape_error(add.forward(g, &mut enc, &t18, &t49, &t18));
    shape_error(add.forward(g, &mut enc, &t18, &t18, &t50));
    shape_error(add.accumulate(g, &mut enc, &t49, &t18));
    // The correct lengths record.
    max.forward(g, &mut enc, &t50, &t18, &t18).unwrap();
    avg.backward(g, &mut enc, &t18, &t50).unwrap();
}

#[test]
fn host_constants_match_the_shaders() {
    for (shader, workgroup) in [
        (&pool::SHADER, pool::WORKGROUP),
        (&elementwise::SHADER, elementwise::WORKGROUP),
    ] {
        let module = naga::front::wgsl::parse_str(shader.source).expect("parses");
        for ep in &module.entry_points {
            assert_eq!(ep.workgroup_size, [workgroup, 1, 1], "{}", ep.name);
        }
    }
}
