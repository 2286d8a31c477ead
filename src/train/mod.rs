//! Training: the procedure of spec §7.1, checkpoints, reports, gate metrics and the
//! learning-rate schedule.
//!
//! This layer sits above the model: its [`TrainError`] wraps the core [`crate::Error`] (GPU,
//! kernels, quantizers, model) next to the dataset, checkpoint and report errors, so nothing
//! below `train` knows about it.

pub mod checkpoint;
pub mod metrics;
pub mod report;
pub mod schedule;
pub mod trainer;

pub use trainer::{Progress, TrainConfig, Trainer};

/// Result alias of the training layer.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// What can stop a training run: a core error, or one of this layer's own.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The GPU, a kernel, a quantizer or the model failed.
    #[error(transparent)]
    Core(#[from] crate::Error),
    /// A dataset could not be read or batched.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A checkpoint could not be saved, loaded or matched to a model.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// A training report or metrics log could not be written or read.
    #[error(transparent)]
    Report(#[from] report::ReportError),
    /// Training diverged: a non-finite loss or a range that left (0, ∞).
    #[error("training diverged at step {step}: {detail}")]
    Diverged {
        /// Training steps completed.
        step: u32,
        /// What went wrong, naming the layer and quantizer where known.
        detail: String,
    },
}
