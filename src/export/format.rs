//! The export file: manifest types, the in-memory [`ExportedModel`], and safetensors I/O with
//! typed errors.

use super::pack;
use crate::spec::Activation;
use md5::{Digest, Md5};
use safetensors::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Value of [`Manifest::format`].
pub const FORMAT_NAME: &str = "bayesian-bits-export";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build still reads: version 1 files (chains of layers, before
/// `inputs` and residual adds) load as chains.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// `__metadata__` key holding the JSON [`Manifest`].
pub const MANIFEST_KEY: &str = "bayesian_bits.export";

/// Errors raised while exporting, saving, loading or running an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The file does not exist.
    #[error("export file {path} does not exist")]
    NotFound {
        /// The file asked for.
        path: PathBuf,
    },
    /// A file-system operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The file ends before a part it declares.
    #[error("{path}: truncated: the {part} needs {expected} bytes, the file has {actual}")]
    Truncated {
        /// The file involved.
        path: PathBuf,
        /// Which part is cut off (`header length`, `header`, `tensor data`).
        part: &'static str,
        /// Bytes the file must have.
        expected: u64,
        /// Bytes it has.
        actual: u64,
    },
    /// The file is not a valid safetensors file.
    #[error("{path}: corrupt safetensors file: {msg}")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// What the parser reported.
        msg: String,
    },
    /// The safetensors header has no export manifest (e.g. a training checkpoint was given).
    #[error("{path}: no `{MANIFEST_KEY}` manifest in the safetensors metadata (is this a training checkpoint rather than an export?)")]
    NoManifest {
        /// The file involved.
        path: PathBuf,
    },
    /// The manifest is not valid JSON of the expected shape, or a field is out of range.
    #[error("{path}: invalid manifest: {msg}")]
    Manifest {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The file was written in another format version.
    #[error("{path}: export format version {found} is not supported (this build reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})")]
    Version {
        /// The file involved.
        path: PathBuf,
        /// The version it declares.
        found: u32,
    },
    /// A tensor the manifest needs is absent.
    #[error("{path}: tensor {tensor} is missing")]
    MissingTensor {
        /// The file involved.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
    },
    /// A tensor has the wrong dtype, shape or contents.
    #[error("{path}: tensor {tensor}: {msg}")]
    Tensor {
        /// The file involved.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        msg: String,
    },
    /// A tensor's bytes do not match the checksum recorded in the manifest.
    #[error("{path}: tensor {tensor} is corrupt: md5 {actual}, the manifest records {expected}")]
    Checksum {
        /// The file involved.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Recorded md5.
        expected: String,
        /// md5 of the bytes found.
        actual: String,
    },
    /// The export cannot be written as ONNX, or ONNX bytes cannot be decoded.
    #[error("ONNX model of {model}: {msg}")]
    Onnx {
        /// The model (`<bytes>` when decoding).
        model: String,
        /// What is wrong.
        msg: String,
    },
    /// The parameters given to `export` are unusable.
    #[error("cannot export {model}: {msg}")]
    Params {
        /// The model.
        model: String,
        /// What is wrong.
        msg: String,
    },
    /// A layer's activation has no representation in the export format, which records ReLU,
    /// ReLU6 on conv/linear layers, or none ([`WeightedManifest::relu`],
    /// [`WeightedManifest::relu6`], [`AddManifest::relu`]): such a model is refused rather
    /// than exported inexactly.
    #[error(
        "cannot export {model}: layer {layer} has activation {activation:?}, which the export \
         format does not support there"
    )]
    Activation {
        /// The model.
        model: String,
        /// The layer.
        layer: String,
        /// Its activation.
        activation: Activation,
    },
}

/// How one weight tensor is quantized and stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightQuant {
    /// Learned bit width: 2, 4, 8, 16 or 32.
    pub bits: u32,
    /// Symmetric signed grid (`±(2^(b−1)−1)`) or unsigned (`0 … 2^b−1`).
    pub signed: bool,
    /// The learned range x_max.
    pub x_max: f32,
    /// Step `s_b`: a stored code `n` means the value `scale · n` (1 at 32 bits, where the
    /// tensor holds the fake-quantized f32 values themselves).
    pub scale: f32,
    /// Storage: `packed_u8` (2 and 4 bits, [`pack`](super::pack) layout), `i8`/`u8`, `i16`/`u16`
    /// or `f32`.
    pub dtype: String,
    /// Logical shape after channel removal: `[out, in, k, k]` or `[out, in]`.
    pub shape: Vec<usize>,
    /// Codes outside the grid that were clamped: from the residual decomposition (0 expected,
    /// spec §1.7), or a direct rounding of a fixed-gate model landing on ±2^(b−1) (signed
    /// extremes; the export then differs from the fine-tuned model in those weights).
    pub codes_clamped: usize,
}

