//! Training checkpoints in the [safetensors] format.
//!
//! A [`Checkpoint`] holds three things:
//! * [`Checkpoint::tensors`]: the model's parameters and buffers under the official PyTorch
//!   `state_dict` names and shapes ([`Arch::state_dict_shapes`]), e.g. `features.0.weight`
//!   (OIHW), `features.0.weight_quantizer.quantizer.x_max` (`[1]`),
//!   `features.0.weight_quantizer.quantizer.gamma_2` (`[C_out]`), `features.0.running_var`;
//! * [`Checkpoint::extra`]: everything else a resumed run needs (the optimizers' state: Adam
//!   moments, an SGD momentum buffer), stored in the file under the prefix [`EXTRA_PREFIX`]
//!   (`_bayesian_bits.adam.weights.m`, `_bayesian_bits.sgd.weights.momentum_buffer` …) so that
//!   it can never collide with a PyTorch name; each group's step count is the metadata entry
//!   `adam.weights.steps` (or `sgd.weights.steps`, …);
//! * [`Checkpoint::metadata`]: the safetensors string header: step, epoch, seed, model name and
//!   the format version ([`STEP`], [`EPOCH`], [`SEED`], [`MODEL`], [`FORMAT_VERSION`]).
//!
//! Every tensor is written as little-endian F32. [`Checkpoint::load`] also accepts F64, F16 and
//! BF16 tensors (converted to f32) and skips integer/bool tensors such as PyTorch's
//! `num_batches_tracked` (listed in [`Checkpoint::skipped`]). Non-finite values are refused both
//! when saving and when loading.
//!
//! [`Checkpoint::save`] is atomic: it writes a temporary file in the destination directory,
//! fsyncs it, renames it over the destination and fsyncs the directory, so a crash leaves either
//! the previous checkpoint or the new one, never a partial file.
//!
//! # Exchanging checkpoints with the official PyTorch code
//!
//! Export a trained official model (Python, `pip install safetensors`):
//!
//! ```python
//! import safetensors.torch
//! sd = {k: v.float().contiguous() for k, v in model.state_dict().items()}
//! safetensors.torch.save_file(sd, "lenet5.safetensors")
//! ```
//!
//! (`save_file(model.state_dict(), …)` works as well; the conversion only guards against
//! non-contiguous or half-precision tensors.) The file then loads with [`Checkpoint::load`] and
//! passes [`Checkpoint::validate_against`] for the matching [`Arch`].
//!
//! Import a checkpoint written by this crate into the official model, dropping this crate's
//! own optimizer state:
//!
//! ```python
//! import safetensors.torch
//! sd = safetensors.torch.load_file("checkpoint.safetensors")
//! sd = {k: v for k, v in sd.items() if not k.startswith("_bayesian_bits.")}
//! model.load_state_dict(sd, strict=False)
//! ```
//!
//! `strict=False` tolerates buffers the official model may carry that this crate does not
//! store; `load_state_dict` still reports them in its returned `missing_keys`.
//!
//! [safetensors]: https://github.com/huggingface/safetensors

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View};

use crate::fs::write_atomic;
use crate::nn::Arch;

/// File-name prefix of [`Checkpoint::extra`] tensors.
pub const EXTRA_PREFIX: &str = "_bayesian_bits.";
/// Metadata key of the checkpoint format version.
pub const FORMAT_VERSION: &str = "bayesian_bits.format_version";
/// The format version this crate writes and reads.
pub const CURRENT_FORMAT_VERSION: u64 = 1;
/// Metadata key: optimizer steps taken so far.
pub const STEP: &str = "step";
/// Metadata key: completed epochs.
pub const EPOCH: &str = "epoch";
/// Metadata key: the run's random seed.
pub const SEED: &str = "seed";
/// Metadata key: the model name ([`Arch::name`]).
pub const MODEL: &str = "model";
/// Metadata key: the training phase; absent for Bayesian Bits training.
pub const PHASE: &str = "phase";
/// [`PHASE`] of a fixed-gate fine-tuning checkpoint (spec §7.4): the tensors are those of
/// [`crate::spec::fixed::fixed_gate_arch`] (BN folded into biases).
pub const FIXED_GATE_PHASE: &str = "fixed-gate";

