//! Integer inference of an export: the plan shared by the CPU reference ([`infer_cpu`]) and the
//! WGSL engine ([`crate::kernels::int_infer`]), and the CPU reference itself.
//!
//! # Arithmetic (identical on CPU and GPU, bit for bit)
//!
//! Activations are stored NHWC with channels padded to a multiple of 4. A layer whose weights
//! and input activations both have ≤ 8 bits (and signed weights) runs on the **integer path**:
//! `acc = Σ w·a` over the kernel window in exact `i32` (on the GPU, on 4×8-bit packed words,
//! `dot4I8Packed(w, a − 128) + 128·Σw` for unsigned activations and `dot4I8Packed(w, a)` for
//! signed ones; 2- and 4-bit weight codes unpacked into 8-bit lanes in registers). Every other layer (the first layer, whose input is
//! the unquantized image; 16- and 32-bit weights or activations) runs on the **float path**:
//! `acc` is an f32 sum in a fixed order (kernel row, column, channel) of products of operands
//! split into 12-bit halves, so every product is exact and a fused multiply-add gives the
//! same bits as a separate multiply and add. Operands below 2⁻⁴⁰ in magnitude are flushed to 0
//! so that no driver's denormal handling matters.
//!
//! Requantization uses the exported scales: with `s_w` the weight step, `s_in` the step of the
//! input value (1 for real-valued inputs) and `s_out` the output activation step,
//! `t = f32(acc) + bias/(s_w·s_in)` and
//! * a ≤ 16-bit activation code is `clamp(rne(t · s_w·s_in/s_out), lo, hi)` with the
//!   quantizer's integer grid (`lo = 0` unsigned, which includes the ReLU; `lo = −hi` signed;
//!   `±2^(b−1)` for the signed quantizers of a fixed-gate model, which round directly),
//! * a 32-bit activation is the real value `clamp(t · s_w·s_in, lo, clip)`,
//! * logits are `t · s_w·s_in`;
//!
//! each constant is computed once on the host in f64 and rounded to f32. Max-pooling acts on
//! codes (quantization is monotone, so the max of codes is the code of the max). Global average
//! pooling writes the f32 sum of its input over the pixels (exact for codes) and passes the
//! `1/(h·w)` on in the next layer's `s_in`. A residual add computes `t = a·(s_a/s_out) +
//! b·(s_b/s_out)` with split products as on the float path and writes `t` as above (ReLU: a lower
//! bound of 0). ≤ 8-bit codes are stored packed (unsigned or two's complement lanes); wider
//! codes and real values as f32.
//!
//! This differs from the fake-quantized float evaluation only by float rounding (the order of
//! sums, and which side of a rounding tie an activation lands on); the tests count how often
//! that changes a prediction.

use super::format::{ActQuant, Codes, ExportError, ExportedLayer, ExportedModel, LayerManifest};
use super::pack;
use std::path::PathBuf;

/// Operands smaller than this in magnitude are treated as 0 on the float path.
pub const FLUSH_BELOW: f32 = 1.0 / 1_099_511_627_776.0; // 2^-40

/// Storage of an activation tensor between layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repr {
    /// Unsigned 8-bit codes, 4 channels per `u32` word, `[n][h][w][c/4]`.
    Packed8,
    /// Signed 8-bit codes (two's complement lanes), 4 channels per `u32` word.
    PackedI8,
    /// f32 values (codes or real values), `[n][h][w][c padded to 4]`.
    F32,
}

impl Repr {
    /// 8-bit codes packed four to a word (the integer path's input).
    pub fn is_packed(self) -> bool {
        self != Repr::F32
    }
}

/// What a layer or add writes per output channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OutMode {
    /// Activation code `clamp(rne(min(t·m, cap)), min, max)`: `min` is 0 for unsigned codes
    /// (ReLU included) and `−max` for signed ones; `cap` is ReLU6's 6 in steps (`f32::MAX`
    /// without).
    Code {
        /// Smallest code.
        min: i32,
        /// Largest code, `2^b − 1` unsigned, `2^(b−1) − 1` signed.
        max: i32,
        /// Upper bound before rounding.
        cap: f32,
    },
    /// Real activation `clamp(t·m, lo, hi)` (32-bit activation quantizer).
    Real {
        /// Lower clip bound (0 unsigned, `−hi` signed).
        lo: f32,
        /// Upper clip bound.
        hi: f32,
    },
    /// Logits `t·m`.
    Logits,
}

