//! Training: checkpoints, reports and the learning-rate schedule.

pub mod checkpoint;
pub mod report;
pub mod schedule;
