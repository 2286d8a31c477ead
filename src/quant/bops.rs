//! Bit-operation accounting (spec §6).

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
