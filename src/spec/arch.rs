//! Network descriptions: a validated builder, the presets (LeNet-5, VGG-7, ResNet-20, ResNet-18,
//! MobileNetV2), where the quantizers sit, MACs and BOP inputs, and the PyTorch `state_dict`
//! names.
//!
//! A network is a list of layers in forward order. Every layer reads one or two *values*: value
//! 0 is the network input, value `i + 1` the output of layer `i` ([`LayerSpec::inputs`]).
//!
//! # Quantizer placement (as the official quantized ResNet and MobileNetV2 place them)
//!
//! * A conv or linear layer (+ folded BN, spec §5.2)(+ [`Activation`]: ReLU, ReLU6 or none) is
//!   one quantized layer: a weight quantizer, pruning gates on its output channels (every
//!   weighted layer but the logit layer) and an activation quantizer on its output, which range
//!   initialisation makes unsigned after a ReLU or ReLU6 and signed otherwise (spec §1.2). The
//!   logit layer has no activation quantizer.
//! * A residual add sums two values (the main path's quantized output and the shortcut), applies
//!   its activation (ReLU in a ResNet block, none in a MobileNetV2 block) and quantizes the sum
//!   with its own activation quantizer (unsigned after ReLU, signed without).
//! * Pooling and flatten pass values through unquantized.
//!
//! # `state_dict` names
//!
//! A layer's name is its PyTorch module path: `{name}.weight`, `{name}.bias` or (folded BN, held
//! by the same module as in the official code) `{name}.gamma`, `.beta`, `.running_mean`,
//! `.running_var`, then `{name}.weight_quantizer.quantizer.*` and
//! `{name}.activation_quantizer.quantizer.*` ([`QUANTIZER_TENSORS`], and `gamma_2` per output
//! channel for pruned weights). A residual block's add is named after the block, so its quantizer
//! is `layer1.0.activation_quantizer.quantizer.*`. The ResNet presets use torchvision's tree:
//! `conv1`, `layer{1..}.{i}.conv1`, `.conv2`, `.downsample.0` (the projection shortcut, BN
//! folded into it), `fc`. MobileNetV2 ([`Arch::mobilenetv2`]) uses torchvision's too:
//! `features.0.0` (stem), `features.{i}.conv.0.0` (expansion), `.conv.1.0` (depthwise),
//! `.conv.2` (projection) — one index lower in blocks without expansion, see
//! [`ArchBuilder::inverted_residual`] — the add `features.{i}`, `features.{last}.0` (the 1×1
//! conv to 1280 channels) and `classifier.1`.
//!
//! # BOP accounting on a graph (spec §6, and the rule where it is silent)
//!
//! `BOP_l = MACs_l · b_w(l) · b_a(in) · keep(l) · keep(in)` per weighted layer, where `in` is the
//! value the layer reads. `b_a(in)` is the bit width of the activation quantizer that produced the
//! value, looking through pooling and flatten (8 for the network input). `keep(in)` is the
//! fraction of live channels of that value: a weighted layer's output channel is live when its
//! test-time pruning gate is on (always, for a layer without gates), pooling and flatten keep
//! their input's channels, and a channel of a residual sum is live when it is live in either
//! operand. On a chain of layers this is exactly spec §6.2. The regulariser's `mac_count` of an
//! activation quantizer (spec §3) is the sum of the MACs of the weighted layers that read its
//! value, directly or through pooling and flatten; a quantizer whose value only feeds residual
//! adds (a block's last conv, a projection shortcut) takes the MACs of the layers that read the
//! sums, whose precision its bits bound.

use super::shapes::{Conv2dShape, ConvShapeError};
use std::collections::{BTreeMap, BTreeSet};

/// Tensors keyed by `state_dict` name.
pub type Params = BTreeMap<String, Vec<f32>>;

/// Parameters of the quantizer sub-module in the official `state_dict`, in registration order.
pub const QUANTIZER_TENSORS: [&str; 6] = [
    "x_min", "x_max", "gamma_4", "gamma_8", "gamma_16", "gamma_32",
];

/// What one layer computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// 2-D convolution (cross-correlation) with zero padding.
    Conv {
        /// Input channels.
        c_in: usize,
        /// Output channels.
        c_out: usize,
        /// Kernel height and width.
        kernel: [usize; 2],
        /// Stride along height and width.
        stride: [usize; 2],
        /// Zero padding on each side, along height and width.
        pad: [usize; 2],
        /// Channel groups (1: dense; `c_in`: depthwise).
        groups: usize,
    },
    /// Fully connected layer on the (C, H, W)-flattened input.
    Linear {
        /// Input features.
        d_in: usize,
        /// Output features.
        d_out: usize,
    },
    /// Max-pooling with a square window; the padding is −∞ (PyTorch `MaxPool2d`).
    MaxPool {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding on each side.
        pad: usize,
    },
    /// Average pooling with a square window; zero padding counted in the mean (PyTorch's
    /// default `count_include_pad`).
    AvgPool {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding on each side.
        pad: usize,
    },
    /// Mean over each channel's plane: `[c, h, w] → [c, 1, 1]`.
    GlobalAvgPool,
    /// `[c, h, w] → [c·h·w, 1, 1]`; moves no data (NCHW is already flat per sample).
    Flatten,
    /// Element-wise sum of two values of the same shape (a residual add).
    Add,
}

/// The activation function after a weighted layer or a residual add.
///
/// An activation quantizer after [`Activation::Relu`] or [`Activation::Relu6`] is unsigned (its
/// input is never negative, so range initialisation finds `x_min = 0`, spec §1.2); after
/// [`Activation::None`] it is signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    /// The identity (a linear output, e.g. a ResNet block's `conv2` or a MobileNetV2 block's
    /// projection).
    None,
    /// `max(x, 0)`.
    #[default]
    Relu,
    /// `min(max(x, 0), 6)` (PyTorch `ReLU6`, MobileNetV2); its gradient is 0 where `x ≤ 0` or
    /// `x ≥ 6` (PyTorch's `hardtanh` backward).
    Relu6,
}

impl Activation {
    /// The activation of one value, as the CPU reference and the epilogue shader compute it
    /// (comparisons, not `clamp`: −0 gives +0 and a NaN stays a NaN under ReLU6).
    #[allow(clippy::manual_clamp)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
            Activation::Relu6 => {
                if x <= 0.0 {
                    0.0
                } else if x >= RELU6_BOUND {
                    RELU6_BOUND
                } else {
                    x
                }
            }
        }
    }
}

/// The upper clamp of [`Activation::Relu6`].
pub const RELU6_BOUND: f32 = 6.0;

/// One layer of a network.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    /// `state_dict` prefix (PyTorch module path), e.g. `features.0` or `layer1.0.conv1`.
    pub name: String,
    /// Operation.
    pub kind: LayerKind,
    /// Values read: 0 is the network input, `i + 1` the output of layer `i`. Two for
    /// [`LayerKind::Add`], one otherwise.
    pub inputs: Vec<usize>,
    /// Shape (C, H, W) of the (first) input for one sample.
    pub input: [usize; 3],
    /// Output shape (C, H, W) for one sample; linear layers are `(d_out, 1, 1)`.
    pub output: [usize; 3],
    /// Folded batch-norm (spec §5.2); such layers have no bias.
    pub batch_norm: bool,
    /// Full-precision bias.
    pub bias: bool,
    /// Pruning gates on the weight's output channels.
    pub prune: bool,
    /// Activation on the output (weighted layers and adds; [`Activation::None`] elsewhere).
    pub activation: Activation,
    /// An activation quantizer on the output (weighted layers and adds; not the logit layer).
    pub act_quant: bool,
}

impl LayerSpec {
    /// Whether the layer has weights (conv or linear).
    pub fn is_weighted(&self) -> bool {
        matches!(self.kind, LayerKind::Conv { .. } | LayerKind::Linear { .. })
    }

    /// Whether the layer owns quantizers (weighted layers and residual adds).
    pub fn is_quantized(&self) -> bool {
        self.is_weighted() || self.kind == LayerKind::Add
    }

    /// Output channels (conv) or features (linear); 0 for other layers.
    pub fn out_channels(&self) -> usize {
        match self.kind {
            LayerKind::Conv { c_out, .. } => c_out,
            LayerKind::Linear { d_out, .. } => d_out,
            _ => 0,
        }
    }

    /// PyTorch weight shape: OIHW (`[c_out, c_in / groups, kh, kw]`) for conv, `[out, in]` for
    /// linear, empty otherwise.
    pub fn weight_shape(&self) -> Vec<usize> {
        match self.kind {
            LayerKind::Conv {
                c_in,
                c_out,
                kernel,
                groups,
                ..
            } => vec![c_out, c_in / groups.max(1), kernel[0], kernel[1]],
            LayerKind::Linear { d_in, d_out } => vec![d_out, d_in],
            _ => vec![],
        }
    }

