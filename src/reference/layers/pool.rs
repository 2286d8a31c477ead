//! ReLU, ReLU6, max and average pooling, and the residual add with its gradient accumulation.

use super::Float;
use crate::spec::{Nchw, Pool2dShape};

/// `max(x, 0)` elementwise.
pub fn relu_forward<T: Float>(x: &[T]) -> Vec<T> {
    x.iter()
        .map(|&v| if v > T::ZERO { v } else { T::ZERO })
        .collect()
}

/// `dL/dx = dy · 1[x > 0]`. `x_or_y` may be the ReLU's input or its output: both are `> 0` at the
/// same positions. The derivative at exactly 0 is taken as 0 (as PyTorch).
pub fn relu_backward<T: Float>(x_or_y: &[T], dy: &[T]) -> Vec<T> {
    assert_eq!(x_or_y.len(), dy.len(), "relu: dy has the wrong length");
    x_or_y
        .iter()
        .zip(dy)
        .map(|(&v, &d)| if v > T::ZERO { d } else { T::ZERO })
        .collect()
}

/// `min(max(x, 0), 6)` elementwise (PyTorch `ReLU6`).
pub fn relu6_forward<T: Float>(x: &[T]) -> Vec<T> {
    let six = T::from_f64(6.0);
    x.iter()
        .map(|&v| {
            if v <= T::ZERO {
                T::ZERO
            } else if v >= six {
                six
            } else {
                v
            }
        })
        .collect()
}

/// `dL/dx = dy · 1[0 < x < 6]` (PyTorch's `hardtanh` backward: the gradient is 0 where `x ≤ 0`
/// or `x ≥ 6`). `x_or_y` may be the input or the output: `0 < y < 6` exactly where `0 < x < 6`.
pub fn relu6_backward<T: Float>(x_or_y: &[T], dy: &[T]) -> Vec<T> {
    assert_eq!(x_or_y.len(), dy.len(), "relu6: dy has the wrong length");
    let six = T::from_f64(6.0);
    x_or_y
        .iter()
        .zip(dy)
        .map(|(&v, &d)| if v > T::ZERO && v < six { d } else { T::ZERO })
        .collect()
}

/// Max-pool (PyTorch `MaxPool2d`, padding −∞) over `x` of the input dimensions of `s`, which must
/// be valid ([`Pool2dShape::check`]).
///
/// Returns the output `[n, c, h_out, w_out]` and, per output element, the flat index into `x` of
/// the chosen input. The window is scanned in row-major order, padding skipped (a −∞ never wins),
/// and an element replaces the current maximum only if strictly greater, so ties go to the
/// **first** maximum in that order.
pub fn maxpool2d_forward<T: Float>(s: &Pool2dShape, x: &[T]) -> (Vec<T>, Vec<u32>) {
    let (xs, ys) = checked(s, x.len(), "maxpool");
    let mut y = Vec::with_capacity(ys.len());
    let mut argmax = Vec::with_capacity(ys.len());
    for n in 0..s.n {
        for c in 0..s.c {
            for i in 0..ys.h {
                for j in 0..ys.w {
                    let mut best: Option<usize> = None;
                    for k in window(s, i, j).map(|(u, v)| xs.index(n, c, u, v)) {
                        if best.is_none_or(|b| x[k] > x[b]) {
                            best = Some(k);
                        }
                    }
                    // A valid shape leaves at least one input element in every window.
                    let best = best.expect("maxpool: empty window");
                    y.push(x[best]);
                    argmax.push(u32::try_from(best).expect("maxpool: index exceeds u32"));
                }
            }
        }
    }
    (y, argmax)
}

/// Backward of [`maxpool2d_forward`]: `dx` (of length `x_len`) is zero except
/// `dx[argmax[k]] += dy[k]`, accumulated in increasing `k` (overlapping windows may pick the same
/// input).
pub fn maxpool2d_backward<T: Float>(x_len: usize, argmax: &[u32], dy: &[T]) -> Vec<T> {
    assert_eq!(argmax.len(), dy.len(), "maxpool: dy has the wrong length");
    let mut dx = vec![T::ZERO; x_len];
    for (&k, &d) in argmax.iter().zip(dy) {
        dx[k as usize] += d;
    }
    dx
}

