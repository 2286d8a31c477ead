//! What a training run writes and prints: per-epoch metrics (`metrics.jsonl`), the final
//! `report.json`, a terminal table and an SVG plot of bit widths and relative BOPs over epochs.
//!
//! `report.json` has exactly the keys `test_accuracy` (percent), `relative_bops_percent` and
//! `layers`, a list of `{"name", "weight_bits", "act_bits", "kept_channels", "total_channels"}`
//! in network order; `act_bits` is `null` for the logit layer, which has no activation quantizer.
//!
//! `metrics.jsonl` holds one JSON object per line: a [`StepMetrics`] line (it has a `step` key)
//! every `log_every` training steps, with the gate probabilities of every quantizer, and an
//! [`EpochReport`] line after each epoch. Non-finite numbers (a diverged loss) are written as
//! `null` (JSON has no NaN) and read back as NaN.
//!
//! Plots: `bits.svg` ([`plot_svg`]) over epochs, and `gates.svg` ([`plot_gates_svg`]) of the
//! gate probabilities over steps; [`redraw`] draws both from a `metrics.jsonl` (feature `plot`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::fs::write_atomic;
use crate::nn::Arch;
use crate::quant::{relative_bops, LayerBops, QuantizerState};
use crate::train::metrics::{LayerGates, StepMetrics};

/// Errors raised while computing, writing or reading reports; file errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
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
    /// A JSON document could not be written or parsed.
    #[error("{path}: JSON error: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// A line of `metrics.jsonl` (not the last one) is unreadable.
    #[error("{path}: line {line} is not a step or epoch record: {msg}")]
    MetricsLine {
        /// The file involved.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The layer reports do not describe the model's weighted layers.
    #[error("layer reports do not match {model}: {msg}")]
    Layers {
        /// The model name.
        model: String,
        /// What differs.
        msg: String,
    },
    /// Drawing the plot failed.
    #[error("{path}: cannot draw the plot: {msg}")]
    Plot {
        /// The file being drawn.
        path: PathBuf,
        /// The drawing backend's message.
        msg: String,
    },
}

type Result<T> = std::result::Result<T, ReportError>;

/// Test-time state of one weighted layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerReport {
    /// `state_dict` prefix, e.g. `features.0`.
    pub name: String,
    /// Bit width of the weight quantizer.
    pub weight_bits: u32,
    /// Bit width of the output activation quantizer; `None` (JSON `null`) for the logit layer.
    pub act_bits: Option<u32>,
    /// Output channels whose test-time pruning gate is on.
    pub kept_channels: usize,
    /// Output channels of the layer.
    pub total_channels: usize,
}

impl LayerReport {
    /// Builds a report from the quantizers' host state (spec §2.4, §2.5): the weight quantizer
    /// gives the weight bits and, when it has pruning gates, the kept channels (all channels
    /// otherwise); the activation quantizer, if any, gives the activation bits.
    pub fn from_states(
        name: impl Into<String>,
        total_channels: usize,
        weight: &QuantizerState,
        activation: Option<&QuantizerState>,
    ) -> Self {
        Self {
            name: name.into(),
            weight_bits: weight.bit_width(),
            act_bits: activation.map(QuantizerState::bit_width),
            kept_channels: weight.kept_channels().unwrap_or(total_channels),
            total_channels,
        }
    }
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One line of `metrics.jsonl`: the evaluation after a training epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: u64,
    /// Mean cross-entropy over the epoch's training batches.
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    /// Training top-1 accuracy in percent (with sampled gates, as trained).
    #[serde(deserialize_with = "nan_if_null")]
    pub train_accuracy: f64,
    /// Test top-1 accuracy in percent (eval mode, deterministic gates).
    #[serde(deserialize_with = "nan_if_null")]
    pub test_accuracy: f64,
    /// Relative BOPs in percent of the FP32 network (spec §6.2).
    #[serde(deserialize_with = "nan_if_null")]
    pub relative_bops_percent: f64,
    /// Mean regulariser ΣR over the epoch (without the factor μ).
    #[serde(deserialize_with = "nan_if_null")]
    pub regularizer: f64,
    /// Training throughput.
    #[serde(deserialize_with = "nan_if_null")]
    pub images_per_second: f64,
    /// Test-time state of each weighted layer, in network order.
    pub layers: Vec<LayerReport>,
    /// Gate probabilities of each weighted layer at the end of the epoch (empty in logs
    /// written before they were recorded).
    #[serde(default)]
    pub gates: Vec<LayerGates>,
}

