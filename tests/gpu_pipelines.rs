//! Pipeline creation on devices the application owns: what a kernel needs of the device is
//! checked first, and a failure is a typed error, never a call of wgpu's uncaptured-error
//! handler (which panics by default on a device the library did not create).

use bayesian_bits::gpu::{Gpu, PipelineCacheLoad, PipelineKey, Shader};
use bayesian_bits::kernels::{self, gemm};
use bayesian_bits::Error;

/// A device with only the given features and a storage-buffer budget per stage, wrapped as an
/// application would wrap its own (wgpu's default error handler, which panics).
fn app_gpu(features: wgpu::Features, storage_buffers: u32) -> Gpu {
    let adapter = adapter();
    let limits = wgpu::Limits {
        max_storage_buffers_per_shader_stage: storage_buffers,
        ..adapter.limits()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("application device"),
        required_features: features,
        required_limits: limits,
        ..Default::default()
    }))
    .expect("a device");
    Gpu::from_device(device, queue)
}

/// The adapter wgpu picks, as an application would request it.
fn adapter() -> wgpu::Adapter {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(instance.request_adapter(&Default::default())).expect("a wgpu adapter")
}

#[test]
fn a_missing_feature_is_a_typed_error_naming_it() {
    let gpu = app_gpu(wgpu::Features::empty(), 8);
    let key = &gemm::SUBGROUP_GEMM[0];
    assert!(key.shader.requires.contains(wgpu::Features::SUBGROUP));
    match gpu.pipeline(key) {
        Err(Error::MissingFeature { what, features, .. }) => {
            assert!(what.contains(key.entry), "{what}");
            assert!(features.contains("SUBGROUP"), "{features}");
        }
        other => panic!("expected MissingFeature, got {other:?}"),
    }
    // The portable variant of the same kernel is created.
    gpu.pipeline(&gemm::PORTABLE_GEMM[0]).unwrap();
}

#[test]
fn too_many_storage_buffers_is_a_typed_error_naming_the_limit() {
    let limit = 4;
    let gpu = app_gpu(wgpu::Features::empty(), limit);
    // The layer kernels (the tile engines' pipelines take seconds each to compile on a CPU
    // adapter and bind few buffers).
    let portable: Vec<&PipelineKey> = kernels::pipelines()
        .into_iter()
        .filter(|k| k.shader.requires.is_empty() && k.entry != "tiles")
        .collect();
    let mut refused = 0;
    for key in portable {
        match gpu.pipeline(key) {
            Ok(_) => {}
            Err(Error::Limit {
                what,
                value,
                limit: l,
                ..
            }) => {
                assert_eq!(what, "storage buffers per shader stage");
                assert!(value > u64::from(limit), "{}: {value}", key.entry);
                assert_eq!(l, u64::from(limit));
                refused += 1;
            }
            Err(e) => panic!("{}::{}: {e}", key.shader.name, key.entry),
        }
    }
    assert!(
        refused > 0,
        "some kernels bind more than {limit} storage buffers"
    );
}

static BAD_WORKGROUP: Shader = Shader {
    name: "bad_workgroup",
    source: "override WG: u32 = 64u;\n@compute @workgroup_size(WG) fn main() {}\n",
    requires: wgpu::Features::empty(),
    trusted: false,
};

#[test]
fn a_pipeline_the_device_rejects_is_an_error_not_a_panic() {
    let gpu = app_gpu(wgpu::Features::empty(), 8);
    let good = PipelineKey {
        shader: &BAD_WORKGROUP,
        entry: "main",
        constants: &[("WG", 64)],
    };
    gpu.pipeline(&good).unwrap();
    let bad = PipelineKey {
        constants: &[("WG", 0)],
        ..good.clone()
    };
    match gpu.pipeline(&bad) {
        Err(Error::Gpu { op, msg }) => assert_eq!(op, "Gpu::pipeline", "{msg}"),
        other => panic!("expected a GPU error, got {other:?}"),
    }
    let missing = PipelineKey {
        entry: "absent",
        ..good
    };
    assert!(matches!(gpu.pipeline(&missing), Err(Error::Gpu { .. })));
}

#[test]
fn a_pipeline_cache_round_trips_and_damaged_files_are_discarded_with_the_reason() {
    if !adapter()
        .features()
        .contains(wgpu::Features::PIPELINE_CACHE)
    {
        eprintln!("skipped: wgpu has no pipeline cache on this adapter's backend (Vulkan only)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("pipelines.bin");
    let key = &kernels::conv::SUM_SPLITS;

    // First run: nothing on disk, an empty cache fills as pipelines are created.
    let first = app_gpu(wgpu::Features::PIPELINE_CACHE, 8);
    assert_eq!(
        first.load_pipeline_cache(&path).unwrap(),
        PipelineCacheLoad::Empty
    );
    first.pipeline(key).unwrap();
    let written = first
        .save_pipeline_cache(&path)
        .unwrap()
        .expect("cache data");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), written);
    assert_eq!(Some(bytes.clone()), first.pipeline_cache_data());

    // Second run: the file seeds the cache, and pipelines are created through it.
    let second = app_gpu(wgpu::Features::PIPELINE_CACHE, 8);
    match second.load_pipeline_cache(&path).unwrap() {
        PipelineCacheLoad::Loaded { bytes: driver } => assert!(driver > 0 && driver < written),
        other => panic!("expected Loaded, got {other:?}"),
    }
    second.pipeline(key).unwrap();

    // A flipped byte or a cut file is discarded, named, and the device still works.
    let discarded = |damaged: &[u8], expect: &str| {
        std::fs::write(&path, damaged).unwrap();
        let gpu = app_gpu(wgpu::Features::PIPELINE_CACHE, 8);
        match gpu.load_pipeline_cache(&path).unwrap() {
            PipelineCacheLoad::Discarded { reason } => assert!(reason.contains(expect), "{reason}"),
            other => panic!("expected Discarded ({expect}), got {other:?}"),
        }
        gpu.pipeline(key).unwrap();
    };
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 0x40;
    discarded(&flipped, "checksum");
    discarded(&bytes[..bytes.len() - 3], "truncated");
    discarded(b"not a cache", "magic");
    discarded(b"BBPL", "truncated");

    // A path that cannot be read is an error naming it.
    match second.load_pipeline_cache(dir.path()) {
        Err(Error::File { path, .. }) => assert_eq!(path, dir.path()),
        other => panic!("expected an error naming the path, got {other:?}"),
    }

    // Without the feature nothing is attached and nothing is written.
    let plain = app_gpu(wgpu::Features::empty(), 8);
    let other_path = dir.path().join("none.bin");
    assert_eq!(
        plain.load_pipeline_cache(&other_path).unwrap(),
        PipelineCacheLoad::Unsupported
    );
    assert_eq!(plain.save_pipeline_cache(&other_path).unwrap(), None);
    assert!(!other_path.exists());
}
