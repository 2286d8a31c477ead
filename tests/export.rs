//! Export at the learned bit widths and integer inference: file round trip, typed errors,
//! GPU integer inference against the CPU integer reference (bit for bit), and predictions
//! against the fake-quantized float evaluation of the same parameters.

mod common;

use bayesian_bits::export::{
    self, infer_cpu, predictions, Codes, ExportError, ExportOptions, ExportedModel, IntPlan,
    PruneMode, SizeTable,
};
use bayesian_bits::kernels::int_infer::IntEngine;
use bayesian_bits::nn::{Arch, Model};
use bayesian_bits::reference::model::{self as reference, InitConfig, Mode, Params, StepKey};
use bayesian_bits::reference::quant::{self, gate_noise};
use common::{gpu, uniform};
use std::path::Path;

/// Chain logits ℓ4…ℓ32 giving a test-time bit width.
fn chain_for(bits: u32) -> [f32; 4] {
    match bits {
        2 => [-6.0, -6.0, -6.0, -6.0],
        4 => [6.0, -6.0, -6.0, -6.0],
        8 => [6.0, 6.0, -6.0, -6.0],
        16 => [6.0, 6.0, 6.0, -6.0],
        _ => [6.0; 4],
    }
}

/// Sets the gates of every quantizer: weight bits and activation bits per weighted layer,
/// and prunes about a quarter of the prunable channels.
fn set_gates(arch: &Arch, params: &mut Params, weight_bits: &[u32], act_bits: &[u32], seed: u64) {
    for (i, l) in arch.weighted_layers().enumerate() {
        let mut set = |q: &str, bits: u32| {
            for (g, v) in ["gamma_4", "gamma_8", "gamma_16", "gamma_32"]
                .iter()
                .zip(chain_for(bits))
            {
                params.insert(format!("{}.{q}.quantizer.{g}", l.name), vec![v]);
            }
        };
        set("weight_quantizer", weight_bits[i]);
        if l.act_quant {
            set("activation_quantizer", act_bits[i]);
        }
        if l.prune {
            let name = format!("{}.weight_quantizer.quantizer.gamma_2", l.name);
            let logits = (0..l.out_channels())
                .map(|c| {
                    if gate_noise(seed, 99, i as u32, c as u32) < 0.25 {
                        -6.0
                    } else {
                        6.0
                    }
                })
                .collect();
            params.insert(name, logits);
        }
    }
}

fn lenet(weight_bits: &[u32], act_bits: &[u32], seed: u64) -> (Arch, Params) {
    let arch = Arch::lenet5();
    let init = InitConfig {
        chain_logits: [6.0, 6.0, -6.0, -6.0],
        prune_logit: 6.0,
        seed,
    };
    let mut params = reference::init_params(&arch, &init);
    let images = uniform(seed + 1, 2 * 784, 0.0, 1.0);
    reference::range_init(&arch, &mut params, &images, 2, seed);
    set_gates(&arch, &mut params, weight_bits, act_bits, seed);
    (arch, params)
}

fn fake_quant_logits_cpu(arch: &Arch, params: &Params, images: &[f32], n: usize) -> Vec<f32> {
    let mut p = params.clone();
    reference::forward(
        arch,
        &mut p,
        images,
        n,
        StepKey { seed: 0, step: 0 },
        Mode::Eval,
    )
    .logits
}