/// Errors raised while building, saving, loading or validating a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint file does not exist.
    #[error("checkpoint {path} does not exist")]
    NotFound {
        /// The file asked for.
        path: PathBuf,
    },
    /// A file-system operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write`, `rename to the destination`, …).
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file (truncated, corrupt, or not safetensors at all).
    #[error("{path}: not a valid safetensors file (truncated or corrupt?): {msg}")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// The parser's message.
        msg: String,
    },
    /// A tensor has a data type that cannot be used.
    #[error(
        "{path}: tensor {tensor} has dtype {dtype}; expected F32 (F64, F16 and BF16 are converted)"
    )]
    Dtype {
        /// The file involved.
        path: PathBuf,
        /// The tensor's name as stored in the file.
        tensor: String,
        /// The stored dtype.
        dtype: String,
    },
    /// A tensor holds NaN or ±∞.
    #[error("{path}: tensor {tensor} holds the non-finite value {value} at flat index {index}")]
    NonFinite {
        /// The file being saved or loaded.
        path: PathBuf,
        /// The tensor's name as stored in the file.
        tensor: String,
        /// Flat (row-major) index of the first bad element.
        index: usize,
        /// The bad value.
        value: f32,
    },
    /// A tensor's data length disagrees with its shape.
    #[error("tensor {tensor}: shape {shape:?} needs {expected} elements, data has {actual}")]
    ElementCount {
        /// The tensor's name.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Product of the shape.
        expected: usize,
        /// Length of the data.
        actual: usize,
    },
    /// A tensor name is empty or uses the reserved [`EXTRA_PREFIX`] in the wrong map.
    #[error("invalid tensor name {name:?}: {msg}")]
    Name {
        /// The name.
        name: String,
        /// What is wrong with it.
        msg: &'static str,
    },
    /// A metadata value cannot be parsed.
    #[error("checkpoint metadata {key} = {value:?} is not {expected}")]
    Metadata {
        /// The metadata key.
        key: String,
        /// Its value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The file was written by a newer, incompatible version of this crate.
    #[error("{path}: checkpoint format version {found} is not supported (this build reads {CURRENT_FORMAT_VERSION})")]
    Version {
        /// The file involved.
        path: PathBuf,
        /// The version it declares.
        found: String,
    },
    /// The tensors do not match a model's `state_dict`.
    #[error("checkpoint does not match {0}")]
    Mismatch(Box<ArchMismatch>),
}

type Result<T> = std::result::Result<T, CheckpointError>;

/// How a checkpoint differs from a model's `state_dict` (see [`Checkpoint::validate_against`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArchMismatch {
    /// The model ([`Arch::name`]).
    pub model: String,
    /// Names the model needs that the checkpoint lacks, with the expected shape.
    pub missing: Vec<(String, Vec<usize>)>,
    /// Float tensors of the checkpoint the model does not have, with their shape.
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// Tensors present with another shape: name, expected shape, actual shape.
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Tensors the model needs that are stored with a non-float dtype: name and dtype.
    pub wrong_dtype: Vec<(String, String)>,
}

impl ArchMismatch {
    fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.wrong_shape.is_empty()
            && self.wrong_dtype.is_empty()
    }
}

/// Entries of each list shown by `Display`; the struct keeps all of them.
const SHOWN: usize = 12;

fn write_list<T>(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    items: &[T],
    show: impl Fn(&T) -> String,
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    write!(f, "; {} {title}: ", items.len())?;
    let shown: Vec<String> = items.iter().take(SHOWN).map(show).collect();
    write!(f, "{}", shown.join(", "))?;
    if items.len() > SHOWN {
        write!(f, ", … ({} more)", items.len() - SHOWN)?;
    }
    Ok(())
}

