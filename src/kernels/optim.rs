//! Launcher of `shaders/optim.wgsl`: Adam or SGD over a whole packed parameter group per
//! dispatch.
//!
//! A [`ParamArena`] lays the tensors of one optimiser group (spec §4.2: weights, gates or
//! scales) out contiguously, each starting at a multiple of the device's
//! `min_storage_buffer_offset_alignment`; [`ParamArena::build`] allocates the group's buffers
//! (parameters, gradients and the [`Optimizer`]'s state, Adam's first and second moments by
//! default) as an [`AdamGroup`]; [`AdamGroup::set_optimizer`] switches it to SGD (spec §7.4,
//! §7.5). Kernels bind one tensor of the group with [`AdamGroup::param`] /
//! [`AdamGroup::grad`], and [`AdamGroup::step`] updates every tensor of the group in one
//! dispatch. Padding between tensors keeps zero parameters, gradients and state, which both
//! optimisers leave at zero.

use crate::gpu::{Binding, Encoder, Gpu, PipelineKey, Shader, Tensor};
use crate::spec::optim::{SgdConfig, ADAM_BETA1, ADAM_BETA2, ADAM_EPS};
use crate::{Error, Result};

/// The optimiser module.
pub static SHADER: Shader = Shader {
    name: "optim",
    source: include_str!("../../shaders/optim.wgsl"),
    requires: wgpu::Features::empty(),
    trusted: false,
};

/// Threads per workgroup (fixed in the shader).
pub const WORKGROUP: u32 = 256;
/// Parameters per thread (`override PER_THREAD`).
pub const PER_THREAD: u32 = 4;

/// One Adam step over a packed group.
pub static ADAM: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "adam",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// One SGD step over a packed group.
pub static SGD: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "sgd",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// Every pipeline of this module.
pub static PIPELINES: [&PipelineKey; 2] = [&ADAM, &SGD];

/// The optimiser of one parameter group.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Optimizer {
    /// Adam with PyTorch's defaults (spec §4.2): every group of the paper's MNIST and CIFAR-10
    /// recipes.
    #[default]
    Adam,
    /// SGD (PyTorch semantics): the weights optimizer of the ImageNet recipe (spec §7.5).
    Sgd(SgdConfig),
}

impl Optimizer {
    /// Short name, as in checkpoint keys (`adam`, `sgd`).
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Adam => "adam",
            Optimizer::Sgd(_) => "sgd",
        }
    }

    /// Names of the state buffers, in the order of [`AdamGroup::moments`]: PyTorch's
    /// `exp_avg`, `exp_avg_sq` as `m`, `v` for Adam, `momentum_buffer` for SGD.
    pub fn buffer_names(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Adam => &["m", "v"],
            Optimizer::Sgd(_) => &["momentum_buffer"],
        }
    }
}

/// `struct AdamParams` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamParams {
    len: u32,
    lr: f32,
    bias1: f32,
    bias2: f32,
    beta1: f32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
    _pad: [u32; 3],
}

/// `struct SgdParams` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct SgdParams {
    len: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    first: u32,
    nesterov: u32,
    _pad: [u32; 2],
}

/// Where one tensor lies in its group's packed buffers (in 32-bit words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamSlice {
    /// First word.
    pub offset: usize,
    /// Number of words.
    pub len: usize,
}

impl ParamSlice {
    /// This tensor's part of a host copy of a whole group buffer (e.g. [`AdamGroup::params`]
    /// read back once for many tensors).
    pub fn of<'a>(&self, words: &'a [f32]) -> Result<&'a [f32]> {
        self.end()
            .and_then(|end| words.get(self.offset..end))
            .ok_or_else(|| Error::Shape {
                op: "ParamSlice::of",
                expected: format!("words {}..+{}", self.offset, self.len),
                actual: format!("{} words", words.len()),
            })
    }

    fn end(&self) -> Option<usize> {
        self.offset.checked_add(self.len)
    }
}

/// Lays out the tensors of one parameter group; see the module documentation.
#[derive(Clone, Debug)]
pub struct ParamArena {
    align: usize,
    len: usize,
}

impl ParamArena {
    /// An empty arena aligned for `gpu`.
    pub fn new(gpu: &Gpu) -> Self {
        let bytes = gpu.limits().min_storage_buffer_offset_alignment.max(4);
        Self {
            align: bytes as usize / 4,
            len: 0,
        }
    }

