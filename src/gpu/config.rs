//! The kernel configuration chosen per adapter: which tile engine runs the GEMMs and
//! convolutions, which tile shapes the GPU engine may use, split-K targets, and whether the
//! software adapters' loop budget applies.
//!
//! [`KernelConfig::choose`] derives it from the adapter's device type, vendor, limits and
//! subgroup size range when a [`super::Gpu`] is created. It can be overridden through the API
//! ([`super::Gpu::with_engine`], [`super::Gpu::with_kernel_config`]) or, for the engine, the
//! environment variable `BAYESIAN_BITS_ENGINE=cpu|gpu`.

use crate::{Error, Result};

/// Name of the environment variable that forces an engine (`cpu` or `gpu`).
pub const ENGINE_ENV: &str = "BAYESIAN_BITS_ENGINE";

/// Longest reduction (steps per output and dispatch) on software adapters: Mesa's llvmpipe stops
/// any shader after 65 535 loop iterations, so longer reductions are refused (or split) rather
/// than silently cut short. The CPU engine spends one iteration per 8 steps; the GPU engine
/// about 2.5 per step, so it accepts [`MAX_REDUCTION`] / 16 steps.
pub const MAX_REDUCTION: usize = 1 << 18;

/// Which tile engine runs the GEMMs and convolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    /// The register-only engine shaped for CPU drivers (lavapipe): 64 lanes each holding a
    /// 64×8 accumulator tile, no workgroup memory, no barriers.
    Cpu,
    /// The workgroup-memory engine for GPUs: tiles staged in workgroup memory (at most 16 KiB),
    /// 4×4 (or 8×8) accumulators per invocation, no subgroup operations.
    Gpu,
}

impl Engine {
    /// Parses `cpu` or `gpu` (case-insensitive, surrounding spaces ignored).
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu),
            _ => Err(Error::InvalidArgument {
                op: ENGINE_ENV,
                msg: format!("unknown engine {value:?}; expected \"cpu\" or \"gpu\""),
            }),
        }
    }

    /// The engine `BAYESIAN_BITS_ENGINE` asks for: `None` when it is unset or empty, an
    /// [`Error::InvalidArgument`] for a value other than `cpu` or `gpu`.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var(ENGINE_ENV) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => Self::parse(&v).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(Error::InvalidArgument {
                op: ENGINE_ENV,
                msg: format!("value {v:?} is not UTF-8"),
            }),
        }
    }

    /// `"cpu"` or `"gpu"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A tile shape of the GPU engine: a `bm × bn` output tile per workgroup, reduction steps of
/// `bk` staged in workgroup memory, `tm × tn` outputs per invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileShape {
    /// Tile rows.
    pub bm: u32,
    /// Tile columns.
    pub bn: u32,
    /// Reduction steps per K-step.
    pub bk: u32,
    /// Rows per invocation (4 or 8).
    pub tm: u32,
    /// Columns per invocation (4 or 8).
    pub tn: u32,
}

impl TileShape {
    /// The portable default: 32×32 tile, K-step 16, 4×4 per invocation, 64 invocations.
    pub const SMALL: Self = Self::new(32, 32, 16, 4, 4);
    /// Large layers on integrated GPUs: 64×64, K-step 16, 4×4 per invocation, 256 invocations.
    pub const LARGE: Self = Self::new(64, 64, 16, 4, 4);
    /// Large layers on discrete GPUs: 128×128, K-step 8, 8×8 per invocation, 256 invocations.
    pub const XL: Self = Self::new(128, 128, 8, 8, 8);
    /// Few rows, many columns (convolutions with few output channels): 16×128, 128 invocations.
    pub const WIDE: Self = Self::new(16, 128, 16, 4, 4);
    /// Many rows, few columns (fully connected layers with few outputs): 128×16, 128 invocations.
    pub const TALL: Self = Self::new(128, 16, 16, 4, 4);

    /// A shape (no checks: see [`TileShape::is_valid`]).
    pub const fn new(bm: u32, bn: u32, bk: u32, tm: u32, tn: u32) -> Self {
        Self { bm, bn, bk, tm, tn }
    }

