//! Gate metrics: the per-step lines of `metrics.jsonl` (checked against the CPU reference), the
//! next gate to flip, the gate plot, and one submission per training step.

#![cfg(feature = "plot")]

mod common;

use bayesian_bits::data::{Augment, Dataset};
use bayesian_bits::nn::{Arch, LearningRates, Model, StepConfig};
use bayesian_bits::quant::QuantizerState;
use bayesian_bits::reference::model::{self as reference_model, InitConfig};
use bayesian_bits::reference::quant::{self as reference, HC_OFFSET};
use bayesian_bits::train::metrics::{
    layer_gates, next_flip, threshold_probability, QuantizerMetrics, StepMetrics,
};
use bayesian_bits::train::report::{redraw, EpochReport, MetricsLog};
use bayesian_bits::train::{TrainConfig, Trainer};
use common::gpu;
use std::collections::BTreeMap;
use std::sync::Arc;

/// 28×28 images: a bright bar whose position encodes the class, on noise.
fn synthetic(n: usize, seed: u64) -> Arc<Dataset> {
    let mut images = common::uniform(seed, n * 784, 0.0, 0.3);
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

/// P(g ≠ 0) = sigmoid(ℓ − β·ln(−γ/ζ)) (spec §2.1), computed here in f64.
fn sigmoid_p(logit: f32) -> f64 {
    1.0 / (1.0 + (-(f64::from(logit) - f64::from(HC_OFFSET))).exp())
}

fn assert_quantizer_matches(what: &str, m: &QuantizerMetrics, s: &QuantizerState) {
    for (g, (&p, &l)) in m.p.iter().zip(&s.chain_logits).enumerate() {
        assert!((0.0..=1.0).contains(&p), "{what} g{g}: P = {p}");
        assert_eq!(p, reference::prob_nonzero(l), "{what} g{g}");
        assert!(
            (f64::from(p) - sigmoid_p(l)).abs() < 1e-6,
            "{what} g{g}: {p} vs sigmoid {}",
            sigmoid_p(l)
        );
    }
    assert_eq!(m.x_max, s.x_max, "{what} x_max");
    assert_eq!(m.bits, reference::bit_width(s.chain_logits), "{what} bits");
    match (&m.prune, s.prune_logits.is_empty()) {
        (None, true) => {}
        (Some(p), false) => {
            let probs: Vec<f64> = s.prune_logits.iter().map(|&l| sigmoid_p(l)).collect();
            let mean = probs.iter().sum::<f64>() / probs.len() as f64;
            let min = probs.iter().copied().fold(f64::INFINITY, f64::min);
            let off = s
                .prune_logits
                .iter()
                .filter(|&&l| reference::test_gate(l) == 0.0)
                .count() as f64
                / probs.len() as f64;
            for v in [p.mean, p.min, p.below_threshold] {
                assert!((0.0..=1.0).contains(&v), "{what}: {v}");
            }
            assert!((f64::from(p.mean) - mean).abs() < 1e-5, "{what} mean");
            assert!((f64::from(p.min) - min).abs() < 1e-6, "{what} min");
            assert_eq!(f64::from(p.below_threshold), off, "{what} below threshold");
        }
        (p, _) => panic!(
            "{what}: prune metrics {p:?} for {} channels",
            s.prune_logits.len()
        ),
    }
}

#[test]
fn step_lines_hold_every_quantizer_and_agree_with_the_reference() {
    let g = gpu();
    let arch = Arch::lenet5();
    // Logits near the threshold so that some test-time decisions are close to flipping.
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        max_steps_per_epoch: Some(5),
        log_every: 2,
        seed: 11,
        chain_logits: [6.0, 0.5, -1.2, -6.0],
        prune_logit: 1.0,
        lr_gates: 0.05,
        ..TrainConfig::mnist()
    };
    let mut trainer = Trainer::new(
        g,
        arch.clone(),
        cfg,
        synthetic(80, 1),
        synthetic(16, 2),
        Augment::None,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let mut log = MetricsLog::create(&path).unwrap();
    let mut progress_steps = Vec::new();
    let report = trainer
        .train_epoch_logged(|p| progress_steps.push(p.step), |s| Ok(log.append_step(s)?))
        .unwrap();
    log.append(&report).unwrap();
    drop(log);
    // Every log_every steps and after the epoch's last, in order.
    assert_eq!(progress_steps, [2, 4, 5]);

    // The lines parse, as JSON and as records.
    let text = std::fs::read_to_string(&path).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v.get("epoch").is_some(), "{line}");
    }
    let history = MetricsLog::read_all(&path).unwrap();
    assert_eq!(history.epochs.len(), 1);
    let steps = &history.steps;
    assert_eq!(steps.iter().map(|s| s.step).collect::<Vec<_>>(), [2, 4, 5]);
    let infos = reference_model::quantizers(&arch);
    for s in steps {
        assert_eq!(s.epoch, 1);
        assert!(s.loss.is_finite() && s.loss > 0.0, "{}", s.loss);
        assert!((0.0..=100.0).contains(&s.accuracy));
        assert!(s.regularizer > 0.0);
        let names: Vec<&str> = s.layers.iter().map(|l| l.name.as_str()).collect();
        let want: Vec<&str> = arch.weighted_layers().map(|l| l.name.as_str()).collect();
        assert_eq!(names, want);
        for (i, l) in s.layers.iter().enumerate() {
            // Weights and activations of every layer; the logit layer has no activations.
            assert_eq!(l.activation.is_some(), i + 1 < want.len(), "{}", l.name);
            let prunable = infos
                .iter()
                .find(|q| q.prefix == format!("{}.weight_quantizer.quantizer", l.name))
                .unwrap()
                .prune_channels
                > 0;
            assert_eq!(l.weight.prune.is_some(), prunable, "{}", l.name);
            for q in std::iter::once(&l.weight).chain(&l.activation) {
                assert!(q.p.iter().all(|p| (0.0..=1.0).contains(p)), "{q:?}");
                assert!(q.next_flip.is_some());
            }
        }
    }
    // The gates move between readbacks (lr_gates is large here).
    assert_ne!(steps[0].layers[0].weight.p, steps[2].layers[0].weight.p);

    // The last line was read after the last step: it is the state the model holds now.
    let states = trainer.model().quantizer_states(g).unwrap();
    let last = steps.last().unwrap();
    for l in &last.layers {
        let w = &states[&format!("{}.weight_quantizer.quantizer", l.name)];
        assert_quantizer_matches(&format!("{} weights", l.name), &l.weight, w);
        if let Some(a) = &l.activation {
            let s = &states[&format!("{}.activation_quantizer.quantizer", l.name)];
            assert_quantizer_matches(&format!("{} activations", l.name), a, s);
        }
    }
    // The regulariser of the last step, before its logit update: the reference's ΣR_q of the
    // current logits within the movement of one Adam step.
    let expected: f64 = infos
        .iter()
        .map(|q| {
            let s = &states[&q.prefix];
            let prune = (q.prune_channels > 0).then_some(s.prune_logits.as_slice());
            reference::regularizer(s.chain_logits, prune, f64::from(q.mac_ratio)).value
        })
        .sum();
    assert!(
        (last.regularizer - expected).abs() < 0.02 * expected,
        "{} vs {expected}",
        last.regularizer
    );
    // The epoch line holds the same gates, and its table names the next flips.
    assert_eq!(report.gates, layer_gates(&arch, &states));
    let table = report.table();
    assert!(table.contains("next flip (P)"), "{table}");
    for l in &report.gates {
        let f = l.next_flip().unwrap();
        assert!(
            table.contains(&f.label()),
            "{} missing:\n{table}",
            f.label()
        );
    }
}

