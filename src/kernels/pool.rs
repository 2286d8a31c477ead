//! Launchers of `shaders/pool.wgsl`: max and average pooling with any window, stride and padding
//! ([`Pool2dShape`]) and their backward passes, mirroring `reference::layers::{maxpool2d_forward,
//! maxpool2d_backward, avgpool2d_forward, avgpool2d_backward}`. [`MaxPool2x2`] is the 2×2,
//! stride-2 special case the sequential models use.

use std::ops::Deref;

use crate::gpu::{Binding, Encoder, Gpu, PipelineKey, Shader};
use crate::spec::Pool2dShape;
use crate::{Error, Result};

/// The pooling module.
pub static SHADER: Shader = Shader {
    name: "pool",
    source: include_str!("../../shaders/pool.wgsl"),
    requires: wgpu::Features::empty(),
    trusted: false,
};

/// Threads per workgroup (fixed in the shader).
pub const WORKGROUP: u32 = 256;
/// Elements per thread (`override PER_THREAD`).
pub const PER_THREAD: u32 = 4;

const fn key(entry: &'static str) -> PipelineKey {
    PipelineKey {
        shader: &SHADER,
        entry,
        constants: &[("PER_THREAD", PER_THREAD)],
    }
}

/// Max-pool forward: window maxima and their flat input indices.
pub static MAX_FORWARD: PipelineKey = key("max_forward");
/// Max-pool backward: every input element gathers from the windows that chose it.
pub static MAX_BACKWARD: PipelineKey = key("max_backward");
/// Max-pool backward where the windows tile the input exactly: one thread writes a window.
pub static MAX_BACKWARD_TILED: PipelineKey = key("max_backward_tiled");
/// Max-pool forward of 2×2 windows, stride 2, no padding, over rows of a multiple of 4: two
/// windows per thread through vec4 views of the input.
pub static MAX_FORWARD_2X2: PipelineKey = key("max_forward_2x2");
/// Max-pool backward of [`MAX_FORWARD_2X2`]'s windows: two windows per thread.
pub static MAX_BACKWARD_2X2: PipelineKey = key("max_backward_2x2");
/// Average-pool forward.
pub static AVG_FORWARD: PipelineKey = key("avg_forward");
/// Average-pool backward: every input element gathers from the windows that contain it.
pub static AVG_BACKWARD: PipelineKey = key("avg_backward");
/// Every pipeline of this module.
pub static PIPELINES: [&PipelineKey; 7] = [
    &MAX_FORWARD,
    &MAX_BACKWARD,
    &MAX_BACKWARD_TILED,
    &MAX_FORWARD_2X2,
    &MAX_BACKWARD_2X2,
    &AVG_FORWARD,
    &AVG_BACKWARD,
];

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
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
}

/// Whether the windows tile the input exactly: stride = window, no padding, no rows or columns
/// left over.
fn tiles_input(s: &Pool2dShape) -> bool {
    s.stride == s.kernel
        && s.pad == [0, 0]
        && s.h_out() * s.kernel[0] == s.h
        && s.w_out() * s.kernel[1] == s.w
}

/// What both pooling kinds record with: the checked shape, its parameters and grids.
#[derive(Debug)]
struct Launch {
    shape: Pool2dShape,
    uniform: wgpu::Buffer,
    forward_grid: [u32; 3],
    backward_grid: [u32; 3],
    /// 2×2 windows, stride 2, no padding, tiling an input of rows of a multiple of 4: one
    /// thread per `PER_THREAD` pairs of windows on `pairs_grid`.
    pairs: bool,
    pairs_grid: [u32; 3],
}