    /// Reserves `len` words for one tensor.
    pub fn push(&mut self, len: usize) -> Result<ParamSlice> {
        if len == 0 {
            return Err(Error::InvalidArgument {
                op: "ParamArena::push",
                msg: "a parameter tensor needs at least one element".into(),
            });
        }
        let offset = self.len.checked_next_multiple_of(self.align);
        let slice = offset.map(|offset| ParamSlice { offset, len });
        let end = slice.and_then(|s| s.end());
        let (Some(slice), Some(end)) = (slice, end) else {
            return Err(Error::Limit {
                op: "ParamArena::push",
                what: "words per group",
                value: u64::MAX,
                limit: usize::MAX as u64,
            });
        };
        self.len = end;
        Ok(slice)
    }

    /// Words used so far, padding included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no tensor was reserved.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Allocates the group's zeroed buffers.
    pub fn build(self, gpu: &Gpu, label: &str) -> Result<AdamGroup> {
        const OP: &str = "ParamArena::build";
        let len = u32::try_from(self.len).map_err(|_| Error::Limit {
            op: OP,
            what: "parameters per group",
            value: self.len as u64,
            limit: u64::from(u32::MAX),
        })?;
        let shape = [self.len];
        let (state, uniform) = optimizer_state(gpu, label, Optimizer::Adam, self.len)?;
        Ok(AdamGroup {
            grid: gpu.grid(OP, len.div_ceil(WORKGROUP * PER_THREAD))?,
            params: gpu.zeros(&format!("{label} params"), &shape)?,
            grads: gpu.zeros(&format!("{label} grads"), &shape)?,
            optimizer: Optimizer::Adam,
            state,
            uniform,
            label: label.to_string(),
            len,
            steps: 0,
        })
    }
}

/// Zeroed state buffers of `optimizer` for a group of `len` words, and its uniform.
fn optimizer_state(
    gpu: &Gpu,
    label: &str,
    optimizer: Optimizer,
    len: usize,
) -> Result<(Vec<Tensor>, wgpu::Buffer)> {
    let state = optimizer
        .buffer_names()
        .iter()
        .map(|b| gpu.zeros(&format!("{label} {} {b}", optimizer.name()), &[len]))
        .collect::<Result<_>>()?;
    let uniform = match optimizer {
        Optimizer::Adam => gpu.uniform(label, &AdamParams::default()),
        Optimizer::Sgd(_) => gpu.uniform(label, &SgdParams::default()),
    };
    Ok((state, uniform))
}

/// One optimiser group's packed parameters, gradients and optimiser state (named for Adam,
/// its default).
#[derive(Debug)]
pub struct AdamGroup {
    params: Tensor,
    grads: Tensor,
    optimizer: Optimizer,
    /// The optimiser's buffers, as [`Optimizer::buffer_names`].
    state: Vec<Tensor>,
    uniform: wgpu::Buffer,
    label: String,
    grid: [u32; 3],
    len: u32,
    steps: u32,
}