    /// Invocations per workgroup: `(bm / tm) · (bn / tn)`.
    pub const fn workgroup(&self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn)
    }

    /// vec4 elements of the staged A tile (`bk · bm / 4`).
    pub const fn a_len(&self) -> u32 {
        self.bk * self.bm / 4
    }

    /// vec4 elements of the staged B tile (`bk · bn / 4`).
    pub const fn b_len(&self) -> u32 {
        self.bk * self.bn / 4
    }

    /// Workgroup memory the shape uses, in bytes.
    pub const fn workgroup_bytes(&self) -> u32 {
        16 * (self.a_len() + self.b_len())
    }

    /// Whether the shader can run the shape: register blocks of 4 or 8, tiles multiples of
    /// them, a workgroup that is a multiple of `bn / 4` (each invocation stages one column quad).
    pub fn is_valid(&self) -> bool {
        let block = |t: u32| t == 4 || t == 8;
        block(self.tm)
            && block(self.tn)
            && self.bm.is_multiple_of(self.tm)
            && self.bn.is_multiple_of(self.tn)
            && self.bk > 0
            && self.workgroup() > 0
            && self.workgroup().is_multiple_of(self.bn / 4)
    }

    /// Whether a device with `limits` can run the shape.
    pub fn fits(&self, limits: &wgpu::Limits) -> bool {
        self.workgroup() <= limits.max_compute_invocations_per_workgroup
            && self.workgroup() <= limits.max_compute_workgroup_size_x
            && self.workgroup_bytes() <= limits.max_compute_workgroup_storage_size
    }
}

impl std::fmt::Display for TileShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}x{} ({}x{} per invocation)",
            self.bm, self.bn, self.bk, self.tm, self.tn
        )
    }
}

/// How a [`KernelConfig`]'s engine was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineSource {
    /// From the adapter's device type.
    Adapter,
    /// From `BAYESIAN_BITS_ENGINE`.
    Env,
    /// Set through the API.
    Api,
}

/// The kernels a [`super::Gpu`] dispatches, chosen per adapter (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// The tile engine for GEMMs and convolutions.
    pub engine: Engine,
    /// How the engine was decided.
    pub source: EngineSource,
    /// The adapter's device type.
    pub device_type: wgpu::DeviceType,
    /// The adapter's PCI vendor id (0 when unknown).
    pub vendor: u32,
    /// Subgroup sizes the adapter reports (min, max).
    pub subgroup_sizes: (u32, u32),
    /// Longest reduction per dispatch in steps of the CPU engine (`Some(MAX_REDUCTION)` on
    /// software adapters only, whose loop budget it guards; the GPU engine accepts a 16th).
    pub max_reduction: Option<usize>,
    /// The GPU engine's tile for layers with many rows and columns ([`TileShape::XL`] on
    /// discrete GPUs, [`TileShape::LARGE`] elsewhere, [`TileShape::SMALL`] where the limits
    /// allow no more); narrow layers use [`TileShape::WIDE`], [`TileShape::TALL`] or
    /// [`TileShape::SMALL`].
    pub large_tile: TileShape,
    /// Workgroups a dispatch should reach before a weight-gradient pass stops splitting its
    /// images (split-K, reduced in a fixed order), for both engines.
    pub split_k_workgroups: usize,
    /// Whether the CPU engine chooses each product's tile
    /// ([`CpuTile::choose`](crate::kernels::gemm::CpuTile::choose): 32 or 16 rows, 512 or 64
    /// columns); `false` runs every product on the first engine's 64 × 512 tile (one pipeline
    /// per kernel: same-binary A/B runs, quick tests).
    pub narrow_cpu_tiles: bool,
}

/// PCI vendor ids used in the choice.
const VENDOR_AMD: u32 = 0x1002;
const VENDOR_NVIDIA: u32 = 0x10de;

