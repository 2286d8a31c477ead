//! The Bayesian Bits quantizer on the GPU: state, gates, regulariser and bit-width readout.
//!
//! A [`Quantizer`] owns one tensor's learnable range `x_max`, its gate logits and pruning
//! logits, and the buffers its kernels write; it records its work into a caller's command
//! encoder and never submits or blocks except in functions documented as blocking.

mod bops;

pub use bops::{graph_relative_bops, relative_bops, LayerBops};

use crate::gpu::{Binding, Encoder, Gpu, Tensor};
use crate::kernels::quant::{self as kernel, QuantBuffers, QuantParams, StepParams};
use crate::spec::quant;
use crate::{Error, Result};

/// How one quantizer is set up (spec §1.1, §2.2, §2.7, §3).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizerConfig {
    /// Elements of the quantized tensor.
    pub len: usize,
    /// Output channels (axis 0) carrying a pruning gate; 0 disables pruning.
    pub prune_channels: usize,
    /// Symmetric signed range (weights) or unsigned `[0, x_max]` (post-ReLU activations).
    pub signed: bool,
    /// Initial range.
    pub x_max: f32,
    /// Initial logits ℓ4, ℓ8, ℓ16, ℓ32.
    pub chain_logits: [f32; 4],
    /// Initial pruning logit of every channel (6.0 in the official code).
    pub prune_logit: f32,
    /// `mac_count / max_macs` weighting this quantizer in the regulariser.
    pub mac_ratio: f32,
    /// Distinct id per quantizer: part of the gate-noise counter.
    pub id: u32,
}

/// Per-step values for every quantizer: noise key, step counter, mode and μ.
#[derive(Debug)]
pub struct StepState {
    buffer: wgpu::Buffer,
}

impl StepState {
    /// A step-parameter buffer initialised for evaluation (deterministic gates).
    pub fn new(gpu: &Gpu) -> Self {
        Self {
            buffer: gpu.uniform("step params", &StepParams::default()),
        }
    }

    /// Queues the values for the next submission (no blocking, no readback).
    pub fn set(&self, gpu: &Gpu, seed: u64, step: u32, training: bool, mu: f32) {
        let params = StepParams {
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            step,
            training: u32::from(training),
            mu,
            _pad: [0; 3],
        };
        gpu.queue()
            .write_buffer(&self.buffer, 0, bytemuck::bytes_of(&params));
    }

    /// The uniform buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// One tensor's Bayesian Bits quantizer and its GPU buffers.
#[derive(Debug)]
pub struct Quantizer {
    config: QuantizerConfig,
    num_slices: u32,
    /// Every channel holds a multiple of 4 elements (the vec4 views).
    quads: bool,
    params: wgpu::Buffer,
    /// `[x_max]`, a learnable parameter.
    pub x_max: Tensor,
    /// `[ℓ4, ℓ8, ℓ16, ℓ32, ℓ2[0..C]]`, learnable parameters.
    pub logits: Tensor,
    /// Current gate values `[g4, g8, g16, g32, z2[0..C]]`.
    pub gates: Tensor,
    /// ∂gate/∂logit of the current sample.
    pub gate_dlogit: Tensor,
    /// `[∂L/∂x_max]` after [`Quantizer::backward`].
    pub x_max_grad: Tensor,
    /// ∂L/∂logits (data term + μ·regulariser) after [`Quantizer::backward`].
    pub logit_grad: Tensor,
    /// `[R_q]` after [`Quantizer::backward`].
    pub reg_value: Tensor,
    partials: Tensor,
}

/// Host copy of a quantizer's learnable state.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizerState {
    /// The range.
    pub x_max: f32,
    /// ℓ4, ℓ8, ℓ16, ℓ32.
    pub chain_logits: [f32; 4],
    /// ℓ2 per channel (empty without pruning).
    pub prune_logits: Vec<f32>,
}

impl QuantizerState {
    /// Test-time bit width (spec §2.5).
    pub fn bit_width(&self) -> u32 {
        quant::bit_width(self.chain_logits)
    }

    /// P(gate ≠ 0) for g4…g32.
    pub fn chain_probabilities(&self) -> [f32; 4] {
        self.chain_logits.map(quant::prob_nonzero)
    }