/// One conv/linear layer of the plan (a linear layer is a 1×1 convolution on a 1×1 map whose
/// channels are the flattened `h·w·c_pad` input).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerPlan {
    /// Layer name.
    pub name: String,
    /// The value the layer reads (0: the network input, `i + 1`: step `i`'s output).
    pub source: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels / 4 (padded): words per input pixel.
    pub cin4: usize,
    /// Input words each row reads per window position (`cin4`, fewer for grouped layers).
    pub win4: usize,
    /// Grouped layers: the first input word of each row's window (empty: 0 for every row).
    pub row_word0: Vec<u32>,
    /// Kernel size.
    pub k: usize,
    /// Zero padding.
    pub pad: usize,
    /// Stride.
    pub stride: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Output channels (kept).
    pub cout: usize,
    /// Integer path (else float path).
    pub int_path: bool,
    /// Weight bits on the integer path (2, 4 or 8).
    pub wbits: u32,
    /// Integer path: codes `[cout][k][k][4·win4]` (zero in padded channels and in the lanes
    /// outside a row's group).
    pub weights_int: Vec<i32>,
    /// Float path: values `[cout][k][k][4·win4]` (codes as floats, or real 32-bit values).
    pub weights_f32: Vec<f32>,
    /// Integer path: Σ of each output channel's codes.
    pub wsum: Vec<i32>,
    /// `bias / (s_w·s_in)` per output channel.
    pub bias: Vec<f32>,
    /// Requantization multiplier.
    pub m: f32,
    /// What is written.
    pub out: OutMode,
    /// Input storage.
    pub input: Repr,
    /// Output storage.
    pub output: Repr,
}

impl LayerPlan {
    /// Lanes per output channel row: `k·k·4·win4`.
    pub fn row_len(&self) -> usize {
        self.k * self.k * 4 * self.win4
    }

    /// The first input word of row `o`'s window.
    pub fn word0(&self, o: usize) -> usize {
        self.row_word0.get(o).map_or(0, |&w| w as usize)
    }

    /// Output channels / 4 (padded).
    pub fn cout4(&self) -> usize {
        self.cout.div_ceil(4)
    }
}

/// A residual add: `t = a·m[0] + b·m[1]` per element (each product split exactly, as on the
/// float path, in that order), then written as [`OutMode`] says.
#[derive(Clone, Debug, PartialEq)]
pub struct AddPlan {
    /// Layer name.
    pub name: String,
    /// The two values added.
    pub sources: [usize; 2],
    /// Their storage.
    pub inputs: [Repr; 2],
    /// Pixels per image (`h·w`).
    pub pixels: usize,
    /// Channels / 4 (padded).
    pub c4: usize,
    /// Multipliers `s_in / s_out` of the two inputs.
    pub m: [f32; 2],
    /// What is written (ReLU folded into an unsigned code's lower bound).
    pub out: OutMode,
    /// Output storage.
    pub output: Repr,
}

/// The geometry of a pooling window over NHWC values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Stride.
    pub stride: usize,
    /// Padding on each side (−∞ for max-pooling, 0 for average pooling).
    pub pad: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl PoolGeom {
    /// A `kh × kw` window with `stride` and `pad` over an `h × w` map; `None` where it does
    /// not fit.
    pub fn new(
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        stride: usize,
        pad: usize,
    ) -> Option<Self> {
        let out = |size: usize, k: usize| {
            (size + 2 * pad)
                .checked_sub(k)
                .filter(|_| stride > 0 && k > 0)
                .map(|r| r / stride + 1)
        };
        Some(Self {
            h,
            w,
            kh,
            kw,
            stride,
            pad,
            oh: out(h, kh)?,
            ow: out(w, kw)?,
        })
    }

    /// The input pixels (y, x) of output pixel (oy, ox)'s window inside the map, row by row.
    pub fn window(&self, oy: usize, ox: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.kh * self.kw).filter_map(move |t| {
            let y = (oy * self.stride + t / self.kw).checked_sub(self.pad)?;
            let x = (ox * self.stride + t % self.kw).checked_sub(self.pad)?;
            (y < self.h && x < self.w).then_some((y, x))
        })
    }
}

