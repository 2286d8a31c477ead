//! Fixed-gate fine-tuning (spec §7.4): after Bayesian Bits training every quantizer keeps its
//! test-time bit width and pruning mask, BN is folded statically into plain conv/linear layers
//! with a bias, and only the weights, biases and ranges train on.
//!
//! The fine-tuning network keeps every quantizer tensor (`x_max`, `x_min`, the gate logits) under
//! its `state_dict` name: the frozen logits are what fix each quantizer's bits and mask, so a
//! fine-tuning checkpoint still says which bit widths and channels were learned.

use super::bn::{fold_bias, fold_weight, BnParams};
use super::quant::{bit_width, test_gate};
use super::{Arch, Params, QuantizerInfo};
use std::collections::BTreeMap;

/// A tensor that building the fixed-gate network needs and the parameters lack.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the parameters lack {0}")]
pub struct MissingTensor(pub String);

/// The fixed quantizer of one tensor: its test-time bit width and, on weights with pruning
/// gates, the test-time 0/1 mask per output channel.
#[derive(Clone, Debug, PartialEq)]
pub struct FixedGates {
    /// Bit width b: 2, 4, 8, 16 or 32.
    pub bits: u32,
    /// One 0/1 value per output channel; `None` without pruning gates.
    pub mask: Option<Vec<f32>>,
}

/// `arch` with every batch norm folded away: a layer with BN becomes a plain layer with a bias.
pub fn fixed_gate_arch(arch: &Arch) -> Arch {
    let mut fixed = arch.clone();
    for l in fixed.layers.iter_mut().filter(|l| l.batch_norm) {
        l.batch_norm = false;
        l.bias = true;
    }
    fixed
}

/// The parameters of [`fixed_gate_arch`] from trained Bayesian Bits parameters of `arch`:
/// per BN layer `W ← W·γ/σ_r` and `bias = β − γ·μ_r/σ_r` (the eval-mode fold of spec §5.2, so
/// the network computes what it computed in evaluation), BN tensors dropped, the rest kept.
/// Fails with the name of the first tensor of `arch` that `params` lacks.
pub fn fixed_gate_params(arch: &Arch, params: &Params) -> Result<Params, MissingTensor> {
    let get = |name: String| params.get(&name).ok_or(MissingTensor(name));
    let mut fixed = params.clone();
    for l in arch.layers.iter().filter(|l| l.batch_norm) {
        let name = &l.name;
        let [w, gamma, beta, mean, var] =
            ["weight", "gamma", "beta", "running_mean", "running_var"]
                .map(|t| get(format!("{name}.{t}")));
        let (w, gamma, beta, mean, var) = (w?, gamma?, beta?, mean?, var?);
        let bn = BnParams {
            gamma,
            beta,
            running_mean: mean,
            running_var: var,
        };
        fixed.insert(format!("{name}.weight"), fold_weight(w, gamma, var));
        fixed.insert(format!("{name}.bias"), fold_bias(&bn));
        for t in ["gamma", "beta", "running_mean", "running_var"] {
            fixed.remove(&format!("{name}.{t}"));
        }
    }
    Ok(fixed)
}

/// The fixed quantizer of every quantizer of `arch`, from the test-time gates of its logits in
/// `params` (spec §2.4, §2.5). Fails with the name of a missing logit tensor.
pub fn fixed_gates(
    arch: &Arch,
    params: &Params,
) -> Result<BTreeMap<String, FixedGates>, MissingTensor> {
    arch.quantizers()
        .iter()
        .map(|q| Ok((q.prefix.clone(), fixed_gates_of(q, params)?)))
        .collect()
}

/// The fixed quantizer of `q` from the test-time gates of its logits in `params`.
pub fn fixed_gates_of(q: &QuantizerInfo, params: &Params) -> Result<FixedGates, MissingTensor> {
    let logit = |g: &str| -> Result<&[f32], MissingTensor> {
        let name = format!("{}.{g}", q.prefix);
        match params.get(&name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(MissingTensor(name)),
        }
    };
    let mut chain = [0.0; 4];
    for (c, g) in chain
        .iter_mut()
        .zip(["gamma_4", "gamma_8", "gamma_16", "gamma_32"])
    {
        *c = logit(g)?[0];
    }
    let mask = match q.prune_channels {
        0 => None,
        _ => Some(logit("gamma_2")?.iter().map(|&l| test_gate(l)).collect()),
    };
    Ok(FixedGates {
        bits: bit_width(chain),
        mask,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{init_params, InitConfig};

    #[test]
    fn folding_drops_bn_and_names_what_is_missing() {
        let arch = Arch::vgg7();
        let init = InitConfig {
            chain_logits: [6.0, 6.0, -6.0, -6.0],
            prune_logit: 6.0,
            seed: 1,
        };
        let mut params = init_params(&arch, &init);
        let fixed_arch = fixed_gate_arch(&arch);
        let fixed = fixed_gate_params(&arch, &params).unwrap();
        // Exactly the folded network's state_dict: BN tensors gone, a bias per folded layer.
        let mut names: Vec<String> = fixed_arch
            .state_dict_shapes()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        assert_eq!(fixed.keys().cloned().collect::<Vec<_>>(), names);
        assert!(fixed.contains_key("features.0.bias"));
        assert!(!fixed.contains_key("features.0.running_var"));
        let gates = fixed_gates(&fixed_arch, &fixed).unwrap();
        assert!(gates.values().all(|g| g.bits == 8));
        params.remove("features.0.running_var");
        assert_eq!(
            fixed_gate_params(&arch, &params).unwrap_err().to_string(),
            "the parameters lack features.0.running_var"
        );
    }
}
