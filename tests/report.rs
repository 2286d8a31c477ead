//! Reports: report.json keys, relative BOPs (spec TV6), metrics log resume, SVG plot.

#![cfg(feature = "plot")]

use bayesian_bits::nn::Arch;
use bayesian_bits::quant::QuantizerState;
use bayesian_bits::train::report::{
    format_table, plot_svg, relative_bops_percent, EpochReport, LayerReport, MetricsLog, Report,
    ReportError,
};

fn layers(arch: &Arch, wb: &[u32], ab: &[u32]) -> Vec<LayerReport> {
    let n = arch.weighted_layers().count();
    arch.weighted_layers()
        .enumerate()
        .map(|(i, l)| LayerReport {
            name: l.name.to_string(),
            weight_bits: wb[i],
            act_bits: (i + 1 < n).then_some(ab[i]),
            kept_channels: l.out_channels(),
            total_channels: l.out_channels(),
        })
        .collect()
}

fn epoch(e: u64, arch: &Arch) -> EpochReport {
    let n = arch.weighted_layers().count();
    let bits = |i: usize| {
        if e < 3 {
            8
        } else if i.is_multiple_of(2) {
            4
        } else {
            2
        }
    };
    let wb: Vec<u32> = (0..n).map(bits).collect();
    let ab: Vec<u32> = (0..n).map(|i| bits(i + 1)).collect();
    let mut layers = layers(arch, &wb, &ab);
    if e >= 2 {
        layers[0].kept_channels -= e as usize;
    }
    let bops = relative_bops_percent(arch, &layers).unwrap();
    EpochReport {
        epoch: e,
        train_loss: 1.0 / e as f64,
        train_accuracy: 90.0 + e as f64,
        test_accuracy: 89.5 + e as f64,
        relative_bops_percent: bops,
        regularizer: 10.0 / e as f64,
        images_per_second: 1234.5,
        layers,
        gates: vec![],
    }
}

#[test]
fn report_json_has_exactly_the_required_keys() {
    let arch = Arch::lenet5();
    let report = epoch(4, &arch).report();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    report.write_json(&path).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["layers", "relative_bops_percent", "test_accuracy"]);
    assert_eq!(obj["test_accuracy"].as_f64(), Some(93.5));
    let layers = obj["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    for l in layers {
        let mut keys: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "act_bits",
                "kept_channels",
                "name",
                "total_channels",
                "weight_bits"
            ]
        );
    }
    assert_eq!(layers[0]["name"], "features.0");
    assert_eq!(layers[0]["kept_channels"], 28);
    assert_eq!(layers[0]["total_channels"], 32);
    assert!(layers[3]["act_bits"].is_null());
    assert_eq!(layers[3]["name"], "classifier.1");
    assert_eq!(Report::read_json(&path).unwrap(), report);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp files"
    );
}

#[test]
fn relative_bops_matches_spec_tv6() {
    let lenet = Arch::lenet5();
    let all8 = layers(&lenet, &[8; 4], &[8; 4]);
    let v = relative_bops_percent(&lenet, &all8).unwrap();
    assert!((v - 6.25).abs() < 1e-12, "{v}");

    let vgg = Arch::vgg7();
    let all32 = layers(&vgg, &[32; 8], &[32; 8]);
    let v = relative_bops_percent(&vgg, &all32).unwrap();
    assert!((v - 99.569_064_410_905_07).abs() < 1e-9, "{v}");

    let all4 = layers(&vgg, &[4; 8], &[4; 8]);
    let v = relative_bops_percent(&vgg, &all4).unwrap();
    assert!((v - 1.571_477_824_772_811_2).abs() < 1e-12, "{v}");

    // Pruning layer l scales BOP_l and BOP_{l+1}; the last layer is never pruned.
    let mut pruned = layers(&lenet, &[4, 2, 2, 8], &[4, 2, 2, 0]);
    pruned[0].kept_channels = 16; // keep 0.5
    pruned[1].kept_channels = 16; // keep 0.25
    pruned[2].kept_channels = 128; // keep 0.25
    let macs = [460_800.0, 3_276_800.0, 524_288.0, 5_120.0];
    let expected = 100.0
        * (macs[0] * 4.0 * 8.0 * 0.5
            + macs[1] * 2.0 * 4.0 * 0.25 * 0.5
            + macs[2] * 2.0 * 2.0 * 0.25 * 0.25
            + macs[3] * 8.0 * 2.0 * 0.25)
        / (4_267_008.0 * 1024.0);
    let v = relative_bops_percent(&lenet, &pruned).unwrap();
    assert!((v - expected).abs() < 1e-12, "{v} vs {expected}");
}

#[test]
fn relative_bops_refuses_mismatched_layers() {
    let lenet = Arch::lenet5();
    let good = layers(&lenet, &[8; 4], &[8; 4]);
    let check = |ls: &[LayerReport], needle: &str| {
        let err = relative_bops_percent(&lenet, ls).unwrap_err();
        assert!(matches!(err, ReportError::Layers { .. }));
        let msg = err.to_string();
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    };
    check(&good[..3], "expected 4 weighted layers, got 3");
    let mut bad = good.clone();
    bad[1].name = "features.1".into();
    check(&bad, "expected layer features.2, got features.1");
    let mut bad = good.clone();
    bad[2].total_channels = 7;
    check(&bad, "classifier.0 has 512 output channels");
    let mut bad = good.clone();
    bad[0].kept_channels = 33;
    check(&bad, "keeps 33 of 32");
    let mut bad = good.clone();
    bad[1].act_bits = None;
    check(&bad, "features.2 has no activation bits");
    let mut bad = good;
    bad[0].weight_bits = 0;
    check(&bad, "0 weight bits");
}

