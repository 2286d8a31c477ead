//! Register use of the crate's compute pipelines on AMD GPUs, without a GPU.
//!
//! Mesa's RADV Vulkan driver can create a *null device* for a chosen AMD chip
//! (`RADV_FORCE_FAMILY`): it runs the real shader compiler (ACO) but drives no hardware.
//! `VK_KHR_pipeline_executable_properties` then reports what each compiled pipeline costs.
//!
//! Each pipeline is turned into SPIR-V by naga the way wgpu's Vulkan backend does it (override
//! constants applied, one entry point, the same bounds-check and loop-bounding options), its
//! descriptor set layouts are derived from the naga module, and it is compiled with
//! `VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR`.
//!
//! The driver reads its environment once, when the Vulkan loader starts, so every family runs
//! in a child process: [`collect`] re-executes the current program with [`CHILD_ENV`] set, and
//! the child, reaching the same [`collect`] call with the same pipelines, compiles them and
//! prints one line per pipeline instead of returning.
//!
//! Shared by `examples/isa_stats` and `tests/isa_stats.rs`.

use ash::vk;
use bayesian_bits::gpu::PipelineKey;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::process::Command;

/// The AMD families checked: three laptop iGPUs (GCN5, RDNA2, RDNA3) and one desktop RDNA2 chip.
pub const FAMILIES: [&str; 4] = ["RENOIR", "REMBRANDT", "GFX1103_R1", "NAVI21"];

/// The RADV driver manifest that Mesa's `mesa-vulkan-drivers` package installs.
const ICD_FILE: &str = "radeon_icd.x86_64.json";

/// Where Vulkan loaders look for driver manifests.
const ICD_DIRS: [&str; 3] = [
    "/usr/share/vulkan/icd.d",
    "/usr/local/share/vulkan/icd.d",
    "/etc/vulkan/icd.d",
];

/// Set in a child process: the family it compiles for.
pub const CHILD_ENV: &str = "BAYESIAN_BITS_ISA_STATS_FAMILY";

/// Prefix of the lines a child prints for its parent.
const TAG: &str = "ISA-STATS";

/// What the shader compiler reports for one pipeline on one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Vector registers per lane.
    pub vgprs: u64,
    /// Vector registers spilled to memory.
    pub spilled_vgprs: u64,
    /// Scalar registers spilled.
    pub spilled_sgprs: u64,
    /// Scratch (spill) memory in bytes per wave.
    pub scratch: u64,
    /// Workgroup memory (LDS) in bytes per workgroup.
    pub lds: u64,
    /// Waves (subgroups) that fit on one SIMD.
    pub waves: u64,
    /// Instructions in the compiled shader.
    pub instructions: u64,
    /// Lanes per wave the driver chose.
    pub subgroup_size: u32,
}

impl Stats {
    /// Every field, labelled.
    pub fn summary(&self) -> String {
        format!(
            "{} VGPRs, {} spilled VGPRs, {} spilled SGPRs, {} scratch, {} LDS, {} waves/SIMD, \
             {} instructions, wave{}",
            self.vgprs,
            self.spilled_vgprs,
            self.spilled_sgprs,
            bytes(self.scratch),
            bytes(self.lds),
            self.waves,
            self.instructions,
            self.subgroup_size
        )
    }

    fn from_fields(subgroup_size: u32, fields: &BTreeMap<String, String>) -> Result<Self, String> {
        let get = |name: &str| -> Result<u64, String> {
            let value = fields
                .get(name)
                .ok_or_else(|| format!("the driver reported no statistic {name:?}"))?;
            value
                .parse::<f64>()
                .map(|v| v.max(0.0) as u64)
                .map_err(|e| format!("statistic {name:?} = {value:?}: {e}"))
        };
        Ok(Self {
            vgprs: get("VGPRs")?,
            spilled_vgprs: get("Spilled VGPRs")?,
            spilled_sgprs: get("Spilled SGPRs")?,
            scratch: get("Scratch size")?,
            lds: get("LDS size")?,
            waves: get("Subgroups per SIMD")?,
            instructions: get("Instructions")?,
            subgroup_size,
        })
    }
}

/// A byte count in bytes or KiB (`K`).
pub fn bytes(n: u64) -> String {
    if n >= 1024 {
        format!("{:.0}K", n as f64 / 1024.0)
    } else {
        n.to_string()
    }
}

/// One pipeline on one family.
#[derive(Clone, Debug)]
pub struct Record {
    /// Index into the pipelines given to [`collect`].
    pub pipeline: usize,
    /// The family.
    pub family: &'static str,
    /// The statistics, or why the pipeline did not compile.
    pub stats: Result<Stats, String>,
}