fn agreement(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

fn round_trip(model: &ExportedModel) -> Vec<u8> {
    let bytes = model.to_bytes().unwrap();
    let loaded = ExportedModel::from_bytes(&bytes, Path::new("test")).unwrap();
    assert!(&loaded == model, "load gives back the exported model");
    let again = loaded.to_bytes().unwrap();
    assert!(again == bytes, "export → load → export is byte-identical");
    bytes
}

/// LeNet-5 with random weights and two mixes of low-bit gates covering the integer path
/// (2/4/8-bit weights), the float path (first layer, 16/32-bit layers), packed and f32
/// activations and pruned channels folded into the next layer.
#[test]
fn lenet_export_integer_inference() {
    let g = gpu();
    let n = 300;
    let images = uniform(5, n * 784, 0.0, 1.0);
    let labels: Vec<usize> = (0..n).map(|i| (i * 7) % 10).collect();
    for (weight_bits, act_bits) in [([4, 2, 8, 16], [8, 4, 16]), ([8, 4, 32, 2], [2, 32, 8])] {
        let (arch, mut params) = lenet(&weight_bits, &act_bits, 3);
        center_logits(&mut params, "classifier.1", |p| {
            fake_quant_logits_cpu(&arch, p, &images[..64 * 784], 64)
        });
        let model = export::export(&arch, &params, &ExportOptions::default()).unwrap();
        let bytes = round_trip(&model);
        // Bits and pruning as set; LeNet has no padding, so every removal is exact.
        let mut removed = 0;
        for (i, l) in model.layers.iter().enumerate() {
            let m = model.layer_manifest(&l.name).unwrap();
            assert_eq!(m.weight.bits, weight_bits[i], "{}", l.name);
            assert!(m.pruning.removal_exact && m.pruning.kept_for_exactness.is_empty());
            assert_eq!(m.pruning.removed, m.pruning.pruned);
            assert_eq!(m.weight.codes_clamped, 0);
            removed += m.pruning.removed.len();
        }
        assert!(removed > 0, "some channels were pruned and removed");
        // The first layer keeps its whole input: scale · code must be the fake-quantized weight
        // the float evaluation uses (up to the rounding of one product vs. the nested sum).
        let first = &model.layers[0];
        let m = model.layer_manifest(&first.name).unwrap();
        let prefix = "features.0.weight_quantizer.quantizer";
        let chain = ["gamma_4", "gamma_8", "gamma_16", "gamma_32"]
            .map(|g| params[&format!("{prefix}.{g}")][0]);
        let gates = quant::gates(chain, &[], false, |_| 0.5).chain;
        let w = &params["features.0.weight"];
        let fq = quant::quantize(w, m.weight.x_max, m.weight.signed, gates, None);
        let Codes::Int(codes) = &first.weight else {
            panic!("features.0 has integer codes")
        };
        let per_row = 25;
        for (r, &o) in first.kept.iter().enumerate() {
            for i in 0..per_row {
                let want = fq[o as usize * per_row + i];
                let got = m.weight.scale * codes[r * per_row + i] as f32;
                assert!(
                    (got - want).abs() <= 2.0 * f32::EPSILON * want.abs(),
                    "features.0 weight [{o}, {i}]: scale·code {got}, fake-quant {want}"
                );
            }
        }
        let table = SizeTable::new(&model, bytes.len() as u64);
        assert!(table.file_bytes < table.fp32_bytes, "{}", table.format());

        let plan = IntPlan::new(&model).unwrap();
        let cpu = infer_cpu(&plan, &images, n);
        let engine = IntEngine::new(g, &plan, n).unwrap();
        let gpu_logits = engine.infer(g, &images, n).unwrap();
        let mismatch = cpu
            .iter()
            .zip(&gpu_logits)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        if let Some(i) = mismatch {
            panic!(
                "{weight_bits:?}: GPU logit {i} = {} but CPU reference {}",
                gpu_logits[i], cpu[i]
            );
        }

        let fq = fake_quant_logits_cpu(&arch, &params, &images, n);
        let (p_int, p_fq) = (predictions(&cpu, 10), predictions(&fq, 10));
        let agree = agreement(&p_int, &p_fq);
        let acc = |p: &[usize]| 100.0 * agreement(p, &labels) as f64 / n as f64;
        let mut classes = p_fq.clone();
        classes.sort_unstable();
        classes.dedup();
        println!(
            "LeNet-5 {weight_bits:?}/{act_bits:?}: predictions agree on {agree}/{n} ({} classes \
             predicted); accuracy integer {:.2} %, fake-quant {:.2} %\n{}",
            classes.len(),
            acc(&p_int),
            acc(&p_fq),
            table.format()
        );
        assert!(
            classes.len() >= 3,
            "the test network predicts {classes:?} only"
        );
        assert!(agree * 1000 >= n * 999, "{agree}/{n} predictions agree");
        assert!((acc(&p_int) - acc(&p_fq)).abs() <= 0.05 + 1e-9);
    }
}

/// Sets the logit layer's bias to minus the mean logit over some images, so that a random
/// network's predictions spread over the classes instead of following its largest bias.
fn center_logits(params: &mut Params, layer: &str, logits: impl Fn(&Params) -> Vec<f32>) {
    let name = format!("{layer}.bias");
    let classes = params[&name].len();
    params.insert(name.clone(), vec![0.0; classes]);
    let l = logits(params);
    let rows = l.len() / classes;
    let mean: Vec<f32> = (0..classes)
        .map(|c| -(0..rows).map(|r| l[r * classes + c]).sum::<f32>() / rows as f32)
        .collect();
    params.insert(name, mean);
}

/// VGG-7 with random weights, BN statistics and mixed gates: pruned channels before padded
/// convolutions are kept where their constant is non-zero, and the GPU integer engine equals
/// the CPU reference and agrees with the GPU fake-quantized evaluation.
#[test]
fn vgg7_export_integer_inference() {
    let g = gpu();
    let arch = Arch::vgg7();
    let init = InitConfig {
        chain_logits: [6.0; 4],
        prune_logit: 6.0,
        seed: 21,
    };
    let mut params = reference::init_params(&arch, &init);
    for (i, l) in arch.weighted_layers().enumerate() {
        let c = l.out_channels();
        let name = &l.name;
        if l.batch_norm {
            let r = |k: u64, lo: f32, hi: f32| uniform(100 + 10 * i as u64 + k, c, lo, hi);
            params.insert(format!("{name}.gamma"), r(0, 0.5, 1.5));
            params.insert(format!("{name}.beta"), r(1, -0.2, 0.3));
            params.insert(format!("{name}.running_mean"), r(2, -0.1, 0.1));
            params.insert(format!("{name}.running_var"), r(3, 0.5, 1.5));
        }
    }
    // Ranges from two images, as training starts (spec §4.1).
    let init_images = uniform(9, 2 * 3 * 32 * 32, -2.0, 2.0);
    reference::range_init(&arch, &mut params, &init_images, 2, 21);
    set_gates(
        &arch,
        &mut params,
        &[8, 4, 2, 8, 16, 4, 32, 8],
        &[8, 4, 8, 4, 8, 32, 8],
        7,
    );
    let n = 8;
    let images = uniform(8, n * 3 * 32 * 32, -2.0, 2.0);
    let fake_quant = |p: &Params| {
        let mut fq_model = Model::new(g, arch.clone(), n, p).unwrap();
        fq_model.eval_batch(g, &images, &vec![0; n]).unwrap();
        g.read(&fq_model.logits(n).unwrap()).unwrap()
    };
    center_logits(&mut params, "classifier.1", fake_quant);
    let model = export::export(&arch, &params, &ExportOptions::default()).unwrap();
    round_trip(&model);
    let kept_for_exactness: usize = model
        .layers
        .iter()
        .map(|l| {
            model
                .layer_manifest(&l.name)
                .unwrap()
                .pruning
                .kept_for_exactness
                .len()
        })
        .sum();
    assert!(
        kept_for_exactness > 0,
        "some pruned channels feed padded convs with a constant"
    );
    for l in &model.layers {
        let m = model.layer_manifest(&l.name).unwrap();
        assert!(m.pruning.removal_exact);
        // features.7 feeds the linear layer: all of its pruned channels are removed.
        if l.name == "features.7" {
            assert_eq!(m.pruning.removed, m.pruning.pruned);
        }
    }
    // Forced removal records that it was inexact.
    let forced = export::export(
        &arch,
        &params,
        &ExportOptions {
            prune: PruneMode::All,
            ..ExportOptions::default()
        },
    )
    .unwrap();
    assert!(forced.layers.iter().any(|l| !forced
        .layer_manifest(&l.name)
        .unwrap()
        .pruning
        .removal_exact));

    let plan = IntPlan::new(&model).unwrap();
    let engine = IntEngine::new(g, &plan, n).unwrap();
    let gpu_logits = engine.infer(g, &images, n).unwrap();
    let m = 2;
    let cpu = infer_cpu(&plan, &images[..m * 3 * 32 * 32], m);
    for (i, (a, b)) in cpu.iter().zip(&gpu_logits).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "logit {i}: CPU {a}, GPU {b}");
    }

    let fq = fake_quant(&params);
    let p_fq = predictions(&fq, 10);
    let agree = agreement(&predictions(&gpu_logits, 10), &p_fq);
    let mut classes = p_fq.clone();
    classes.sort_unstable();
    classes.dedup();
    println!(
        "VGG-7: predictions agree on {agree}/{n} ({} classes predicted)",
        classes.len()
    );
    assert!(
        classes.len() >= 2,
        "the test network predicts {classes:?} only"
    );
    assert_eq!(agree, n, "{agree}/{n} predictions agree");
}

