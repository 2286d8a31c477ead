//! Launchers of `shaders/elementwise.wgsl`: the residual add and the gradient accumulation of
//! residual networks, mirroring `reference::layers::{add_forward, accumulate}`.

use crate::gpu::{Binding, Encoder, Gpu, PipelineKey, Shader};
use crate::{Error, Result};

/// The elementwise module.
pub static SHADER: Shader = Shader {
    name: "elementwise",
    source: include_str!("../../shaders/elementwise.wgsl"),
    requires: wgpu::Features::empty(),
    trusted: false,
};

/// Threads per workgroup (fixed in the shader).
pub const WORKGROUP: u32 = 256;
/// Elements per thread (`override PER_THREAD`).
pub const PER_THREAD: u32 = 4;

/// `y = a + b`.
pub static ADD: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "add",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// `dst += src`.
pub static ACCUMULATE: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "accumulate",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// Every pipeline of this module.
pub static PIPELINES: [&PipelineKey; 2] = [&ADD, &ACCUMULATE];

/// `struct ElementwiseParams` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ElementwiseParams {
    len: u32,
    _pad: [u32; 3],
}

/// The residual add of tensors of `len` elements, and its companion gradient accumulation.
///
/// The backward of `y = a + b` needs no kernel: `dL/da = dL/db = dL/dy`, so both branches read the
/// same gradient buffer. Where a value feeds two layers (a block input read by the main path and
/// the shortcut), [`Add::accumulate`] sums the second gradient into the first.
#[derive(Debug)]
pub struct Add {
    len: usize,
    uniform: wgpu::Buffer,
    grid: [u32; 3],
}

impl Add {
    /// Validates `len` (at least 1) against the device.
    pub fn new(gpu: &Gpu, len: usize) -> Result<Self> {
        const OP: &str = "Add::new";
        if len == 0 {
            return Err(Error::Shape {
                op: OP,
                expected: "at least one element".into(),
                actual: "0".into(),
            });
        }
        gpu.check_binding(OP, len)?;
        let len32 = u32::try_from(len).map_err(|_| Error::Limit {
            op: OP,
            what: "elements per tensor",
            value: len as u64,
            limit: u64::from(u32::MAX),
        })?;
        let params = ElementwiseParams {
            len: len32,
            _pad: [0; 3],
        };
        Ok(Self {
            len,
            grid: gpu.grid(OP, len32.div_ceil(WORKGROUP * PER_THREAD))?,
            uniform: gpu.uniform(OP, &params),
        })
    }

    /// Elements per tensor.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: [`Add::new`] rejects empty tensors.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Records `y = a + b` elementwise.
    pub fn forward<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        a: impl Into<Binding<'a>>,
        b: impl Into<Binding<'a>>,
        y: impl Into<Binding<'a>>,
    ) -> Result<()> {
        const OP: &str = "Add::forward";
        let (a, b, y) = (a.into(), b.into(), y.into());
        for t in [&a, &b, &y] {
            t.expect_len(OP, self.len)?;
        }
        let bindings = [(0, Binding::whole(&self.uniform)), (1, a), (2, b), (3, y)];
        gpu.dispatch(encoder, &ADD, &bindings, self.grid)
    }

    /// Records `dst += src` elementwise (in place).
    pub fn accumulate<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        src: impl Into<Binding<'a>>,
        dst: impl Into<Binding<'a>>,
    ) -> Result<()> {
        const OP: &str = "Add::accumulate";
        let (src, dst) = (src.into(), dst.into());
        src.expect_len(OP, self.len)?;
        dst.expect_len(OP, self.len)?;
        let bindings = [(0, Binding::whole(&self.uniform)), (4, src), (5, dst)];
        gpu.dispatch(encoder, &ACCUMULATE, &bindings, self.grid)
    }
}
