//! The layer kernels (max-pool, softmax cross-entropy, Adam, SGD, folded BN, fused epilogue) on the
//! GPU against the CPU reference, on awkward sizes; reductions must rerun bit for bit.

mod common;

use bayesian_bits::gpu::{Binding, Encoder, Tensor};
use bayesian_bits::kernels::bn::{BnBackward, BnBindings, FoldBackward, FoldedBn};
use bayesian_bits::kernels::channels::{self, ChannelLayout};
use bayesian_bits::kernels::epilogue::{
    ActQuant, Activation, Epilogue, EpilogueBackward, EpilogueConfig, EpilogueForward,
};
use bayesian_bits::kernels::loss::{Metrics, SoftmaxCrossEntropy};
use bayesian_bits::kernels::optim::{AdamGroup, Optimizer, ParamArena, ParamSlice};
use bayesian_bits::kernels::pool::MaxPool2x2;
use bayesian_bits::kernels::{self, optim, pool};
use bayesian_bits::quant::{Quantizer, QuantizerConfig};
use bayesian_bits::reference::layers::{
    self as reference, AdamState, BnParams, SgdConfig, SgdState,
};
use bayesian_bits::reference::quant;
use bayesian_bits::spec::{LinearShape, Nchw};
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

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// A packed weights group holding `data` (after a one-word spacer, so no tensor sits at
/// offset 0), with the gradient buffer set to `grads` (zeros where `None`).
fn group_with(data: &[&[f32]], grads: &[Option<&[f32]>]) -> (AdamGroup, Vec<ParamSlice>) {
    let g = gpu();
    let mut arena = ParamArena::new(g);
    arena.push(1).unwrap();
    let slices: Vec<ParamSlice> = data.iter().map(|d| arena.push(d.len()).unwrap()).collect();
    let group = arena.build(g, "test").unwrap();
    let mut all_grads = vec![0.0; group.grads().len()];
    for ((s, d), gr) in slices.iter().zip(data).zip(grads) {
        group.write(g, *s, d).unwrap();
        if let Some(gr) = gr {
            all_grads[s.offset..s.offset + s.len].copy_from_slice(gr);
        }
    }
    g.write(group.grads(), &all_grads).unwrap();
    (group, slices)
}

#[test]
fn host_constants_match_the_shaders() {
    let checks = [
        (&kernels::pool::SHADER, pool::WORKGROUP),
        (&kernels::optim::SHADER, optim::WORKGROUP),
        (&kernels::bn::SHADER, channels::WORKGROUP),
        (&kernels::epilogue::SHADER, channels::WORKGROUP),
    ];
    for (shader, workgroup) in checks {
        let module = naga::front::wgsl::parse_str(shader.source).expect("parses");
        for ep in &module.entry_points {
            assert_eq!(
                ep.workgroup_size,
                [workgroup, 1, 1],
                "{}::{}",
                shader.name,
                ep.name
            );
        }
    }
}

#[test]
fn maxpool_matches_reference_with_ties() {
    let g = gpu();
    for (seed, (n, c, h, w)) in [(1, 1, 2, 2), (1, 3, 7, 5), (2, 5, 8, 9), (3, 17, 33, 31)]
        .into_iter()
        .enumerate()
    {
        let s = Nchw::new(n, c, h, w);
        // Four distinct values: many windows hold ties.
        let x: Vec<f32> = uniform(seed as u64, s.len(), 0.0, 4.0)
            .iter()
            .map(|v| v.floor())
            .collect();
        let (y_ref, argmax_ref) = reference::maxpool2x2_forward(&s, &x);
        let pool = MaxPool2x2::new(g, n, c, h, w).unwrap();
        assert_eq!(pool.output_len(), y_ref.len());
        let dy = uniform(seed as u64 + 50, y_ref.len(), -1.0, 1.0);
        let (xt, dyt) = (upload(&x), upload(&dy));
        let (yt, it) = (zeros(y_ref.len()), zeros(y_ref.len()));
        // dx starts non-zero: the backward must write every element.
        let dxt = upload(&vec![7.0; s.len()]);
        run(|enc| {
            pool.forward(g, enc, &xt, &yt, &it).unwrap();
            pool.backward(g, enc, &dyt, &it, &dxt).unwrap();
        });
        assert_eq!(read(&yt), y_ref, "y {s:?}");
        assert_eq!(g.read_u32(&it).unwrap(), argmax_ref, "argmax {s:?}");
        let dx_ref = reference::maxpool2x2_backward(s.len(), &argmax_ref, &dy);
        assert_eq!(read(&dxt), dx_ref, "dx {s:?}");
    }
}

