//! Learning-rate schedules: the paper's linear tail of the weights optimizer (spec §7.1,
//! [`LrSchedule`], the default) or a multistep decay of all three groups (spec §7.5,
//! [`MultiStep`]), chosen with [`Schedule`].
//!
//! The official code wraps the weights optimizer in a `LambdaLR` with
//! `factor(k) = 1 if k ≤ K else (E − k)/(E − K)`, `E` the number of epochs and
//! `K = int((2/3)·E)`, and steps it once at the end of every epoch, so 1-based epoch `e` trains
//! with `factor(e − 1)`. The gate and range optimizers keep a constant learning rate.
//!
//! ```
//! use bayesian_bits::train::schedule::LrSchedule;
//!
//! let s = LrSchedule::new(100);
//! assert_eq!(s.milestone(), 66);
//! assert_eq!(s.epoch_factor(67), 1.0);
//! assert!((s.epoch_factor(68) - 33.0 / 34.0).abs() < 1e-12);
//! assert!((s.epoch_factor(100) - 1.0 / 34.0).abs() < 1e-12);
//! ```

use crate::nn::LearningRates;
use crate::{Error, Result};

/// Which schedule a run uses; both are stepped once at the end of every epoch, so 1-based
/// epoch `e` trains with the rates after `e − 1` scheduler steps.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Schedule {
    /// The paper's MNIST / CIFAR-10 recipe: [`LrSchedule`] on the weights group only, gates
    /// and ranges constant.
    #[default]
    LinearTail,
    /// The ImageNet recipe: [`MultiStep`] on all three groups.
    MultiStep(MultiStep),
}

impl Schedule {
    /// The learning rates of 1-based epoch `epoch` of a run of `epochs` epochs, from the
    /// base rates `base` (computed in `f64`, as PyTorch does, then rounded to `f32`).
    pub fn learning_rates(&self, epochs: u32, epoch: u32, base: LearningRates) -> LearningRates {
        match self {
            Schedule::LinearTail => LearningRates {
                weights: LrSchedule::new(epochs).learning_rate(f64::from(base.weights), epoch)
                    as f32,
                ..base
            },
            Schedule::MultiStep(m) => {
                let f = |lr: f32| m.learning_rate(f64::from(lr), epoch) as f32;
                LearningRates {
                    weights: f(base.weights),
                    gates: f(base.gates),
                    scales: f(base.scales),
                }
            }
        }
    }
}

/// PyTorch's `MultiStepLR`: the learning rate is multiplied by `gamma` after each milestone
/// scheduler step, e.g. milestones 10, 20 and γ = 0.1 train epochs 1–10 at the base rate,
/// 11–20 at ×0.1 and 21 on at ×0.01.
///
/// ```
/// use bayesian_bits::train::schedule::MultiStep;
///
/// let m = MultiStep::new(vec![10, 20], 0.1).unwrap();
/// assert_eq!(m.learning_rate(3e-3, 10), 3e-3);
/// assert_eq!(m.learning_rate(3e-3, 11), 3e-3 * 0.1);
/// assert_eq!(m.learning_rate(3e-3, 30), 3e-3 * 0.1 * 0.1);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MultiStep {
    milestones: Vec<u32>,
    gamma: f64,
}

impl MultiStep {
    /// Decay by `gamma` at each of `milestones` (strictly increasing; none: a constant rate).
    /// `gamma` must be finite and positive.
    pub fn new(milestones: Vec<u32>, gamma: f64) -> Result<Self> {
        let msg = if !(gamma.is_finite() && gamma > 0.0) {
            format!("decay factor gamma = {gamma} must be finite and > 0")
        } else if milestones.windows(2).any(|w| w[0] >= w[1]) {
            format!("milestones {milestones:?} must be strictly increasing")
        } else {
            return Ok(Self { milestones, gamma });
        };
        Err(Error::InvalidArgument {
            op: "MultiStep::new",
            msg,
        })
    }

    /// The milestones.
    pub fn milestones(&self) -> &[u32] {
        &self.milestones
    }

    /// The decay factor γ.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// The learning rate during 1-based epoch `epoch` (after `epoch − 1` scheduler steps).
    ///
    /// PyTorch's chainable `MultiStepLR.step` multiplies the current rate by γ at each
    /// milestone; the same sequence of `f64` products is computed here, so the rates match
    /// its to the bit (`base·γ·γ`, not `base·γ²`).
    pub fn learning_rate(&self, base_lr: f64, epoch: u32) -> f64 {
        let k = epoch.saturating_sub(1);
        self.milestones
            .iter()
            .take_while(|&&m| m <= k)
            .fold(base_lr, |lr, _| lr * self.gamma)
    }
}

/// Linear decay of the weights optimizer's learning rate over the last third of training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LrSchedule {
    epochs: u32,
    milestone: u32,
}

impl LrSchedule {
    /// The schedule for a run of `epochs` epochs.
    ///
    /// `K` is computed as Python's `int((2/3) * epochs)` in double precision, so it matches the
    /// official code for every epoch count (MNIST 100 → 66, CIFAR-10 300 → 200).
    pub fn new(epochs: u32) -> Self {
        // Same float expression as the official code; truncation equals Python's int() here
        // because the value is non-negative.
        let milestone = (2.0f64 / 3.0 * f64::from(epochs)) as u32;
        Self { epochs, milestone }
    }

    /// The number of epochs `E`.
    pub fn epochs(&self) -> u32 {
        self.epochs
    }

    /// The last scheduler step `K` with the full learning rate.
    pub fn milestone(&self) -> u32 {
        self.milestone
    }

