//! Safetensors checkpoints: round trip, atomic save, typed errors, validation against a model.

#![cfg(feature = "train")]

use std::collections::HashMap;
use std::path::Path;

use bayesian_bits::nn::Arch;
use bayesian_bits::train::checkpoint::{
    Checkpoint, CheckpointError, EPOCH, EXTRA_PREFIX, MODEL, SEED, STEP,
};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Deterministic, varied values including signed zeros, subnormals and extremes.
fn values(n: usize, salt: u32) -> Vec<f32> {
    let special = [
        0.0,
        -0.0,
        f32::MIN_POSITIVE / 8.0,
        f32::MAX,
        f32::MIN,
        1.0 / 3.0,
    ];
    (0..n)
        .map(|i| {
            if i < special.len() && salt == 0 {
                special[i]
            } else {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(salt);
                (x as f32 / u32::MAX as f32 - 0.5) * 3.7
            }
        })
        .collect()
}

fn full_checkpoint(arch: &Arch) -> Checkpoint {
    let mut ck = Checkpoint::new();
    for (i, (name, shape)) in arch.state_dict_shapes().into_iter().enumerate() {
        let n = shape.iter().product();
        ck.insert(name, shape, values(n, i as u32)).unwrap();
    }
    ck
}

fn sample() -> Checkpoint {
    let mut ck = Checkpoint::new();
    ck.insert("features.0.weight", vec![2, 1, 2, 3], values(12, 0))
        .unwrap();
    ck.insert(
        "features.0.weight_quantizer.quantizer.x_max",
        vec![1],
        vec![0.75],
    )
    .unwrap();
    ck.insert_extra("adam.weights.m", vec![3], vec![1e-30, -2.5, 7.0])
        .unwrap();
    ck.set_u64(STEP, u64::MAX);
    ck.set_u64(EPOCH, 17);
    ck.set_u64(SEED, 42);
    ck.set_meta(MODEL, "LeNet-5");
    ck
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck.safetensors");
    let ck = sample();
    ck.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back.tensors.len(), 2);
    for (name, t) in &ck.tensors {
        let b = &back.tensors[name];
        assert_eq!(b.shape, t.shape, "{name}");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&b.data), bits(&t.data), "{name}");
    }
    assert_eq!(back.extra, ck.extra);
    assert_eq!(back.metadata, ck.metadata);
    assert_eq!(back.get_u64(STEP).unwrap(), Some(u64::MAX));
    assert_eq!(back.get_u64(EPOCH).unwrap(), Some(17));
    assert_eq!(back.get_u64(SEED).unwrap(), Some(42));
    assert_eq!(back.meta(MODEL), Some("LeNet-5"));
    assert_eq!(back, ck);

    // The extra tensors carry the reserved prefix in the file itself.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        [
            format!("{EXTRA_PREFIX}adam.weights.m").as_str(),
            "features.0.weight",
            "features.0.weight_quantizer.quantizer.x_max"
        ]
    );
    assert!(st.iter().all(|(_, v)| v.dtype() == Dtype::F32));

    // Saving the loaded checkpoint again reproduces the same bytes.
    let path2 = dir.path().join("ck2.safetensors");
    back.save(&path2).unwrap();
    assert_eq!(std::fs::read(&path2).unwrap(), bytes);
}

#[test]
fn atomic_save_leaves_no_temp_files_and_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("last.safetensors");
    let mut ck = sample();
    ck.save(&path).unwrap();
    ck.set_u64(EPOCH, 18);
    ck.save(&path).unwrap();
    assert_eq!(files_in(dir.path()), ["last.safetensors"]);
    assert_eq!(
        Checkpoint::load(&path).unwrap().get_u64(EPOCH).unwrap(),
        Some(18)
    );

    // A refused save (NaN) leaves the previous checkpoint intact and no temp file.
    ck.tensors.get_mut("features.0.weight").unwrap().data[5] = f32::NAN;
    let err = ck.save(&path).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::NonFinite { tensor, index: 5, .. } if tensor == "features.0.weight"),
        "{err}"
    );
    assert_eq!(files_in(dir.path()), ["last.safetensors"]);
    assert_eq!(
        Checkpoint::load(&path).unwrap().get_u64(EPOCH).unwrap(),
        Some(18)
    );

    // Saving into a directory that does not exist fails with the path named.
    let bad = dir.path().join("no").join("such").join("x.safetensors");
    let err = sample().save(&bad).unwrap_err().to_string();
    assert!(err.contains("x.safetensors"), "{err}");
}

