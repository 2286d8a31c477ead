//! Export at the learned bit widths and integer inference: file round trip, typed errors,
//! GPU integer inference against the CPU integer reference (bit for bit), and predictions
//! against the fake-quantized float evaluation of the same parameters.

mod common;

use bayesian_bits::export::infer::{Repr, Step};
use bayesian_bits::export::{
    self, infer_cpu, onnx, predictions, Codes, ExportError, ExportOptions, ExportedModel, IntPlan,
    PruneMode, SizeTable,
};
use bayesian_bits::gpu::Gpu;
use bayesian_bits::kernels::int_infer::IntEngine;
use bayesian_bits::nn::{Arch, Model};
use bayesian_bits::reference::model::{self as reference, InitConfig, Mode, Params, StepKey};
use bayesian_bits::reference::quant::{self, gate_noise};
use bayesian_bits::spec::fixed::{fixed_gate_arch, fixed_gate_params, fixed_gates};
use bayesian_bits::spec::{Activation, ArchBuilder, Conv, LayerKind, Linear};
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

/// Sets the chain gates of the quantizer `prefix` (`….quantizer`) to give `bits`.
fn set_chain(params: &mut Params, prefix: &str, bits: u32) {
    for (g, v) in ["gamma_4", "gamma_8", "gamma_16", "gamma_32"]
        .iter()
        .zip(chain_for(bits))
    {
        params.insert(format!("{prefix}.{g}"), vec![v]);
    }
}