/// `shader::entry` and the override constants, e.g. `gemm_portable::tiles MODE=0 TM=64`.
pub fn label(key: &PipelineKey) -> String {
    let mut s = format!("{}::{}", key.shader.name, key.entry);
    for (name, value) in key.constants {
        s.push_str(&format!(" {name}={value}"));
    }
    s
}

/// The RADV manifest, or an error saying how to install it.
fn icd() -> Result<PathBuf, String> {
    ICD_DIRS
        .iter()
        .map(|dir| PathBuf::from(dir).join(ICD_FILE))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "Mesa's RADV Vulkan driver is not installed ({ICD_FILE} is in none of {ICD_DIRS:?}): \
                 install it (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`) to check \
                 register use on AMD GPUs without a GPU"
            )
        })
}

/// Compiles `pipelines` for every family in `families` (e.g. [`FAMILIES`]) and returns one
/// record per pipeline and family, in family order.
///
/// The families run in child processes: the current executable is started again with
/// `child_args` (the arguments that make it reach this call with the same `pipelines`) and
/// [`CHILD_ENV`] set. In such a child this function compiles, prints and exits the process.
pub fn collect(
    pipelines: &[&PipelineKey],
    families: &[&'static str],
    child_args: &[String],
) -> Result<Vec<Record>, String> {
    if let Ok(family) = std::env::var(CHILD_ENV) {
        let code = match child(&family, pipelines) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{TAG}: {family}: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    let icd = icd()?;
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    let exe = &exe;
    // Each child gets an empty cache directory: RADV keeps its internal (meta) pipelines in
    // `$XDG_CACHE_HOME/radv_builtin_shaders64`, and when that file holds a family's pipelines,
    // Mesa 22.3 builds them all at device creation, which on the null device of `REMBRANDT`
    // divides by zero (SIGFPE).
    let caches = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let outputs: Vec<Result<std::process::Output, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = families
            .iter()
            .map(|family| {
                let cache = caches.path().join(family);
                let mut cmd = Command::new(exe);
                cmd.args(child_args)
                    .env(CHILD_ENV, family)
                    .env("RADV_FORCE_FAMILY", family)
                    .env("VK_ICD_FILENAMES", &icd)
                    .env("VK_DRIVER_FILES", &icd)
                    // Mesa's device-select layer gets in the way of the null device.
                    .env("NODEVICE_SELECT", "1")
                    // Compile for real instead of reading Mesa's on-disk cache.
                    .env("MESA_SHADER_CACHE_DISABLE", "true")
                    .env("XDG_CACHE_HOME", &cache);
                if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
                    cmd.env("XDG_RUNTIME_DIR", std::env::temp_dir());
                }
                s.spawn(move || {
                    std::fs::create_dir(&cache)
                        .map_err(|e| format!("{family}: {}: {e}", cache.display()))?;
                    cmd.output()
                        .map_err(|e| format!("{family}: starting {}: {e}", exe.display()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("child thread panicked".into()))
            })
            .collect()
    });
    let mut records = Vec::new();
    for (family, output) in families.iter().zip(outputs) {
        let output = output?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!(
                "{family}: the compiler process failed ({}):\n{stderr}",
                output.status
            ));
        }
        let tag = format!("{TAG}\t");
        let mut seen = vec![false; pipelines.len()];
        for line in stdout.lines() {
            // The tag may follow other output on the same line (a test harness's "test ... ").
            let Some((_, rest)) = line.split_once(&tag) else {
                continue;
            };
            let record = parse(family, rest, pipelines)
                .map_err(|e| format!("{family}: bad line {line:?}: {e}"))?;
            seen[record.pipeline] = true;
            records.push(record);
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(format!(
                "{family}: no result for {} (and maybe others); the compiler process said:\n{stderr}",
                label(pipelines[missing])
            ));
        }
    }
    Ok(records)
}

/// Parses `index \t label \t ok \t subgroup \t name=value...` or
/// `index \t label \t err \t message`, checking that the child saw the same pipeline.
fn parse(family: &'static str, line: &str, pipelines: &[&PipelineKey]) -> Result<Record, String> {
    let mut parts = line.split('\t');
    let pipeline: usize = parts
        .next()
        .and_then(|i| i.parse().ok())
        .filter(|&i| i < pipelines.len())
        .ok_or("no pipeline index")?;
    let expected = label(pipelines[pipeline]);
    if parts.next() != Some(expected.as_str()) {
        return Err(format!("pipeline {pipeline} should be {expected}"));
    }
    let stats = match parts.next() {
        Some("ok") => {
            let subgroup_size = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or("no subgroup size")?;
            let fields = parts
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Stats::from_fields(subgroup_size, &fields)
        }
        Some("err") => Err(parts.collect::<Vec<_>>().join(" ")),
        _ => return Err("neither ok nor err".into()),
    };
    Ok(Record {
        pipeline,
        family,
        stats,
    })
}

