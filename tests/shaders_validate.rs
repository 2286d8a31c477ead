//! Every WGSL module parses and validates with naga, for every specialisation the launchers
//! use, and the host constants agree with the shaders. Needs no GPU.

use bayesian_bits::kernels;
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn capabilities(requires: wgpu::Features) -> Capabilities {
    let mut caps = Capabilities::empty();
    if requires.contains(wgpu::Features::SUBGROUP) {
        caps |= Capabilities::SUBGROUP;
    }
    if requires.contains(wgpu::Features::SHADER_F16) {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    caps
}

#[test]
fn every_shader_validates() {
    for shader in kernels::shaders() {
        let module = naga::front::wgsl::parse_str(shader.source)
            .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(shader.source)));
        Validator::new(ValidationFlags::all(), capabilities(shader.requires))
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(shader.source)));
    }
}

#[test]
fn every_specialisation_validates() {
    for key in kernels::pipelines() {
        let source = key.shader.source;
        let module = naga::front::wgsl::parse_str(source).expect("parses");
        let caps = capabilities(key.shader.requires);
        let info = Validator::new(ValidationFlags::all(), caps)
            .validate(&module)
            .expect("validates");
        let constants = key
            .constants
            .iter()
            .map(|&(n, v)| (n.to_string(), f64::from(v)))
            .collect();
        let (module, _) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, key.entry)),
            &constants,
        )
        .unwrap_or_else(|e| {
            panic!(
                "{}::{} with {:?}: {e}",
                key.shader.name, key.entry, key.constants
            )
        });
        Validator::new(ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| {
                panic!(
                    "{}::{}: {}",
                    key.shader.name,
                    key.entry,
                    e.emit_to_string(source)
                )
            });
        assert!(
            module.entry_points.iter().any(|ep| ep.name == key.entry),
            "{} has no entry point {}",
            key.shader.name,
            key.entry
        );
    }
}

#[test]
fn quantizer_workgroup_matches_host() {
    let module = naga::front::wgsl::parse_str(kernels::quant::SHADER.source).expect("parses");
    for ep in &module.entry_points {
        assert_eq!(
            ep.workgroup_size,
            [kernels::quant::WORKGROUP, 1, 1],
            "{}",
            ep.name
        );
    }
    let partials = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some("PARTIALS"))
        .map(|(_, c)| c.init)
        .expect("PARTIALS constant");
    match module.global_expressions[partials] {
        naga::Expression::Literal(naga::Literal::U32(v)) => assert_eq!(v, kernels::quant::PARTIALS),
        ref other => panic!("PARTIALS is {other:?}"),
    }
}
