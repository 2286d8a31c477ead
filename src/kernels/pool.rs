//! Launchers of `shaders/pool.wgsl`: 2×2 max-pool with stride 2 and its backward, mirroring
//! `reference::layers::{maxpool2x2_forward, maxpool2x2_backward}`.

use crate::gpu::{Binding, Gpu, PipelineKey, Shader};
use crate::{Error, Result};

/// The pooling module.
pub static SHADER: Shader = Shader {
    name: "pool",
    source: include_str!("../../shaders/pool.wgsl"),
    requires: wgpu::Features::empty(),
};

/// Threads per workgroup (fixed in the shader).
pub const WORKGROUP: u32 = 256;
/// Elements per thread (`override PER_THREAD`).
pub const PER_THREAD: u32 = 4;

/// Forward: maxima and their flat input indices.
pub static FORWARD: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "forward",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// Backward: every input element gathers from its window.
pub static BACKWARD: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "backward",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// Every pipeline of this module.
pub static PIPELINES: [&PipelineKey; 2] = [&FORWARD, &BACKWARD];

/// `struct PoolParams` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolParams {
    out_len: u32,
    in_len: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    _pad: [u32; 2],
}

/// A 2×2, stride-2 max-pool over NCHW `[n, c, h, w]`, output `[n, c, h/2, w/2]` (rounded down).
#[derive(Debug)]
pub struct MaxPool2x2 {
    params: PoolParams,
    uniform: wgpu::Buffer,
    forward_grid: [u32; 3],
    backward_grid: [u32; 3],
}

impl MaxPool2x2 {
    /// Validates the shape (the output must be non-empty) against the device.
    pub fn new(gpu: &Gpu, n: usize, c: usize, h: usize, w: usize) -> Result<Self> {
        const OP: &str = "MaxPool2x2::new";
        let planes = n.saturating_mul(c);
        let in_len = planes.saturating_mul(h).saturating_mul(w);
        let out_len = planes.saturating_mul(h / 2).saturating_mul(w / 2);
        if out_len == 0 {
            return Err(Error::Shape {
                op: OP,
                expected: "n, c ≥ 1 and h, w ≥ 2".into(),
                actual: format!("[{n}, {c}, {h}, {w}]"),
            });
        }
        gpu.check_binding(OP, in_len)?;
        let in_len = u32::try_from(in_len).map_err(|_| Error::Limit {
            op: OP,
            what: "elements per tensor",
            value: in_len as u64,
            limit: u64::from(u32::MAX),
        })?;
        let params = PoolParams {
            out_len: out_len as u32,
            in_len,
            h: h as u32,
            w: w as u32,
            oh: (h / 2) as u32,
            ow: (w / 2) as u32,
            _pad: [0; 2],
        };
        let per_workgroup = WORKGROUP * PER_THREAD;
        Ok(Self {
            forward_grid: gpu.grid(OP, params.out_len.div_ceil(per_workgroup))?,
            backward_grid: gpu.grid(OP, in_len.div_ceil(per_workgroup))?,
            uniform: gpu.uniform(OP, &params),
            params,
        })
    }

    /// Input elements, `n·c·h·w`.
    pub fn input_len(&self) -> usize {
        self.params.in_len as usize
    }

    /// Output elements, `n·c·(h/2)·(w/2)`.
    pub fn output_len(&self) -> usize {
        self.params.out_len as usize
    }

    /// Records `y` (the window maxima) and `argmax` (`u32` flat indices into `x`; ties go to the
    /// first maximum in row-major window order).
    pub fn forward<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: impl Into<Binding<'a>>,
        y: impl Into<Binding<'a>>,
        argmax: impl Into<Binding<'a>>,
    ) -> Result<()> {
        const OP: &str = "MaxPool2x2::forward";
        let (x, y, argmax) = (x.into(), y.into(), argmax.into());
        x.expect_len(OP, self.input_len())?;
        y.expect_len(OP, self.output_len())?;
        argmax.expect_len(OP, self.output_len())?;
        let bindings = [
            (0, Binding::whole(&self.uniform)),
            (1, x),
            (2, y),
            (3, argmax),
        ];
        gpu.dispatch(encoder, &FORWARD, &bindings, self.forward_grid)?;
        Ok(())
    }

    /// Records `dx` (every element written): `dy[k]` at `argmax[k]`, zero elsewhere. `argmax`
    /// must come from [`MaxPool2x2::forward`] of the same shape.
    pub fn backward<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        dy: impl Into<Binding<'a>>,
        argmax: impl Into<Binding<'a>>,
        dx: impl Into<Binding<'a>>,
    ) -> Result<()> {
        const OP: &str = "MaxPool2x2::backward";
        let (dy, argmax, dx) = (dy.into(), argmax.into(), dx.into());
        dy.expect_len(OP, self.output_len())?;
        argmax.expect_len(OP, self.output_len())?;
        dx.expect_len(OP, self.input_len())?;
        let bindings = [
            (0, Binding::whole(&self.uniform)),
            (4, argmax),
            (5, dy),
            (6, dx),
        ];
        gpu.dispatch(encoder, &BACKWARD, &bindings, self.backward_grid)?;
        Ok(())
    }
}
