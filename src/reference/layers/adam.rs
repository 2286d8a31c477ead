//! Adam with PyTorch's defaults and semantics (spec §4.2): no weight decay, no AMSGrad, ε added
//! after the bias correction.

pub use crate::spec::optim::{ADAM_BETA1, ADAM_BETA2, ADAM_EPS};

/// Adam state of one parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    /// First moment `m`, one per parameter.
    pub m: Vec<f32>,
    /// Second moment `v`, one per parameter.
    pub v: Vec<f32>,
    /// Number of steps taken so far (`t` of the last step).
    pub step: u32,
}

impl AdamState {
    /// Zero moments for `len` parameters, no step taken.
    pub fn new(len: usize) -> Self {
        Self {
            m: vec![0.0; len],
            v: vec![0.0; len],
            step: 0,
        }
    }

    /// One Adam step at learning rate `lr`, with `t = step + 1`:
    /// ```text
    /// m ← β1·m + (1−β1)·g        m̂ = m / (1 − β1^t)
    /// v ← β2·v + (1−β2)·g²       v̂ = v / (1 − β2^t)
    /// p ← p − lr · m̂ / (sqrt(v̂) + ε)
    /// ```
    /// As in PyTorch the constants are `f64` scalars: the bias corrections are computed in `f64`,
    /// everything else in `f32` with the constants rounded to `f32`.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        assert_eq!(
            params.len(),
            self.m.len(),
            "adam: params have the wrong length"
        );
        assert_eq!(
            grads.len(),
            self.m.len(),
            "adam: grads have the wrong length"
        );
        self.step += 1;
        let t = i32::try_from(self.step).expect("adam: step exceeds i32");
        let (b1, b2, eps) = (ADAM_BETA1 as f32, ADAM_BETA2 as f32, ADAM_EPS as f32);
        let (one_m_b1, one_m_b2) = ((1.0 - ADAM_BETA1) as f32, (1.0 - ADAM_BETA2) as f32);
        let bc1 = (1.0 - ADAM_BETA1.powi(t)) as f32;
        let bc2 = (1.0 - ADAM_BETA2.powi(t)) as f32;
        for (i, (p, &g)) in params.iter_mut().zip(grads).enumerate() {
            self.m[i] = b1 * self.m[i] + one_m_b1 * g;
            self.v[i] = b2 * self.v[i] + one_m_b2 * g * g;
            let m_hat = self.m[i] / bc1;
            let v_hat = self.v[i] / bc2;
            *p -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    }
}
