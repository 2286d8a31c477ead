//! Per-dispatch GPU timing with timestamp queries: where a step's time goes.
//!
//! A profiling [`Gpu`] handle ([`Gpu::profiling`]) gives every compute pass it records a
//! beginning and an end timestamp; [`Gpu::read_profile`] resolves them and sums the durations
//! per kernel (shader and entry point), [`Gpu::read_dispatches`] lists them one by one. Passes run one after another on the queue, so the sum is
//! the step's GPU time, and each kernel's share of it is where the time goes.

use super::{Gpu, PipelineKey, Tensor};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The timestamp queries of a profiling handle and the kernels they belong to.
#[derive(Debug)]
pub(super) struct Profiler {
    queries: wgpu::QuerySet,
    /// Two 64-bit timestamps per dispatch, resolved here (as 32-bit words).
    resolved: Tensor,
    max_dispatches: u32,
    /// `shader::entry` and override constants of every dispatch recorded since the last read.
    kernels: Mutex<Vec<(String, String)>>,
}

impl Profiler {
    /// The timestamp writes of the next dispatch, or a typed error when the queries are used up.
    pub(super) fn next(&self, key: &PipelineKey) -> Result<wgpu::ComputePassTimestampWrites<'_>> {
        let mut kernels = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        let index = kernels.len() as u32;
        if index >= self.max_dispatches {
            return Err(Error::Limit {
                op: "Gpu::dispatch (profiling)",
                what: "dispatches between reads of the profile",
                value: u64::from(index) + 1,
                limit: u64::from(self.max_dispatches),
            });
        }
        let constants: Vec<String> = key
            .constants
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        kernels.push((
            format!("{}::{}", key.shader.name, key.entry),
            constants.join(" "),
        ));
        Ok(wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * index),
            end_of_pass_write_index: Some(2 * index + 1),
        })
    }
}

/// GPU time of one kernel (shader and entry point) over the profiled dispatches.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// `shader::entry`, e.g. `quant::forward`.
    pub kernel: String,
    /// Dispatches of it.
    pub dispatches: usize,
    /// Their summed GPU time in seconds.
    pub seconds: f64,
}

impl KernelTime {
    /// The dispatches summed per kernel, longest first.
    pub fn per_kernel(dispatches: &[DispatchTime]) -> Vec<KernelTime> {
        let mut per_kernel: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
        for d in dispatches {
            let entry = per_kernel.entry(&d.kernel).or_default();
            entry.0 += 1;
            entry.1 += d.seconds;
        }
        let mut times: Vec<KernelTime> = per_kernel
            .into_iter()
            .map(|(kernel, (dispatches, seconds))| KernelTime {
                kernel: kernel.to_string(),
                dispatches,
                seconds,
            })
            .collect();
        times.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        times
    }
}

/// GPU time of one dispatch.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchTime {
    /// `shader::entry`, e.g. `gemm_subgroup::tiles`.
    pub kernel: String,
    /// The pipeline's override constants, `NAME=value` separated by spaces.
    pub constants: String,
    /// GPU time in seconds.
    pub seconds: f64,
}

impl Gpu {
    /// A handle on the same device (sharing its caches) that times every dispatch it records
    /// with timestamp queries, up to `max_dispatches` between two [`Gpu::read_profile`] calls.
    /// Fails unless the device has `Features::TIMESTAMP_QUERY` (requested by [`Gpu::new`]
    /// where the adapter offers it).
    pub fn profiling(&self, max_dispatches: u32) -> Result<Gpu> {
        const OP: &str = "Gpu::profiling";
        if !self
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: format!("{} has no timestamp queries", self.adapter_name()),
            });
        }
        // wgpu allows 4096 queries per set: two per dispatch.
        const MAX_QUERIES: u32 = 4096;
        if max_dispatches == 0 || max_dispatches > MAX_QUERIES / 2 {
            return Err(Error::Limit {
                op: OP,
                what: "profiled dispatches",
                value: u64::from(max_dispatches),
                limit: u64::from(MAX_QUERIES / 2),
            });
        }
        let queries = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * max_dispatches,
        });
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile timestamps (resolved)"),
            size: 16 * u64::from(max_dispatches),
            usage: wgpu::BufferUsages::QUERY_RESOLVE
                | wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let resolved = Tensor::from_buffer(self, buffer, 0, &[4 * max_dispatches as usize])?;
        let profiler = Profiler {
            queries,
            resolved,
            max_dispatches,
            kernels: Mutex::default(),
        };
        Ok(Gpu {
            profiler: Some(std::sync::Arc::new(profiler)),
            ..self.clone()
        })
    }

    /// The GPU time per kernel of every dispatch this profiling handle recorded since the last
    /// read, longest first; the dispatches must have been submitted. **Blocking.** Fails on a
    /// handle made without [`Gpu::profiling`].
    pub fn read_profile(&self) -> Result<Vec<KernelTime>> {
        Ok(KernelTime::per_kernel(&self.read_dispatches()?))
    }

    /// The GPU time of every dispatch this profiling handle recorded since the last read, in
    /// recording order; the dispatches must have been submitted. **Blocking.** Fails on a
    /// handle made without [`Gpu::profiling`].
    pub fn read_dispatches(&self) -> Result<Vec<DispatchTime>> {
        let profiler = self.profiler.as_ref().ok_or(Error::InvalidArgument {
            op: "Gpu::read_dispatches",
            msg: "this handle does not profile (see Gpu::profiling)".into(),
        })?;
        let kernels =
            std::mem::take(&mut *profiler.kernels.lock().unwrap_or_else(|e| e.into_inner()));
        if kernels.is_empty() {
            return Ok(Vec::new());
        }
        let mut enc = self.encoder("resolve profile");
        let count = 2 * kernels.len() as u32;
        enc.raw()
            .resolve_query_set(&profiler.queries, 0..count, profiler.resolved.buffer(), 0);
        self.submit(enc);
        let words = self.read_u32(&profiler.resolved)?;
        let tick = f64::from(self.queue.get_timestamp_period()) * 1e-9;
        let timestamp = |q: usize| u64::from(words[2 * q]) | (u64::from(words[2 * q + 1]) << 32);
        Ok(kernels
            .into_iter()
            .enumerate()
            .map(|(i, (kernel, constants))| DispatchTime {
                kernel,
                constants,
                seconds: timestamp(2 * i + 1).saturating_sub(timestamp(2 * i)) as f64 * tick,
            })
            .collect())
    }
}