impl Launch {
    /// Validates `shape` (a valid pooling with a non-empty output) against the device.
    fn new(gpu: &Gpu, op: &'static str, shape: &Pool2dShape) -> Result<Self> {
        shape.check().map_err(|e| Error::Shape {
            op,
            expected: "a pooling window within the padded input, padding at most half the window"
                .into(),
            actual: format!("{shape:?}: {e}"),
        })?;
        let (in_len, out_len) = (shape.input().len(), shape.output().len());
        if out_len == 0 {
            return Err(Error::Shape {
                op,
                expected: "a batch n ≥ 1".into(),
                actual: format!("{shape:?}"),
            });
        }
        gpu.check_binding(op, in_len)?;
        let u32_of = |v: usize| {
            u32::try_from(v).map_err(|_| Error::Limit {
                op,
                what: "elements per tensor",
                value: v as u64,
                limit: u64::from(u32::MAX),
            })
        };
        // The kernel forms coordinates up to a padded size plus a stride in 32 bits.
        let [ph, pw] = shape.padded();
        u32_of(
            ph.max(pw)
                .saturating_add(shape.stride[0].max(shape.stride[1])),
        )?;
        let params = PoolParams {
            out_len: u32_of(out_len)?,
            in_len: u32_of(in_len)?,
            h: u32_of(shape.h)?,
            w: u32_of(shape.w)?,
            oh: u32_of(shape.h_out())?,
            ow: u32_of(shape.w_out())?,
            kh: u32_of(shape.kernel[0])?,
            kw: u32_of(shape.kernel[1])?,
            sh: u32_of(shape.stride[0])?,
            sw: u32_of(shape.stride[1])?,
            ph: u32_of(shape.pad[0])?,
            pw: u32_of(shape.pad[1])?,
        };
        let per_workgroup = WORKGROUP * PER_THREAD;
        let pairs = shape.kernel == [2, 2] && tiles_input(shape) && shape.w.is_multiple_of(4);
        Ok(Self {
            shape: *shape,
            forward_grid: gpu.grid(op, params.out_len.div_ceil(per_workgroup))?,
            backward_grid: gpu.grid(op, params.in_len.div_ceil(per_workgroup))?,
            pairs,
            pairs_grid: gpu.grid(op, (params.out_len / 2).div_ceil(per_workgroup))?,
            uniform: gpu.uniform(op, &params),
        })
    }

    fn input_len(&self) -> usize {
        self.shape.input().len()
    }

    fn output_len(&self) -> usize {
        self.shape.output().len()
    }
}

/// A max-pool over NCHW (PyTorch `MaxPool2d`, padding −∞): input `[n, c, h, w]`, output
/// `[n, c, h_out, w_out]`.
#[derive(Debug)]
pub struct MaxPool2d(Launch);

impl MaxPool2d {
    /// Validates the shape ([`Pool2dShape::check`], and a non-empty output) against the device.
    pub fn new(gpu: &Gpu, shape: &Pool2dShape) -> Result<Self> {
        Launch::new(gpu, "MaxPool2d::new", shape).map(Self)
    }

    /// The pooling shape.
    pub fn shape(&self) -> &Pool2dShape {
        &self.0.shape
    }

    /// Input elements, `n·c·h·w`.
    pub fn input_len(&self) -> usize {
        self.0.input_len()
    }

    /// Output elements, `n·c·h_out·w_out`.
    pub fn output_len(&self) -> usize {
        self.0.output_len()
    }

    /// Records `y` (the window maxima) and `argmax` (`u32` flat indices into `x`; ties go to the
    /// first maximum in row-major window order).
    pub fn forward<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        x: impl Into<Binding<'a>>,
        y: impl Into<Binding<'a>>,
        argmax: impl Into<Binding<'a>>,
    ) -> Result<()> {
        const OP: &str = "MaxPool2d::forward";
        let (x, y, argmax) = (x.into(), y.into(), argmax.into());
        x.expect_len(OP, self.input_len())?;
        y.expect_len(OP, self.output_len())?;
        argmax.expect_len(OP, self.output_len())?;
        let uniform = (0, Binding::whole(&self.0.uniform));
        if self.0.pairs {
            let bindings = [uniform, (7, x), (8, y), (9, argmax)];
            return gpu.dispatch(encoder, &MAX_FORWARD_2X2, &bindings, self.0.pairs_grid);
        }
        let bindings = [uniform, (1, x), (2, y), (3, argmax)];
        gpu.dispatch(encoder, &MAX_FORWARD, &bindings, self.0.forward_grid)
    }

    /// Records `dx` (every element written): the sum of `dy[k]` over the outputs `k` whose
    /// `argmax[k]` is the element, in increasing `k`. `argmax` must come from
    /// [`MaxPool2d::forward`] of the same shape.
    pub fn backward<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        dy: impl Into<Binding<'a>>,
        argmax: impl Into<Binding<'a>>,
        dx: impl Into<Binding<'a>>,
    ) -> Result<()> {
        const OP: &str = "MaxPool2d::backward";
        let (dy, argmax, dx) = (dy.into(), argmax.into(), dx.into());
        dy.expect_len(OP, self.output_len())?;
        argmax.expect_len(OP, self.output_len())?;
        dx.expect_len(OP, self.input_len())?;
        let uniform = (0, Binding::whole(&self.0.uniform));
        if self.0.pairs {
            let bindings = [uniform, (10, argmax), (11, dy), (12, dx)];
            return gpu.dispatch(encoder, &MAX_BACKWARD_2X2, &bindings, self.0.pairs_grid);
        }
        let bindings = [uniform, (4, argmax), (5, dy), (6, dx)];
        if tiles_input(&self.0.shape) {
            gpu.dispatch(encoder, &MAX_BACKWARD_TILED, &bindings, self.0.forward_grid)
        } else {
            gpu.dispatch(encoder, &MAX_BACKWARD, &bindings, self.0.backward_grid)
        }
    }
}

