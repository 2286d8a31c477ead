//! What both sides of the crate agree on: tensor shapes and their validation. The GPU kernels,
//! the model and the CPU reference (the test oracle) all import from here, so dependencies point
//! down only.

mod shapes;

pub use shapes::{Conv2dShape, ConvShapeError, LinearShape, Nchw, Pool2dShape, PoolShapeError};