    /// Fan-in of the weight (PyTorch's default initialisation bound is 1/√fan_in).
    pub fn fan_in(&self) -> usize {
        self.weight_shape().iter().skip(1).product()
    }

    /// The convolution's shape for a batch of `n` (`None` for other layers).
    pub fn conv_shape(&self, n: usize) -> Option<Conv2dShape> {
        match self.kind {
            LayerKind::Conv {
                c_in,
                c_out,
                kernel,
                stride,
                pad,
                groups,
            } => Some(Conv2dShape {
                n,
                c_in,
                h: self.input[1],
                w: self.input[2],
                c_out,
                kernel,
                stride,
                pad,
                groups,
            }),
            _ => None,
        }
    }

    /// MACs for one sample, bias ignored (spec §6.1); 0 for layers without weights.
    pub fn macs(&self) -> u64 {
        if !self.is_weighted() {
            return 0;
        }
        let [c, h, w] = self.output;
        (c * h * w * self.fan_in()) as u64
    }

    /// Elements of the output for one sample.
    pub fn output_len(&self) -> usize {
        self.output.iter().product()
    }

    /// `state_dict` prefix of the weight quantizer (weighted layers).
    pub fn weight_quantizer(&self) -> String {
        format!("{}.weight_quantizer.quantizer", self.name)
    }

    /// `state_dict` prefix of the activation quantizer (where [`LayerSpec::act_quant`]).
    pub fn activation_quantizer(&self) -> String {
        format!("{}.activation_quantizer.quantizer", self.name)
    }

    /// The `state_dict` tensors this layer owns, with their PyTorch shapes, in `state_dict`
    /// order: weight, bias, BN statistics and affine parameters, then each quantizer's tensors
    /// (weight quantizer first). The one list of a layer's parameters: the `state_dict`, the
    /// initialisation and the GPU model's parameter groups all follow it.
    pub fn state_dict_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        if !self.is_quantized() {
            return out;
        }
        let c = self.out_channels();
        if self.is_weighted() {
            out.push((format!("{}.weight", self.name), self.weight_shape()));
        }
        if self.bias {
            out.push((format!("{}.bias", self.name), vec![c]));
        }
        if self.batch_norm {
            for t in ["running_mean", "running_var", "gamma", "beta"] {
                out.push((format!("{}.{t}", self.name), vec![c]));
            }
        }
        let mut quantizers = Vec::new();
        if self.is_weighted() {
            quantizers.push((self.weight_quantizer(), self.prune));
        }
        if self.act_quant {
            quantizers.push((self.activation_quantizer(), false));
        }
        for (prefix, prune) in quantizers {
            for t in QUANTIZER_TENSORS {
                out.push((format!("{prefix}.{t}"), vec![1]));
            }
            if prune {
                out.push((format!("{prefix}.gamma_2"), vec![c]));
            }
        }
        out
    }
}

/// A network: input shape, classes and layers in forward order, validated by [`ArchBuilder`].
#[derive(Clone, Debug, PartialEq)]
pub struct Arch {
    /// Model name.
    pub name: String,
    /// Input shape (C, H, W).
    pub input: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Layers in forward order; the last one is the logit layer.
    pub layers: Vec<LayerSpec>,
}

/// One quantizer of a network: its `state_dict` prefix, noise id and regulariser weight.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizerInfo {
    /// e.g. `features.0.weight_quantizer.quantizer`.
    pub prefix: String,
    /// Index of the layer that owns it.
    pub layer: usize,
    /// Id in the gate-noise counter: `2·i` for the weights and `2·i + 1` for the activations of
    /// the i-th quantized layer (weighted layers and adds, in order).
    pub id: u32,
    /// `mac_count / max_macs` (spec §3; the rule for graphs is in the module docs).
    pub mac_ratio: f32,
    /// Output channels with pruning gates (0 = none).
    pub prune_channels: usize,
    /// Elements of the quantized tensor for one sample (activations) or in total (weights).
    pub len: usize,
    /// Whether it quantizes a weight (else an activation).
    pub weight: bool,
}

/// Which optimizer group a parameter belongs to (spec §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Weights, biases, BN γ and β (scheduled learning rate).
    Weights,
    /// Gate logits ℓ2…ℓ32.
    Gates,
    /// Ranges x_max.
    Scales,
}

impl Group {
    /// The group of a `state_dict` tensor; `None` for tensors without gradient (running
    /// statistics, the inert `x_min`).
    pub fn of(name: &str) -> Option<Group> {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        if name.contains("quantizer.") {
            match leaf {
                "x_max" => Some(Group::Scales),
                "x_min" => None,
                _ => Some(Group::Gates),
            }
        } else if leaf.starts_with("running_") {
            None
        } else {
            Some(Group::Weights)
        }
    }
}

/// Why a network description is invalid. Every variant names the layer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArchError {
    /// The network has no weighted layer.
    #[error("{model}: the network is empty (it needs at least a logit layer)")]
    Empty {
        /// Model name.
        model: String,
    },
    /// A size that must be positive is 0.
    #[error("{layer}: {what} is 0")]
    Zero {
        /// Layer name.
        layer: String,
        /// Which size.
        what: &'static str,
    },
    /// A convolution that is not one.
    #[error("{layer}: invalid convolution on input {input:?}: {source}")]
    Conv {
        /// Layer name.
        layer: String,
        /// Input shape (C, H, W).
        input: [usize; 3],
        /// What is wrong.
        source: ConvShapeError,
    },
    /// A pooling window larger than the padded input, or padding of half the window or more.
    #[error(
        "{layer}: pooling window {kernel} stride {stride} pad {pad} does not fit input {input:?}"
    )]
    Pool {
        /// Layer name.
        layer: String,
        /// Input shape (C, H, W).
        input: [usize; 3],
        /// Window.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding.
        pad: usize,
    },
    /// Two shapes that must agree do not (a residual add, the logit layer).
    #[error("{layer}: shape mismatch: expected {expected:?}, got {actual:?}")]
    Shape {
        /// Layer name.
        layer: String,
        /// What the layer needs.
        expected: [usize; 3],
        /// What it was given.
        actual: [usize; 3],
    },
    /// A weighted layer with neither a bias nor batch norm.
    #[error("{layer}: a weighted layer needs a bias or batch norm")]
    NoBiasOrBatchNorm {
        /// Layer name.
        layer: String,
    },
    /// Two layers share a name (their `state_dict` tensors would collide).
    #[error("{layer}: the name is used twice")]
    DuplicateName {
        /// Layer name.
        layer: String,
    },
    /// A layer name that cannot be a PyTorch module path.
    #[error("{layer:?}: a layer name must be non-empty dot-separated identifiers")]
    BadName {
        /// Layer name.
        layer: String,
    },
    /// A value that does not exist (from another builder, or not yet built).
    #[error("{layer}: reads value {value}, which this network does not have")]
    UnknownValue {
        /// Layer name.
        layer: String,
        /// The value index.
        value: usize,
    },
    /// The logit layer is not a weighted layer, or its output is not `[classes]`.
    #[error("{layer}: the last layer must be a conv or linear layer with {classes} outputs")]
    Logits {
        /// Layer name.
        layer: String,
        /// Classes of the network.
        classes: usize,
    },
    /// A layer whose output nothing reads.
    #[error("{layer}: its output is never used")]
    Unused {
        /// Layer name.
        layer: String,
    },
    /// A block or preset parameter out of range (a width multiplier that is not positive and
    /// finite, a channel count that overflows).
    #[error("{layer}: {what}")]
    Parameter {
        /// Layer (or block, or model) name.
        layer: String,
        /// What is wrong, with the numbers.
        what: String,
    },
}

/// A value in a network under construction: the input or a layer's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value(usize);

/// Options of a convolution for [`ArchBuilder::conv`]. Defaults: stride 1, no padding, dense,
/// a bias, no batch norm, ReLU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    /// Output channels.
    pub out: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding along height and width.
    pub pad: [usize; 2],
    /// Channel groups.
    pub groups: usize,
    /// Full-precision bias.
    pub bias: bool,
    /// Folded batch norm (then usually no bias).
    pub batch_norm: bool,
    /// Activation after the layer.
    pub activation: Activation,
}

impl Conv {
    /// `out` channels, square `k × k` kernel, stride 1, no padding, dense, bias, ReLU.
    pub const fn new(out: usize, k: usize) -> Self {
        Self {
            out,
            kernel: [k, k],
            stride: [1, 1],
            pad: [0, 0],
            groups: 1,
            bias: true,
            batch_norm: false,
            activation: Activation::Relu,
        }
    }

    /// Stride `s` along both axes.
    pub const fn stride(self, s: usize) -> Self {
        Self {
            stride: [s, s],
            ..self
        }
    }

    /// `p` zeros on every side.
    pub const fn pad(self, p: usize) -> Self {
        Self {
            pad: [p, p],
            ..self
        }
    }

