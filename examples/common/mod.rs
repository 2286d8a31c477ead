//! The command line shared by the `cifar10` and `mnist` examples: train with the paper's recipe
//! (progress bar, per-epoch table, checkpoint, metrics, report and plot), resume, or evaluate.

use bayesian_bits::data::{self, Augment, Dataset, Split};
use bayesian_bits::gpu::Gpu;
use bayesian_bits::nn::{Arch, Model};
use bayesian_bits::train::checkpoint::Checkpoint;
use bayesian_bits::train::report::{
    format_table, plot_svg, relative_bops_percent, EpochReport, MetricsLog, Report,
};
use bayesian_bits::train::trainer::layer_reports;
use bayesian_bits::train::{TrainConfig, Trainer};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which experiment an example runs.
pub struct Experiment {
    /// Model.
    pub arch: Arch,
    /// Paper defaults.
    pub defaults: TrainConfig,
    /// Training-time augmentation.
    pub augment: Augment,
    /// Makes sure the files are in the directory (downloading them if absent), returns where.
    pub ensure: fn(&Path, bool) -> Result<PathBuf, data::DataError>,
    /// Loads a split.
    pub load: fn(&Path, Split) -> Result<Dataset, data::DataError>,
}

/// Command line of both examples.
#[derive(Parser)]
#[command(about = "Bayesian Bits: learned mixed precision and pruning on wgpu")]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate a checkpoint: test accuracy, per-layer bits and relative BOPs.
    Evaluate {
        /// A checkpoint written by this project or exported from the official code.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Dataset directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// Print the report as JSON (same keys as report.json).
        #[arg(long)]
        json: bool,
        /// Adapter name substring (as WGPU_ADAPTER_NAME).
        #[arg(long)]
        adapter: Option<String>,
    },
}

#[derive(Args)]
struct TrainArgs {
    /// Dataset directory (downloaded there when empty).
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Output directory: checkpoint.safetensors, metrics.jsonl, report.json, bits.svg.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Epochs [default: the paper's].
    #[arg(long)]
    epochs: Option<u32>,
    /// Batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Regulariser strength μ.
    #[arg(long)]
    mu: Option<f32>,
    /// Learning rate of weights, biases and BN parameters.
    #[arg(long)]
    lr_weights: Option<f32>,
    /// Learning rate of the gate logits.
    #[arg(long)]
    lr_gates: Option<f32>,
    /// Learning rate of the ranges x_max.
    #[arg(long)]
    lr_scales: Option<f32>,
    /// Seed of initialisation, data order, augmentation and gate noise.
    #[arg(long)]
    seed: Option<u64>,
    /// Initial gate logits ℓ4,ℓ8,ℓ16,ℓ32, e.g. 6,6,-6,-6.
    #[arg(long, value_delimiter = ',', num_args = 4)]
    gate_logits: Option<Vec<f32>>,
    /// Initial pruning logit of every channel.
    #[arg(long)]
    prune_logit: Option<f32>,
    /// Stop every epoch after this many steps (quick runs).
    #[arg(long)]
    max_steps_per_epoch: Option<usize>,
    /// Evaluate on the first N test images only (quick runs on slow adapters).
    #[arg(long)]
    eval_images: Option<usize>,
    /// Read loss and accuracy back every N steps.
    #[arg(long)]
    log_every: Option<usize>,
    /// Continue from OUT/checkpoint.safetensors.
    #[arg(long)]
    resume: bool,
    /// Do not download the dataset when it is missing.
    #[arg(long)]
    offline: bool,
    /// Adapter name substring (as WGPU_ADAPTER_NAME).
    #[arg(long)]
    adapter: Option<String>,
}

impl TrainArgs {
    fn config(&self, defaults: &TrainConfig) -> TrainConfig {
        let d = defaults.clone();
        TrainConfig {
            epochs: self.epochs.unwrap_or(d.epochs),
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            mu: self.mu.unwrap_or(d.mu),
            lr_weights: self.lr_weights.unwrap_or(d.lr_weights),
            lr_gates: self.lr_gates.unwrap_or(d.lr_gates),
            lr_scales: self.lr_scales.unwrap_or(d.lr_scales),
            seed: self.seed.unwrap_or(d.seed),
            chain_logits: self
                .gate_logits
                .as_ref()
                .map_or(d.chain_logits, |v| [v[0], v[1], v[2], v[3]]),
            prune_logit: self.prune_logit.unwrap_or(d.prune_logit),
            max_steps_per_epoch: self.max_steps_per_epoch.or(d.max_steps_per_epoch),
            log_every: self.log_every.unwrap_or(d.log_every),
        }
    }
}

fn gpu(adapter: &Option<String>) -> Result<Gpu, Box<dyn Error>> {
    let gpu = Gpu::new_blocking_with(adapter.as_deref())?;
    eprintln!("{}: {}", gpu.adapter_name(), gpu.kernel_config());
    Ok(gpu)
}

fn load(
    exp: &Experiment,
    dir: &Path,
    offline: bool,
    splits: &[Split],
) -> Result<Vec<Arc<Dataset>>, Box<dyn Error>> {
    let dir = (exp.ensure)(dir, offline)?;
    splits
        .iter()
        .map(|&s| Ok(Arc::new((exp.load)(&dir, s)?)))
        .collect()
}

/// Parses the command line and runs it.
pub fn main(exp: Experiment) -> Result<(), Box<dyn Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Evaluate {
            checkpoint,
            data,
            json,
            adapter,
        }) => evaluate(&exp, &checkpoint, &data, json, &adapter),
        None => train(&exp, &cli.train),
    }
}

