//! Spec §10 test vectors TV1–TV5 reproduced by the CPU reference.

use bayesian_bits::reference::quant::*;

/// Test-time gates for each bit width.
const EVAL_GATES: [(u32, [f32; 4]); 5] = [
    (2, [0.0, 0.0, 0.0, 0.0]),
    (4, [1.0, 0.0, 0.0, 0.0]),
    (8, [1.0, 1.0, 0.0, 0.0]),
    (16, [1.0, 1.0, 1.0, 0.0]),
    (32, [1.0, 1.0, 1.0, 1.0]),
];

/// Printed test vectors carry 8 significant digits: compare to that precision.
fn assert_close(actual: &[f32], expected: &[f64], rel: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let tol = rel * e.abs().max(1e-6);
        assert!(
            (f64::from(a) - e).abs() <= tol,
            "{what}[{i}]: got {a}, expected {e}"
        );
    }
}

#[test]
fn clip_shrink_constant() {
    assert_eq!(f64::from(CLIP_SHRINK), 0.999_999_880_790_710_4);
}

#[test]
fn tv1_unsigned_activation() {
    let s = scales(3.0, false);
    assert_eq!(
        s.map(f64::from),
        [
            1.0,
            0.200_000_002_980_232_24,
            0.011_764_706_112_444_4,
            4.577_706_567_943_096e-5,
            6.984_919_309_616_089e-10
        ]
    );
    let x = [-0.5, 0.0, 0.37, 1.26, 2.93, 3.5];
    let expected: [[f64; 6]; 5] = [
        [0.0, 0.0, 0.0, 1.0, 3.0, 3.0],
        [0.0, 0.0, 0.4, 1.2, 3.0, 3.0],
        [0.0, 0.0, 0.364_705_9, 1.258_823_5, 2.929_411_6, 3.0],
        [0.0, 0.0, 0.370_016_04, 1.260_013_7, 2.930_007, 3.0],
        [0.0, 0.0, 0.369_999_9, 1.26, 2.93, 2.999_999_5],
    ];
    for ((bits, gates), want) in EVAL_GATES.iter().zip(&expected) {
        assert_close(
            &quantize(&x, 3.0, false, *gates, None),
            want,
            2e-7,
            &format!("TV1 {bits}-bit"),
        );
    }
}