impl fmt::Display for ArchMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.model)?;
        write_list(f, "missing", &self.missing, |(n, s)| format!("{n} {s:?}"))?;
        write_list(f, "unexpected", &self.unexpected, |(n, s)| {
            format!("{n} {s:?}")
        })?;
        write_list(f, "with a wrong shape", &self.wrong_shape, |(n, e, a)| {
            format!("{n} expected {e:?} found {a:?}")
        })?;
        write_list(f, "with a non-float dtype", &self.wrong_dtype, |(n, d)| {
            format!("{n} ({d})")
        })
    }
}

/// One dense f32 tensor, row-major, with its PyTorch shape.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorData {
    /// Shape (e.g. OIHW for a conv weight, `[1]` for a scalar parameter).
    pub shape: Vec<usize>,
    /// Row-major values; `data.len()` equals the product of `shape`.
    pub data: Vec<f32>,
}

impl TensorData {
    /// Checks that `data` fits `shape`; `name` is only used in the error.
    pub fn new(name: &str, shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let t = Self { shape, data };
        t.check_len(name)?;
        Ok(t)
    }

    /// Number of elements the shape calls for (`None` on overflow).
    pub fn numel(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    fn check_len(&self, name: &str) -> Result<()> {
        match self.numel() {
            Some(n) if n == self.data.len() => Ok(()),
            n => Err(CheckpointError::ElementCount {
                tensor: name.to_string(),
                shape: self.shape.clone(),
                expected: n.unwrap_or(usize::MAX),
                actual: self.data.len(),
            }),
        }
    }

    fn check_finite(&self, path: &Path, name: &str) -> Result<()> {
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(index) => Err(CheckpointError::NonFinite {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                index,
                value: self.data[index],
            }),
        }
    }
}

/// A non-float tensor found in a loaded file and left out of [`Checkpoint::tensors`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedTensor {
    /// The stored dtype (e.g. `I64`).
    pub dtype: String,
    /// The stored shape.
    pub shape: Vec<usize>,
}

/// Model tensors, extra training state and string metadata; see the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// Model tensors under their official `state_dict` names.
    pub tensors: BTreeMap<String, TensorData>,
    /// Extra training state (optimizer moments, …), keyed **without** [`EXTRA_PREFIX`].
    pub extra: BTreeMap<String, TensorData>,
    /// String metadata (the safetensors header's `__metadata__`).
    pub metadata: BTreeMap<String, String>,
    /// Integer/bool tensors found by [`Checkpoint::load`] (e.g. `num_batches_tracked`); they are
    /// not written back by [`Checkpoint::save`].
    pub skipped: BTreeMap<String, SkippedTensor>,
}

/// Borrowed f32 tensor handed to the safetensors serializer.
struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(self.data))
        } else {
            Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
    }

    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

fn decode(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b) as f32
            })
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

