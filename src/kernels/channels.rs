//! Per-channel layouts shared by the epilogue and batch-norm kernels (`shaders/channels.wgsl`,
//! prepended to `shaders/epilogue.wgsl` and `shaders/bn.wgsl`).

use crate::gpu::Gpu;
use crate::{Error, Result};

/// Threads per workgroup of every entry point that includes `channels.wgsl`.
pub const WORKGROUP: u32 = 256;
/// Elements per thread of the elementwise entry points (`override PER_THREAD`).
pub const PER_THREAD: u32 = 4;
/// Elements per reduction slice: one workgroup reduces one slice of one channel.
pub const SLICE_LEN: u32 = 2048;
// The vec4 entries start every slice at a multiple of 4 elements.
const _: () = assert!(SLICE_LEN.is_multiple_of(4));

/// `ChannelParams.flags`: apply a ReLU after the affine map.
pub(crate) const FLAG_RELU: u32 = 1;
/// `ChannelParams.flags`: the scale is 1 (the scale binding is not read).
pub(crate) const FLAG_UNIT_SCALE: u32 = 2;
/// `ChannelParams.flags`: apply a ReLU6 after the affine map.
pub(crate) const FLAG_RELU6: u32 = 4;

/// `struct ChannelParams` of `channels.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ChannelParams {
    /// Elements, `n · channels · hw`.
    pub len: u32,
    /// Channels.
    pub channels: u32,
    /// Consecutive elements of one channel (`h·w`; 1 for `[n, c]`; the row length of a weight).
    pub hw: u32,
    /// Elements per channel, `n · hw`.
    pub m: u32,
    /// Reduction slices per channel.
    pub slices_per_channel: u32,
    /// Elements per reduction slice.
    pub slice_len: u32,
    /// Reduction slices in total.
    pub num_slices: u32,
    /// Bit set of the launcher's options (ReLU, ReLU6, unit scale).
    pub flags: u32,
}

/// A tensor `[n, channels, hw]` seen per channel: element `i` belongs to channel
/// `(i / hw) % channels`. Covers NCHW activations, `[n, c]` activations and weights
/// `[c_out, …]` (per output channel along axis 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelLayout {
    /// Batch size (1 for a weight).
    pub n: usize,
    /// Channels.
    pub channels: usize,
    /// Consecutive elements of one channel.
    pub hw: usize,
}

impl ChannelLayout {
    /// NCHW activations: channel `(i / (h·w)) % c`, reductions over `(N, H, W)`.
    pub const fn nchw(n: usize, c: usize, h: usize, w: usize) -> Self {
        Self {
            n,
            channels: c,
            hw: h * w,
        }
    }

    /// `[n, c]` activations (fully connected layers): channel `i % c`, reductions over `N`.
    pub const fn rows(n: usize, c: usize) -> Self {
        Self {
            n,
            channels: c,
            hw: 1,
        }
    }

    /// A weight `[c_out, per_channel]` (conv OIHW or linear `[out, in]`), channel = axis 0.
    pub const fn weight(c_out: usize, per_channel: usize) -> Self {
        Self {
            n: 1,
            channels: c_out,
            hw: per_channel,
        }
    }

    /// Number of elements (saturating: an overflowing layout fails validation).
    pub const fn len(&self) -> usize {
        self.n.saturating_mul(self.channels).saturating_mul(self.hw)
    }

    /// Whether the layout has no elements.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements per channel, `n · hw` (saturating).
    pub const fn per_channel(&self) -> usize {
        self.n.saturating_mul(self.hw)
    }

    /// Validates the layout against the device and prepares its kernel parameters.
    pub(crate) fn plan(&self, gpu: &Gpu, op: &'static str, flags: u32) -> Result<ChannelPlan> {
        if self.is_empty() {
            return Err(Error::Shape {
                op,
                expected: "a non-empty [n, channels, hw] tensor".into(),
                actual: format!("{self:?}"),
            });
        }
        gpu.check_binding(op, self.len())?;
        let len = u32::try_from(self.len()).map_err(|_| Error::Limit {
            op,
            what: "elements per tensor",
            value: self.len() as u64,
            limit: u64::from(u32::MAX),
        })?;
        let (channels, hw) = (self.channels as u32, self.hw as u32);
        let m = len / channels;
        let slices_per_channel = m.div_ceil(SLICE_LEN);
        let num_slices = slices_per_channel * channels;
        let params = ChannelParams {
            len,
            channels,
            hw,
            m,
            slices_per_channel,
            slice_len: SLICE_LEN,
            num_slices,
            flags,
        };
        Ok(ChannelPlan {
            elementwise: gpu.grid(op, len.div_ceil(WORKGROUP * PER_THREAD))?,
            quads: hw.is_multiple_of(4),
            elementwise_quads: gpu.grid(op, (len / 4).div_ceil(WORKGROUP * PER_THREAD))?,
            slices: gpu.grid(op, num_slices)?,
            channel_threads: gpu.grid(op, channels.div_ceil(WORKGROUP))?,
            channel_groups: gpu.grid(op, channels)?,
            uniform: gpu.uniform(op, &params),
            params,
        })
    }
}

/// A validated [`ChannelLayout`] with its uniform buffer and dispatch grids.
#[derive(Debug)]
pub(crate) struct ChannelPlan {
    /// The values in `uniform`.
    pub params: ChannelParams,
    /// Uniform `ChannelParams`, binding 0.
    pub uniform: wgpu::Buffer,
    /// One thread per `PER_THREAD` elements.
    pub elementwise: [u32; 3],
    /// `hw` is a multiple of 4: every aligned group of four elements lies in one channel, and
    /// the slices start at multiples of 4 (vec4 views).
    pub quads: bool,
    /// One thread per `PER_THREAD` groups of four elements (with `quads`).
    pub elementwise_quads: [u32; 3],
    /// One workgroup per reduction slice.
    pub slices: [u32; 3],
    /// One thread per channel.
    pub channel_threads: [u32; 3],
    /// One workgroup per channel.
    pub channel_groups: [u32; 3],
}

impl ChannelPlan {
    /// Words of the level-1 partials buffer (one `vec2` per slice).
    pub fn partials_len(&self) -> usize {
        2 * self.params.num_slices as usize
    }
}