#[test]
fn softmax_cross_entropy_matches_reference_and_accumulates_metrics() {
    let g = gpu();
    let metrics = Metrics::new(g).unwrap();
    let (mut loss_sum, mut correct, mut examples) = (0.0f64, 0, 0);
    let cases = [(1, 10), (37, 10), (300, 3), (5, 1)];
    for (seed, &(n, classes)) in cases.iter().enumerate() {
        let mut logits = uniform(seed as u64 + 10, n * classes, -4.0, 4.0);
        // Row 0 is a full tie: the prediction is class 0.
        logits[..classes].fill(0.5);
        let labels: Vec<u32> = (0..n).map(|i| ((i * 7 + seed) % classes) as u32).collect();
        let want = reference::softmax_cross_entropy(&logits, &labels, classes);
        let loss = SoftmaxCrossEntropy::new(g, n, classes).unwrap();
        let (lt, labt, dlt) = (
            upload(&logits),
            g.upload("labels", &[n], &labels).unwrap(),
            zeros(n * classes),
        );
        run(|enc| loss.forward(g, enc, &lt, &labt, &dlt, &metrics).unwrap());
        assert_close(&read(&dlt), &want.dlogits, 1e-5, "dlogits");
        loss_sum += f64::from(want.loss) * n as f64;
        correct += want.correct;
        examples += n;
    }
    let m = metrics.read(g).unwrap();
    assert_eq!(
        (m.correct, m.examples, m.batches, m.invalid_labels),
        (correct as u32, examples as u32, cases.len() as u32, 0)
    );
    assert!(
        (f64::from(m.loss_sum) - loss_sum).abs() <= 1e-5 * loss_sum,
        "loss sum {} vs {loss_sum}",
        m.loss_sum
    );
    assert!((f64::from(m.mean_loss()) - loss_sum / examples as f64).abs() < 1e-5);

    // Reset, then an out-of-range label: counted, no loss, no gradient.
    let loss = SoftmaxCrossEntropy::new(g, 2, 3).unwrap();
    let (lt, labt, dlt) = (
        upload(&[1.0, 2.0, 3.0, 3.0, 2.0, 1.0]),
        g.upload("labels", &[2], &[2u32, 3]).unwrap(),
        zeros(6),
    );
    run(|enc| {
        metrics.reset(enc);
        loss.forward(g, enc, &lt, &labt, &dlt, &metrics).unwrap();
    });
    let m = metrics.read(g).unwrap();
    let want = reference::softmax_cross_entropy(&[1.0, 2.0, 3.0], &[2], 3);
    assert_eq!(
        (m.correct, m.examples, m.batches, m.invalid_labels),
        (1, 2, 1, 1)
    );
    assert!((m.loss_sum - want.loss).abs() < 1e-6);
    assert_eq!(&read(&dlt)[3..], &[0.0; 3]);
}

#[test]
fn adam_updates_a_packed_group_like_the_reference() {
    let g = gpu();
    let lens = [5, 1, 300, 64];
    let init: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(k, &len)| uniform(k as u64 + 20, len, -1.0, 1.0))
        .collect();
    let refs: Vec<&[f32]> = init.iter().map(Vec::as_slice).collect();
    let (mut group, slices) = group_with(&refs, &[None; 4]);
    let align = g.limits().min_storage_buffer_offset_alignment as usize;
    for pair in slices.windows(2) {
        assert!(pair[0].offset + pair[0].len <= pair[1].offset, "{pair:?}");
    }
    assert!(slices.iter().all(|s| (4 * s.offset).is_multiple_of(align)));

    let mut params = init.clone();
    let mut states: Vec<AdamState> = lens.iter().map(|&l| AdamState::new(l)).collect();
    for step in 0..3 {
        let lr = 0.01 * (step + 1) as f32;
        let mut grads = vec![0.0; group.grads().len()];
        for (k, s) in slices.iter().enumerate() {
            let mut gr = uniform(100 * step + k as u64, s.len, -2.0, 2.0);
            gr[0] = 0.0; // a zero gradient in the first steps: no update
            grads[s.offset..s.offset + s.len].copy_from_slice(&gr);
            states[k].update(&mut params[k], &gr, lr);
        }
        g.write(group.grads(), &grads).unwrap();
        run(|enc| group.step(g, enc, lr).unwrap());
    }
    assert_eq!(group.steps(), 3);
    let all = read(group.params());
    for (k, s) in slices.iter().enumerate() {
        assert_close(s.of(&all).unwrap(), &params[k], 1e-6, "adam params");
    }
    let moments = g.read_blocking(&group.moments()).unwrap();
    for (k, s) in slices.iter().enumerate() {
        assert_close(s.of(&moments[0]).unwrap(), &states[k].m, 1e-6, "adam m");
        assert_close(s.of(&moments[1]).unwrap(), &states[k].v, 1e-6, "adam v");
    }
    // Padding between tensors stays zero.
    let inside = |i: usize| {
        slices
            .iter()
            .any(|s| (s.offset..s.offset + s.len).contains(&i))
    };
    assert!((0..all.len()).all(|i| inside(i) || all[i] == 0.0));
    assert!(group.step(g, &mut g.encoder("nan"), f32::NAN).is_err());
}

