//! ONNX export of an [`ExportedModel`] as a QDQ graph (opset [`OPSET`]).
//!
//! The graph is built from the export itself, so it has exactly its kept channels, folded
//! biases and codes (see the [module docs](super)); nothing is re-derived from the checkpoint.
//!
//! * **Input** [`INPUT_NAME`]: f32 `[N, C, H, W]` (`N` symbolic), not quantized (spec §5.5).
//! * **Output** [`OUTPUT_NAME`]: f32 logits `[N, classes]`.
//! * **Weights** (2 to 16 bits): an integer initializer `{layer}.weight_codes` holding the
//!   export's codes — 2- and 4-bit codes in an `INT4`/`UINT4` container (two per byte, low
//!   nibble first, as the ONNX spec packs 4-bit types; the 2-bit grid −1…1 or 0…3 fits), 8 bits
//!   `INT8`/`UINT8`, 16 bits `INT16`/`UINT16` — and a per-tensor f32 scale
//!   `{layer}.weight_scale`, joined by `DequantizeLinear` (zero point 0: the grids are
//!   symmetric when signed, spec §1.6). 32-bit weights are f32 initializers. Biases are f32.
//! * **Graph**: the manifest's values become tensors — value 0 is [`INPUT_NAME`], value
//!   `i + 1` the last output of layer `i`'s nodes (below) — and each layer's nodes read the
//!   tensors of its `inputs`, so a value read by several layers (a residual shortcut) is one
//!   tensor with several readers. The last layer's last node writes [`OUTPUT_NAME`].
//! * **Layers**: `Conv` (pads, strides and `group` from the export; depthwise layers have
//!   `group` = channels) or `Gemm` (`transB = 1`, behind a `Flatten` when its input is not flat
//!   yet), each followed by an `Add` of the f32 bias (see the code for why not the operators'
//!   bias input); `MaxPool` 2×2 for `maxpool2x2`; `MaxPool` and `AveragePool`
//!   (`count_include_pad = 1`, PyTorch's default) with the window of `maxpool` and `avgpool`;
//!   `GlobalAveragePool` for `global_avg_pool` (the linear layer after it flattens its
//!   `[N, C, 1, 1]` output); `Flatten` (axis 1) for `flatten`; for a residual `add` an `Add` of
//!   its two input tensors (the dequantized activations of the layers it reads), followed by
//!   its activation as below.
//! * **Activations** (after a conv/linear layer with an activation quantizer, and after every
//!   residual add): `Relu` when the layer has one (and before any unsigned quantizer, which
//!   clips at 0) or a `Clip` to `[0, 6]` for ReLU6, then a `QuantizeLinear`/`DequantizeLinear` pair at the learned width with
//!   scale `s_b` and zero point 0, in `UINT8`/`INT8` for 2, 4 and 8 bits (see
//!   [`act_container`]) and `UINT16`/`INT16` for 16.
//!   * Unsigned: QuantizeLinear rounds half to even and saturates at the container's maximum,
//!     which is the grid's top code (`rne(hi / s_b)` with `hi = fl32(1 − 2^-23)·x_max`, spec
//!     §1.4) at 8 and 16 bits; 2- and 4-bit quantizers are first clipped to `hi` by a `Min`
//!     (not `Clip`: onnxruntime 1.23's Clip→QuantizeLinear fusion cannot read every zero-point
//!     type), so that the codes stay on the `2^b`-level grid. A 32-bit quantizer is a `Clip`
//!     with the upper bound `hi` only (`{layer}.act_clip`; the `Relu` before it gives the 0).
//!   * Signed (symmetric grid `±(2^(b−1) − 1)`, one code short of the container's minimum):
//!     a `Clip` to `±fl32((2^(b−1) − 1)·s_b)` (`{layer}.act_min`, `{layer}.act_max`), the values
//!     of the grid's end codes, comes first at every width up to 16 bits. Clipping to `±hi`
//!     instead would not keep the codes on the grid: `hi / s_b` is the top code + ½ less a few
//!     ulps, which float rounding can turn into a tie that rounds half to even past the top
//!     code. (With both bounds given and a signed zero point, onnxruntime 1.23 runs this `Clip`
//!     at every optimization level.) A 32-bit signed quantizer is a `Clip` to `[−hi, hi]` (the
//!     same initializer names).
//!
//! A fixed-gate model's signed quantizers round directly and can reach `±2^(b−1)` where
//! `clip / s_b` ties (spec §1.7); the bound above keeps the ONNX codes on `±(2^(b−1) − 1)`, so
//! there the graph is one step off the fine-tuned model (the integer engine follows the model).
//!
//! The values match the fake-quantized evaluation up to float rounding: a weight is
//! `scale · code` (one product) where the evaluation sums the residual stages, and an activation
//! is `rne(x / s_b)` where the evaluation rounds the residuals of the PACT-clipped value; both
//! differ from it by at most an ulp or, at rounding ties, one step (spec §1.4, §1.7).