/// The child: compiles every pipeline on the null device of `family` and prints the results.
fn child(family: &str, pipelines: &[&PipelineKey]) -> Result<(), String> {
    let compiler = Compiler::new(family)?;
    let mut modules: BTreeMap<&str, (naga::Module, naga::valid::ModuleInfo)> = BTreeMap::new();
    for (i, key) in pipelines.iter().enumerate() {
        let name = label(key);
        let result = spirv(key, &mut modules).and_then(|(spv, layout)| {
            // SAFETY: the device is alive and the SPIR-V comes from naga's writer.
            unsafe { compiler.compile(&spv, &layout, key) }
        });
        match result {
            Ok((subgroup, fields)) => {
                let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("{TAG}\t{i}\t{name}\tok\t{subgroup}\t{}", fields.join("\t"));
            }
            Err(e) => println!("{TAG}\t{i}\t{name}\terr\t{}", e.replace(['\t', '\n'], " ")),
        }
    }
    Ok(())
}

/// Descriptor sets of a pipeline: per group, its `(binding, type)` pairs.
type Layout = BTreeMap<u32, Vec<(u32, vk::DescriptorType)>>;

/// SPIR-V for one pipeline, written as wgpu's Vulkan backend writes it, and the descriptor
/// bindings its entry point uses.
fn spirv<'a>(
    key: &'a PipelineKey,
    modules: &mut BTreeMap<&'a str, (naga::Module, naga::valid::ModuleInfo)>,
) -> Result<(Vec<u32>, Layout), String> {
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    let name = key.shader.name;
    if !modules.contains_key(name) {
        let module = naga::front::wgsl::parse_str(key.shader.source)
            .map_err(|e| format!("{name}: {}", e.emit_to_string(key.shader.source)))?;
        let info = Validator::new(ValidationFlags::all(), Capabilities::all())
            .validate(&module)
            .map_err(|e| format!("{name}: {}", e.emit_to_string(key.shader.source)))?;
        modules.insert(name, (module, info));
    }
    let (module, info) = &modules[name];
    let constants = key
        .constants
        .iter()
        .map(|&(n, v)| (n.to_string(), f64::from(v)))
        .collect();
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        module,
        info,
        Some((naga::ShaderStage::Compute, key.entry)),
        &constants,
    )
    .map_err(|e| format!("{}: override constants: {e}", label(key)))?;

    let index = module
        .entry_points
        .iter()
        .position(|ep| ep.name == key.entry && ep.stage == naga::ShaderStage::Compute)
        .ok_or_else(|| format!("{name} has no compute entry point {}", key.entry))?;
    let uses = info.get_entry_point(index);
    let mut layout = Layout::new();
    for (handle, var) in module.global_variables.iter() {
        let Some(binding) = &var.binding else {
            continue;
        };
        if uses[handle].is_empty() {
            continue;
        }
        let kind = match var.space {
            naga::AddressSpace::Uniform => vk::DescriptorType::UNIFORM_BUFFER,
            naga::AddressSpace::Storage { .. } => vk::DescriptorType::STORAGE_BUFFER,
            other => {
                return Err(format!(
                    "{name}: binding in {other:?} is not supported here"
                ))
            }
        };
        layout
            .entry(binding.group)
            .or_default()
            .push((binding.binding, kind));
    }

    // wgpu-hal's options on a Vulkan 1.3 driver with robustBufferAccess2; this crate creates its
    // pipelines without zero-initialised workgroup memory and with wgpu's runtime checks, less
    // the loop bound and index clamps for trusted shaders (`Shader::trusted`).
    let checked = !key.shader.trusted;
    use naga::back::spv;
    let options = spv::Options {
        lang_version: (1, 6),
        flags: spv::WriterFlags::LABEL_VARYINGS | spv::WriterFlags::FORCE_POINT_SIZE,
        // No binding map: group and binding become descriptor set and binding.
        fake_missing_bindings: true,
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: if checked {
                naga::proc::BoundsCheckPolicy::Restrict
            } else {
                naga::proc::BoundsCheckPolicy::Unchecked
            },
            buffer: naga::proc::BoundsCheckPolicy::Unchecked,
            image_load: naga::proc::BoundsCheckPolicy::Unchecked,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::None,
        force_loop_bounding: checked,
        ..spv::Options::default()
    };
    let pipeline_options = spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: key.entry.to_string(),
    };
    let words = spv::write_vec(&module, &info, &options, Some(&pipeline_options))
        .map_err(|e| format!("{}: SPIR-V: {e}", label(key)))?;
    Ok((words, layout))
}