/// SGD over a packed group against the reference for four steps: plain, with momentum, and
/// Nesterov with weight decay. The kernel rounds every product and sum separately as the
/// reference does, so parameters and momentum buffers must agree to the bit.
#[test]
fn sgd_updates_a_packed_group_like_the_reference() {
    let g = gpu();
    let lens = [5, 1, 300];
    let configs = [
        SgdConfig {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        SgdConfig {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        },
        SgdConfig {
            weight_decay: 5e-4,
            ..SgdConfig::NESTEROV
        },
    ];
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for cfg in configs {
        let init: Vec<Vec<f32>> = lens
            .iter()
            .enumerate()
            .map(|(k, &len)| uniform(k as u64 + 40, len, -1.0, 1.0))
            .collect();
        let refs: Vec<&[f32]> = init.iter().map(Vec::as_slice).collect();
        let (mut group, slices) = group_with(&refs, &[None; 3]);
        group.set_optimizer(g, Optimizer::Sgd(cfg)).unwrap();
        assert_eq!(group.moments().len(), 1);
        let mut params = init.clone();
        let mut states: Vec<SgdState> = lens.iter().map(|&l| SgdState::new(l)).collect();
        for step in 0..4 {
            let lr = 0.05 / (step + 1) as f32;
            let mut grads = vec![0.0; group.grads().len()];
            for (k, s) in slices.iter().enumerate() {
                let gr = uniform(200 * step + k as u64, s.len, -2.0, 2.0);
                grads[s.offset..s.offset + s.len].copy_from_slice(&gr);
                states[k].update(&mut params[k], &gr, lr, &cfg);
            }
            g.write(group.grads(), &grads).unwrap();
            run(|enc| group.step(g, enc, lr).unwrap());
        }
        assert_eq!(group.steps(), 4);
        let all = read(group.params());
        let buf = read(group.moments()[0]);
        for (k, s) in slices.iter().enumerate() {
            assert_eq!(
                bits(s.of(&all).unwrap()),
                bits(&params[k]),
                "{cfg:?} params"
            );
            assert_eq!(
                bits(s.of(&buf).unwrap()),
                bits(&states[k].buf),
                "{cfg:?} buf"
            );
            assert_ne!(s.of(&all).unwrap(), &init[k][..], "{cfg:?}: nothing moved");
        }
        let inside = |i: usize| {
            slices
                .iter()
                .any(|s| (s.offset..s.offset + s.len).contains(&i))
        };
        assert!((0..all.len()).all(|i| inside(i) || (all[i] == 0.0 && buf[i] == 0.0)));
    }
    // PyTorch refuses Nesterov without momentum; switching back to Adam starts afresh.
    let (mut group, _) = group_with(&[&[1.0]], &[Some(&[1.0])]);
    let err = group
        .set_optimizer(
            g,
            Optimizer::Sgd(SgdConfig {
                momentum: 0.0,
                ..SgdConfig::NESTEROV
            }),
        )
        .unwrap_err();
    assert!(err.to_string().contains("Nesterov"), "{err}");
    assert_eq!(group.optimizer(), Optimizer::Adam);
    group
        .set_optimizer(g, Optimizer::Sgd(SgdConfig::NESTEROV))
        .unwrap();
    run(|enc| group.step(g, enc, 0.1).unwrap());
    group.set_optimizer(g, Optimizer::Adam).unwrap();
    assert_eq!((group.steps(), group.moments().len()), (0, 2));
}

fn layouts() -> [ChannelLayout; 7] {
    [
        ChannelLayout::nchw(1, 3, 5, 7),
        ChannelLayout::nchw(2, 17, 3, 3),
        // 3069 elements per channel: two reduction slices.
        ChannelLayout::nchw(3, 5, 33, 31),
        // More channels than one workgroup of channel threads.
        ChannelLayout::rows(5, 300),
        // More slices (and weight rows) than one grid dimension holds: 2-D grids.
        ChannelLayout::rows(2, 70_000),
        // h·w a multiple of 4: the epilogue's vec4 kernels, with one and with two slices.
        ChannelLayout::nchw(2, 3, 4, 6),
        ChannelLayout::nchw(3, 2, 32, 24),
    ]
}

fn channel(l: &ChannelLayout, i: usize) -> usize {
    (i / l.hw) % l.channels
}

/// Per-channel sums in f64 of `f(i)`.
fn channel_sums(l: &ChannelLayout, f: impl Fn(usize) -> f64) -> Vec<f32> {
    let mut sums = vec![0.0f64; l.channels];
    for i in 0..l.len() {
        sums[channel(l, i)] += f(i);
    }
    to_f32(&sums)
}

/// Checks `q` against the reference quantizer applied to `a`: exact, except one deepest-stage
/// step next to a rounding tie (spec P3).
fn assert_quantized(q: &[f32], a: &[f32], x_max: f32, gates: [f32; 4]) {
    let want = quant::quantize(a, x_max, false, gates, None);
    let s = quant::scales(x_max, false);
    for (i, (&got, &e)) in q.iter().zip(&want).enumerate() {
        if got == e {
            continue;
        }
        let d = quant::decompose(a[i], x_max, false, gates);
        let margin = (0..d.stages)
            .map(|b| ((d.quotient[b] - d.quotient[b].floor()) - 0.5).abs())
            .fold(f32::MAX, f32::min);
        assert!(
            margin < 1e-5 && (got - e).abs() <= s[d.stages - 1] * 1.0001,
            "q[{i}]: a {} gpu {got} reference {e}",
            a[i]
        );
    }
}

struct EpilogueRun {
    a: Vec<f32>,
    q: Vec<f32>,
    dy: Vec<f32>,
    sum_da: Vec<f32>,
    sum_da_y: Vec<f32>,
}

fn run_epilogue(config: EpilogueConfig, quantize: bool, seed: u64) -> EpilogueRun {
    let g = gpu();
    let l = config.layout;
    let (len, c) = (l.len(), l.channels);
    let (y, scale) = (
        uniform(seed, len, -1.0, 1.0),
        uniform(seed + 1, c, 0.5, 2.0),
    );
    let (shift, da) = (
        uniform(seed + 2, c, -0.5, 0.5),
        uniform(seed + 3, len, -0.5, 1.5),
    );
    // The shift and its gradient are slices of a packed group (bias of a LeNet layer).
    let (group, slices) = group_with(&[&shift], &[None]);
    let epilogue = Epilogue::new(g, config).unwrap();
    let (yt, st, dat) = (upload(&y), upload(&scale), upload(&da));
    let (at, qt, dyt) = (zeros(len), zeros(len), zeros(len));
    let (x_max, gates) = (
        upload(&[0.8]),
        upload(&[1.0, 0.6, 0.0, 0.0, 0.25 /* unused */]),
    );
    let scale_binding = config.scaled.then(|| Binding::from(&st));
    run(|enc| {
        let forward = EpilogueForward {
            y: (&yt).into(),
            scale: scale_binding,
            shift: group.param(g, slices[0]).unwrap(),
            a: (&at).into(),
            quant: quantize.then(|| ActQuant {
                signed: false,
                x_max: (&x_max).into(),
                gates: (&gates).into(),
                q: (&qt).into(),
            }),
        };
        epilogue.forward(g, enc, &forward).unwrap();
        let backward = EpilogueBackward {
            da: (&dat).into(),
            y: (&yt).into(),
            scale: scale_binding,
            dy: (&dyt).into(),
            sum_da: group.grad(g, slices[0]).unwrap(),
            a: None,
        };
        epilogue.backward(g, enc, &backward).unwrap();
    });
    let v = g
        .read_blocking(&[&at, &qt, &dyt, group.grads(), &epilogue.sum_da_y])
        .unwrap();
    EpilogueRun {
        a: v[0].clone(),
        q: v[1].clone(),
        dy: v[2].clone(),
        sum_da: slices[0].of(&v[3]).unwrap().to_vec(),
        sum_da_y: v[4].clone(),
    }
}

#[test]
fn epilogue_matches_reference() {
    for (k, layout) in layouts().into_iter().enumerate() {
        for (relu, scaled, quantize) in [
            (true, true, true),
            (true, false, true),
            (false, false, false),
        ] {
            let seed = 40 + 10 * k as u64;
            let config = EpilogueConfig {
                layout,
                activation: if relu {
                    Activation::Relu
                } else {
                    Activation::None
                },
                scaled,
            };
            let got = run_epilogue(config, quantize, seed);
            let len = layout.len();
            let y = uniform(seed, len, -1.0, 1.0);
            let scale = uniform(seed + 1, layout.channels, 0.5, 2.0);
            let shift = uniform(seed + 2, layout.channels, -0.5, 0.5);
            let da = uniform(seed + 3, len, -0.5, 1.5);
            let s = |i: usize| {
                if scaled {
                    scale[channel(&layout, i)]
                } else {
                    1.0
                }
            };
            let a: Vec<f32> = (0..len)
                .map(|i| {
                    let v = y[i] * s(i) + shift[channel(&layout, i)];
                    if relu {
                        v.max(0.0)
                    } else {
                        v
                    }
                })
                .collect();
            let what = format!("{layout:?} relu {relu} scaled {scaled}");
            assert_close(&got.a, &a, 1e-6, &format!("a {what}"));
            if quantize {
                assert_quantized(&got.q, &got.a, 0.8, [1.0, 0.6, 0.0, 0.0]);
            }
            let dy: Vec<f32> = (0..len).map(|i| da[i] * s(i)).collect();
            assert_close(&got.dy, &dy, 1e-6, &format!("dy {what}"));
            let sum_da = channel_sums(&layout, |i| f64::from(da[i]));
            let sum_da_y = channel_sums(&layout, |i| f64::from(da[i]) * f64::from(y[i]));
            assert_close(&got.sum_da, &sum_da, 1e-5, &format!("sum da {what}"));
            assert_close(&got.sum_da_y, &sum_da_y, 1e-5, &format!("sum da*y {what}"));
            if k == 2 {
                let again = run_epilogue(config, quantize, seed);
                assert_eq!(bits(&again.sum_da), bits(&got.sum_da), "rerun {what}");
                assert_eq!(bits(&again.sum_da_y), bits(&got.sum_da_y), "rerun {what}");
            }
        }
    }
}

/// ReLU6 in the epilogue against the CPU reference (`relu6_forward`, `relu6_backward`): inputs
/// on both sides of 0 and 6, with and without the (unsigned) activation quantizer, with and
/// without a scale; the backward zeroes the gradient where the output is 0 or 6.
#[test]
fn epilogue_relu6_matches_reference() {
    let g = gpu();
    for (k, layout) in layouts().into_iter().enumerate() {
        for (scaled, quantize) in [(true, true), (false, true), (true, false)] {
            let seed = 900 + 10 * k as u64;
            let config = EpilogueConfig {
                layout,
                activation: Activation::Relu6,
                scaled,
            };
            let (len, c) = (layout.len(), layout.channels);
            // Every channel reaches below 0 and above 6.
            let y = uniform(seed, len, -6.0, 8.0);
            let scale = uniform(seed + 1, c, 1.0, 2.5);
            let shift = uniform(seed + 2, c, -1.0, 3.0);
            let da = uniform(seed + 3, len, -0.5, 1.5);
            let (x_max, gates) = (5.0, [1.0, 0.6, 0.0, 0.0]);
            let (group, slices) = group_with(&[&shift], &[None]);
            let epilogue = Epilogue::new(g, config).unwrap();
            let (yt, st, dat) = (upload(&y), upload(&scale), upload(&da));
            let (at, qt, dyt) = (zeros(len), zeros(len), zeros(len));
            let (x_max_t, gates_t) = (upload(&[x_max]), upload(&gates));
            let scale_binding = scaled.then(|| Binding::from(&st));
            run(|enc| {
                let forward = EpilogueForward {
                    y: (&yt).into(),
                    scale: scale_binding,
                    shift: group.param(g, slices[0]).unwrap(),
                    a: (&at).into(),
                    quant: quantize.then(|| ActQuant {
                        signed: false,
                        x_max: (&x_max_t).into(),
                        gates: (&gates_t).into(),
                        q: (&qt).into(),
                    }),
                };
                epilogue.forward(g, enc, &forward).unwrap();
                let backward = EpilogueBackward {
                    da: (&dat).into(),
                    y: (&yt).into(),
                    scale: scale_binding,
                    dy: (&dyt).into(),
                    sum_da: group.grad(g, slices[0]).unwrap(),
                    a: Some((&at).into()),
                };
                epilogue.backward(g, enc, &backward).unwrap();
            });
            let v = g
                .read_blocking(&[&at, &qt, &dyt, group.grads(), &epilogue.sum_da_y])
                .unwrap();
            let what = format!("{layout:?} scaled {scaled} quantize {quantize}");
            let s = |i: usize| {
                if scaled {
                    scale[channel(&layout, i)]
                } else {
                    1.0
                }
            };
            let pre: Vec<f32> = (0..len)
                .map(|i| y[i] * s(i) + shift[channel(&layout, i)])
                .collect();
            let a = reference::relu6_forward(&pre);
            assert_close(&v[0], &a, 1e-6, &format!("a {what}"));
            let (zeros_, sixes) = (
                a.iter().filter(|&&x| x == 0.0).count(),
                a.iter().filter(|&&x| x == 6.0).count(),
            );
            assert!(
                zeros_ > len / 20 && sixes > len / 20,
                "{what}: both clamps hit"
            );
            if quantize {
                assert_quantized(&v[1], &v[0], x_max, gates);
            }
            let masked = reference::relu6_backward(&a, &da);
            let dy: Vec<f32> = (0..len).map(|i| masked[i] * s(i)).collect();
            assert_close(&v[2], &dy, 1e-6, &format!("dy {what}"));
            let sum_da = channel_sums(&layout, |i| f64::from(masked[i]));
            let sum_da_y = channel_sums(&layout, |i| f64::from(masked[i]) * f64::from(y[i]));
            let got_sum_da = slices[0].of(&v[3]).unwrap().to_vec();
            assert_close(&got_sum_da, &sum_da, 1e-5, &format!("sum da {what}"));
            assert_close(&v[4], &sum_da_y, 1e-5, &format!("sum da*y {what}"));
        }
    }
    // The forward output is passed to the backward exactly when the activation is ReLU6.
    let layout = ChannelLayout::rows(2, 4);
    let t8 = zeros(8);
    let t4 = zeros(4);
    for (activation, a) in [
        (Activation::Relu6, None),
        (Activation::Relu, Some(Binding::from(&t8))),
    ] {
        let config = EpilogueConfig {
            layout,
            activation,
            scaled: false,
        };
        let epilogue = Epilogue::new(g, config).unwrap();
        let mut enc = g.encoder("relu6 errors");
        let backward = EpilogueBackward {
            da: (&t8).into(),
            y: (&t8).into(),
            scale: None,
            dy: (&t8).into(),
            sum_da: (&t4).into(),
            a,
        };
        let e = epilogue.backward(g, &mut enc, &backward).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Inputs of one folded-BN case.
struct BnCase {
    layout: ChannelLayout,
    y_q: Vec<f32>,
    y_fp: Vec<f32>,
    dout: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    w: Vec<f32>,
    dw_f: Vec<f32>,
    dw_fp: Vec<f32>,
}

impl BnCase {
    fn new(layout: ChannelLayout, k: usize, seed: u64) -> Self {
        let (len, c) = (layout.len(), layout.channels);
        Self {
            layout,
            y_q: uniform(seed, len, -1.0, 1.0),
            // An offset mean, as conv outputs have.
            y_fp: uniform(seed + 1, len, 1.0, 3.0),
            dout: uniform(seed + 2, len, -1.0, 1.0),
            gamma: uniform(seed + 3, c, 0.5, 1.5),
            beta: uniform(seed + 4, c, -0.5, 0.5),
            running_mean: uniform(seed + 5, c, -0.2, 0.2),
            running_var: uniform(seed + 6, c, 0.5, 2.0),
            w: uniform(seed + 7, c * k, -0.3, 0.3),
            dw_f: uniform(seed + 8, c * k, -1.0, 1.0),
            dw_fp: uniform(seed + 9, c * k, -1.0, 1.0),
        }
    }

    fn nchw(&self) -> Nchw {
        Nchw::new(self.layout.n, self.layout.channels, self.layout.hw, 1)
    }
}

/// Everything the GPU path produces for one [`BnCase`].
#[derive(PartialEq, Debug)]
struct BnRun {
    w_f: Vec<f32>,
    stats: Vec<f32>,
    out: Vec<f32>,
    dy_q: Vec<f32>,
    dy_fp: Vec<f32>,
    dw: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    eval_scale: Vec<f32>,
    eval_shift: Vec<f32>,
}

/// One training step of the folded-BN path (γ, β, W and their gradients packed in one group),
/// then the running update and the eval affine.
fn run_bn(case: &BnCase) -> BnRun {
    let g = gpu();
    let l = case.layout;
    let (group, s) = group_with(
        &[&case.w, &case.gamma, &case.beta],
        &[Some(&case.dw_fp), None, None],
    );
    let [sw, sg, sb] = [s[0], s[1], s[2]];
    let (rm, rv) = (upload(&case.running_mean), upload(&case.running_var));
    let bn = FoldedBn::new(g, l, case.w.len()).unwrap();
    let config = EpilogueConfig {
        layout: l,
        activation: Activation::None,
        scaled: true,
    };
    let epilogue = Epilogue::new(g, config).unwrap();
    let (yq, yfp, dout, dwf) = (
        upload(&case.y_q),
        upload(&case.y_fp),
        upload(&case.dout),
        upload(&case.dw_f),
    );
    let (wf, out, dyq, dyfp) = (
        zeros(case.w.len()),
        zeros(l.len()),
        zeros(l.len()),
        zeros(l.len()),
    );
    let bnb = BnBindings {
        gamma: group.param(g, sg).unwrap(),
        beta: group.param(g, sb).unwrap(),
        running_mean: (&rm).into(),
        running_var: (&rv).into(),
    };
    let grad = |s| group.grad(g, s).unwrap();
    run(|enc| {
        bn.fold_weight(g, enc, &bnb, group.param(g, sw).unwrap(), &wf)
            .unwrap();
        bn.train_stats(g, enc, &bnb, &yfp).unwrap();
        let scale = Some(Binding::from(&bn.scale));
        let forward = EpilogueForward {
            y: (&yq).into(),
            scale,
            shift: (&bn.shift).into(),
            a: (&out).into(),
            quant: None,
        };
        epilogue.forward(g, enc, &forward).unwrap();
        let backward = EpilogueBackward {
            da: (&dout).into(),
            y: (&yq).into(),
            scale,
            dy: (&dyq).into(),
            sum_da: grad(sb),
            a: None,
        };
        epilogue.backward(g, enc, &backward).unwrap();
        let backward = BnBackward {
            sum_g: grad(sb),
            sum_gy: (&epilogue.sum_da_y).into(),
            y_fp: (&yfp).into(),
            dy_fp: (&dyfp).into(),
            dgamma: grad(sg),
        };
        bn.backward(g, enc, &bnb, &backward).unwrap();
        let fold = FoldBackward {
            dw_f: (&dwf).into(),
            w: group.param(g, sw).unwrap(),
            dw: grad(sw),
            dgamma: grad(sg),
        };
        bn.fold_weight_backward(g, enc, &bnb, &fold).unwrap();
    });
    let v = g
        .read_blocking(&[&wf, &bn.stats, &out, &dyq, &dyfp, group.grads()])
        .unwrap();
    run(|enc| {
        bn.update_running(g, enc, &bnb).unwrap();
        bn.eval_affine(g, enc, &bnb).unwrap();
    });
    let e = g.read_blocking(&[&rm, &rv, &bn.scale, &bn.shift]).unwrap();
    let grads = &v[5];
    BnRun {
        w_f: v[0].clone(),
        stats: v[1].clone(),
        out: v[2].clone(),
        dy_q: v[3].clone(),
        dy_fp: v[4].clone(),
        dw: sw.of(grads).unwrap().to_vec(),
        dgamma: sg.of(grads).unwrap().to_vec(),
        dbeta: sb.of(grads).unwrap().to_vec(),
        running_mean: e[0].clone(),
        running_var: e[1].clone(),
        eval_scale: e[2].clone(),
        eval_shift: e[3].clone(),
    }
}

#[test]
fn folded_bn_matches_reference() {
    for (k, layout) in layouts().into_iter().enumerate() {
        let case = BnCase::new(layout, [27, 9, 50, 7, 1, 12, 5][k], 70 + 10 * k as u64);
        let got = run_bn(&case);
        // The f64 instantiation of the reference is the truth; tolerances are relative to
        // each output's scale.
        let f = |v: &[f32]| to_f64(v);
        let (gamma, beta, rm, rv) = (
            f(&case.gamma),
            f(&case.beta),
            f(&case.running_mean),
            f(&case.running_var),
        );
        let p = BnParams {
            gamma: &gamma,
            beta: &beta,
            running_mean: &rm,
            running_var: &rv,
        };
        let s = case.nchw();
        let (y_q, y_fp, dout) = (f(&case.y_q), f(&case.y_fp), f(&case.dout));
        let what = |name: &str| format!("{name} {layout:?}");
        let wf = reference::fold_weight(&f(&case.w), &gamma, &rv);
        assert_close(&got.w_f, &to_f32(&wf), 1e-6, &what("W_f"));

        let train = reference::folded_bn_train_forward(&s, &y_q, &y_fp, &p);
        let c = layout.channels;
        assert_close(
            &got.stats[..c],
            &to_f32(&train.batch_mean),
            1e-6,
            &what("mean"),
        );
        assert_close(
            &got.stats[c..2 * c],
            &to_f32(&train.batch_std),
            1e-5,
            &what("std"),
        );
        assert_close(&got.out, &to_f32(&train.out), 1e-5, &what("out"));
        assert_close(
            &got.running_mean,
            &to_f32(&train.running_mean),
            1e-5,
            &what("running mean"),
        );
        assert_close(
            &got.running_var,
            &to_f32(&train.running_var),
            1e-5,
            &what("running var"),
        );

        let grads = reference::folded_bn_train_backward(&s, &dout, &y_q, &y_fp, &p);
        let (dw_fold, dgamma_fold) =
            reference::fold_weight_backward(&f(&case.dw_f), &f(&case.w), &gamma, &rv);
        assert_close(&got.dy_q, &to_f32(&grads.dy_q), 1e-5, &what("dy_q"));
        assert_close(&got.dy_fp, &to_f32(&grads.dy_fp), 1e-5, &what("dy_fp"));
        assert_close(&got.dbeta, &to_f32(&grads.dbeta), 1e-5, &what("dbeta"));
        let dgamma: Vec<f64> = grads
            .dgamma
            .iter()
            .zip(&dgamma_fold)
            .map(|(a, b)| a + b)
            .collect();
        assert_close(&got.dgamma, &to_f32(&dgamma), 1e-5, &what("dgamma"));
        let dw: Vec<f64> = dw_fold
            .iter()
            .zip(&case.dw_fp)
            .map(|(a, &b)| a + f64::from(b))
            .collect();
        assert_close(&got.dw, &to_f32(&dw), 1e-6, &what("dW"));

        let updated = BnParams {
            running_mean: &train.running_mean,
            running_var: &train.running_var,
            ..p
        };
        assert_eq!(got.eval_scale, vec![1.0; c]);
        assert_close(
            &got.eval_shift,
            &to_f32(&reference::fold_bias(&updated)),
            1e-5,
            &what("eval bias"),
        );

        if k == 2 {
            assert_eq!(run_bn(&case), got, "rerun {layout:?}");
        }
    }
}

/// Spec §10 TV8 through the GPU path: folding, the GPU quantizer, batch statistics, the
/// epilogue, the running update and the eval affine (the 4×3 products on the CPU).
#[test]
#[allow(clippy::excessive_precision)] // the spec's values, verbatim
fn tv8_through_the_gpu_bn_path() {
    let g = gpu();
    let w = [0.5f32, -0.25, 0.125, -0.75, 0.3, 0.6];
    let x = [
        1.0f32, 2.0, -1.0, 0.5, -0.5, 0.25, -1.0, 0.0, 2.0, 0.3, 0.7, -0.2,
    ];
    let shape = LinearShape::new(4, 3, 2);
    let layout = ChannelLayout::rows(4, 2);
    let (group, s) = group_with(&[&w, &[1.5, 0.8], &[0.1, -0.2]], &[None; 3]);
    let (rm, rv) = (upload(&[0.2, -0.1]), upload(&[2.0, 0.5]));
    let bnb = BnBindings {
        gamma: group.param(g, s[1]).unwrap(),
        beta: group.param(g, s[2]).unwrap(),
        running_mean: (&rm).into(),
        running_var: (&rv).into(),
    };
    let bn = FoldedBn::new(g, layout, 6).unwrap();
    let epilogue = Epilogue::new(
        g,
        EpilogueConfig {
            layout,
            activation: Activation::None,
            scaled: true,
        },
    )
    .unwrap();
    let q = Quantizer::new(
        g,
        QuantizerConfig {
            len: 6,
            prune_channels: 2,
            signed: true,
            x_max: 1.0,
            chain_logits: [6.0; 4],
            prune_logit: 6.0,
            mac_ratio: 1.0,
            id: 0,
        },
    )
    .unwrap();
    g.write(&q.gates, &[1.0f32, 1.0, 0.0, 0.0, 1.0, 1.0])
        .unwrap();
    let step = bayesian_bits::quant::StepState::new(g);
    let (wf, wq) = (zeros(6), zeros(6));
    let quantized_fold = || {
        run(|enc| {
            bn.fold_weight(g, enc, &bnb, group.param(g, s[0]).unwrap(), &wf)
                .unwrap();
            q.forward(g, enc, &step, &wf, &wq).unwrap();
        });
        read(&wq)
    };
    let epilogue_out = |y: &[f32]| {
        let (yt, out) = (upload(y), zeros(8));
        run(|enc| {
            let forward = EpilogueForward {
                y: (&yt).into(),
                scale: Some((&bn.scale).into()),
                shift: (&bn.shift).into(),
                a: (&out).into(),
                quant: None,
            };
            epilogue.forward(g, enc, &forward).unwrap();
        });
        read(&out)
    };

    let y_q = reference::linear_forward(&shape, &x, &quantized_fold(), None);
    let y_fp = upload(&reference::linear_forward(&shape, &x, &w, None));
    run(|enc| bn.train_stats(g, enc, &bnb, &y_fp).unwrap());
    #[rustfmt::skip]
    assert_close(&epilogue_out(&y_q), &[-0.6325756311416626, -0.9075673818588257,
        2.601464033126831, -0.6155725717544556, -1.3935260772705078, 1.1588575839996338,
        -0.1760053038597107, -0.43561917543411255], 1e-6, "TV8 train out");
    run(|enc| bn.update_running(g, enc, &bnb).unwrap());
    let [mean, var] = [&rm, &rv].map(read);
    assert_close(
        &mean,
        &[0.1795312464237213, -0.07274999469518661],
        1e-6,
        "TV8 mean",
    );
    assert_close(
        &var,
        &[1.8081858158111572, 0.596827507019043],
        1e-6,
        "TV8 var",
    );

    let y_eval = reference::linear_forward(&shape, &x, &quantized_fold(), None);
    run(|enc| bn.eval_affine(g, enc, &bnb).unwrap());
    #[rustfmt::skip]
    assert_close(&epilogue_out(&y_eval), &[-0.2492862343788147, -0.8932927846908569,
        0.3546353578567505, -0.5148614048957825, -0.3747764527797699, 1.8910208940505981,
        -0.15909014642238617, -0.2619202435016632], 1e-6, "TV8 eval out");
}

#[test]
fn bad_shapes_are_errors() {
    let g = gpu();
    let shape_error =
        |r: Result<(), Error>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    assert!(matches!(
        MaxPool2x2::new(g, 1, 1, 1, 4),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        FoldedBn::new(g, ChannelLayout::rows(1, 4), 8),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        FoldedBn::new(g, ChannelLayout::rows(2, 4), 7),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        Epilogue::new(
            g,
            EpilogueConfig {
                layout: ChannelLayout::rows(0, 4),
                activation: Activation::Relu,
                scaled: false
            }
        ),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        SoftmaxCrossEntropy::new(g, 0, 10),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        ParamArena::new(g).push(0),
        Err(Error::InvalidArgument { .. })
    ));

    let mut enc = g.encoder("errors");
    let pool = MaxPool2x2::new(g, 1, 2, 4, 4).unwrap();
    let (t8, t32) = (zeros(8), zeros(32));
    shape_error(pool.forward(g, &mut enc, &t8, &t8, &t8));
    shape_error(pool.backward(g, &mut enc, &t8, &t8, &t8));
    let loss = SoftmaxCrossEntropy::new(g, 4, 2).unwrap();
    let metrics = Metrics::new(g).unwrap();
    shape_error(loss.forward(g, &mut enc, &t32, &t8, &t8, &metrics));

    let layout = ChannelLayout::rows(4, 2);
    let epilogue = Epilogue::new(
        g,
        EpilogueConfig {
            layout,
            activation: Activation::Relu,
            scaled: false,
        },
    )
    .unwrap();
    let forward = EpilogueForward {
        y: (&t8).into(),
        scale: Some((&t8).into()),
        shift: (&t8).into(),
        a: (&t8).into(),
        quant: None,
    };
    assert!(matches!(
        epilogue.forward(g, &mut enc, &forward),
        Err(Error::InvalidArgument { .. })
    ));
    let two = zeros(2);
    let forward = EpilogueForward {
        scale: None,
        shift: (&two).into(),
        a: (&t32).into(),
        ..forward
    };
    shape_error(epilogue.forward(g, &mut enc, &forward));

    // Misaligned or out-of-range slices of a buffer.
    let big = zeros(1024);
    assert!(Binding::range(g, big.buffer(), 1, 4).is_err());
    assert!(Binding::range(g, big.buffer(), 0, 1025).is_err());
    assert!(Binding::range(g, big.buffer(), 0, 0).is_err());
    assert_eq!(
        Binding::range(g, big.buffer(), 0, 1024).unwrap().len(),
        1024
    );
    let (group, s) = group_with(&[&[1.0; 3]], &[None]);
    assert!(group.write(g, s[0], &[1.0; 4]).is_err());
    assert!(s[0].of(&[0.0; 2]).is_err());
}
