//! Static descriptions of the two models (spec §5.3, §5.4): layers, shapes, quantizers, MACs,
//! and the names of their tensors in the official PyTorch implementation's `state_dict`.

use crate::spec::Conv2dShape;

/// What one layer computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// Convolution, stride 1, square kernel `k`, zero padding `pad`.
    Conv {
        /// Input channels.
        c_in: usize,
        /// Output channels.
        c_out: usize,
        /// Kernel size.
        k: usize,
        /// Zero padding.
        pad: usize,
    },
    /// Fully connected layer on the (C, H, W)-flattened input.
    Linear {
        /// Input features.
        d_in: usize,
        /// Output features.
        d_out: usize,
    },
    /// 2×2 max-pool, stride 2.
    MaxPool,
}

/// One layer of a model, as the official code builds it.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    /// `state_dict` prefix, e.g. `features.0` or `classifier.1`.
    pub name: &'static str,
    /// Operation.
    pub kind: LayerKind,
    /// Input shape (C, H, W) for one sample; linear layers use (d_in, 1, 1).
    pub input: [usize; 3],
    /// Output shape (C, H, W) for one sample.
    pub output: [usize; 3],
    /// Folded batch-norm (spec §5.2); such layers have no bias.
    pub batch_norm: bool,
    /// Full-precision bias.
    pub bias: bool,
    /// Pruning gates on the weight's output channels.
    pub prune: bool,
    /// ReLU followed by an unsigned activation quantizer; false for the logit layer.
    pub relu_quant: bool,
}

impl LayerSpec {
    /// Whether the layer has weights (conv or linear).
    pub fn is_weighted(&self) -> bool {
        !matches!(self.kind, LayerKind::MaxPool)
    }

    /// Output channels (conv) or features (linear); 0 for pooling.
    pub fn out_channels(&self) -> usize {
        match self.kind {
            LayerKind::Conv { c_out, .. } => c_out,
            LayerKind::Linear { d_out, .. } => d_out,
            LayerKind::MaxPool => 0,
        }
    }

    /// PyTorch weight shape: OIHW for conv, [out, in] for linear.
    pub fn weight_shape(&self) -> Vec<usize> {
        match self.kind {
            LayerKind::Conv { c_in, c_out, k, .. } => vec![c_out, c_in, k, k],
            LayerKind::Linear { d_in, d_out } => vec![d_out, d_in],
            LayerKind::MaxPool => vec![],
        }
    }

    /// Fan-in of the weight (PyTorch's default initialisation bound is 1/√fan_in).
    pub fn fan_in(&self) -> usize {
        self.weight_shape().iter().skip(1).product()
    }

    /// The convolution's shape for a batch of `n` (`None` for linear and pooling layers).
    pub fn conv_shape(&self, n: usize) -> Option<Conv2dShape> {
        match self.kind {
            LayerKind::Conv {
                c_in,
                c_out,
                k,
                pad,
            } => Some(Conv2dShape::square(
                n,
                c_in,
                self.input[1],
                self.input[2],
                c_out,
                k,
                pad,
            )),
            _ => None,
        }
    }

    /// MACs for one sample, bias ignored (spec §6.1).
    pub fn macs(&self) -> u64 {
        let [c, h, w] = self.output;
        (c * h * w * self.fan_in()) as u64
    }
}

/// A model: input shape, classes and layers in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Arch {
    /// Model name.
    pub name: &'static str,
    /// Input shape (C, H, W).
    pub input: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Layers in forward order (flatten before the first linear layer is implicit).
    pub layers: Vec<LayerSpec>,
}

/// Parameters of the quantizer sub-module in the official `state_dict`, in registration order.
pub const QUANTIZER_TENSORS: [&str; 6] = [
    "x_min", "x_max", "gamma_4", "gamma_8", "gamma_16", "gamma_32",
];

struct Builder {
    shape: [usize; 3],
    layers: Vec<LayerSpec>,
}

