//! Bit-operation accounting (spec §6).

use super::QuantizerState;
use crate::spec::Arch;
use crate::{Error, Result};
use std::collections::BTreeMap;

/// Relative BOPs in percent of `arch` with the test-time bit widths and pruning gates of its
/// quantizers (`states`, keyed by `state_dict` prefix), counted on the graph as
/// [`Arch::bop_inputs`] describes; on a chain of layers this is spec §6.2.
pub fn graph_relative_bops(arch: &Arch, states: &BTreeMap<String, QuantizerState>) -> Result<f64> {
    let get = |prefix: &str| {
        states.get(prefix).ok_or_else(|| Error::InvalidArgument {
            op: "graph_relative_bops",
            msg: format!("{}: no state for quantizer {prefix}", arch.name),
        })
    };
    let mut kept = BTreeMap::new();
    for l in arch.weighted_layers() {
        if let Some(mask) = get(&l.weight_quantizer())?.kept_mask() {
            kept.insert(l.name.clone(), mask);
        }
    }
    let inputs = arch.bop_inputs(&kept);
    let (mut total, mut baseline) = (0.0, 0.0);
    for (l, input) in arch.weighted_layers().zip(&inputs) {
        let weight_bits = get(&l.weight_quantizer())?.bit_width();
        let input_bits = match &input.quantizer {
            Some(q) => get(q)?.bit_width(),
            None => 8,
        };
        let keep_out = match kept.get(&l.name) {
            Some(m) => m.iter().filter(|&&k| k).count() as f64 / m.len() as f64,
            None => 1.0,
        };
        let macs = l.macs() as f64;
        total += macs * f64::from(weight_bits) * f64::from(input_bits) * keep_out * input.keep();
        baseline += macs * 1024.0;
    }
    Ok(100.0 * total / baseline)
}

/// One weight layer as the BOP metric sees it, in network order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerBops {
    /// MACs of the layer for one input sample (do not shrink with pruning).
    pub macs: u64,
    /// Test-time bit width of the layer's weights.
    pub weight_bits: u32,
    /// Bit width of the layer's input: the previous weight layer's activation quantizer, 8 for
    /// the network input.
    pub input_bits: u32,
    /// Fraction of output channels kept at test time (1 for the unpruned last layer).
    pub keep_out: f64,
}

/// Relative BOPs in percent of an FP32 network of the same architecture:
/// `100 · Σ MACs·b_w·b_a·keep(l)·keep(l−1) / Σ MACs·32·32`.
pub fn relative_bops(layers: &[LayerBops]) -> f64 {
    let baseline: f64 = layers.iter().map(|l| l.macs as f64 * 1024.0).sum();
    let mut keep_in = 1.0;
    let mut total = 0.0;
    for l in layers {
        total += l.macs as f64
            * f64::from(l.weight_bits)
            * f64::from(l.input_bits)
            * l.keep_out
            * keep_in;
        keep_in = l.keep_out;
    }
    100.0 * total / baseline
}

#[cfg(test)]
mod tests {
    use super::*;

    const LENET_MACS: [u64; 4] = [460_800, 3_276_800, 524_288, 5_120];
    const VGG_MACS: [u64; 8] = [
        3_538_944,
        150_994_944,
        75_497_472,
        150_994_944,
        75_497_472,
        150_994_944,
        8_388_608,
        10_240,
    ];

    fn layers(macs: &[u64], wb: &[u32], ab: &[u32], keep: &[f64]) -> Vec<LayerBops> {
        (0..macs.len())
            .map(|i| LayerBops {
                macs: macs[i],
                weight_bits: wb[i],
                input_bits: ab[i],
                keep_out: keep[i],
            })
            .collect()
    }

    #[test]
    fn tv6_relative_bops() {
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9 * b, "{a} vs {b}");
        close(
            relative_bops(&layers(&LENET_MACS, &[8; 4], &[8; 4], &[1.0; 4])),
            6.25,
        );
        close(
            relative_bops(&layers(
                &LENET_MACS,
                &[4, 2, 2, 8],
                &[8, 4, 2, 2],
                &[0.5, 0.25, 0.1, 1.0],
            )),
            0.245_117_890_568_754_52,
        );
        let mut ab = [32; 8];
        ab[0] = 8;
        close(
            relative_bops(&layers(&VGG_MACS, &[32; 8], &ab, &[1.0; 8])),
            99.569_064_410_905_07,
        );
        let mut ab = [4; 8];
        ab[0] = 8;
        close(
            relative_bops(&layers(&VGG_MACS, &[4; 8], &ab, &[1.0; 8])),
            1.571_477_824_772_811_2,
        );
    }
}