#[test]
fn missing_and_truncated_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.safetensors");
    let err = Checkpoint::load(&missing).unwrap_err();
    assert!(matches!(err, CheckpointError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("absent.safetensors"), "{err}");

    let path = dir.path().join("cut.safetensors");
    sample().save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for len in [0, 5, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = Checkpoint::load(&path).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Corrupt { .. }),
            "len {len}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("cut.safetensors"), "{msg}");
    }
    std::fs::write(&path, b"this is not a safetensors file at all").unwrap();
    assert!(matches!(
        Checkpoint::load(&path),
        Err(CheckpointError::Corrupt { .. })
    ));
}

fn write_raw(path: &Path, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes = safetensors::serialize(views, Some(meta)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn dtypes_are_converted_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.safetensors");
    let f64s: Vec<u8> = [1.5f64, -0.1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let f16s: Vec<u8> = [0x3c00u16, 0xc000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let bf16s: Vec<u8> = [0x3f80u16, 0x4049]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write_raw(
        &path,
        vec![
            ("a", Dtype::F64, vec![2], f64s),
            ("b", Dtype::F16, vec![2], f16s),
            ("c", Dtype::BF16, vec![2], bf16s),
            (
                "bn.num_batches_tracked",
                Dtype::I64,
                vec![],
                7i64.to_le_bytes().to_vec(),
            ),
        ],
    );
    let ck = Checkpoint::load(&path).unwrap();
    assert_eq!(ck.get("a").unwrap().data, [1.5, -0.1f64 as f32]);
    assert_eq!(ck.get("b").unwrap().data, [1.0, -2.0]);
    assert_eq!(ck.get("c").unwrap().data, [1.0, 3.140625]);
    assert!(ck.get("bn.num_batches_tracked").is_none());
    assert_eq!(ck.skipped["bn.num_batches_tracked"].dtype, "I64");
    assert_eq!(ck.meta("format"), Some("pt"));

    // A complex tensor cannot be used.
    write_raw(&path, vec![("w", Dtype::C64, vec![1], vec![0; 8])]);
    let err = Checkpoint::load(&path).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Dtype { tensor, dtype, .. } if tensor == "w" && dtype == "C64"),
        "{err}"
    );
    assert!(err.to_string().contains("mixed.safetensors"), "{err}");

    // Extra state must be float.
    write_raw(
        &path,
        vec![("_bayesian_bits.step", Dtype::I64, vec![1], vec![0; 8])],
    );
    assert!(matches!(
        Checkpoint::load(&path),
        Err(CheckpointError::Dtype { .. })
    ));

    // F64 values beyond the f32 range become infinite: refused.
    let big: Vec<u8> = 1e300f64.to_le_bytes().to_vec();
    write_raw(&path, vec![("huge", Dtype::F64, vec![1], big)]);
    assert!(matches!(
        Checkpoint::load(&path),
        Err(CheckpointError::NonFinite { .. })
    ));
}

#[test]
fn nan_in_file_is_an_error_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    let mut bytes: Vec<u8> = Vec::new();
    for v in [1.0f32, 2.0, f32::NAN, 4.0] {
        bytes.extend(v.to_le_bytes());
    }
    write_raw(
        &path,
        vec![(
            "features.2.weight_quantizer.quantizer.gamma_2",
            Dtype::F32,
            vec![4],
            bytes,
        )],
    );
    let err = Checkpoint::load(&path).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::NonFinite { tensor, index: 2, .. }
            if tensor == "features.2.weight_quantizer.quantizer.gamma_2"),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("nan.safetensors") && msg.contains("gamma_2"),
        "{msg}"
    );

    let mut inf = sample();
    inf.extra.get_mut("adam.weights.m").unwrap().data[0] = f32::INFINITY;
    let err = inf.save(dir.path().join("inf.safetensors")).unwrap_err();
    assert!(
        err.to_string().contains("_bayesian_bits.adam.weights.m"),
        "{err}"
    );
}

