//! Layers and the two models of the paper (LeNet-5, VGG-7).

pub mod arch;
pub mod model;

pub use arch::{Arch, LayerKind, LayerSpec};
pub use model::{LearningRates, Model, OptimizerState, StepConfig};