impl KernelConfig {
    /// The configuration for an adapter, ignoring the environment: the CPU engine for
    /// `DeviceType::Cpu` adapters, the GPU engine for all others.
    pub fn choose(info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> Self {
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        let discrete = info.device_type == wgpu::DeviceType::DiscreteGpu;
        let big = [VENDOR_AMD, VENDOR_NVIDIA].contains(&info.vendor) && discrete;
        let large_tile = [TileShape::XL, TileShape::LARGE, TileShape::SMALL]
            .into_iter()
            .filter(|t| big || *t != TileShape::XL)
            .find(|t| t.fits(limits))
            .unwrap_or(TileShape::SMALL);
        Self {
            engine: if cpu { Engine::Cpu } else { Engine::Gpu },
            source: EngineSource::Adapter,
            device_type: info.device_type,
            vendor: info.vendor,
            subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
            max_reduction: cpu.then_some(MAX_REDUCTION),
            large_tile,
            // A CPU adapter runs workgroups on one thread per host core (llvmpipe): a few
            // workgroups per thread keep them busy, more only add partial sums to reduce.
            split_k_workgroups: if cpu {
                8 * std::thread::available_parallelism().map_or(4, std::num::NonZeroUsize::get)
            } else if discrete {
                512
            } else {
                128
            },
            narrow_cpu_tiles: true,
        }
    }

    /// [`KernelConfig::choose`], then `BAYESIAN_BITS_ENGINE` if set; an invalid value is an
    /// [`Error::InvalidArgument`].
    pub fn from_env(info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> Result<Self> {
        let config = Self::choose(info, limits);
        Ok(match Engine::from_env()? {
            Some(engine) => Self {
                engine,
                source: EngineSource::Env,
                ..config
            },
            None => config,
        })
    }

    /// This configuration with `engine` forced (source [`EngineSource::Api`]).
    pub fn with_engine(&self, engine: Engine) -> Self {
        Self {
            engine,
            source: EngineSource::Api,
            ..self.clone()
        }
    }

    /// Longest reduction, in steps per output and dispatch, that `engine` accepts on this
    /// adapter (`None`: unbounded).
    pub fn reduction_limit(&self, engine: Engine) -> Option<usize> {
        self.max_reduction.map(|m| match engine {
            Engine::Cpu => m,
            Engine::Gpu => m / 16,
        })
    }
}

impl std::fmt::Display for KernelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.source {
            EngineSource::Adapter => "from the adapter",
            EngineSource::Env => "from BAYESIAN_BITS_ENGINE",
            EngineSource::Api => "set by the application",
        };
        write!(
            f,
            "{} engine ({source}; {:?}",
            self.engine, self.device_type
        )?;
        if self.engine == Engine::Gpu {
            write!(f, ", large tile {}", self.large_tile)?;
        } else if !self.narrow_cpu_tiles {
            write!(f, ", 64x512 tiles only")?;
        }
        write!(f, ", split-K target {} workgroups", self.split_k_workgroups)?;
        if let Some(m) = self.reduction_limit(self.engine) {
            write!(f, ", reductions up to {m} steps")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(device_type: wgpu::DeviceType, vendor: u32) -> wgpu::AdapterInfo {
        wgpu::AdapterInfo {
            name: "test".into(),
            vendor,
            device: 0,
            device_type,
            device_pci_bus_id: String::new(),
            driver: String::new(),
            driver_info: String::new(),
            backend: wgpu::Backend::Vulkan,
            subgroup_min_size: 32,
            subgroup_max_size: 64,
            transient_saves_memory: None,
            limit_bucket: None,
        }
    }

    #[test]
    fn engine_follows_the_device_type() {
        let limits = wgpu::Limits::default();
        let cpu = KernelConfig::choose(&info(wgpu::DeviceType::Cpu, 0x10005), &limits);
        assert_eq!(cpu.engine, Engine::Cpu);
        assert_eq!(cpu.max_reduction, Some(MAX_REDUCTION));
        for t in [
            wgpu::DeviceType::IntegratedGpu,
            wgpu::DeviceType::DiscreteGpu,
            wgpu::DeviceType::VirtualGpu,
            wgpu::DeviceType::Other,
        ] {
            let c = KernelConfig::choose(&info(t, VENDOR_AMD), &limits);
            assert_eq!(c.engine, Engine::Gpu, "{t:?}");
            assert_eq!(c.max_reduction, None, "{t:?}");
        }
        let igpu =
            KernelConfig::choose(&info(wgpu::DeviceType::IntegratedGpu, VENDOR_AMD), &limits);
        assert_eq!(igpu.large_tile, TileShape::LARGE);
        let dgpu =
            KernelConfig::choose(&info(wgpu::DeviceType::DiscreteGpu, VENDOR_NVIDIA), &limits);
        assert_eq!(dgpu.large_tile, TileShape::XL);
        let small = wgpu::Limits {
            max_compute_invocations_per_workgroup: 128,
            ..limits
        };
        let c = KernelConfig::choose(&info(wgpu::DeviceType::DiscreteGpu, VENDOR_NVIDIA), &small);
        assert_eq!(c.large_tile, TileShape::SMALL);
    }

    #[test]
    fn every_tile_shape_is_valid_and_fits_webgpu_defaults() {
        let limits = wgpu::Limits::default();
        for t in [
            TileShape::SMALL,
            TileShape::LARGE,
            TileShape::XL,
            TileShape::WIDE,
            TileShape::TALL,
        ] {
            assert!(t.is_valid(), "{t}");
            assert!(t.fits(&limits), "{t}");
            assert!(t.workgroup_bytes() <= 16 * 1024, "{t}");
        }
    }

    #[test]
    fn engine_names_parse() {
        assert_eq!(Engine::parse("CPU").unwrap(), Engine::Cpu);
        assert_eq!(Engine::parse(" gpu ").unwrap(), Engine::Gpu);
        assert!(matches!(
            Engine::parse("fast"),
            Err(Error::InvalidArgument { op: ENGINE_ENV, .. })
        ));
    }
}
