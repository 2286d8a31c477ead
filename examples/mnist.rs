//! Train LeNet-5 on MNIST or Fashion-MNIST (idx files, plain or `.gz`) with Bayesian Bits
//! (spec §7.2), or evaluate a checkpoint.
//!
//! `cargo run --release --example mnist -- --data data/` downloads MNIST into `data/` when the
//! idx files are absent; point `--data` at a Fashion-MNIST folder to train on that instead.

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
    data::ensure_mnist(dir)
}

fn main() -> ExitCode {
    common::exit::exit_code(common::main(common::Experiment {
        arch: Arch::lenet5(),
        models: &[("lenet5", Arch::lenet5)],
        defaults: TrainConfig::mnist(),
        augment: Augment::None,
        ensure,
        load: data::load_mnist,
    }))
}
