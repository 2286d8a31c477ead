//! The Bayesian Bits model on the GPU. Network descriptions live in [`crate::spec`] and are
//! re-exported here.

pub mod model;

pub use crate::spec::{Arch, LayerKind, LayerSpec};
pub use model::{LearningRates, Model, OptimizerState, StepConfig};