impl EpochReport {
    /// The terminal table with the next gate to flip per layer; see [`format_table_with_flips`].
    pub fn table(&self) -> String {
        format_table_with_flips(
            &self.layers,
            &self.gates,
            self.relative_bops_percent,
            self.test_accuracy,
        )
    }

    /// The final report of a run that ended with this epoch (spec §7.1: the last epoch's
    /// evaluation, no best-epoch selection).
    pub fn report(&self) -> Report {
        Report {
            test_accuracy: self.test_accuracy,
            relative_bops_percent: self.relative_bops_percent,
            layers: self.layers.clone(),
        }
    }
}

/// The final `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Test top-1 accuracy in percent.
    #[serde(deserialize_with = "nan_if_null")]
    pub test_accuracy: f64,
    /// Relative BOPs in percent of the FP32 network.
    #[serde(deserialize_with = "nan_if_null")]
    pub relative_bops_percent: f64,
    /// Per weighted layer, in network order.
    pub layers: Vec<LayerReport>,
}

impl Report {
    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of numbers and strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes `report.json` atomically.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut text = serde_json::to_string_pretty(self).map_err(|source| ReportError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        text.push('\n');
        write_atomic(path, text.as_bytes()).map_err(|source| ReportError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a `report.json`.
    pub fn read_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ReportError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The terminal table; see [`format_table`].
    pub fn table(&self) -> String {
        format_table(&self.layers, self.relative_bops_percent, self.test_accuracy)
    }
}

/// Relative BOPs in percent (spec §6.2) of `arch` in the state `layers` describes.
///
/// `layers` must list `arch`'s weighted layers in order, with the same names and channel
/// counts. Layer l's input bits are the previous weighted layer's activation bits (8 for the
/// network input); its keep ratio is `kept/total`, and 1 for a layer without pruning gates (the
/// logit layer).
pub fn relative_bops_percent(arch: &Arch, layers: &[LayerReport]) -> Result<f64> {
    let err = |msg: String| ReportError::Layers {
        model: arch.name.to_string(),
        msg,
    };
    if arch.layers.iter().any(|l| l.inputs.len() > 1) {
        return Err(err(
            "a network with residual adds needs per-channel masks: use quant::graph_relative_bops"
                .into(),
        ));
    }
    let specs: Vec<_> = arch.weighted_layers().collect();
    if specs.len() != layers.len() {
        return Err(err(format!(
            "expected {} weighted layers, got {}",
            specs.len(),
            layers.len()
        )));
    }
    let mut bops = Vec::with_capacity(layers.len());
    let mut input_bits = 8;
    for (i, (spec, layer)) in specs.iter().zip(layers).enumerate() {
        if spec.name != layer.name {
            return Err(err(format!(
                "expected layer {}, got {}",
                spec.name, layer.name
            )));
        }
        if layer.total_channels != spec.out_channels() {
            return Err(err(format!(
                "{} has {} output channels, the report says {}",
                spec.name,
                spec.out_channels(),
                layer.total_channels
            )));
        }
        if layer.kept_channels > layer.total_channels {
            return Err(err(format!(
                "{} keeps {} of {} channels",
                spec.name, layer.kept_channels, layer.total_channels
            )));
        }
        if layer.weight_bits == 0 {
            return Err(err(format!("{} has 0 weight bits", spec.name)));
        }
        let keep_out = if spec.prune {
            layer.kept_channels as f64 / layer.total_channels as f64
        } else {
            1.0
        };
        bops.push(LayerBops {
            macs: spec.macs(),
            weight_bits: layer.weight_bits,
            input_bits,
            keep_out,
        });
        input_bits = match layer.act_bits {
            Some(b) if b > 0 => b,
            _ if i + 1 < specs.len() => {
                return Err(err(format!(
                    "{} has no activation bits but feeds the next weighted layer",
                    spec.name
                )))
            }
            _ => 0,
        };
    }
    Ok(relative_bops(&bops))
}

/// The terminal table: per layer weight bits, activation bits and kept/total channels, then the
/// relative BOPs and test accuracy.
pub fn format_table(
    layers: &[LayerReport],
    relative_bops_percent: f64,
    test_accuracy: f64,
) -> String {
    table(layers, None, relative_bops_percent, test_accuracy)
}

/// [`format_table`] with a last column naming, per layer, the gate nearest to flipping its
/// test-time decision and its P(gate ≠ 0): e.g. `w.g8 0.9993 ↓` (the weight quantizer's g8 is
/// on and would switch off, halving the weight bits) or `a.g16 0.0110 ↑`; `w.z2[c]` is the
/// pruning gate of channel c (see [`crate::train::metrics::next_flip`]). A gate flips when its
/// P crosses [`crate::train::metrics::threshold_probability`] (≈ 0.66).
pub fn format_table_with_flips(
    layers: &[LayerReport],
    gates: &[LayerGates],
    relative_bops_percent: f64,
    test_accuracy: f64,
) -> String {
    table(layers, Some(gates), relative_bops_percent, test_accuracy)
}

fn table(
    layers: &[LayerReport],
    gates: Option<&[LayerGates]>,
    relative_bops_percent: f64,
    test_accuracy: f64,
) -> String {
    let width = layers
        .iter()
        .map(|l| l.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("layer".len());
    let flip = |name: &str| {
        gates
            .and_then(|g| g.iter().find(|g| g.name == name))
            .and_then(LayerGates::next_flip)
            .map_or_else(|| "-".to_string(), |f| f.label())
    };
    let mut s = format!(
        "{:<width$}  {:>6}  {:>6}  {:>13}",
        "layer", "w bits", "a bits", "kept/total"
    );
    let mut rule = width + 2 + 6 + 2 + 6 + 2 + 13;
    if gates.is_some() {
        s.push_str(&format!("  {:<18}", "next flip (P)"));
        rule += 2 + 18;
    }
    s = s.trim_end().to_string();
    s.push('\n');
    s.push_str(&format!("{}\n", "-".repeat(rule)));
    for l in layers {
        let act = l
            .act_bits
            .map_or_else(|| "-".to_string(), |b| b.to_string());
        let kept = format!("{}/{}", l.kept_channels, l.total_channels);
        let mut line = format!(
            "{:<width$}  {:>6}  {:>6}  {:>13}",
            l.name, l.weight_bits, act, kept
        );
        if gates.is_some() {
            line.push_str(&format!("  {}", flip(&l.name)));
        }
        s.push_str(&line);
        s.push('\n');
    }
    s.push_str(&format!(
        "relative BOPs: {relative_bops_percent:.4} %   test accuracy: {test_accuracy:.2} %\n"
    ));
    s
}

/// Everything a `metrics.jsonl` holds, split by kind, each in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsHistory {
    /// Epoch lines.
    pub epochs: Vec<EpochReport>,
    /// Step lines.
    pub steps: Vec<StepMetrics>,
}

/// One parsed line of `metrics.jsonl`.
enum Record {
    Epoch(Box<EpochReport>),
    Step(Box<StepMetrics>),
}

fn parse_record(line: &str) -> std::result::Result<Record, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if v.get("step").is_some() {
        serde_json::from_value(v)
            .map(|s| Record::Step(Box::new(s)))
            .map_err(|e| format!("step line: {e}"))
    } else {
        serde_json::from_value(v)
            .map(|e| Record::Epoch(Box::new(e)))
            .map_err(|e| format!("epoch line: {e}"))
    }
}

/// Appends JSON lines (per epoch and per logged step) to `metrics.jsonl`, flushed to disk after
/// every line.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ReportError {
    let path = path.to_path_buf();
    move |source| ReportError::Io {
        action,
        path,
        source,
    }
}

