//! Training: the procedure of spec §7.1, checkpoints, reports, gate metrics and the
//! learning-rate schedule.

pub mod checkpoint;
pub mod metrics;
pub mod report;
pub mod schedule;
pub mod trainer;

pub use trainer::{Progress, TrainConfig, Trainer};