    /// Output channels kept at test time (all channels without pruning gates: `None`).
    pub fn kept_channels(&self) -> Option<usize> {
        self.kept_mask().map(|m| m.iter().filter(|&&k| k).count())
    }

    /// Test-time pruning gate of every output channel (`None` without pruning gates).
    pub fn kept_mask(&self) -> Option<Vec<bool>> {
        (!self.prune_logits.is_empty()).then(|| {
            self.prune_logits
                .iter()
                .map(|&l| quant::test_gate(l) > 0.0)
                .collect()
        })
    }
}

fn check_range(op: &'static str, x_max: f32) -> Result<()> {
    if x_max.is_finite() && x_max > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidRange { op, x_max })
    }
}

/// Where a quantizer's learnable state and its gradients live: its own tensors
/// ([`Quantizer::new`]) or slices of packed optimizer groups ([`Quantizer::with_storage`]).
#[derive(Clone, Debug)]
pub struct QuantizerStorage {
    /// `[x_max]`.
    pub x_max: Tensor,
    /// `[ℓ4, ℓ8, ℓ16, ℓ32, ℓ2[0..C]]`.
    pub logits: Tensor,
    /// `[∂L/∂x_max]`.
    pub x_max_grad: Tensor,
    /// ∂L/∂logits, same layout as `logits`.
    pub logit_grad: Tensor,
}

impl Quantizer {
    /// Allocates its own buffers and uploads the initial state of `config`.
    pub fn new(gpu: &Gpu, config: QuantizerConfig) -> Result<Self> {
        let mut logits = config.chain_logits.to_vec();
        logits.resize(4 + config.prune_channels, config.prune_logit);
        let storage = QuantizerStorage {
            x_max: gpu.upload("x_max", &[1], &[config.x_max])?,
            logits: gpu.upload("gate logits", &[logits.len()], &logits)?,
            x_max_grad: gpu.zeros("x_max grad", &[1])?,
            logit_grad: gpu.zeros("logit grad", &[logits.len()])?,
        };
        Self::with_storage(gpu, config, storage)
    }

    /// Uses `storage` (e.g. slices of optimizer groups), which already holds the learnable
    /// state, for the state and its gradients; the initial values of `config` are not written
    /// (only its range is validated).
    pub fn with_storage(
        gpu: &Gpu,
        config: QuantizerConfig,
        storage: QuantizerStorage,
    ) -> Result<Self> {
        const OP: &str = "Quantizer::new";
        check_range(OP, config.x_max)?;
        let channels = config.prune_channels;
        if config.len == 0 || (channels > 0 && !config.len.is_multiple_of(channels)) {
            return Err(Error::Shape {
                op: OP,
                expected: format!(
                    "a non-empty tensor whose length is a multiple of {} channels",
                    channels.max(1)
                ),
                actual: format!("{} elements", config.len),
            });
        }
        gpu.check_binding(OP, config.len)?;
        let len = u32::try_from(config.len).map_err(|_| Error::Limit {
            op: OP,
            what: "elements per tensor",
            value: config.len as u64,
            limit: u64::from(u32::MAX),
        })?;
        let channel_len = len / channels.max(1) as u32;
        let slices_per_channel = channel_len.div_ceil(kernel::BACKWARD_SLICE_LEN);
        let num_slices = slices_per_channel * channels.max(1) as u32;
        gpu.grid(OP, len.div_ceil(kernel::SLICE_LEN))?;
        gpu.grid(OP, num_slices)?;
        let params = QuantParams {
            len,
            prune_channels: channels as u32,
            channel_len,
            signed: u32::from(config.signed),
            quantizer: config.id,
            slices_per_channel,
            slice_len: kernel::BACKWARD_SLICE_LEN,
            num_slices,
            mac_ratio: config.mac_ratio,
            _pad: [0; 3],
        };
        let gate_shape = [4 + channels];
        storage.x_max.expect_len(OP, 1)?;
        storage.x_max_grad.expect_len(OP, 1)?;
        storage.logits.expect_len(OP, 4 + channels)?;
        storage.logit_grad.expect_len(OP, 4 + channels)?;
        let q = Self {
            num_slices,
            quads: channel_len.is_multiple_of(4),
            params: gpu.uniform("quantizer params", &params),
            x_max: storage.x_max,
            logits: storage.logits,
            gates: gpu.zeros("gates", &gate_shape)?,
            gate_dlogit: gpu.zeros("gate dlogit", &gate_shape)?,
            x_max_grad: storage.x_max_grad,
            logit_grad: storage.logit_grad,
            reg_value: gpu.zeros("regulariser", &[1])?,
            partials: gpu.zeros(
                "quantizer partials",
                &[(num_slices * kernel::PARTIALS) as usize],
            )?,
            config,
        };
        Ok(q)
    }