use super::format::{
    ActQuant, Codes, ExportError, ExportedLayer, ExportedModel, LayerManifest, WeightedManifest,
    MANIFEST_KEY,
};
use super::pack;
use prost::Message;
use std::path::Path;

/// The opset the graph imports (the default ONNX domain).
pub const OPSET: i64 = 21;
/// The ONNX IR version written (IR 10 goes with opset 21).
pub const IR_VERSION: i64 = 10;
/// Name of the graph input: f32 `[N, C, H, W]`.
pub const INPUT_NAME: &str = "input";
/// Name of the graph output: f32 logits `[N, classes]`.
pub const OUTPUT_NAME: &str = "logits";

/// The subset of the ONNX protobuf messages (`onnx.proto`, same field numbers) this crate
/// writes and reads. A `oneof` of the original is written as its optional fields.
pub mod proto {
    /// `TensorProto.DataType` values used here.
    pub mod data_type {
        /// 32-bit float.
        pub const FLOAT: i32 = 1;
        /// 8-bit unsigned.
        pub const UINT8: i32 = 2;
        /// 8-bit signed.
        pub const INT8: i32 = 3;
        /// 16-bit unsigned.
        pub const UINT16: i32 = 4;
        /// 16-bit signed.
        pub const INT16: i32 = 5;
        /// 4-bit unsigned, two per byte, low nibble first.
        pub const UINT4: i32 = 21;
        /// 4-bit signed (two's complement), two per byte, low nibble first.
        pub const INT4: i32 = 22;
    }

    /// `AttributeProto.AttributeType` values used here.
    pub mod attribute_type {
        /// A single int64.
        pub const INT: i32 = 2;
        /// A list of int64.
        pub const INTS: i32 = 7;
    }