/// A Vulkan device on RADV's null device, able to report pipeline statistics.
struct Compiler {
    _entry: ash::Entry,
    instance: ash::Instance,
    device: ash::Device,
    executables: ash::khr::pipeline_executable_properties::Device,
}

impl Compiler {
    fn new(family: &str) -> Result<Self, String> {
        // SAFETY: loading the system's Vulkan loader, which has no other precondition.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| {
            format!(
                "cannot load the Vulkan loader ({e}): install libvulkan1 and mesa-vulkan-drivers"
            )
        })?;
        let app = vk::ApplicationInfo::default()
            .application_name(c"isa_stats")
            .api_version(vk::API_VERSION_1_3);
        // SAFETY: valid create info; the instance is destroyed in `Drop` (or below on failure).
        let instance = unsafe {
            entry.create_instance(
                &vk::InstanceCreateInfo::default().application_info(&app),
                None,
            )
        }
        .map_err(|e| format!("vkCreateInstance: {e}"))?;
        // SAFETY: the instance is alive; every handle below comes from it.
        match unsafe { Self::device(&instance, family) } {
            Ok((device, executables)) => Ok(Self {
                _entry: entry,
                instance,
                device,
                executables,
            }),
            Err(e) => {
                // SAFETY: no child object of the instance is alive.
                unsafe { instance.destroy_instance(None) };
                Err(e)
            }
        }
    }

    /// The device of the one physical device (RADV's null device of `family`), with every
    /// feature it supports enabled (as wgpu enables what it uses) and executable statistics.
    unsafe fn device(
        instance: &ash::Instance,
        family: &str,
    ) -> Result<
        (
            ash::Device,
            ash::khr::pipeline_executable_properties::Device,
        ),
        String,
    > {
        let physical = instance
            .enumerate_physical_devices()
            .map_err(|e| format!("vkEnumeratePhysicalDevices: {e}"))?;
        let wanted = family.to_lowercase();
        let mut names = Vec::new();
        let mut chosen = None;
        for &pd in &physical {
            let props = instance.get_physical_device_properties(pd);
            let name = props
                .device_name_as_c_str()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if chosen.is_none() && name.to_lowercase().contains(&wanted) {
                chosen = Some((pd, props.api_version));
            }
            names.push(name);
        }
        let Some((pd, api)) = chosen else {
            return Err(format!(
                "no Vulkan device for {family} (found {names:?}); this Mesa may not know the family"
            ));
        };
        if api < vk::API_VERSION_1_3 {
            return Err(format!(
                "{family}: the driver offers Vulkan {api:#x}, 1.3 is needed"
            ));
        }
        let mut exec = vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default();
        let mut query = vk::PhysicalDeviceFeatures2::default().push_next(&mut exec);
        instance.get_physical_device_features2(pd, &mut query);
        if exec.pipeline_executable_info != vk::TRUE {
            return Err(format!("{family}: no pipeline executable statistics"));
        }
        let mut v11 = vk::PhysicalDeviceVulkan11Features::default();
        let mut v12 = vk::PhysicalDeviceVulkan12Features::default();
        let mut v13 = vk::PhysicalDeviceVulkan13Features::default();
        let mut features = vk::PhysicalDeviceFeatures2::default()
            .push_next(&mut v11)
            .push_next(&mut v12)
            .push_next(&mut v13)
            .push_next(&mut exec);
        instance.get_physical_device_features2(pd, &mut features);
        let priorities = [1.0];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(0)
            .queue_priorities(&priorities)];
        let extensions = [ash::khr::pipeline_executable_properties::NAME.as_ptr()];
        let create = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&extensions)
            .push_next(&mut features);
        let device = instance
            .create_device(pd, &create, None)
            .map_err(|e| format!("vkCreateDevice: {e}"))?;
        let executables = ash::khr::pipeline_executable_properties::Device::new(instance, &device);
        Ok((device, executables))
    }

    /// Compiles one pipeline and returns the subgroup size and the driver's statistics by name.
    ///
    /// # Safety
    /// `spv` must be valid SPIR-V declaring the bindings of `layout`.
    unsafe fn compile(
        &self,
        spv: &[u32],
        layout: &Layout,
        key: &PipelineKey,
    ) -> Result<(u32, Vec<(String, String)>), String> {
        let d = &self.device;
        let module = d
            .create_shader_module(&vk::ShaderModuleCreateInfo::default().code(spv), None)
            .map_err(|e| format!("vkCreateShaderModule: {e}"))?;
        let max_set = layout.keys().next_back().map_or(0, |&s| s + 1);
        let mut sets = Vec::new();
        let mut result = Ok(());
        for set in 0..max_set {
            let bindings: Vec<vk::DescriptorSetLayoutBinding> = layout
                .get(&set)
                .into_iter()
                .flatten()
                .map(|&(binding, kind)| {
                    vk::DescriptorSetLayoutBinding::default()
                        .binding(binding)
                        .descriptor_type(kind)
                        .descriptor_count(1)
                        .stage_flags(vk::ShaderStageFlags::COMPUTE)
                })
                .collect();
            match d.create_descriptor_set_layout(
                &vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings),
                None,
            ) {
                Ok(l) => sets.push(l),
                Err(e) => {
                    result = Err(format!("vkCreateDescriptorSetLayout: {e}"));
                    break;
                }
            }
        }
        let mut pipeline_layout = vk::PipelineLayout::null();
        if result.is_ok() {
            match d.create_pipeline_layout(
                &vk::PipelineLayoutCreateInfo::default().set_layouts(&sets),
                None,
            ) {
                Ok(l) => pipeline_layout = l,
                Err(e) => result = Err(format!("vkCreatePipelineLayout: {e}")),
            }
        }
        let out = result.and_then(|()| self.pipeline_stats(module, pipeline_layout, key));
        d.destroy_pipeline_layout(pipeline_layout, None);
        for set in sets {
            d.destroy_descriptor_set_layout(set, None);
        }
        d.destroy_shader_module(module, None);
        out
    }

    unsafe fn pipeline_stats(
        &self,
        module: vk::ShaderModule,
        layout: vk::PipelineLayout,
        key: &PipelineKey,
    ) -> Result<(u32, Vec<(String, String)>), String> {
        let entry = CString::new(key.entry).map_err(|e| e.to_string())?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            // wgpu sets this for every pipeline on a device with subgroups (every AMD GPU).
            .flags(vk::PipelineShaderStageCreateFlags::ALLOW_VARYING_SUBGROUP_SIZE)
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module)
            .name(&entry);
        let create = vk::ComputePipelineCreateInfo::default()
            .flags(vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR)
            .stage(stage)
            .layout(layout);
        let pipeline = self
            .device
            .create_compute_pipelines(vk::PipelineCache::null(), &[create], None)
            .map_err(|(_, e)| format!("vkCreateComputePipelines: {e}"))?[0];
        let out = self.read_stats(pipeline);
        self.device.destroy_pipeline(pipeline, None);
        out
    }

    unsafe fn read_stats(
        &self,
        pipeline: vk::Pipeline,
    ) -> Result<(u32, Vec<(String, String)>), String> {
        let executables = self
            .executables
            .get_pipeline_executable_properties(&vk::PipelineInfoKHR::default().pipeline(pipeline))
            .map_err(|e| format!("vkGetPipelineExecutablePropertiesKHR: {e}"))?;
        let (index, exe) = executables
            .iter()
            .enumerate()
            .find(|(_, e)| e.stages.contains(vk::ShaderStageFlags::COMPUTE))
            .ok_or("the pipeline has no compute executable")?;
        let stats = self
            .executables
            .get_pipeline_executable_statistics(
                &vk::PipelineExecutableInfoKHR::default()
                    .pipeline(pipeline)
                    .executable_index(index as u32),
            )
            .map_err(|e| format!("vkGetPipelineExecutableStatisticsKHR: {e}"))?;
        let fields = stats
            .iter()
            .map(|s| {
                let name = s
                    .name_as_c_str()
                    .map(|n| n.to_string_lossy().replace(['\t', '='], " "))
                    .unwrap_or_default();
                let value = match s.format {
                    vk::PipelineExecutableStatisticFormatKHR::BOOL32 => s.value.b32.to_string(),
                    vk::PipelineExecutableStatisticFormatKHR::INT64 => s.value.i64.to_string(),
                    vk::PipelineExecutableStatisticFormatKHR::UINT64 => s.value.u64.to_string(),
                    _ => s.value.f64.to_string(),
                };
                (name, value)
            })
            .collect();
        Ok((exe.subgroup_size, fields))
    }
}

impl Drop for Compiler {
    fn drop(&mut self) {
        // SAFETY: every object created on the device was destroyed after use.
        unsafe {
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}
