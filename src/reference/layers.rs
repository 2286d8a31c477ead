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

pub use crate::spec::float::Float;