/// An activation quantizer after a layer: unsigned after a ReLU, signed (symmetric grid, as
/// the weights) on a layer without activation whose output feeds a residual add.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActQuant {
    /// Learned bit width.
    pub bits: u32,
    /// Signedness (false after a ReLU).
    pub signed: bool,
    /// The learned range x_max.
    pub x_max: f32,
    /// Step `s_b`; the quantized activation is `scale · n` with `0 ≤ n ≤ 2^b − 1` unsigned,
    /// `|n| ≤ 2^(b−1) − 1` signed (at 32 bits the value itself, clipped to `[0, clip]` or
    /// `[−clip, clip]`).
    pub scale: f32,
    /// Upper clip bound `fl32(1 − 2^-23) · x_max` (spec §1.4).
    pub clip: f32,
}

/// A residual add: `inputs[0] + inputs[1]`, then ReLU (when `relu`), then its activation
/// quantizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddManifest {
    /// ReLU between the sum and the quantizer.
    pub relu: bool,
    /// The sum's activation quantizer.
    pub activation: ActQuant,
}

/// Which output channels were pruned and what happened to them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pruning {
    /// Channels whose test-time pruning gate is 0.
    pub pruned: Vec<usize>,
    /// Pruned channels removed from the file (and from the next layer's input).
    pub removed: Vec<usize>,
    /// Pruned channels kept (zero weights, bias only) because their constant output
    /// quantize(ReLU(bias)) is non-zero and feeds a zero-padded convolution, where removing it
    /// would change the border outputs, or because the layer's output feeds a residual add or
    /// more than one layer (whose shapes must stay equal).
    pub kept_for_exactness: Vec<usize>,
    /// Whether every removal is exact: a removed channel either emits 0 or its constant
    /// contribution was folded into the next layer's bias where that is exact.
    pub removal_exact: bool,
    /// Removed channels whose non-zero constant was folded into the next layer's bias.
    pub folded_into_next: Vec<usize>,
}

/// One layer of the exported model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerManifest {
    /// Official `state_dict` prefix, e.g. `features.0`.
    pub name: String,
    /// `conv`, `linear`, `maxpool2x2` (2×2, stride 2), `maxpool`, `avgpool` (window in
    /// `pool`), `global_avg_pool`, `flatten` or `add`.
    pub kind: String,
    /// The values the layer reads: 0 is the network input, `i + 1` the output of layer `i`
    /// (one value; two for an add). Version 1 files, which lack it, are chains.
    #[serde(default)]
    pub inputs: Vec<usize>,
    /// Input shape (C, H, W) of the original model (linear: `[d_in, 1, 1]`).
    pub input: [usize; 3],
    /// Output shape (C, H, W) of the original model.
    pub output: [usize; 3],
    /// Conv/linear fields; absent for pooling and adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted: Option<WeightedManifest>,
    /// Residual-add fields; absent for every other kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<AddManifest>,
    /// The window of a `maxpool` or `avgpool` layer; absent for every other kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolManifest>,
}

/// A square pooling window (PyTorch `MaxPool2d`, padding −∞; `AvgPool2d`, zero padding
/// counted in the mean).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolManifest {
    /// Window size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding on each side.
    pub pad: usize,
}

/// Fields of a conv or linear layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedManifest {
    /// Kernel size (1 for linear).
    pub kernel: usize,
    /// Zero padding.
    pub padding: usize,
    /// Stride (both directions; 1 for linear).
    pub stride: usize,
    /// Channel groups (1: dense; the input channels: depthwise). Output channel `o` of the
    /// original layer reads input channels `g·c_g … (g+1)·c_g − 1` with `g = o / (out_channels
    /// / groups)` and `c_g = in_kept`; a grouped layer's input keeps every channel.
    #[serde(default = "one")]
    pub groups: usize,
    /// Output channels of the original layer.
    pub out_channels: usize,
    /// Output channels in the file (`kept_channels` tensor).
    pub kept_out: usize,
    /// Input channels (conv) or features (linear) in the file.
    pub in_kept: usize,
    /// Weight quantizer and storage.
    pub weight: WeightQuant,
    /// Whether batch norm was folded into weights and bias (spec §5.2, eval form).
    pub batch_norm_folded: bool,
    /// ReLU then activation quantizer after the layer (false for the logit layer and layers
    /// without activation).
    pub relu: bool,
    /// The ReLU is a ReLU6 (`min(max(x, 0), 6)`, MobileNetV2).
    #[serde(default)]
    pub relu6: bool,
    /// The activation quantizer (absent for the logit layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<ActQuant>,
    /// Channel pruning.
    pub pruning: Pruning,
}

