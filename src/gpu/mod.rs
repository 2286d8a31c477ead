//! Device and adapter, tensors, readback and the pipeline cache.
//!
//! [`Gpu`] is a thin handle over a `wgpu::Device` and `wgpu::Queue`. It either creates them
//! ([`Gpu::new`], honouring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`) or wraps
//! the ones an application already owns ([`Gpu::from_device`]); in the second case the library
//! creates no instance and never blocks outside functions documented as blocking.

pub mod config;
mod encoder;
mod pipeline;
mod pipeline_cache;
mod profile;
mod tensor;

pub use config::{Engine, KernelConfig, TileShape};
pub use encoder::Encoder;
use pipeline::{storage_buffers_per_entry, BoundRanges};
pub use pipeline::{PipelineKey, Shader};
pub use pipeline_cache::PipelineCacheLoad;
use profile::Profiler;
pub use profile::{DispatchTime, KernelTime};
pub use tensor::Tensor;

use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A range of 32-bit words of a buffer, bound to one shader binding: a whole [`Tensor`]
/// (`From<&Tensor>`), a whole uniform buffer ([`Binding::whole`]) or a slice of a packed buffer
/// ([`Binding::range`]).
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    buffer: &'a wgpu::Buffer,
    /// Offset in bytes.
    offset: u64,
    /// Length in 32-bit words.
    len: usize,
}

impl<'a> Binding<'a> {
    /// The whole buffer (e.g. a uniform buffer).
    pub fn whole(buffer: &'a wgpu::Buffer) -> Self {
        Self {
            buffer,
            offset: 0,
            len: (buffer.size() / 4) as usize,
        }
    }

    /// Words `offset..offset + len` of `buffer`. Fails unless the range is non-empty, lies inside
    /// the buffer, fits one storage binding, and starts at a multiple of the device's
    /// `min_storage_buffer_offset_alignment`.
    pub fn range(gpu: &Gpu, buffer: &'a wgpu::Buffer, offset: usize, len: usize) -> Result<Self> {
        const OP: &str = "Binding::range";
        let align = u64::from(gpu.limits().min_storage_buffer_offset_alignment);
        let start = (offset as u64).checked_mul(4);
        let end = (offset as u64)
            .checked_add(len as u64)
            .and_then(|e| e.checked_mul(4));
        let fits = matches!((start, end), (Some(s), Some(e)) if e <= buffer.size() && s.is_multiple_of(align));
        if len == 0 || !fits {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: format!(
                    "words {offset}..{} of a {}-byte buffer (offsets must be multiples of {align} bytes)",
                    offset + len,
                    buffer.size()
                ),
            });
        }
        gpu.check_binding(OP, len)?;
        Ok(Self {
            buffer,
            offset: 4 * offset as u64,
            len,
        })
    }

    /// Number of 32-bit words.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range holds no words (only an empty tensor's).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer.
    pub fn buffer(&self) -> &'a wgpu::Buffer {
        self.buffer
    }

    /// Offset into the buffer in bytes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Fails with a [`Error::Shape`] naming `op` unless the range holds `expected` words.
    pub fn expect_len(&self, op: &'static str, expected: usize) -> Result<()> {
        if self.len == expected {
            return Ok(());
        }
        Err(Error::Shape {
            op,
            expected: format!("{expected} elements"),
            actual: format!("{} elements", self.len),
        })
    }

    fn buffer_binding(&self) -> wgpu::BufferBinding<'a> {
        // An empty tensor still owns a 4-byte buffer; bind at least one word.
        let bytes = (4 * self.len as u64)
            .max(4)
            .min(self.buffer.size() - self.offset);
        wgpu::BufferBinding {
            buffer: self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new(bytes),
        }
    }
}

impl<'a> From<&'a Tensor> for Binding<'a> {
    fn from(t: &'a Tensor) -> Self {
        Self {
            buffer: t.buffer(),
            offset: t.offset(),
            len: t.len(),
        }
    }
}