/// Sets the gates of every quantizer: weight bits and activation bits per weighted layer,
/// and prunes about a quarter of the prunable channels.
fn set_gates(arch: &Arch, params: &mut Params, weight_bits: &[u32], act_bits: &[u32], seed: u64) {
    for (i, l) in arch.weighted_layers().enumerate() {
        set_chain(
            params,
            &format!("{}.weight_quantizer.quantizer", l.name),
            weight_bits[i],
        );
        if l.act_quant {
            set_chain(params, &l.activation_quantizer(), act_bits[i]);
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

/// Draws the BN parameters and statistics of every BN layer from `seed`: γ ∈ [0.5, 1.5],
/// β ∈ [−0.2, 0.3], running mean ∈ [−0.1, 0.1], running variance ∈ [0.5, 1.5].
fn randomize_bn(arch: &Arch, params: &mut Params, seed: u64) {
    for (i, l) in arch.weighted_layers().enumerate() {
        if l.batch_norm {
            let c = l.out_channels();
            let r = |k: u64, lo: f32, hi: f32| uniform(seed + 10 * i as u64 + k, c, lo, hi);
            params.insert(format!("{}.gamma", l.name), r(0, 0.5, 1.5));
            params.insert(format!("{}.beta", l.name), r(1, -0.2, 0.3));
            params.insert(format!("{}.running_mean", l.name), r(2, -0.1, 0.1));
            params.insert(format!("{}.running_var", l.name), r(3, 0.5, 1.5));
        }
    }
}

/// Logits `[n, classes]` of the GPU fake-quantized evaluation of `params`.
fn gpu_fake_quant_logits(
    g: &Gpu,
    arch: &Arch,
    params: &Params,
    images: &[f32],
    n: usize,
) -> Vec<f32> {
    let mut model = Model::new(g, arch.clone(), n, params).unwrap();
    model.eval_batch(g, images, &vec![0; n]).unwrap();
    g.read(&model.logits(n).unwrap()).unwrap()
}

/// GPU integer inference of `plan` equals the CPU reference bit for bit on `n` images, and its
/// predictions equal those of the fake-quantized logits `fake_quant` on every image, which
/// spread over at least 3 classes.
fn check_integer_inference(
    g: &Gpu,
    name: &str,
    plan: &IntPlan,
    images: &[f32],
    n: usize,
    fake_quant: &[f32],
) {
    let engine = IntEngine::new(g, plan, n).unwrap();
    let gpu_logits = engine.infer(g, images, n).unwrap();
    let cpu = infer_cpu(plan, images, n);
    for (i, (a, b)) in cpu.iter().zip(&gpu_logits).enumerate() {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "{name}: logit {i}: CPU {a}, GPU {b}"
        );
    }
    let p_fq = predictions(fake_quant, plan.classes);
    let agree = agreement(&predictions(&cpu, plan.classes), &p_fq);
    let mut classes = p_fq.clone();
    classes.sort_unstable();
    classes.dedup();
    println!(
        "{name}: predictions agree on {agree}/{n} ({} classes predicted)",
        classes.len()
    );
    assert!(classes.len() >= 3, "{name}: predicts {classes:?} only");
    assert_eq!(agree, n, "{name}: {agree}/{n} predictions agree");
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

/// VGG-7 with random weights, BN statistics, ranges from two images and mixed gates.
fn vgg7() -> (Arch, Params) {
    let arch = Arch::vgg7();
    let init = InitConfig {
        chain_logits: [6.0; 4],
        prune_logit: 6.0,
        seed: 21,
    };
    let mut params = reference::init_params(&arch, &init);
    randomize_bn(&arch, &mut params, 100);
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
    (arch, params)
}

/// VGG-7: pruned channels before padded convolutions are kept where their constant is
/// non-zero, and the GPU integer engine equals the CPU reference and agrees with the GPU
/// fake-quantized evaluation.
#[test]
fn vgg7_export_integer_inference() {
    let g = gpu();
    let (arch, mut params) = vgg7();
    let n = 8;
    let images = uniform(8, n * 3 * 32 * 32, -2.0, 2.0);
    let fake_quant = |p: &Params| gpu_fake_quant_logits(g, &arch, p, &images, n);
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

/// Sets every residual sum's quantizer to the bit widths of `bits`, cycling.
fn set_add_bits(arch: &Arch, params: &mut Params, bits: &[u32]) {
    let adds = arch.layers.iter().filter(|l| l.kind == LayerKind::Add);
    for (k, l) in adds.enumerate() {
        set_chain(params, &l.activation_quantizer(), bits[k % bits.len()]);
    }
}

/// ResNet-20 with random weights and BN statistics, ranges from two images, and mixed gates:
/// weights at 2 to 16 bits, activations and residual sums at 4 to 16 bits, about a quarter of
/// the prunable channels pruned.
fn resnet20() -> (Arch, Params) {
    let arch = Arch::resnet20();
    let init = InitConfig {
        chain_logits: [6.0; 4],
        prune_logit: 6.0,
        seed: 31,
    };
    let mut params = reference::init_params(&arch, &init);
    randomize_bn(&arch, &mut params, 300);
    let init_images = uniform(19, 2 * 3 * 32 * 32, -2.0, 2.0);
    reference::range_init(&arch, &mut params, &init_images, 2, 31);
    let weighted = arch.weighted_layers().count();
    let weight_bits: Vec<u32> = (0..weighted).map(|i| [8, 4, 8, 2, 16][i % 5]).collect();
    let act_bits: Vec<u32> = (0..weighted).map(|i| [8, 4, 16, 8][i % 4]).collect();
    set_gates(&arch, &mut params, &weight_bits, &act_bits, 11);
    set_add_bits(&arch, &mut params, &[8, 4, 16, 8, 2]);
    (arch, params)
}

/// ResNet-20: strided convolutions, projection shortcuts, signed activations into residual
/// adds, global average pooling. Channels feeding an add stay (pruned ones as constants); the
/// GPU integer engine equals the CPU reference bit for bit and both agree with the GPU
/// fake-quantized evaluation.
#[test]
fn resnet20_export_integer_inference() {
    let g = gpu();
    let (arch, mut params) = resnet20();
    let n = 24;
    let images = uniform(18, n * 3 * 32 * 32, -2.0, 2.0);
    let fake_quant = |p: &Params| gpu_fake_quant_logits(g, &arch, p, &images, n);
    center_logits(&mut params, "fc", fake_quant);
    let model = export::export(&arch, &params, &ExportOptions::default()).unwrap();
    round_trip(&model);
    let manifest = |name: &str| model.layer_manifest(name).unwrap();
    assert_eq!(manifest("layer2.0.conv1").stride, 2);
    assert_eq!(manifest("layer3.0.downsample.0").stride, 2);
    let add = model
        .manifest
        .layers
        .iter()
        .find(|l| l.name == "layer1.0")
        .unwrap();
    assert_eq!(add.kind, "add");
    assert!(add.add.as_ref().unwrap().relu);
    let mut kept_at_adds = 0;
    for name in ["conv2", "downsample.0"] {
        for l in model.layers.iter().filter(|l| l.name.ends_with(name)) {
            let m = manifest(&l.name);
            assert!(m.pruning.removed.is_empty(), "{} feeds an add", l.name);
            assert_eq!(m.pruning.kept_for_exactness, m.pruning.pruned, "{}", l.name);
            assert!(m.activation.as_ref().unwrap().signed, "{}", l.name);
            kept_at_adds += m.pruning.pruned.len();
        }
    }
    assert!(kept_at_adds > 0, "some pruned channels feed adds");

    let plan = IntPlan::new(&model).unwrap();
    let fq = fake_quant(&params);
    check_integer_inference(g, "ResNet-20", &plan, &images, n, &fq);
}

/// A fixed-gate fine-tuned ResNet-20 (BN folded, spec §7.4) exports with the direct roundings
/// its quantizers use: scale · code is the fine-tuned model's weight, bit for bit, and the
/// integer reference agrees with the reference's fixed-gate evaluation.
#[test]
fn fixed_gate_resnet20_exports_its_direct_roundings() {
    let (bb_arch, bb_params) = resnet20();
    let arch = fixed_gate_arch(&bb_arch);
    let mut params = fixed_gate_params(&bb_arch, &bb_params).unwrap();
    let n = 64;
    let images = uniform(28, n * 3 * 32 * 32, -2.0, 2.0);
    let fixed_logits = |p: &Params| {
        let mut p = p.clone();
        let key = StepKey { seed: 0, step: 0 };
        reference::forward(&arch, &mut p, &images, n, key, Mode::FixedGates).logits
    };
    center_logits(&mut params, "fc", fixed_logits);
    let options = ExportOptions {
        fixed_gate: true,
        ..ExportOptions::default()
    };
    let model = export::export(&arch, &params, &options).unwrap();
    assert!(model.manifest.fixed_gate);
    round_trip(&model);

    // conv1 reads the whole image: its values must be the fine-tuned model's weights.
    let first = &model.layers[0];
    let m = model.layer_manifest(&first.name).unwrap();
    let fixed = fixed_gates(&arch, &params).unwrap();
    let q = &fixed["conv1.weight_quantizer.quantizer"];
    let w = &params["conv1.weight"];
    let mask = q.mask.as_deref();
    let want = quant::fixed_quantize(w, m.weight.x_max, m.weight.signed, q.bits, mask);
    let Codes::Int(codes) = &first.weight else {
        panic!("conv1 has integer codes at {} bits", m.weight.bits)
    };
    let row = 3 * 3 * 3;
    for (r, &o) in first.kept.iter().enumerate() {
        for i in 0..row {
            let got = m.weight.scale * codes[r * row + i] as f32;
            let want = want[o as usize * row + i];
            // Equal values (a code of 0 gives +0 where direct rounding may give −0).
            assert!(got == want, "conv1 [{o}, {i}]: {got} vs {want}");
        }
    }

    let plan = IntPlan::new(&model).unwrap();
    let cpu = infer_cpu(&plan, &images, n);
    let p_fixed = predictions(&fixed_logits(&params), 10);
    let agree = agreement(&predictions(&cpu, 10), &p_fixed);
    let mut classes = p_fixed.clone();
    classes.sort_unstable();
    classes.dedup();
    println!(
        "fixed-gate ResNet-20: predictions agree on {agree}/{n} ({} classes predicted)",
        classes.len()
    );
    assert!(classes.len() >= 3, "predicts {classes:?} only");
    // Float rounding moves an activation across a rounding tie now and then (measured on this
    // network: up to 0.5 % of a 16-bit layer's codes and 0.03 % of an 8-bit layer's move by
    // one step); in a random network whose logits are ~0.01 apart, one flipped 2-bit
    // residual-sum code can change a prediction. One such image in 64 is what this fixture
    // shows; more would mean a systematic difference.
    assert!(agree + 1 >= n, "{agree}/{n} predictions agree");
}

/// A small MobileNetV2 from the public builder: a ReLU6 stem, inverted residual blocks
/// (depthwise 3×3 with and without stride, identity adds of signed sums), global pooling and a
/// linear layer; random weights and BN statistics, ranges from two images, mixed gates.
fn mini_mobilenet() -> (Arch, Params) {
    let mut b = ArchBuilder::new("mini-MobileNetV2", [3, 16, 16], 10);
    let x = b.input();
    let stem = Conv::new(8, 3).pad(1).batch_norm().relu6();
    let x = b.conv("features.0.0", x, stem).unwrap();
    let x = b.inverted_residual("features.1", x, 8, 1, 1).unwrap();
    let x = b.inverted_residual("features.2", x, 12, 2, 4).unwrap();
    let x = b.inverted_residual("features.3", x, 12, 1, 4).unwrap();
    let x = b.global_avg_pool("pool", x).unwrap();
    let logits = b.linear("classifier", x, Linear::new(10)).unwrap();
    let arch = b.finish(logits).unwrap();
    let init = InitConfig {
        chain_logits: [6.0; 4],
        prune_logit: 6.0,
        seed: 41,
    };
    let mut params = reference::init_params(&arch, &init);
    randomize_bn(&arch, &mut params, 500);
    let init_images = uniform(43, 2 * 3 * 16 * 16, -2.0, 2.0);
    reference::range_init(&arch, &mut params, &init_images, 2, 41);
    let weighted = arch.weighted_layers().count();
    let weight_bits: Vec<u32> = (0..weighted).map(|i| [8, 4, 8, 16, 2][i % 5]).collect();
    let act_bits: Vec<u32> = (0..weighted).map(|i| [8, 4, 16, 8][i % 4]).collect();
    set_gates(&arch, &mut params, &weight_bits, &act_bits, 13);
    set_add_bits(&arch, &mut params, &[8, 16]);
    (arch, params)
}

/// MobileNetV2 blocks: depthwise convolutions run as grouped rows, ReLU6 caps the codes, signed
/// sums feed the next block's expansion; GPU integer inference equals the CPU reference bit for
/// bit and both agree with the GPU fake-quantized evaluation.
#[test]
fn mobilenet_export_integer_inference() {
    let g = gpu();
    let (arch, mut params) = mini_mobilenet();
    let n = 48;
    let images = uniform(44, n * 3 * 16 * 16, -2.0, 2.0);
    let fake_quant = |p: &Params| gpu_fake_quant_logits(g, &arch, p, &images, n);
    center_logits(&mut params, "classifier", fake_quant);
    let model = export::export(&arch, &params, &ExportOptions::default()).unwrap();
    round_trip(&model);
    let depthwise = model.layer_manifest("features.2.conv.1.0").unwrap();
    assert_eq!((depthwise.groups, depthwise.stride), (32, 2));
    assert!(depthwise.relu6);
    // A grouped layer keeps whole groups: its pruned channels stay as constants.
    assert!(!depthwise.pruning.pruned.is_empty());
    assert!(depthwise.pruning.removed.is_empty());
    assert_eq!(
        depthwise.pruning.kept_for_exactness,
        depthwise.pruning.pruned
    );

    let plan = IntPlan::new(&model).unwrap();
    // Signed 8-bit sums, packed as i8 lanes, feed the next block's expansion on the integer
    // path; ReLU6 codes feed the depthwise layers on it too.
    let int_input = |repr: Repr| {
        plan.steps
            .iter()
            .any(|s| matches!(s, Step::Layer(l) if l.int_path && l.input == repr))
    };
    assert!(int_input(Repr::PackedI8) && int_input(Repr::Packed8));
    let fq = fake_quant(&params);
    check_integer_inference(g, "mini MobileNetV2", &plan, &images, n, &fq);
}

/// Every pooling the builder offers and flatten: a padded 3×3 stride-2 max-pool, a padded
/// 3×3 average pool (zero padding counted), an unpadded 2×2 average pool and a flatten before
/// the linear layer; random weights, ranges from two images, mixed gates.
fn pools_net() -> (Arch, Params) {
    let mut b = ArchBuilder::new("pools", [3, 16, 16], 10);
    let x = b.input();
    let x = b
        .conv("c0", x, Conv::new(8, 3).pad(1).batch_norm())
        .unwrap();
    let x = b.max_pool("p0", x, 3, 2, 1).unwrap();
    let x = b.conv("c1", x, Conv::new(12, 3).pad(1)).unwrap();
    let x = b.avg_pool("p1", x, 3, 1, 1).unwrap();
    let x = b.conv("c2", x, Conv::new(16, 1)).unwrap();
    let x = b.avg_pool("p2", x, 2, 2, 0).unwrap();
    let x = b.flatten("flat", x).unwrap();
    let logits = b.linear("fc", x, Linear::new(10)).unwrap();
    let arch = b.finish(logits).unwrap();
    let init = InitConfig {
        chain_logits: [6.0; 4],
        prune_logit: 6.0,
        seed: 51,
    };
    let mut params = reference::init_params(&arch, &init);
    let init_images = uniform(52, 2 * 3 * 16 * 16, -2.0, 2.0);
    reference::range_init(&arch, &mut params, &init_images, 2, 51);
    set_gates(&arch, &mut params, &[8, 4, 8, 16], &[8, 4, 16], 17);
    (arch, params)
}

/// The pooling network: pruned channels removed through an unpadded pool and flatten, kept
/// before a padded average pool; GPU integer inference equals the CPU reference bit for bit and
/// both agree with the GPU fake-quantized evaluation.
#[test]
fn pooling_and_flatten_export_integer_inference() {
    let g = gpu();
    let (arch, mut params) = pools_net();
    let n = 64;
    let images = uniform(53, n * 3 * 16 * 16, -2.0, 2.0);
    let fake_quant = |p: &Params| gpu_fake_quant_logits(g, &arch, p, &images, n);
    center_logits(&mut params, "fc", fake_quant);
    let model = export::export(&arch, &params, &ExportOptions::default()).unwrap();
    round_trip(&model);
    let kinds: Vec<&str> = model
        .manifest
        .layers
        .iter()
        .map(|l| l.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["conv", "maxpool", "conv", "avgpool", "conv", "avgpool", "flatten", "linear"]
    );
    // c2's pruned channels reach the linear layer through an unpadded pool and flatten:
    // removed; c1's feed a zero-padded average pool, where a constant is not constant.
    let c2 = model.layer_manifest("c2").unwrap();
    assert!(!c2.pruning.pruned.is_empty());
    assert_eq!(c2.pruning.removed, c2.pruning.pruned);
    let c1 = model.layer_manifest("c1").unwrap();
    assert!(c1.pruning.removed.is_empty());

    let plan = IntPlan::new(&model).unwrap();
    let fq = fake_quant(&params);
    check_integer_inference(g, "pools", &plan, &images, n, &fq);
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

/// The initializer `name` of `g`.
fn initializer<'a>(g: &'a onnx::proto::GraphProto, name: &str) -> &'a onnx::proto::TensorProto {
    g.initializer
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("initializer {name}"))
}

/// The f32 scalar initializer `name` of `g`.
fn scalar(g: &onnx::proto::GraphProto, name: &str) -> f32 {
    let t = initializer(g, name);
    assert!(
        t.dims.is_empty() && t.data_type == onnx::proto::data_type::FLOAT,
        "{name}"
    );
    f32::from_le_bytes(t.raw_data[..].try_into().unwrap())
}

/// The operators that follow layer `name`'s sum (ReLU, activation quantizer), checking the
/// quantizer's initializers: container type, scale, and clip bounds that keep the codes on the
/// grid.
fn activation_ops(
    g: &onnx::proto::GraphProto,
    name: &str,
    relu: bool,
    relu6: bool,
    a: Option<&export::ActQuant>,
) -> Vec<&'static str> {
    use onnx::proto::data_type;
    let mut ops = Vec::new();
    if relu6 {
        ops.push("Clip");
        let bounds = ["min", "max"].map(|b| scalar(g, &format!("{name}.relu6_{b}")));
        assert_eq!(bounds, [0.0, 6.0], "{name}");
    } else if relu || a.is_some_and(|a| !a.signed) {
        ops.push("Relu");
    }
    let Some(a) = a else { return ops };
    let container = match (a.bits, a.signed) {
        (32, _) => None,
        (16, true) => Some(data_type::INT16),
        (16, false) => Some(data_type::UINT16),
        (_, true) => Some(data_type::INT8),
        (_, false) => Some(data_type::UINT8),
    };
    if a.signed {
        ops.push("Clip");
        let hi = scalar(g, &format!("{name}.act_max"));
        assert_eq!(scalar(g, &format!("{name}.act_min")), -hi, "{name}");
        if container.is_some() {
            // The bound is the top code's value: it quantizes to the top code, and every value
            // between it and the clip value rounds to the top code too.
            let top = ((1 << (a.bits - 1)) - 1) as f32;
            assert_eq!((hi / a.scale).round_ties_even(), top, "{name}");
            assert!(hi <= a.clip && hi + a.scale > a.clip, "{name}: bound {hi}");
        } else {
            assert_eq!(hi, a.clip, "{name}");
        }
    } else if a.bits < 8 || a.bits == 32 {
        ops.push(if a.bits == 32 { "Clip" } else { "Min" });
        assert_eq!(scalar(g, &format!("{name}.act_clip")), a.clip, "{name}");
    }
    if let Some(dtype) = container {
        let zero = initializer(g, &format!("{name}.act_zero_point"));
        assert_eq!(zero.data_type, dtype, "{name}");
        assert!(zero.raw_data.iter().all(|&b| b == 0), "{name}");
        assert_eq!(scalar(g, &format!("{name}.act_scale")), a.scale, "{name}");
        ops.extend(["QuantizeLinear", "DequantizeLinear"]);
    }
    ops
}

/// Decodes the ONNX model of `model` with the crate's own decoder and checks it against the
/// export: opset, input/output, the wiring (nodes in topological order, no unread results),
/// per layer the node sequence, the weight container type, the convolution attributes, the
/// kept-channel shapes, the unpacked codes and scales, and the activation quantizers.
fn check_onnx(model: &ExportedModel) -> onnx::proto::ModelProto {
    use onnx::proto::data_type;
    let bytes = onnx::onnx_bytes(model).unwrap();
    let decoded = onnx::decode(&bytes).unwrap();
    assert!(decoded == onnx::to_onnx(model).unwrap(), "decode ∘ encode");
    assert_eq!(decoded.ir_version, onnx::IR_VERSION);
    assert_eq!(decoded.opset_import.len(), 1);
    assert_eq!(
        (
            decoded.opset_import[0].domain.as_str(),
            decoded.opset_import[0].version
        ),
        ("", 21)
    );
    let g = decoded.graph.as_ref().unwrap();
    let dims = |v: &onnx::proto::ValueInfoProto| -> Vec<Option<i64>> {
        let t = v.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
        assert_eq!(t.elem_type, data_type::FLOAT);
        t.shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| d.dim_value)
            .collect()
    };
    let man = &model.manifest;
    assert_eq!((g.input.len(), g.input[0].name.as_str()), (1, "input"));
    let [c, h, w] = man.input.map(|d| Some(d as i64));
    assert_eq!(dims(&g.input[0]), vec![None, c, h, w]);
    assert_eq!((g.output.len(), g.output[0].name.as_str()), (1, "logits"));
    assert_eq!(dims(&g.output[0]), vec![None, Some(man.classes as i64)]);

    // Wiring: every node reads the input, initializers or earlier nodes' results, and every
    // result is read or is the logits.
    let mut known: Vec<&str> = vec!["input", ""];
    known.extend(g.initializer.iter().map(|t| t.name.as_str()));
    for n in &g.node {
        for i in &n.input {
            assert!(
                known.contains(&i.as_str()),
                "{} reads {i} before it exists",
                n.name
            );
        }
        known.extend(n.output.iter().map(String::as_str));
    }
    for n in &g.node {
        let out = n.output[0].as_str();
        let read = g.node.iter().any(|m| m.input.iter().any(|i| i == out));
        assert!(read || out == "logits", "{out} is not read");
    }

    let init = |name: &str| initializer(g, name);
    let mut ops = Vec::new();
    // Per value (0: the input, i + 1: layer i's output): kept and original channels, and
    // whether it is flat.
    let mut values: Vec<(usize, usize, bool)> = vec![(man.input[0], man.input[0], false)];
    for lm in &man.layers {
        let x = values[lm.inputs[0]];
        let name = &lm.name;
        let Some(m) = &lm.weighted else {
            let mut y = x;
            match (lm.kind.as_str(), &lm.add) {
                ("maxpool2x2" | "maxpool", None) => ops.push("MaxPool"),
                ("avgpool", None) => ops.push("AveragePool"),
                ("global_avg_pool", None) => ops.push("GlobalAveragePool"),
                ("flatten", None) => {
                    ops.push("Flatten");
                    y.2 = true;
                }
                ("add", Some(a)) => {
                    assert_eq!(values[lm.inputs[1]], x, "{name}: the two inputs agree");
                    ops.push("Add");
                    ops.extend(activation_ops(g, name, a.relu, false, Some(&a.activation)));
                }
                other => panic!("{name}: {other:?}"),
            }
            if let Some(pm) = lm.pool {
                let node = g
                    .node
                    .iter()
                    .find(|n| n.name == format!("{name}.out"))
                    .unwrap();
                let attr = |a: &str| {
                    let found = node.attribute.iter().find(|x| x.name == a).unwrap();
                    found.ints.clone()
                };
                let [k, st, pd] = [pm.kernel, pm.stride, pm.pad].map(|v| v as i64);
                assert_eq!(attr("kernel_shape"), [k, k], "{name}");
                assert_eq!(attr("strides"), [st, st], "{name}");
                assert_eq!(attr("pads"), [pd; 4], "{name}");
            }
            values.push(y);
            continue;
        };
        let l = model.layers.iter().find(|l| &l.name == name).unwrap();
        // Kept-channel shapes: rows are the kept output channels, columns the kept channels of
        // the value read (times the positions per channel for a linear layer).
        let q = &m.weight;
        assert_eq!(q.shape[0], l.kept.len(), "{name}");
        let linear = lm.kind == "linear";
        let (kept, total, flat) = x;
        let in_expected = if linear {
            kept * (lm.input.iter().product::<usize>() / total)
        } else {
            kept / m.groups
        };
        assert_eq!(q.shape[1], in_expected, "{name} input columns");
        values.push((l.kept.len(), m.out_channels, linear));
        let shape: Vec<i64> = q.shape.iter().map(|&d| d as i64).collect();
        let numel: usize = q.shape.iter().product();
        match &l.weight {
            Codes::Int(codes) => {
                let (dtype, stored) = onnx::code_container(q.bits, q.signed).unwrap();
                let t = init(&format!("{name}.weight_codes"));
                assert_eq!((t.data_type, &t.dims), (dtype, &shape), "{name}");
                if q.bits <= 4 {
                    assert_eq!(
                        dtype,
                        [data_type::UINT4, data_type::INT4][q.signed as usize]
                    );
                }
                let back = export::pack::unpack(&t.raw_data, numel, stored, q.signed).unwrap();
                assert!(&back == codes, "{name}: codes round trip");
                assert_eq!(scalar(g, &format!("{name}.weight_scale")), q.scale);
                ops.push("DequantizeLinear");
            }
            Codes::Float(v) => {
                let t = init(&format!("{name}.weight"));
                assert_eq!((t.data_type, &t.dims), (data_type::FLOAT, &shape));
                assert_eq!(t.raw_data.len(), 4 * v.len());
            }
        }
        // The bias is added after the operator, broadcast over the positions of a conv.
        let bias_dims = if linear { vec![] } else { vec![1, 1] };
        let bias_dims: Vec<i64> = [l.kept.len() as i64].into_iter().chain(bias_dims).collect();
        assert_eq!(init(&format!("{name}.bias")).dims, bias_dims);
        if linear && !flat {
            ops.push("Flatten");
        }
        if !linear {
            let conv = g.node.iter().find(|n| n.name == format!("{name}.conv"));
            let attr = |a: &str| {
                let conv = conv.unwrap_or_else(|| panic!("{name}: no Conv node"));
                let found = conv.attribute.iter().find(|x| x.name == a).unwrap();
                found.ints.clone()
            };
            let [k, p, s] = [m.kernel, m.padding, m.stride].map(|v| v as i64);
            assert_eq!(attr("kernel_shape"), [k, k], "{name}");
            assert_eq!(attr("pads"), [p; 4], "{name}");
            assert_eq!(attr("strides"), [s, s], "{name}");
            let conv = conv.unwrap();
            let group = conv.attribute.iter().find(|x| x.name == "group");
            assert_eq!(group.map_or(1, |a| a.i), m.groups as i64, "{name}: group");
        }
        ops.extend([if linear { "Gemm" } else { "Conv" }, "Add"]);
        ops.extend(activation_ops(
            g,
            name,
            m.relu,
            m.relu6,
            m.activation.as_ref(),
        ));
    }
    let got: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(got, ops);
    assert_eq!(g.node.last().unwrap().output, vec!["logits".to_string()]);
    decoded
}