/// One step of the plan; step `i` writes value `i + 1`.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Max-pooling (of codes or values: quantization is monotone).
    MaxPool {
        /// The value pooled.
        source: usize,
        /// Window geometry.
        geom: PoolGeom,
        /// Channels / 4 (padded).
        c4: usize,
        /// Storage (unchanged by pooling).
        repr: Repr,
    },
    /// Average pooling (global pooling included), written as the f32 **sum** over each window
    /// in row-major order, padding counted as 0 (exact for codes); the `1/(kh·kw)` goes into
    /// the next layer's scale.
    AvgPool {
        /// The value pooled.
        source: usize,
        /// Window geometry.
        geom: PoolGeom,
        /// Channels / 4 (padded).
        c4: usize,
        /// Input storage; the output is f32.
        repr: Repr,
    },
    /// Flatten: the next linear layer reads its input in (C, H, W) order anyway, so the value
    /// is its input, unchanged.
    Flatten {
        /// The value flattened.
        source: usize,
    },
    /// Residual add.
    Add(Box<AddPlan>),
    /// Conv or linear layer.
    Layer(Box<LayerPlan>),
}

/// An export compiled for integer inference.
#[derive(Clone, Debug, PartialEq)]
pub struct IntPlan {
    /// Input shape (C, H, W) of one image (NCHW, as the datasets give it).
    pub input: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Steps in order.
    pub steps: Vec<Step>,
}

/// A value of the plan: its shape after channel removal, the step `s` that its numbers are
/// multiples of (1 for real values), and its storage.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Value {
    c: usize,
    h: usize,
    w: usize,
    step: f64,
    repr: Repr,
}

fn plan_err(msg: String) -> ExportError {
    ExportError::Manifest {
        path: PathBuf::from("<model>"),
        msg,
    }
}

fn flush(v: f32) -> f32 {
    if v.abs() < FLUSH_BELOW {
        0.0
    } else {
        v
    }
}

/// The upper bound of ReLU6.
const RELU6_CAP: f64 = 6.0;

/// How an activation quantizer's output is written, its multiplier from the unit `unit` of
/// the accumulator, and the value it makes: after a ReLU (`lower_zero`) capped at `cap` (ReLU6).
/// `direct`: the quantizer rounds directly (a fixed-gate model, spec §7.4), whose signed
/// extremes can reach ±2^(b−1) (spec §1.7).
fn quantized_output(
    a: Option<&ActQuant>,
    lower_zero: bool,
    cap: Option<f64>,
    direct: bool,
    unit: f64,
    shape: (usize, usize, usize),
) -> (OutMode, f64, Value) {
    let (c, h, w) = (shape.0, shape.1, shape.2);
    let value = |step, repr| Value {
        c,
        h,
        w,
        step,
        repr,
    };
    match a {
        Some(a) if a.bits <= 16 => {
            let (lo, hi) = match (direct, a.signed) {
                (true, true) => (-(1i64 << (a.bits - 1)), 1i64 << (a.bits - 1)),
                _ => pack::code_range(a.bits, a.signed),
            };
            let min = if lower_zero { 0 } else { lo as i32 };
            let repr = match (a.bits <= 8, min >= 0, hi <= 127) {
                (true, true, _) => Repr::Packed8,
                // A fixed-gate model's 8-bit signed codes can reach 128: f32 then.
                (true, false, true) => Repr::PackedI8,
                _ => Repr::F32,
            };
            let scale = f64::from(a.scale);
            (
                OutMode::Code {
                    min,
                    max: hi as i32,
                    cap: cap.map_or(f32::MAX, |c| (c / scale) as f32),
                },
                unit / scale,
                value(scale, repr),
            )
        }
        Some(a) => {
            let lo = if lower_zero || !a.signed {
                0.0
            } else {
                -a.clip
            };
            let hi = cap.map_or(a.clip, |c| a.clip.min(c as f32));
            (OutMode::Real { lo, hi }, unit, value(1.0, Repr::F32))
        }
        None => (OutMode::Logits, unit, value(1.0, Repr::F32)),
    }
}

fn check_multiplier(name: &str, m: f64) -> Result<f32, ExportError> {
    if m.is_finite() && m > 0.0 {
        Ok(m as f32)
    } else {
        Err(plan_err(format!("{name}: requantization multiplier {m}")))
    }
}