#[test]
fn layer_report_from_quantizer_states() {
    let weight = QuantizerState {
        x_max: 1.0,
        chain_logits: [6.0, 6.0, -6.0, -6.0],
        prune_logits: vec![6.0, -6.0, 6.0, 6.0],
    };
    let act = QuantizerState {
        x_max: 2.0,
        chain_logits: [6.0, -6.0, -6.0, -6.0],
        prune_logits: vec![],
    };
    let l = LayerReport::from_states("features.0", 4, &weight, Some(&act));
    assert_eq!(
        l,
        LayerReport {
            name: "features.0".into(),
            weight_bits: 8,
            act_bits: Some(4),
            kept_channels: 3,
            total_channels: 4,
        }
    );
    let last = LayerReport::from_states("classifier.1", 10, &act, None);
    assert_eq!(last.kept_channels, 10);
    assert_eq!(last.act_bits, None);
}

#[test]
fn table_lists_layers_bops_and_accuracy() {
    let arch = Arch::vgg7();
    let report = epoch(3, &arch).report();
    let t = report.table();
    for l in arch.weighted_layers() {
        assert!(t.contains(&l.name), "{t}");
    }
    assert!(t.contains("125/128"), "{t}");
    assert!(t.contains("relative BOPs"), "{t}");
    assert!(t.contains("test accuracy: 92.50 %"), "{t}");
    let last = t.lines().find(|l| l.starts_with("classifier.1")).unwrap();
    assert!(last.contains(" - "), "{last}");
    assert_eq!(format_table(&[], 0.0, 0.0).lines().count(), 3);
}

#[test]
fn metrics_log_appends_and_truncates_on_resume() {
    let arch = Arch::lenet5();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    {
        let mut log = MetricsLog::create(&path).unwrap();
        for e in 1..=5 {
            log.append(&epoch(e, &arch)).unwrap();
            // Each line is on disk as soon as it is appended.
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().count(), e as usize);
            assert!(text.ends_with('\n'));
        }
    }
    // Resume after epoch 3 (the checkpoint of epoch 3): epochs 4 and 5 are dropped.
    {
        let mut log = MetricsLog::resume(&path, 3).unwrap();
        let kept = MetricsLog::read(&path).unwrap();
        assert_eq!(kept.iter().map(|e| e.epoch).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(kept[2], epoch(3, &arch));
        for e in 4..=6 {
            log.append(&epoch(e, &arch)).unwrap();
        }
    }
    let all = MetricsLog::read(&path).unwrap();
    assert_eq!(
        all.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );

    // A torn last line (crash mid-write) is dropped on resume.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"epoch\": 7, \"train_lo");
    std::fs::write(&path, &text).unwrap();
    assert_eq!(MetricsLog::read(&path).unwrap().len(), 6);
    drop(MetricsLog::resume(&path, 10).unwrap());
    assert_eq!(MetricsLog::read(&path).unwrap().len(), 6);
    assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));

    // Corruption before the last line is an error naming the file and line.
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[1] = "garbage".into();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = MetricsLog::resume(&path, 3).unwrap_err().to_string();
    assert!(
        err.contains("metrics.jsonl") && err.contains("line 2"),
        "{err}"
    );

    // Resuming with no log yet creates one; resuming at 0 empties it.
    let fresh = dir.path().join("fresh.jsonl");
    let mut log = MetricsLog::resume(&fresh, 0).unwrap();
    log.append(&epoch(1, &arch)).unwrap();
    drop(log);
    drop(MetricsLog::resume(&fresh, 0).unwrap());
    assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "");
}

#[test]
fn non_finite_metrics_survive_a_round_trip() {
    let arch = Arch::lenet5();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let mut e = epoch(1, &arch);
    e.train_loss = f64::NAN;
    let mut log = MetricsLog::create(&path).unwrap();
    log.append(&e).unwrap();
    log.append(&epoch(2, &arch)).unwrap();
    drop(log);
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("\"train_loss\":null"));
    let back = MetricsLog::read(&path).unwrap();
    assert!(back[0].train_loss.is_nan());
    drop(MetricsLog::resume(&path, 1).unwrap());
    assert_eq!(MetricsLog::read(&path).unwrap().len(), 1);
}

#[test]
fn svg_plot_is_written_with_layer_names() {
    let arch = Arch::vgg7();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bits.svg");
    let mut epochs: Vec<EpochReport> = (1..=6).map(|e| epoch(e, &arch)).collect();
    epochs[4].relative_bops_percent = f64::NAN;
    plot_svg(&epochs, &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    for l in arch.weighted_layers() {
        assert!(svg.contains(&l.name), "{} missing", l.name);
    }
    for title in [
        "weight bits",
        "activation bits",
        "relative BOPs",
        "test accuracy vs relative BOPs",
    ] {
        assert!(svg.contains(title), "{title} missing");
    }
    assert!(svg.contains("<polyline"), "no lines drawn");

    // Degenerate inputs still give an SVG.
    plot_svg(&[], &path).unwrap();
    plot_svg(&epochs[..1], &path).unwrap();
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("features.0"));
    // An unwritable destination is an error naming it.
    let err = plot_svg(&epochs, dir.path().join("missing").join("x.svg"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.svg"), "{err}");
}