/// The JSON manifest stored in the safetensors `__metadata__` under [`MANIFEST_KEY`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Human-readable description of the contents.
    pub description: String,
    /// Model name.
    pub model: String,
    /// Input shape (C, H, W); the input is not quantized.
    pub input: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Relative BOPs in percent of the FP32 model (spec §6).
    pub relative_bops_percent: f64,
    /// Exported from a fixed-gate fine-tuned model (spec §7.4): weight codes are the direct
    /// roundings `rne(clip(w)/s_b)` the fine-tuned model uses, not stage integers.
    #[serde(default)]
    pub fixed_gate: bool,
    /// Every layer in forward order.
    pub layers: Vec<LayerManifest>,
    /// md5 (hex) of every tensor's bytes.
    pub checksums: BTreeMap<String, String>,
}

/// Weight values of one layer.
#[derive(Clone, Debug, PartialEq)]
pub enum Codes {
    /// Integer codes (2 to 16 bits), row-major in the logical shape.
    Int(Vec<i32>),
    /// f32 values (32-bit layers).
    Float(Vec<f32>),
}

/// One conv/linear layer's tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportedLayer {
    /// Layer name (`state_dict` prefix).
    pub name: String,
    /// Weight codes or values, logical shape [`WeightQuant::shape`].
    pub weight: Codes,
    /// Bias per kept output channel (BN and removed channels' constants folded in).
    pub bias: Vec<f32>,
    /// Original indices of the kept output channels, ascending.
    pub kept: Vec<u32>,
}

/// An exported model: manifest and per-layer tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportedModel {
    /// The manifest.
    pub manifest: Manifest,
    /// Conv/linear layers in forward order.
    pub layers: Vec<ExportedLayer>,
}

/// Tensor names of a layer.
pub fn tensor_names(layer: &str) -> [String; 3] {
    [
        format!("{layer}.weight"),
        format!("{layer}.bias"),
        format!("{layer}.kept_channels"),
    ]
}

struct RawView {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for RawView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Storage dtype of a weight tensor.
pub fn weight_dtype(bits: u32, signed: bool) -> &'static str {
    match (bits, signed) {
        (2 | 4, _) => "packed_u8",
        (8, true) => "i8",
        (8, false) => "u8",
        (16, true) => "i16",
        (16, false) => "u16",
        _ => "f32",
    }
}

fn st_dtype(name: &str) -> Dtype {
    match name {
        "i8" => Dtype::I8,
        "i16" => Dtype::I16,
        "u16" => Dtype::U16,
        "f32" => Dtype::F32,
        _ => Dtype::U8,
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Rewrites a serialized safetensors header with sorted keys (the serializer emits metadata in
/// hash order), so the same model always gives the same bytes.
fn canonical_header(bytes: &[u8]) -> Result<Vec<u8>, String> {
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let entries: BTreeMap<String, serde_json::Value> =
                    map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::Value::Object(entries.into_iter().collect())
            }
            other => other,
        }
    }
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or("no header length")?;
    let header = bytes.get(8..8 + n).ok_or("header past the end")?;
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let mut header = serde_json::to_vec(&sorted(value)).map_err(|e| e.to_string())?;
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(bytes.len() + 8);
    out.extend((header.len() as u64).to_le_bytes());
    out.extend(header);
    out.extend(&bytes[8 + n..]);
    Ok(out)
}

fn one() -> usize {
    1
}

/// An activation quantizer's fields are in range.
fn check_act(layer: &str, a: &ActQuant) -> Result<(), String> {
    if ![2, 4, 8, 16, 32].contains(&a.bits) {
        return Err(format!(
            "{layer}: activation bits {} not in 2, 4, 8, 16, 32",
            a.bits
        ));
    }
    for (what, v) in [
        ("activation x_max", a.x_max),
        ("activation scale", a.scale),
        ("activation clip", a.clip),
    ] {
        if !positive(v) {
            return Err(format!("{layer}: {what} {v} is not positive and finite"));
        }
    }
    Ok(())
}

