//! Batch norm folded into the preceding conv or linear layer (spec §5.2, pitfall P13).
//!
//! Training step of one folded layer with raw weight `W`, BN parameters `γ, β` and running
//! statistics `μ_r, v_r` (as they are *before* the step), `σ_r = sqrt(v_r + ε)`:
//! ```text
//! W_f  = W · γ/σ_r                       fold_weight
//! y_q  = layer(x, Q_w(W_f))              quantized, no bias (reference::quant + conv/linear)
//! y_fp = layer(x, W)                     raw weight, unquantized
//! out  = y_q · σ_r/σ_B + (β − γ·μ_B/σ_B) folded_bn_train_forward, also returns new μ_r, v_r
//! ```
//! `μ_B` and `v_B = σ_B² − ε` are the mean and biased variance of `y_fp` per channel over
//! `(N, H, W)` (over `N` for the linear layer, i.e. `h = w = 1`).
//! Eval: `out = layer(x, Q_w(W_f)) + fold_bias(..)`, with `W_f` from the updated running stats.
//!
//! Backward: [`folded_bn_train_backward`] gives `dL/dy_q` and `dL/dy_fp`, which go back through
//! the two layer products; the `y_q` path yields `dL/dW_f`, which [`fold_weight_backward`] (after
//! the quantizer's straight-through backward) turns into `dL/dW` and the folding part of `dL/dγ`.

use super::Float;
use crate::spec::bn::{eps, running_std};
pub use crate::spec::bn::{fold_bias, fold_weight, BnParams, BN_EPS, BN_MOMENTUM};
use crate::spec::Nchw;

/// Result of [`folded_bn_train_forward`], all per channel except `out`.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedBnTrain<T> {
    /// Train-mode output, same layout as `y_q` (before ReLU).
    pub out: Vec<T>,
    /// Batch mean μ_B of `y_fp`.
    pub batch_mean: Vec<T>,
    /// Batch standard deviation σ_B = sqrt(biased variance + ε) of `y_fp`.
    pub batch_std: Vec<T>,
    /// Updated running mean `(1 − m)·μ_r + m·μ_B`.
    pub running_mean: Vec<T>,
    /// Updated running variance `(1 − m)·v_r + m·(unbiased batch variance)`.
    pub running_var: Vec<T>,
}

/// Gradients of [`folded_bn_train_forward`].
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedBnGrads<T> {
    /// dL/dy_q, layout of `y_q`.
    pub dy_q: Vec<T>,
    /// dL/dy_fp, layout of `y_fp`.
    pub dy_fp: Vec<T>,
    /// dL/dγ through the bias term only (add the folding part from [`fold_weight_backward`]).
    pub dgamma: Vec<T>,
    /// dL/dβ.
    pub dbeta: Vec<T>,
}

/// Flat indices of channel `c` of `s`, in order `n, y, x`.
fn channel_indices(s: &Nchw, c: usize) -> impl Iterator<Item = usize> + '_ {
    let hw = s.h * s.w;
    (0..s.n).flat_map(move |n| {
        let base = (n * s.c + c) * hw;
        base..base + hw
    })
}

/// Sum of `f(i)` over the indices of channel `c`, from zero in order `n, y, x`.
fn channel_sum<T: Float>(s: &Nchw, c: usize, f: impl Fn(usize) -> T) -> T {
    channel_indices(s, c).fold(T::ZERO, |acc, i| acc + f(i))
}

/// Per-channel scale of the folded weight, `γ/σ_r`.
/// `(μ_B, σ_B, Σ(y_fp − μ_B)²)` of channel `c`, with `σ_B = sqrt(Σ(y_fp − μ_B)²/M + ε)`.
fn batch_stats<T: Float>(s: &Nchw, y_fp: &[T], c: usize) -> (T, T, T) {
    let m = T::from_usize(s.n * s.h * s.w);
    let mean = channel_sum(s, c, |i| y_fp[i]) / m;
    let ssd = channel_sum(s, c, |i| (y_fp[i] - mean) * (y_fp[i] - mean));
    (mean, (ssd / m + eps()).sqrt(), ssd)
}

/// Backward of [`fold_weight`]: given `dwf = dL/dW_f`, returns `(dL/dW, dL/dγ)` with
/// `dW = dW_f · γ/σ_r` and `dγ[o] = (Σ dW_f·W over channel o) / σ_r[o]` (the folding part of dγ).
pub fn fold_weight_backward<T: Float>(
    dwf: &[T],
    w: &[T],
    gamma: &[T],
    running_var: &[T],
) -> (Vec<T>, Vec<T>) {
    assert_eq!(
        dwf.len(),
        w.len(),
        "fold_weight_backward: dwf has the wrong length"
    );
    let dw = fold_weight(dwf, gamma, running_var);
    let per_channel = w.len() / gamma.len();
    let dgamma = dwf
        .chunks_exact(per_channel)
        .zip(w.chunks_exact(per_channel))
        .zip(running_var)
        .map(|((d, x), &v)| {
            let dot = d.iter().zip(x).fold(T::ZERO, |acc, (&d, &x)| acc + d * x);
            dot / running_std(v)
        })
        .collect();
    (dw, dgamma)
}