#[test]
fn corrupt_and_truncated_files_give_typed_errors() {
    let (arch, params) = lenet(&[4, 2, 8, 16], &[8, 4, 16], 4);
    let model = export::export(&arch, &params, &ExportOptions::default()).unwrap();
    let bytes = model.to_bytes().unwrap();
    let path = Path::new("model.bb.safetensors");
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;

    for (cut, part) in [
        (4, "header length"),
        (100, "header"),
        (bytes.len() - 1, "tensor data"),
    ] {
        match ExportedModel::from_bytes(&bytes[..cut], path) {
            Err(ExportError::Truncated {
                part: p, actual, ..
            }) => {
                assert_eq!(p, part);
                assert_eq!(actual, cut as u64);
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    // A flipped bit in the tensor data: the checksum names the tensor.
    let mut flipped = bytes.clone();
    flipped[8 + header + 10] ^= 0x10;
    match ExportedModel::from_bytes(&flipped, path) {
        Err(ExportError::Checksum { tensor, .. }) => assert!(
            tensor.starts_with("classifier.") || tensor.starts_with("features."),
            "{tensor}"
        ),
        other => panic!("flipped data: {other:?}"),
    }
    // A broken header.
    let mut broken = bytes.clone();
    broken[8] = b'[';
    assert!(matches!(
        ExportedModel::from_bytes(&broken, path),
        Err(ExportError::Corrupt { .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    // A training checkpoint is not an export.
    #[cfg(feature = "train")]
    {
        let mut ck = bayesian_bits::train::checkpoint::Checkpoint::new();
        ck.insert("features.0.weight", vec![1], vec![1.0]).unwrap();
        let ck_path = dir.path().join("checkpoint.safetensors");
        ck.save(&ck_path).unwrap();
        assert!(matches!(
            ExportedModel::load(&ck_path),
            Err(ExportError::NoManifest { .. })
        ));
    }
    assert!(matches!(
        ExportedModel::load(dir.path().join("absent")),
        Err(ExportError::NotFound { .. })
    ));
    // A manifest whose bits are not a Bayesian Bits width.
    let saved = dir.path().join("m.bb.safetensors");
    model.save(&saved).unwrap();
    let text = std::fs::read(&saved).unwrap();
    let s = String::from_utf8_lossy(&text[8..8 + header]).to_string();
    let bad = s.replacen("\\\"bits\\\":4", "\\\"bits\\\":5", 1);
    assert_ne!(bad, s);
    let mut edited = text[..8].to_vec();
    edited.extend(bad.as_bytes());
    edited.extend(&text[8 + header..]);
    match ExportedModel::from_bytes(&edited, path) {
        Err(ExportError::Manifest { msg, .. }) => assert!(msg.contains("bits 5"), "{msg}"),
        other => panic!("bad bits: {other:?}"),
    }
}
