//! Shapes of activation tensors, of the two weighted layer kinds and of pooling.

/// Dimensions of an NCHW activation tensor. A `[n, features]` tensor (BN1d) is `h = w = 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nchw {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Nchw {
    /// Dimensions `[n, c, h, w]`.
    pub const fn new(n: usize, c: usize, h: usize, w: usize) -> Self {
        Self { n, c, h, w }
    }

    /// Number of elements, `n·c·h·w`.
    pub fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flat index of element `(n, c, y, x)`.
    pub fn index(&self, n: usize, c: usize, y: usize, x: usize) -> usize {
        ((n * self.c + c) * self.h + y) * self.w + x
    }
}

/// Dimensions of a linear layer: input `[n, d_in]`, weight `[d_out, d_in]`, output `[n, d_out]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    /// Batch size.
    pub n: usize,
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
}

impl LinearShape {
    /// Batch `n`, `d_in` inputs, `d_out` outputs.
    pub const fn new(n: usize, d_in: usize, d_out: usize) -> Self {
        Self { n, d_in, d_out }
    }
}

/// Dimensions of a 2-D convolution (PyTorch `Conv2d`, a cross-correlation): input
/// `[n, c_in, h, w]`, weight `[c_out, c_in / groups, kh, kw]`, `pad` zeros on each side of each
/// axis, output `[n, c_out, h_out, w_out]` with `h_out = (h + 2·pad_h − kh) / stride_h + 1`.
/// Output channel `o` reads the input channels of its group, `g = o / (c_out / groups)`.
///
/// Build one with [`Conv2dShape::square`] and the `with_*` adjusters, then [`Conv2dShape::check`]
/// it: the size accessors assume a valid shape.
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
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding on each side, along height and width.
    pub pad: [usize; 2],
    /// Channel groups: 1 is a dense convolution, `c_in` (= `c_out`) a depthwise one.
    pub groups: usize,
}

/// Why a [`Conv2dShape`] is not a valid convolution.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvShapeError {
    /// A size that must be at least 1 is 0.
    #[error("{what} is 0")]
    Zero {
        /// Which size (`input channels`, `kernel height`, `stride`, ...).
        what: &'static str,
    },
    /// The groups do not divide the channels.
    #[error("{groups} groups do not divide {c_in} input and {c_out} output channels")]
    Groups {
        /// Input channels.
        c_in: usize,
        /// Output channels.
        c_out: usize,
        /// Groups.
        groups: usize,
    },
    /// The kernel is larger than the padded input.
    #[error("kernel {kh}×{kw} is larger than the padded input {ph}×{pw}")]
    KernelTooLarge {
        /// Kernel height.
        kh: usize,
        /// Kernel width.
        kw: usize,
        /// Padded input height.
        ph: usize,
        /// Padded input width.
        pw: usize,
    },
}

impl Conv2dShape {
    /// A dense, stride-1 convolution with a square `k × k` kernel and `pad` zeros on every side.
    #[allow(clippy::too_many_arguments)]
    pub const fn square(
        n: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        k: usize,
        pad: usize,
    ) -> Self {
        Self {
            n,
            c_in,
            h,
            w,
            c_out,
            kernel: [k, k],
            stride: [1, 1],
            pad: [pad, pad],
            groups: 1,
        }
    }

    /// The same convolution with stride `s` along both axes.
    pub const fn with_stride(self, s: usize) -> Self {
        Self {
            stride: [s, s],
            ..self
        }
    }

    /// The same convolution with `groups` channel groups.
    pub const fn with_groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    /// The same convolution with batch size `n`.
    pub const fn with_batch(self, n: usize) -> Self {
        Self { n, ..self }
    }

    /// Checks that every size is at least 1 (the batch may be 0), that the groups divide both
    /// channel counts and that the kernel fits the padded input.
    pub fn check(&self) -> Result<(), ConvShapeError> {
        let sizes = [
            (self.c_in, "input channels"),
            (self.c_out, "output channels"),
            (self.h, "input height"),
            (self.w, "input width"),
            (self.kernel[0], "kernel height"),
            (self.kernel[1], "kernel width"),
            (self.stride[0], "stride height"),
            (self.stride[1], "stride width"),
            (self.groups, "groups"),
        ];
        if let Some(&(_, what)) = sizes.iter().find(|(v, _)| *v == 0) {
            return Err(ConvShapeError::Zero { what });
        }
        if !self.c_in.is_multiple_of(self.groups) || !self.c_out.is_multiple_of(self.groups) {
            return Err(ConvShapeError::Groups {
                c_in: self.c_in,
                c_out: self.c_out,
                groups: self.groups,
            });
        }
        let [ph, pw] = self.padded();
        if self.kernel[0] > ph || self.kernel[1] > pw {
            return Err(ConvShapeError::KernelTooLarge {
                kh: self.kernel[0],
                kw: self.kernel[1],
                ph,
                pw,
            });
        }
        Ok(())
    }