    /// The configuration it was built with (initial values).
    pub fn config(&self) -> &QuantizerConfig {
        &self.config
    }

    /// Elements of the quantized tensor.
    pub fn len(&self) -> usize {
        self.config.len
    }

    /// Whether the quantized tensor is empty (never: construction refuses it).
    pub fn is_empty(&self) -> bool {
        self.config.len == 0
    }

    fn buffers<'a>(&'a self, step: &'a StepState) -> QuantBuffers<'a> {
        QuantBuffers {
            params: Binding::whole(&self.params),
            step: Binding::whole(step.buffer()),
            x_max: self.x_max.binding(),
            logits: self.logits.binding(),
            gates: self.gates.binding(),
            gate_dlogit: self.gate_dlogit.binding(),
            partials: self.partials.binding(),
            x_max_grad: self.x_max_grad.binding(),
            logit_grad: self.logit_grad.binding(),
            reg_value: self.reg_value.binding(),
        }
    }

    /// Records gate sampling for this step (hard-concrete in training, thresholds in eval).
    pub fn sample_gates(&self, gpu: &Gpu, encoder: &mut Encoder, step: &StepState) -> Result<()> {
        kernel::sample_gates(gpu, encoder, &self.buffers(step))
    }

    /// Records `y = z2 · Q(x)` with the current gates.
    pub fn forward(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        step: &StepState,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<()> {
        x.expect_len("quantizer forward (input)", self.len())?;
        y.expect_len("quantizer forward (output)", self.len())?;
        kernel::forward(
            gpu,
            encoder,
            &self.buffers(step),
            self.len() as u32,
            self.quads,
            x.binding(),
            y.binding(),
        )
    }

    /// Records the backward pass for upstream gradient `dy`: writes `dx`, [`Self::x_max_grad`],
    /// [`Self::logit_grad`] (including μ·∂R_q/∂ℓ in training) and [`Self::reg_value`].
    pub fn backward(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        step: &StepState,
        x: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
    ) -> Result<()> {
        for (t, what) in [
            (x, "quantizer backward (input)"),
            (dy, "quantizer backward (dy)"),
            (dx, "quantizer backward (dx)"),
        ] {
            t.expect_len(what, self.len())?;
        }
        kernel::backward(
            gpu,
            encoder,
            &self.buffers(step),
            self.num_slices,
            self.quads,
            x.binding(),
            dy.binding(),
            dx.binding(),
        )
    }

    /// Queues a new range (e.g. from range initialisation). Refuses non-positive or non-finite values.
    pub fn set_x_max(&self, gpu: &Gpu, x_max: f32) -> Result<()> {
        check_range("Quantizer::set_x_max", x_max)?;
        gpu.write(&self.x_max, &[x_max])
    }

    /// Queues new logits `[ℓ4, ℓ8, ℓ16, ℓ32, ℓ2…]`.
    pub fn set_logits(&self, gpu: &Gpu, logits: &[f32]) -> Result<()> {
        gpu.write(&self.logits, logits)
    }

    /// Tensors that make up [`QuantizerState`], in the order [`Self::state_from`] expects.
    pub fn state_tensors(&self) -> [&Tensor; 2] {
        [&self.x_max, &self.logits]
    }

    /// Builds the state from the contents of [`Self::state_tensors`] read back by the caller
    /// (so many quantizers can be read in one round trip).
    pub fn state_from(&self, x_max: &[f32], logits: &[f32]) -> QuantizerState {
        QuantizerState {
            x_max: x_max[0],
            chain_logits: [logits[0], logits[1], logits[2], logits[3]],
            prune_logits: logits[4..].to_vec(),
        }
    }

    /// Reads the learnable state back. **Blocking.**
    pub fn read_state(&self, gpu: &Gpu) -> Result<QuantizerState> {
        let v = gpu.read_blocking(&self.state_tensors())?;
        Ok(self.state_from(&v[0], &v[1]))
    }
}