impl AdamGroup {
    fn slice<'a>(&self, gpu: &Gpu, tensor: &'a Tensor, s: ParamSlice) -> Result<Binding<'a>> {
        Binding::range(gpu, tensor.buffer(), s.offset, s.len)
    }

    /// One tensor of the parameter buffer, to bind in a kernel.
    pub fn param(&self, gpu: &Gpu, s: ParamSlice) -> Result<Binding<'_>> {
        self.slice(gpu, &self.params, s)
    }

    /// One tensor of the gradient buffer, to bind in a kernel.
    pub fn grad(&self, gpu: &Gpu, s: ParamSlice) -> Result<Binding<'_>> {
        self.slice(gpu, &self.grads, s)
    }

    /// One tensor of the parameter buffer as a tensor view of `shape` (`shape` must hold
    /// `s.len` elements).
    pub fn param_view(&self, gpu: &Gpu, s: ParamSlice, shape: &[usize]) -> Result<Tensor> {
        self.params
            .slice(gpu, s.offset, shape)?
            .expect_len_view("AdamGroup::param_view", s.len)
    }

    /// One tensor of the gradient buffer as a tensor view of `shape`.
    pub fn grad_view(&self, gpu: &Gpu, s: ParamSlice, shape: &[usize]) -> Result<Tensor> {
        self.grads
            .slice(gpu, s.offset, shape)?
            .expect_len_view("AdamGroup::grad_view", s.len)
    }

    /// The whole parameter buffer (padding included).
    pub fn params(&self) -> &Tensor {
        &self.params
    }

    /// The whole gradient buffer (padding included).
    pub fn grads(&self) -> &Tensor {
        &self.grads
    }

    /// The optimiser's state buffers, in the order of [`Optimizer::buffer_names`] (Adam: first
    /// and second moments; SGD: the momentum buffer).
    pub fn moments(&self) -> Vec<&Tensor> {
        self.state.iter().collect()
    }

    /// The group's optimiser.
    pub fn optimizer(&self) -> Optimizer {
        self.optimizer
    }

    /// Switches the group to `optimizer` with fresh state: zeroed buffers and no step taken, as
    /// a new PyTorch optimizer (e.g. the fine-tuning phase of spec §7.4). Parameters and
    /// gradients are kept. Fails on settings PyTorch refuses ([`SgdConfig::problem`]).
    pub fn set_optimizer(&mut self, gpu: &Gpu, optimizer: Optimizer) -> Result<()> {
        if let Some(msg) = match optimizer {
            Optimizer::Sgd(cfg) => cfg.problem(),
            Optimizer::Adam => None,
        } {
            return Err(Error::InvalidArgument {
                op: "AdamGroup::set_optimizer",
                msg,
            });
        }
        (self.state, self.uniform) =
            optimizer_state(gpu, &self.label, optimizer, self.len as usize)?;
        self.optimizer = optimizer;
        self.steps = 0;
        Ok(())
    }

    /// Queues new values for one tensor of the parameter buffer.
    pub fn write(&self, gpu: &Gpu, s: ParamSlice, data: &[f32]) -> Result<()> {
        const OP: &str = "AdamGroup::write";
        if data.len() != s.len || s.end().is_none_or(|end| end > self.len as usize) {
            return Err(Error::Shape {
                op: OP,
                expected: format!("{} values inside a group of {} words", s.len, self.len),
                actual: format!("{} values at word {}", data.len(), s.offset),
            });
        }
        gpu.queue().write_buffer(
            self.params.buffer(),
            4 * s.offset as u64,
            bytemuck::cast_slice(data),
        );
        Ok(())
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Restores the step count (with the moments, when resuming from a checkpoint).
    pub fn set_steps(&mut self, steps: u32) {
        self.steps = steps;
    }

    /// Records one step of the group's optimiser at learning rate `lr` over the whole group,
    /// with the gradients currently in [`AdamGroup::grads`]. The step's constants are queued
    /// with `Queue::write_buffer`, so record at most one step per submission.
    pub fn step(&mut self, gpu: &Gpu, encoder: &mut Encoder, lr: f32) -> Result<()> {
        const OP: &str = "AdamGroup::step";
        if !lr.is_finite() {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: format!("learning rate {lr}"),
            });
        }
        let t = self.steps.checked_add(1).filter(|&t| t <= i32::MAX as u32);
        let t = t.ok_or(Error::Limit {
            op: OP,
            what: "optimizer steps",
            value: u64::from(self.steps) + 1,
            limit: i32::MAX as u64,
        })?;
        match self.optimizer {
            Optimizer::Adam => self.record_adam(gpu, encoder, lr, t)?,
            Optimizer::Sgd(cfg) => self.record_sgd(gpu, encoder, lr, &cfg)?,
        }
        self.steps = t;
        Ok(())
    }

    /// Adam step `t` (1-based).
    fn record_adam(&self, gpu: &Gpu, encoder: &mut Encoder, lr: f32, t: u32) -> Result<()> {
        let params = AdamParams {
            len: self.len,
            lr,
            bias1: (1.0 - ADAM_BETA1.powi(t as i32)) as f32,
            bias2: (1.0 - ADAM_BETA2.powi(t as i32)) as f32,
            beta1: ADAM_BETA1 as f32,
            beta2: ADAM_BETA2 as f32,
            one_minus_beta1: (1.0 - ADAM_BETA1) as f32,
            one_minus_beta2: (1.0 - ADAM_BETA2) as f32,
            eps: ADAM_EPS as f32,
            _pad: [0; 3],
        };
        gpu.queue()
            .write_buffer(&self.uniform, 0, bytemuck::bytes_of(&params));
        let bindings = [
            (0, Binding::whole(&self.uniform)),
            (1, Binding::from(&self.params)),
            (2, Binding::from(&self.grads)),
            (3, Binding::from(&self.state[0])),
            (4, Binding::from(&self.state[1])),
        ];
        gpu.dispatch(encoder, &ADAM, &bindings, self.grid)
    }

    /// SGD step; the momentum buffer starts as a copy of the first step's update direction.
    fn record_sgd(&self, gpu: &Gpu, encoder: &mut Encoder, lr: f32, cfg: &SgdConfig) -> Result<()> {
        let params = SgdParams {
            len: self.len,
            lr,
            momentum: cfg.momentum as f32,
            weight_decay: cfg.weight_decay as f32,
            first: u32::from(self.steps == 0),
            nesterov: u32::from(cfg.nesterov),
            _pad: [0; 2],
        };
        gpu.queue()
            .write_buffer(&self.uniform, 0, bytemuck::bytes_of(&params));
        let bindings = [
            (5, Binding::whole(&self.uniform)),
            (1, Binding::from(&self.params)),
            (2, Binding::from(&self.grads)),
            (3, Binding::from(&self.state[0])),
        ];
        gpu.dispatch(encoder, &SGD, &bindings, self.grid)
    }
}