/// Every layer reads earlier values only, as many as its kind takes, and carries the fields
/// of its kind.
fn check_graph(manifest: &Manifest) -> Result<(), String> {
    for (i, lm) in manifest.layers.iter().enumerate() {
        let name = &lm.name;
        let (arity, weighted, add) = match lm.kind.as_str() {
            "conv" | "linear" => (1, true, false),
            "maxpool2x2" | "maxpool" | "avgpool" | "global_avg_pool" | "flatten" => {
                (1, false, false)
            }
            "add" => (2, false, true),
            other => return Err(format!("{name}: unknown layer kind {other:?}")),
        };
        let windowed = matches!(lm.kind.as_str(), "maxpool" | "avgpool");
        if lm.pool.is_some() != windowed {
            return Err(format!(
                "{name}: the pooling window does not match the layer kind {}",
                lm.kind
            ));
        }
        if lm.inputs.len() != arity {
            return Err(format!(
                "{name}: a {} layer reads {arity} value(s), the manifest lists {:?}",
                lm.kind, lm.inputs
            ));
        }
        if let Some(&v) = lm.inputs.iter().find(|&&v| v > i) {
            return Err(format!(
                "{name}: reads value {v}, which is not computed before layer {i}"
            ));
        }
        if lm.weighted.is_some() != weighted || lm.add.is_some() != add {
            return Err(format!(
                "{name}: the fields do not match the layer kind {}",
                lm.kind
            ));
        }
        if let Some(a) = &lm.add {
            check_act(name, &a.activation)?;
        }
        if let Some(w) = &lm.weighted {
            if w.groups == 0 || w.out_channels % w.groups != 0 {
                return Err(format!(
                    "{name}: {} groups for {} output channels",
                    w.groups, w.out_channels
                ));
            }
        }
    }
    Ok(())
}

fn positive(v: f32) -> bool {
    v.is_finite() && v > 0.0
}

impl ExportedModel {
    /// The layer's manifest entry by name.
    pub fn layer_manifest(&self, name: &str) -> Option<&WeightedManifest> {
        self.manifest
            .layers
            .iter()
            .find(|l| l.name == name)
            .and_then(|l| l.weighted.as_ref())
    }

    fn views(&self) -> Result<Vec<(String, RawView)>, ExportError> {
        let failed = |msg: String| ExportError::Corrupt {
            path: PathBuf::from("<memory>"),
            msg: format!("serialization failed: {msg}"),
        };
        let mut views: Vec<(String, RawView)> = Vec::new();
        for layer in &self.layers {
            let m = self
                .layer_manifest(&layer.name)
                .ok_or_else(|| failed(format!("layer {} has no manifest entry", layer.name)))?;
            let [wname, bname, kname] = tensor_names(&layer.name);
            let q = &m.weight;
            let numel: usize = q.shape.iter().product();
            let (dtype, shape, data) = match (&layer.weight, q.bits) {
                (Codes::Float(v), 32) if v.len() == numel => {
                    (Dtype::F32, q.shape.clone(), f32_bytes(v))
                }
                (Codes::Int(c), 2 | 4) if c.len() == numel => {
                    let data = pack::pack(c, q.bits);
                    (Dtype::U8, vec![data.len()], data)
                }
                (Codes::Int(c), 8 | 16) if c.len() == numel => (
                    st_dtype(weight_dtype(q.bits, q.signed)),
                    q.shape.clone(),
                    pack::pack(c, q.bits),
                ),
                _ => {
                    return Err(failed(format!(
                        "layer {}: weight values do not match {} bits and shape {:?}",
                        layer.name, q.bits, q.shape
                    )))
                }
            };
            views.push((wname, RawView { dtype, shape, data }));
            views.push((
                bname,
                RawView {
                    dtype: Dtype::F32,
                    shape: vec![layer.bias.len()],
                    data: f32_bytes(&layer.bias),
                },
            ));
            views.push((
                kname,
                RawView {
                    dtype: Dtype::I32,
                    shape: vec![layer.kept.len()],
                    data: layer.kept.iter().flat_map(|k| k.to_le_bytes()).collect(),
                },
            ));
        }
        Ok(views)
    }

