//! The size table of an export: per layer and for the whole model.

use super::format::{Codes, ExportedModel};
use super::pack;
use serde::Serialize;

/// One conv/linear layer's sizes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SizeRow {
    /// Layer name.
    pub name: String,
    /// Bytes of the layer in FP32: all weights and one bias per output channel, 4 bytes each.
    pub fp32_bytes: u64,
    /// Learned weight bit width.
    pub weight_bits: u32,
    /// Output channels in the export (kept).
    pub kept_channels: usize,
    /// Output channels of the original layer.
    pub total_channels: usize,
    /// Bytes of the layer's tensors in the export: packed weight codes, f32 biases and the
    /// i32 kept-channel indices.
    pub packed_bytes: u64,
}

/// Sizes of an export.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SizeTable {
    /// Model name.
    pub model: String,
    /// Conv/linear layers in order.
    pub layers: Vec<SizeRow>,
    /// Bytes of the whole export file (header and manifest included).
    pub file_bytes: u64,
    /// Σ of the layers' FP32 bytes.
    pub fp32_bytes: u64,
    /// `fp32_bytes / file_bytes`.
    pub compression: f64,
    /// Relative BOPs in percent of the FP32 model (spec §6).
    pub relative_bops_percent: f64,
}

impl SizeTable {
    /// The table of `model`, whose serialized file has `file_bytes` bytes.
    pub fn new(model: &ExportedModel, file_bytes: u64) -> Self {
        let mut layers = Vec::new();
        for l in &model.layers {
            let Some(m) = model.layer_manifest(&l.name) else {
                continue;
            };
            let spec = model.manifest.layers.iter().find(|x| x.name == l.name);
            let original_weights: u64 = spec.map_or(0, |s| {
                let fan_in = if s.kind == "conv" {
                    s.input[0] * m.kernel * m.kernel
                } else {
                    s.input.iter().product()
                };
                (fan_in * m.out_channels) as u64
            });
            let code_bytes = match &l.weight {
                Codes::Int(c) => pack::packed_len(c.len(), m.weight.bits) as u64,
                Codes::Float(v) => 4 * v.len() as u64,
            };
            layers.push(SizeRow {
                name: l.name.clone(),
                fp32_bytes: 4 * (original_weights + m.out_channels as u64),
                weight_bits: m.weight.bits,
                kept_channels: m.kept_out,
                total_channels: m.out_channels,
                packed_bytes: code_bytes + 8 * l.bias.len() as u64,
            });
        }
        let fp32_bytes = layers.iter().map(|r| r.fp32_bytes).sum();
        Self {
            model: model.manifest.model.clone(),
            layers,
            file_bytes,
            fp32_bytes,
            compression: fp32_bytes as f64 / file_bytes.max(1) as f64,
            relative_bops_percent: model.manifest.relative_bops_percent,
        }
    }

    /// A plain-text table.
    pub fn format(&self) -> String {
        // The name column fits the longest name (at least 14 wide).
        let width = self
            .layers
            .iter()
            .map(|r| r.name.len())
            .fold(14, usize::max);
        let mut s = format!(
            "{:<width$} {:>12} {:>5} {:>11} {:>12} {:>7}\n",
            "layer", "fp32 bytes", "bits", "kept/total", "packed bytes", "ratio"
        );
        for r in &self.layers {
            s += &format!(
                "{:<width$} {:>12} {:>5} {:>11} {:>12} {:>6.1}x\n",
                r.name,
                r.fp32_bytes,
                r.weight_bits,
                format!("{}/{}", r.kept_channels, r.total_channels),
                r.packed_bytes,
                r.fp32_bytes as f64 / r.packed_bytes.max(1) as f64
            );
        }
        s += &format!(
            "file {} bytes vs fp32 {} bytes ({:.1}x smaller); relative BOPs {:.3} %\n",
            self.file_bytes, self.fp32_bytes, self.compression, self.relative_bops_percent
        );
        s
    }

    /// JSON (the contents of `export.json`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serializes")
    }
}