#[test]
fn a_training_step_is_one_submission_and_a_readback_two() {
    // A device of its own: the other tests of this binary submit to the shared one meanwhile.
    let g = &bayesian_bits::gpu::Gpu::new_blocking().unwrap();
    let arch = Arch::lenet5();
    let init = InitConfig {
        chain_logits: [6.0, 6.0, -6.0, -6.0],
        prune_logit: 6.0,
        seed: 3,
    };
    let mut params = reference_model::init_params(&arch, &init);
    let data = synthetic(8, 4);
    reference_model::range_init(&arch, &mut params, &data.images()[..2 * 784], 2, 3);
    let mut model = Model::new(g, arch, 8, &params).unwrap();
    let labels: Vec<u32> = (0..8).map(|i| i % 10).collect();
    let images = &data.images()[..8 * 784];
    for step in 1..=3 {
        let cfg = StepConfig {
            seed: 3,
            step,
            mu: 0.1,
            lr: LearningRates {
                weights: 1e-3,
                gates: 1e-3,
                scales: 1e-3,
            },
        };
        let before = g.submissions();
        model.train_step(g, images, &labels, &cfg).unwrap();
        assert_eq!(g.submissions() - before, 1, "step {step}");
    }
    let before = g.submissions();
    let (future, _) = model.snapshot_async(g, true);
    assert_eq!(g.submissions() - before, 2, "the copy and the reset");
    g.wait().unwrap();
    let snapshot = pollster::block_on(future).unwrap();
    assert_eq!(snapshot.metrics.examples, 24);
    assert_eq!(
        snapshot.quantizers.unwrap(),
        model.quantizer_states(g).unwrap()
    );
    assert_eq!(
        model.take_metrics(g).unwrap().examples,
        0,
        "sums were reset"
    );
}

