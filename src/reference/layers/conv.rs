//! 2-D convolution, stride 1, square kernel, zero padding (PyTorch `Conv2d`, i.e. a
//! cross-correlation).

use super::{Float, Nchw};

/// Dimensions of a stride-1 convolution: input `[n, c_in, h, w]`, weight `[c_out, c_in, k, k]`,
/// `pad` zeros on every side, output `[n, c_out, h_out, w_out]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height and width.
    pub k: usize,
    /// Zero padding on each side.
    pub pad: usize,
}

impl Conv2dShape {
    /// Output height, `h + 2·pad − k + 1`; panics if the kernel is taller than the padded input.
    pub fn h_out(&self) -> usize {
        (self.h + 2 * self.pad + 1)
            .checked_sub(self.k)
            .expect("conv: kernel taller than input")
    }

    /// Output width, `w + 2·pad − k + 1`; panics if the kernel is wider than the padded input.
    pub fn w_out(&self) -> usize {
        (self.w + 2 * self.pad + 1)
            .checked_sub(self.k)
            .expect("conv: kernel wider than input")
    }

    /// Dimensions of the input.
    pub fn input(&self) -> Nchw {
        Nchw::new(self.n, self.c_in, self.h, self.w)
    }

    /// Dimensions of the output.
    pub fn output(&self) -> Nchw {
        Nchw::new(self.n, self.c_out, self.h_out(), self.w_out())
    }

    /// Number of weights, `c_out·c_in·k·k`.
    pub fn weight_len(&self) -> usize {
        self.c_out * self.c_in * self.k * self.k
    }

    /// Flat index of weight `(o, c, u, v)`.
    fn weight_index(&self, o: usize, c: usize, u: usize, v: usize) -> usize {
        ((o * self.c_in + c) * self.k + u) * self.k + v
    }

    /// Input coordinates read by output `(i, j)` through kernel tap `(u, v)`: `(i+u−pad, j+v−pad)`,
    /// or `None` where that falls in the zero padding.
    fn tap(&self, i: usize, j: usize, u: usize, v: usize) -> Option<(usize, usize)> {
        let y = (i + u).checked_sub(self.pad).filter(|&y| y < self.h)?;
        let x = (j + v).checked_sub(self.pad).filter(|&x| x < self.w)?;
        Some((y, x))
    }

    /// The inverse of [`Self::tap`]: the output position `(y+pad−u, x+pad−v)` that reads input
    /// `(y, x)` through tap `(u, v)`, or `None` where that lies outside the output.
    fn tapped_by(&self, y: usize, x: usize, u: usize, v: usize) -> Option<(usize, usize)> {
        let i = (y + self.pad)
            .checked_sub(u)
            .filter(|&i| i < self.h_out())?;
        let j = (x + self.pad)
            .checked_sub(v)
            .filter(|&j| j < self.w_out())?;
        Some((i, j))
    }
}

/// `y[n,o,i,j] = Σ_c Σ_u Σ_v x[n, c, i+u−pad, j+v−pad] · w[o,c,u,v] (+ bias[o])`, with `x = 0` in
/// the padding. Summed from zero in the order `c, u, v`; the bias is added last.
pub fn conv2d_forward<T: Float>(
    s: &Conv2dShape,
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
) -> Vec<T> {
    let (xs, ys) = (s.input(), s.output());
    assert_eq!(x.len(), xs.len(), "conv: input has the wrong length");
    assert_eq!(
        weight.len(),
        s.weight_len(),
        "conv: weight has the wrong length"
    );
    let mut y = vec![T::ZERO; ys.len()];
    for n in 0..s.n {
        for o in 0..s.c_out {
            for i in 0..ys.h {
                for j in 0..ys.w {
                    let mut acc = T::ZERO;
                    for c in 0..s.c_in {
                        for u in 0..s.k {
                            for v in 0..s.k {
                                if let Some((yy, xx)) = s.tap(i, j, u, v) {
                                    acc += x[xs.index(n, c, yy, xx)]
                                        * weight[s.weight_index(o, c, u, v)];
                                }
                            }
                        }
                    }
                    if let Some(b) = bias {
                        acc += b[o];
                    }
                    y[ys.index(n, o, i, j)] = acc;
                }
            }
        }
    }
    y
}

/// `dL/dx` of [`conv2d_forward`] given `dy = dL/dy` `[n, c_out, h_out, w_out]`, as a gather:
/// `dx[n,c,y,x] = Σ_o Σ_u Σ_v dy[n, o, y−u+pad, x−v+pad] · w[o,c,u,v]` over the output positions
/// that exist, summed from zero in the order `o, u, v`.
pub fn conv2d_backward_data<T: Float>(s: &Conv2dShape, dy: &[T], weight: &[T]) -> Vec<T> {
    let (xs, ys) = (s.input(), s.output());
    assert_eq!(dy.len(), ys.len(), "conv: dy has the wrong length");
    assert_eq!(
        weight.len(),
        s.weight_len(),
        "conv: weight has the wrong length"
    );
    let mut dx = vec![T::ZERO; xs.len()];
    for n in 0..s.n {
        for c in 0..s.c_in {
            for yy in 0..s.h {
                for xx in 0..s.w {
                    let mut acc = T::ZERO;
                    for o in 0..s.c_out {
                        for u in 0..s.k {
                            for v in 0..s.k {
                                if let Some((i, j)) = s.tapped_by(yy, xx, u, v) {
                                    acc += dy[ys.index(n, o, i, j)]
                                        * weight[s.weight_index(o, c, u, v)];
                                }
                            }
                        }
                    }
                    dx[xs.index(n, c, yy, xx)] = acc;
                }
            }
        }
    }
    dx
}

/// `(dL/dw, dL/dbias)` of [`conv2d_forward`] given `dy`:
/// `dw[o,c,u,v] = Σ_n Σ_i Σ_j dy[n,o,i,j] · x[n, c, i+u−pad, j+v−pad]` and
/// `dbias[o] = Σ_n Σ_i Σ_j dy[n,o,i,j]`, each summed from zero in the order `n, i, j`.
pub fn conv2d_backward_weight<T: Float>(s: &Conv2dShape, x: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let (xs, ys) = (s.input(), s.output());
    assert_eq!(x.len(), xs.len(), "conv: input has the wrong length");
    assert_eq!(dy.len(), ys.len(), "conv: dy has the wrong length");
    let mut dw = vec![T::ZERO; s.weight_len()];
    let mut db = vec![T::ZERO; s.c_out];
    for o in 0..s.c_out {
        for c in 0..s.c_in {
            for u in 0..s.k {
                for v in 0..s.k {
                    let mut acc = T::ZERO;
                    for n in 0..s.n {
                        for i in 0..ys.h {
                            for j in 0..ys.w {
                                if let Some((yy, xx)) = s.tap(i, j, u, v) {
                                    acc += dy[ys.index(n, o, i, j)] * x[xs.index(n, c, yy, xx)];
                                }
                            }
                        }
                    }
                    dw[s.weight_index(o, c, u, v)] = acc;
                }
            }
        }
        let mut acc = T::ZERO;
        for n in 0..s.n {
            for i in 0..ys.h {
                for j in 0..ys.w {
                    acc += dy[ys.index(n, o, i, j)];
                }
            }
        }
        db[o] = acc;
    }
    (dw, db)
}