    /// A model: IR version, opsets and the graph.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        /// IR version.
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        /// Producer name.
        #[prost(string, tag = "2")]
        pub producer_name: String,
        /// Producer version.
        #[prost(string, tag = "3")]
        pub producer_version: String,
        /// Human-readable description.
        #[prost(string, tag = "6")]
        pub doc_string: String,
        /// The graph.
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
        /// Imported operator sets.
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
        /// Key/value metadata.
        #[prost(message, repeated, tag = "14")]
        pub metadata_props: Vec<StringStringEntryProto>,
    }

    /// An operator set import.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        /// Domain (empty: the default ONNX domain).
        #[prost(string, tag = "1")]
        pub domain: String,
        /// Opset version.
        #[prost(int64, tag = "2")]
        pub version: i64,
    }

    /// A metadata entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringStringEntryProto {
        /// Key.
        #[prost(string, tag = "1")]
        pub key: String,
        /// Value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// A graph: nodes in topological order, initializers, inputs and outputs.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        /// Nodes.
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        /// Graph name.
        #[prost(string, tag = "2")]
        pub name: String,
        /// Constant tensors.
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        /// Description.
        #[prost(string, tag = "10")]
        pub doc_string: String,
        /// Graph inputs.
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        /// Graph outputs.
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    /// One operator application.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        /// Input value names (`""`: an omitted optional input).
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        /// Output value names.
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        /// Node name.
        #[prost(string, tag = "3")]
        pub name: String,
        /// Operator.
        #[prost(string, tag = "4")]
        pub op_type: String,
        /// Attributes.
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }

    /// A node attribute (only the int and int-list forms are written).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        /// Attribute name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Int value.
        #[prost(int64, tag = "3")]
        pub i: i64,
        /// Int-list value.
        #[prost(int64, repeated, tag = "8")]
        pub ints: Vec<i64>,
        /// Which value is set ([`attribute_type`]).
        #[prost(int32, tag = "20")]
        pub r#type: i32,
    }

    /// A tensor; this crate writes its contents as little-endian `raw_data`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        /// Shape.
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        /// Element type ([`data_type`]).
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        /// Name.
        #[prost(string, tag = "8")]
        pub name: String,
        /// Contents, little endian; 4-bit types two per byte, low nibble first.
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
    }

    /// A named, typed value (graph input or output).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        /// Name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Type.
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
    }

    /// A type (only the tensor form).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        /// Tensor type.
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TensorTypeProto>,
    }

    /// `TypeProto.Tensor`: element type and shape.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorTypeProto {
        /// Element type ([`data_type`]).
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        /// Shape.
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    /// A tensor shape.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        /// Dimensions.
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dimension>,
    }

    /// One dimension: a number or a symbolic name.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        /// Fixed size.
        #[prost(int64, optional, tag = "1")]
        pub dim_value: Option<i64>,
        /// Symbolic size.
        #[prost(string, optional, tag = "2")]
        pub dim_param: Option<String>,
    }
}

use proto::{
    attribute_type, data_type, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto,
    TypeProto, ValueInfoProto,
};

/// The ONNX container of a `bits`-bit integer tensor: (data type, bits per stored element).
/// `None` for 32 bits (stored as f32).
pub fn code_container(bits: u32, signed: bool) -> Option<(i32, u32)> {
    Some(match (bits, signed) {
        (2 | 4, true) => (data_type::INT4, 4),
        (2 | 4, false) => (data_type::UINT4, 4),
        (8, true) => (data_type::INT8, 8),
        (8, false) => (data_type::UINT8, 8),
        (16, true) => (data_type::INT16, 16),
        (16, false) => (data_type::UINT16, 16),
        _ => return None,
    })
}

fn tensor(name: &str, dims: &[usize], data_type: i32, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type,
        name: name.to_string(),
        raw_data,
    }
}

fn f32_tensor(name: &str, dims: &[usize], v: &[f32]) -> TensorProto {
    let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    tensor(name, dims, data_type::FLOAT, raw)
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        ints: v.to_vec(),
        r#type: attribute_type::INTS,
        ..AttributeProto::default()
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        i,
        r#type: attribute_type::INT,
        ..AttributeProto::default()
    }
}

fn value_info(name: &str, dims: &[Dimension]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim: dims.to_vec() }),
            }),
        }),
    }
}

fn fixed(d: usize) -> Dimension {
    Dimension {
        dim_value: Some(d as i64),
        dim_param: None,
    }
}

/// The ONNX container of a `bits`-bit activation quantizer: as [`code_container`], except that
/// 2- and 4-bit codes are held in 8 bits (onnxruntime 1.23 moves `MaxPool` between a
/// QuantizeLinear/DequantizeLinear pair and has no 4-bit `MaxPool`).
pub fn act_container(bits: u32, signed: bool) -> Option<(i32, u32)> {
    code_container(bits.max(8), signed)
}