    /// Padded input size `[h + 2·pad_h, w + 2·pad_w]`.
    pub fn padded(&self) -> [usize; 2] {
        [self.h + 2 * self.pad[0], self.w + 2 * self.pad[1]]
    }

    /// Whether this is the dense, stride-1, square-kernel, equal-padding case.
    pub fn is_plain(&self) -> bool {
        self.groups == 1
            && self.stride == [1, 1]
            && self.kernel[0] == self.kernel[1]
            && self.pad[0] == self.pad[1]
    }

    /// Output height, `(h + 2·pad_h − kh) / stride_h + 1` (0 where the kernel does not fit).
    pub fn h_out(&self) -> usize {
        out_size(self.padded()[0], self.kernel[0], self.stride[0])
    }

    /// Output width, `(w + 2·pad_w − kw) / stride_w + 1` (0 where the kernel does not fit).
    pub fn w_out(&self) -> usize {
        out_size(self.padded()[1], self.kernel[1], self.stride[1])
    }

    /// Input channels per group.
    pub fn c_in_per_group(&self) -> usize {
        self.c_in / self.groups.max(1)
    }

    /// Output channels per group.
    pub fn c_out_per_group(&self) -> usize {
        self.c_out / self.groups.max(1)
    }

    /// Dimensions of the input.
    pub fn input(&self) -> Nchw {
        Nchw::new(self.n, self.c_in, self.h, self.w)
    }

    /// Dimensions of the output.
    pub fn output(&self) -> Nchw {
        Nchw::new(self.n, self.c_out, self.h_out(), self.w_out())
    }

    /// Weights per output channel (the fan-in), `(c_in / groups)·kh·kw`.
    pub fn fan_in(&self) -> usize {
        self.c_in_per_group() * self.kernel[0] * self.kernel[1]
    }

    /// Number of weights, `c_out·(c_in / groups)·kh·kw`.
    pub fn weight_len(&self) -> usize {
        self.c_out * self.fan_in()
    }

    /// Multiply-accumulates for the whole batch, `n·c_out·h_out·w_out·fan_in`.
    pub fn macs(&self) -> u64 {
        self.output().len() as u64 * self.fan_in() as u64
    }
}

/// Dimensions of a 2-D pooling (PyTorch `MaxPool2d` / `AvgPool2d` with `ceil_mode=False`): input
/// and output `[n, c, ·, ·]`, a `kernel` window moved by `stride`, `pad` on each side of each axis
/// (−∞ for max-pooling, zeros counted in the average for average pooling), output height
/// `h_out = (h + 2·pad_h − kh) / stride_h + 1`.
///
/// Build one with [`Pool2dShape::square`] or [`Pool2dShape::global`], then
/// [`Pool2dShape::check`] it: the size accessors assume a valid shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dShape {
    /// Batch size.
    pub n: usize,
    /// Channels (of both the input and the output).
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Padding on each side, along height and width.
    pub pad: [usize; 2],
}

/// Why a [`Pool2dShape`] is not a valid pooling.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolShapeError {
    /// A size that must be at least 1 is 0.
    #[error("{what} is 0")]
    Zero {
        /// Which size (`channels`, `kernel height`, `stride width`, ...).
        what: &'static str,
    },
    /// The window is larger than the padded input.
    #[error("window {kh}×{kw} is larger than the padded input {ph}×{pw}")]
    WindowTooLarge {
        /// Window height.
        kh: usize,
        /// Window width.
        kw: usize,
        /// Padded input height.
        ph: usize,
        /// Padded input width.
        pw: usize,
    },
    /// The padding exceeds half the window (PyTorch's rule): a window could then hold padding
    /// only.
    #[error("padding {pad_h}×{pad_w} exceeds half the window {kh}×{kw}")]
    PadTooLarge {
        /// Padding along the height.
        pad_h: usize,
        /// Padding along the width.
        pad_w: usize,
        /// Window height.
        kh: usize,
        /// Window width.
        kw: usize,
    },
}

