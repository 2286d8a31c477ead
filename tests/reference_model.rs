//! The CPU reference model: structure facts from the spec and a training sanity check.

mod common;

use bayesian_bits::nn::Arch;
use bayesian_bits::reference::model::*;

fn mnist_init() -> InitConfig {
    InitConfig {
        chain_logits: [6.0, 6.0, -6.0, -6.0],
        prune_logit: 6.0,
        seed: 1,
    }
}

#[test]
fn regularizer_at_initialisation_matches_official_model() {
    // Spec §3: Σ_q R_q at initialisation, LeNet-5 36.62 (MNIST logits), VGG-7 503.31.
    let lenet = Arch::lenet5();
    let r = regularizer(
        &lenet,
        &init_params(&lenet, &mnist_init()),
        0.0,
        &mut Params::new(),
    );
    assert!((r - 36.62).abs() < 0.01, "LeNet-5 R = {r}");
    let vgg = Arch::vgg7();
    let cfg = InitConfig {
        chain_logits: [6.0; 4],
        prune_logit: 6.0,
        seed: 1,
    };
    let r = regularizer(&vgg, &init_params(&vgg, &cfg), 0.0, &mut Params::new());
    assert!((r - 503.31).abs() < 0.01, "VGG-7 R = {r}");
}

#[test]
fn default_initialisation_bounds() {
    let arch = Arch::lenet5();
    let p = init_params(&arch, &mnist_init());
    let w = &p["features.2.weight"];
    let bound = 1.0 / 800f32.sqrt();
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(
        w.iter().any(|v| v.abs() > 0.9 * bound),
        "uses the whole range"
    );
    assert_eq!(
        p["classifier.0.weight_quantizer.quantizer.gamma_2"],
        vec![6.0; 512]
    );
    assert_eq!(
        p["classifier.1.weight_quantizer.quantizer.gamma_16"],
        vec![-6.0]
    );
}

#[test]
fn range_init_sets_ranges_and_signedness() {
    let arch = Arch::lenet5();
    let mut p = init_params(&arch, &mnist_init());
    let images = common::uniform(3, 2 * 784, 0.0, 1.0);
    range_init(&arch, &mut p, &images, 2, 1);
    let w = &p["features.0.weight"];
    let w_max = w.iter().fold(0.0f32, |m, &v| m.max(v));
    assert_eq!(
        p["features.0.weight_quantizer.quantizer.x_max"],
        vec![w_max]
    );
    assert!(
        p["features.0.weight_quantizer.quantizer.x_min"][0] < 0.0,
        "weights are signed"
    );
    assert_eq!(
        p["features.0.activation_quantizer.quantizer.x_min"],
        vec![0.0],
        "post-ReLU is unsigned"
    );
    assert!(p["features.2.activation_quantizer.quantizer.x_max"][0] > 0.0);
}

#[test]
fn lenet_training_steps_fit_a_small_batch() {
    let arch = Arch::lenet5();
    let mut p = init_params(&arch, &mnist_init());
    let n = 8;
    let images = common::uniform(5, n * 784, 0.0, 1.0);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    range_init(&arch, &mut p, &images[..2 * 784], 2, 1);
    let mut opt = Optimizer::new();
    let mut losses = vec![];
    for step in 0..40 {
        let cfg = StepConfig {
            key: StepKey {
                seed: 1,
                step: step + 1,
            },
            mu: 0.1,
            lr_weights: 1e-3,
            lr_gates: 1e-3,
            lr_scales: 1e-3,
        };
        losses.push(train_step(&arch, &mut p, &mut opt, &images, &labels, &cfg).cross_entropy);
    }
    assert!(
        losses[39] < 0.5 * losses[0],
        "loss {} -> {}",
        losses[0],
        losses[39]
    );
    // Gate logits move under the regulariser.
    assert!(p["features.0.weight_quantizer.quantizer.gamma_8"][0] < 6.0);
    let correct = evaluate(&arch, &p, &images, &labels);
    assert!(correct >= n / 2, "memorises the batch: {correct}/{n}");
}