    /// `g` channel groups.
    pub const fn groups(self, g: usize) -> Self {
        Self { groups: g, ..self }
    }

    /// Folded batch norm and no bias (spec §5.2).
    pub const fn batch_norm(self) -> Self {
        Self {
            batch_norm: true,
            bias: false,
            ..self
        }
    }

    /// No activation after the layer (its activation quantizer is then signed).
    pub const fn linear_output(self) -> Self {
        self.activation(Activation::None)
    }

    /// ReLU6 after the layer (MobileNetV2; its activation quantizer stays unsigned).
    pub const fn relu6(self) -> Self {
        self.activation(Activation::Relu6)
    }

    /// Activation `a` after the layer.
    pub const fn activation(self, a: Activation) -> Self {
        Self {
            activation: a,
            ..self
        }
    }
}

/// Options of a fully connected layer for [`ArchBuilder::linear`]. Defaults: bias, no batch
/// norm, ReLU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    /// Output features.
    pub out: usize,
    /// Full-precision bias.
    pub bias: bool,
    /// Folded batch norm (BN1d) and no bias.
    pub batch_norm: bool,
    /// Activation after the layer.
    pub activation: Activation,
}

impl Linear {
    /// `out` features, bias, ReLU.
    pub const fn new(out: usize) -> Self {
        Self {
            out,
            bias: true,
            batch_norm: false,
            activation: Activation::Relu,
        }
    }

    /// Folded batch norm and no bias.
    pub const fn batch_norm(self) -> Self {
        Self {
            batch_norm: true,
            bias: false,
            ..self
        }
    }

    /// Activation `a` after the layer.
    pub const fn activation(self, a: Activation) -> Self {
        Self {
            activation: a,
            ..self
        }
    }
}

/// Builds an [`Arch`], inferring shapes and validating every layer as it is added; nothing here
/// panics on a bad description.
///
/// ```
/// use bayesian_bits::spec::{ArchBuilder, Conv, Linear};
///
/// let mut b = ArchBuilder::new("tiny", [3, 16, 16], 10);
/// let x = b.input();
/// let x = b.conv("conv1", x, Conv::new(8, 3).pad(1).batch_norm())?;
/// let x = b.basic_block("layer1.0", x, 16, 2)?;
/// let x = b.global_avg_pool("avgpool", x)?;
/// let logits = b.linear("fc", x, Linear::new(10))?;
/// let arch = b.finish(logits)?;
/// assert_eq!(arch.layers.last().unwrap().output, [10, 1, 1]);
/// # Ok::<(), bayesian_bits::spec::ArchError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ArchBuilder {
    name: String,
    input: [usize; 3],
    classes: usize,
    layers: Vec<LayerSpec>,
}

impl ArchBuilder {
    /// A network named `name` reading `[c, h, w]` images into `classes` logits.
    pub fn new(name: impl Into<String>, input: [usize; 3], classes: usize) -> Self {
        Self {
            name: name.into(),
            input,
            classes,
            layers: Vec::new(),
        }
    }

    /// The network input.
    pub fn input(&self) -> Value {
        Value(0)
    }

    /// The shape (C, H, W) of a value.
    pub fn shape(&self, v: Value) -> Option<[usize; 3]> {
        match v.0 {
            0 => Some(self.input),
            i => self.layers.get(i - 1).map(|l| l.output),
        }
    }

    fn source(&self, layer: &str, v: Value) -> Result<[usize; 3], ArchError> {
        self.shape(v).ok_or_else(|| ArchError::UnknownValue {
            layer: layer.to_string(),
            value: v.0,
        })
    }

