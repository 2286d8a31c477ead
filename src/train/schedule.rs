//! The learning-rate schedule of the weights optimizer (spec §7.1).
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
}