/// Where the ONNX models and data for `tests/python/test_onnx.py` go: `BB_ONNX_DIR`, else a
/// folder in the target directory.
fn onnx_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("BB_ONNX_DIR")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("onnx"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// LeNet-5 as ONNX (2-bit codes in an int4 container, 4/8/16-bit weights, 2/4/16-bit
/// activations, pruned channels removed): the graph decodes to what the export holds, the
/// dequantized first-layer weights are the fake-quantized ones, and the model, images and
/// fake-quant predictions are written for the onnxruntime check in `tests/python`.
#[test]
fn onnx_lenet_graph_and_data() {
    let (arch, mut params) = lenet(&[2, 4, 8, 16], &[4, 2, 16], 6);
    let n = 1000;
    let images = uniform(11, n * 784, 0.0, 1.0);
    center_logits(&mut params, "classifier.1", |p| {
        fake_quant_logits_cpu(&arch, p, &images[..64 * 784], 64)
    });
    let model = export::export(&arch, &params, &ExportOptions::default()).unwrap();
    assert!(model.layers.iter().any(|l| {
        let m = model.layer_manifest(&l.name).unwrap();
        !m.pruning.removed.is_empty()
    }));
    let decoded = check_onnx(&model);

    // DequantizeLinear of the first layer's int4 codes gives the fake-quantized weights (the
    // first layer keeps its whole input) up to the rounding of one product vs. the stage sum;
    // at 2 bits there is no sum, so they are bit-identical.
    let g = decoded.graph.as_ref().unwrap();
    let t = g
        .initializer
        .iter()
        .find(|t| t.name == "features.0.weight_codes")
        .unwrap();
    let m = model.layer_manifest("features.0").unwrap();
    assert_eq!(
        (m.weight.bits, t.data_type),
        (2, onnx::proto::data_type::INT4)
    );
    let kept = &model.layers[0].kept;
    let codes = export::pack::unpack(&t.raw_data, kept.len() * 25, 4, true).unwrap();
    assert!(codes.iter().all(|c| (-1..=1).contains(c)));
    assert!(
        codes.contains(&-1) && codes.contains(&1),
        "both ends of the ternary grid"
    );
    let prefix = "features.0.weight_quantizer.quantizer";
    let chain =
        ["gamma_4", "gamma_8", "gamma_16", "gamma_32"].map(|g| params[&format!("{prefix}.{g}")][0]);
    let gates = quant::gates(chain, &[], false, |_| 0.5).chain;
    let fq = quant::quantize(
        &params["features.0.weight"],
        m.weight.x_max,
        true,
        gates,
        None,
    );
    for (r, &o) in kept.iter().enumerate() {
        for i in 0..25 {
            let dq = codes[r * 25 + i] as f32 * m.weight.scale;
            let want = fq[o as usize * 25 + i];
            assert_eq!(dq.to_bits(), want.to_bits(), "features.0 [{o}, {i}]");
        }
    }

    write_onnx_case("lenet5", &model, &arch, &params, &images, n);
}

/// Writes `{name}.onnx`, the images (f32 LE, NCHW) and the fake-quant predictions of `params`
/// (CPU reference, eval mode) for `tests/python/test_onnx.py`.
fn write_onnx_case(
    name: &str,
    model: &ExportedModel,
    arch: &Arch,
    params: &Params,
    images: &[f32],
    n: usize,
) {
    let p_fq = predictions(
        &fake_quant_logits_cpu(arch, params, images, n),
        arch.classes,
    );
    let mut classes = p_fq.clone();
    classes.sort_unstable();
    classes.dedup();
    assert!(
        classes.len() >= 3,
        "{name}: the test network predicts {classes:?}"
    );
    let dir = onnx_dir();
    onnx::save_onnx(model, dir.join(format!("{name}.onnx"))).unwrap();
    let raw: Vec<u8> = images.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join(format!("{name}.images.f32")), raw).unwrap();
    let [c, h, w] = arch.input;
    let case = serde_json::json!({
        "model": format!("{name}.onnx"),
        "images": format!("{name}.images.f32"),
        "shape": [n, c, h, w],
        "fake_quant_predictions": p_fq,
    });
    std::fs::write(dir.join(format!("{name}.json")), case.to_string()).unwrap();
    println!("wrote the {name} ONNX check data to {}", dir.display());
}