    fn check_name(&self, name: &str) -> Result<(), ArchError> {
        let ident = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !name.split('.').all(ident) {
            return Err(ArchError::BadName {
                layer: name.to_string(),
            });
        }
        if self.layers.iter().any(|l| l.name == name) {
            return Err(ArchError::DuplicateName {
                layer: name.to_string(),
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        name: String,
        kind: LayerKind,
        inputs: Vec<usize>,
        input: [usize; 3],
        output: [usize; 3],
        batch_norm: bool,
        bias: bool,
        activation: Activation,
    ) -> Value {
        let quantized = matches!(
            kind,
            LayerKind::Conv { .. } | LayerKind::Linear { .. } | LayerKind::Add
        );
        let weighted = quantized && kind != LayerKind::Add;
        self.layers.push(LayerSpec {
            name,
            kind,
            inputs,
            input,
            output,
            batch_norm,
            bias,
            prune: weighted,
            activation,
            act_quant: quantized,
        });
        Value(self.layers.len())
    }

    fn check_weighted(
        name: &str,
        bias: bool,
        batch_norm: bool,
        out: usize,
    ) -> Result<(), ArchError> {
        if out == 0 {
            return Err(ArchError::Zero {
                layer: name.to_string(),
                what: "output channels",
            });
        }
        if !bias && !batch_norm {
            return Err(ArchError::NoBiasOrBatchNorm {
                layer: name.to_string(),
            });
        }
        Ok(())
    }

    /// A convolution (+ folded BN)(+ ReLU) reading `x`.
    pub fn conv(&mut self, name: impl Into<String>, x: Value, c: Conv) -> Result<Value, ArchError> {
        let name = name.into();
        self.check_name(&name)?;
        let input = self.source(&name, x)?;
        Self::check_weighted(&name, c.bias, c.batch_norm, c.out)?;
        let s = Conv2dShape {
            n: 1,
            c_in: input[0],
            h: input[1],
            w: input[2],
            c_out: c.out,
            kernel: c.kernel,
            stride: c.stride,
            pad: c.pad,
            groups: c.groups,
        };
        s.check().map_err(|source| ArchError::Conv {
            layer: name.clone(),
            input,
            source,
        })?;
        let kind = LayerKind::Conv {
            c_in: input[0],
            c_out: c.out,
            kernel: c.kernel,
            stride: c.stride,
            pad: c.pad,
            groups: c.groups,
        };
        let output = [c.out, s.h_out(), s.w_out()];
        Ok(self.push(
            name,
            kind,
            vec![x.0],
            input,
            output,
            c.batch_norm,
            c.bias,
            c.activation,
        ))
    }

    /// A fully connected layer (+ folded BN)(+ ReLU) on the flattened `x`.
    pub fn linear(
        &mut self,
        name: impl Into<String>,
        x: Value,
        l: Linear,
    ) -> Result<Value, ArchError> {
        let name = name.into();
        self.check_name(&name)?;
        let input = self.source(&name, x)?;
        Self::check_weighted(&name, l.bias, l.batch_norm, l.out)?;
        let d_in = input.iter().product();
        if d_in == 0 {
            return Err(ArchError::Zero {
                layer: name,
                what: "input features",
            });
        }
        let kind = LayerKind::Linear { d_in, d_out: l.out };
        let output = [l.out, 1, 1];
        Ok(self.push(
            name,
            kind,
            vec![x.0],
            input,
            output,
            l.batch_norm,
            l.bias,
            l.activation,
        ))
    }

    fn pool(
        &mut self,
        name: String,
        x: Value,
        kind: LayerKind,
        [kernel, stride, pad]: [usize; 3],
    ) -> Result<Value, ArchError> {
        self.check_name(&name)?;
        let input = self.source(&name, x)?;
        let out = |size: usize| (size + 2 * pad).checked_sub(kernel).map(|d| d / stride + 1);
        let fits = kernel > 0 && stride > 0 && 2 * pad <= kernel;
        match (fits, out(input[1]), out(input[2])) {
            (true, Some(h), Some(w)) if input[0] > 0 => Ok(self.push(
                name,
                kind,
                vec![x.0],
                input,
                [input[0], h, w],
                false,
                false,
                Activation::None,
            )),
            _ => Err(ArchError::Pool {
                layer: name,
                input,
                kernel,
                stride,
                pad,
            }),
        }
    }

    /// Max-pooling with a `kernel × kernel` window (PyTorch `MaxPool2d`, padding at most half
    /// the window).
    pub fn max_pool(
        &mut self,
        name: impl Into<String>,
        x: Value,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Value, ArchError> {
        let kind = LayerKind::MaxPool {
            kernel,
            stride,
            pad,
        };
        self.pool(name.into(), x, kind, [kernel, stride, pad])
    }

    /// Average pooling with a `kernel × kernel` window (PyTorch `AvgPool2d`).
    pub fn avg_pool(
        &mut self,
        name: impl Into<String>,
        x: Value,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Value, ArchError> {
        let kind = LayerKind::AvgPool {
            kernel,
            stride,
            pad,
        };
        self.pool(name.into(), x, kind, [kernel, stride, pad])
    }

    /// Global average pooling, `[c, h, w] → [c, 1, 1]`.
    pub fn global_avg_pool(
        &mut self,
        name: impl Into<String>,
        x: Value,
    ) -> Result<Value, ArchError> {
        let name = name.into();
        self.check_name(&name)?;
        let input = self.source(&name, x)?;
        let output = [input[0], 1, 1];
        Ok(self.push(
            name,
            LayerKind::GlobalAvgPool,
            vec![x.0],
            input,
            output,
            false,
            false,
            Activation::None,
        ))
    }

    /// Flatten, `[c, h, w] → [c·h·w, 1, 1]` (a linear layer flattens its input anyway).
    pub fn flatten(&mut self, name: impl Into<String>, x: Value) -> Result<Value, ArchError> {
        let name = name.into();
        self.check_name(&name)?;
        let input = self.source(&name, x)?;
        let output = [input.iter().product(), 1, 1];
        Ok(self.push(
            name,
            LayerKind::Flatten,
            vec![x.0],
            input,
            output,
            false,
            false,
            Activation::None,
        ))
    }

    /// A residual add `a + b` (+ `activation`), quantized by its own activation quantizer
    /// (unsigned after ReLU or ReLU6, signed after [`Activation::None`]).
    pub fn add(
        &mut self,
        name: impl Into<String>,
        a: Value,
        b: Value,
        activation: Activation,
    ) -> Result<Value, ArchError> {
        let name = name.into();
        self.check_name(&name)?;
        let sa = self.source(&name, a)?;
        let sb = self.source(&name, b)?;
        if sa != sb {
            return Err(ArchError::Shape {
                layer: name,
                expected: sa,
                actual: sb,
            });
        }
        Ok(self.push(
            name,
            LayerKind::Add,
            vec![a.0, b.0],
            sa,
            sa,
            false,
            false,
            activation,
        ))
    }

    /// A ResNet basic block named `prefix` (torchvision's tree): `conv1` (3×3, stride, BN,
    /// ReLU), `conv2` (3×3, BN, signed quantizer), the shortcut — identity, or `downsample.0`
    /// (1×1, stride, BN) where the stride or the channels change — then add, ReLU and quantize.
    pub fn basic_block(
        &mut self,
        prefix: &str,
        x: Value,
        planes: usize,
        stride: usize,
    ) -> Result<Value, ArchError> {
        let input = self.source(prefix, x)?;
        let conv3 = Conv::new(planes, 3).pad(1).batch_norm();
        let y = self.conv(format!("{prefix}.conv1"), x, conv3.stride(stride))?;
        let y = self.conv(format!("{prefix}.conv2"), y, conv3.linear_output())?;
        let shortcut = if stride != 1 || input[0] != planes {
            let project = Conv::new(planes, 1)
                .stride(stride)
                .batch_norm()
                .linear_output();
            self.conv(format!("{prefix}.downsample.0"), x, project)?
        } else {
            x
        };
        self.add(prefix, y, shortcut, Activation::Relu)
    }

    /// MobileNetV2's inverted residual block named `prefix` (torchvision's `InvertedResidual`,
    /// whose `conv` is a `Sequential`), reading `x` with `c_in` channels:
    ///
    /// | layer | torchvision module | what |
    /// |---|---|---|
    /// | `{prefix}.conv.0.0` | `conv.0` = `Conv2dNormActivation` (`.0` conv, `.1` BN, `.2` ReLU6) | 1×1 expansion to `expand · c_in` channels, BN, ReLU6 — absent when `expand` is 1 |
    /// | `{prefix}.conv.1.0` (`conv.0.0` without expansion) | `conv.1` (`conv.0`) = `Conv2dNormActivation` | depthwise 3×3 (groups = channels), `stride`, padding 1, BN, ReLU6 |
    /// | `{prefix}.conv.2` (`conv.1`) | `conv.2` (`conv.1`) = `Conv2d`, BN in `conv.3` (`conv.2`) | 1×1 projection to `out` channels, BN, no activation (signed quantizer) |
    /// | `{prefix}` | the `x + conv(x)` of `forward` | identity add when `stride` is 1 and `out == c_in`: quantized by `{prefix}.activation_quantizer` (signed), no activation |
    ///
    /// Batch norm is folded into the convolution before it (spec §5.2), so its tensors are
    /// `{conv}.gamma`, `.beta`, `.running_mean`, `.running_var` rather than torchvision's
    /// separate BN module's `weight`, `bias`, `running_*`. Every convolution has no bias. The
    /// block is added whole or not at all: on an error the builder is unchanged.
    pub fn inverted_residual(
        &mut self,
        prefix: &str,
        x: Value,
        out: usize,
        stride: usize,
        expand: usize,
    ) -> Result<Value, ArchError> {
        let layers = self.layers.len();
        let block = self.inverted_residual_layers(prefix, x, out, stride, expand);
        if block.is_err() {
            self.layers.truncate(layers);
        }
        block
    }

    fn inverted_residual_layers(
        &mut self,
        prefix: &str,
        x: Value,
        out: usize,
        stride: usize,
        expand: usize,
    ) -> Result<Value, ArchError> {
        let input = self.source(prefix, x)?;
        let zero = |what| ArchError::Zero {
            layer: prefix.to_string(),
            what,
        };
        if expand == 0 {
            return Err(zero("the expansion factor"));
        }
        if out == 0 {
            return Err(zero("output channels"));
        }
        let hidden = input[0]
            .checked_mul(expand)
            .ok_or_else(|| ArchError::Parameter {
                layer: prefix.to_string(),
                what: format!(
                    "{} input channels times expansion factor {expand} overflow",
                    input[0]
                ),
            })?;
        let mut y = x;
        let mut i = 0;
        if expand != 1 {
            let expansion = Conv::new(hidden, 1).batch_norm().relu6();
            y = self.conv(format!("{prefix}.conv.0.0"), y, expansion)?;
            i = 1;
        }
        let depthwise = Conv::new(hidden, 3)
            .stride(stride)
            .pad(1)
            .groups(hidden)
            .batch_norm()
            .relu6();
        y = self.conv(format!("{prefix}.conv.{i}.0"), y, depthwise)?;
        let projection = Conv::new(out, 1).batch_norm().linear_output();
        y = self.conv(format!("{prefix}.conv.{}", i + 1), y, projection)?;
        if stride == 1 && out == input[0] {
            y = self.add(prefix, y, x, Activation::None)?;
        }
        Ok(y)
    }

    /// Validates the whole network and returns it: `logits` must be the output of the last
    /// layer, a conv or linear layer with `classes` outputs (it loses its activation, activation
    /// quantizer and pruning gates), and every other layer's output must be read.
    pub fn finish(mut self, logits: Value) -> Result<Arch, ArchError> {
        let count = self.layers.len();
        let Some(last) = self.layers.last_mut() else {
            return Err(ArchError::Empty { model: self.name });
        };
        let flat: usize = last.output.iter().product();
        if logits.0 != count || !last.is_weighted() || flat != self.classes || self.classes == 0 {
            return Err(ArchError::Logits {
                layer: last.name.clone(),
                classes: self.classes,
            });
        }
        last.activation = Activation::None;
        last.act_quant = false;
        last.prune = false;
        let read: BTreeSet<usize> = self.layers.iter().flat_map(|l| l.inputs.clone()).collect();
        if let Some(i) = (1..self.layers.len()).find(|v| !read.contains(v)) {
            return Err(ArchError::Unused {
                layer: self.layers[i - 1].name.clone(),
            });
        }
        if self.input.contains(&0) {
            return Err(ArchError::Zero {
                layer: "input".into(),
                what: "an input dimension",
            });
        }
        Ok(Arch {
            name: self.name,
            input: self.input,
            classes: self.classes,
            layers: self.layers,
        })
    }
}

/// One row of MobileNetV2's setting table (Sandler et al. 2018, table 2; torchvision's
/// `inverted_residual_setting`): `repeats` inverted residual blocks with expansion factor
/// `expand` (t) and `channels` (c) outputs, the first with stride `stride` (s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvertedResidualSetting {
    /// Expansion factor t (1: no expansion conv).
    pub expand: usize,
    /// Output channels c (before the width multiplier).
    pub channels: usize,
    /// Blocks n.
    pub repeats: usize,
    /// Stride s of the first block.
    pub stride: usize,
}

const fn row(
    expand: usize,
    channels: usize,
    repeats: usize,
    stride: usize,
) -> InvertedResidualSetting {
    InvertedResidualSetting {
        expand,
        channels,
        repeats,
        stride,
    }
}

/// torchvision's MobileNetV2 setting table for 224×224 ImageNet inputs (t, c, n, s):
/// (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
/// (6, 320, 1, 1) — 17 blocks, total stride 32 with the stride-2 stem.
pub const MOBILENETV2_IMAGENET: [InvertedResidualSetting; 7] = [
    row(1, 16, 1, 1),
    row(6, 24, 2, 2),
    row(6, 32, 3, 2),
    row(6, 64, 4, 2),
    row(6, 96, 3, 1),
    row(6, 160, 3, 2),
    row(6, 320, 1, 1),
];

/// The CIFAR setting table: [`MOBILENETV2_IMAGENET`] with the second row's stride reduced to 1
/// (the usual CIFAR adaptation, e.g. kuangliu/pytorch-cifar). With a stride-1 stem the total
/// stride is 8: 32×32 inputs end at 4×4 rather than 1×1.
pub const MOBILENETV2_CIFAR: [InvertedResidualSetting; 7] = [
    row(1, 16, 1, 1),
    row(6, 24, 2, 1),
    row(6, 32, 3, 2),
    row(6, 64, 4, 2),
    row(6, 96, 3, 1),
    row(6, 160, 3, 2),
    row(6, 320, 1, 1),
];

/// What [`Arch::mobilenetv2`] builds.
#[derive(Clone, Debug, PartialEq)]
pub struct MobileNetV2Config {
    /// Model name.
    pub name: String,
    /// Input shape (C, H, W).
    pub input: [usize; 3],
    /// Classes.
    pub classes: usize,
    /// Width multiplier α (torchvision's `width_mult`): every channel count is
    /// `make_divisible(c·α)`.
    pub width: f64,
    /// Stride of the stem convolution (2 on ImageNet, 1 on CIFAR).
    pub stem_stride: usize,
    /// The setting table, one row per stage.
    pub settings: Vec<InvertedResidualSetting>,
}

impl MobileNetV2Config {
    /// torchvision's `mobilenet_v2()`: 3×224×224 inputs, 1000 classes, width 1, stride-2 stem,
    /// [`MOBILENETV2_IMAGENET`].
    pub fn imagenet() -> Self {
        Self {
            name: "MobileNetV2".into(),
            input: [3, 224, 224],
            classes: 1000,
            width: 1.0,
            stem_stride: 2,
            settings: MOBILENETV2_IMAGENET.to_vec(),
        }
    }

    /// CIFAR-10: 3×32×32 inputs, 10 classes, width 1, stride-1 stem, [`MOBILENETV2_CIFAR`].
    pub fn cifar10() -> Self {
        Self {
            name: "MobileNetV2-CIFAR".into(),
            input: [3, 32, 32],
            classes: 10,
            width: 1.0,
            stem_stride: 1,
            settings: MOBILENETV2_CIFAR.to_vec(),
        }
    }
}

/// torchvision's `_make_divisible(v, 8)`: `v` rounded to the nearest multiple of 8 (at least 8),
/// plus 8 if that is more than 10 % below `v`.
fn make_divisible(v: f64) -> usize {
    const DIVISOR: f64 = 8.0;
    let rounded = (((v + DIVISOR / 2.0) / DIVISOR).floor() * DIVISOR).max(DIVISOR);
    let rounded = if rounded < 0.9 * v {
        rounded + DIVISOR
    } else {
        rounded
    };
    rounded as usize
}

/// The largest width multiplier [`Arch::mobilenetv2`] accepts (torchvision's largest is 1.4).
const MAX_WIDTH: f64 = 1024.0;

impl Arch {
    /// LeNet-5 for 1×28×28 inputs (spec §5.3).
    pub fn lenet5() -> Self {
        Self::preset(
            |b| {
                let x = b.input();
                let x = b.conv("features.0", x, Conv::new(32, 5))?;
                let x = b.max_pool("features.1", x, 2, 2, 0)?;
                let x = b.conv("features.2", x, Conv::new(64, 5))?;
                let x = b.max_pool("features.3", x, 2, 2, 0)?;
                let x = b.linear("classifier.0", x, Linear::new(512))?;
                b.linear("classifier.1", x, Linear::new(10))
            },
            "LeNet-5",
            [1, 28, 28],
        )
    }

    /// VGG-7 for 3×32×32 CIFAR-10 inputs (spec §5.4).
    pub fn vgg7() -> Self {
        Self::preset(
            |b| {
                let conv = |c| Conv::new(c, 3).pad(1).batch_norm();
                let mut x = b.input();
                let mut i = 0;
                for c in [128, 256, 512] {
                    x = b.conv(format!("features.{i}"), x, conv(c))?;
                    x = b.conv(format!("features.{}", i + 1), x, conv(c))?;
                    x = b.max_pool(format!("features.{}", i + 2), x, 2, 2, 0)?;
                    i += 3;
                }
                let x = b.linear("classifier.0", x, Linear::new(1024).batch_norm())?;
                b.linear("classifier.1", x, Linear::new(10))
            },
            "VGG-7",
            [3, 32, 32],
        )
    }

    /// ResNet-20 for 3×32×32 CIFAR-10 inputs (He et al. 2016, §4.2): a 3×3 conv to 16 channels,
    /// three stages of three basic blocks at 16, 32 and 64 channels (the first block of stages
    /// 2 and 3 with stride 2 and a 1×1 projection shortcut), global average pooling and a
    /// linear layer.
    pub fn resnet20() -> Self {
        Self::preset(
            |b| {
                let mut x = b.input();
                x = b.conv("conv1", x, Conv::new(16, 3).pad(1).batch_norm())?;
                for (stage, planes) in [16, 32, 64].into_iter().enumerate() {
                    for block in 0..3 {
                        let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                        x = b.basic_block(
                            &format!("layer{}.{block}", stage + 1),
                            x,
                            planes,
                            stride,
                        )?;
                    }
                }
                let x = b.global_avg_pool("avgpool", x)?;
                b.linear("fc", x, Linear::new(10))
            },
            "ResNet-20",
            [3, 32, 32],
        )
    }

    /// ResNet-18 in torchvision's layout (the official ImageNet experiments' structure): 7×7
    /// stride-2 conv to 64 channels, 3×3 stride-2 max-pool, four stages of two basic blocks at
    /// 64, 128, 256 and 512 channels, global average pooling and a linear layer, for `input`
    /// images (3×224×224 on ImageNet) and `classes` classes.
    pub fn resnet18(input: [usize; 3], classes: usize) -> Result<Self, ArchError> {
        let mut b = ArchBuilder::new("ResNet-18", input, classes);
        let mut x = b.input();
        x = b.conv("conv1", x, Conv::new(64, 7).stride(2).pad(3).batch_norm())?;
        x = b.max_pool("maxpool", x, 3, 2, 1)?;
        for (stage, planes) in [64, 128, 256, 512].into_iter().enumerate() {
            for block in 0..2 {
                let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                x = b.basic_block(&format!("layer{}.{block}", stage + 1), x, planes, stride)?;
            }
        }
        let x = b.global_avg_pool("avgpool", x)?;
        let logits = b.linear("fc", x, Linear::new(classes))?;
        b.finish(logits)
    }

    /// MobileNetV2 (Sandler et al. 2018) in torchvision's module tree, configured by `cfg`:
    ///
    /// * `features.0.0`: 3×3 conv to `make_divisible(32·width)` channels, stride
    ///   `cfg.stem_stride`, padding 1, BN, ReLU6 (torchvision's `Conv2dNormActivation`);
    /// * `features.1` … `features.{B}`: the inverted residual blocks of `cfg.settings`, row by
    ///   row, `repeats` blocks of `make_divisible(channels·width)` output channels, the first
    ///   of each row with the row's stride ([`ArchBuilder::inverted_residual`] documents a
    ///   block's tree);
    /// * `features.{B+1}.0`: 1×1 conv to `make_divisible(1280·max(1, width))` channels, BN,
    ///   ReLU6;
    /// * `avgpool`: global average pooling (a functional call in torchvision, no module);
    /// * `classifier.1`: the linear layer (torchvision's `classifier.0` is a dropout, which
    ///   this crate does not have; the index is kept so the names match).
    ///
    /// `make_divisible` rounds to the nearest multiple of 8, at least 8, never more than 10 %
    /// below the scaled value (torchvision's `_make_divisible`).
    pub fn mobilenetv2(cfg: &MobileNetV2Config) -> Result<Self, ArchError> {
        let name = cfg.name.clone();
        if !(cfg.width > 0.0 && cfg.width <= MAX_WIDTH) {
            return Err(ArchError::Parameter {
                layer: name,
                what: format!(
                    "width multiplier {} (it must be positive and at most {MAX_WIDTH})",
                    cfg.width
                ),
            });
        }
        let mut b = ArchBuilder::new(name, cfg.input, cfg.classes);
        let mut x = b.input();
        let stem = make_divisible(32.0 * cfg.width);
        x = b.conv(
            "features.0.0",
            x,
            Conv::new(stem, 3)
                .stride(cfg.stem_stride)
                .pad(1)
                .batch_norm()
                .relu6(),
        )?;
        let mut index = 1;
        for row in &cfg.settings {
            let out = make_divisible(row.channels as f64 * cfg.width);
            for r in 0..row.repeats {
                let stride = if r == 0 { row.stride } else { 1 };
                x =
                    b.inverted_residual(&format!("features.{index}"), x, out, stride, row.expand)?;
                index += 1;
            }
        }
        let last = make_divisible(1280.0 * cfg.width.max(1.0));
        x = b.conv(
            format!("features.{index}.0"),
            x,
            Conv::new(last, 1).batch_norm().relu6(),
        )?;
        let x = b.global_avg_pool("avgpool", x)?;
        let logits = b.linear("classifier.1", x, Linear::new(cfg.classes))?;
        b.finish(logits)
    }

    /// MobileNetV2 for 3×32×32 CIFAR-10 inputs: [`MobileNetV2Config::cifar10`] (width 1, a
    /// stride-1 stem and torchvision's setting table with the 24-channel stage at stride 1, so
    /// 17 blocks take 32×32 down to 4×4; 2.24 M parameters, 88.0 M MACs per image).
    pub fn mobilenetv2_cifar() -> Self {
        Self::mobilenetv2(&MobileNetV2Config::cifar10())
            .unwrap_or_else(|e| unreachable!("the MobileNetV2 CIFAR-10 preset is valid: {e}"))
    }

    fn preset(
        build: impl FnOnce(&mut ArchBuilder) -> Result<Value, ArchError>,
        name: &str,
        input: [usize; 3],
    ) -> Self {
        let mut b = ArchBuilder::new(name, input, 10);
        build(&mut b)
            .and_then(|logits| b.finish(logits))
            .unwrap_or_else(|e| unreachable!("the {name} preset is valid: {e}"))
    }

    /// The layers with weights, in order.
    pub fn weighted_layers(&self) -> impl Iterator<Item = &LayerSpec> {
        self.layers.iter().filter(|l| l.is_weighted())
    }

    /// The shape (C, H, W) of value `v` (0: the input, `i + 1`: layer `i`'s output).
    pub fn value_shape(&self, v: usize) -> [usize; 3] {
        match v {
            0 => self.input,
            i => self.layers[i - 1].output,
        }
    }

    /// The largest per-layer MAC count (`max_macs` of the regulariser).
    pub fn max_macs(&self) -> u64 {
        self.layers
            .iter()
            .map(LayerSpec::macs)
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// Layers reading each value (index = value).
    pub fn readers(&self) -> Vec<Vec<usize>> {
        let mut readers = vec![Vec::new(); self.layers.len() + 1];
        for (i, l) in self.layers.iter().enumerate() {
            for &v in &l.inputs {
                readers[v].push(i);
            }
        }
        readers
    }

    /// MACs of the weighted layers that read value `v` directly or through pooling and flatten;
    /// for a value that only feeds residual adds, those of the layers reading the sums.
    fn consumer_macs(&self, v: usize, readers: &[Vec<usize>]) -> u64 {
        let direct = self.direct_consumer_macs(v, readers);
        if direct > 0 {
            return direct;
        }
        readers[v]
            .iter()
            .filter(|&&i| self.layers[i].kind == LayerKind::Add)
            .map(|&i| self.direct_consumer_macs(i + 1, readers))
            .sum()
    }

    fn direct_consumer_macs(&self, v: usize, readers: &[Vec<usize>]) -> u64 {
        readers[v]
            .iter()
            .map(|&i| {
                let l = &self.layers[i];
                match l.kind {
                    LayerKind::Add => 0,
                    _ if l.is_weighted() => l.macs(),
                    _ => self.direct_consumer_macs(i + 1, readers),
                }
            })
            .sum()
    }

    /// Every quantizer, in layer order, weights before activations within a layer.
    pub fn quantizers(&self) -> Vec<QuantizerInfo> {
        let max_macs = self.max_macs() as f64;
        let readers = self.readers();
        let mut out = Vec::new();
        let quantized = self
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_quantized());
        for (q, (i, l)) in quantized.enumerate() {
            if l.is_weighted() {
                out.push(QuantizerInfo {
                    prefix: l.weight_quantizer(),
                    layer: i,
                    id: 2 * q as u32,
                    mac_ratio: (l.macs() as f64 / max_macs) as f32,
                    prune_channels: if l.prune { l.out_channels() } else { 0 },
                    len: l.weight_shape().iter().product(),
                    weight: true,
                });
            }
            if l.act_quant {
                out.push(QuantizerInfo {
                    prefix: l.activation_quantizer(),
                    layer: i,
                    id: 2 * q as u32 + 1,
                    mac_ratio: (self.consumer_macs(i + 1, &readers) as f64 / max_macs) as f32,
                    prune_channels: 0,
                    len: l.output_len(),
                    weight: false,
                });
            }
        }
        out
    }

    /// Learnable parameters of the equivalent PyTorch model: weights, biases and BN γ/β, not
    /// the running statistics or the quantizers' state (what torchvision's parameter counts
    /// count).
    pub fn parameter_count(&self) -> usize {
        self.state_dict_shapes()
            .iter()
            .filter(|(n, _)| !n.contains("quantizer") && !n.contains("running_"))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// Every tensor of the `state_dict` with its PyTorch shape, layer by layer
    /// ([`LayerSpec::state_dict_shapes`]).
    pub fn state_dict_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.layers
            .iter()
            .flat_map(LayerSpec::state_dict_shapes)
            .collect()
    }

    /// The BOP inputs of every weighted layer, in order (see the module docs): for layer `l`,
    /// the activation quantizer whose bits its input carries (`None`: the network input, 8
    /// bits) and the live-channel mask of its input, given each pruned layer's test-time
    /// output-channel mask (`kept[name]`; layers missing from it keep every channel).
    pub fn bop_inputs(&self, kept: &BTreeMap<String, Vec<bool>>) -> Vec<BopInput> {
        let mut live: Vec<Vec<bool>> = vec![vec![true; self.input[0]]];
        let mut source: Vec<Option<String>> = vec![None];
        let mut out = Vec::new();
        for l in &self.layers {
            let first = l.inputs[0];
            let (mask, src) = match l.kind {
                LayerKind::Conv { .. } | LayerKind::Linear { .. } => {
                    out.push(BopInput {
                        layer: l.name.clone(),
                        quantizer: source[first].clone(),
                        live: live[first].clone(),
                    });
                    let mask = match kept.get(&l.name) {
                        Some(m) if l.prune => m.clone(),
                        _ => vec![true; l.out_channels()],
                    };
                    (mask, l.act_quant.then(|| l.activation_quantizer()))
                }
                LayerKind::Add => {
                    let b = &live[l.inputs[1]];
                    let mask = live[first].iter().zip(b).map(|(x, y)| *x || *y).collect();
                    (mask, Some(l.activation_quantizer()))
                }
                LayerKind::Flatten => {
                    let plane = l.input[1] * l.input[2];
                    let mask = live[first]
                        .iter()
                        .flat_map(|&m| std::iter::repeat_n(m, plane))
                        .collect();
                    (mask, source[first].clone())
                }
                _ => (live[first].clone(), source[first].clone()),
            };
            live.push(mask);
            source.push(src);
        }
        out
    }
}

/// What the BOP count of one weighted layer reads (see [`Arch::bop_inputs`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BopInput {
    /// The weighted layer.
    pub layer: String,
    /// `state_dict` prefix of the activation quantizer that produced its input (`None`: the
    /// network input, counted as 8 bits).
    pub quantizer: Option<String>,
    /// Live channels (features, after a flatten) of its input.
    pub live: Vec<bool>,
}

impl BopInput {
    /// Fraction of live input channels.
    pub fn keep(&self) -> f64 {
        if self.live.is_empty() {
            return 1.0;
        }
        self.live.iter().filter(|&&m| m).count() as f64 / self.live.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ConvShapeError;

    #[test]
    fn macs_match_spec_table() {
        let lenet: Vec<u64> = Arch::lenet5()
            .weighted_layers()
            .map(LayerSpec::macs)
            .collect();
        assert_eq!(lenet, [460_800, 3_276_800, 524_288, 5_120]);
        assert_eq!(Arch::lenet5().max_macs(), 3_276_800);
        let vgg: Vec<u64> = Arch::vgg7()
            .weighted_layers()
            .map(LayerSpec::macs)
            .collect();
        assert_eq!(
            vgg,
            [
                3_538_944,
                150_994_944,
                75_497_472,
                150_994_944,
                75_497_472,
                150_994_944,
                8_388_608,
                10_240
            ]
        );
    }

    #[test]
    fn state_dict_names() {
        let names: Vec<String> = Arch::vgg7()
            .state_dict_shapes()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for expected in [
            "features.0.weight",
            "features.0.gamma",
            "features.0.running_var",
            "features.0.weight_quantizer.quantizer.gamma_2",
            "features.0.activation_quantizer.quantizer.x_max",
            "classifier.1.weight_quantizer.quantizer.gamma_32",
            "classifier.1.bias",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing");
        }
        assert!(
            !names.iter().any(|n| n == "features.0.bias"),
            "BN conv has no bias"
        );
        assert!(!names
            .iter()
            .any(|n| n.starts_with("classifier.1.activation_quantizer")));
        assert!(!names
            .iter()
            .any(|n| n == "classifier.1.weight_quantizer.quantizer.gamma_2"));
        // Tensor counts per optimizer group (spec §4.2): weights 23, gates 67, scales 30.
        let count = |pred: &dyn Fn(&str) -> bool| names.iter().filter(|n| pred(n)).count();
        assert_eq!(count(&|n| n.contains(".gamma_")), 67);
        assert_eq!(
            count(&|n| n.ends_with(".x_max") || n.ends_with(".x_min")),
            30
        );
        assert_eq!(
            count(&|n| !n.contains("quantizer") && !n.contains("running_")),
            23
        );
        let lenet: Vec<String> = Arch::lenet5()
            .state_dict_shapes()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(lenet.iter().filter(|n| n.contains(".gamma_")).count(), 31);
        assert_eq!(
            lenet
                .iter()
                .filter(|n| n.ends_with("x_max") || n.ends_with("x_min"))
                .count(),
            14
        );
        assert_eq!(lenet.iter().filter(|n| !n.contains("quantizer")).count(), 8);
    }

    fn tiny() -> ArchBuilder {
        ArchBuilder::new("tiny", [3, 8, 8], 4)
    }

    #[test]
    fn bad_networks_are_typed_errors() {
        let b = tiny();
        let x = b.input();
        assert!(matches!(tiny().finish(x), Err(ArchError::Empty { .. })));
        let mut b = tiny();
        let e = b.conv("c", x, Conv::new(0, 3)).unwrap_err();
        assert!(matches!(e, ArchError::Zero { .. }), "{e}");
        let e = b.conv("c", x, Conv::new(4, 9)).unwrap_err();
        assert!(
            matches!(
                e,
                ArchError::Conv {
                    source: ConvShapeError::KernelTooLarge { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("c: "), "{e}");
        let e = b.conv("c", x, Conv::new(4, 3).groups(2)).unwrap_err();
        assert!(
            matches!(
                e,
                ArchError::Conv {
                    source: ConvShapeError::Groups { .. },
                    ..
                }
            ),
            "{e}"
        );
        let no_bias = Conv {
            bias: false,
            ..Conv::new(4, 3)
        };
        let e = b.conv("c", x, no_bias).unwrap_err();
        assert_eq!(e, ArchError::NoBiasOrBatchNorm { layer: "c".into() });
        let y = b.conv("c", x, Conv::new(4, 3).pad(1)).unwrap();
        assert!(matches!(
            b.conv("c", y, Conv::new(4, 3)),
            Err(ArchError::DuplicateName { .. })
        ));
        assert!(matches!(
            b.conv("a..b", y, Conv::new(4, 3)),
            Err(ArchError::BadName { .. })
        ));
        let z = b.conv("d", y, Conv::new(4, 3)).unwrap();
        let e = b.add("sum", y, z, Activation::Relu).unwrap_err();
        assert_eq!(
            e,
            ArchError::Shape {
                layer: "sum".into(),
                expected: [4, 8, 8],
                actual: [4, 6, 6]
            }
        );
        assert!(matches!(
            b.max_pool("p", y, 2, 2, 2),
            Err(ArchError::Pool { .. })
        ));
        assert!(matches!(
            b.max_pool("p", Value(99), 2, 2, 0),
            Err(ArchError::UnknownValue { .. })
        ));
        // `d` is never read: the network is rejected, naming it.
        let mut b2 = b.clone();
        let logits = b2.linear("fc", y, Linear::new(4)).unwrap();
        assert_eq!(
            b2.finish(logits),
            Err(ArchError::Unused { layer: "d".into() })
        );
        let logits = b.linear("fc", z, Linear::new(5)).unwrap();
        assert!(matches!(b.finish(logits), Err(ArchError::Logits { .. })));
    }

    #[test]
    fn resnet20_structure() {
        let arch = Arch::resnet20();
        let weighted = arch.weighted_layers().count();
        // 1 stem + 9 blocks × 2 convs + 2 projections + fc.
        assert_eq!(weighted, 1 + 18 + 2 + 1);
        assert_eq!(
            arch.layers
                .iter()
                .filter(|l| l.kind == LayerKind::Add)
                .count(),
            9
        );
        let shapes: BTreeMap<String, Vec<usize>> = arch.state_dict_shapes().into_iter().collect();
        assert_eq!(shapes["layer2.0.conv1.weight"], [32, 16, 3, 3]);
        assert_eq!(shapes["layer2.0.downsample.0.weight"], [32, 16, 1, 1]);
        assert_eq!(shapes["layer3.2.activation_quantizer.quantizer.x_max"], [1]);
        assert_eq!(
            shapes["layer1.0.conv2.weight_quantizer.quantizer.gamma_2"],
            [16]
        );
        assert_eq!(shapes["fc.weight"], [10, 64]);
        assert!(
            !shapes.contains_key("layer1.0.downsample.0.weight"),
            "identity shortcut"
        );
        assert!(!shapes.contains_key("fc.activation_quantizer.quantizer.x_max"));
        let conv2 = arch
            .layers
            .iter()
            .find(|l| l.name == "layer3.2.conv2")
            .unwrap();
        assert_eq!(conv2.output, [64, 8, 8]);
        assert!(conv2.activation == Activation::None && conv2.act_quant);
        // He et al.'s 0.27 M weights and 41 M MACs per image: stem 432 weights, stages 13,824,
        // 51,200 and 204,800 (projections included), fc 640.
        let params: usize = arch
            .weighted_layers()
            .map(|l| l.weight_shape().iter().product::<usize>())
            .sum();
        assert_eq!(params, 270_896);
        let macs: u64 = arch.layers.iter().map(LayerSpec::macs).sum();
        assert_eq!(macs, 442_368 + 14_155_776 + 2 * 13_107_200 + 640);
        // A block's add quantizer is weighted by the next block's conv1 (the add after it reads
        // it too, but multiplies nothing); conv2's, which only feeds the add, by the same conv1.
        let q = arch.quantizers();
        let add = q
            .iter()
            .find(|q| q.prefix == "layer1.0.activation_quantizer.quantizer")
            .unwrap();
        let conv1 = arch
            .layers
            .iter()
            .find(|l| l.name == "layer1.1.conv1")
            .unwrap();
        assert_eq!(
            add.mac_ratio,
            (conv1.macs() as f64 / arch.max_macs() as f64) as f32
        );
        let conv2 = q
            .iter()
            .find(|q| q.prefix == "layer1.0.conv2.activation_quantizer.quantizer")
            .unwrap();
        assert_eq!(conv2.mac_ratio, add.mac_ratio);
        let ids: BTreeSet<u32> = q.iter().map(|q| q.id).collect();
        assert_eq!(ids.len(), q.len(), "noise ids are unique");
    }

    #[test]
    fn resnet18_torchvision_layout() {
        let arch = Arch::resnet18([3, 224, 224], 1000).unwrap();
        let shapes: BTreeMap<String, Vec<usize>> = arch.state_dict_shapes().into_iter().collect();
        assert_eq!(shapes["conv1.weight"], [64, 3, 7, 7]);
        assert_eq!(shapes["layer4.1.conv2.weight"], [512, 512, 3, 3]);
        assert_eq!(shapes["fc.weight"], [1000, 512]);
        let pool = arch.layers.iter().find(|l| l.name == "maxpool").unwrap();
        assert_eq!((pool.input, pool.output), ([64, 112, 112], [64, 56, 56]));
        // torchvision's ResNet-18: 1.814 G MACs (fc included), 11.69 M parameters with BN.
        let macs: u64 = arch.layers.iter().map(LayerSpec::macs).sum();
        assert_eq!(macs, 1_814_073_344);
        let params = arch.parameter_count();
        assert_eq!(params, 11_689_512);
    }

    #[test]
    fn mobilenetv2_torchvision_layout() {
        let arch = Arch::mobilenetv2(&MobileNetV2Config::imagenet()).unwrap();
        let shapes: BTreeMap<String, Vec<usize>> = arch.state_dict_shapes().into_iter().collect();
        // Without expansion (features.1): conv.0 is the depthwise block, conv.1 the projection.
        assert_eq!(shapes["features.0.0.weight"], [32, 3, 3, 3]);
        assert_eq!(shapes["features.1.conv.0.0.weight"], [32, 1, 3, 3]);
        assert_eq!(shapes["features.1.conv.1.weight"], [16, 32, 1, 1]);
        assert!(!shapes.contains_key("features.1.conv.2.weight"));
        // With expansion: conv.0.0 expands, conv.1.0 is depthwise, conv.2 projects.
        assert_eq!(shapes["features.2.conv.0.0.weight"], [96, 16, 1, 1]);
        assert_eq!(shapes["features.2.conv.1.0.weight"], [96, 1, 3, 3]);
        assert_eq!(shapes["features.2.conv.2.weight"], [24, 96, 1, 1]);
        assert_eq!(shapes["features.2.conv.2.gamma"], [24]);
        assert_eq!(shapes["features.17.conv.2.weight"], [320, 960, 1, 1]);
        assert_eq!(shapes["features.18.0.weight"], [1280, 320, 1, 1]);
        assert_eq!(shapes["classifier.1.weight"], [1000, 1280]);
        assert_eq!(shapes["classifier.1.bias"], [1000]);
        // The identity add of a block is quantized under the block's name.
        assert_eq!(
            shapes["features.3.activation_quantizer.quantizer.x_max"],
            [1]
        );
        assert!(!shapes.contains_key("features.2.activation_quantizer.quantizer.x_max"));
        let adds: Vec<&str> = arch
            .layers
            .iter()
            .filter(|l| l.kind == LayerKind::Add)
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(
            adds,
            [
                "features.3",
                "features.5",
                "features.6",
                "features.8",
                "features.9",
                "features.10",
                "features.12",
                "features.13",
                "features.15",
                "features.16"
            ]
        );
        let layer = |n: &str| arch.layers.iter().find(|l| l.name == n).unwrap();
        for (name, activation) in [
            ("features.0.0", Activation::Relu6),
            ("features.2.conv.0.0", Activation::Relu6),
            ("features.2.conv.1.0", Activation::Relu6),
            ("features.2.conv.2", Activation::None),
            ("features.3", Activation::None),
            ("features.18.0", Activation::Relu6),
            ("classifier.1", Activation::None),
        ] {
            assert_eq!(layer(name).activation, activation, "{name}");
        }
        let dw = layer("features.4.conv.1.0");
        assert_eq!(
            dw.kind,
            LayerKind::Conv {
                c_in: 144,
                c_out: 144,
                kernel: [3, 3],
                stride: [2, 2],
                pad: [1, 1],
                groups: 144
            }
        );
        assert_eq!((dw.input, dw.output), ([144, 56, 56], [144, 28, 28]));
        assert_eq!(layer("features.18.0").output, [1280, 7, 7]);
        // torchvision's mobilenet_v2: 3,504,872 parameters (BN weight and bias as γ and β) and
        // 300.8 M multiply-adds (conv and linear layers).
        let params = arch.parameter_count();
        assert_eq!(params, 3_504_872);
        let macs: u64 = arch.layers.iter().map(LayerSpec::macs).sum();
        assert_eq!(macs, 300_774_272);
    }

    #[test]
    fn mobilenetv2_cifar_preset() {
        let arch = Arch::mobilenetv2_cifar();
        assert_eq!((arch.input, arch.classes), ([3, 32, 32], 10));
        let layer = |n: &str| arch.layers.iter().find(|l| l.name == n).unwrap();
        assert_eq!(layer("features.0.0").output, [32, 32, 32]);
        assert_eq!(layer("features.3").output, [24, 32, 32]);
        assert_eq!(layer("features.18.0").output, [1280, 4, 4]);
        assert_eq!(arch.weighted_layers().count(), 1 + 2 + 16 * 3 + 1 + 1);
        // torchvision's parameter count with a 10-class classifier; the MACs of the stride-8
        // network (ImageNet's 300.8 M at 224×224 are for a stride-32 one).
        let params = arch.parameter_count();
        assert_eq!(params, 2_236_682);
        let macs: u64 = arch.layers.iter().map(LayerSpec::macs).sum();
        assert_eq!(macs, 87_976_448);
    }

    #[test]
    fn mobilenetv2_width_multiplier() {
        let mut cfg = MobileNetV2Config::cifar10();
        cfg.width = 0.5;
        let arch = Arch::mobilenetv2(&cfg).unwrap();
        let shapes: BTreeMap<String, Vec<usize>> = arch.state_dict_shapes().into_iter().collect();
        // torchvision's _make_divisible: 32·0.5 = 16, 16·0.5 = 8, 24·0.5 = 12 → 16, last 1280.
        assert_eq!(shapes["features.0.0.weight"], [16, 3, 3, 3]);
        assert_eq!(shapes["features.1.conv.1.weight"], [8, 16, 1, 1]);
        assert_eq!(shapes["features.2.conv.2.weight"], [16, 48, 1, 1]);
        assert_eq!(shapes["features.18.0.weight"], [1280, 160, 1, 1]);
        for width in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e6] {
            cfg.width = width;
            assert!(
                matches!(Arch::mobilenetv2(&cfg), Err(ArchError::Parameter { .. })),
                "width {width}"
            );
        }
    }

    #[test]
    fn inverted_residual_errors_leave_the_builder_unchanged() {
        let mut b = ArchBuilder::new("mb", [3, 8, 8], 4);
        let x = b.input();
        let x = b
            .conv("stem", x, Conv::new(16, 3).pad(1).batch_norm().relu6())
            .unwrap();
        let before = b.layers.len();
        assert_eq!(
            b.inverted_residual("features.1", x, 0, 1, 6),
            Err(ArchError::Zero {
                layer: "features.1".into(),
                what: "output channels"
            })
        );
        assert_eq!(
            b.inverted_residual("features.1", x, 16, 1, 0),
            Err(ArchError::Zero {
                layer: "features.1".into(),
                what: "the expansion factor"
            })
        );
        // The expansion conv is valid, the depthwise one is not (stride 0): nothing is kept.
        let e = b.inverted_residual("features.1", x, 16, 0, 6).unwrap_err();
        assert!(
            matches!(&e, ArchError::Conv { layer, source: ConvShapeError::Zero { .. }, .. }
                if layer == "features.1.conv.1.0"),
            "{e}"
        );
        let e = b
            .inverted_residual("features.1", x, 16, 1, usize::MAX)
            .unwrap_err();
        assert!(matches!(e, ArchError::Parameter { .. }), "{e}");
        assert!(matches!(
            b.inverted_residual("features.1", Value(99), 16, 1, 6),
            Err(ArchError::UnknownValue { .. })
        ));
        assert_eq!(b.layers.len(), before, "a failed block adds no layer");
        // A valid block: stride 1 and equal channels add the identity; otherwise no add.
        let y = b.inverted_residual("features.1", x, 16, 1, 6).unwrap();
        assert_eq!(b.layers.len(), before + 4);
        assert_eq!(b.layers.last().unwrap().kind, LayerKind::Add);
        let z = b.inverted_residual("features.2", y, 24, 2, 1).unwrap();
        assert_eq!(b.layers.len(), before + 6);
        assert_eq!(b.shape(z), Some([24, 4, 4]));
        let names: Vec<&str> = b.layers[before..].iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "features.1.conv.0.0",
                "features.1.conv.1.0",
                "features.1.conv.2",
                "features.1",
                "features.2.conv.0.0",
                "features.2.conv.1"
            ]
        );
        let logits = b.linear("fc", z, Linear::new(4)).unwrap();
        b.finish(logits).unwrap();
    }

    #[test]
    fn bop_inputs_follow_the_graph() {
        let arch = Arch::resnet20();
        let mut kept = BTreeMap::new();
        kept.insert("layer1.2.conv2".to_string(), vec![false; 16]);
        kept.insert("conv1".to_string(), (0..16).map(|c| c < 4).collect());
        let inputs = arch.bop_inputs(&kept);
        let find = |n: &str| inputs.iter().find(|b| b.layer == n).unwrap();
        assert_eq!(find("conv1").quantizer, None);
        assert_eq!(
            find("layer1.0.conv1").quantizer.as_deref(),
            Some("conv1.activation_quantizer.quantizer")
        );
        assert_eq!(find("layer1.0.conv1").keep(), 0.25);
        // The sum keeps a channel when either operand does: the identity path keeps all.
        assert_eq!(
            find("layer2.0.conv1").quantizer.as_deref(),
            Some("layer1.2.activation_quantizer.quantizer")
        );
        assert_eq!(find("layer2.0.conv1").keep(), 1.0);
        assert_eq!(
            find("fc").quantizer.as_deref(),
            Some("layer3.2.activation_quantizer.quantizer")
        );
        // On a chain it is spec §6.2: the previous weighted layer's activation and keep ratio.
        let lenet = Arch::lenet5();
        let mut kept = BTreeMap::new();
        kept.insert(
            "features.2".to_string(),
            (0..64).map(|c| c % 4 == 0).collect(),
        );
        let inputs = lenet.bop_inputs(&kept);
        assert_eq!(
            inputs[2].quantizer.as_deref(),
            Some("features.2.activation_quantizer.quantizer")
        );
        assert_eq!(
            inputs[2].live.len(),
            64,
            "the linear layer reads 64 channels of 4×4"
        );
        assert_eq!(inputs[2].keep(), 0.25);
    }
}