fn train(exp: &Experiment, args: &TrainArgs) -> Result<(), Box<dyn Error>> {
    let cfg = args.config(&exp.defaults);
    let gpu = gpu(&args.adapter)?;
    let mut sets = load(exp, &args.data, args.offline, &[Split::Train, Split::Test])?;
    let (test_set, train_set) = (
        sets.pop().expect("test split"),
        sets.pop().expect("train split"),
    );
    let test_set = match args.eval_images {
        Some(n) => Arc::new(test_set.head(n)?),
        None => test_set,
    };
    std::fs::create_dir_all(&args.out)?;
    let ckpt_path = args.out.join("checkpoint.safetensors");
    let metrics_path = args.out.join("metrics.jsonl");
    let (mut trainer, mut metrics) = if args.resume && ckpt_path.exists() {
        let ckpt = Checkpoint::load(&ckpt_path)?;
        let trainer = Trainer::resume(
            &gpu,
            exp.arch.clone(),
            cfg.clone(),
            train_set,
            test_set,
            exp.augment,
            &ckpt,
        )?;
        log::info!(
            "resuming {} after epoch {}",
            ckpt_path.display(),
            trainer.epoch()
        );
        let metrics = MetricsLog::resume(&metrics_path, u64::from(trainer.epoch()))?;
        (trainer, metrics)
    } else {
        let trainer = Trainer::new(
            &gpu,
            exp.arch.clone(),
            cfg.clone(),
            train_set,
            test_set,
            exp.augment,
        )?;
        (trainer, MetricsLog::create(&metrics_path)?)
    };
    let mut history = MetricsLog::read(&metrics_path)?;
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")?
        .progress_chars("=> ");
    while trainer.epoch() < cfg.epochs {
        let bar = ProgressBar::new(0)
            .with_style(style.clone())
            .with_prefix(format!("{}/{}", trainer.epoch() + 1, cfg.epochs));
        let report = trainer.train_epoch(|p| {
            let msg = format!(
                "loss {:.4}  acc {:.2}%  {:.0} img/s",
                p.loss, p.accuracy, p.images_per_second
            );
            if bar.is_hidden() {
                // No terminal (a log file, CI): print the progress as log lines instead.
                log::info!("step {}/{}: {msg}", p.step, p.steps);
            }
            bar.set_length(p.steps as u64);
            bar.set_position(p.step as u64);
            bar.set_message(msg);
        })?;
        bar.finish();
        println!(
            "epoch {}: train loss {:.4}, train acc {:.2}%, {:.0} img/s\n{}",
            report.epoch,
            report.train_loss,
            report.train_accuracy,
            report.images_per_second,
            format_table(
                &report.layers,
                report.relative_bops_percent,
                report.test_accuracy
            )
        );
        trainer.checkpoint()?.save(&ckpt_path)?;
        metrics.append(&report)?;
        history.push(report);
        plot_svg(&history, args.out.join("bits.svg"))?;
    }
    let last: &EpochReport = history
        .last()
        .ok_or("no epoch was trained (is --epochs 0?)")?;
    last.report().write_json(args.out.join("report.json"))?;
    println!("wrote {}", args.out.join("report.json").display());
    Ok(())
}

fn evaluate(
    exp: &Experiment,
    checkpoint: &Path,
    data: &Path,
    json: bool,
    adapter: &Option<String>,
) -> Result<(), Box<dyn Error>> {
    let gpu = gpu(adapter)?;
    let ckpt = Checkpoint::load(checkpoint)?;
    ckpt.validate_against(&exp.arch)?;
    let params = ckpt
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.data.clone()))
        .collect();
    let batch = exp.defaults.batch_size;
    let mut model = Model::new(&gpu, exp.arch.clone(), batch, &params)?;
    let test_set = load(exp, data, true, &[Split::Test])?
        .pop()
        .expect("test split");
    model.take_metrics(&gpu)?;
    for b in data::Prefetcher::new(data::Batcher::eval(test_set, batch)?)? {
        model.eval_batch(&gpu, &b.images, &b.labels)?;
    }
    let metrics = model.take_metrics(&gpu)?;
    let layers = layer_reports(&gpu, &model)?;
    let report = Report {
        test_accuracy: 100.0 * f64::from(metrics.accuracy()),
        relative_bops_percent: relative_bops_percent(&exp.arch, &layers)?,
        layers,
    };
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