fn state(chain: [f32; 4], prune: &[f32]) -> QuantizerState {
    QuantizerState {
        x_max: 1.0,
        chain_logits: chain,
        prune_logits: prune.to_vec(),
    }
}

#[test]
fn next_flip_is_the_gate_nearest_the_test_time_threshold() {
    let t = reference::TEST_GATE_THRESHOLD;
    // g4, g8 on (8 bits): g8 is the nearer of g8 (would turn off) and g16 (would turn on).
    let f = next_flip(&state([6.0, -0.5, -6.0, -6.0], &[])).unwrap();
    assert_eq!((f.gate.as_str(), f.on), ("g8", true));
    assert_eq!(f.p, reference::prob_nonzero(-0.5));
    let f = next_flip(&state([6.0, 6.0, -1.0, -6.0], &[])).unwrap();
    assert_eq!((f.gate.as_str(), f.on), ("g16", false));
    // Gates after the first one that is off do not count, however near they are.
    let f = next_flip(&state([6.0, -1.5, t + 1e-3, -6.0], &[])).unwrap();
    assert_eq!((f.gate.as_str(), f.on), ("g8", false));
    // A gate at or below the cut-off (ℓ ≤ −2) is off for good: the paper's MNIST start
    // (6, 6, −6, −6) next flips g8 off, although g16 is nearer the threshold.
    let f = next_flip(&state([6.0, 6.0, -6.0, -6.0], &[])).unwrap();
    assert_eq!((f.gate.as_str(), f.on), ("g8", true));
    let f = next_flip(&state([6.0, -3.0, t + 1e-3, -6.0], &[])).unwrap();
    assert_eq!((f.gate.as_str(), f.on), ("g4", true));
    // A pruning gate nearer than the chain gates wins; its on/off decision is the crate's.
    let f = next_flip(&state([6.0, 6.0, -6.0, -6.0], &[6.0, -1.0, 7.5])).unwrap();
    assert_eq!((f.gate.as_str(), f.on), ("z2[1]", false));
    let f = next_flip(&state([6.0, 6.0, -6.0, -6.0], &[6.0, 0.0, -3.0, 7.0])).unwrap();
    assert_eq!((f.gate.as_str(), f.on), ("z2[1]", true));
    // Either side of the threshold, decided by the crate's test-time gate.
    let above = next_flip(&state([6.0, t.next_up(), -6.0, -6.0], &[])).unwrap();
    assert!(above.on && above.gate == "g8");
    let at = next_flip(&state([6.0, t, -6.0, -6.0], &[])).unwrap();
    assert!(!at.on && at.gate == "g8");
    let p = threshold_probability();
    assert!((f64::from(p) - 0.66).abs() < 1e-6, "{p}");
    assert_eq!(
        QuantizerMetrics::from_state(&state([6.0; 4], &[])).bits,
        32,
        "all gates on"
    );
}