/// Nodes and initializers under construction.
struct Builder {
    model: String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

/// A value of the export's graph in ONNX: the tensor holding it and its shape after channel
/// removal (`flat`: `[N, c]` after a `Gemm` or `Flatten`, where `h = w = 1`).
#[derive(Clone, Debug)]
struct Value {
    name: String,
    c: usize,
    h: usize,
    w: usize,
    flat: bool,
}

impl Builder {
    /// Appends `op(inputs) -> output` and returns the output name.
    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: String,
        attribute: Vec<AttributeProto>,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: output.clone(),
            op_type: op.to_string(),
            attribute,
        });
        output
    }

    fn init(&mut self, t: TensorProto) -> String {
        let name = t.name.clone();
        self.initializers.push(t);
        name
    }

    fn err(&self, msg: String) -> ExportError {
        ExportError::Onnx {
            model: self.model.clone(),
            msg,
        }
    }

    /// Appends what follows layer `name`'s sum `x`: a `Relu` when `relu` (or when the quantizer
    /// is unsigned, which clips at 0), then the activation quantizer `a` (see the
    /// [module docs](self)); returns the output name.
    fn activation(
        &mut self,
        name: &str,
        mut x: String,
        relu: bool,
        relu6: bool,
        a: Option<&ActQuant>,
    ) -> String {
        if relu6 {
            let zero = self.init(f32_tensor(&format!("{name}.relu6_min"), &[], &[0.0]));
            let six = self.init(f32_tensor(&format!("{name}.relu6_max"), &[], &[6.0]));
            x = self.node("Clip", &[&x, &zero, &six], format!("{name}.relu6"), vec![]);
        } else if relu || a.is_some_and(|a| !a.signed) {
            x = self.node("Relu", &[&x], format!("{name}.relu"), vec![]);
        }
        let Some(a) = a else { return x };
        let container = act_container(a.bits, a.signed);
        if a.signed {
            // Signed codes end at ±(2^(b−1) − 1), one short of the container's minimum, and
            // `clip / s_b` lies within a few ulps of the grid's top code + ½, so the bound is
            // the top code's value, from which QuantizeLinear cannot round off the grid.
            let bound = if container.is_some() {
                let top = pack::code_range(a.bits, true).1;
                (top as f64 * f64::from(a.scale)) as f32
            } else {
                a.clip
            };
            let lo = self.init(f32_tensor(&format!("{name}.act_min"), &[], &[-bound]));
            let hi = self.init(f32_tensor(&format!("{name}.act_max"), &[], &[bound]));
            let out = if container.is_some() {
                "act_clipped"
            } else {
                "act"
            };
            x = self.node("Clip", &[&x, &lo, &hi], format!("{name}.{out}"), vec![]);
        } else if a.bits < 8 || container.is_none() {
            let clip = self.init(f32_tensor(&format!("{name}.act_clip"), &[], &[a.clip]));
            x = if container.is_some() {
                self.node("Min", &[&x, &clip], format!("{name}.act_clipped"), vec![])
            } else {
                self.node("Clip", &[&x, "", &clip], format!("{name}.act"), vec![])
            };
        }
        let Some((dtype, stored)) = container else {
            return x;
        };
        let scale = self.init(f32_tensor(&format!("{name}.act_scale"), &[], &[a.scale]));
        let zero = self.init(tensor(
            &format!("{name}.act_zero_point"),
            &[],
            dtype,
            vec![0; stored.div_ceil(8) as usize],
        ));
        let qx = self.node(
            "QuantizeLinear",
            &[&x, &scale, &zero],
            format!("{name}.act_codes"),
            vec![],
        );
        self.node(
            "DequantizeLinear",
            &[&qx, &scale, &zero],
            format!("{name}.act"),
            vec![],
        )
    }

    /// Appends conv/linear layer `lm` (tensors `l`) reading `x`; returns the value it writes.
    fn weighted(
        &mut self,
        lm: &LayerManifest,
        m: &WeightedManifest,
        l: &ExportedLayer,
        x: &Value,
    ) -> Result<Value, ExportError> {
        let name = &lm.name;
        let q = &m.weight;
        let linear = lm.kind == "linear";
        let groups = m.groups.max(1);
        let fan_in = if linear {
            x.c * x.h * x.w
        } else {
            x.c / groups
        };
        if m.in_kept != fan_in
            || (!linear && m.in_kept * groups != x.c)
            || q.shape.first() != Some(&m.kept_out)
            || l.bias.len() != m.kept_out
        {
            return Err(self.err(format!(
                "{name}: weight shape {:?} with {} biases does not take its input's {fan_in} \
                 values",
                q.shape,
                l.bias.len()
            )));
        }
        let numel: usize = q.shape.iter().product();
        let weight = match (&l.weight, code_container(q.bits, q.signed)) {
            (Codes::Int(codes), Some((dtype, stored))) => {
                let (lo, hi) = pack::code_range(q.bits, q.signed);
                if codes.len() != numel {
                    return Err(self.err(format!(
                        "{name}: {} codes for shape {:?}",
                        codes.len(),
                        q.shape
                    )));
                }
                if let Some(bad) = codes.iter().find(|&&v| !(lo..=hi).contains(&i64::from(v))) {
                    return Err(self.err(format!(
                        "{name}: code {bad} outside the {}-bit grid {lo}..={hi}",
                        q.bits
                    )));
                }
                let raw = pack::pack(codes, stored);
                let codes = self.init(tensor(
                    &format!("{name}.weight_codes"),
                    &q.shape,
                    dtype,
                    raw,
                ));
                let scale = self.init(f32_tensor(&format!("{name}.weight_scale"), &[], &[q.scale]));
                self.node(
                    "DequantizeLinear",
                    &[&codes, &scale],
                    format!("{name}.weight"),
                    vec![],
                )
            }
            (Codes::Float(v), None) if v.len() == numel => {
                self.init(f32_tensor(&format!("{name}.weight"), &q.shape, v))
            }
            _ => {
                return Err(self.err(format!(
                    "{name}: {}-bit weights stored as {}",
                    q.bits,
                    match l.weight {
                        Codes::Int(_) => "integer codes",
                        Codes::Float(_) => "f32",
                    }
                )))
            }
        };
        // The bias is a separate `Add` (shape [C, 1, 1] after a convolution): as an input of
        // Conv/Gemm between DequantizeLinear inputs, onnxruntime's default optimizations
        // (WeightBiasQuantization) round it to an int32 multiple of the two scales.
        let bias_shape: &[usize] = if linear {
            &[m.kept_out]
        } else {
            &[m.kept_out, 1, 1]
        };
        let bias = self.init(f32_tensor(&format!("{name}.bias"), bias_shape, &l.bias));
        let (mut y, h, w) = if linear {
            let mut flat = x.name.clone();
            if !x.flat {
                flat = self.node(
                    "Flatten",
                    &[&flat],
                    format!("{name}.flat"),
                    vec![int("axis", 1)],
                );
            }
            let y = self.node(
                "Gemm",
                &[&flat, &weight],
                format!("{name}.matmul"),
                vec![int("transB", 1)],
            );
            (y, 1, 1)
        } else {
            let (k, p, s) = (m.kernel, m.padding, m.stride);
            if x.flat || x.h + 2 * p < k || x.w + 2 * p < k || s == 0 {
                return Err(self.err(format!(
                    "{name}: a {k}×{k} convolution with stride {s} cannot take a {}×{} input \
                     here",
                    x.h, x.w
                )));
            }
            let [k, p, s] = [k, p, s].map(|v| v as i64);
            let mut attributes = vec![
                ints("kernel_shape", &[k, k]),
                ints("pads", &[p, p, p, p]),
                ints("strides", &[s, s]),
            ];
            if groups > 1 {
                attributes.push(int("group", groups as i64));
            }
            let y = self.node(
                "Conv",
                &[&x.name, &weight],
                format!("{name}.conv"),
                attributes,
            );
            let out = |d: usize| (d + 2 * m.padding - m.kernel) / m.stride + 1;
            (y, out(x.h), out(x.w))
        };
        y = self.node("Add", &[&y, &bias], format!("{name}.out"), vec![]);
        let y = self.activation(name, y, m.relu, m.relu6, m.activation.as_ref());
        Ok(Value {
            name: y,
            c: m.kept_out,
            h,
            w,
            flat: linear,
        })
    }
}

