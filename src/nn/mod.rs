//! The Bayesian Bits model on the GPU. Network descriptions live in [`crate::spec`] and are
//! re-exported here.

mod layer;
pub mod model;

pub use crate::spec::InitConfig;
pub use crate::spec::{Arch, LayerKind, LayerSpec};
pub use model::{Batch, LearningRates, Model, OptimizerState, StepConfig};
