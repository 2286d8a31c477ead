//! The quantizer kernels on the GPU against the CPU reference (spec §1–§3, §10 tolerances).

mod common;

use bayesian_bits::gpu::Binding;
use bayesian_bits::kernels::quant::{FixedBuffers, FixedQuant};
use bayesian_bits::quant::{Quantizer, QuantizerConfig, StepState};
use bayesian_bits::reference::quant as reference;
use bayesian_bits::Error;
use common::{gpu, uniform};

/// Gate patterns: every test-time bit width, and fractional training-style gates.
const GATE_PATTERNS: [[f32; 4]; 8] = [
    [0.0, 0.0, 0.0, 0.0],
    [1.0, 0.0, 0.0, 0.0],
    [1.0, 1.0, 0.0, 0.0],
    [1.0, 1.0, 1.0, 0.0],
    [1.0, 1.0, 1.0, 1.0],
    [0.5, 0.25, 0.0, 0.0],
    [0.7, 1.0, 0.3, 0.9],
    [0.0, 1.0, 1.0, 1.0],
];

fn config(len: usize, channels: usize, signed: bool, x_max: f32) -> QuantizerConfig {
    QuantizerConfig {
        len,
        prune_channels: channels,
        signed,
        x_max,
        chain_logits: [6.0; 4],
        prune_logit: 6.0,
        mac_ratio: 0.25,
        id: 3,
    }
}

/// Smallest distance of r/s to a .5 tie over the evaluated stages (spec §10 "tie-margin").
fn tie_margin(d: &reference::Decomposition) -> f32 {
    (0..d.stages)
        .map(|b| ((d.quotient[b] - d.quotient[b].floor()) - 0.5).abs())
        .fold(f32::MAX, f32::min)
}

struct Case {
    x: Vec<f32>,
    gates: [f32; 4],
    z2: Vec<f32>,
    signed: bool,
    x_max: f32,
}

impl Case {
    fn new(len: usize, channels: usize, signed: bool, gates: [f32; 4], seed: u64) -> Self {
        let x_max = 0.37 + 0.05 * seed as f32;
        let x = uniform(seed, len, -1.5 * x_max, 1.5 * x_max);
        // Pruning gates: a mix of 0, 1 and fractions.
        let z2 = uniform(seed + 100, channels, -0.3, 1.3)
            .iter()
            .map(|v| v.clamp(0.0, 1.0))
            .collect();
        Self {
            x,
            gates,
            z2,
            signed,
            x_max,
        }
    }

    fn z2(&self) -> Option<&[f32]> {
        (!self.z2.is_empty()).then_some(&self.z2[..])
    }

    fn quantizer(&self) -> Quantizer {
        let q = Quantizer::new(
            gpu(),
            config(self.x.len(), self.z2.len(), self.signed, self.x_max),
        )
        .unwrap();
        let mut g = self.gates.to_vec();
        g.extend(&self.z2);
        gpu().write(&q.gates, &g).unwrap();
        q
    }
}

fn run_forward(case: &Case) -> Vec<f32> {
    let g = gpu();
    let q = case.quantizer();
    let step = StepState::new(g);
    let x = g.upload("x", &[case.x.len()], &case.x).unwrap();
    let y = g.zeros("y", &[case.x.len()]).unwrap();
    let mut enc = g.encoder("test");
    q.forward(g, &mut enc, &step, &x, &y).unwrap();
    g.submit(enc);
    g.read(&y).unwrap()
}

fn check_forward(case: &Case) {
    let got = run_forward(case);
    let want = reference::quantize(&case.x, case.x_max, case.signed, case.gates, case.z2());
    let s = reference::scales(case.x_max, case.signed);
    let per_channel = case.x.len() / case.z2.len().max(1);
    for (i, (&a, &e)) in got.iter().zip(&want).enumerate() {
        if a.to_bits() == e.to_bits() || a == e {
            continue;
        }
        // Spec P3: one deepest-stage step is allowed next to a rounding tie.
        let d = reference::decompose(case.x[i], case.x_max, case.signed, case.gates);
        let z = case.z2().map_or(1.0, |z| z[i / per_channel]);
        let gate_product: f32 = case.gates[..d.stages - 1].iter().product();
        let step = s[d.stages - 1] * gate_product * z;
        assert!(
            tie_margin(&d) < 1e-5 && (a - e).abs() <= step * 1.0001,
            "forward[{i}] x={} gpu {a} reference {e} (signed {}, gates {:?})",
            case.x[i],
            case.signed,
            case.gates
        );
    }
}