/// A 2×2, stride-2 [`MaxPool2d`] over NCHW `[n, c, h, w]`, output `[n, c, h/2, w/2]` (rounded
/// down); it records through the [`MaxPool2d`] it dereferences to.
#[derive(Debug)]
pub struct MaxPool2x2(MaxPool2d);

impl MaxPool2x2 {
    /// Validates the shape (`n, c ≥ 1` and `h, w ≥ 2`) against the device.
    pub fn new(gpu: &Gpu, n: usize, c: usize, h: usize, w: usize) -> Result<Self> {
        let shape = Pool2dShape::square(n, c, h, w, 2, 2, 0);
        Launch::new(gpu, "MaxPool2x2::new", &shape).map(|l| Self(MaxPool2d(l)))
    }
}

impl Deref for MaxPool2x2 {
    type Target = MaxPool2d;

    fn deref(&self) -> &MaxPool2d {
        &self.0
    }
}

/// An average pooling over NCHW (PyTorch `AvgPool2d` with `count_include_pad=True`: padding
/// counts as zeros and every window divides by `kh·kw`): input `[n, c, h, w]`, output
/// `[n, c, h_out, w_out]`. [`AvgPool2d::global`] averages whole planes.
#[derive(Debug)]
pub struct AvgPool2d(Launch);

impl AvgPool2d {
    /// Validates the shape ([`Pool2dShape::check`], and a non-empty output) against the device.
    pub fn new(gpu: &Gpu, shape: &Pool2dShape) -> Result<Self> {
        Launch::new(gpu, "AvgPool2d::new", shape).map(Self)
    }

    /// Global average pooling `[n, c, h, w] → [n, c, 1, 1]` ([`Pool2dShape::global`]).
    pub fn global(gpu: &Gpu, n: usize, c: usize, h: usize, w: usize) -> Result<Self> {
        Self::new(gpu, &Pool2dShape::global(n, c, h, w))
    }

    /// The pooling shape.
    pub fn shape(&self) -> &Pool2dShape {
        &self.0.shape
    }

    /// Input elements, `n·c·h·w`.
    pub fn input_len(&self) -> usize {
        self.0.input_len()
    }

    /// Output elements, `n·c·h_out·w_out`.
    pub fn output_len(&self) -> usize {
        self.0.output_len()
    }

    /// Records `y`, the window means.
    pub fn forward<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        x: impl Into<Binding<'a>>,
        y: impl Into<Binding<'a>>,
    ) -> Result<()> {
        const OP: &str = "AvgPool2d::forward";
        let (x, y) = (x.into(), y.into());
        x.expect_len(OP, self.input_len())?;
        y.expect_len(OP, self.output_len())?;
        let bindings = [(0, Binding::whole(&self.0.uniform)), (1, x), (2, y)];
        gpu.dispatch(encoder, &AVG_FORWARD, &bindings, self.0.forward_grid)
    }

    /// Records `dx` (every element written): the sum of `dy[k] / (kh·kw)` over the outputs `k`
    /// whose window contains the element, in increasing `k`.
    pub fn backward<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        dy: impl Into<Binding<'a>>,
        dx: impl Into<Binding<'a>>,
    ) -> Result<()> {
        const OP: &str = "AvgPool2d::backward";
        let (dy, dx) = (dy.into(), dx.into());
        dy.expect_len(OP, self.output_len())?;
        dx.expect_len(OP, self.input_len())?;
        let bindings = [(0, Binding::whole(&self.0.uniform)), (5, dy), (6, dx)];
        gpu.dispatch(encoder, &AVG_BACKWARD, &bindings, self.0.backward_grid)
    }
}
