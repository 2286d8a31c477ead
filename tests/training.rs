//! End-to-end training on the GPU: LeNet-5 learns a small synthetic task, checkpoints round
//! trip, and a resumed run is bit-identical to an uninterrupted one.

#![cfg(feature = "train")]

mod common;

use bayesian_bits::data::{Augment, Dataset};
use bayesian_bits::kernels::optim::Optimizer;
use bayesian_bits::nn::Arch;
use bayesian_bits::reference::layers::SgdConfig;
use bayesian_bits::train::checkpoint::Checkpoint;
use bayesian_bits::train::schedule::{MultiStep, Schedule};
use bayesian_bits::train::{TrainConfig, Trainer};
use common::gpu;
use std::sync::Arc;

/// 28×28 images: a bright bar whose position encodes the class, on noise.
fn synthetic(n: usize, seed: u64) -> Arc<Dataset> {
    let noise = common::uniform(seed, n * 784, 0.0, 0.3);
    let mut images = noise;
    let labels: Vec<u32> = (0..n as u32).map(|i| (i * 3 + seed as u32) % 10).collect();
    for (i, &label) in labels.iter().enumerate() {
        let (row, col) = (4 + 10 * (label as usize / 5), 2 + 5 * (label as usize % 5));
        for y in row..row + 6 {
            for x in col..col + 4 {
                images[i * 784 + y * 28 + x] = 1.0;
            }
        }
    }
    Arc::new(Dataset::new(images, labels, [1, 28, 28], 10, vec![0.0], vec![1.0]).unwrap())
}

fn config(epochs: u32, steps: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        max_steps_per_epoch: Some(steps),
        log_every: 10,
        seed: 5,
        ..TrainConfig::mnist()
    }
}

#[test]
fn lenet_learns_far_above_chance() {
    let g = gpu();
    let mut trainer = Trainer::new(
        g,
        Arch::lenet5(),
        config(3, 60),
        synthetic(960, 1),
        synthetic(200, 2),
        Augment::None,
    )
    .unwrap();
    let mut last = None;
    for _ in 0..3 {
        last = Some(trainer.train_epoch(|_| {}).unwrap());
    }
    let report = last.unwrap();
    assert!(
        report.test_accuracy > 80.0,
        "test accuracy {} %",
        report.test_accuracy
    );
    assert!(report.train_loss < 1.0, "train loss {}", report.train_loss);
    // Initial state: every quantizer 8-bit, nothing pruned → 6.25 % BOPs (spec §6).
    assert!(
        (report.relative_bops_percent - 6.25).abs() < 1e-9,
        "{}",
        report.relative_bops_percent
    );
}

#[test]
fn resume_is_bit_identical_to_an_uninterrupted_run() {
    assert_resume_is_bit_identical(config(2, 4));
}

/// SGD-Nesterov on the weights and a multistep decay after epoch 1 (spec §7.5): the momentum
/// buffer and the gates' and ranges' Adam state are checkpointed, and resuming is exact.
#[test]
fn resume_with_sgd_and_multistep_is_bit_identical() {
    let cfg = TrainConfig {
        optimizer: Optimizer::Sgd(SgdConfig::NESTEROV),
        schedule: Schedule::MultiStep(MultiStep::new(vec![1], 0.1).unwrap()),
        lr_weights: 0.01,
        ..config(2, 2)
    };
    let ckpt = assert_resume_is_bit_identical(cfg.clone());
    let keys: Vec<&str> = ckpt.extra.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "adam.gates.m",
            "adam.gates.v",
            "adam.scales.m",
            "adam.scales.v",
            "sgd.weights.momentum_buffer"
        ]
    );
    assert_eq!(ckpt.get_u64("sgd.weights.steps").unwrap(), Some(4));
    assert!(ckpt.extra["sgd.weights.momentum_buffer"]
        .data
        .iter()
        .any(|&b| b != 0.0));
    // Resuming with another optimizer than the checkpoint's is refused, naming both.
    let (train, test) = (synthetic(96, 3), synthetic(32, 4));
    let adam = TrainConfig {
        optimizer: Optimizer::Adam,
        ..cfg
    };
    let err = Trainer::resume(
        gpu(),
        Arch::lenet5(),
        adam,
        train,
        test,
        Augment::None,
        &ckpt,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sgd state for the weights group") && err.contains("uses adam"),
        "{err}"
    );
}