#[test]
fn forward_matches_reference_on_activations() {
    for (p, gates) in GATE_PATTERNS.iter().enumerate() {
        for len in [1, 7, 1000] {
            check_forward(&Case::new(len, 0, false, *gates, p as u64));
        }
    }
    for gates in [GATE_PATTERNS[2], GATE_PATTERNS[4], GATE_PATTERNS[6]] {
        check_forward(&Case::new((1 << 20) + 3, 0, false, gates, 11));
    }
}

#[test]
fn forward_matches_reference_on_pruned_weights() {
    for (p, gates) in GATE_PATTERNS.iter().enumerate() {
        // Channels of a multiple of 4 elements take the vec4 kernel, the others the scalar one.
        for (channels, per) in [(1, 7), (3, 25), (64, 9), (1024, 9), (5, 12)] {
            check_forward(&Case::new(
                channels * per,
                channels,
                true,
                *gates,
                p as u64 + 20,
            ));
        }
    }
    check_forward(&Case::new(1024 * 1024, 1024, true, GATE_PATTERNS[6], 5));
}

#[test]
fn forward_reproduces_spec_test_vectors() {
    // TV2 on the GPU: signed x_max = 1.5, every test-time bit width; exact except at the
    // deliberate near-tie extremes (margin 0), where P3 allows one deepest-stage step.
    let x = vec![-2.0, -1.23, -0.74, -0.26, 0.1, 0.55, 1.17, 1.6];
    for gates in &GATE_PATTERNS[..5] {
        check_forward(&Case {
            x: x.clone(),
            gates: *gates,
            z2: vec![],
            signed: true,
            x_max: 1.5,
        });
    }
    // TV2's P1 detector: 0.1 at 4 bits is 0.2 with the relu-form clip.
    let got = run_forward(&Case {
        x: vec![0.1],
        gates: GATE_PATTERNS[1],
        z2: vec![],
        signed: true,
        x_max: 1.5,
    });
    assert_eq!(got, [0.2]);
}

struct Backward {
    dx: Vec<f32>,
    x_max_grad: f32,
    logit_grad: Vec<f32>,
    reg: f32,
}

fn run_backward(case: &Case, dy: &[f32], gate_dlogit: &[f32], logits: &[f32], mu: f32) -> Backward {
    let g = gpu();
    let q = case.quantizer();
    g.write(&q.gate_dlogit, gate_dlogit).unwrap();
    q.set_logits(g, logits).unwrap();
    let step = StepState::new(g);
    step.set(g, 1, 0, true, mu);
    let n = case.x.len();
    let x = g.upload("x", &[n], &case.x).unwrap();
    let dy = g.upload("dy", &[n], dy).unwrap();
    let dx = g.zeros("dx", &[n]).unwrap();
    let mut enc = g.encoder("test");
    q.backward(g, &mut enc, &step, &x, &dy, &dx).unwrap();
    g.submit(enc);
    let v = g
        .read_blocking(&[&dx, &q.x_max_grad, &q.logit_grad, &q.reg_value])
        .unwrap();
    Backward {
        dx: v[0].clone(),
        x_max_grad: v[1][0],
        logit_grad: v[2].clone(),
        reg: v[3][0],
    }
}

