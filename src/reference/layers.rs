//! CPU reference of the network layers (spec §5), the loss and the optimiser (spec §4.2).
//!
//! Conventions, shared by every function here:
//! * layouts are PyTorch's: activations NCHW, conv weights OIHW `[c_out, c_in, k, k]`, linear
//!   weights `[out, in]`, matrices row-major, flatten in (C, H, W) order;
//! * every sum is a plain loop in a fixed, documented order, so results are reproducible to the
//!   bit on one machine;
//! * functions are pure: they take slices and return fresh `Vec`s (running BN statistics and Adam
//!   state included), and they are generic over [`Float`] so that the tests can run the very same
//!   code in `f64` for finite-difference gradient checks. The GPU kernels mirror the `f32`
//!   instantiation (Adam, which is never differentiated, is `f32` only).
//!
//! Contents: [`gemm`] and the linear layer, the strided, grouped 2-D convolution, ReLU and
//! ReLU6, max and average pooling, the residual add, folded batch norm (spec §5.2), softmax
//! cross-entropy, Adam and SGD.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

mod adam;
mod batch_norm;
mod conv;
mod linear;
mod loss;
mod pool;
mod sgd;

pub use adam::{AdamState, ADAM_BETA1, ADAM_BETA2, ADAM_EPS};
pub use batch_norm::{
    fold_bias, fold_weight, fold_weight_backward, folded_bn_train_backward,
    folded_bn_train_forward, BnParams, FoldedBnGrads, FoldedBnTrain, BN_EPS, BN_MOMENTUM,
};
pub use conv::{conv2d_backward_data, conv2d_backward_weight, conv2d_forward};
pub use linear::{gemm, linear_backward, linear_forward, LinearGrads};
pub use loss::{softmax_cross_entropy, CrossEntropy};
pub use pool::{
    accumulate, add_backward, add_forward, avgpool2d_backward, avgpool2d_forward,
    maxpool2d_backward, maxpool2d_forward, maxpool2x2_backward, maxpool2x2_forward, relu6_backward,
    relu6_forward, relu_backward, relu_forward,
};
pub use sgd::{SgdConfig, SgdState};

/// The scalar type of the reference: implemented for `f32` (what the GPU computes) and `f64`
/// (what the finite-difference tests use).
pub trait Float:
    Copy
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
{
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// Converts a constant (rounding to nearest for `f32`).
    fn from_f64(v: f64) -> Self;
    /// Converts a count, e.g. the number of elements averaged over.
    fn from_usize(v: usize) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Natural exponential.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
}

macro_rules! impl_float {
    ($t:ty) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn from_usize(v: usize) -> Self {
                v as $t
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
        }
    };
}
impl_float!(f32);
impl_float!(f64);
