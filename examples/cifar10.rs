//! Train VGG-7 (the paper's network, spec §7.3), ResNet-20 (`--model resnet20`) or MobileNetV2
//! (`--model mobilenetv2`, the CIFAR variant `Arch::mobilenetv2_cifar`) on CIFAR-10 with
//! Bayesian Bits, or evaluate a checkpoint.
//!
//! `cargo run --release --example cifar10 -- --data data/` downloads CIFAR-10 into `data/` when
//! it is absent; `--help` lists the flags (defaults are the paper's recipe).

mod common;

use bayesian_bits::data::{self, Augment};
use bayesian_bits::nn::Arch;
use bayesian_bits::train::TrainConfig;
use std::path::Path;
use std::process::ExitCode;

fn ensure(dir: &Path, offline: bool) -> Result<std::path::PathBuf, data::DataError> {
    if offline {
        return Ok(dir.to_path_buf());
    }
    data::ensure_cifar10(dir)
}

fn main() -> ExitCode {
    common::exit::exit_code(common::main(common::Experiment {
        arch: Arch::vgg7(),
        models: &[
            ("vgg7", Arch::vgg7),
            ("resnet20", Arch::resnet20),
            ("mobilenetv2", Arch::mobilenetv2_cifar),
        ],
        defaults: TrainConfig::cifar10(),
        augment: Augment::CropFlip,
        ensure,
        load: data::load_cifar10,
    }))
}
