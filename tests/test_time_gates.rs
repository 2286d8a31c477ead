//! Test-time gates and the other float32 constants against the official float32 recipes
//! (spec §1.4, §2.1, §2.3, §2.4): on the CPU reference, in the GPU gate kernel, and through the
//! evaluation of a LeNet-5 checkpoint whose logits sit on the float32 neighbours of the threshold.

#![cfg(feature = "train")]

mod common;

use bayesian_bits::nn::{Arch, Model};
use bayesian_bits::quant::{Quantizer, QuantizerConfig, StepState};
use bayesian_bits::reference::model::{self as reference_model, InitConfig, Mode, StepKey};
use bayesian_bits::reference::quant::{
    self as reference, bit_width, test_gate, CLIP_SHRINK, HC_BETA, HC_OFFSET, HC_SHIFT, HC_STRETCH,
    LOGIT_CUTOFF, TEST_GATE_THRESHOLD,
};
use bayesian_bits::train::checkpoint::Checkpoint;
use bayesian_bits::train::trainer::layer_reports;
use common::{gpu, uniform};

/// The official test-time gate, as the official code evaluates it in float32 (spec §2.4):
/// t = fl32(o − ℓ), p = 1 / (1 + exp(−t)), on iff p < fl32(0.34).
fn official_gate(logit: f32) -> bool {
    let t = HC_OFFSET - logit;
    1.0 / (1.0 + (-t).exp()) < 0.34f32
}

/// The logits the issue names, with the gate the official code gives each: the float32
/// neighbours of the boundary, and ±1e-3 around it.
fn boundary_cases() -> [(f32, bool); 5] {
    [
        (f32::from_bits(0xbf6f_6ffc), true),
        (f32::from_bits(0xbf6f_6ffd), false),
        (f32::from_bits(0xbf6f_6ffe), false),
        (-0.935_302_56 + 1e-3, true),
        (-0.935_302_56 - 1e-3, false),
    ]
}

#[test]
fn reference_gate_at_the_float32_neighbours_of_the_threshold() {
    assert_eq!(TEST_GATE_THRESHOLD.to_bits(), 0xbf6f_6ffd);
    for (logit, on) in boundary_cases() {
        assert_eq!(official_gate(logit), on, "official recipe at {logit:e}");
        assert_eq!(test_gate(logit) == 1.0, on, "test_gate at {logit:e}");
        // The same rule for a bit gate (g4) and a pruning gate, through the eval-mode sampler.
        let g = reference::gates([logit, 6.0, 6.0, 6.0], &[logit, 6.0], false, |_| 0.5);
        assert_eq!(g.chain[0] == 1.0, on, "g4 at {logit:e}");
        assert_eq!(g.prune[0] == 1.0, on, "z2 at {logit:e}");
        assert_eq!(
            bit_width([6.0, logit, -6.0, -6.0]),
            if on { 8 } else { 4 },
            "bit width with ℓ8 = {logit:e}"
        );
    }
}

#[test]
fn reference_gate_equals_the_float32_recipe_on_every_logit_near_the_threshold() {
    // Every float32 in [−0.9354, −0.9352]: negative floats grow in magnitude with their bits.
    let (near, far) = ((-0.9352f32).to_bits(), (-0.9354f32).to_bits());
    let mut flips = 0;
    for bits in near..=far {
        let logit = f32::from_bits(bits);
        let on = official_gate(logit);
        assert_eq!(test_gate(logit) == 1.0, on, "logit {logit:e} ({bits:#x})");
        flips += usize::from(bits > near && on != official_gate(f32::from_bits(bits - 1)));
    }
    assert_eq!(far - near + 1, 3357, "the sweep covers the interval");
    assert_eq!(flips, 1, "the recipe switches exactly once in the interval");
}

#[test]
fn other_constants_equal_the_official_float32_recipes() {
    // Hard-concrete offset o = β·ln(−γ/ζ), computed in float64 by Python, used in float32.
    let (beta, gamma, zeta) = (2.0f64 / 3.0, -0.1f64, 1.1f64);
    assert_eq!(HC_OFFSET, (beta * (-gamma / zeta).ln()) as f32);
    assert_eq!(HC_BETA, beta as f32);
    assert_eq!(HC_STRETCH, (zeta - gamma) as f32);
    assert_eq!(HC_SHIFT, gamma as f32);
    // The clip shrink: fl32(1 − 1e-7).
    assert_eq!(CLIP_SHRINK, (1.0f64 - 1e-7) as f32);
    // The ≤ −2 rule is a float32 compare with an exactly representable −2: −2 cuts the chain,
    // the next float32 above it does not.
    assert_eq!(LOGIT_CUTOFF, -2.0);
    let above = f32::from_bits((-2.0f32).to_bits() - 1);
    for training in [true, false] {
        let cut = reference::gates([6.0, -2.0, 6.0, 6.0], &[], training, |_| 0.5);
        assert_eq!(cut.chain[1..], [0.0; 3], "ℓ8 = −2 (training: {training})");
        let kept = reference::gates([6.0, above, 6.0, 6.0], &[], training, |_| 0.99);
        // Past the cutoff, the higher gates are decided (sampled or thresholded) again.
        assert_eq!(
            kept.chain[2..],
            [1.0; 2],
            "ℓ8 = {above:e} (training: {training})"
        );
    }
}

