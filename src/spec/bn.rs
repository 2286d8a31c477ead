//! Batch norm as the official folded layers use it (spec §5.2): its constants, and the folding
//! of BN into the preceding conv or linear layer's weight and bias. The reference's train-mode
//! folded BN builds on these; export and fixed-gate fine-tuning (spec §7.4) fold statically.

use super::float::Float;

/// BN ε, added to both the running and the batch variance.
pub const BN_EPS: f32 = 1e-5;
/// BN momentum: `running ← (1 − momentum)·running + momentum·batch`.
pub const BN_MOMENTUM: f32 = 0.1;

/// Parameters and running statistics of one BN layer, one value per channel.
#[derive(Clone, Copy, Debug)]
pub struct BnParams<'a, T> {
    /// Scale γ.
    pub gamma: &'a [T],
    /// Shift β.
    pub beta: &'a [T],
    /// Running mean μ_r before this step.
    pub running_mean: &'a [T],
    /// Running (unbiased) variance v_r before this step.
    pub running_var: &'a [T],
}

/// ε in the scalar type.
pub(crate) fn eps<T: Float>() -> T {
    T::from_f64(f64::from(BN_EPS))
}

/// `σ_r = sqrt(v_r + ε)`.
pub(crate) fn running_std<T: Float>(running_var: T) -> T {
    (running_var + eps()).sqrt()
}

/// `γ/σ_r`, the factor of one output channel.
fn fold_scale<T: Float>(gamma: T, running_var: T) -> T {
    gamma / running_std(running_var)
}

/// Folded weight `W_f = W · γ/σ_r`, scaling output channel `o` (axis 0 of `w`, conv OIHW or
/// linear `[out, in]`) by `γ[o]/sqrt(v_r[o] + ε)`.
pub fn fold_weight<T: Float>(w: &[T], gamma: &[T], running_var: &[T]) -> Vec<T> {
    assert_eq!(
        w.len() % gamma.len(),
        0,
        "fold_weight: weight is not [c_out, ..]"
    );
    let per_channel = w.len() / gamma.len();
    w.chunks_exact(per_channel)
        .zip(gamma.iter().zip(running_var))
        .flat_map(|(row, (&g, &v))| row.iter().map(move |&x| x * fold_scale(g, v)))
        .collect()
}

/// Eval-mode bias of the folded layer, `β − γ·μ_r/σ_r` per channel.
pub fn fold_bias<T: Float>(p: &BnParams<T>) -> Vec<T> {
    (0..p.gamma.len())
        .map(|c| p.beta[c] - p.gamma[c] * p.running_mean[c] / running_std(p.running_var[c]))
        .collect()
}
