//! # bayesian-bits
//!
//! Bayesian Bits (van Baalen et al., NeurIPS 2020) — learned mixed-precision quantization and
//! channel pruning — trained entirely in WGSL compute shaders on [wgpu], so it runs on any
//! Vulkan, Metal or DX12 GPU (and on Mesa's software Vulkan driver where there is none).
//!
//! Layers of the crate, bottom to top:
//! * [`gpu`]: adapter and device, tensors, staging, the pipeline cache.
//! * [`kernels`]: one typed launcher per WGSL kernel family in `shaders/`.
//! * [`spec`]: what the kernels, the model and the reference share: network descriptions and
//!   their builder, shapes, the quantizer's forward math, initialisation, BN folding and the
//!   fixed-gate fine-tuning network.
//! * [`quant`]: the Bayesian Bits quantizer state, gates, regulariser and bit-width readout.
//! * [`nn`]: the GPU model: [`nn::Model::init`] (range initialisation on the GPU), training,
//!   evaluation and inference on host or device batches, and fixed-gate fine-tuning.
//! * [`reference`](mod@reference): the plain-Rust CPU mirror of every kernel, the test oracle.
//! * [`export`]: the trained model at its learned bit widths, and integer inference of it.
//! * `data` (features `data` or `train`): in-memory datasets and the batcher; with `data`, the
//!   loaders of the official formats and checked downloads.
//! * `train` (feature `train`): the trainer, checkpoints, reports and metrics; SVG plots with
//!   feature `plot`.
//!
//! [`Error`] is the error of the layers up to `export`; `train` wraps it in its own
//! `train::TrainError`, so dependencies point down only.

#![warn(missing_docs)]

#[cfg(any(feature = "train", feature = "data"))]
pub mod data;
pub mod error;
pub mod export;
mod fs;
pub mod gpu;
pub mod kernels;
pub mod nn;
pub mod quant;
pub mod reference;
pub mod spec;
#[cfg(feature = "train")]
pub mod train;

pub use error::{Error, Result};

/// The README's code blocks, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