impl MetricsLog {
    /// Starts a fresh log, replacing any existing file.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(io_err("create", &path))?;
        Ok(Self { path, file })
    }

    /// Reopens the log of a run resumed after `last_epoch` completed epochs: keeps the lines up
    /// to and including epoch `last_epoch` (step lines carry the epoch they were written in)
    /// and removes every line from the first later epoch on,
    /// so the resumed run does not duplicate epochs. A torn last line (a crash mid-write) is
    /// dropped; an unreadable line before it is an error. A missing file is created.
    pub fn resume(path: impl AsRef<Path>, last_epoch: u64) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io_err("read", &path))?;
        let mut keep = 0usize;
        let mut offset = 0usize;
        let mut line_no = 0usize;
        while offset < text.len() {
            line_no += 1;
            let end = text[offset..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|p| offset + p + 1);
            let last = end.is_none_or(|e| e >= text.len());
            let line = &text[offset..end.unwrap_or(text.len())];
            let parsed = std::str::from_utf8(line)
                .map_err(|e| e.to_string())
                .and_then(|l| {
                    let l = l.trim();
                    if l.is_empty() {
                        return Ok(None);
                    }
                    let v: serde_json::Value =
                        serde_json::from_str(l).map_err(|e| e.to_string())?;
                    v.get("epoch")
                        .and_then(serde_json::Value::as_u64)
                        .map(Some)
                        .ok_or_else(|| "no unsigned integer \"epoch\" field".to_string())
                });
            match parsed {
                Ok(Some(epoch)) if epoch > last_epoch => break,
                Ok(_) if end.is_some() => keep = end.unwrap_or(keep),
                // Trailing blanks, or a complete record whose newline never made it to disk.
                Ok(_) => {
                    log::warn!("{}: dropping the unterminated last line", path.display());
                    break;
                }
                Err(msg) if last => {
                    log::warn!(
                        "{}: dropping the torn last line {line_no}: {msg}",
                        path.display()
                    );
                    break;
                }
                Err(msg) => {
                    return Err(ReportError::MetricsLine {
                        path,
                        line: line_no,
                        msg,
                    })
                }
            }
            offset = end.unwrap_or(text.len());
        }
        file.set_len(keep as u64)
            .map_err(io_err("truncate", &path))?;
        file.seek(SeekFrom::End(0)).map_err(io_err("seek", &path))?;
        file.sync_data().map_err(io_err("sync", &path))?;
        Ok(Self { path, file })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one epoch as a single JSON line and syncs it to disk.
    pub fn append(&mut self, epoch: &EpochReport) -> Result<()> {
        self.append_line(epoch)
    }

    /// Appends one step line and flushes it (written to the OS at once, so `plot` sees it;
    /// synced to disk with the next epoch line).
    pub fn append_step(&mut self, step: &StepMetrics) -> Result<()> {
        let mut line = serde_json::to_string(step).map_err(|source| ReportError::Json {
            path: self.path.clone(),
            source,
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(io_err("append to", &self.path))?;
        self.file.flush().map_err(io_err("flush", &self.path))
    }

    fn append_line(&mut self, record: &impl Serialize) -> Result<()> {
        let mut line = serde_json::to_string(record).map_err(|source| ReportError::Json {
            path: self.path.clone(),
            source,
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(io_err("append to", &self.path))?;
        self.file.flush().map_err(io_err("flush", &self.path))?;
        self.file.sync_data().map_err(io_err("sync", &self.path))
    }

    /// Reads every epoch record of a log (e.g. to redraw the plot after a resume); step lines
    /// are skipped.
    pub fn read(path: impl AsRef<Path>) -> Result<Vec<EpochReport>> {
        Ok(Self::read_all(path)?.epochs)
    }

    /// Reads every line of a log. A torn last line (a run still writing, or a crash mid-write)
    /// is ignored; any other unreadable line is an error naming the file and line.
    pub fn read_all(path: impl AsRef<Path>) -> Result<MetricsHistory> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(io_err("read", path))?;
        let lines: Vec<&str> = text.lines().collect();
        let mut out = MetricsHistory::default();
        for (i, l) in lines.iter().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            match parse_record(l) {
                Ok(Record::Epoch(e)) => out.epochs.push(*e),
                Ok(Record::Step(s)) => out.steps.push(*s),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
                Err(msg) => {
                    return Err(ReportError::MetricsLine {
                        path: path.to_path_buf(),
                        line: i + 1,
                        msg,
                    })
                }
            }
        }
        Ok(out)
    }
}

/// Redraws `bits.svg` and `gates.svg` in `dir` from the `metrics.jsonl` at `metrics` (also
/// while a run is still writing it); returns the paths written.
#[cfg(feature = "plot")]
pub fn redraw(metrics: impl AsRef<Path>, dir: impl AsRef<Path>) -> Result<[PathBuf; 2]> {
    let history = MetricsLog::read_all(metrics)?;
    let dir = dir.as_ref();
    let bits = dir.join("bits.svg");
    let gates = dir.join("gates.svg");
    plot_svg(&history.epochs, &bits)?;
    plot_gates_svg(&history.steps, &gates)?;
    Ok([bits, gates])
}

#[cfg(feature = "plot")]
mod plot {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    use super::EpochReport;
    use crate::train::metrics::{QuantizerMetrics, StepMetrics, CHAIN_GATES};

    /// A message from the drawing backend.
    pub type PlotResult = std::result::Result<(), String>;

    fn msg<E: std::fmt::Debug>(e: E) -> String {
        format!("{e:?}")
    }

    /// Layer names in order of first appearance.
    fn layer_names(epochs: &[EpochReport]) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for e in epochs {
            for l in &e.layers {
                if !names.contains(&l.name) {
                    names.push(l.name.clone());
                }
            }
        }
        names
    }

    fn epoch_label(v: &f64) -> String {
        if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    }

    fn epoch_range(epochs: &[EpochReport]) -> std::ops::Range<f64> {
        let lo = epochs.iter().map(|e| e.epoch).min().unwrap_or(1) as f64;
        let hi = epochs.iter().map(|e| e.epoch).max().unwrap_or(1) as f64;
        if hi > lo {
            lo..hi
        } else {
            lo - 0.5..hi + 0.5
        }
    }

    fn bits_panel<DB: DrawingBackend>(
        area: &DrawingArea<DB, plotters::coord::Shift>,
        epochs: &[EpochReport],
        names: &[String],
        title: &str,
        pick: fn(&super::LayerReport) -> Option<u32>,
    ) -> PlotResult {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(epoch_range(epochs), 0.7f64..5.3f64)
            .map_err(msg)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("epoch")
            .x_label_formatter(&epoch_label)
            .y_desc("bits")
            .y_labels(5)
            .y_label_formatter(&|v| {
                let r = v.round();
                if (v - r).abs() < 1e-6 && (1.0..=5.0).contains(&r) {
                    format!("{}", 1u32 << (r as u32))
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(msg)?;
        // Layers with equal bit widths would hide each other: stagger them by a small fraction
        // of the distance between two bit widths (one unit on the log2 axis).
        let spread = 0.16;
        let step = if names.len() > 1 {
            spread / (names.len() - 1) as f64
        } else {
            0.0
        };
        for (i, name) in names.iter().enumerate() {
            let offset = i as f64 * step - spread / 2.0 * f64::from(u8::from(names.len() > 1));
            let points: Vec<(f64, f64)> = epochs
                .iter()
                .filter_map(|e| {
                    let l = e.layers.iter().find(|l| &l.name == name)?;
                    let bits = pick(l)?;
                    (bits > 0).then(|| (e.epoch as f64, f64::from(bits).log2() + offset))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let color = Palette99::pick(i).to_rgba();
            // Markers keep a single epoch (a line of one point) visible.
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(msg)?;
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(msg)?;
        }
        Ok(())
    }

    fn bops_panel<DB: DrawingBackend>(
        area: &DrawingArea<DB, plotters::coord::Shift>,
        epochs: &[EpochReport],
    ) -> PlotResult {
        let points: Vec<(f64, f64)> = epochs
            .iter()
            .filter(|e| e.relative_bops_percent.is_finite())
            .map(|e| (e.epoch as f64, e.relative_bops_percent))
            .collect();
        let top = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
        let top = if top > 0.0 { top * 1.05 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption("relative BOPs (% of FP32)", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(epoch_range(epochs), 0.0..top)
            .map_err(msg)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("epoch")
            .x_label_formatter(&epoch_label)
            .y_desc("%")
            .draw()
            .map_err(msg)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, BLACK.filled())))
            .map_err(msg)?;
        chart
            .draw_series(LineSeries::new(points, BLACK.stroke_width(2)))
            .map_err(msg)?;
        Ok(())
    }

    fn legend<DB: DrawingBackend>(
        area: &DrawingArea<DB, plotters::coord::Shift>,
        names: &[String],
    ) -> PlotResult {
        let style = ("sans-serif", 16).into_font().color(&BLACK);
        area.draw(&Text::new("layers", (10, 40), style.clone()))
            .map_err(msg)?;
        for (i, name) in names.iter().enumerate() {
            let y = 70 + 24 * i as i32;
            let color = Palette99::pick(i).to_rgba();
            area.draw(&PathElement::new(
                vec![(10, y), (40, y)],
                color.stroke_width(3),
            ))
            .map_err(msg)?;
            area.draw(&Text::new(name.as_str(), (48, y - 7), style.clone()))
                .map_err(msg)?;
        }
        Ok(())
    }

    /// Test accuracy against relative BOPs, one point per epoch joined in epoch order; the
    /// first and last epochs are labelled.
    fn tradeoff_panel<DB: DrawingBackend>(
        area: &DrawingArea<DB, plotters::coord::Shift>,
        epochs: &[EpochReport],
    ) -> PlotResult {
        let points: Vec<(f64, f64, u64)> = epochs
            .iter()
            .filter(|e| e.relative_bops_percent.is_finite() && e.test_accuracy.is_finite())
            .map(|e| (e.relative_bops_percent, e.test_accuracy, e.epoch))
            .collect();
        let span = |v: &mut dyn Iterator<Item = f64>, min_pad: f64| {
            let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                (a.min(x), b.max(x))
            });
            if !lo.is_finite() {
                return 0.0..1.0;
            }
            let pad = ((hi - lo) * 0.08).max(min_pad);
            lo - pad..hi + pad
        };
        let x = span(&mut points.iter().map(|p| p.0), 0.05);
        let x = x.start.max(0.0)..x.end;
        let y = span(&mut points.iter().map(|p| p.1), 0.5);
        let mut chart = ChartBuilder::on(area)
            .caption(
                "test accuracy vs relative BOPs (per epoch)",
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(x, y)
            .map_err(msg)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("relative BOPs (% of FP32)")
            .y_desc("test accuracy (%)")
            .draw()
            .map_err(msg)?;
        let color = BLUE.to_rgba();
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, y, _)| Circle::new((x, y), 4, color.filled())),
            )
            .map_err(msg)?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(x, y, _)| (x, y)),
                color.stroke_width(1),
            ))
            .map_err(msg)?;
        let style = ("sans-serif", 14).into_font().color(&BLACK);
        let mut labelled: Vec<&(f64, f64, u64)> = points.first().into_iter().collect();
        labelled.extend(points.last().filter(|_| points.len() > 1));
        for &&(x, y, e) in &labelled {
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("epoch {e}"),
                    (x, y),
                    style.clone(),
                )))
                .map_err(msg)?;
        }
        Ok(())
    }

    /// Renders the four panels and the legend into an SVG string.
    pub fn render(epochs: &[EpochReport]) -> std::result::Result<String, String> {
        let names = layer_names(epochs);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (1100, 1280)).into_drawing_area();
            root.fill(&WHITE).map_err(msg)?;
            let (charts, side) = root.split_horizontally(900);
            let panels = charts.split_evenly((4, 1));
            bits_panel(&panels[0], epochs, &names, "weight bits", |l| {
                Some(l.weight_bits)
            })?;
            bits_panel(&panels[1], epochs, &names, "activation bits", |l| {
                l.act_bits
            })?;
            bops_panel(&panels[2], epochs)?;
            tradeoff_panel(&panels[3], epochs)?;
            legend(&side, &names)?;
            root.present().map_err(msg)?;
        }
        Ok(svg)
    }

    /// Most points a series of the gate plot draws (longer runs are thinned evenly).
    const MAX_POINTS: usize = 1500;

    /// `logit(p)`, the y coordinate of a probability on the gate plot's axis.
    fn logit(p: f32) -> f64 {
        let p = f64::from(p);
        (p.ln() - (1.0 - p).ln()).clamp(-LOGIT_LIMIT, LOGIT_LIMIT)
    }

    fn sigmoid(v: f64) -> f64 {
        1.0 / (1.0 + (-v).exp())
    }

    /// The gate plot's axis ends at most this far from P = 0.5, in logit units.
    const LOGIT_LIMIT: f64 = 12.0;

    /// A tick of the logit axis at `v`, labelled with its probability to as many digits as
    /// ticks `spacing` logit units apart need to differ.
    fn probability_label(v: f64, spacing: f64) -> String {
        let p = 1.0 / (1.0 + (-v).exp());
        let tail = p.min(1.0 - p);
        let dp = p * (1.0 - p) * spacing;
        let need = |x: f64| {
            if x > 0.0 {
                (-x.log10()).ceil() as usize + 1
            } else {
                9
            }
        };
        let digits = need(tail).max(need(dp)).clamp(2, 9);
        format!("{p:.digits$}")
    }

    /// One line of one gate panel: a layer's series.
    struct Series {
        layer: usize,
        points: Vec<(f64, f64)>,
    }

    fn gate_panel<DB: DrawingBackend>(
        area: &DrawingArea<DB, plotters::coord::Shift>,
        title: &str,
        series: &[Series],
        x: std::ops::Range<f64>,
        threshold: f64,
    ) -> PlotResult {
        // Fit the data, so that small early movements show; take the threshold in when it is
        // near, and otherwise name it at the panel's edge.
        let (lo, hi) = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        let (lo, hi) = if lo.is_finite() {
            (lo, hi)
        } else {
            (threshold, threshold)
        };
        let span = (hi - lo).max(0.02);
        let near = threshold >= lo - 2.0 * span && threshold <= hi + 2.0 * span;
        let (lo, hi) = if near {
            (lo.min(threshold), hi.max(threshold))
        } else {
            (lo, hi)
        };
        let pad = (hi - lo).max(0.02) * 0.08;
        let y = (lo - pad).max(-LOGIT_LIMIT)..(hi + pad).min(LOGIT_LIMIT);
        let spacing = (y.end - y.start) / 6.0;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 17))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(x.clone(), y.clone())
            .map_err(msg)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("step")
            .x_labels(6)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("P(gate on)")
            .y_labels(6)
            .y_label_formatter(&|v| probability_label(*v, spacing))
            .draw()
            .map_err(msg)?;
        if near {
            chart
                .draw_series(DashedLineSeries::new(
                    [(x.start, threshold), (x.end, threshold)],
                    6,
                    4,
                    RED.stroke_width(1),
                ))
                .map_err(msg)?;
        } else {
            let below = threshold < y.start;
            let (anchor, text) = if below {
                (
                    (x.start, y.start + 0.04 * (y.end - y.start)),
                    format!(
                        "▼ test-time threshold {:.2} lies {:.2} logits below",
                        sigmoid(threshold),
                        lo - threshold
                    ),
                )
            } else {
                (
                    (x.start, y.end - 0.04 * (y.end - y.start)),
                    format!(
                        "▲ test-time threshold {:.2} lies {:.2} logits above",
                        sigmoid(threshold),
                        threshold - hi
                    ),
                )
            };
            let style = ("sans-serif", 13).into_font().color(&RED);
            let style = if below {
                style.pos(Pos::new(HPos::Left, VPos::Bottom))
            } else {
                style.pos(Pos::new(HPos::Left, VPos::Top))
            };
            chart
                .draw_series(std::iter::once(Text::new(text, anchor, style)))
                .map_err(msg)?;
        }
        for s in series {
            let color = Palette99::pick(s.layer).to_rgba();
            if s.points.len() < 2 {
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(msg)?;
            }
            chart
                .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
                .map_err(msg)?;
        }
        Ok(())
    }

    fn gates_legend<DB: DrawingBackend>(
        area: &DrawingArea<DB, plotters::coord::Shift>,
        names: &[String],
        threshold: f32,
    ) -> PlotResult {
        let style = ("sans-serif", 16).into_font().color(&BLACK);
        area.draw(&Text::new("layers", (10, 40), style.clone()))
            .map_err(msg)?;
        let mut y = 70;
        for (i, name) in names.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            area.draw(&Rectangle::new([(10, y - 3), (40, y + 3)], color.filled()))
                .map_err(msg)?;
            area.draw(&Text::new(name.as_str(), (48, y - 7), style.clone()))
                .map_err(msg)?;
            y += 24;
        }
        y += 12;
        area.draw(&Rectangle::new([(10, y - 1), (40, y + 1)], RED.filled()))
            .map_err(msg)?;
        area.draw(&Text::new(
            format!("test-time threshold P = {threshold:.2}"),
            (48, y - 7),
            style.clone(),
        ))
        .map_err(msg)?;
        let note = ("sans-serif", 13).into_font().color(&BLACK);
        for (k, line) in [
            "P(g≠0) = sigmoid(ℓ − β·ln(−γ/ζ));",
            "y axis on a logit scale;",
            "a gate is on at test time",
            "above the red line.",
        ]
        .iter()
        .enumerate()
        {
            area.draw(&Text::new(
                *line,
                (10, y + 24 + 18 * k as i32),
                note.clone(),
            ))
            .map_err(msg)?;
        }
        Ok(())
    }

    /// Renders the gate-probability panels (rows g4…g32 and pruning; columns weights and
    /// activations) and the legend into an SVG string.
    pub fn render_gates(
        steps: &[StepMetrics],
        threshold: f32,
    ) -> std::result::Result<String, String> {
        let mut names: Vec<String> = Vec::new();
        for s in steps {
            for l in &s.layers {
                if !names.contains(&l.name) {
                    names.push(l.name.clone());
                }
            }
        }
        let stride = steps.len().div_ceil(MAX_POINTS).max(1);
        let picked: Vec<&StepMetrics> = steps
            .iter()
            .enumerate()
            .filter(|(i, _)| i % stride == 0 || i + 1 == steps.len())
            .map(|(_, s)| s)
            .collect();
        let lo = picked.iter().map(|s| s.step).min().unwrap_or(0) as f64;
        let hi = picked.iter().map(|s| s.step).max().unwrap_or(0) as f64;
        let x = if hi > lo { lo..hi } else { lo - 0.5..hi + 0.5 };
        // One series per layer whose quantizer has the value.
        let collect = |value: &dyn Fn(&super::LayerGates) -> Option<f32>| -> Vec<Series> {
            names
                .iter()
                .enumerate()
                .filter_map(|(layer, name)| {
                    let points: Vec<(f64, f64)> = picked
                        .iter()
                        .filter_map(|s| {
                            let l = s.layers.iter().find(|l| &l.name == name)?;
                            let v = value(l)?;
                            v.is_finite().then(|| (s.step as f64, logit(v)))
                        })
                        .collect();
                    (!points.is_empty()).then_some(Series { layer, points })
                })
                .collect()
        };
        let t = logit(threshold);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (1200, 1400)).into_drawing_area();
            root.fill(&WHITE).map_err(msg)?;
            let (charts, side) = root.split_horizontally(960);
            let panels = charts.split_evenly((5, 2));
            for (g, gate) in CHAIN_GATES.iter().enumerate() {
                let pick = move |q: &QuantizerMetrics| q.p[g];
                gate_panel(
                    &panels[2 * g],
                    &format!("weights: P({gate} on)"),
                    &collect(&|l| Some(pick(&l.weight))),
                    x.clone(),
                    t,
                )?;
                gate_panel(
                    &panels[2 * g + 1],
                    &format!("activations: P({gate} on)"),
                    &collect(&|l| l.activation.as_ref().map(pick)),
                    x.clone(),
                    t,
                )?;
            }
            gate_panel(
                &panels[8],
                "weights: mean P(z2 on) over channels",
                &collect(&|l| l.weight.prune.as_ref().map(|p| p.mean)),
                x.clone(),
                t,
            )?;
            gate_panel(
                &panels[9],
                "weights: min P(z2 on) over channels",
                &collect(&|l| l.weight.prune.as_ref().map(|p| p.min)),
                x.clone(),
                t,
            )?;
            gates_legend(&side, &names, threshold)?;
            root.present().map_err(msg)?;
        }
        Ok(svg)
    }
}