/// Compiles a conv/linear layer reading value `x`; returns it and the value it writes.
fn layer_plan(
    lm: &LayerManifest,
    l: &ExportedLayer,
    x: Value,
    direct: bool,
) -> Result<(LayerPlan, Value), ExportError> {
    let m = lm
        .weighted
        .as_ref()
        .ok_or_else(|| plan_err(format!("{}: a {} without weights", lm.name, lm.kind)))?;
    let Value { c, h, w, .. } = x;
    let linear = lm.kind == "linear";
    let cpad = 4 * c.div_ceil(4);
    // Geometry: a linear layer is a 1×1 conv over the flattened h·w·c_pad channels.
    let groups = m.groups.max(1);
    let (gh, gw, cin4, k, pad, stride) = if linear {
        if m.in_kept != c * h * w {
            return Err(plan_err(format!(
                "{}: {} input features, the previous layer gives {}",
                lm.name,
                m.in_kept,
                c * h * w
            )));
        }
        (1, 1, h * w * cpad / 4, 1, 0, 1)
    } else {
        if m.in_kept * groups != c || m.out_channels % groups != 0 {
            return Err(plan_err(format!(
                "{}: {} groups of {} input channels, the previous layer gives {c}",
                lm.name, groups, m.in_kept
            )));
        }
        (h, w, cpad / 4, m.kernel, m.padding, m.stride)
    };
    if gh + 2 * pad < k || gw + 2 * pad < k || stride == 0 {
        return Err(plan_err(format!(
            "{}: kernel {k} (stride {stride}) does not fit the padded input",
            lm.name
        )));
    }
    let (oh, ow) = (
        (gh + 2 * pad - k) / stride + 1,
        (gw + 2 * pad - k) / stride + 1,
    );
    let cout = m.kept_out;
    if l.kept.len() != cout || l.kept.iter().any(|&o| o as usize >= m.out_channels) {
        return Err(plan_err(format!(
            "{}: kept channels {:?} of {}",
            lm.name, l.kept, m.out_channels
        )));
    }
    let q = &m.weight;
    let s_w = if q.bits == 32 {
        1.0
    } else {
        f64::from(q.scale)
    };
    let int_path = q.bits <= 8 && q.signed && x.repr.is_packed();
    // The first input channel of each row: 0, or its group's first channel.
    let first_channel: Vec<usize> = l
        .kept
        .iter()
        .map(|&o| match groups {
            1 => 0,
            _ => o as usize / (m.out_channels / groups) * m.in_kept,
        })
        .collect();
    // Input words a row's window spans per tap: all of them, or those its group touches.
    let win4 = match groups {
        1 => cin4,
        _ => first_channel
            .iter()
            .map(|&c0| (c0 + m.in_kept - 1) / 4 - c0 / 4 + 1)
            .max()
            .unwrap_or(1),
    };
    // Reorder the logical weights [out][in][k][k] (conv) or [out][in] (linear, in = c·h·w
    // in (C, H, W) order) into rows [k][k][4·win4] (conv, starting at the row's first input
    // word) or [h][w][c_pad] (linear).
    let row_len = k * k * 4 * win4;
    let logical_row = m.in_kept * if linear { 1 } else { k * k };
    let mut weights_int = Vec::new();
    let mut weights_f32 = Vec::new();
    let mut wsum = Vec::new();
    for (o, &c0) in first_channel.iter().enumerate() {
        let lane0 = c0 % 4; // The group's first channel within its first word.
        let mut order = vec![usize::MAX; row_len]; // position in row → logical column
        for col in 0..logical_row {
            let pos = if linear {
                let (ci, hw) = (col / (h * w), col % (h * w));
                hw * cpad + ci
            } else {
                let (ci, r) = (col / (k * k), col % (k * k));
                r * 4 * win4 + lane0 + ci
            };
            order[pos] = col;
        }
        let base = o * logical_row;
        let mut sum = 0i64;
        for &col in &order {
            let (vi, vf) = match (&l.weight, col) {
                (_, usize::MAX) => (0, 0.0),
                (Codes::Int(codes), col) => (codes[base + col], codes[base + col] as f32),
                (Codes::Float(v), col) => (0, flush(v[base + col])),
            };
            sum += i64::from(vi);
            if int_path {
                weights_int.push(vi);
            } else {
                weights_f32.push(vf);
            }
        }
        if int_path {
            wsum.push(sum as i32);
        }
    }
    let row_word0 = match groups {
        1 => Vec::new(),
        _ => first_channel.iter().map(|&c0| (c0 / 4) as u32).collect(),
    };
    let unit = s_w * x.step;
    let bias = l
        .bias
        .iter()
        .map(|&b| (f64::from(b) / unit) as f32)
        .collect();
    let cap = m.relu6.then_some(RELU6_CAP);
    let (out, m_mul, value) = quantized_output(
        m.activation.as_ref(),
        m.relu,
        cap,
        direct,
        unit,
        (cout, oh, ow),
    );
    let plan = LayerPlan {
        name: lm.name.clone(),
        source: lm.inputs[0],
        h: gh,
        w: gw,
        cin4,
        win4,
        row_word0,
        k,
        pad,
        stride,
        oh,
        ow,
        cout,
        int_path,
        wbits: if int_path { q.bits } else { 0 },
        weights_int,
        weights_f32,
        wsum,
        bias,
        m: check_multiplier(&lm.name, m_mul)?,
        out,
        input: x.repr,
        output: value.repr,
    };
    Ok((plan, value))
}

