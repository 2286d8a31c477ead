//! Launchers of `shaders/loss.wgsl`: softmax cross-entropy averaged over the batch, mirroring
//! `reference::layers::softmax_cross_entropy`, with loss and accuracy accumulated on the GPU.
//!
//! Each [`SoftmaxCrossEntropy::forward`] writes `dlogits` and adds the batch's loss sum, correct
//! predictions, examples and one batch to a [`Metrics`] buffer, so a training loop reads the
//! running sums back only every N steps ([`Metrics::read`], or [`Metrics::tensor`] in a larger
//! [`Gpu::read_async`]) and clears them with [`Metrics::reset`].

use crate::gpu::{Binding, Encoder, Gpu, PipelineKey, Shader, Tensor};
use crate::{Error, Result};

/// The loss module.
pub static SHADER: Shader = Shader {
    name: "loss",
    source: include_str!("../../shaders/loss.wgsl"),
    requires: wgpu::Features::empty(),
    trusted: false,
};

/// Loss, gradient and metrics in one workgroup.
pub static FORWARD: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "forward",
    constants: &[],
};
/// Every pipeline of this module.
pub static PIPELINES: [&PipelineKey; 1] = [&FORWARD];

/// Words of the metrics buffer.
pub const METRICS_LEN: usize = 5;

/// `struct LossParams` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct LossParams {
    n: u32,
    classes: u32,
    _pad: [u32; 2],
}

/// Running sums accumulated by [`SoftmaxCrossEntropy::forward`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MetricValues {
    /// Sum of the per-example losses.
    pub loss_sum: f32,
    /// Examples whose argmax (ties → lowest index) equals the label.
    pub correct: u32,
    /// Examples seen.
    pub examples: u32,
    /// Batches seen.
    pub batches: u32,
    /// Examples whose label was out of range (they add no loss and no gradient).
    pub invalid_labels: u32,
}

impl MetricValues {
    /// Mean loss per example (NaN before any example).
    pub fn mean_loss(&self) -> f32 {
        self.loss_sum / self.examples as f32
    }

    /// Fraction of correct predictions (NaN before any example).
    pub fn accuracy(&self) -> f32 {
        self.correct as f32 / self.examples as f32
    }
}

/// The GPU buffer of running loss and accuracy sums:
/// `[loss sum (f32 bits), correct, examples, batches, invalid labels]`.
#[derive(Debug)]
pub struct Metrics {
    tensor: Tensor,
}

impl Metrics {
    /// A zeroed metrics buffer.
    pub fn new(gpu: &Gpu) -> Result<Self> {
        Ok(Self {
            tensor: gpu.zeros("metrics", &[METRICS_LEN])?,
        })
    }

    /// Records clearing the sums.
    pub fn reset(&self, encoder: &mut Encoder) {
        encoder.clear_buffer(self.tensor.buffer());
    }

    /// The buffer, e.g. to read it with other tensors in one round trip.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// Decodes the words of [`Metrics::tensor`] as read back by [`Gpu::read_async`].
    pub fn values_from(words: &[f32]) -> Result<MetricValues> {
        if words.len() != METRICS_LEN {
            return Err(Error::Shape {
                op: "Metrics::values_from",
                expected: format!("{METRICS_LEN} words"),
                actual: format!("{} words", words.len()),
            });
        }
        let count = |i: usize| words[i].to_bits();
        Ok(MetricValues {
            loss_sum: words[0],
            correct: count(1),
            examples: count(2),
            batches: count(3),
            invalid_labels: count(4),
        })
    }

    /// Reads the sums back. **Blocking.**
    pub fn read(&self, gpu: &Gpu) -> Result<MetricValues> {
        Self::values_from(&gpu.read(&self.tensor)?)
    }
}

/// Softmax cross-entropy for a batch of `n` rows of `classes` logits.
#[derive(Debug)]
pub struct SoftmaxCrossEntropy {
    params: LossParams,
    uniform: wgpu::Buffer,
}

impl SoftmaxCrossEntropy {
    /// Validates the shape (`n, classes ≥ 1`) against the device.
    pub fn new(gpu: &Gpu, n: usize, classes: usize) -> Result<Self> {
        const OP: &str = "SoftmaxCrossEntropy::new";
        let len = n.saturating_mul(classes);
        if len == 0 {
            return Err(Error::Shape {
                op: OP,
                expected: "n, classes ≥ 1".into(),
                actual: format!("[{n}, {classes}]"),
            });
        }
        gpu.check_binding(OP, len)?;
        if u32::try_from(len).is_err() {
            return Err(Error::Limit {
                op: OP,
                what: "elements per tensor",
                value: len as u64,
                limit: u64::from(u32::MAX),
            });
        }
        let params = LossParams {
            n: n as u32,
            classes: classes as u32,
            _pad: [0; 2],
        };
        Ok(Self {
            uniform: gpu.uniform(OP, &params),
            params,
        })
    }

    /// Rows per batch.
    pub fn n(&self) -> usize {
        self.params.n as usize
    }

    /// Classes per row.
    pub fn classes(&self) -> usize {
        self.params.classes as usize
    }

    /// Records `dlogits = (softmax(logits) − onehot(labels)) / n` and adds the batch to
    /// `metrics`. `labels` holds `n` `u32` values.
    pub fn forward<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        logits: impl Into<Binding<'a>>,
        labels: impl Into<Binding<'a>>,
        dlogits: impl Into<Binding<'a>>,
        metrics: &Metrics,
    ) -> Result<()> {
        const OP: &str = "SoftmaxCrossEntropy::forward";
        let (logits, labels, dlogits) = (logits.into(), labels.into(), dlogits.into());
        let len = self.n() * self.classes();
        logits.expect_len(OP, len)?;
        dlogits.expect_len(OP, len)?;
        labels.expect_len(OP, self.n())?;
        let bindings = [
            (0, Binding::whole(&self.uniform)),
            (1, logits),
            (2, labels),
            (3, dlogits),
            (4, Binding::from(metrics.tensor())),
        ];
        gpu.dispatch(encoder, &FORWARD, &bindings, [1, 1, 1])?;
        Ok(())
    }
}