impl Pool2dShape {
    /// A `k × k` window with stride `stride` and `pad` on every side.
    #[allow(clippy::too_many_arguments)]
    pub const fn square(
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Self {
        Self {
            n,
            c,
            h,
            w,
            kernel: [k, k],
            stride: [stride, stride],
            pad: [pad, pad],
        }
    }

    /// Global pooling: one window covering the whole `h × w` plane, output `[n, c, 1, 1]`.
    pub const fn global(n: usize, c: usize, h: usize, w: usize) -> Self {
        Self {
            n,
            c,
            h,
            w,
            kernel: [h, w],
            stride: [1, 1],
            pad: [0, 0],
        }
    }

    /// Checks that every size is at least 1 (the batch may be 0), that the window fits the padded
    /// input and that the padding is at most half the window, so that every window holds at
    /// least one input element.
    pub fn check(&self) -> Result<(), PoolShapeError> {
        let sizes = [
            (self.c, "channels"),
            (self.h, "input height"),
            (self.w, "input width"),
            (self.kernel[0], "kernel height"),
            (self.kernel[1], "kernel width"),
            (self.stride[0], "stride height"),
            (self.stride[1], "stride width"),
        ];
        if let Some(&(_, what)) = sizes.iter().find(|(v, _)| *v == 0) {
            return Err(PoolShapeError::Zero { what });
        }
        let [kh, kw] = self.kernel;
        // `pad > k / 2` is `2·pad > k` for integers, without overflow.
        if self.pad[0] > kh / 2 || self.pad[1] > kw / 2 {
            return Err(PoolShapeError::PadTooLarge {
                pad_h: self.pad[0],
                pad_w: self.pad[1],
                kh,
                kw,
            });
        }
        let [ph, pw] = self.padded();
        if kh > ph || kw > pw {
            return Err(PoolShapeError::WindowTooLarge { kh, kw, ph, pw });
        }
        Ok(())
    }

    /// Padded input size `[h + 2·pad_h, w + 2·pad_w]`.
    pub fn padded(&self) -> [usize; 2] {
        [self.h + 2 * self.pad[0], self.w + 2 * self.pad[1]]
    }

    /// Output height, `(h + 2·pad_h − kh) / stride_h + 1` (0 where the window does not fit).
    pub fn h_out(&self) -> usize {
        out_size(self.padded()[0], self.kernel[0], self.stride[0])
    }

    /// Output width, `(w + 2·pad_w − kw) / stride_w + 1` (0 where the window does not fit).
    pub fn w_out(&self) -> usize {
        out_size(self.padded()[1], self.kernel[1], self.stride[1])
    }

    /// Window elements, `kh·kw`: the divisor of average pooling (padding included).
    pub fn window(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// Dimensions of the input.
    pub fn input(&self) -> Nchw {
        Nchw::new(self.n, self.c, self.h, self.w)
    }

    /// Dimensions of the output.
    pub fn output(&self) -> Nchw {
        Nchw::new(self.n, self.c, self.h_out(), self.w_out())
    }
}

fn out_size(padded: usize, k: usize, stride: usize) -> usize {
    padded.checked_sub(k).map_or(0, |d| d / stride.max(1) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_grouped_sizes() {
        let s = Conv2dShape::square(2, 8, 7, 6, 4, 3, 1)
            .with_stride(2)
            .with_groups(4);
        assert_eq!(s.check(), Ok(()));
        assert_eq!((s.h_out(), s.w_out()), (4, 3));
        assert_eq!(s.weight_len(), 4 * 2 * 9);
        assert_eq!(s.macs(), (2 * 4 * 4 * 3 * 2 * 9) as u64);
    }

    #[test]
    fn invalid_shapes_are_named() {
        let s = Conv2dShape::square(1, 6, 4, 4, 4, 3, 0);
        assert_eq!(
            s.with_groups(4).check(),
            Err(ConvShapeError::Groups {
                c_in: 6,
                c_out: 4,
                groups: 4
            })
        );
        assert_eq!(
            Conv2dShape::square(1, 1, 2, 9, 1, 5, 1).check(),
            Err(ConvShapeError::KernelTooLarge {
                kh: 5,
                kw: 5,
                ph: 4,
                pw: 11
            })
        );
        assert_eq!(
            s.with_stride(0).check(),
            Err(ConvShapeError::Zero {
                what: "stride height"
            })
        );
        assert_eq!(Conv2dShape::square(1, 1, 2, 9, 1, 5, 1).h_out(), 0);
    }

    #[test]
    fn pool_sizes_and_invalid_shapes() {
        let s = Pool2dShape::square(3, 2, 7, 6, 3, 2, 1);
        assert_eq!(s.check(), Ok(()));
        assert_eq!((s.h_out(), s.w_out()), (4, 3));
        assert_eq!(s.output(), Nchw::new(3, 2, 4, 3));
        let g = Pool2dShape::global(1, 4, 7, 5);
        assert_eq!(
            (g.check(), g.h_out(), g.w_out(), g.window()),
            (Ok(()), 1, 1, 35)
        );
        assert_eq!(
            Pool2dShape::square(1, 1, 1, 4, 2, 2, 0).check(),
            Err(PoolShapeError::WindowTooLarge {
                kh: 2,
                kw: 2,
                ph: 1,
                pw: 4
            })
        );
        assert_eq!(
            Pool2dShape::square(1, 1, 4, 4, 3, 1, 2).check(),
            Err(PoolShapeError::PadTooLarge {
                pad_h: 2,
                pad_w: 2,
                kh: 3,
                kw: 3
            })
        );
        assert_eq!(
            Pool2dShape::square(1, 0, 4, 4, 2, 2, 0).check(),
            Err(PoolShapeError::Zero { what: "channels" })
        );
        assert_eq!(
            Pool2dShape {
                stride: [1, 0],
                ..s
            }
            .check(),
            Err(PoolShapeError::Zero {
                what: "stride width"
            })
        );
    }
}