impl IntPlan {
    /// Compiles an export (validated by [`ExportedModel::from_bytes`] or made by
    /// [`super::export`]).
    pub fn new(model: &ExportedModel) -> Result<Self, ExportError> {
        let man = &model.manifest;
        let [c0, h0, w0] = man.input;
        let mut values = vec![Value {
            c: c0,
            h: h0,
            w: w0,
            step: 1.0,
            repr: Repr::F32,
        }];
        let mut steps = Vec::new();
        let mut layers = model.layers.iter();
        for lm in &man.layers {
            let read = |v: usize| {
                values
                    .get(v)
                    .copied()
                    .ok_or_else(|| plan_err(format!("{}: reads unknown value {v}", lm.name)))
            };
            let x = read(*lm.inputs.first().unwrap_or(&usize::MAX))?;
            let (step, out) = match lm.kind.as_str() {
                "maxpool2x2" | "maxpool" | "avgpool" | "global_avg_pool" => {
                    let (kh, kw, stride, pad) = match (lm.kind.as_str(), &lm.pool) {
                        ("maxpool2x2", _) => (2, 2, 2, 0),
                        ("global_avg_pool", _) => (x.h, x.w, 1, 0),
                        (_, Some(p)) => (p.kernel, p.kernel, p.stride, p.pad),
                        _ => return Err(plan_err(format!("{}: no pooling window", lm.name))),
                    };
                    let geom = PoolGeom::new(x.h, x.w, kh, kw, stride, pad).ok_or_else(|| {
                        plan_err(format!(
                            "{}: a {kh}×{kw} window (stride {stride}, padding {pad}) does not \
                             fit {}×{}",
                            lm.name, x.h, x.w
                        ))
                    })?;
                    let source = lm.inputs[0];
                    let c4 = x.c.div_ceil(4);
                    let (h, w) = (geom.oh, geom.ow);
                    match lm.kind.as_str() {
                        "maxpool2x2" | "maxpool" => (
                            Step::MaxPool {
                                source,
                                geom,
                                c4,
                                repr: x.repr,
                            },
                            Value { h, w, ..x },
                        ),
                        _ => (
                            Step::AvgPool {
                                source,
                                geom,
                                c4,
                                repr: x.repr,
                            },
                            Value {
                                h,
                                w,
                                step: x.step / (kh * kw) as f64,
                                repr: Repr::F32,
                                ..x
                            },
                        ),
                    }
                }
                "flatten" => (
                    Step::Flatten {
                        source: lm.inputs[0],
                    },
                    x,
                ),
                "add" => {
                    let y = read(lm.inputs[1])?;
                    if (x.c, x.h, x.w) != (y.c, y.h, y.w) {
                        return Err(plan_err(format!(
                            "{}: adds {}×{}×{} to {}×{}×{}",
                            lm.name, x.c, x.h, x.w, y.c, y.h, y.w
                        )));
                    }
                    let a = lm.add.as_ref().ok_or_else(|| {
                        plan_err(format!("{}: an add without its quantizer", lm.name))
                    })?;
                    let (out, _, value) = quantized_output(
                        Some(&a.activation),
                        a.relu,
                        None,
                        man.fixed_gate,
                        1.0,
                        (x.c, x.h, x.w),
                    );
                    let m = |s: f64| check_multiplier(&lm.name, s / value.step);
                    let add = AddPlan {
                        name: lm.name.clone(),
                        sources: [lm.inputs[0], lm.inputs[1]],
                        inputs: [x.repr, y.repr],
                        pixels: x.h * x.w,
                        c4: x.c.div_ceil(4),
                        m: [m(x.step)?, m(y.step)?],
                        out,
                        output: value.repr,
                    };
                    (Step::Add(Box::new(add)), value)
                }
                "conv" | "linear" => {
                    let l = layers
                        .next()
                        .filter(|l| l.name == lm.name)
                        .ok_or_else(|| plan_err(format!("{}: no tensors", lm.name)))?;
                    let plan = layer_plan(lm, l, x, man.fixed_gate)?;
                    let value = plan.1;
                    (Step::Layer(Box::new(plan.0)), value)
                }
                other => return Err(plan_err(format!("{}: unknown layer kind {other}", lm.name))),
            };
            steps.push(step);
            values.push(out);
        }
        match steps.last() {
            Some(Step::Layer(l)) if l.out == OutMode::Logits && l.cout == man.classes => {}
            _ => {
                return Err(plan_err(
                    "the last layer must give the logits of every class".into(),
                ))
            }
        }
        Ok(Self {
            input: man.input,
            classes: man.classes,
            steps,
        })
    }