    /// md5 (hex) of every tensor's bytes, as [`Manifest::checksums`] records them.
    pub fn checksums(&self) -> Result<BTreeMap<String, String>, ExportError> {
        Ok(self
            .views()?
            .iter()
            .map(|(n, v)| (n.clone(), md5_hex(&v.data)))
            .collect())
    }

    /// Serializes to safetensors bytes (deterministic: the same model gives the same bytes).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ExportError> {
        let failed = |msg: String| ExportError::Corrupt {
            path: PathBuf::from("<memory>"),
            msg: format!("serialization failed: {msg}"),
        };
        let views = self.views()?;
        let mut manifest = self.manifest.clone();
        manifest.checksums = views
            .iter()
            .map(|(n, v)| (n.clone(), md5_hex(&v.data)))
            .collect();
        let json = serde_json::to_string(&manifest).map_err(|e| failed(e.to_string()))?;
        let meta: HashMap<String, String> = [(MANIFEST_KEY.to_string(), json)].into();
        let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| failed(e.to_string()))?;
        canonical_header(&bytes).map_err(failed)
    }

    /// Writes the model to `path` (atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<u64, ExportError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        crate::fs::write_atomic(path, &bytes).map_err(|source| ExportError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(bytes.len() as u64)
    }

    /// Reads a model written by [`ExportedModel::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ExportError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ExportError::NotFound {
                    path: path.to_path_buf(),
                }
            } else {
                ExportError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and validates export bytes; `path` only names the source in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, ExportError> {
        let p = || path.to_path_buf();
        let actual = bytes.len() as u64;
        if actual < 8 {
            return Err(ExportError::Truncated {
                path: p(),
                part: "header length",
                expected: 8,
                actual,
            });
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let header_end = n.saturating_add(8);
        if header_end > actual {
            return Err(ExportError::Truncated {
                path: p(),
                part: "header",
                expected: header_end,
                actual,
            });
        }
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..header_end as usize])
            .map_err(|e| ExportError::Corrupt {
                path: p(),
                msg: format!("header is not JSON: {e}"),
            })?;
        let data_end = header
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| k.as_str() != "__metadata__")
                    .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if header_end.saturating_add(data_end) > actual {
            return Err(ExportError::Truncated {
                path: p(),
                part: "tensor data",
                expected: header_end.saturating_add(data_end),
                actual,
            });
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| ExportError::Corrupt {
            path: p(),
            msg: e.to_string(),
        })?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| ExportError::Corrupt {
            path: p(),
            msg: e.to_string(),
        })?;
        let json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(MANIFEST_KEY))
            .ok_or_else(|| ExportError::NoManifest { path: p() })?;
        let mut manifest: Manifest =
            serde_json::from_str(json).map_err(|e| ExportError::Manifest {
                path: p(),
                msg: e.to_string(),
            })?;
        let bad = |msg: String| ExportError::Manifest { path: p(), msg };
        if manifest.format != FORMAT_NAME {
            return Err(bad(format!(
                "format is {:?}, expected {FORMAT_NAME:?}",
                manifest.format
            )));
        }
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&manifest.format_version) {
            return Err(ExportError::Version {
                path: p(),
                found: manifest.format_version,
            });
        }
        if manifest.format_version < 2 {
            // Version 1: a chain, each layer reading the previous one's output.
            for (i, lm) in manifest.layers.iter_mut().enumerate() {
                lm.inputs = vec![i];
            }
            manifest.format_version = FORMAT_VERSION;
        }
        check_graph(&manifest).map_err(bad)?;
        let mut layers = Vec::new();
        for lm in &manifest.layers {
            let Some(m) = &lm.weighted else { continue };
            let q = &m.weight;
            let name = &lm.name;
            if ![2, 4, 8, 16, 32].contains(&q.bits) {
                return Err(bad(format!(
                    "{name}: weight bits {} not in 2, 4, 8, 16, 32",
                    q.bits
                )));
            }
            for (what, v) in [("weight x_max", q.x_max), ("weight scale", q.scale)] {
                if !positive(v) {
                    return Err(bad(format!(
                        "{name}: {what} {v} is not positive and finite"
                    )));
                }
            }
            if let Some(a) = &m.activation {
                check_act(name, a).map_err(bad)?;
            }
            if q.dtype != weight_dtype(q.bits, q.signed) {
                return Err(bad(format!(
                    "{name}: dtype {} does not match {} bits",
                    q.dtype, q.bits
                )));
            }
            let expected_shape_len = if lm.kind == "conv" { 4 } else { 2 };
            if q.shape.len() != expected_shape_len
                || q.shape[0] != m.kept_out
                || q.shape[1] != m.in_kept
            {
                return Err(bad(format!(
                    "{name}: weight shape {:?} disagrees with kept_out {} / in_kept {}",
                    q.shape, m.kept_out, m.in_kept
                )));
            }
            let names = tensor_names(name);
            let mut views = Vec::new();
            for t in &names {
                let view = st.tensor(t).map_err(|_| ExportError::MissingTensor {
                    path: p(),
                    tensor: t.clone(),
                })?;
                let expected = manifest
                    .checksums
                    .get(t)
                    .ok_or_else(|| bad(format!("no checksum for tensor {t}")))?;
                let actual = md5_hex(view.data());
                if &actual != expected {
                    return Err(ExportError::Checksum {
                        path: p(),
                        tensor: t.clone(),
                        expected: expected.clone(),
                        actual,
                    });
                }
                views.push(view);
            }
            let tensor_err = |t: &str, msg: String| ExportError::Tensor {
                path: p(),
                tensor: t.to_string(),
                msg,
            };
            let numel: usize = q.shape.iter().product();
            let wv = &views[0];
            let weight = if q.bits == 32 {
                if wv.dtype() != Dtype::F32 || wv.shape() != q.shape.as_slice() {
                    return Err(tensor_err(
                        &names[0],
                        format!(
                            "expected F32 {:?}, found {:?} {:?}",
                            q.shape,
                            wv.dtype(),
                            wv.shape()
                        ),
                    ));
                }
                let v: Vec<f32> = wv
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(tensor_err(&names[0], format!("non-finite value at {i}")));
                }
                Codes::Float(v)
            } else {
                let expected_dtype = st_dtype(&q.dtype);
                let expected_shape = if q.bits <= 4 {
                    vec![pack::packed_len(numel, q.bits)]
                } else {
                    q.shape.clone()
                };
                if wv.dtype() != expected_dtype || wv.shape() != expected_shape.as_slice() {
                    return Err(tensor_err(
                        &names[0],
                        format!(
                            "expected {expected_dtype:?} {expected_shape:?}, found {:?} {:?}",
                            wv.dtype(),
                            wv.shape()
                        ),
                    ));
                }
                let codes = pack::unpack(wv.data(), numel, q.bits, q.signed).ok_or_else(|| {
                    tensor_err(
                        &names[0],
                        format!(
                            "{} bytes do not hold {numel} codes of {} bits",
                            wv.data().len(),
                            q.bits
                        ),
                    )
                })?;
                let (lo, hi) = pack::code_range(q.bits, q.signed);
                if let Some(i) = codes
                    .iter()
                    .position(|&c| i64::from(c) < lo || i64::from(c) > hi)
                {
                    return Err(tensor_err(
                        &names[0],
                        format!(
                            "code {} at {i} is outside the {}-bit grid {lo}..={hi}",
                            codes[i], q.bits
                        ),
                    ));
                }
                Codes::Int(codes)
            };
            let bv = &views[1];
            if bv.dtype() != Dtype::F32 || bv.shape() != [m.kept_out] {
                return Err(tensor_err(
                    &names[1],
                    format!(
                        "expected F32 [{}], found {:?} {:?}",
                        m.kept_out,
                        bv.dtype(),
                        bv.shape()
                    ),
                ));
            }
            let bias: Vec<f32> = bv
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if let Some(i) = bias.iter().position(|x| !x.is_finite()) {
                return Err(tensor_err(&names[1], format!("non-finite value at {i}")));
            }
            let kv = &views[2];
            if kv.dtype() != Dtype::I32 || kv.shape() != [m.kept_out] {
                return Err(tensor_err(
                    &names[2],
                    format!(
                        "expected I32 [{}], found {:?} {:?}",
                        m.kept_out,
                        kv.dtype(),
                        kv.shape()
                    ),
                ));
            }
            let kept: Vec<u32> = kv
                .data()
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if kept.windows(2).any(|w| w[0] >= w[1])
                || kept.last().is_some_and(|&k| k as usize >= m.out_channels)
            {
                return Err(tensor_err(
                    &names[2],
                    format!("indices must be ascending and below {}", m.out_channels),
                ));
            }
            layers.push(ExportedLayer {
                name: name.clone(),
                weight,
                bias,
                kept,
            });
        }
        if layers.is_empty() {
            return Err(bad("no conv or linear layer".into()));
        }
        Ok(Self { manifest, layers })
    }
}