/// Optional features the kernels use when the device has them.
pub const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SUBGROUP
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::PIPELINE_CACHE);

/// A GPU device and queue with the library's caches. Cheap to clone (all fields are shared).
#[derive(Clone)]
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: Option<wgpu::AdapterInfo>,
    pipelines: Arc<Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>>,
    modules: Arc<Mutex<HashMap<&'static str, wgpu::ShaderModule>>>,
    /// The driver cache pipelines are created with ([`Gpu::attach_pipeline_cache`]).
    pipeline_cache: Arc<Mutex<Option<wgpu::PipelineCache>>>,
    bind_groups: Arc<Mutex<HashMap<(PipelineKey, BoundRanges), wgpu::BindGroup>>>,
    /// False in a [`Gpu::preparing`] handle: dispatches create their pipeline and bind group
    /// but record nothing.
    records: bool,
    staging: Arc<Mutex<Vec<wgpu::Buffer>>>,
    constants: Arc<Mutex<HashMap<Vec<u8>, wgpu::Buffer>>>,
    submissions: Arc<std::sync::atomic::AtomicU64>,
    config: KernelConfig,
    /// Timestamp queries of a [`Gpu::profiling`] handle.
    profiler: Option<Arc<Profiler>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.adapter_name())
            .finish_non_exhaustive()
    }
}

impl Gpu {
    /// Chooses an adapter and creates a device.
    ///
    /// The standard wgpu variables apply: `WGPU_BACKEND` (e.g. `vulkan`), `WGPU_ADAPTER_NAME`
    /// (a case-insensitive substring of the adapter name) and `WGPU_POWER_PREF` (`low`/`high`).
    /// The adapter's full limits and the [`OPTIONAL_FEATURES`] it supports are requested.
    pub async fn new() -> Result<Self> {
        Self::with_adapter_name(std::env::var("WGPU_ADAPTER_NAME").ok().as_deref()).await
    }