#[test]
fn tv2_signed_weights() {
    let x = [-2.0, -1.23, -0.74, -0.26, 0.1, 0.55, 1.17, 1.6];
    let expected: [[f64; 8]; 5] = [
        [-1.0, -1.0, -1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        [-1.4, -1.2, -0.8, -0.2, 0.2, 0.6, 1.2, 1.4],
        [
            -1.494_117_6,
            -1.235_294_1,
            -0.741_176_5,
            -0.258_823_54,
            0.105_882_35,
            0.552_941_2,
            1.164_705_9,
            1.494_117_6,
        ],
        [
            -1.499_977_1,
            -1.229_984,
            -0.739_986_3,
            -0.260_013_73,
            0.100_022_89,
            0.550_011_4,
            1.170_016,
            1.499_977_1,
        ],
        [
            -1.499_999_8,
            -1.23,
            -0.74,
            -0.26,
            0.100_000_02,
            0.549_999_95,
            1.169_999_8,
            1.499_999_8,
        ],
    ];
    for ((bits, gates), want) in EVAL_GATES.iter().zip(&expected) {
        assert_close(
            &quantize(&x, 1.5, true, *gates, None),
            want,
            2e-7,
            &format!("TV2 {bits}-bit"),
        );
    }
    // The P1 detector: a min/max clamp would round x = 0.1 at 4 bits to 0.0.
    assert_eq!(
        quantize(&[0.1], 1.5, true, [1.0, 0.0, 0.0, 0.0], None)[0],
        0.2
    );
}

#[test]
fn tv3_training_forward_and_gradients() {
    let w = [0.337, -0.913, 1.6, -0.061, 0.718, -1.127];
    let gates = [0.5, 0.25, 0.0, 0.0];
    let z2 = [0.8, 0.0];
    let parts: Vec<[f32; 5]> = w
        .iter()
        .map(|&v| decompose(v, 1.5, true, gates).parts)
        .collect();
    let x2: Vec<f32> = parts.iter().map(|p| p[0]).collect();
    let e4: Vec<f32> = parts.iter().map(|p| p[1]).collect();
    let e8: Vec<f32> = parts.iter().map(|p| p[2]).collect();
    assert_eq!(x2, [0.0, -1.0, 1.0, -0.0, 1.0, -1.0]);
    assert_close(&e4, &[0.4, 0.0, 0.4, 0.0, -0.2, -0.2], 1e-7, "TV3 e4");
    assert_close(
        &e8,
        &[
            -0.058_823_53,
            0.082_352_94,
            0.094_117_65,
            -0.058_823_53,
            -0.082_352_94,
            0.070_588_24,
        ],
        1e-7,
        "TV3 e8",
    );
    let out = quantize(&w, 1.5, true, gates, Some(&z2));
    assert_close(
        &out,
        &[0.154_117_64, -0.791_764_7, 0.969_411_8, 0.0, 0.0, 0.0],
        1e-7,
        "TV3 out",
    );

    let g = quantize_backward(&w, &[1.0; 6], 1.5, true, gates, Some(&z2));
    assert_eq!(g.dx, [0.8, 0.8, 0.0, 0.0, 0.0, 0.0]);
    let rel = |a: f64, e: f64| (a - e).abs() / e.abs();
    assert!(
        rel(g.dx_max, 0.528_376_429_284_948) < 1e-6,
        "d/dx_max {}",
        g.dx_max
    );
    assert!(
        rel(g.dgates[0], 0.663_529_422_134_161) < 1e-6,
        "d/dg4 {}",
        g.dgates[0]
    );
    assert!(
        rel(g.dgates[1], 0.047_058_825_194_835_67) < 1e-6,
        "d/dg8 {}",
        g.dgates[1]
    );
    assert!(
        rel(g.dz2[0], 0.414_705_888_833_850_6) < 1e-6,
        "d/dz2[0] {}",
        g.dz2[0]
    );
    assert!(
        rel(g.dz2[1], -0.208_823_532_331_734_9) < 1e-6,
        "d/dz2[1] {}",
        g.dz2[1]
    );
}

#[test]
fn tv4_hard_concrete() {
    let logits = [-3.0, -1.0, 0.0, 0.5, 2.0, 6.0];
    let u = [0.01, 0.3, 0.5, 0.7, 0.9, 0.5];
    let z = [0.0, 0.0, 0.5, 0.959_574_65, 1.0, 1.0];
    let dz = [0.0, 0.0, 0.45, 0.185_988_93, 0.0, 0.0];
    for i in 0..6 {
        let (zi, dzi) = hard_concrete(logits[i], u[i]);
        assert!((f64::from(zi) - z[i]).abs() < 1e-6, "z[{i}] = {zi}");
        assert!((f64::from(dzi) - dz[i]).abs() < 1e-6, "dz[{i}] = {dzi}");
    }
    let logits = [-6.0, -2.0, -1.0, -0.94, -0.93, 0.0, 2.0, 6.0];
    let p_on = [
        0.012_111_63,
        0.400_975_26,
        0.645_335_22,
        0.658_945_12,
        0.661_188_9,
        0.831_822_18,
        0.973_366_66,
        0.999_499_1,
    ];
    let gate = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
    for i in 0..8 {
        assert!(
            (f64::from(prob_nonzero(logits[i])) - p_on[i]).abs() < 1e-6,
            "P(z!=0) at {}",
            logits[i]
        );
        assert_eq!(test_gate(logits[i]), gate[i], "test gate at {}", logits[i]);
    }
    assert_eq!(bit_width([6.0, 6.0, -6.0, -6.0]), 8);
    assert_eq!(bit_width([6.0, -1.0, 6.0, 6.0]), 4);
    assert_eq!(bit_width([6.0, 6.0, 6.0, -0.5]), 32);
    assert_eq!(bit_width([-3.0, 6.0, 6.0, 6.0]), 2);
}

#[test]
fn tv5_regularizer() {
    type Case = ([f32; 4], Option<Vec<f32>>, f64, f64);
    let cases: [Case; 4] = [
        (
            [6.0, 6.0, -6.0, -6.0],
            Some(vec![6.0, -1.0, 0.0]),
            1.0,
            11.713_153_294_316_308,
        ),
        (
            [6.0, 6.0, -6.0, -6.0],
            None,
            524_288.0 / 3_276_800.0,
            2.950_122_471_716_136_4,
        ),
        (
            [6.0, 6.0, 6.0, 6.0],
            Some(vec![6.0; 4]),
            1.0,
            61.870_878_350_783_51,
        ),
        (
            [0.5, -1.0, 2.0, -3.0],
            None,
            8_388_608.0 / 150_994_944.0,
            2.147_348_157_136_857_5,
        ),
    ];
    for (chain, prune, ratio, want) in cases {
        let r = regularizer(chain, prune.as_deref(), ratio);
        assert!(
            (r.value - want).abs() / want < 1e-6,
            "R = {}, expected {want}",
            r.value
        );
    }
}

#[test]
fn regularizer_gradient_matches_finite_differences() {
    let chain = [0.7f32, -0.4, 1.3, 0.2];
    let prune = [0.5f32, -1.2, 2.0];
    let r = regularizer(chain, Some(&prune), 0.3);
    let h = 1e-2f32;
    let fd = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / f64::from(2.0 * h);
    for k in 0..4 {
        let numeric = fd(&|d| {
            let mut c = chain;
            c[k] += d;
            regularizer(c, Some(&prune), 0.3).value
        });
        assert!(
            (numeric - r.dchain[k]).abs() < 1e-3 * r.dchain[k].abs().max(1e-3),
            "dR/dl{} {numeric} vs {}",
            4 << k,
            r.dchain[k]
        );
    }
    for c in 0..3 {
        let numeric = fd(&|d| {
            let mut p = prune;
            p[c] += d;
            regularizer(chain, Some(&p), 0.3).value
        });
        assert!(
            (numeric - r.dprune[c]).abs() < 1e-3 * r.dprune[c].abs().max(1e-3),
            "dR/dl2[{c}]"
        );
    }
}

#[test]
fn hard_concrete_gradient_matches_finite_differences() {
    for (logit, u) in [(0.3f32, 0.4f32), (-0.5, 0.7), (1.0, 0.2)] {
        let (_, dz) = hard_concrete(logit, u);
        let h = 1e-3;
        let numeric = (hard_concrete(logit + h, u).0 - hard_concrete(logit - h, u).0) / (2.0 * h);
        assert!(
            (numeric - dz).abs() < 1e-3,
            "dz/dl at {logit}: {numeric} vs {dz}"
        );
    }
}

#[test]
fn logit_cutoff_switches_higher_gates_off() {
    let g = gates([6.0, -2.0, 6.0, 6.0], &[6.0], true, |_| 0.5);
    assert_eq!(g.chain[1..], [0.0; 3]);
    assert!(g.chain[0] > 0.0);
    assert_eq!(g.prune, [1.0]);
}

/// A signed x_max whose clipped extreme rounds directly to 2^(b−1) at `bits` (spec §1.7).
fn edge_x_max(bits: u32) -> f32 {
    let stage = stage_of_bits(bits).unwrap();
    (0..100_000)
        .map(|k| 1.0 + k as f32 * 1e-4)
        .find(|&x_max| {
            let s = scales(x_max, true)[stage];
            (CLIP_SHRINK * x_max / s).round_ties_even() == (1u32 << (bits - 1)) as f32
        })
        .expect("an x_max with the edge case")
}

/// The fixed-gate fine-tuning quantizer (spec §7.4) equals the decomposition with 0/1 gates of
/// the same width, forward and backward (§1.8: only the last enabled stage then contributes to
/// ∂L/∂x_max), up to rare one-step near-ties, except for direct rounding's ±2^(b−1) edge case,
/// which it must keep.
#[test]
fn fixed_quantizer_matches_the_decomposition_at_its_width() {
    let mask = [1.0, 0.0, 1.0, 1.0];
    let n = 400;
    for (bits, gates) in EVAL_GATES {
        for signed in [false, true] {
            for x_max in [0.7f32, 1.3, 2.9] {
                let x: Vec<f32> = (0..n)
                    .map(|i| x_max * 1.5 * ((i as f32 * 0.618_034).fract() * 2.0 - 1.0))
                    .collect();
                let dy: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
                let fixed = fixed_quantize(&x, x_max, signed, bits, Some(&mask));
                let bb = quantize(&x, x_max, signed, gates, Some(&mask));
                let what = format!("{bits} bits, signed {signed}, x_max {x_max}");
                // Float near-ties may differ by one step from 8 bits on (spec §1.7), rarely.
                let step = scales(x_max, signed)[stage_of_bits(bits).unwrap()];
                let mut near_ties = 0;
                for (i, (f, b)) in fixed.iter().zip(&bb).enumerate() {
                    let diff = (f - b).abs();
                    assert!(
                        diff <= step.max(1e-6 * x_max) * 1.001,
                        "{what}: x[{i}] = {}: {f} vs {b}",
                        x[i]
                    );
                    near_ties += usize::from(diff > 1e-6 * x_max);
                }
                assert!(
                    near_ties <= if bits <= 4 { 0 } else { n / 100 },
                    "{what}: {near_ties} near-ties"
                );
                let fg = fixed_quantize_backward(&x, &dy, x_max, signed, bits, Some(&mask));
                let bg = quantize_backward(&x, &dy, x_max, signed, gates, Some(&mask));
                assert_eq!(fg.dx, bg.dx, "{what}: dx");
                // At 32 bits x_c/s32 is beyond float32 integer precision: its δ is noise.
                if bits < 32 {
                    assert!(
                        (fg.dx_max - bg.dx_max).abs() <= 1e-4 * (1.0 + bg.dx_max.abs()),
                        "{what}: dx_max {} vs {}",
                        fg.dx_max,
                        bg.dx_max
                    );
                }
                assert!(
                    fixed[n / 4..n / 2].iter().all(|&v| v == 0.0),
                    "{what}: mask"
                );
            }
        }
    }
    // Direct rounding reaches 2^(b−1) where the decomposition stays on the symmetric grid.
    for (bits, gates) in &EVAL_GATES[1..4] {
        let x_max = edge_x_max(*bits);
        let s = scales(x_max, true)[stage_of_bits(*bits).unwrap()];
        let top = (1u32 << (bits - 1)) as f32;
        assert_eq!(
            fixed_quantize(&[2.0 * x_max], x_max, true, *bits, None),
            [s * top]
        );
        assert_eq!(
            fixed_quantize(&[-2.0 * x_max], x_max, true, *bits, None),
            [-s * top]
        );
        let bb = quantize(&[2.0 * x_max], x_max, true, *gates, None)[0];
        assert!(bb < s * top, "{bits} bits: {bb}");
    }
    assert_eq!(stage_of_bits(3), None);
}
