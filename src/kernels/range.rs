//! Launcher of `shaders/range.wgsl`: range initialisation of a quantizer (spec §1.2, §7.1),
//! `x_max = max(0, max x)` and `x_min = min(0, min x)` of one tensor, mirroring the range setter
//! of `reference::model::range_init`.

use crate::gpu::{Binding, Encoder, Gpu, PipelineKey, Shader, Tensor};
use crate::{Error, Result};

/// The range module.
pub static SHADER: Shader = Shader {
    name: "range",
    source: include_str!("../../shaders/range.wgsl"),
    requires: wgpu::Features::empty(),
    trusted: false,
};

/// Threads per workgroup (fixed in the shader).
pub const WORKGROUP: u32 = 256;
/// Elements per thread of the first level (`override PER_THREAD`).
pub const PER_THREAD: u32 = 16;

/// Level 1: one partial (min, max) per workgroup.
pub static PARTIALS: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "partials_main",
    constants: &[("PER_THREAD", PER_THREAD)],
};
/// Level 2: one workgroup combines the partials into `x_max` and `x_min`.
pub static FINALIZE: PipelineKey = PipelineKey {
    shader: &SHADER,
    entry: "finalize",
    constants: &[],
};
/// Every pipeline of this module.
pub static PIPELINES: [&PipelineKey; 2] = [&PARTIALS, &FINALIZE];

/// `struct RangeParams` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct RangeParams {
    len: u32,
    groups: u32,
    _pad: [u32; 2],
}

/// The range of tensors of `len` elements, with its scratch of per-workgroup partials.
#[derive(Debug)]
pub struct RangeInit {
    len: usize,
    uniform: wgpu::Buffer,
    partials: Tensor,
    grid: [u32; 3],
}

impl RangeInit {
    /// Validates `len` (at least 1) against the device and allocates the partials.
    pub fn new(gpu: &Gpu, len: usize) -> Result<Self> {
        const OP: &str = "RangeInit::new";
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
        let groups = len32.div_ceil(WORKGROUP * PER_THREAD);
        let params = RangeParams {
            len: len32,
            groups,
            _pad: [0; 2],
        };
        Ok(Self {
            len,
            grid: gpu.grid(OP, groups)?,
            uniform: gpu.uniform(OP, &params),
            partials: gpu.zeros("range partials", &[2 * groups as usize])?,
        })
    }

    /// Records `x_max[0] = max(0, max x)` and `x_min[0] = min(0, min x)`.
    pub fn record<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut Encoder,
        x: impl Into<Binding<'a>>,
        x_max: impl Into<Binding<'a>>,
        x_min: impl Into<Binding<'a>>,
    ) -> Result<()> {
        const OP: &str = "RangeInit::record";
        let (x, x_max, x_min) = (x.into(), x_max.into(), x_min.into());
        x.expect_len(OP, self.len)?;
        x_max.expect_len(OP, 1)?;
        x_min.expect_len(OP, 1)?;
        let uniform = Binding::whole(&self.uniform);
        let partials = Binding::from(&self.partials);
        gpu.dispatch(
            encoder,
            &PARTIALS,
            &[(0, uniform), (1, x), (2, partials)],
            self.grid,
        )?;
        gpu.dispatch(
            encoder,
            &FINALIZE,
            &[(0, uniform), (2, partials), (3, x_max), (4, x_min)],
            [1, 1, 1],
        )
    }
}