    /// `factor(k)` after `k` scheduler steps (= `k` completed epochs).
    ///
    /// Past the end of training (`k ≥ E`) the official lambda would be zero or negative; this
    /// returns 0 there so a misused schedule can never produce a negative learning rate.
    pub fn factor(&self, k: u32) -> f64 {
        if k <= self.milestone {
            1.0
        } else if k >= self.epochs {
            0.0
        } else {
            f64::from(self.epochs - k) / f64::from(self.epochs - self.milestone)
        }
    }

    /// The factor used while training 1-based epoch `epoch`: `factor(epoch − 1)`
    /// (epoch 0 is treated like epoch 1).
    pub fn epoch_factor(&self, epoch: u32) -> f64 {
        self.factor(epoch.saturating_sub(1))
    }

    /// The weights optimizer's learning rate during 1-based epoch `epoch`.
    pub fn learning_rate(&self, base_lr: f64, epoch: u32) -> f64 {
        base_lr * self.epoch_factor(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §10, TV7 (printed to 6 decimals).
    #[test]
    fn tv7() {
        let mnist = LrSchedule::new(100);
        assert_eq!(mnist.milestone(), 66);
        let expected = [
            (1, 1.0),
            (66, 1.0),
            (67, 1.0),
            (68, 0.970588),
            (100, 0.029412),
        ];
        for (e, f) in expected {
            assert!(
                (mnist.epoch_factor(e) - f).abs() < 5e-7,
                "epochs=100 e={e}: {} vs {f}",
                mnist.epoch_factor(e)
            );
        }
        let cifar = LrSchedule::new(300);
        assert_eq!(cifar.milestone(), 200);
        for (e, f) in [(1, 1.0), (200, 1.0), (201, 1.0), (202, 0.99), (300, 0.01)] {
            assert!(
                (cifar.epoch_factor(e) - f).abs() < 1e-12,
                "epochs=300 e={e}: {} vs {f}",
                cifar.epoch_factor(e)
            );
        }
    }

    #[test]
    fn exact_fractions_and_edges() {
        let s = LrSchedule::new(100);
        for e in 68..=100u32 {
            let expected = f64::from(101 - e) / 34.0;
            assert_eq!(s.epoch_factor(e), expected, "epoch {e}");
        }
        assert_eq!(s.epoch_factor(0), 1.0);
        assert_eq!(s.factor(100), 0.0);
        assert_eq!(s.factor(1000), 0.0);
        assert_eq!(s.learning_rate(1e-3, 100), 1e-3 / 34.0);
        // Degenerate runs never divide by zero and never go negative.
        for epochs in 0..10 {
            let s = LrSchedule::new(epochs);
            for k in 0..20 {
                let f = s.factor(k);
                assert!(
                    f.is_finite() && (0.0..=1.0).contains(&f),
                    "E={epochs} k={k}: {f}"
                );
            }
            for e in 1..=epochs {
                assert!(s.epoch_factor(e) > 0.0, "E={epochs} e={e}");
            }
        }
        assert_eq!(LrSchedule::new(3).milestone(), 2);
        assert_eq!(LrSchedule::new(1).milestone(), 0);
    }

    /// The ImageNet recipe (spec §7.5): ×0.1 at epochs 10 and 20 on all three groups.
    #[test]
    fn multistep_decays_every_group_at_the_milestones() {
        let base = LearningRates {
            weights: 3e-3,
            gates: 1e-3,
            scales: 1e-3,
        };
        let s = Schedule::MultiStep(MultiStep::new(vec![10, 20], 0.1).unwrap());
        let at = |e| s.learning_rates(30, e, base);
        assert_eq!(at(1), base);
        assert_eq!(at(10), base);
        let f = |lr: f32, k: i32| (f64::from(lr) * 0.1f64.powi(k)) as f32;
        for (e, k) in [(11, 1), (20, 1), (21, 2), (30, 2), (99, 2)] {
            let got = at(e);
            for (g, b) in [
                (got.weights, base.weights),
                (got.gates, base.gates),
                (got.scales, base.scales),
            ] {
                assert!((g - f(b, k)).abs() <= f(b, k) * 1e-6, "epoch {e}: {g}");
            }
        }
        // Chained products as PyTorch computes them.
        let m = MultiStep::new(vec![1, 2, 3], 0.1).unwrap();
        assert_eq!(m.learning_rate(1.0, 4), 1.0 * 0.1 * 0.1 * 0.1);
        assert_eq!(m.learning_rate(1.0, 0), 1.0);
        assert_eq!(
            MultiStep::new(vec![], 0.5).unwrap().learning_rate(2.0, 50),
            2.0
        );
        // Refused settings name the values.
        for (ms, gamma, what) in [
            (vec![20, 10], 0.1, "[20, 10]"),
            (vec![10, 10], 0.1, "[10, 10]"),
            (vec![10], 0.0, "gamma = 0"),
            (vec![10], f64::NAN, "NaN"),
        ] {
            let err = MultiStep::new(ms, gamma).unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        }
    }

    /// The default keeps the paper's recipe: only the weights rate decays, linearly.
    #[test]
    fn linear_tail_touches_only_the_weights() {
        let base = LearningRates {
            weights: 1e-3,
            gates: 2e-3,
            scales: 4e-3,
        };
        let s = Schedule::default();
        assert_eq!(s, Schedule::LinearTail);
        let got = s.learning_rates(100, 100, base);
        assert_eq!(got.weights, (f64::from(base.weights) * (1.0 / 34.0)) as f32);
        assert_eq!((got.gates, got.scales), (base.gates, base.scales));
        assert_eq!(s.learning_rates(100, 67, base), base);
    }
}
