//! A model's initial parameters (spec §2.7): PyTorch's default weight initialisation drawn from
//! the crate's counter-based generator, and the initial gate logits.

use super::quant::gate_noise;
use super::{Arch, Params};

/// Initial gate logits and seed of a model (spec §2.7).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InitConfig {
    /// ℓ4, ℓ8, ℓ16, ℓ32 of every quantizer.
    pub chain_logits: [f32; 4],
    /// ℓ2 of every prunable output channel.
    pub prune_logit: f32,
    /// Seed of the weight initialisation.
    pub seed: u64,
}

/// Stream of the Philox generator reserved for weight initialisation (gate noise uses
/// `(step, quantizer)` counters below it).
const INIT_STREAM: u32 = u32::MAX;

/// PyTorch default initialisation: weights and biases uniform in ±1/√fan_in, BN γ = 1, β = 0,
/// running statistics 0/1, logits from `cfg`, ranges as the unset placeholders ±10.
pub fn init_params(arch: &Arch, cfg: &InitConfig) -> Params {
    let mut params = Params::new();
    let tensors = arch
        .layers
        .iter()
        .flat_map(|l| l.state_dict_shapes().into_iter().map(move |t| (l, t)));
    // The tensor's index in the `state_dict` is its noise stream.
    for (t, (layer, (name, shape))) in tensors.enumerate() {
        let len: usize = shape.iter().product();
        let leaf = name.rsplit('.').next().unwrap_or_default().to_string();
        let value = |v: f32| vec![v; len];
        let data = match leaf.as_str() {
            "weight" | "bias" => {
                let bound = 1.0 / (layer.fan_in() as f32).sqrt();
                (0..len)
                    .map(|i| {
                        (2.0 * gate_noise(cfg.seed, INIT_STREAM, t as u32, i as u32) - 1.0) * bound
                    })
                    .collect()
            }
            "gamma" | "running_var" => value(1.0),
            "beta" | "running_mean" => value(0.0),
            "x_min" => value(-10.0),
            "x_max" => value(10.0),
            "gamma_2" => value(cfg.prune_logit),
            "gamma_4" => value(cfg.chain_logits[0]),
            "gamma_8" => value(cfg.chain_logits[1]),
            "gamma_16" => value(cfg.chain_logits[2]),
            _ => value(cfg.chain_logits[3]),
        };
        params.insert(name, data);
    }
    params
}
