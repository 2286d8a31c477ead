//! Shader sources and the keys of the pipeline cache.

/// A WGSL module compiled into the crate (see `shaders/`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Shader {
    /// Name used for logging and caching.
    pub name: &'static str,
    /// Complete WGSL source (shared function libraries already prepended).
    pub source: &'static str,
    /// Device features the module needs (e.g. `SUBGROUP` for subgroup variants).
    pub requires: wgpu::Features,
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