/// VGG-7 as ONNX: padded convolutions, folded BN, 32-bit weights and activations, channels
/// kept for exactness; the graph decodes to what the export holds, and the model, images and
/// fake-quant predictions are written for the onnxruntime check.
#[test]
fn onnx_vgg7_graph_and_data() {
    let (arch, mut params) = vgg7();
    let n = 16;
    let images = uniform(8, n * 3 * 32 * 32, -2.0, 2.0);
    center_logits(&mut params, "classifier.1", |p| {
        fake_quant_logits_cpu(&arch, p, &images, n)
    });
    let model = export::export(&arch, &params, &ExportOptions::default()).unwrap();
    let decoded = check_onnx(&model);
    let g = decoded.graph.as_ref().unwrap();
    for n in g.node.iter().filter(|n| n.op_type == "Conv") {
        let pads = n.attribute.iter().find(|a| a.name == "pads").unwrap();
        assert_eq!(pads.ints, vec![1; 4], "{}", n.name);
    }
    let kept_for_exactness = model.layers.iter().any(|l| {
        !model
            .layer_manifest(&l.name)
            .unwrap()
            .pruning
            .kept_for_exactness
            .is_empty()
    });
    assert!(kept_for_exactness);
    write_onnx_case("vgg7", &model, &arch, &params, &images, n);
}

