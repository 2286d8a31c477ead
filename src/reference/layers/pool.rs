//! ReLU and 2×2 max-pooling.

use super::Float;
use crate::spec::Nchw;

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

/// Max-pool with a 2×2 window and stride 2 over `x` of dimensions `s`; the output is
/// `[n, c, h/2, w/2]` (rounded down: an odd last row or column is dropped, as PyTorch).
///
/// Returns the output and, per output element, the flat index into `x` of the chosen input.
/// The window is scanned in row-major order `(0,0), (0,1), (1,0), (1,1)` and an element replaces
/// the current maximum only if strictly greater, so ties go to the **first** maximum in that order.
pub fn maxpool2x2_forward<T: Float>(s: &Nchw, x: &[T]) -> (Vec<T>, Vec<u32>) {
    assert_eq!(x.len(), s.len(), "maxpool: input has the wrong length");
    let ys = Nchw {
        h: s.h / 2,
        w: s.w / 2,
        ..*s
    };
    let mut y = Vec::with_capacity(ys.len());
    let mut argmax = Vec::with_capacity(ys.len());
    for n in 0..s.n {
        for c in 0..s.c {
            for i in 0..ys.h {
                for j in 0..ys.w {
                    let mut best = s.index(n, c, 2 * i, 2 * j);
                    for (du, dv) in [(0, 1), (1, 0), (1, 1)] {
                        let k = s.index(n, c, 2 * i + du, 2 * j + dv);
                        if x[k] > x[best] {
                            best = k;
                        }
                    }
                    y.push(x[best]);
                    argmax.push(u32::try_from(best).expect("maxpool: index exceeds u32"));
                }
            }
        }
    }
    (y, argmax)
}

/// Backward of [`maxpool2x2_forward`]: `dx` (of length `x_len`) is zero except
/// `dx[argmax[k]] += dy[k]`.
pub fn maxpool2x2_backward<T: Float>(x_len: usize, argmax: &[u32], dy: &[T]) -> Vec<T> {
    assert_eq!(argmax.len(), dy.len(), "maxpool: dy has the wrong length");
    let mut dx = vec![T::ZERO; x_len];
    for (&k, &d) in argmax.iter().zip(dy) {
        dx[k as usize] += d;
    }
    dx
}