#[test]
fn gpu_gate_kernel_decides_like_the_official_recipe() {
    let g = gpu();
    let cases = boundary_cases();
    let step = StepState::new(g);
    step.set(g, 1, 0, false, 0.0);
    let mut cfg = QuantizerConfig {
        len: cases.len() * 4,
        prune_channels: cases.len(),
        signed: true,
        x_max: 1.0,
        chain_logits: [6.0; 4],
        prune_logit: 6.0,
        mac_ratio: 0.25,
        id: 3,
    };
    // One quantizer per case for the bit gates: the case's logit as ℓ8. (A gate above an off
    // gate keeps its own decision; the nesting makes it inert.)
    for (logit, on) in cases {
        cfg.chain_logits = [6.0, logit, 6.0, 6.0];
        let q = Quantizer::new(g, cfg.clone()).unwrap();
        let prune: Vec<f32> = cases.iter().map(|c| c.0).collect();
        let logits: Vec<f32> = cfg.chain_logits.iter().chain(&prune).copied().collect();
        q.set_logits(g, &logits).unwrap();
        let mut enc = g.encoder("eval gates");
        q.sample_gates(g, &mut enc, &step).unwrap();
        g.submit(enc);
        let gates = g.read_blocking(&[&q.gates]).unwrap().remove(0);
        assert_eq!(
            gates[..4],
            [1.0, f32::from(u8::from(on)), 1.0, 1.0],
            "ℓ8 = {logit:e}"
        );
        let want_prune: Vec<f32> = cases.iter().map(|c| f32::from(u8::from(c.1))).collect();
        assert_eq!(gates[4..], want_prune, "pruning gates");
    }
}

/// LeNet-5 parameters whose first layer's pruning logits and second layer's ℓ8 sit on the
/// threshold's neighbours.
fn boundary_lenet() -> (Arch, reference_model::Params, usize) {
    let arch = Arch::lenet5();
    let image_len: usize = arch.input.iter().product();
    let init = InitConfig {
        chain_logits: [6.0, 6.0, -6.0, -6.0],
        prune_logit: 6.0,
        seed: 5,
    };
    let mut params = reference_model::init_params(&arch, &init);
    let images = uniform(8, 2 * image_len, 0.0, 1.0);
    reference_model::range_init(&arch, &mut params, &images, 2, init.seed);
    let prune = params
        .get_mut("features.0.weight_quantizer.quantizer.gamma_2")
        .unwrap();
    let mut off = 0;
    for (l, (logit, on)) in prune.iter_mut().zip(boundary_cases()) {
        *l = logit;
        off += usize::from(!on);
    }
    params.insert(
        "features.2.weight_quantizer.quantizer.gamma_8".into(),
        vec![f32::from_bits(0xbf6f_6ffd)],
    );
    params.insert(
        "features.2.activation_quantizer.quantizer.gamma_8".into(),
        vec![f32::from_bits(0xbf6f_6ffc)],
    );
    (arch, params, off)
}

#[test]
fn evaluating_a_checkpoint_at_the_threshold_keeps_the_official_channels() {
    let g = gpu();
    let (arch, params, off) = boundary_lenet();
    // Through a checkpoint file, as `mnist evaluate` reads it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.safetensors");
    let mut ckpt = Checkpoint::new();
    for (name, shape) in arch.state_dict_shapes() {
        ckpt.insert(name.clone(), shape, params[&name].clone())
            .unwrap();
    }
    ckpt.save(&path).unwrap();
    let ckpt = Checkpoint::load(&path).unwrap();
    ckpt.validate_against(&arch).unwrap();
    let loaded = ckpt
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.data.clone()))
        .collect();

    let n = 3;
    let mut model = Model::new(g, arch.clone(), n, &loaded).unwrap();
    let reports = layer_reports(g, &model).unwrap();
    let conv1 = &reports[0];
    assert_eq!(
        conv1.kept_channels,
        conv1.total_channels - off,
        "features.0"
    );
    assert_eq!(
        reports[1].weight_bits, 4,
        "features.2 weights: ℓ8 at 0xbf6f6ffd"
    );
    assert_eq!(
        reports[1].act_bits,
        Some(8),
        "features.2 activations: ℓ8 at 0xbf6f6ffc"
    );

    // The GPU evaluation uses the same gates as the reference, whose gates the test above pins.
    let image_len: usize = arch.input.iter().product();
    let images = uniform(9, n * image_len, 0.0, 1.0);
    model.eval_batch(g, &images, &[1, 2, 3]).unwrap();
    let got = g.read(&model.logits(n).unwrap()).unwrap();
    let key = StepKey { seed: 0, step: 0 };
    let mut p = params.clone();
    let want = reference_model::forward(&arch, &mut p, &images, n, key, Mode::Eval).logits;
    common::assert_close(&got, &want, 1e-5, "eval logits");
    // And the boundary logit matters: switching channel 0 (0xbf6f6ffc) on changes nothing,
    // switching channel 1 (0xbf6f6ffd) on changes the logits.
    let prune = "features.0.weight_quantizer.quantizer.gamma_2";
    let mut on = params;
    on.get_mut(prune).unwrap()[0] = 6.0;
    let other = reference_model::forward(&arch, &mut on, &images, n, key, Mode::Eval).logits;
    assert_eq!(other, want, "channel 0 is on at 0xbf6f6ffc");
    on.get_mut(prune).unwrap()[1] = 6.0;
    let other = reference_model::forward(&arch, &mut on, &images, n, key, Mode::Eval).logits;
    assert_ne!(other, want, "channel 1 is off at 0xbf6f6ffd");
}