fn is_integer(dtype: Dtype) -> bool {
    matches!(
        dtype,
        Dtype::BOOL
            | Dtype::U8
            | Dtype::I8
            | Dtype::I16
            | Dtype::U16
            | Dtype::I32
            | Dtype::U32
            | Dtype::I64
            | Dtype::U64
    )
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a model tensor; `name` must not start with [`EXTRA_PREFIX`].
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> Result<()> {
        let name = name.into();
        check_model_name(&name)?;
        let t = TensorData::new(&name, shape, data)?;
        self.tensors.insert(name, t);
        Ok(())
    }

    /// Adds (or replaces) an extra tensor, keyed without [`EXTRA_PREFIX`] (e.g. `adam.weights.m`).
    pub fn insert_extra(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> Result<()> {
        let name = name.into();
        if name.is_empty() {
            return Err(CheckpointError::Name {
                name,
                msg: "empty name",
            });
        }
        let t = TensorData::new(&name, shape, data)?;
        self.extra.insert(name, t);
        Ok(())
    }

    /// A model tensor by name.
    pub fn get(&self, name: &str) -> Option<&TensorData> {
        self.tensors.get(name)
    }

    /// An extra tensor by name (without [`EXTRA_PREFIX`]).
    pub fn get_extra(&self, name: &str) -> Option<&TensorData> {
        self.extra.get(name)
    }

    /// A model tensor that must exist with exactly `shape`.
    pub fn expect(&self, name: &str, shape: &[usize]) -> Result<&TensorData> {
        match self.tensors.get(name) {
            Some(t) if t.shape == shape => Ok(t),
            other => Err(CheckpointError::Mismatch(Box::new(ArchMismatch {
                model: "the requested tensor".to_string(),
                missing: if other.is_none() {
                    vec![(name.to_string(), shape.to_vec())]
                } else {
                    vec![]
                },
                wrong_shape: other
                    .map(|t| vec![(name.to_string(), shape.to_vec(), t.shape.clone())])
                    .unwrap_or_default(),
                ..ArchMismatch::default()
            }))),
        }
    }

    /// Sets a string metadata entry.
    pub fn set_meta(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    /// A string metadata entry.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// Whether it holds a fixed-gate fine-tuning network ([`FIXED_GATE_PHASE`]).
    pub fn is_fixed_gate(&self) -> bool {
        self.meta(PHASE) == Some(FIXED_GATE_PHASE)
    }

    /// Stores a counter (step, epoch, seed) as a decimal string.
    pub fn set_u64(&mut self, key: impl Into<String>, value: u64) {
        self.set_meta(key, value.to_string());
    }

    /// Reads a counter stored by [`Checkpoint::set_u64`]; `Ok(None)` when the key is absent.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.meta(key)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| CheckpointError::Metadata {
                        key: key.to_string(),
                        value: v.to_string(),
                        expected: "an unsigned integer",
                    })
            })
            .transpose()
    }

    /// Serializes to safetensors bytes after checking every tensor (shape and finiteness;
    /// `path` only names the destination in errors).
    fn to_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        let mut entries: Vec<(String, F32View<'_>)> =
            Vec::with_capacity(self.tensors.len() + self.extra.len());
        for (name, t) in &self.tensors {
            check_model_name(name)?;
            t.check_len(name)?;
            t.check_finite(path, name)?;
            entries.push((
                name.clone(),
                F32View {
                    shape: &t.shape,
                    data: &t.data,
                },
            ));
        }
        for (name, t) in &self.extra {
            let full = format!("{EXTRA_PREFIX}{name}");
            t.check_len(&full)?;
            t.check_finite(path, &full)?;
            entries.push((
                full,
                F32View {
                    shape: &t.shape,
                    data: &t.data,
                },
            ));
        }
        let mut meta: HashMap<String, String> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        meta.insert(
            FORMAT_VERSION.to_string(),
            CURRENT_FORMAT_VERSION.to_string(),
        );
        let failed = |msg: String| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            msg: format!("serialization failed: {msg}"),
        };
        let bytes =
            safetensors::serialize(entries, Some(meta)).map_err(|e| failed(e.to_string()))?;
        canonical_header(&bytes).map_err(failed)
    }

    /// Parses safetensors bytes; `path` only names the source in errors.
    fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |e: safetensors::SafeTensorError| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            msg: e.to_string(),
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
        let st = SafeTensors::deserialize(bytes).map_err(corrupt)?;
        let mut ck = Checkpoint::new();
        if let Some(meta) = header.metadata() {
            ck.metadata = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        if let Some(v) = ck.metadata.remove(FORMAT_VERSION) {
            if v.trim().parse::<u64>().ok() != Some(CURRENT_FORMAT_VERSION) {
                return Err(CheckpointError::Version {
                    path: path.to_path_buf(),
                    found: v,
                });
            }
        }
        for (name, view) in st.iter() {
            let dtype = view.dtype();
            let extra_name = name.strip_prefix(EXTRA_PREFIX);
            let Some(data) = decode(dtype, view.data()) else {
                if is_integer(dtype) && extra_name.is_none() {
                    ck.skipped.insert(
                        name.to_string(),
                        SkippedTensor {
                            dtype: format!("{dtype:?}"),
                            shape: view.shape().to_vec(),
                        },
                    );
                    continue;
                }
                return Err(CheckpointError::Dtype {
                    path: path.to_path_buf(),
                    tensor: name.to_string(),
                    dtype: format!("{dtype:?}"),
                });
            };
            let t = TensorData {
                shape: view.shape().to_vec(),
                data,
            };
            t.check_len(name)?;
            t.check_finite(path, name)?;
            match extra_name {
                Some(extra) => ck.extra.insert(extra.to_string(), t),
                None => ck.tensors.insert(name.to_string(), t),
            };
        }
        Ok(ck)
    }

    /// Writes the checkpoint to `path` atomically (see the [module docs](self)). Refuses
    /// non-finite values, so a diverged run never replaces a good checkpoint. The format version
    /// is added to the metadata; [`Checkpoint::skipped`] tensors are not written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes(path)?;
        write_atomic(path, &bytes).map_err(|source| CheckpointError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a checkpoint written by [`Checkpoint::save`] or by `safetensors.torch.save_file`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                CheckpointError::NotFound {
                    path: path.to_path_buf(),
                }
            } else {
                CheckpointError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Checks that every tensor of `arch`'s official `state_dict` is present with its shape and
    /// that there is no other float tensor. Non-float tensors outside the model's list (e.g.
    /// `num_batches_tracked`) are tolerated; [`Checkpoint::extra`] is not checked.
    pub fn validate_against(&self, arch: &Arch) -> Result<()> {
        let expected = arch.state_dict_shapes();
        let mut m = ArchMismatch {
            model: arch.name.to_string(),
            ..ArchMismatch::default()
        };
        for (name, shape) in &expected {
            match (self.tensors.get(name), self.skipped.get(name)) {
                (Some(t), _) if &t.shape == shape => {}
                (Some(t), _) => m
                    .wrong_shape
                    .push((name.clone(), shape.clone(), t.shape.clone())),
                (None, Some(s)) => m.wrong_dtype.push((name.clone(), s.dtype.clone())),
                (None, None) => m.missing.push((name.clone(), shape.clone())),
            }
        }
        let known: std::collections::HashSet<&str> =
            expected.iter().map(|(n, _)| n.as_str()).collect();
        for (name, t) in &self.tensors {
            if !known.contains(name.as_str()) {
                m.unexpected.push((name.clone(), t.shape.clone()));
            }
        }
        if m.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::Mismatch(Box::new(m)))
        }
    }
}