    /// Images `[n, C, H, W]` → the flushed NHWC input `[n, H, W, C padded to 4]`.
    pub fn input_nhwc(&self, images: &[f32], n: usize) -> Vec<f32> {
        let [c, h, w] = self.input;
        let cpad = 4 * c.div_ceil(4);
        let mut out = vec![0.0; n * h * w * cpad];
        for b in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        out[((b * h + y) * w + x) * cpad + ch] =
                            flush(images[((b * c + ch) * h + y) * w + x]);
                    }
                }
            }
        }
        out
    }
}

/// One element's split into a 12-bit high part and the exact remainder.
#[inline]
pub fn split(x: f32) -> (f32, f32) {
    let hi = f32::from_bits(x.to_bits() & 0xFFFF_F000);
    (hi, x - hi)
}

/// `acc + w·x` as four exact partial products in a fixed order.
#[inline]
pub fn mac_split(acc: f32, w: f32, x: f32) -> f32 {
    let (wh, wl) = split(w);
    let (xh, xl) = split(x);
    let mut a = acc + wh * xh;
    a += wh * xl;
    a += wl * xh;
    a + wl * xl
}

/// The number written for `y = t·m` as `out` says.
#[inline]
pub fn write_out(out: OutMode, y: f32) -> f32 {
    // Zero results (and -0) become +0 explicitly, as in the shader.
    let plus_zero = |v: f32| if v == 0.0 { 0.0 } else { v };
    match out {
        OutMode::Code { min, max, cap } => {
            plus_zero(y.min(cap).round_ties_even().clamp(min as f32, max as f32))
        }
        OutMode::Real { lo, hi } => {
            let v = y.clamp(lo, hi);
            if v.abs() >= FLUSH_BELOW {
                v
            } else {
                0.0
            }
        }
        OutMode::Logits => y,
    }
}

/// The value a layer writes for output channel `o` from its accumulator.
#[inline]
pub fn finish(l: &LayerPlan, o: usize, acc: f32) -> f32 {
    write_out(l.out, (acc + l.bias[o]) * l.m)
}