/// ResNet-20 as ONNX: strided and 1×1 projection convolutions, residual adds of signed and
/// unsigned activations, global average pooling; signed activation quantizers at 2, 4, 8, 16
/// and 32 bits (the fixture's gates, with one block's `conv2` moved to 2 and another's to 32
/// bits). The graph decodes to what the export holds and is wired as the network, and the
/// model, images whose prediction is clearly decided, and fake-quant predictions are written
/// for the onnxruntime check.
#[test]
fn onnx_resnet20_graph_and_data() {
    let (arch, mut params) = resnet20();
    for (layer, bits) in [("layer1.1.conv2", 2), ("layer3.1.conv2", 32)] {
        set_chain(
            &mut params,
            &format!("{layer}.activation_quantizer.quantizer"),
            bits,
        );
    }
    // A random ResNet-20's logits vary little between noise images, and two faithful
    // evaluations of it differ by up to about 6 % of the logits' standard deviation σ (the
    // order of float sums, and the side of a rounding tie an activation lands on, amplified by
    // the 2- and 4-bit quantizers: the crate's integer reference differs from the fake-quant
    // evaluation as much as onnxruntime does). So the check takes, of 48 noise images, the
    // first 16 whose fake-quant top-2 logit margin is at least σ/4: it asks whether
    // onnxruntime runs the same network, not which side of a near-tie it lands on.
    let (pool, n, pixels) = (48, 16, 3 * 32 * 32);
    let candidates = uniform(28, pool * pixels, -2.0, 2.0);
    center_logits(&mut params, "fc", |p| {
        fake_quant_logits_cpu(&arch, p, &candidates, pool)
    });
    let logits = fake_quant_logits_cpu(&arch, &params, &candidates, pool);
    let mean = logits.iter().sum::<f32>() / logits.len() as f32;
    let sigma =
        (logits.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / logits.len() as f32).sqrt();
    let decided: Vec<usize> = (0..pool)
        .filter(|&i| {
            let mut row = logits[i * 10..(i + 1) * 10].to_vec();
            row.sort_by(|a, b| b.total_cmp(a));
            row[0] - row[1] >= sigma / 4.0
        })
        .take(n)
        .collect();
    assert_eq!(decided.len(), n, "images with a decided prediction");
    let images: Vec<f32> = decided
        .iter()
        .flat_map(|&i| candidates[i * pixels..(i + 1) * pixels].to_vec())
        .collect();
    let model = export::export(&arch, &params, &ExportOptions::default()).unwrap();
    let mut signed_bits: Vec<u32> = model
        .manifest
        .layers
        .iter()
        .filter_map(|l| l.weighted.as_ref()?.activation.as_ref())
        .filter(|a| a.signed)
        .map(|a| a.bits)
        .collect();
    signed_bits.sort_unstable();
    signed_bits.dedup();
    assert_eq!(signed_bits, [2, 4, 8, 16, 32]);
    // Some signed quantizer's clip value divides to a tie that rounds one past the top code:
    // clipping to ±clip before QuantizeLinear would leave the grid there (`check_onnx` checks
    // the bound written instead).
    let past_top = model
        .manifest
        .layers
        .iter()
        .filter_map(|l| l.weighted.as_ref()?.activation.as_ref())
        .filter(|a| a.signed && a.bits <= 16)
        .any(|a| (a.clip / a.scale).round_ties_even() > ((1 << (a.bits - 1)) - 1) as f32);
    assert!(past_top, "a signed clip value that rounds past the grid");
    let decoded = check_onnx(&model);
    let g = decoded.graph.as_ref().unwrap();
    let node = |name: &str| {
        g.node
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("node {name}"))
    };
    let strides = |name: &str| {
        let conv = node(&format!("{name}.conv"));
        let a = conv.attribute.iter().find(|a| a.name == "strides").unwrap();
        a.ints.clone()
    };
    assert_eq!(strides("layer2.0.conv1"), [2, 2]);
    assert_eq!(strides("layer3.0.downsample.0"), [2, 2]);
    assert_eq!(strides("layer2.0.conv2"), [1, 1]);
    // Each block's sum reads its conv2's dequantized activation and the shortcut: the block
    // input (the previous block's quantized sum, or the stem's activation) or the projection.
    let adds: Vec<_> = model
        .manifest
        .layers
        .iter()
        .filter(|l| l.kind == "add")
        .collect();
    assert_eq!(adds.len(), 9);
    let mut previous = "conv1".to_string();
    for l in &adds {
        let name = &l.name;
        let sum = node(&format!("{name}.out"));
        assert_eq!(sum.op_type, "Add");
        let projection = format!("{name}.downsample.0");
        let shortcut = if model.layer_manifest(&projection).is_some() {
            projection
        } else {
            previous.clone()
        };
        assert_eq!(
            sum.input,
            [format!("{name}.conv2.act"), format!("{shortcut}.act")],
            "{name}"
        );
        assert_eq!(node(&format!("{name}.relu")).input, [sum.output[0].clone()]);
        previous = name.clone();
    }
    // The projections read the previous block's sum, as conv1 of the same block does.
    assert_eq!(node("layer2.0.downsample.0.conv").input[0], "layer1.2.act");
    assert_eq!(node("layer2.0.conv1.conv").input[0], "layer1.2.act");
    // Global average pooling of the last sum, flattened into the linear layer.
    let pool = node("avgpool.out");
    assert_eq!(
        (pool.op_type.as_str(), pool.input.as_slice()),
        ("GlobalAveragePool", ["layer3.2.act".to_string()].as_slice())
    );
    assert_eq!(node("fc.flat").input, ["avgpool.out"]);
    write_onnx_case("resnet20", &model, &arch, &params, &images, n);
}

