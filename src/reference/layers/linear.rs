//! Matrix product and the fully connected layer.

use super::Float;
use crate::spec::LinearShape;

/// Row-major matrix product `C = op(A) · op(B)`, with `op(A)` of shape `[m, k]`, `op(B)` of shape
/// `[k, n]` and `C` of shape `[m, n]`.
///
/// `a` is stored `[m, k]`, or `[k, m]` when `trans_a` (then `op(A) = Aᵀ`); `b` is stored `[k, n]`,
/// or `[n, k]` when `trans_b`. Each `C[i][j]` is summed from zero over `p = 0, 1, …, k−1`.
pub fn gemm<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    b: &[T],
    trans_a: bool,
    trans_b: bool,
) -> Vec<T> {
    assert_eq!(a.len(), m * k, "gemm: a has the wrong length");
    assert_eq!(b.len(), k * n, "gemm: b has the wrong length");
    let a_at = |i: usize, p: usize| if trans_a { a[p * m + i] } else { a[i * k + p] };
    let b_at = |p: usize, j: usize| if trans_b { b[j * k + p] } else { b[p * n + j] };
    let mut c = vec![T::ZERO; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = T::ZERO;
            for p in 0..k {
                acc += a_at(i, p) * b_at(p, j);
            }
            c[i * n + j] = acc;
        }
    }
    c
}

/// `y = x · Wᵀ + b`: `x` `[n, d_in]`, `w` `[d_out, d_in]`, optional `bias` `[d_out]`, returns
/// `[n, d_out]`. The bias is added after the full dot product.
pub fn linear_forward<T: Float>(s: &LinearShape, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let mut y = gemm(s.n, s.d_out, s.d_in, x, w, false, true);
    if let Some(b) = bias {
        assert_eq!(b.len(), s.d_out, "linear: bias has the wrong length");
        for row in y.chunks_exact_mut(s.d_out) {
            for (v, &bo) in row.iter_mut().zip(b) {
                *v += bo;
            }
        }
    }
    y
}

/// Gradients of a linear layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearGrads<T> {
    /// `dL/dx = dy · W`, `[n, d_in]`.
    pub dx: Vec<T>,
    /// `dL/dW = dyᵀ · x`, `[d_out, d_in]`.
    pub dw: Vec<T>,
    /// `dL/db = Σ_n dy`, `[d_out]` (ignore it when the layer has no bias).
    pub db: Vec<T>,
}

/// Backward of [`linear_forward`] given `dy = dL/dy` `[n, d_out]`.
pub fn linear_backward<T: Float>(s: &LinearShape, x: &[T], w: &[T], dy: &[T]) -> LinearGrads<T> {
    let ones = vec![T::ONE; s.n];
    LinearGrads {
        dx: gemm(s.n, s.d_in, s.d_out, dy, w, false, false),
        dw: gemm(s.d_out, s.d_in, s.n, dy, x, true, false),
        db: gemm(s.d_out, 1, s.n, dy, &ones, true, false),
    }
}