fn check_backward(case: &Case, seed: u64) {
    let n = case.x.len();
    let c = case.z2.len();
    let dy = uniform(seed + 1, n, -1.0, 1.0);
    let gate_dlogit = uniform(seed + 2, 4 + c, 0.0, 0.45);
    let logits: Vec<f32> = uniform(seed + 3, 4 + c, -3.0, 6.0);
    let mu = 0.1;
    let got = run_backward(case, &dy, &gate_dlogit, &logits, mu);
    let want =
        reference::quantize_backward(&case.x, &dy, case.x_max, case.signed, case.gates, case.z2());
    let chain: [f32; 4] = logits[..4].try_into().unwrap();
    let reg = reference::regularizer(chain, (c > 0).then_some(&logits[4..]), 0.25);

    assert_eq!(got.dx, want.dx, "dx must be exact (G·z or 0)");
    // Gradients within 1e-5 relative to the summed magnitude of their terms.
    let magnitude = |f: &dyn Fn(usize) -> f64| (0..n).map(f).map(f64::abs).sum::<f64>().max(1e-12);
    let close = |gpu: f32, reference: f64, scale: f64, what: &str| {
        assert!(
            (f64::from(gpu) - reference).abs() <= 1e-5 * scale,
            "{what}: gpu {gpu}, reference {reference} (scale {scale})"
        );
    };
    let dy_scale = magnitude(&|i| f64::from(dy[i]));
    close(
        got.x_max_grad,
        want.dx_max,
        dy_scale * f64::from(case.x_max),
        "dx_max",
    );
    for (b, &dl) in gate_dlogit[..4].iter().enumerate() {
        let expected = want.dgates[b] * f64::from(dl) + f64::from(mu) * reg.dchain[b];
        close(
            got.logit_grad[b],
            expected,
            dy_scale * f64::from(case.x_max) + reg.dchain[b].abs(),
            &format!("dl{}", 4 << b),
        );
    }
    let per_channel = n / c.max(1);
    for ch in 0..c {
        let expected =
            want.dz2[ch] * f64::from(gate_dlogit[4 + ch]) + f64::from(mu) * reg.dprune[ch];
        let scale = magnitude(&|i| {
            if i / per_channel == ch {
                f64::from(dy[i])
            } else {
                0.0
            }
        }) * f64::from(case.x_max);
        close(
            got.logit_grad[4 + ch],
            expected,
            scale + reg.dprune[ch].abs(),
            &format!("dl2[{ch}]"),
        );
    }
    assert!(
        (f64::from(got.reg) - reg.value).abs() <= 1e-5 * reg.value,
        "R_q gpu {} reference {}",
        got.reg,
        reg.value
    );
}

#[test]
fn backward_matches_reference() {
    for (p, gates) in GATE_PATTERNS.iter().enumerate() {
        let seed = 40 + p as u64;
        for len in [1, 7, 1000] {
            check_backward(&Case::new(len, 0, false, *gates, seed), seed);
        }
        // Channels of a multiple of 4 elements take the vec4 kernel, the others the scalar one.
        for (channels, per) in [(1, 7), (3, 25), (1024, 9), (5, 12)] {
            check_backward(
                &Case::new(channels * per, channels, true, *gates, seed),
                seed,
            );
        }
    }
    check_backward(
        &Case::new((1 << 20) + 3, 0, false, GATE_PATTERNS[6], 60),
        60,
    );
    check_backward(&Case::new(64 * 16411, 64, true, GATE_PATTERNS[5], 61), 61);
    // Three slices per channel through the vec4 views.
    check_backward(&Case::new(2 * 20000, 2, true, GATE_PATTERNS[5], 62), 62);
}

