//! Softmax cross-entropy, averaged over the batch.

use super::Float;

/// Result of [`softmax_cross_entropy`].
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropy<T> {
    /// Mean over the batch of `−log softmax(z)[label]`.
    pub loss: T,
    /// `dL/dz = (softmax(z) − onehot(label)) / n`, `[n, classes]`.
    pub dlogits: Vec<T>,
    /// Number of rows whose argmax (ties → lowest index) equals the label.
    pub correct: usize,
}

/// Softmax cross-entropy of `logits` `[n, classes]` against `labels` `[n]`.
///
/// Per row, with `z_max` the row maximum (subtracted for stability) and
/// `S = Σ_j exp(z_j − z_max)` summed in order `j = 0, 1, …`:
/// `loss_row = ln S − (z_label − z_max)` and `softmax_j = exp(z_j − z_max) / S`.
pub fn softmax_cross_entropy<T: Float>(
    logits: &[T],
    labels: &[u32],
    classes: usize,
) -> CrossEntropy<T> {
    let n = labels.len();
    assert_eq!(
        logits.len(),
        n * classes,
        "cross-entropy: logits have the wrong length"
    );
    let inv_n = T::ONE / T::from_usize(n);
    let mut loss = T::ZERO;
    let mut dlogits = Vec::with_capacity(logits.len());
    let mut correct = 0;
    for (row, &label) in logits.chunks_exact(classes).zip(labels) {
        let label = label as usize;
        assert!(label < classes, "cross-entropy: label {label} out of range");
        let argmax = (1..classes).fold(0, |best, j| if row[j] > row[best] { j } else { best });
        let z_max = row[argmax];
        let sum = row.iter().fold(T::ZERO, |acc, &z| acc + (z - z_max).exp());
        loss += sum.ln() - (row[label] - z_max);
        for (j, &z) in row.iter().enumerate() {
            let onehot = if j == label { T::ONE } else { T::ZERO };
            dlogits.push(((z - z_max).exp() / sum - onehot) * inv_n);
        }
        correct += usize::from(argmax == label);
    }
    CrossEntropy {
        loss: loss / T::from_usize(n),
        dlogits,
        correct,
    }
}