/// Writes an SVG with four panels: over epochs, per-layer weight bits, per-layer activation
/// bits (log₂ axis labelled 2…32, one colour per layer, legend on the right; layers are
/// staggered by at most ±0.08 of the distance between two bit widths so equal lines stay
/// visible) and relative BOPs in percent; then test accuracy against relative BOPs, one point
/// per epoch (the trade-off curve of the paper's figures). Non-finite values are left out; an
/// empty slice gives empty axes.
#[cfg(feature = "plot")]
pub fn plot_svg(epochs: &[EpochReport], path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let svg = plot::render(epochs).map_err(|msg| ReportError::Plot {
        path: path.to_path_buf(),
        msg,
    })?;
    write_atomic(path, svg.as_bytes()).map_err(io_err("write", path))
}

/// Writes an SVG of the gate probabilities over training steps from the step lines of
/// `metrics.jsonl`: one panel per chain gate (g4, g8, g16, g32) for the weight quantizers and
/// one for the activation quantizers, then the mean and the minimum over channels of the
/// pruning gates' P(z2 ≠ 0); one line per layer in each panel (one colour per layer), the
/// test-time threshold ([`crate::train::metrics::threshold_probability`], ≈ 0.66) dashed in
/// red. The y axis is P on a logit scale, so the slow early movement of probabilities near 0
/// or 1 stays visible. Runs of more than 1500 step lines are thinned evenly.
#[cfg(feature = "plot")]
pub fn plot_gates_svg(steps: &[StepMetrics], path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let threshold = crate::train::metrics::threshold_probability();
    let svg = plot::render_gates(steps, threshold).map_err(|msg| ReportError::Plot {
        path: path.to_path_buf(),
        msg,
    })?;
    write_atomic(path, svg.as_bytes()).map_err(io_err("write", path))
}