/// Train-mode folded BN: `out = y_q · σ_r/σ_B + (β − γ·μ_B/σ_B)` per channel, with `μ_B`,
/// `σ_B = sqrt(v_B + ε)` from `y_fp` (`v_B` the biased variance over the `M = n·h·w` values of a
/// channel), and the running statistics updated *after* use, with momentum 0.1:
/// `μ_r ← 0.9·μ_r + 0.1·μ_B`, `v_r ← 0.9·v_r + 0.1·v_B·M/(M−1)` (unbiased; `M = 1` gives a
/// non-finite `v_r`).
///
/// `y_q` is the output of the layer with the already quantized folded weight, `y_fp` that of the
/// raw weight, both of dimensions `s`.
pub fn folded_bn_train_forward<T: Float>(
    s: &Nchw,
    y_q: &[T],
    y_fp: &[T],
    p: &BnParams<T>,
) -> FoldedBnTrain<T> {
    assert_eq!(y_q.len(), s.len(), "folded BN: y_q has the wrong length");
    assert_eq!(y_fp.len(), s.len(), "folded BN: y_fp has the wrong length");
    let mom = T::from_f64(f64::from(BN_MOMENTUM));
    let mut r = FoldedBnTrain {
        out: vec![T::ZERO; s.len()],
        batch_mean: Vec::with_capacity(s.c),
        batch_std: Vec::with_capacity(s.c),
        running_mean: Vec::with_capacity(s.c),
        running_var: Vec::with_capacity(s.c),
    };
    for c in 0..s.c {
        let (mean, std, ssd) = batch_stats(s, y_fp, c);
        let scale = running_std(p.running_var[c]) / std;
        let shift = p.beta[c] - p.gamma[c] * mean / std;
        for i in channel_indices(s, c) {
            r.out[i] = y_q[i] * scale + shift;
        }
        r.batch_mean.push(mean);
        r.batch_std.push(std);
        r.running_mean
            .push((T::ONE - mom) * p.running_mean[c] + mom * mean);
        let unbiased = ssd / T::from_usize(s.n * s.h * s.w - 1);
        r.running_var
            .push((T::ONE - mom) * p.running_var[c] + mom * unbiased);
    }
    r
}

/// Backward of [`folded_bn_train_forward`] given `g = dL/dout`.
///
/// Derivation, per channel, sums over its `M` elements. `out_i = y_q,i·σ_r/σ_B + β − γ·μ_B/σ_B`
/// depends on `y_q` directly, on `β, γ` through the shift, and on `y_fp` *only* through `μ_B` and
/// `σ_B` (`σ_r` comes from a buffer and carries no gradient):
/// ```text
/// dL/dy_q,i  = g_i · σ_r/σ_B
/// dL/dβ      = Σ g_i
/// dL/dγ      = −(μ_B/σ_B) · Σ g_i
/// dL/dμ_B    = −(γ/σ_B) · Σ g_i                                 (explicit dependence only)
/// dL/dσ_B    = −Σ g_i·(y_q,i·σ_r − γ·μ_B) / σ_B²
/// dL/dy_fp,j = dL/dμ_B / M + dL/dσ_B · (y_fp,j − μ_B) / (M·σ_B)
/// ```
/// The last line uses `dμ_B/dy_fp,j = 1/M` and `dσ_B/dy_fp,j = (y_fp,j − μ_B)/(M·σ_B)`; the
/// dependence of `v_B` on `μ_B` drops out because `Σ (y_fp,i − μ_B) = 0`.
pub fn folded_bn_train_backward<T: Float>(
    s: &Nchw,
    dout: &[T],
    y_q: &[T],
    y_fp: &[T],
    p: &BnParams<T>,
) -> FoldedBnGrads<T> {
    assert_eq!(dout.len(), s.len(), "folded BN: dout has the wrong length");
    let m = T::from_usize(s.n * s.h * s.w);
    let mut r = FoldedBnGrads {
        dy_q: vec![T::ZERO; s.len()],
        dy_fp: vec![T::ZERO; s.len()],
        dgamma: Vec::with_capacity(s.c),
        dbeta: Vec::with_capacity(s.c),
    };
    for c in 0..s.c {
        let (mean, std, _) = batch_stats(s, y_fp, c);
        let std_r = running_std(p.running_var[c]);
        let sum_g = channel_sum(s, c, |i| dout[i]);
        let sum_gyq = channel_sum(s, c, |i| dout[i] * y_q[i]);
        let d_mean = -(p.gamma[c] / std) * sum_g;
        let d_std = -(sum_gyq * std_r - p.gamma[c] * mean * sum_g) / (std * std);
        for i in channel_indices(s, c) {
            r.dy_q[i] = dout[i] * std_r / std;
            r.dy_fp[i] = d_mean / m + d_std * (y_fp[i] - mean) / (m * std);
        }
        r.dgamma.push(-(mean / std) * sum_g);
        r.dbeta.push(sum_g);
    }
    r
}