/// MobileNetV2 blocks (depthwise `group`, ReLU6 clips, signed sums) and every pooling layer
/// with flatten as ONNX: the graphs decode to what the exports hold, and the models, images and
/// fake-quant predictions are written for the onnxruntime check.
#[test]
fn onnx_mobilenet_and_pools_graph_and_data() {
    for (name, (arch, mut params), layer) in [
        ("mini_mobilenet", mini_mobilenet(), "classifier"),
        ("pools", pools_net(), "fc"),
    ] {
        let n = 32;
        let [c, h, w] = arch.input;
        let images = uniform(61, n * c * h * w, -2.0, 2.0);
        center_logits(&mut params, layer, |p| {
            fake_quant_logits_cpu(&arch, p, &images, n)
        });
        let model = export::export(&arch, &params, &ExportOptions::default()).unwrap();
        let decoded = check_onnx(&model);
        let ops: Vec<&str> = decoded
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        let expected: &[&str] = match name {
            "pools" => &["MaxPool", "AveragePool", "Flatten"],
            _ => &["Clip", "GlobalAveragePool"],
        };
        for op in expected {
            assert!(ops.contains(op), "{name}: no {op}");
        }
        write_onnx_case(name, &model, &arch, &params, &images, n);
    }
}

/// 4-bit packing as the ONNX spec has it (two per byte, low nibble first), and typed errors
/// for codes off the grid and for bytes that are not a model.
#[test]
fn onnx_int4_packing_and_errors() {
    assert_eq!(
        onnx::code_container(2, true),
        Some((onnx::proto::data_type::INT4, 4))
    );
    assert_eq!(
        export::pack::pack(&[-1, 1, 0, -1, 7], 4),
        vec![0x1f, 0xf0, 0x07]
    );
    assert_eq!(export::pack::pack(&[3, 15, 0], 4), vec![0xf3, 0x00]);
    for signed in [true, false] {
        let codes: Vec<i32> = if signed {
            (-8..=7).collect()
        } else {
            (0..=15).collect()
        };
        let bytes = export::pack::pack(&codes, 4);
        assert_eq!(export::pack::unpack(&bytes, 16, 4, signed).unwrap(), codes);
    }

    let (arch, params) = lenet(&[2, 4, 8, 16], &[4, 2, 16], 6);
    let mut model = export::export(&arch, &params, &ExportOptions::default()).unwrap();
    let Codes::Int(codes) = &mut model.layers[0].weight else {
        panic!("integer codes")
    };
    codes[3] = 2; // Off the 2-bit grid −1…1.
    match onnx::to_onnx(&model) {
        Err(ExportError::Onnx { msg, .. }) => {
            assert!(
                msg.contains("features.0") && msg.contains("code 2"),
                "{msg}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        onnx::decode(b"\x0a\xff"),
        Err(ExportError::Onnx { .. })
    ));
}

/// A chain the export otherwise covers, with `activation` after its second convolution.
fn chain_with(activation: Activation) -> Arch {
    let mut b = ArchBuilder::new("chain", [1, 12, 12], 10);
    let x = b.input();
    let x = b.conv("features.0", x, Conv::new(4, 3)).unwrap();
    let conv = Conv::new(8, 3).activation(activation);
    let x = b.conv("features.1", x, conv).unwrap();
    let x = b.max_pool("features.2", x, 2, 2, 0).unwrap();
    let logits = b.linear("classifier.0", x, Linear::new(10)).unwrap();
    b.finish(logits).unwrap()
}

#[test]
fn relu6_exports_on_layers_and_is_refused_after_an_add_naming_it() {
    let init = InitConfig {
        chain_logits: [6.0, 6.0, -6.0, -6.0],
        prune_logit: 6.0,
        seed: 8,
    };
    let options = ExportOptions::default();
    for (activation, relu, relu6) in [
        (Activation::Relu, true, false),
        (Activation::Relu6, true, true),
        (Activation::None, false, false),
    ] {
        let arch = chain_with(activation);
        let params = reference::init_params(&arch, &init);
        let model = export::export(&arch, &params, &options).unwrap();
        let m = model.manifest.layers[1].weighted.as_ref().unwrap();
        assert_eq!((m.relu, m.relu6), (relu, relu6), "{activation:?}");
    }
    // A residual add has ReLU or nothing in the format: ReLU6 there is refused by name.
    let mut b = ArchBuilder::new("relu6-add", [4, 8, 8], 10);
    let x = b.input();
    let y = b.conv("conv", x, Conv::new(4, 3).pad(1)).unwrap();
    let s = b.add("block", x, y, Activation::Relu6).unwrap();
    let logits = b.linear("fc", s, Linear::new(10)).unwrap();
    let arch = b.finish(logits).unwrap();
    let params = reference::init_params(&arch, &init);
    match export::export(&arch, &params, &options) {
        Err(ExportError::Activation {
            layer, activation, ..
        }) => assert_eq!((layer.as_str(), activation), ("block", Activation::Relu6)),
        other => panic!("expected an activation error, got {other:?}"),
    }
}
