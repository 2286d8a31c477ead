//! Export of a trained model at its learned bit widths, with pruned channels removed, and
//! integer inference of the export.
//!
//! [`export`] turns a model's parameters (official `state_dict` names, e.g. a
//! [`Checkpoint`]'s tensors) into an [`ExportedModel`]:
//! per conv/linear layer
//! * `{layer}.weight`: the weight codes at the learned width, packed (2 and 4 bits: `U8` bytes,
//!   LSB first, see [`pack`]; 8 bits: `I8`; 16 bits: `I16`; 32-bit layers stay `F32`), taken
//!   from the stage integers of the residual decomposition (`n4 = 5·k2 + k4`,
//!   `n8 = 17·n4 + k8`, …, spec §1.5–1.6) — never by re-rounding `y / s_b`, which can leave the
//!   grid (§1.7); the value is `scale · code`;
//! * `{layer}.bias`: f32, batch norm folded in (eval form, §5.2) and the constants of removed
//!   input channels added;
//! * `{layer}.kept_channels`: `I32` indices of the kept output channels;
//!
//! and a JSON [`Manifest`] in the safetensors `__metadata__` (key [`MANIFEST_KEY`]): description,
//! format version, per layer the weight quantizer (bits, signedness, x_max, scale, storage), the
//! activation quantizer (bits, range, step), and what happened to pruned channels.
//!
//! Layers are listed in forward order with the values they read (`inputs`: 0 is the network
//! input, `i + 1` the output of layer `i`), so residual networks export as graphs: dense
//! convolutions with any stride and padding, linear layers, 2×2 max-pools, global average
//! pooling and residual adds (each add with its own activation quantizer, after an optional
//! ReLU). Activation quantizers are unsigned after a ReLU and signed (the weights' symmetric
//! grid) where a layer without activation feeds an add.
//!
//! **Pruned channels.** A channel with test-time gate z2 = 0 has zero weights but still emits the
//! constant quantize(ReLU(bias)) into the next layer (spec §5.2, P12). It is removed when that is
//! exact: the constant is 0, or the layer reading it (alone, possibly through max-pools and
//! global pooling) is linear or an unpadded convolution (the constant's contribution is then the
//! same at every output position and is folded into that layer's bias). Before a zero-padded
//! convolution a non-zero constant's contribution differs at the borders, so such channels are
//! kept (zero weights, bias only) and listed in [`Pruning::kept_for_exactness`];
//! [`PruneMode::All`] removes them anyway and records `removal_exact: false`. A layer whose
//! output feeds a residual add, a grouped convolution or several layers keeps every channel
//! (the shapes of an add's two inputs must agree, and a grouped layer's rows are tied to its
//! input channels), its pruned ones as constants; so does a grouped layer itself (ONNX's
//! grouped `Conv` needs whole groups).
//!
//! Test-time gates come from the crate's gate rule ([`crate::spec::quant::gates`] in eval
//! mode). [`IntPlan`] compiles an export for integer inference; [`infer_cpu`] is the plain-Rust
//! reference and [`crate::kernels::int_infer::IntEngine`] the WGSL engine. [`onnx::save_onnx`]
//! writes the export as an ONNX QDQ model (opset 21).

mod build;
mod format;
pub mod infer;
pub mod onnx;
pub mod pack;
mod size;

pub use build::{export, ExportOptions, PruneMode};
pub use format::{
    tensor_names, weight_dtype, ActQuant, AddManifest, Codes, ExportError, ExportedLayer,
    ExportedModel, LayerManifest, Manifest, PoolManifest, Pruning, WeightQuant, WeightedManifest,
    FORMAT_NAME, FORMAT_VERSION, MANIFEST_KEY, OLDEST_FORMAT_VERSION,
};
pub use infer::{infer_cpu, predictions, IntPlan};
pub use size::{SizeRow, SizeTable};

#[cfg(feature = "train")]
use crate::{spec::Params, train::checkpoint::Checkpoint};

/// A checkpoint's model tensors as [`Params`] (what [`export`] takes).
#[cfg(feature = "train")]
pub fn params_of(checkpoint: &Checkpoint) -> Params {
    checkpoint
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.data.clone()))
        .collect()
}
