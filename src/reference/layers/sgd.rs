//! SGD with momentum, Nesterov momentum and weight decay, with PyTorch's semantics
//! (`torch.optim.SGD`, dampening 0): the weights optimizer of the ImageNet recipe and of
//! fixed-gate fine-tuning (spec §7.4, §7.5).

pub use crate::spec::optim::SgdConfig;

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
