//! SGD with momentum, Nesterov momentum and weight decay, with PyTorch's semantics
//! (`torch.optim.SGD`, dampening 0): the weights optimizer of the ImageNet recipe and of
//! fixed-gate fine-tuning (spec §7.4, §7.5).

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

/// SGD state of one parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdState {
    /// Momentum buffer, one per parameter (zero until the first step with μ > 0).
    pub buf: Vec<f32>,
    /// Number of steps taken so far.
    pub step: u32,
}

impl SgdState {
    /// A zero buffer for `len` parameters, no step taken.
    pub fn new(len: usize) -> Self {
        Self {
            buf: vec![0.0; len],
            step: 0,
        }
    }

    /// One SGD step at learning rate `lr` (`torch.optim.SGD`, dampening 0, not maximising):
    /// ```text
    /// d ← g + λ·p                      (only when λ ≠ 0)
    /// buf ← d on the first step, else μ·buf + d      (only when μ ≠ 0; then d ← buf,
    /// d ← d + μ·buf with Nesterov)
    /// p ← p − lr·d
    /// ```
    /// Every operation is an `f32` operation with μ and λ rounded to `f32`, each rounded
    /// separately (no fused multiply-add).
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], lr: f32, cfg: &SgdConfig) {
        assert_eq!(
            params.len(),
            self.buf.len(),
            "sgd: params have the wrong length"
        );
        assert_eq!(
            grads.len(),
            self.buf.len(),
            "sgd: grads have the wrong length"
        );
        let (mu, wd) = (cfg.momentum as f32, cfg.weight_decay as f32);
        let first = self.step == 0;
        self.step += 1;
        for ((p, &g), buf) in params.iter_mut().zip(grads).zip(&mut self.buf) {
            let mut d = g;
            if wd != 0.0 {
                d += wd * *p;
            }
            if mu != 0.0 {
                *buf = if first { d } else { mu * *buf + d };
                d = if cfg.nesterov { d + mu * *buf } else { *buf };
            }
            *p -= lr * d;
        }
    }
}
