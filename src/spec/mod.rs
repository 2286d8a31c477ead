//! What both sides of the crate agree on: tensor shapes, network descriptions and where their
//! quantizers sit. The GPU kernels, the model and the CPU reference (the test oracle) all import
//! from here, so dependencies point down only.

pub mod arch;
mod shapes;

pub use arch::{
    Activation, Arch, ArchBuilder, ArchError, BopInput, Conv, Group, InvertedResidualSetting,
    LayerKind, LayerSpec, Linear, MobileNetV2Config, Params, QuantizerInfo, Value,
    QUANTIZER_TENSORS,
};
pub use shapes::{Conv2dShape, ConvShapeError, LinearShape, Nchw, Pool2dShape, PoolShapeError};
