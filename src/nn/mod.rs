//! Layers and the two models of the paper (LeNet-5, VGG-7).

pub mod arch;

pub use arch::{Arch, LayerKind, LayerSpec};
