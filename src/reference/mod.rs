//! The CPU mirror of every GPU kernel, in plain Rust `f32` (`round_ties_even`, never `round`).
//!
//! These functions are written to be read: they follow `spec §1–§6` line by line and are the
//! oracle that every WGSL kernel is tested against. They depend on nothing but `std`.

mod layer;
pub mod layers;
pub mod model;
pub mod quant;
