//! What a training run writes and prints: per-epoch metrics (`metrics.jsonl`), the final
//! `report.json`, a terminal table and an SVG plot of bit widths and relative BOPs over epochs.
//!
//! `report.json` has exactly the keys `test_accuracy` (percent), `relative_bops_percent` and
//! `layers`, a list of `{"name", "weight_bits", "act_bits", "kept_channels", "total_channels"}`
//! in network order; `act_bits` is `null` for the logit layer, which has no activation quantizer.
//!
//! `metrics.jsonl` holds one [`EpochReport`] object per line. Non-finite numbers (a diverged
//! loss) are written as `null` (JSON has no NaN) and read back as NaN.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::nn::Arch;
use crate::quant::{relative_bops, LayerBops, QuantizerState};
use crate::train::checkpoint::write_atomic;

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
    #[error("{path}: line {line} is not an epoch record: {msg}")]
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
}

impl EpochReport {
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
    let width = layers
        .iter()
        .map(|l| l.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("layer".len());
    let mut s = format!(
        "{:<width$}  {:>6}  {:>6}  {:>13}\n",
        "layer", "w bits", "a bits", "kept/total"
    );
    s.push_str(&format!("{}\n", "-".repeat(width + 2 + 6 + 2 + 6 + 2 + 13)));
    for l in layers {
        let act = l
            .act_bits
            .map_or_else(|| "-".to_string(), |b| b.to_string());
        let kept = format!("{}/{}", l.kept_channels, l.total_channels);
        s.push_str(&format!(
            "{:<width$}  {:>6}  {:>6}  {:>13}\n",
            l.name, l.weight_bits, act, kept
        ));
    }
    s.push_str(&format!(
        "relative BOPs: {relative_bops_percent:.4} %   test accuracy: {test_accuracy:.2} %\n"
    ));
    s
}

/// Appends one JSON line per epoch to `metrics.jsonl`, flushed to disk after every line.
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
    /// to and including epoch `last_epoch` and removes every line from the first later epoch on,
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
        let mut line = serde_json::to_string(epoch).map_err(|source| ReportError::Json {
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

    /// Reads every epoch record of a log (e.g. to redraw the plot after a resume).
    pub fn read(path: impl AsRef<Path>) -> Result<Vec<EpochReport>> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(io_err("read", path))?;
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(l) {
                Ok(r) => out.push(r),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
                Err(e) => {
                    return Err(ReportError::MetricsLine {
                        path: path.to_path_buf(),
                        line: i + 1,
                        msg: e.to_string(),
                    })
                }
            }
        }
        Ok(out)
    }
}

mod plot {
    use plotters::prelude::*;

    use super::EpochReport;

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

    /// Renders the three panels and the legend into an SVG string.
    pub fn render(epochs: &[EpochReport]) -> std::result::Result<String, String> {
        let names = layer_names(epochs);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (1100, 960)).into_drawing_area();
            root.fill(&WHITE).map_err(msg)?;
            let (charts, side) = root.split_horizontally(900);
            let panels = charts.split_evenly((3, 1));
            bits_panel(&panels[0], epochs, &names, "weight bits", |l| {
                Some(l.weight_bits)
            })?;
            bits_panel(&panels[1], epochs, &names, "activation bits", |l| {
                l.act_bits
            })?;
            bops_panel(&panels[2], epochs)?;
            legend(&side, &names)?;
            root.present().map_err(msg)?;
        }
        Ok(svg)
    }
}

/// Writes an SVG with three panels over epochs: per-layer weight bits, per-layer activation
/// bits (log₂ axis labelled 2…32, one colour per layer, legend on the right; layers are
/// staggered by at most ±0.08 of the distance between two bit widths so equal lines stay
/// visible) and relative BOPs in percent. Non-finite values are left out; an empty slice gives
/// empty axes.
pub fn plot_svg(epochs: &[EpochReport], path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let svg = plot::render(epochs).map_err(|msg| ReportError::Plot {
        path: path.to_path_buf(),
        msg,
    })?;
    write_atomic(path, svg.as_bytes()).map_err(io_err("write", path))
}