impl Builder {
    fn push(&mut self, name: &'static str, kind: LayerKind, batch_norm: bool, last: bool) {
        let input = self.shape;
        let output = match kind {
            LayerKind::Conv { c_out, k, pad, .. } => [
                c_out,
                input[1] + 2 * pad + 1 - k,
                input[2] + 2 * pad + 1 - k,
            ],
            LayerKind::Linear { d_out, .. } => [d_out, 1, 1],
            LayerKind::MaxPool => [input[0], input[1] / 2, input[2] / 2],
        };
        let weighted = !matches!(kind, LayerKind::MaxPool);
        self.layers.push(LayerSpec {
            name,
            kind,
            input,
            output,
            batch_norm,
            bias: weighted && !batch_norm,
            prune: weighted && !last,
            relu_quant: weighted && !last,
        });
        self.shape = output;
    }
}

impl Arch {
    /// LeNet-5 for 1×28×28 inputs (spec §5.3).
    pub fn lenet5() -> Self {
        let mut b = Builder {
            shape: [1, 28, 28],
            layers: vec![],
        };
        b.push(
            "features.0",
            LayerKind::Conv {
                c_in: 1,
                c_out: 32,
                k: 5,
                pad: 0,
            },
            false,
            false,
        );
        b.push("features.1", LayerKind::MaxPool, false, false);
        b.push(
            "features.2",
            LayerKind::Conv {
                c_in: 32,
                c_out: 64,
                k: 5,
                pad: 0,
            },
            false,
            false,
        );
        b.push("features.3", LayerKind::MaxPool, false, false);
        b.push(
            "classifier.0",
            LayerKind::Linear {
                d_in: 1024,
                d_out: 512,
            },
            false,
            false,
        );
        b.push(
            "classifier.1",
            LayerKind::Linear {
                d_in: 512,
                d_out: 10,
            },
            false,
            true,
        );
        Self {
            name: "LeNet-5",
            input: [1, 28, 28],
            classes: 10,
            layers: b.layers,
        }
    }

    /// VGG-7 for 3×32×32 CIFAR-10 inputs (spec §5.4).
    pub fn vgg7() -> Self {
        let mut b = Builder {
            shape: [3, 32, 32],
            layers: vec![],
        };
        let conv = |c_in, c_out| LayerKind::Conv {
            c_in,
            c_out,
            k: 3,
            pad: 1,
        };
        b.push("features.0", conv(3, 128), true, false);
        b.push("features.1", conv(128, 128), true, false);
        b.push("features.2", LayerKind::MaxPool, false, false);
        b.push("features.3", conv(128, 256), true, false);
        b.push("features.4", conv(256, 256), true, false);
        b.push("features.5", LayerKind::MaxPool, false, false);
        b.push("features.6", conv(256, 512), true, false);
        b.push("features.7", conv(512, 512), true, false);
        b.push("features.8", LayerKind::MaxPool, false, false);
        b.push(
            "classifier.0",
            LayerKind::Linear {
                d_in: 8192,
                d_out: 1024,
            },
            true,
            false,
        );
        b.push(
            "classifier.1",
            LayerKind::Linear {
                d_in: 1024,
                d_out: 10,
            },
            false,
            true,
        );
        Self {
            name: "VGG-7",
            input: [3, 32, 32],
            classes: 10,
            layers: b.layers,
        }
    }

    /// The layers with weights, in order.
    pub fn weighted_layers(&self) -> impl Iterator<Item = &LayerSpec> {
        self.layers.iter().filter(|l| l.is_weighted())
    }

    /// The largest per-layer MAC count (`max_macs` of the regulariser).
    pub fn max_macs(&self) -> u64 {
        self.weighted_layers()
            .map(LayerSpec::macs)
            .max()
            .unwrap_or(1)
    }

    /// Every tensor of the official `state_dict` with its PyTorch shape.
    pub fn state_dict_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for l in self.weighted_layers() {
            let c = l.out_channels();
            out.push((format!("{}.weight", l.name), l.weight_shape()));
            if l.bias {
                out.push((format!("{}.bias", l.name), vec![c]));
            }
            if l.batch_norm {
                for t in ["running_mean", "running_var", "gamma", "beta"] {
                    out.push((format!("{}.{t}", l.name), vec![c]));
                }
            }
            let mut quantizers = vec!["weight_quantizer"];
            if l.relu_quant {
                quantizers.push("activation_quantizer");
            }
            for q in quantizers {
                for t in QUANTIZER_TENSORS {
                    out.push((format!("{}.{q}.quantizer.{t}", l.name), vec![1]));
                }
                if q == "weight_quantizer" && l.prune {
                    out.push((format!("{}.{q}.quantizer.gamma_2", l.name), vec![c]));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