/// [`maxpool2d_forward`] with a 2×2 window and stride 2: the output is `[n, c, h/2, w/2]`
/// (rounded down: an odd last row or column is dropped, as PyTorch).
pub fn maxpool2x2_forward<T: Float>(s: &Nchw, x: &[T]) -> (Vec<T>, Vec<u32>) {
    maxpool2d_forward(&Pool2dShape::square(s.n, s.c, s.h, s.w, 2, 2, 0), x)
}

/// Backward of [`maxpool2x2_forward`], which is [`maxpool2d_backward`].
pub fn maxpool2x2_backward<T: Float>(x_len: usize, argmax: &[u32], dy: &[T]) -> Vec<T> {
    maxpool2d_backward(x_len, argmax, dy)
}

/// Average pooling (PyTorch `AvgPool2d`, `count_include_pad=True`) over `x` of the input dimensions
/// of `s`, which must be valid: each output is the sum of its window's input elements in row-major
/// order, divided by `kh·kw` (padding counts as zeros). [`Pool2dShape::global`] makes it global
/// average pooling, `[n, c, h, w] → [n, c, 1, 1]`.
pub fn avgpool2d_forward<T: Float>(s: &Pool2dShape, x: &[T]) -> Vec<T> {
    let (xs, ys) = checked(s, x.len(), "avgpool");
    let count = T::from_usize(s.window());
    let mut y = Vec::with_capacity(ys.len());
    for n in 0..s.n {
        for c in 0..s.c {
            for i in 0..ys.h {
                for j in 0..ys.w {
                    let mut sum = T::ZERO;
                    for (u, v) in window(s, i, j) {
                        sum += x[xs.index(n, c, u, v)];
                    }
                    y.push(sum / count);
                }
            }
        }
    }
    y
}

/// Backward of [`avgpool2d_forward`]: every input element of output `k`'s window receives
/// `dy[k] / (kh·kw)`, accumulated in increasing `k`.
pub fn avgpool2d_backward<T: Float>(s: &Pool2dShape, dy: &[T]) -> Vec<T> {
    let (xs, ys) = checked(s, s.input().len(), "avgpool");
    assert_eq!(dy.len(), ys.len(), "avgpool: dy has the wrong length");
    let count = T::from_usize(s.window());
    let mut dx = vec![T::ZERO; xs.len()];
    let mut dy = dy.iter();
    for n in 0..s.n {
        for c in 0..s.c {
            for i in 0..ys.h {
                for j in 0..ys.w {
                    let g = *dy.next().expect("length checked") / count;
                    for (u, v) in window(s, i, j) {
                        dx[xs.index(n, c, u, v)] += g;
                    }
                }
            }
        }
    }
    dx
}

/// Checks `s` and the input length, returning the input and output dimensions.
fn checked(s: &Pool2dShape, x_len: usize, op: &str) -> (Nchw, Nchw) {
    if let Err(e) = s.check() {
        panic!("{op}: invalid shape {s:?}: {e}");
    }
    assert_eq!(x_len, s.input().len(), "{op}: input has the wrong length");
    (s.input(), s.output())
}

/// Input coordinates `(row, column)` of output `(i, j)`'s window, in row-major order, padding
/// skipped.
fn window(s: &Pool2dShape, i: usize, j: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let axis = |o: usize, a: usize| {
        // Window positions `o·stride − pad + t` for `t < kernel`, kept where inside `[0, size)`.
        let start = o * s.stride[a];
        let size = if a == 0 { s.h } else { s.w };
        (start..start + s.kernel[a])
            .filter_map(move |p| p.checked_sub(s.pad[a]).filter(|&q| q < size))
    };
    let cols = axis(j, 1);
    axis(i, 0).flat_map(move |u| cols.clone().map(move |v| (u, v)))
}

/// Residual add `a + b` elementwise (the forward of a shortcut join).
pub fn add_forward<T: Float>(a: &[T], b: &[T]) -> Vec<T> {
    let mut y = a.to_vec();
    accumulate(&mut y, b);
    y
}

/// Backward of [`add_forward`]: `dL/da = dL/db = dy`.
pub fn add_backward<T: Float>(dy: &[T]) -> (Vec<T>, Vec<T>) {
    (dy.to_vec(), dy.to_vec())
}

/// Gradient accumulation `dst += src` elementwise: a value consumed by two layers (a block input
/// feeding both the main path and the shortcut) receives the sum of their gradients.
pub fn accumulate<T: Float>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "accumulate: lengths differ");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}