#[test]
fn backward_is_bit_identical_across_runs() {
    let case = Case::new(300_001, 0, true, GATE_PATTERNS[6], 70);
    let dy = uniform(71, case.x.len(), -1.0, 1.0);
    let dl = [0.3; 4];
    let logits = [1.0, 2.0, 0.5, -1.0];
    let a = run_backward(&case, &dy, &dl, &logits, 0.01);
    let b = run_backward(&case, &dy, &dl, &logits, 0.01);
    assert_eq!(a.dx, b.dx);
    assert_eq!(a.x_max_grad.to_bits(), b.x_max_grad.to_bits());
    assert_eq!(
        a.logit_grad.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.logit_grad.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

fn sample(
    q: &Quantizer,
    step: &StepState,
    seed: u64,
    index: u32,
    training: bool,
) -> (Vec<f32>, Vec<f32>) {
    let g = gpu();
    step.set(g, seed, index, training, 0.0);
    let mut enc = g.encoder("sample");
    q.sample_gates(g, &mut enc, step).unwrap();
    g.submit(enc);
    let v = g.read_blocking(&[&q.gates, &q.gate_dlogit]).unwrap();
    (v[0].clone(), v[1].clone())
}

#[test]
fn gate_sampling_matches_reference() {
    let g = gpu();
    let channels = 300;
    let mut cfg = config(channels * 2, channels, true, 1.0);
    cfg.id = 9;
    let q = Quantizer::new(g, cfg).unwrap();
    let step = StepState::new(g);
    let logits: Vec<f32> = [0.3, -1.0, 2.5, -2.5]
        .into_iter()
        .chain(uniform(5, channels, -4.0, 4.0))
        .collect();
    q.set_logits(g, &logits).unwrap();
    for (seed, index, training) in [
        (1u64, 0u32, true),
        (0xdead_beef_1234, 17, true),
        (1, 0, false),
    ] {
        let (gates, dgates) = sample(&q, &step, seed, index, training);
        let want = reference::gates(
            logits[..4].try_into().unwrap(),
            &logits[4..],
            training,
            |i| reference::gate_noise(seed, index, 9, i),
        );
        let want_gates: Vec<f32> = want.chain.iter().chain(&want.prune).copied().collect();
        let want_d: Vec<f32> = want
            .chain_dlogit
            .iter()
            .chain(&want.prune_dlogit)
            .copied()
            .collect();
        common::assert_close(&gates, &want_gates, 2e-5, "gates");
        common::assert_close(&dgates, &want_d, 2e-5, "dgate/dlogit");
        // The ≤ −2 rule: ℓ32 = −2.5 switches g32 off in both modes.
        assert_eq!(gates[3], 0.0);
        // Same key, same noise: bit-identical.
        assert_eq!(sample(&q, &step, seed, index, training).0, gates);
    }
    // Another step draws other noise.
    assert_ne!(
        sample(&q, &step, 1, 1, true).0,
        sample(&q, &step, 1, 2, true).0
    );
}

#[test]
fn bad_input_gives_typed_errors() {
    let g = gpu();
    for x_max in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(
            matches!(Quantizer::new(g, config(8, 0, false, x_max)), Err(Error::InvalidRange { x_max: v, .. }) if v.to_bits() == x_max.to_bits())
        );
    }
    assert!(matches!(
        Quantizer::new(g, config(10, 3, true, 1.0)),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        Quantizer::new(g, config(0, 0, true, 1.0)),
        Err(Error::Shape { .. })
    ));
    let q = Quantizer::new(g, config(8, 0, false, 1.0)).unwrap();
    assert!(matches!(
        q.set_x_max(g, -0.5),
        Err(Error::InvalidRange { .. })
    ));
    let x = g.zeros("x", &[9]).unwrap();
    let y = g.zeros("y", &[8]).unwrap();
    let mut enc = g.encoder("bad");
    let err = q
        .forward(g, &mut enc, &StepState::new(g), &x, &y)
        .unwrap_err();
    assert!(
        err.to_string().contains("quantizer forward") && err.to_string().contains("8 elements"),
        "{err}"
    );
    let limit = g.limits().max_storage_buffer_binding_size;
    let too_big = (limit / 4 + 1) as usize;
    assert!(matches!(
        g.zeros("huge", &[too_big]),
        Err(Error::Limit { .. })
    ));
    assert!(matches!(
        Quantizer::new(g, config(too_big, 0, false, 1.0)),
        Err(Error::Limit { .. })
    ));
}

#[test]
fn exact_ties_round_to_even_on_the_gpu() {
    // Unsigned x_max = 7.5: s2 = 2.5, s4 = 0.5, all exactly representable, so these quotients
    // are exact ties (0.5, 1.5, 2.5 at 2 bits; 0.5 at 4 bits) and must round to even: the
    // spec's P3 allowance (division error next to a tie) does not apply.
    let x = vec![1.25, 3.75, 6.25, 0.25, 2.75];
    for (gates, want) in [
        ([0.0; 4], [0.0, 5.0, 5.0, 0.0, 2.5]),
        ([1.0, 0.0, 0.0, 0.0], [1.0, 4.0, 6.0, 0.0, 2.5]),
    ] {
        let case = Case {
            x: x.clone(),
            gates,
            z2: vec![],
            signed: false,
            x_max: 7.5,
        };
        assert_eq!(run_forward(&case), want, "gates {gates:?}");
        assert_eq!(reference::quantize(&x, 7.5, false, gates, None), want);
    }
}

#[test]
fn unknown_adapter_name_is_a_typed_error() {
    let err = pollster::block_on(bayesian_bits::gpu::Gpu::with_adapter_name(Some(
        "no adapter has this name",
    )))
    .unwrap_err();
    assert!(matches!(err, Error::NoAdapter { .. }), "{err}");
    assert!(err.to_string().contains("mesa-vulkan-drivers"), "{err}");
}

/// The fixed-gate fine-tuning quantizer (spec §7.4) against the reference at every width, with
/// and without a mask, over several backward workgroups: the forward and dx to the bit,
/// ∂L/∂x_max to float32 summation accuracy; and direct rounding's 2^(b−1) edge case.
#[test]
fn fixed_quantizer_matches_the_reference() {
    let g = gpu();
    let channels = 5;
    let n = channels * 1000 + 5;
    let mask: Vec<f32> = (0..channels).map(|c| f32::from(c != 2)).collect();
    let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let run = |x: &[f32], dy: &[f32], x_max: f32, signed: bool, bits: u32, mask: Option<&[f32]>| {
        let q = FixedQuant::new(g, x.len(), bits, signed, mask.map_or(0, <[f32]>::len)).unwrap();
        let t = |name: &str, v: &[f32]| g.upload(name, &[v.len()], v).unwrap();
        let (xt, dyt, xm) = (t("x", x), t("dy", dy), t("x_max", &[x_max]));
        let mt = mask.map(|m| t("mask", m));
        let (y, dx) = (
            g.zeros("y", &[x.len()]).unwrap(),
            g.zeros("dx", &[x.len()]).unwrap(),
        );
        let partials = g.zeros("partials", &[q.partials_len()]).unwrap();
        let grad = g.zeros("dx_max", &[1]).unwrap();
        let b = FixedBuffers {
            x_max: Binding::from(&xm),
            mask: mt.as_ref().map(Binding::from),
            partials: Binding::from(&partials),
            x_max_grad: Binding::from(&grad),
        };
        let mut enc = g.encoder("fixed");
        q.forward(g, &mut enc, &b, Binding::from(&xt), Binding::from(&y))
            .unwrap();
        q.backward(
            g,
            &mut enc,
            &b,
            Binding::from(&xt),
            Binding::from(&dyt),
            Binding::from(&dx),
        )
        .unwrap();
        g.submit(enc);
        let mut out = g.read_blocking(&[&y, &dx, &grad]).unwrap();
        let dx_max = out.pop().unwrap()[0];
        let dx = out.pop().unwrap();
        (out.pop().unwrap(), dx, dx_max)
    };
    for bits in reference::STAGE_BITS {
        for signed in [false, true] {
            for m in [None, Some(mask.as_slice())] {
                let x_max = 1.7;
                let x = uniform(u64::from(bits) + 60, n, -2.0, 2.0);
                let dy = uniform(u64::from(bits) + 70, n, -1.0, 1.0);
                let (y, dx, dx_max) = run(&x, &dy, x_max, signed, bits, m);
                let what = format!("{bits} bits, signed {signed}, mask {}", m.is_some());
                let want = reference::fixed_quantize(&x, x_max, signed, bits, m);
                assert_eq!(bits_of(&y), bits_of(&want), "{what}: y");
                let grads = reference::fixed_quantize_backward(&x, &dy, x_max, signed, bits, m);
                assert_eq!(bits_of(&dx), bits_of(&grads.dx), "{what}: dx");
                let scale: f64 = dy.iter().map(|v| f64::from(v.abs())).sum();
                assert!(
                    (f64::from(dx_max) - grads.dx_max).abs() <= 1e-6 * scale,
                    "{what}: dx_max {dx_max} vs {}",
                    grads.dx_max
                );
                assert!(dx_max != 0.0, "{what}: no gradient reached x_max");
            }
        }
    }
    // A signed x_max whose clipped extreme rounds to +2^(b−1) at 4 bits (spec §1.7).
    let x_max = (0..100_000)
        .map(|k| 1.0 + k as f32 * 1e-4)
        .find(|&x_max| {
            let s = reference::scales(x_max, true)[1];
            (reference::CLIP_SHRINK * x_max / s).round_ties_even() == 8.0
        })
        .unwrap();
    let (y, ..) = run(
        &[3.0 * x_max, -3.0 * x_max],
        &[1.0, 1.0],
        x_max,
        true,
        4,
        None,
    );
    let s4 = reference::scales(x_max, true)[1];
    assert_eq!(y, [8.0 * s4, -8.0 * s4]);
    // Refused settings.
    let bad_bits = FixedQuant::new(g, 10, 3, true, 0).unwrap_err();
    assert!(
        matches!(bad_bits, Error::InvalidArgument { .. }),
        "{bad_bits}"
    );
    let bad_mask = FixedQuant::new(g, 10, 4, true, 3).unwrap_err();
    assert!(matches!(bad_mask, Error::Shape { .. }), "{bad_mask}");
}