#[test]
fn construction_errors() {
    let mut ck = Checkpoint::new();
    let err = ck.insert("w", vec![2, 3], vec![0.0; 5]).unwrap_err();
    assert!(
        matches!(
            &err,
            CheckpointError::ElementCount {
                expected: 6,
                actual: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        ck.insert("_bayesian_bits.x", vec![1], vec![0.0]),
        Err(CheckpointError::Name { .. })
    ));
    assert!(matches!(
        ck.insert("", vec![1], vec![0.0]),
        Err(CheckpointError::Name { .. })
    ));
    ck.set_meta(STEP, "twelve");
    assert!(matches!(
        ck.get_u64(STEP),
        Err(CheckpointError::Metadata { .. })
    ));
    assert_eq!(ck.get_u64(EPOCH).unwrap(), None);
    // Public fields can be made inconsistent; saving catches it.
    ck.tensors.insert(
        "v".into(),
        bayesian_bits::train::checkpoint::TensorData {
            shape: vec![4],
            data: vec![1.0],
        },
    );
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        ck.save(dir.path().join("x.safetensors")),
        Err(CheckpointError::ElementCount { .. })
    ));
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn future_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.safetensors");
    let data = 1.0f32.to_le_bytes().to_vec();
    let views = vec![(
        "x".to_string(),
        TensorView::new(Dtype::F32, vec![1], &data).unwrap(),
    )];
    let meta: HashMap<String, String> =
        [("bayesian_bits.format_version".to_string(), "2".to_string())].into();
    std::fs::write(&path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    let err = Checkpoint::load(&path).unwrap_err();
    assert!(matches!(err, CheckpointError::Version { .. }), "{err}");
}

#[test]
fn full_vgg7_checkpoint_validates_and_round_trips() {
    let arch = Arch::vgg7();
    let mut ck = full_checkpoint(&arch);
    ck.validate_against(&arch).unwrap();
    ck.set_meta(MODEL, &arch.name);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vgg7.safetensors");
    ck.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    back.validate_against(&arch).unwrap();
    assert_eq!(back, ck);
    assert_eq!(back.get("features.0.weight").unwrap().shape, [128, 3, 3, 3]);
    // A VGG-7 checkpoint is not a LeNet-5 checkpoint.
    let err = back.validate_against(&Arch::lenet5()).unwrap_err();
    assert!(matches!(err, CheckpointError::Mismatch(_)), "{err}");

    let lenet = Arch::lenet5();
    full_checkpoint(&lenet).validate_against(&lenet).unwrap();
}

#[test]
fn validation_lists_missing_unexpected_and_wrong_shapes() {
    let arch = Arch::lenet5();
    let mut ck = full_checkpoint(&arch);
    // Wrong shape.
    ck.insert("features.0.weight", vec![32, 1, 3, 3], vec![0.0; 288])
        .unwrap();
    // Missing.
    ck.tensors
        .remove("classifier.0.activation_quantizer.quantizer.x_max");
    // Unexpected float tensor.
    ck.insert("features.9.weight", vec![2], vec![0.0; 2])
        .unwrap();
    // Tolerated: integer tensors outside the model's list, and extra state.
    ck.skipped.insert(
        "features.0.num_batches_tracked".into(),
        bayesian_bits::train::checkpoint::SkippedTensor {
            dtype: "I64".into(),
            shape: vec![],
        },
    );
    ck.insert_extra("adam.weights.m", vec![1], vec![0.0])
        .unwrap();

    let err = ck.validate_against(&arch).unwrap_err();
    let CheckpointError::Mismatch(m) = &err else {
        panic!("{err}");
    };
    assert_eq!(
        m.wrong_shape,
        [(
            "features.0.weight".to_string(),
            vec![32, 1, 5, 5],
            vec![32, 1, 3, 3]
        )]
    );
    assert_eq!(
        m.missing,
        [(
            "classifier.0.activation_quantizer.quantizer.x_max".to_string(),
            vec![1]
        )]
    );
    assert_eq!(m.unexpected, [("features.9.weight".to_string(), vec![2])]);
    assert!(m.wrong_dtype.is_empty());
    let msg = err.to_string();
    for needle in [
        "LeNet-5",
        "features.0.weight expected [32, 1, 5, 5] found [32, 1, 3, 3]",
        "classifier.0.activation_quantizer.quantizer.x_max [1]",
        "features.9.weight [2]",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }

    // A model tensor stored as integers is reported as such.
    let mut ck = full_checkpoint(&arch);
    ck.tensors.remove("features.0.bias");
    ck.skipped.insert(
        "features.0.bias".into(),
        bayesian_bits::train::checkpoint::SkippedTensor {
            dtype: "I32".into(),
            shape: vec![32],
        },
    );
    let err = ck.validate_against(&arch).unwrap_err();
    assert!(err.to_string().contains("features.0.bias (I32)"), "{err}");

    // expect() checks one tensor.
    let ck = full_checkpoint(&arch);
    assert!(ck.expect("features.0.bias", &[32]).is_ok());
    let err = ck.expect("features.0.bias", &[31]).unwrap_err().to_string();
    assert!(err.contains("expected [31] found [32]"), "{err}");
    assert!(ck.expect("nope", &[1]).is_err());
}