/// Trains `cfg` for two epochs straight and again with a checkpoint round trip after the
/// first; every tensor, extra and metadata entry must agree to the bit. Returns the final
/// checkpoint.
fn assert_resume_is_bit_identical(cfg: TrainConfig) -> Checkpoint {
    let g = gpu();
    let (train, test) = (synthetic(96, 3), synthetic(32, 4));
    let mut straight = Trainer::new(
        g,
        Arch::lenet5(),
        cfg.clone(),
        train.clone(),
        test.clone(),
        Augment::None,
    )
    .unwrap();
    straight.train_epoch(|_| {}).unwrap();
    straight.train_epoch(|_| {}).unwrap();
    let want = straight.checkpoint().unwrap();

    let mut first = Trainer::new(
        g,
        Arch::lenet5(),
        cfg.clone(),
        train.clone(),
        test.clone(),
        Augment::None,
    )
    .unwrap();
    first.train_epoch(|_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.safetensors");
    first.checkpoint().unwrap().save(&path).unwrap();
    drop(first);
    let loaded = Checkpoint::load(&path).unwrap();
    let mut resumed =
        Trainer::resume(g, Arch::lenet5(), cfg, train, test, Augment::None, &loaded).unwrap();
    assert_eq!(resumed.epoch(), 1);
    resumed.train_epoch(|_| {}).unwrap();
    let got = resumed.checkpoint().unwrap();

    assert_eq!(
        got.tensors.keys().collect::<Vec<_>>(),
        want.tensors.keys().collect::<Vec<_>>()
    );
    for (name, t) in &want.tensors {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&got.tensors[name].data),
            bits(&t.data),
            "{name} differs after resume"
        );
    }
    for (name, t) in &want.extra {
        assert_eq!(got.extra[name].data, t.data, "{name} differs after resume");
    }
    assert_eq!(got.metadata, want.metadata);
    got
}

#[test]
fn divergence_stops_training_with_a_typed_error() {
    let g = gpu();
    // A range learning rate this large pushes some x_max below zero in the first step.
    let cfg = TrainConfig {
        lr_scales: 1e3,
        ..config(1, 4)
    };
    let cfg = TrainConfig {
        log_every: 1,
        ..cfg
    };
    let mut trainer = Trainer::new(
        g,
        Arch::lenet5(),
        cfg,
        synthetic(64, 6),
        synthetic(16, 7),
        Augment::None,
    )
    .unwrap();
    match trainer.train_epoch(|_| {}) {
        Err(bayesian_bits::train::TrainError::Diverged { step, detail }) => {
            assert!(step >= 1, "{step}");
            assert!(detail.contains("quantizer.x_max = -"), "{detail}");
        }
        other => panic!("expected a divergence error, got {other:?}"),
    }
}

#[test]
fn resume_into_and_inside_fixed_gate_finetuning_is_bit_identical() {
    // The checkpoint of the last Bayesian Bits epoch resumes into fine-tuning, and one written
    // during fine-tuning resumes it (spec §7.4: SGD with Nesterov momentum on the weights).
    let into = TrainConfig {
        finetune_epochs: 1,
        ..config(1, 4)
    };
    let inside = TrainConfig {
        finetune_epochs: 2,
        ..config(0, 4)
    };
    for cfg in [into, inside] {
        let ckpt = assert_resume_is_bit_identical(cfg);
        assert!(ckpt.extra.contains_key("sgd.weights.momentum_buffer"));
        assert!(ckpt.extra.contains_key("adam.scales.m"));
    }
}
