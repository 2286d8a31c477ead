//! 2-D convolution (PyTorch `Conv2d`, a cross-correlation) with stride, zero padding and channel
//! groups, on the shapes of [`Conv2dShape`].

use super::Float;
use crate::spec::Conv2dShape;

/// Flat index of weight `(o, cl, u, v)`, `cl` being the channel within `o`'s group.
fn weight_index(s: &Conv2dShape, o: usize, cl: usize, u: usize, v: usize) -> usize {
    ((o * s.c_in_per_group() + cl) * s.kernel[0] + u) * s.kernel[1] + v
}

/// Input coordinates read by output `(i, j)` through kernel tap `(u, v)`:
/// `(i·sh + u − pad_h, j·sw + v − pad_w)`, or `None` where that falls in the zero padding.
fn tap(s: &Conv2dShape, i: usize, j: usize, u: usize, v: usize) -> Option<(usize, usize)> {
    let y = (i * s.stride[0] + u)
        .checked_sub(s.pad[0])
        .filter(|&y| y < s.h)?;
    let x = (j * s.stride[1] + v)
        .checked_sub(s.pad[1])
        .filter(|&x| x < s.w)?;
    Some((y, x))
}

/// The inverse of [`tap`]: the output position `((y + pad_h − u) / sh, (x + pad_w − v) / sw)`
/// that reads input `(y, x)` through tap `(u, v)`, or `None` where no output does (outside the
/// output, or between strides).
fn tapped_by(s: &Conv2dShape, y: usize, x: usize, u: usize, v: usize) -> Option<(usize, usize)> {
    let di = (y + s.pad[0]).checked_sub(u)?;
    let dj = (x + s.pad[1]).checked_sub(v)?;
    if !di.is_multiple_of(s.stride[0]) || !dj.is_multiple_of(s.stride[1]) {
        return None;
    }
    let (i, j) = (di / s.stride[0], dj / s.stride[1]);
    (i < s.h_out() && j < s.w_out()).then_some((i, j))
}

fn check(s: &Conv2dShape) {
    if let Err(e) = s.check() {
        panic!("conv: invalid shape {s:?}: {e}");
    }
}

/// `y[n,o,i,j] = Σ_c Σ_u Σ_v x[n, g·cg + c, i·sh+u−pad_h, j·sw+v−pad_w] · w[o,c,u,v] (+ bias[o])`
/// over the `cg = c_in / groups` channels of `o`'s group `g`, with `x = 0` in the padding. Summed
/// from zero in the order `c, u, v`; the bias is added last. Panics on an invalid shape.
pub fn conv2d_forward<T: Float>(
    s: &Conv2dShape,
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
) -> Vec<T> {
    check(s);
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
                    let c0 = o / s.c_out_per_group() * s.c_in_per_group();
                    for c in 0..s.c_in_per_group() {
                        for u in 0..s.kernel[0] {
                            for v in 0..s.kernel[1] {
                                if let Some((yy, xx)) = tap(s, i, j, u, v) {
                                    acc += x[xs.index(n, c0 + c, yy, xx)]
                                        * weight[weight_index(s, o, c, u, v)];
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
/// `dx[n,c,y,x] = Σ_o Σ_u Σ_v dy[n, o, (y−u+pad_h)/sh, (x−v+pad_w)/sw] · w[o, c mod cg, u, v]`
/// over the output channels `o` of `c`'s group and the output positions that exist (the
/// divisions exact), summed from zero in the order `o, u, v`. Panics on an invalid shape.
pub fn conv2d_backward_data<T: Float>(s: &Conv2dShape, dy: &[T], weight: &[T]) -> Vec<T> {
    check(s);
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
                    let (g, cl) = (c / s.c_in_per_group(), c % s.c_in_per_group());
                    for o in g * s.c_out_per_group()..(g + 1) * s.c_out_per_group() {
                        for u in 0..s.kernel[0] {
                            for v in 0..s.kernel[1] {
                                if let Some((i, j)) = tapped_by(s, yy, xx, u, v) {
                                    acc += dy[ys.index(n, o, i, j)]
                                        * weight[weight_index(s, o, cl, u, v)];
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
/// `dw[o,c,u,v] = Σ_n Σ_i Σ_j dy[n,o,i,j] · x[n, g·cg + c, i·sh+u−pad_h, j·sw+v−pad_w]` and
/// `dbias[o] = Σ_n Σ_i Σ_j dy[n,o,i,j]`, each summed from zero in the order `n, i, j`.
pub fn conv2d_backward_weight<T: Float>(s: &Conv2dShape, x: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    check(s);
    let (xs, ys) = (s.input(), s.output());
    assert_eq!(x.len(), xs.len(), "conv: input has the wrong length");
    assert_eq!(dy.len(), ys.len(), "conv: dy has the wrong length");
    let mut dw = vec![T::ZERO; s.weight_len()];
    let mut db = vec![T::ZERO; s.c_out];
    for o in 0..s.c_out {
        let c0 = o / s.c_out_per_group() * s.c_in_per_group();
        for c in 0..s.c_in_per_group() {
            for u in 0..s.kernel[0] {
                for v in 0..s.kernel[1] {
                    let mut acc = T::ZERO;
                    for n in 0..s.n {
                        for i in 0..ys.h {
                            for j in 0..ys.w {
                                if let Some((yy, xx)) = tap(s, i, j, u, v) {
                                    acc +=
                                        dy[ys.index(n, o, i, j)] * x[xs.index(n, c0 + c, yy, xx)];
                                }
                            }
                        }
                    }
                    dw[weight_index(s, o, c, u, v)] = acc;
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
