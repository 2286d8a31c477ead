//! Optimizer constants and settings shared by the GPU optimizer kernels and the CPU reference:
//! Adam with PyTorch's defaults (spec §4.2) and SGD with momentum, Nesterov and weight decay.

/// β1, the decay of the first moment.
pub const ADAM_BETA1: f64 = 0.9;
/// β2, the decay of the second moment.
pub const ADAM_BETA2: f64 = 0.999;
/// ε, added to `sqrt(v̂)`.
pub const ADAM_EPS: f64 = 1e-8;

/// Hyper-parameters of SGD. As in PyTorch they are `f64` scalars, rounded to `f32` where they
/// meet the `f32` tensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Momentum μ (0: plain SGD, no buffer).
    pub momentum: f64,
    /// Nesterov momentum (needs μ > 0).
    pub nesterov: bool,
    /// L2 weight decay λ added to the gradient (0: none).
    pub weight_decay: f64,
}

impl SgdConfig {
    /// Nesterov momentum 0.9 without weight decay: the paper's ImageNet weights optimizer.
    pub const NESTEROV: SgdConfig = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.0,
    };

    /// Why PyTorch would refuse these values, if it would: μ and λ must be finite and
    /// non-negative, and Nesterov needs μ > 0.
    pub fn problem(&self) -> Option<String> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(self.momentum) {
            Some(format!(
                "SGD momentum {} is not finite and ≥ 0",
                self.momentum
            ))
        } else if !ok(self.weight_decay) {
            Some(format!(
                "SGD weight decay {} is not finite and ≥ 0",
                self.weight_decay
            ))
        } else if self.nesterov && self.momentum == 0.0 {
            Some("Nesterov momentum needs a momentum > 0".into())
        } else {
            None
        }
    }
}