/// Runs one layer on the CPU; `x` and the result are f32 NHWC with padded channels (codes as
/// floats: the packed storage of the GPU is lossless).
pub fn layer_cpu(l: &LayerPlan, x: &[f32], n: usize) -> Vec<f32> {
    let cpad_in = 4 * l.cin4;
    let lanes = 4 * l.win4; // Window lanes per tap.
    let cpad_out = 4 * l.cout4();
    let row = l.row_len();
    let mut y = vec![0.0f32; n * l.oh * l.ow * cpad_out];
    for b in 0..n {
        for oy in 0..l.oh {
            for ox in 0..l.ow {
                let out_base = ((b * l.oh + oy) * l.ow + ox) * cpad_out;
                // (input, weight) offsets of row o's window taps inside the input, in (ky, kx)
                // order (the float path's summation order).
                let taps = |o: usize| {
                    (0..l.k * l.k).filter_map(move |t| {
                        let (ky, kx) = (t / l.k, t % l.k);
                        let iy = (oy * l.stride + ky)
                            .checked_sub(l.pad)
                            .filter(|&v| v < l.h)?;
                        let ix = (ox * l.stride + kx)
                            .checked_sub(l.pad)
                            .filter(|&v| v < l.w)?;
                        let xb = ((b * l.h + iy) * l.w + ix) * cpad_in + 4 * l.word0(o);
                        Some((xb, o * row + t * lanes))
                    })
                };
                for o in 0..l.cout {
                    let acc = if l.int_path {
                        let mut acc = 0i64;
                        for (xb, wb) in taps(o) {
                            for c in 0..lanes {
                                acc += i64::from(l.weights_int[wb + c]) * x[xb + c] as i64;
                            }
                        }
                        (acc as i32) as f32
                    } else {
                        let mut acc = 0.0f32;
                        for (xb, wb) in taps(o) {
                            for c in 0..lanes {
                                acc = mac_split(acc, l.weights_f32[wb + c], x[xb + c]);
                            }
                        }
                        acc
                    };
                    y[out_base + o] = finish(l, o, acc);
                }
            }
        }
    }
    y
}

/// Max-pooling of f32 NHWC `[n, h, w, 4·c4]` (padding never wins).
pub fn maxpool_cpu(x: &[f32], n: usize, g: &PoolGeom, c4: usize) -> Vec<f32> {
    pool_cpu(x, n, g, c4, |window| {
        window.fold(f32::NEG_INFINITY, f32::max)
    })
}

/// Average pooling as the plan stores it: per window the f32 sum of f32 NHWC `[n, h, w, 4·c4]`
/// in row-major window order (padding adds nothing).
pub fn avgpool_cpu(x: &[f32], n: usize, g: &PoolGeom, c4: usize) -> Vec<f32> {
    pool_cpu(x, n, g, c4, |window| window.fold(0.0, |acc, v| acc + v))
}

fn pool_cpu(
    x: &[f32],
    n: usize,
    g: &PoolGeom,
    c4: usize,
    reduce: impl Fn(&mut dyn Iterator<Item = f32>) -> f32,
) -> Vec<f32> {
    let cp = 4 * c4;
    let mut y = vec![0.0f32; n * g.oh * g.ow * cp];
    for b in 0..n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for c in 0..cp {
                    let mut window = g
                        .window(oy, ox)
                        .map(|(iy, ix)| x[((b * g.h + iy) * g.w + ix) * cp + c]);
                    y[((b * g.oh + oy) * g.ow + ox) * cp + c] = reduce(&mut window);
                }
            }
        }
    }
    y
}

/// A residual add of f32 NHWC values (padded channels stay 0).
pub fn add_cpu(a: &AddPlan, x: &[f32], y: &[f32], n: usize) -> Vec<f32> {
    let cp = 4 * a.c4;
    (0..n * a.pixels * cp)
        .map(|i| {
            let t = mac_split(mac_split(0.0, a.m[0], x[i]), a.m[1], y[i]);
            write_out(a.out, t)
        })
        .collect()
}

/// The plain-Rust integer reference: logits `[n, classes]` of images `[n, C, H, W]`.
pub fn infer_cpu(plan: &IntPlan, images: &[f32], n: usize) -> Vec<f32> {
    let mut values = vec![plan.input_nhwc(images, n)];
    let mut last_cpad = 0;
    for step in &plan.steps {
        let y = match step {
            Step::MaxPool {
                source, geom, c4, ..
            } => maxpool_cpu(&values[*source], n, geom, *c4),
            Step::AvgPool {
                source, geom, c4, ..
            } => avgpool_cpu(&values[*source], n, geom, *c4),
            Step::Flatten { source } => values[*source].clone(),
            Step::Add(a) => add_cpu(a, &values[a.sources[0]], &values[a.sources[1]], n),
            Step::Layer(l) => {
                last_cpad = 4 * l.cout4();
                layer_cpu(l, &values[l.source], n)
            }
        };
        values.push(y);
    }
    let x = values.last().expect("the plan ends with the logit layer");
    (0..n)
        .flat_map(|b| x[b * last_cpad..b * last_cpad + plan.classes].to_vec())
        .collect()
}

/// Index of the largest logit of each row (the first on ties).
pub fn predictions(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks_exact(classes)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0
        })
        .collect()
}