/// Step lines of LeNet-5 whose logits drift over `n` steps.
fn drifting_steps(arch: &Arch, n: u64, epoch: u64) -> Vec<StepMetrics> {
    let infos = reference_model::quantizers(arch);
    (1..=n)
        .map(|k| {
            let d = k as f32 * 0.4;
            let states: BTreeMap<String, QuantizerState> = infos
                .iter()
                .enumerate()
                .map(|(i, q)| {
                    let chain = [6.0 - d, 3.0 - d * (1 + i) as f32, -0.5 - d, -6.0 + d];
                    let prune: Vec<f32> = (0..q.prune_channels)
                        .map(|c| 2.0 - d * (c % 3) as f32)
                        .collect();
                    (q.prefix.clone(), state(chain, &prune))
                })
                .collect();
            StepMetrics {
                epoch,
                step: k * 10,
                loss: 2.0 / k as f64,
                accuracy: 10.0 * k as f64,
                regularizer: 5.0,
                images_per_second: 100.0,
                layers: layer_gates(arch, &states),
            }
        })
        .collect()
}

/// Polylines of an SVG with at least `min` points.
fn polylines(svg: &str, min: usize) -> usize {
    svg.split("<polyline")
        .skip(1)
        .filter(|p| {
            let points = p.split("points=\"").nth(1).unwrap_or("");
            let points = &points[..points.find('"').unwrap_or(0)];
            points.split_whitespace().count() >= min
        })
        .count()
}

#[test]
fn plot_draws_one_series_per_quantizer_from_a_metrics_file() {
    let arch = Arch::lenet5();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let steps = drifting_steps(&arch, 5, 1);
    let mut log = MetricsLog::create(&path).unwrap();
    for s in &steps {
        log.append_step(s).unwrap();
    }
    let epoch = EpochReport {
        epoch: 1,
        train_loss: 0.5,
        train_accuracy: 80.0,
        test_accuracy: 79.0,
        relative_bops_percent: 6.25,
        regularizer: 5.0,
        images_per_second: 100.0,
        layers: vec![],
        gates: steps[4].layers.clone(),
    };
    log.append(&epoch).unwrap();
    drop(log);
    // A run still writing: a torn last line is ignored.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"epoch\": 2, \"step\": 6");
    std::fs::write(&path, text).unwrap();

    let out = dir.path().join("plots");
    std::fs::create_dir(&out).unwrap();
    let [bits, gates] = redraw(&path, &out).unwrap();
    let svg = std::fs::read_to_string(&gates).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // Weights: 4 layers × g4…g32; activations: 3 layers × g4…g32; pruning: 3 layers × (mean,
    // min). Axes, ticks and the dashed threshold are 2-point lines; a series has 5 points.
    let layers = arch.weighted_layers().count();
    let pruned = steps[0]
        .layers
        .iter()
        .filter(|l| l.weight.prune.is_some())
        .count();
    assert_eq!(pruned, 3);
    assert_eq!(
        polylines(&svg, 5),
        4 * layers + 4 * (layers - 1) + 2 * pruned,
        "one series per quantizer and gate"
    );
    for l in arch.weighted_layers() {
        assert!(svg.contains(&l.name), "{} missing", l.name);
    }
    assert!(svg.contains("test-time threshold P = 0.66"));
    for title in [
        "weights: P(g8 on)",
        "activations: P(g32 on)",
        "min P(z2 on)",
    ] {
        assert!(svg.contains(title), "{title} missing");
    }
    let bits = std::fs::read_to_string(&bits).unwrap();
    assert!(bits.contains("test accuracy vs relative BOPs"));

    // Step lines do not disturb epoch readers, and a resume drops those of later epochs.
    assert_eq!(MetricsLog::read(&path).unwrap(), vec![epoch]);
    let mut log = MetricsLog::resume(&path, 1).unwrap();
    for s in drifting_steps(&arch, 2, 2) {
        log.append_step(&s).unwrap();
    }
    drop(log);
    drop(MetricsLog::resume(&path, 1).unwrap());
    let history = MetricsLog::read_all(&path).unwrap();
    assert_eq!(history.steps, steps);
    assert_eq!(history.epochs.len(), 1);
}