    /// [`Gpu::new`] with the adapter chosen by a name substring instead of `WGPU_ADAPTER_NAME`
    /// (`None`: wgpu's default choice under `WGPU_POWER_PREF`).
    pub async fn with_adapter_name(name: Option<&str>) -> Result<Self> {
        // A mistyped BAYESIAN_BITS_ENGINE is an error before any device is created.
        Engine::from_env()?;
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = Self::choose_adapter(&instance, name).await?;
        let info = adapter.get_info();
        log::info!(
            "adapter: {} ({:?}, {:?}), driver {}",
            info.name,
            info.backend,
            info.device_type,
            info.driver_info
        );
        if info.device_type == wgpu::DeviceType::Cpu {
            log::warn!("{} is a software (CPU) adapter: expect training to be thousands of times slower than on a GPU", info.name);
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("bayesian-bits"),
                required_features: adapter.features() & OPTIONAL_FEATURES,
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await?;
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            log::error!("uncaptured wgpu error: {e}")
        }));
        let mut gpu = Self::from_device(device, queue);
        gpu.info = Some(info);
        Ok(gpu)
    }

    /// Blocking form of [`Gpu::new`] (runs the future with `pollster`).
    pub fn new_blocking() -> Result<Self> {
        pollster::block_on(Self::new())
    }

    /// Blocking form of [`Gpu::with_adapter_name`]; `None` falls back to `WGPU_ADAPTER_NAME`.
    pub fn new_blocking_with(name: Option<&str>) -> Result<Self> {
        match name {
            Some(name) => pollster::block_on(Self::with_adapter_name(Some(name))),
            None => Self::new_blocking(),
        }
    }

    async fn choose_adapter(
        instance: &wgpu::Instance,
        name: Option<&str>,
    ) -> Result<wgpu::Adapter> {
        if let Some(wanted) = name {
            // wgpu's own helper panics when nothing matches; list what exists instead.
            let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            let wanted_lower = wanted.to_lowercase();
            return adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&wanted_lower))
                .ok_or_else(|| Error::NoAdapter {
                    detail: format!("adapter name {wanted:?} matches none of {names:?}"),
                });
        }
        instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::from_env().unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter {
                detail: e.to_string(),
            })
    }

    /// Wraps a device and queue owned by the application. The library uses whatever features
    /// the application enabled (portable kernels where `SUBGROUP` is absent).
    ///
    /// The [`KernelConfig`] is chosen from the device's adapter information and limits, and
    /// `BAYESIAN_BITS_ENGINE`; an invalid value of that variable is logged as an error and
    /// ignored here (use [`Gpu::with_engine`] to choose in code).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        let limits = device.limits();
        let config = KernelConfig::from_env(&info, &limits).unwrap_or_else(|e| {
            log::error!("{e}; choosing the engine from the adapter");
            KernelConfig::choose(&info, &limits)
        });
        log::info!("kernels for {}: {config}", info.name);
        Self {
            device,
            queue,
            info: None,
            pipelines: Arc::default(),
            modules: Arc::default(),
            pipeline_cache: Arc::default(),
            bind_groups: Arc::default(),
            records: true,
            staging: Arc::default(),
            constants: Arc::default(),
            submissions: Arc::default(),
            config,
            profiler: None,
        }
    }

    /// The kernel configuration (engine, tile shapes, split-K targets) this handle dispatches.
    pub fn kernel_config(&self) -> &KernelConfig {
        &self.config
    }

    /// The tile engine this handle dispatches.
    pub fn engine(&self) -> Engine {
        self.config.engine
    }

    /// A handle on the same device (sharing its caches) that dispatches `engine`.
    pub fn with_engine(&self, engine: Engine) -> Self {
        self.with_kernel_config(self.config.with_engine(engine))
    }

    /// A handle on the same device (sharing its caches) with another kernel configuration.
    pub fn with_kernel_config(&self, config: KernelConfig) -> Self {
        log::info!("kernels for {}: {config}", self.adapter_name());
        Self {
            config,
            ..self.clone()
        }
    }

    /// Replaces this handle's kernel configuration (other clones keep theirs).
    pub fn set_kernel_config(&mut self, config: KernelConfig) {
        log::info!("kernels for {}: {config}", self.adapter_name());
        self.config = config;
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Adapter information, when the library chose the adapter itself.
    pub fn adapter_info(&self) -> Option<&wgpu::AdapterInfo> {
        self.info.as_ref()
    }

    /// The adapter's name, or `"application device"` for [`Gpu::from_device`].
    pub fn adapter_name(&self) -> &str {
        self.info
            .as_ref()
            .map_or("application device", |i| i.name.as_str())
    }

    /// Whether subgroup operations are available to the kernels.
    pub fn has_subgroups(&self) -> bool {
        self.device.features().contains(wgpu::Features::SUBGROUP)
    }

    /// The device's limits.
    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// A new command encoder.
    pub fn encoder(&self, label: &str) -> Encoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
            .into()
    }

    /// Submits an encoder's commands.
    pub fn submit(&self, encoder: Encoder) -> wgpu::SubmissionIndex {
        self.submissions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.queue.submit([encoder.finish()])
    }

    /// Queue submissions made through this handle (and its clones) so far, e.g. to check that
    /// an operation records into one command buffer.
    pub fn submissions(&self) -> u64 {
        self.submissions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blocks until all submitted work has finished. **Blocking.**
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(drop)
            .map_err(|e| Error::Gpu {
                op: "wait",
                msg: e.to_string(),
            })
    }

    /// [`Gpu::grid`] for a workgroup count computed in 64 bits (tiles × batch entries).
    pub fn grid_for_count(&self, op: &'static str, workgroups: u64) -> Result<[u32; 3]> {
        let max = u64::from(self.device.limits().max_compute_workgroups_per_dimension);
        match u32::try_from(workgroups) {
            Ok(w) => self.grid(op, w),
            Err(_) => Err(Error::Limit {
                op,
                what: "workgroups per dispatch",
                value: workgroups,
                limit: max * max,
            }),
        }
    }

    /// Checks that a dispatch of `workgroups` fits the per-dimension limit, returning its grid.
    ///
    /// Grids are 2-D when the count exceeds one dimension; kernels linearise
    /// `id.x + id.y * num_workgroups.x` and ignore ids past the count they are given.
    pub fn grid(&self, op: &'static str, workgroups: u32) -> Result<[u32; 3]> {
        let max = self.device.limits().max_compute_workgroups_per_dimension;
        if workgroups <= max {
            return Ok([workgroups.max(1), 1, 1]);
        }
        let rows = workgroups.div_ceil(max);
        if rows > max {
            return Err(Error::Limit {
                op,
                what: "workgroups per dispatch",
                value: u64::from(workgroups),
                limit: u64::from(max) * u64::from(max),
            });
        }
        Ok([max, rows, 1])
    }

    /// Records one compute dispatch of `key` with `(binding number, Binding)` pairs in group 0:
    /// whole tensors, tensor views or ranges of packed buffers.
    ///
    /// Pipelines use automatic layouts, so exactly the bindings the entry point uses are given.
    /// The bind group is created on the first dispatch with these ranges and reused after that
    /// (a model's steps bind the same ranges every time); see [`Gpu::clear_caches`].
    pub fn dispatch(
        &self,
        encoder: &mut Encoder,
        key: &PipelineKey,
        bindings: &[(u32, Binding)],
        grid: [u32; 3],
    ) -> Result<()> {
        let pipeline = self.pipeline(key)?;
        let bind_group = self.bind_group(key, &pipeline, bindings);
        if !self.records {
            return Ok(());
        }
        let timestamp_writes = match &self.profiler {
            Some(p) => Some(p.next(key)?),
            None => None,
        };
        let pass = encoder.compute_pass(key.entry, timestamp_writes);
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        Ok(())
    }

    fn bind_group(
        &self,
        key: &PipelineKey,
        pipeline: &wgpu::ComputePipeline,
        bindings: &[(u32, Binding)],
    ) -> wgpu::BindGroup {
        /// Bind groups kept before the cache starts over (bounds the buffers it keeps alive).
        const MAX_BIND_GROUPS: usize = 8192;
        let resources: Vec<(u32, wgpu::BufferBinding)> = bindings
            .iter()
            .map(|(binding, b)| (*binding, b.buffer_binding()))
            .collect();
        let ranges: BoundRanges = resources
            .iter()
            .map(|(binding, r)| {
                (
                    *binding,
                    r.buffer.clone(),
                    r.offset,
                    r.size.map_or(0, u64::from),
                )
            })
            .collect();
        let cache_key = (key.clone(), ranges);
        let mut cache = self.bind_groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(group) = cache.get(&cache_key) {
            return group.clone();
        }
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .into_iter()
            .map(|(binding, r)| wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(r),
            })
            .collect();
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(key.entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        if cache.len() >= MAX_BIND_GROUPS {
            cache.clear();
        }
        cache.insert(cache_key, group.clone());
        group
    }

    /// A handle on the same device and caches whose dispatches create their pipelines and bind
    /// groups but record nothing: running a step's recording through it prepares that step.
    pub fn preparing(&self) -> Self {
        Self {
            records: false,
            ..self.clone()
        }
    }

    /// Drops the cached bind groups, which keep the buffers they bind alive. Call it after
    /// dropping a model (or other tensors) when the device should free their memory now.
    pub fn clear_caches(&self) {
        self.bind_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.constants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// A uniform buffer holding `value`, for kernel parameters fixed at record time.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// A uniform buffer holding `value`, shared by every call with the same bytes: recording a
    /// dispatch with parameters seen before allocates nothing.
    ///
    /// The buffer must never be written (not by `write_buffer`, not by a shader): other
    /// dispatches may bind the same buffer. Use [`Gpu::uniform`] for parameters that change.
    pub fn constant_uniform<T: bytemuck::Pod>(&self, value: &T) -> wgpu::Buffer {
        /// Distinct parameter sets kept before the cache starts over (bounds its memory).
        const MAX_CONSTANTS: usize = 4096;
        let bytes = bytemuck::bytes_of(value);
        let mut cache = self.constants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(buffer) = cache.get(bytes) {
            return buffer.clone();
        }
        if cache.len() >= MAX_CONSTANTS {
            // Recorded commands keep their buffers alive; dropping the cache's handles is safe.
            cache.clear();
        }
        use wgpu::util::DeviceExt;
        let buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("constant uniform"),
                contents: bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        cache.insert(bytes.to_vec(), buffer.clone());
        buffer
    }

    /// Creates the pipelines of `keys` now, so that the first dispatch of each does not stall.
    pub fn prepare<'a>(&self, keys: impl IntoIterator<Item = &'a PipelineKey>) -> Result<()> {
        keys.into_iter()
            .try_for_each(|k| self.pipeline(k).map(drop))
    }

    /// The compute pipeline for `key`, created on first use and cached.
    ///
    /// Before creating it, checks the features the shader requires and the storage buffers its
    /// entry point binds against the device; creation runs inside wgpu error scopes, so a
    /// failure is an [`Error`], never a call of the application's uncaptured-error handler.
    pub fn pipeline(&self, key: &PipelineKey) -> Result<wgpu::ComputePipeline> {
        const OP: &str = "Gpu::pipeline";
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return Ok(p.clone());
        }
        let missing = key.shader.requires - self.device.features();
        if !missing.is_empty() {
            return Err(Error::MissingFeature {
                op: OP,
                what: format!("{}::{}", key.shader.name, key.entry),
                features: format!("{missing:?}"),
            });
        }
        let storage = storage_buffers_per_entry(key.shader)?;
        let used = storage.get(key.entry).copied().ok_or_else(|| Error::Gpu {
            op: OP,
            msg: format!(
                "shader {} has no entry point {}",
                key.shader.name, key.entry
            ),
        })?;
        let limit = self.device.limits().max_storage_buffers_per_shader_stage;
        if used > limit {
            return Err(Error::Limit {
                op: OP,
                what: "storage buffers per shader stage",
                value: u64::from(used),
                limit: u64::from(limit),
            });
        }
        let constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|&(n, v)| (n, f64::from(v)))
            .collect();
        let cache = self
            .pipeline_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let pipeline = self.scoped(OP, || {
            let module = self.module(key.shader);
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(key.entry),
                    layout: None,
                    module: &module,
                    entry_point: Some(key.entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: cache.as_ref(),
                })
        })?;
        // Another thread may have created the same pipeline meanwhile: everyone uses the first
        // one, since bind groups made for one pipeline's automatic layout fit no other.
        Ok(self
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_insert(pipeline)
            .clone())
    }

    fn module(&self, shader: &'static Shader) -> wgpu::ShaderModule {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        modules
            .entry(shader.name)
            .or_insert_with(|| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(shader.source.into()),
                };
                if !shader.trusted {
                    return self.device.create_shader_module(desc);
                }
                let mut checks = wgpu::ShaderRuntimeChecks::checked();
                checks.force_loop_bounding = false;
                checks.bounds_checks = false;
                // SAFETY: `trusted` promises that every loop of this module ends and every index
                // stays in bounds for the parameters its launchers accept (they check tensor
                // lengths and shapes first); division checks stay.
                unsafe { self.device.create_shader_module_trusted(desc, checks) }
            })
            .clone()
    }

    /// Runs `f` inside validation, internal and out-of-memory error scopes and returns the
    /// first error they caught. Native wgpu reports these errors synchronously, so waiting for
    /// the scopes does not block on the GPU.
    fn scoped<T>(&self, op: &'static str, f: impl FnOnce() -> T) -> Result<T> {
        let scopes = [
            wgpu::ErrorFilter::OutOfMemory,
            wgpu::ErrorFilter::Internal,
            wgpu::ErrorFilter::Validation,
        ]
        .map(|filter| self.device.push_error_scope(filter));
        let value = f();
        let mut error = None;
        for scope in scopes.into_iter().rev() {
            error = error.or(pollster::block_on(scope.pop()));
        }
        match error {
            None => Ok(value),
            Some(e) => {
                if matches!(e, wgpu::Error::Validation { .. }) {
                    // A module that failed to compile stays invalid: do not reuse it.
                    self.modules
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clear();
                }
                Err(Error::Gpu {
                    op,
                    msg: e.to_string(),
                })
            }
        }
    }

    fn take_staging(&self, bytes: u64) -> wgpu::Buffer {
        let mut pool = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = pool.iter().position(|b| b.size() >= bytes) {
            return pool.swap_remove(i);
        }
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback staging"),
            size: bytes.next_power_of_two().max(256),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Copies `tensors` into a reused staging buffer and returns a future of their contents.
    ///
    /// Non-blocking: the future resolves once the device has been polled past the copy
    /// (an application that owns the device polls it as usual; [`Gpu::read_blocking`] does it).
    pub fn read_async(
        &self,
        tensors: &[&Tensor],
    ) -> impl std::future::Future<Output = Result<Vec<Vec<f32>>>> + use<> {
        // A buffer without COPY_SRC (e.g. from `Tensor::from_buffer`) would fail wgpu validation.
        let readable = tensors
            .iter()
            .try_for_each(|t| t.expect_usage("Gpu::read", wgpu::BufferUsages::COPY_SRC));
        if let Err(e) = readable {
            return futures::future::Either::Left(futures::future::ready(Err(e)));
        }
        let total: u64 = tensors.iter().map(|t| t.bytes()).sum();
        let staging = self.take_staging(total.max(4));
        let mut encoder = self.encoder("readback");
        let mut offset = 0;
        let mut ranges = Vec::with_capacity(tensors.len());
        for t in tensors {
            encoder.copy_buffer_to_buffer(t.buffer(), t.offset(), &staging, offset, t.bytes());
            ranges.push((offset as usize, t.len()));
            offset += t.bytes();
        }
        self.submit(encoder);
        let (tx, rx) = futures::channel::oneshot::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
        let pool = self.staging.clone();
        futures::future::Either::Right(async move {
            rx.await.map_err(|_| Error::Gpu {
                op: "readback",
                msg: "device lost before the map finished".into(),
            })??;
            let out = {
                let view = staging
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| Error::Gpu {
                        op: "readback",
                        msg: e.to_string(),
                    })?;
                let words: &[f32] = bytemuck::cast_slice(&view);
                ranges
                    .iter()
                    .map(|&(o, n)| words[o / 4..o / 4 + n].to_vec())
                    .collect()
            };
            staging.unmap();
            pool.lock().unwrap_or_else(|e| e.into_inner()).push(staging);
            Ok(out)
        })
    }

    /// Reads tensors back to the host in one round trip. **Blocking**: polls the device.
    pub fn read_blocking(&self, tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
        let future = self.read_async(tensors);
        self.wait()?;
        pollster::block_on(future)
    }

    /// Reads one tensor back. **Blocking**.
    pub fn read(&self, tensor: &Tensor) -> Result<Vec<f32>> {
        Ok(self.read_blocking(&[tensor])?.remove(0))
    }

    /// Reads one tensor of 32-bit unsigned integers back. **Blocking**.
    pub fn read_u32(&self, tensor: &Tensor) -> Result<Vec<u32>> {
        Ok(self.read(tensor)?.into_iter().map(f32::to_bits).collect())
    }
}
