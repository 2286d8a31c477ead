//! # bayesian-bits
//!
//! Bayesian Bits (van Baalen et al., NeurIPS 2020) — learned mixed-precision quantization and
//! channel pruning — trained entirely in WGSL compute shaders on [wgpu], so it runs on any
//! Vulkan, Metal or DX12 GPU (and on Mesa's software Vulkan driver where there is none).
//!
//! Layers of the crate, bottom to top:
//! * [`gpu`]: adapter and device, tensors, staging, the pipeline cache.
//! * [`kernels`]: one typed launcher per WGSL kernel family in `shaders/`.
//! * [`spec`]: shapes shared by the kernels, the model and the reference.
//! * [`quant`]: the Bayesian Bits quantizer state, gates, regulariser and bit-width readout.
//! * [`reference`](mod@reference): the plain-Rust CPU mirror of every kernel, the test oracle.
//! * [`data`]: dataset loaders in their official formats.
//! * [`export`]: the trained model at its learned bit widths, and integer inference of it.

#![warn(missing_docs)]

pub mod data;
pub mod error;
pub mod export;
pub mod gpu;
pub mod kernels;
pub mod nn;
pub mod quant;
pub mod reference;
pub mod spec;
pub mod train;

pub use error::{Error, Result};
