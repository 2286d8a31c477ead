//! What both sides of the crate agree on: tensor shapes, network descriptions and where their
//! quantizers sit, the quantizer's forward math, initialisation and optimizer settings. The GPU
//! kernels, the model and the CPU reference (the test oracle) all import from here, so
//! dependencies point down only.

pub mod arch;
pub mod bn;
pub mod fixed;
pub mod float;
pub mod init;
pub mod optim;
pub mod quant;
mod shapes;

pub use arch::{
    Activation, Arch, ArchBuilder, ArchError, BopInput, Conv, Group, InvertedResidualSetting,
    LayerKind, LayerSpec, Linear, MobileNetV2Config, Params, QuantizerInfo, Value,
    QUANTIZER_TENSORS,
};
pub use init::{init_params, InitConfig};
pub use shapes::{Conv2dShape, ConvShapeError, LinearShape, Nchw, Pool2dShape, PoolShapeError};
