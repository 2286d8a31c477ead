//! Shader sources, the keys of the pipeline cache, and what a pipeline needs of the device.

use crate::{Error, Result};
use std::collections::HashMap;

/// A WGSL module compiled into the crate (see `shaders/`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Shader {
    /// Name used for logging and caching.
    pub name: &'static str,
    /// Complete WGSL source (shared function libraries already prepended).
    pub source: &'static str,
    /// Device features the module needs (e.g. `SUBGROUP` for subgroup variants).
    pub requires: wgpu::Features,
    /// For every parameter its launchers accept, every loop of the module ends and every index
    /// it forms is in bounds, so the module is created without wgpu's runtime checks for them:
    /// naga's loop bound (a 64-bit counter tested in every iteration, and in every unrolled copy
    /// of one) and its index clamps (on every workgroup-memory read, where they also rule out
    /// constant offsets). Division checks stay. Only where measured to pay: on llvmpipe the loop
    /// bound keeps the quantizer's loops rolled, which is faster there.
    pub trusted: bool,
}

/// Identifies one compute pipeline: a shader, an entry point and its `override` constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    /// The module.
    pub shader: &'static Shader,
    /// The entry point.
    pub entry: &'static str,
    /// Values of the module's `override` constants (workgroup and tile sizes).
    pub constants: &'static [(&'static str, u32)],
}

/// Storage buffers each entry point of a module binds, from naga's reflection of the source.
pub(super) fn storage_buffers_per_entry(shader: &Shader) -> Result<HashMap<String, u32>> {
    let invalid = |msg: String| Error::Gpu {
        op: "Gpu::pipeline",
        msg: format!("shader {}: {msg}", shader.name),
    };
    let module = naga::front::wgsl::parse_str(shader.source).map_err(|e| invalid(e.to_string()))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| invalid(e.to_string()))?;
    Ok(module
        .entry_points
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            let uses = info.get_entry_point(i);
            let storage = module
                .global_variables
                .iter()
                .filter(|(handle, var)| {
                    matches!(var.space, naga::AddressSpace::Storage { .. })
                        && !uses[*handle].is_empty()
                })
                .count();
            (ep.name.clone(), storage as u32)
        })
        .collect())
}

/// The buffer ranges of one dispatch's bind group: (binding, buffer, byte offset, byte size).
pub(super) type BoundRanges = Vec<(u32, wgpu::Buffer, u64, u64)>;