/// Recursively rebuilds JSON objects with their keys in sorted order.
fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let entries: BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            serde_json::Value::Object(entries.into_iter().collect())
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

/// Rewrites the header of a serialized safetensors file with sorted keys, so that the same
/// checkpoint always gives the same bytes (the serializer emits its metadata in hash order).
fn canonical_header(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let n = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
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

fn check_model_name(name: &str) -> Result<()> {
    if name.is_empty() {
        Err(CheckpointError::Name {
            name: name.to_string(),
            msg: "empty name",
        })
    } else if name.starts_with(EXTRA_PREFIX) {
        Err(CheckpointError::Name {
            name: name.to_string(),
            msg:
                "model tensors may not use the reserved prefix `_bayesian_bits.`; use insert_extra",
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes little-endian 16-bit words of `dtype`.
    fn decode16(dtype: Dtype, words: &[u16]) -> Vec<f32> {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        decode(dtype, &bytes).expect("a float dtype")
    }

    #[test]
    fn half_precision_decoding() {
        let f16 = decode16(
            Dtype::F16,
            &[0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0200, 0x3555],
        );
        let expected = [
            1.0,
            -2.0,
            65504.0,
            2f32.powi(-24),
            1023.0 * 2f32.powi(-24),
            2f32.powi(-15),
            0.333_251_95,
        ];
        assert_eq!(f16, expected);
        let special = decode16(Dtype::F16, &[0x8000, 0x7c00, 0x7e00]);
        assert_eq!(special[0].to_bits(), 0x8000_0000);
        assert!(special[1].is_infinite() && special[2].is_nan());
        // bf16 is the top half of an f32.
        let bf16 = decode16(Dtype::BF16, &[0x3f80, 0xc040, 0x3eab]);
        assert_eq!(bf16, [1.0, -3.0, f32::from_bits(0x3eab_0000)]);
    }
}
