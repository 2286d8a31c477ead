//! Tests of the CPU layer reference: finite-difference checks of every backward (in `f64`, through
//! the same generic code the `f32` oracle runs), hand-computed values, and spec TV8.

use bayesian_bits::reference::layers::*;
use bayesian_bits::reference::quant::quantize;
use bayesian_bits::spec::{Conv2dShape, LinearShape, Nchw, Pool2dShape};

/// Deterministic uniform numbers in [−1, 1) (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        bits as f64 / (1u64 << 52) as f64 - 1.0
    }

    fn vec(&mut self, len: usize) -> Vec<f64> {
        (0..len).map(|_| self.next()).collect()
    }

    /// Values in [lo, lo + 1).
    fn positive(&mut self, len: usize, lo: f64) -> Vec<f64> {
        (0..len).map(|_| lo + 0.5 * (self.next() + 1.0)).collect()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Asserts that `analytic` is the gradient of `loss` at `x`, by central differences.
fn assert_grad(what: &str, x: &[f64], analytic: &[f64], loss: impl Fn(&[f64]) -> f64) {
    const H: f64 = 1e-6;
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let mut xp = x.to_vec();
    for i in 0..x.len() {
        xp[i] = x[i] + H;
        let up = loss(&xp);
        xp[i] = x[i] - H;
        let down = loss(&xp);
        xp[i] = x[i];
        let fd = (up - down) / (2.0 * H);
        assert!(
            (fd - analytic[i]).abs() <= 1e-6 * (1.0 + fd.abs()),
            "{what}[{i}]: analytic {} vs finite difference {fd}",
            analytic[i]
        );
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= rel * w.abs().max(1e-3),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

#[test]
fn gemm_transposes_and_hand_values() {
    // A = [[1, 2, 3], [4, 5, 6]], B = [[1, 0], [0, 1], [1, 1]]: A·B = [[4, 5], [10, 11]].
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
    let (at, bt) = (
        [1.0, 4.0, 2.0, 5.0, 3.0, 6.0],
        [1.0, 0.0, 1.0, 0.0, 1.0, 1.0],
    );
    let want = vec![4.0, 5.0, 10.0, 11.0];
    assert_eq!(gemm(2, 2, 3, &a, &b, false, false), want);
    assert_eq!(gemm(2, 2, 3, &at, &b, true, false), want);
    assert_eq!(gemm(2, 2, 3, &a, &bt, false, true), want);
    assert_eq!(gemm(2, 2, 3, &at, &bt, true, true), want);
}

#[test]
fn linear_forward_hand_values() {
    let s = LinearShape::new(2, 3, 2);
    let x = [1.0, 2.0, 3.0, -1.0, 0.0, 0.5];
    let w = [0.5, -1.0, 2.0, 1.0, 1.0, 1.0];
    let y = linear_forward(&s, &x, &w, Some(&[0.25, -0.5]));
    assert_eq!(y, vec![4.75, 5.5, 0.75, -1.0]);
}

#[test]
fn linear_gradients() {
    let mut rng = Rng(1);
    for n in [1, 3] {
        let s = LinearShape::new(n, 5, 3);
        let (x, w, b) = (rng.vec(n * 5), rng.vec(15), rng.vec(3));
        let r = rng.vec(n * 3);
        let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&r, &linear_forward(&s, x, w, Some(b)));
        let g = linear_backward(&s, &x, &w, &r);
        assert_grad("linear dx", &x, &g.dx, |x| loss(x, &w, &b));
        assert_grad("linear dw", &w, &g.dw, |w| loss(&x, w, &b));
        assert_grad("linear db", &b, &g.db, |b| loss(&x, &w, b));
    }
}

#[test]
fn conv_padding_counts_neighbours() {
    // All-ones 3×3 kernel with pad 1 on an all-ones 3×4 image counts the in-image neighbours.
    #[rustfmt::skip]
    let s = Conv2dShape::square(1, 1, 3, 4, 1, 3, 1);
    let y = conv2d_forward(&s, &[1.0f32; 12], &[1.0; 9], None);
    assert_eq!(
        y,
        vec![4.0, 6.0, 6.0, 4.0, 6.0, 9.0, 9.0, 6.0, 4.0, 6.0, 6.0, 4.0]
    );
}

#[test]
fn conv_with_full_kernel_is_linear() {
    // k = h = w and pad 0: a conv is a linear layer on the (C, H, W)-flattened input.
    let mut rng = Rng(2);
    #[rustfmt::skip]
    let s = Conv2dShape::square(2, 3, 5, 5, 4, 5, 0);
    let (x, w, b) = (
        rng.vec(s.input().len()),
        rng.vec(s.weight_len()),
        rng.vec(4),
    );
    let conv = conv2d_forward(&s, &x, &w, Some(&b));
    let lin = linear_forward(&LinearShape::new(2, 75, 4), &x, &w, Some(&b));
    assert_eq!((s.h_out(), s.w_out()), (1, 1));
    for (c, l) in conv.iter().zip(&lin) {
        assert!((c - l).abs() < 1e-12);
    }
}

#[test]
fn conv_gradients() {
    let mut rng = Rng(3);
    #[rustfmt::skip]
    let shapes = [
        Conv2dShape::square(1, 3, 5, 4, 5, 3, 1),
        Conv2dShape::square(2, 1, 7, 6, 3, 5, 0),
        Conv2dShape::square(1, 2, 5, 5, 1, 5, 0),
        Conv2dShape::square(2, 1, 1, 2, 3, 3, 1),
        // Strided and grouped (ResNet downsampling, MobileNet depthwise), a strided 1×1
        // projection, and a rectangular kernel with its own stride and padding per axis.
        Conv2dShape::square(2, 4, 7, 6, 6, 3, 1)
            .with_stride(2)
            .with_groups(2),
        Conv2dShape::square(1, 3, 6, 5, 3, 3, 1).with_groups(3),
        Conv2dShape::square(2, 4, 6, 6, 8, 1, 0).with_stride(2),
        Conv2dShape {
            kernel: [1, 3],
            stride: [2, 1],
            pad: [0, 1],
            ..Conv2dShape::square(1, 2, 5, 6, 4, 1, 0)
        },
    ];
    for s in shapes {
        let (x, w, b) = (
            rng.vec(s.input().len()),
            rng.vec(s.weight_len()),
            rng.vec(s.c_out),
        );
        let r = rng.vec(s.output().len());
        let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&r, &conv2d_forward(&s, x, w, Some(b)));
        let dx = conv2d_backward_data(&s, &r, &w);
        let (dw, db) = conv2d_backward_weight(&s, &x, &r);
        assert_grad("conv dx", &x, &dx, |x| loss(x, &w, &b));
        assert_grad("conv dw", &w, &dw, |w| loss(&x, w, &b));
        assert_grad("conv db", &b, &db, |b| loss(&x, &w, b));
    }
}

#[test]
fn relu_and_maxpool_gradients() {
    let mut rng = Rng(4);
    // Keep inputs away from the kinks (0 for ReLU, ties for max-pool) by more than the FD step.
    let x: Vec<f64> = rng
        .vec(60)
        .iter()
        .map(|v| v + 0.1f64.copysign(*v))
        .collect();
    let r = rng.vec(60);
    assert_grad("relu dx", &x, &relu_backward(&relu_forward(&x), &r), |x| {
        dot(&r, &relu_forward(x))
    });

    let s = Nchw::new(2, 3, 5, 2); // odd height: the last row is dropped
    let (y, argmax) = maxpool2x2_forward(&s, &x);
    assert_eq!(y.len(), 2 * 3 * 2);
    let r = rng.vec(y.len());
    let dx = maxpool2x2_backward(x.len(), &argmax, &r);
    assert_grad("maxpool dx", &x, &dx, |x| {
        dot(&r, &maxpool2x2_forward(&s, x).0)
    });
}

#[test]
fn relu6_gradient() {
    let mut rng = Rng(6);
    // Spread over [-4, 10), kept more than the FD step away from the kinks at 0 and 6.
    let x: Vec<f64> = rng
        .vec(120)
        .iter()
        .map(|v| 3.0 + 7.0 * v)
        .map(|v| {
            let near = |k: f64| (v - k).abs() < 0.05;
            if near(0.0) || near(6.0) {
                v + 0.1
            } else {
                v
            }
        })
        .collect();
    let y = relu6_forward(&x);
    assert!(y.contains(&0.0) && y.contains(&6.0) && y.iter().any(|&v| v > 0.0 && v < 6.0));
    let r = rng.vec(120);
    // From the input and from the output: the same mask.
    let from_x = relu6_backward(&x, &r);
    assert_eq!(from_x, relu6_backward(&y, &r));
    assert_grad("relu6 dx", &x, &from_x, |x| dot(&r, &relu6_forward(x)));
    // At the kinks the gradient is 0 (PyTorch's hardtanh backward), on both sides.
    let kinks = [0.0, 6.0, -0.0, 5.999, 1e-9, 6.001];
    let g = relu6_backward(&kinks, &[1.0; 6]);
    assert_eq!(g, [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    assert_eq!(relu6_forward(&kinks), [0.0, 6.0, 0.0, 5.999, 1e-9, 6.0]);
}

#[test]
fn maxpool_ties_go_to_first_in_row_major_order() {
    // One 3×5 plane: windows cover columns 0–1 and 2–3 of rows 0–1; row 2 and column 4 are dropped.
    #[rustfmt::skip]
    let x = [
        1.0f32, 1.0, 0.0, 2.0, 9.0,
        1.0,    1.0, 2.0, 1.0, 9.0,
        9.0,    9.0, 9.0, 9.0, 9.0,
    ];
    let s = Nchw::new(1, 1, 3, 5);
    let (y, argmax) = maxpool2x2_forward(&s, &x);
    assert_eq!(y, vec![1.0, 2.0]);
    assert_eq!(argmax, vec![0, 3]); // (0,0) of the first window, (0,1) of the second
    let dx = maxpool2x2_backward(x.len(), &argmax, &[10.0f32, 20.0]);
    let mut want = vec![0.0; 15];
    want[0] = 10.0;
    want[3] = 20.0;
    assert_eq!(dx, want);
}

/// Random BN parameters with positive γ and running variance.
fn bn_params(rng: &mut Rng, c: usize) -> [Vec<f64>; 4] {
    [
        rng.positive(c, 0.5),
        rng.vec(c),
        rng.vec(c),
        rng.positive(c, 0.5),
    ]
}

fn params(p: &[Vec<f64>; 4]) -> BnParams<'_, f64> {
    BnParams {
        gamma: &p[0],
        beta: &p[1],
        running_mean: &p[2],
        running_var: &p[3],
    }
}

#[test]
fn folded_bn_gradients() {
    let mut rng = Rng(5);
    let shapes = [
        Nchw::new(2, 3, 3, 5),
        Nchw::new(1, 2, 3, 3),
        Nchw::new(3, 4, 1, 1), // BN1d
    ];
    for s in shapes {
        let p = bn_params(&mut rng, s.c);
        let (y_q, y_fp, r) = (rng.vec(s.len()), rng.vec(s.len()), rng.vec(s.len()));
        let loss = |y_q: &[f64], y_fp: &[f64], gamma: &[f64], beta: &[f64]| {
            let p = BnParams {
                gamma,
                beta,
                ..params(&p)
            };
            dot(&r, &folded_bn_train_forward(&s, y_q, y_fp, &p).out)
        };
        let g = folded_bn_train_backward(&s, &r, &y_q, &y_fp, &params(&p));
        let (gamma, beta) = (&p[0], &p[1]);
        assert_grad("bn dy_q", &y_q, &g.dy_q, |v| loss(v, &y_fp, gamma, beta));
        assert_grad("bn dy_fp", &y_fp, &g.dy_fp, |v| loss(&y_q, v, gamma, beta));
        assert_grad("bn dgamma", gamma, &g.dgamma, |v| {
            loss(&y_q, &y_fp, v, beta)
        });
        assert_grad("bn dbeta", beta, &g.dbeta, |v| loss(&y_q, &y_fp, gamma, v));
    }
}

#[test]
fn fold_weight_gradients() {
    let mut rng = Rng(6);
    let (w, gamma, var, r) = (
        rng.vec(3 * 2 * 3 * 3),
        rng.positive(3, 0.5),
        rng.positive(3, 0.5),
        rng.vec(54),
    );
    let (dw, dgamma) = fold_weight_backward(&r, &w, &gamma, &var);
    assert_grad("fold dw", &w, &dw, |v| {
        dot(&r, &fold_weight(v, &gamma, &var))
    });
    assert_grad("fold dgamma", &gamma, &dgamma, |v| {
        dot(&r, &fold_weight(&w, v, &var))
    });
}

/// Without a quantizer the folded layer is plain training-mode BN after a conv; its pieces chain
/// into the gradients of the whole layer (spec §5.2): W through both convs, γ through both terms.
#[test]
fn folded_conv_bn_without_quantizer_is_batch_norm() {
    let mut rng = Rng(7);
    #[rustfmt::skip]
    let s = Conv2dShape::square(2, 3, 4, 3, 3, 3, 1);
    let (x, w) = (rng.vec(s.input().len()), rng.vec(s.weight_len()));
    let p = bn_params(&mut rng, s.c_out);
    let r = rng.vec(s.output().len());
    let forward = |w: &[f64], gamma: &[f64]| {
        let y_q = conv2d_forward(&s, &x, &fold_weight(w, gamma, &p[3]), None);
        let y_fp = conv2d_forward(&s, &x, w, None);
        let bn = folded_bn_train_forward(
            &s.output(),
            &y_q,
            &y_fp,
            &BnParams {
                gamma,
                ..params(&p)
            },
        );
        (y_q, y_fp, bn)
    };

    let (y_q, y_fp, bn) = forward(&w, &p[0]);
    let o = s.output();
    for (i, out) in bn.out.iter().enumerate() {
        let c = i / (o.h * o.w) % o.c;
        let plain_bn = p[0][c] * (y_fp[i] - bn.batch_mean[c]) / bn.batch_std[c] + p[1][c];
        assert!((out - plain_bn).abs() < 1e-12);
    }

    let g = folded_bn_train_backward(&o, &r, &y_q, &y_fp, &params(&p));
    let (dwf, _) = conv2d_backward_weight(&s, &x, &g.dy_q);
    let (dw_fold, dgamma_fold) = fold_weight_backward(&dwf, &w, &p[0], &p[3]);
    let (dw_fp, _) = conv2d_backward_weight(&s, &x, &g.dy_fp);
    let dw: Vec<f64> = dw_fold.iter().zip(&dw_fp).map(|(a, b)| a + b).collect();
    let dgamma: Vec<f64> = dgamma_fold
        .iter()
        .zip(&g.dgamma)
        .map(|(a, b)| a + b)
        .collect();
    assert_grad("folded conv dW", &w, &dw, |v| {
        dot(&r, &forward(v, &p[0]).2.out)
    });
    assert_grad("folded conv dgamma", &p[0], &dgamma, |v| {
        dot(&r, &forward(&w, v).2.out)
    });
}

#[test]
fn cross_entropy_hand_values() {
    #[rustfmt::skip]
    let logits = [
        1.0f32, 2.0, 3.0,   // argmax 2 = label: correct
        0.5, 0.5, -1.0,     // tie between 0 and 1 goes to 0 ≠ label 1
        1000.0, 0.0, 1000.0, // would overflow exp without the max shift; tie → 0 ≠ label 1
    ];
    let ce = softmax_cross_entropy(&logits, &[2, 1, 1], 3);
    let e = f64::exp;
    let rows = [
        (e(-2.0) + e(-1.0) + 1.0).ln(),
        (2.0 + e(-1.5)).ln(),
        2f64.ln() + 1000.0,
    ];
    assert_close("loss", &[ce.loss], &[rows.iter().sum::<f64>() / 3.0], 1e-6);
    let s0 = e(-2.0) + e(-1.0) + 1.0;
    let s1 = 2.0 + e(-1.5);
    #[rustfmt::skip]
    let want = [
        e(-2.0) / s0, e(-1.0) / s0, 1.0 / s0 - 1.0,
        1.0 / s1, 1.0 / s1 - 1.0, e(-1.5) / s1,
        0.5, -1.0, 0.5,
    ]
    .map(|v| v / 3.0);
    assert_close("dlogits", &ce.dlogits, &want, 1e-6);
    assert_eq!(ce.correct, 1);
}

#[test]
fn cross_entropy_gradient() {
    let mut rng = Rng(8);
    let (classes, labels) = (5, [4, 0, 2, 2]);
    let logits: Vec<f64> = rng.vec(20).iter().map(|v| 3.0 * v).collect();
    let ce = softmax_cross_entropy(&logits, &labels, classes);
    assert_grad("ce dlogits", &logits, &ce.dlogits, |z| {
        softmax_cross_entropy(z, &labels, classes).loss
    });
}

/// Expected values computed by hand with PyTorch's `torch.optim.Adam` update in double precision.
#[test]
fn adam_three_steps_match_pytorch() {
    let mut params = [1.0f32, -0.5, 0.0];
    let mut state = AdamState::new(3);
    let grads = [[0.1, -0.2, 0.0], [0.3, 0.1, 1e-3], [-0.2, 0.4, 0.0]];
    let want = [
        [0.990_000_001, -0.490_000_000_5, 0.0],
        [
            0.980_822_190_220_558_9,
            -0.487_336_630_271_867_6,
            -0.007_441_263_026_631_018,
        ],
        [
            0.978_243_152_288_979_3,
            -0.491_909_947_999_135,
            -0.013_193_362_610_905_163,
        ],
    ];
    for (g, w) in grads.iter().zip(&want) {
        state.update(&mut params, g, 0.01);
        assert_close("adam params", &params, w, 1e-6);
    }
    assert_eq!(state.step, 3);
}

/// Spec §10 TV8: folded-BN linear 3→2, weights 8-bit signed with x_max = 1, batch of 4.
#[test]
fn tv8_folded_bn_linear() {
    let w = [0.5f32, -0.25, 0.125, -0.75, 0.3, 0.6];
    let (gamma, beta) = ([1.5f32, 0.8], [0.1f32, -0.2]);
    let (running_mean, running_var) = ([0.2f32, -0.1], [2.0f32, 0.5]);
    let x = [
        1.0f32, 2.0, -1.0, 0.5, -0.5, 0.25, -1.0, 0.0, 2.0, 0.3, 0.7, -0.2,
    ];
    let (s, bn) = (LinearShape::new(4, 3, 2), Nchw::new(4, 2, 1, 1));
    let q = |wf: &[f32]| quantize(wf, 1.0, true, [1.0, 1.0, 0.0, 0.0], Some(&[1.0, 1.0]));

    let wf = fold_weight(&w, &gamma, &running_var);
    #[rustfmt::skip]
    assert_close("folded W", &wf, &[0.5303287506103516, -0.2651643753051758, 0.1325821876525879,
        -0.8485196828842163, 0.33940789103507996, 0.6788157820701599], 1e-6);
    let p = BnParams {
        gamma: &gamma,
        beta: &beta,
        running_mean: &running_mean,
        running_var: &running_var,
    };
    let y_q = linear_forward(&s, &x, &q(&wf), None);
    let y_fp = linear_forward(&s, &x, &w, None);
    let train = folded_bn_train_forward(&bn, &y_q, &y_fp, &p);
    #[rustfmt::skip]
    assert_close("train out", &train.out, &[-0.6325756311416626, -0.9075673818588257,
        2.601464033126831, -0.6155725717544556, -1.3935260772705078, 1.1588575839996338,
        -0.1760053038597107, -0.43561917543411255], 1e-6);
    assert_close(
        "running mean",
        &train.running_mean,
        &[0.1795312464237213, -0.07274999469518661],
        1e-6,
    );
    assert_close(
        "running var",
        &train.running_var,
        &[1.8081858158111572, 0.596827507019043],
        1e-6,
    );

    let p = BnParams {
        running_mean: &train.running_mean,
        running_var: &train.running_var,
        ..p
    };
    let wq = q(&fold_weight(&w, &gamma, &train.running_var));
    let eval = linear_forward(&s, &x, &wq, Some(&fold_bias(&p)));
    #[rustfmt::skip]
    assert_close("eval out", &eval, &[-0.2492862343788147, -0.8932927846908569,
        0.3546353578567505, -0.5148614048957825, -0.3747764527797699, 1.8910208940505981,
        -0.15909014642238617, -0.2619202435016632], 1e-6);
}

/// Pooling shapes with odd sizes, overlapping windows, padding, rectangular windows and 1×1
/// outputs.
fn pool_shapes() -> Vec<Pool2dShape> {
    vec![
        Pool2dShape::square(2, 3, 7, 5, 3, 2, 1),
        Pool2dShape::square(1, 2, 6, 6, 3, 1, 0),
        Pool2dShape {
            kernel: [2, 3],
            stride: [1, 2],
            pad: [1, 1],
            ..Pool2dShape::square(3, 1, 4, 7, 1, 1, 0)
        },
        Pool2dShape::square(1, 2, 3, 3, 3, 3, 0),
        Pool2dShape::global(2, 3, 7, 7),
        Pool2dShape::global(3, 2, 1, 1),
    ]
}

#[test]
fn general_pooling_gradients_match_finite_differences() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for s in pool_shapes() {
        assert_eq!(s.check(), Ok(()), "{s:?}");
        let x = rng.vec(s.input().len());
        let (y, argmax) = maxpool2d_forward(&s, &x);
        assert_eq!(y.len(), s.output().len(), "{s:?}");
        let r = rng.vec(y.len());
        let dx = maxpool2d_backward(x.len(), &argmax, &r);
        assert_grad(&format!("maxpool dx {s:?}"), &x, &dx, |x| {
            dot(&r, &maxpool2d_forward(&s, x).0)
        });
        let dx = avgpool2d_backward(&s, &r);
        assert_grad(&format!("avgpool dx {s:?}"), &x, &dx, |x| {
            dot(&r, &avgpool2d_forward(&s, x))
        });
    }
}

#[test]
fn maxpool_pads_with_minus_infinity_and_sums_overlapping_windows() {
    // 3×3 window, stride 2, padding 1 over a 3×3 plane: four overlapping 2×2 outputs. The
    // negative inputs would lose to a zero padding; the centre is the maximum of every window.
    #[rustfmt::skip]
    let x = [
        -5.0f32, -4.0, -6.0,
        -3.0,    -1.0, -2.0,
        -7.0,    -2.0, -8.0,
    ];
    let s = Pool2dShape::square(1, 1, 3, 3, 3, 2, 1);
    let (y, argmax) = maxpool2d_forward(&s, &x);
    assert_eq!(y, vec![-1.0; 4]);
    assert_eq!(argmax, vec![4; 4]);
    let dx = maxpool2d_backward(x.len(), &argmax, &[1.0f32, 2.0, 4.0, 8.0]);
    let mut want = vec![0.0; 9];
    want[4] = 15.0;
    assert_eq!(dx, want);

    // Ties: the first maximum in row-major window order, the padding skipped. Window (0, 0)
    // covers rows 0–1, columns 0–1 of the input; window (0, 1) rows 0–1, columns 1–2.
    let x = [2.0f32; 9];
    let (y, argmax) = maxpool2d_forward(&s, &x);
    assert_eq!(y, vec![2.0; 4]);
    assert_eq!(argmax, vec![0, 1, 3, 4]);
}

#[test]
fn avgpool_counts_padding_and_global_pool_averages_planes() {
    // 3×3 window, stride 1, padding 1 over a 2×2 plane: each window holds all four inputs and
    // five zeros of padding, and divides by 9 (count_include_pad).
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let s = Pool2dShape::square(1, 1, 2, 2, 3, 1, 1);
    assert_eq!(avgpool2d_forward(&s, &x), vec![10.0 / 9.0; 4]);
    assert_eq!(avgpool2d_backward(&s, &[9.0f32; 4]), vec![4.0; 4]);

    // Global pooling: one mean per (n, c) plane.
    let g = Pool2dShape::global(2, 1, 1, 3);
    let x = [1.0f32, 2.0, 6.0, -3.0, 0.0, 0.0];
    assert_eq!(avgpool2d_forward(&g, &x), vec![3.0, -1.0]);
    assert_eq!(
        avgpool2d_backward(&g, &[3.0f32, 6.0]),
        vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    );
}

#[test]
fn residual_add_and_gradient_accumulation() {
    let mut rng = Rng(7);
    let (a, b, r) = (rng.vec(11), rng.vec(11), rng.vec(11));
    let (da, db) = add_backward(&r);
    assert_grad("add da", &a, &da, |a| dot(&r, &add_forward(a, &b)));
    assert_grad("add db", &b, &db, |b| dot(&r, &add_forward(&a, b)));
    assert_eq!(add_forward(&[1.0f32, -2.0], &[0.5, 2.0]), vec![1.5, 0.0]);

    // A block input feeding the main path and the shortcut: its gradient is the sum of both.
    let mut d = vec![1.0f32, 2.0, 3.0];
    accumulate(&mut d, &[10.0, 20.0, 30.0]);
    assert_eq!(d, vec![11.0, 22.0, 33.0]);
}

/// Expected values computed in double precision with `torch.optim.SGD`'s update (dampening 0,
/// first step `buf = d`), for Nesterov with weight decay and for plain momentum.
#[test]
fn sgd_three_steps_match_pytorch() {
    let grads = [[0.1, -0.2, 0.0], [0.3, 0.1, 1e-3], [-0.2, 0.4, 0.0]];
    let cases = [
        (
            SgdConfig {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 0.01,
            },
            [
                [0.9791, -0.461_05, 0.249_525],
                [0.911_329_71, -0.462_569_005, 0.248_658_402_5],
                [
                    0.914_486_112_551,
                    -0.530_472_173_390_5,
                    0.247_720_586_285_25,
                ],
            ],
        ),
        (
            SgdConfig {
                momentum: 0.9,
                nesterov: false,
                weight_decay: 0.0,
            },
            [
                [0.99, -0.48, 0.25],
                [0.951, -0.472, 0.2499],
                [0.9359, -0.5048, 0.249_81],
            ],
        ),
    ];
    for (cfg, want) in cases {
        assert_eq!(cfg.problem(), None);
        let mut params = [1.0f32, -0.5, 0.25];
        let mut state = SgdState::new(3);
        for (g, w) in grads.iter().zip(&want) {
            state.update(&mut params, g, 0.1, &cfg);
            assert_close("sgd params", &params, w, 1e-6);
        }
        assert_eq!(state.step, 3);
    }
    // Plain SGD keeps no buffer; refused settings are named.
    let plain = SgdConfig {
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    let mut params = [1.0f32];
    let mut state = SgdState::new(1);
    state.update(&mut params, &[0.5], 0.1, &plain);
    assert_eq!((params[0], state.buf[0]), (0.95, 0.0));
    let nesterov_without = SgdConfig {
        nesterov: true,
        ..plain
    };
    assert!(nesterov_without.problem().unwrap().contains("Nesterov"));
    let negative = SgdConfig {
        momentum: -0.1,
        ..plain
    };
    assert!(negative.problem().unwrap().contains("-0.1"));
}