/// Builds the QDQ graph of `model` (see the [module docs](self)).
pub fn to_onnx(model: &ExportedModel) -> Result<ModelProto, ExportError> {
    let man = &model.manifest;
    let mut b = Builder {
        model: man.model.clone(),
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    let [c, h, w] = man.input;
    // Value v: 0 is the network input, i + 1 the output of manifest layer i.
    let mut values = vec![Value {
        name: INPUT_NAME.to_string(),
        c,
        h,
        w,
        flat: false,
    }];
    let err = |msg: String| ExportError::Onnx {
        model: man.model.clone(),
        msg,
    };
    let mut layers = model.layers.iter();
    for lm in &man.layers {
        let name = &lm.name;
        let read = |i: Option<&usize>| {
            i.and_then(|&i| values.get(i)).cloned().ok_or_else(|| {
                err(format!(
                    "{name}: reads {:?}, not values computed before it",
                    lm.inputs
                ))
            })
        };
        let x = read(lm.inputs.first())?;
        let pooled = |x: &Value| {
            if x.flat {
                Err(err(format!("{name}: cannot pool a flattened value")))
            } else {
                Ok(())
            }
        };
        let out = match (lm.kind.as_str(), &lm.weighted, &lm.add) {
            ("maxpool2x2", None, None) => {
                pooled(&x)?;
                let y = b.node(
                    "MaxPool",
                    &[&x.name],
                    format!("{name}.out"),
                    vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
                );
                Value {
                    name: y,
                    h: x.h / 2,
                    w: x.w / 2,
                    ..x
                }
            }
            ("maxpool" | "avgpool", None, None) => {
                pooled(&x)?;
                let Some(pm) = lm.pool else {
                    return Err(err(format!("{name}: no pooling window")));
                };
                let (k, st, pd) = (pm.kernel, pm.stride, pm.pad);
                if x.h + 2 * pd < k || x.w + 2 * pd < k || st == 0 {
                    return Err(err(format!(
                        "{name}: a {k}×{k} window with stride {st} cannot take {}×{}",
                        x.h, x.w
                    )));
                }
                let [ki, si, pi] = [k, st, pd].map(|v| v as i64);
                let mut attributes = vec![
                    ints("kernel_shape", &[ki, ki]),
                    ints("strides", &[si, si]),
                    ints("pads", &[pi, pi, pi, pi]),
                ];
                let op = if lm.kind == "maxpool" {
                    "MaxPool"
                } else {
                    // PyTorch's AvgPool2d default: zero padding counts in the mean.
                    attributes.push(int("count_include_pad", 1));
                    "AveragePool"
                };
                let y = b.node(op, &[&x.name], format!("{name}.out"), attributes);
                let out = |d: usize| (d + 2 * pd - k) / st + 1;
                Value {
                    name: y,
                    h: out(x.h),
                    w: out(x.w),
                    ..x
                }
            }
            ("flatten", None, None) => {
                let y = b.node(
                    "Flatten",
                    &[&x.name],
                    format!("{name}.out"),
                    vec![int("axis", 1)],
                );
                Value {
                    name: y,
                    c: x.c * x.h * x.w,
                    h: 1,
                    w: 1,
                    flat: true,
                }
            }
            ("global_avg_pool", None, None) => {
                pooled(&x)?;
                let y = b.node(
                    "GlobalAveragePool",
                    &[&x.name],
                    format!("{name}.out"),
                    vec![],
                );
                Value {
                    name: y,
                    h: 1,
                    w: 1,
                    ..x
                }
            }
            ("add", None, Some(a)) => {
                let y = read(lm.inputs.get(1))?;
                if (x.c, x.h, x.w, x.flat) != (y.c, y.h, y.w, y.flat) {
                    return Err(err(format!(
                        "{name}: adds a {}×{}×{} value to a {}×{}×{} one",
                        x.c, x.h, x.w, y.c, y.h, y.w
                    )));
                }
                let sum = b.node("Add", &[&x.name, &y.name], format!("{name}.out"), vec![]);
                let sum = b.activation(name, sum, a.relu, false, Some(&a.activation));
                Value { name: sum, ..x }
            }
            ("conv" | "linear", Some(m), None) => {
                let l = layers
                    .next()
                    .filter(|l| &l.name == name)
                    .ok_or_else(|| err(format!("{name}: no tensors")))?;
                b.weighted(lm, m, l, &x)?
            }
            _ => {
                return Err(err(format!(
                    "{name}: cannot place a {} layer here",
                    lm.kind
                )))
            }
        };
        values.push(out);
    }
    let last = &values[values.len() - 1];
    if layers.next().is_some() || man.layers.is_empty() || !last.flat || last.c != man.classes {
        return Err(err(format!(
            "the layers do not end in a linear layer with {} outputs",
            man.classes
        )));
    }
    // The last node produces the logits.
    if let Some(last) = b.nodes.last_mut() {
        last.output[0] = OUTPUT_NAME.to_string();
    }
    let batch = Dimension {
        dim_value: None,
        dim_param: Some("N".to_string()),
    };
    let [ci, hi, wi] = man.input;
    let manifest = serde_json::to_string(man).map_err(|e| err(e.to_string()))?;
    Ok(ModelProto {
        ir_version: IR_VERSION,
        producer_name: "bayesian-bits".to_string(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        doc_string: man.description.clone(),
        graph: Some(GraphProto {
            node: b.nodes,
            name: man.model.clone(),
            initializer: b.initializers,
            doc_string: format!(
                "QDQ form of the export: integer weight codes with per-tensor scales, \
                 activations quantized at their learned widths; input `{INPUT_NAME}` f32 \
                 [N, {ci}, {hi}, {wi}], output `{OUTPUT_NAME}` f32 [N, {}]",
                man.classes
            ),
            input: vec![value_info(
                INPUT_NAME,
                &[batch.clone(), fixed(ci), fixed(hi), fixed(wi)],
            )],
            output: vec![value_info(OUTPUT_NAME, &[batch, fixed(man.classes)])],
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: vec![StringStringEntryProto {
            key: MANIFEST_KEY.to_string(),
            value: manifest,
        }],
    })
}

/// The serialized ONNX model of `model`.
pub fn onnx_bytes(model: &ExportedModel) -> Result<Vec<u8>, ExportError> {
    Ok(to_onnx(model)?.encode_to_vec())
}

/// Writes the ONNX model of `model` to `path` (atomically); returns its size in bytes.
pub fn save_onnx(model: &ExportedModel, path: impl AsRef<Path>) -> Result<u64, ExportError> {
    let path = path.as_ref();
    let bytes = onnx_bytes(model)?;
    crate::fs::write_atomic(path, &bytes).map_err(|source| ExportError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(bytes.len() as u64)
}

/// Decodes ONNX bytes (the subset of fields in [`proto`]; others are skipped).
pub fn decode(bytes: &[u8]) -> Result<ModelProto, ExportError> {
    ModelProto::decode(bytes).map_err(|e| ExportError::Onnx {
        model: "<bytes>".to_string(),
        msg: format!("cannot decode: {e}"),
    })
}
