//! The command line shared by the `cifar10` and `mnist` examples: train with the paper's recipe
//! (progress bar, per-epoch table, checkpoint, metrics, report and plots), resume, evaluate, or
//! redraw the plots of a (running) training's `metrics.jsonl`.

pub mod exit;

use bayesian_bits::data::{self, Augment, Dataset, Split};
use bayesian_bits::gpu::{Gpu, PipelineCacheLoad};
use bayesian_bits::kernels::optim::Optimizer;
use bayesian_bits::nn::{Arch, Model};
use bayesian_bits::quant::graph_relative_bops;
use bayesian_bits::spec::fixed::fixed_gate_arch;
use bayesian_bits::spec::optim::SgdConfig;
use bayesian_bits::train::checkpoint::Checkpoint;
use bayesian_bits::train::metrics::layer_gates;
use bayesian_bits::train::report::{
    format_table_with_flips, plot_svg, redraw, EpochReport, MetricsLog, Report,
};
use bayesian_bits::train::schedule::{MultiStep, Schedule};
use bayesian_bits::train::trainer::layer_reports;
use bayesian_bits::train::{TrainConfig, Trainer};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A model `--model` can choose: its name and its preset.
pub type NamedModel = (&'static str, fn() -> Arch);

/// Which experiment an example runs.
pub struct Experiment {
    /// Model (the first of `models`).
    pub arch: Arch,
    /// The models `--model` chooses from, by name; the first is the default.
    pub models: &'static [NamedModel],
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
    /// The network to train or load (see `--help` of each example for the choices).
    #[arg(long, global = true)]
    model: Option<String>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate a checkpoint: test accuracy, per-layer bits and relative BOPs.
    Evaluate {
        /// A checkpoint written by this project or exported from the official code.
        #[arg(long, required_unless_present = "export")]
        checkpoint: Option<PathBuf>,
        /// Run an export (written by the `export` subcommand) with integer inference instead;
        /// with --checkpoint as well, also count how often its predictions agree with the
        /// checkpoint's fake-quantized float evaluation.
        #[arg(long)]
        export: Option<PathBuf>,
        /// Evaluate on the first N test images only.
        #[arg(long)]
        images: Option<usize>,
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
    /// Export a checkpoint at its learned bit widths with pruned channels removed (one
    /// safetensors file); prints the size table and writes it to export.json next to OUT.
    Export {
        /// The checkpoint to export.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output file, e.g. model.bb.safetensors.
        #[arg(long)]
        out: PathBuf,
        /// Remove every pruned channel, even where zero padding makes that inexact.
        #[arg(long)]
        remove_all_pruned: bool,
        /// Also write the export as an ONNX QDQ model (opset 21) to this file.
        #[arg(long)]
        onnx: Option<PathBuf>,
    },
    /// Redraw bits.svg and gates.svg from a metrics.jsonl (also while a run is writing it).
    Plot {
        /// The metrics.jsonl of a run.
        #[arg(long, default_value = "out/metrics.jsonl")]
        metrics: PathBuf,
        /// Where to write the plots [default: the directory of --metrics].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The `--optimizer` of the weights group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WeightsOptimizer {
    /// Adam (the paper's MNIST and CIFAR-10 recipe).
    Adam,
    /// SGD with momentum (the ImageNet recipe).
    Sgd,
}

#[derive(Args)]
struct TrainArgs {
    /// Dataset directory (downloaded there when empty).
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Output directory: checkpoint.safetensors, metrics.jsonl, report.json, bits.svg,
    /// gates.svg.
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
    /// Optimizer of weights, biases and BN parameters; gates and ranges always use Adam.
    #[arg(long, value_enum, default_value_t = WeightsOptimizer::Adam)]
    optimizer: WeightsOptimizer,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    momentum: Option<f64>,
    /// SGD with Nesterov momentum [default: true].
    #[arg(long)]
    nesterov: Option<bool>,
    /// SGD weight decay [default: 0].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Multistep decay of all three learning rates by --gamma after these epochs, e.g. 10,20
    /// (replaces the paper's linear decay of the weights rate).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    milestones: Option<Vec<u32>>,
    /// Decay factor of --milestones.
    #[arg(long, requires = "milestones", default_value_t = 0.1)]
    gamma: f64,
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
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    gate_logits: Option<Vec<f32>>,
    /// Initial pruning logit of every channel.
    #[arg(long)]
    prune_logit: Option<f32>,
    /// Fixed-gate fine-tuning epochs after the Bayesian Bits epochs (spec §7.4): test-time bits
    /// and pruning masks frozen, BN folded, SGD (Nesterov) on weights and Adam on ranges, both
    /// cosine-annealed from --lr-finetune-weights / --lr-finetune-scales.
    #[arg(long, default_value_t = 0)]
    finetune_epochs: u32,
    /// Fine-tuning learning rate of the weights [default: 1e-4].
    #[arg(long)]
    lr_finetune_weights: Option<f32>,
    /// Fine-tuning learning rate of the ranges [default: 1e-4].
    #[arg(long)]
    lr_finetune_scales: Option<f32>,
    /// Stop every epoch after this many steps (quick runs).
    #[arg(long)]
    max_steps_per_epoch: Option<usize>,
    /// Evaluate on the first N test images only (quick runs on slow adapters).
    #[arg(long)]
    eval_images: Option<usize>,
    /// Read loss, accuracy and gate probabilities back every N steps (a metrics.jsonl line).
    #[arg(long)]
    log_every: Option<usize>,
    /// Leave the gate probabilities out: no step lines in metrics.jsonl, no gates.svg.
    #[arg(long)]
    no_gate_metrics: bool,
    /// Continue from OUT/checkpoint.safetensors.
    #[arg(long)]
    resume: bool,
    /// Do not download the dataset when it is missing.
    #[arg(long)]
    offline: bool,
    /// Adapter name substring (as WGPU_ADAPTER_NAME).
    #[arg(long)]
    adapter: Option<String>,
    /// The driver's pipeline cache, kept across runs where wgpu supports one (Vulkan), so that a
    /// later run skips compiling the kernels [default: OUT/pipeline-cache.bin].
    #[arg(long)]
    pipeline_cache: Option<PathBuf>,
    /// Neither load nor save a pipeline cache.
    #[arg(long, conflicts_with = "pipeline_cache")]
    no_pipeline_cache: bool,
}

impl TrainArgs {
    fn config(&self, defaults: &TrainConfig) -> Result<TrainConfig, Box<dyn Error>> {
        let d = defaults.clone();
        let sgd_flags = self.momentum.is_some() || self.nesterov.is_some();
        let optimizer = match self.optimizer {
            WeightsOptimizer::Adam if sgd_flags || self.weight_decay.is_some() => {
                return Err("--momentum, --nesterov and --weight-decay need --optimizer sgd".into())
            }
            WeightsOptimizer::Adam => d.optimizer,
            WeightsOptimizer::Sgd => {
                let sgd = SgdConfig {
                    momentum: self.momentum.unwrap_or(0.9),
                    nesterov: self.nesterov.unwrap_or(true),
                    weight_decay: self.weight_decay.unwrap_or(0.0),
                };
                // Refuse before loading any data.
                if let Some(problem) = sgd.problem() {
                    return Err(problem.into());
                }
                Optimizer::Sgd(sgd)
            }
        };
        let schedule = match &self.milestones {
            Some(m) => Schedule::MultiStep(MultiStep::new(m.clone(), self.gamma)?),
            None => d.schedule,
        };
        Ok(TrainConfig {
            epochs: self.epochs.unwrap_or(d.epochs),
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            mu: self.mu.unwrap_or(d.mu),
            lr_weights: self.lr_weights.unwrap_or(d.lr_weights),
            optimizer,
            schedule,
            lr_gates: self.lr_gates.unwrap_or(d.lr_gates),
            lr_scales: self.lr_scales.unwrap_or(d.lr_scales),
            seed: self.seed.unwrap_or(d.seed),
            chain_logits: match self.gate_logits.as_deref() {
                None => d.chain_logits,
                Some(&[l4, l8, l16, l32]) => [l4, l8, l16, l32],
                Some(v) => {
                    return Err(format!(
                        "--gate-logits takes 4 values ℓ4,ℓ8,ℓ16,ℓ32 (e.g. 6,6,-6,-6), got {}",
                        v.len()
                    )
                    .into())
                }
            },
            prune_logit: self.prune_logit.unwrap_or(d.prune_logit),
            max_steps_per_epoch: self.max_steps_per_epoch.or(d.max_steps_per_epoch),
            log_every: self.log_every.unwrap_or(d.log_every),
            finetune_epochs: self.finetune_epochs,
            lr_finetune_weights: self.lr_finetune_weights.unwrap_or(d.lr_finetune_weights),
            lr_finetune_scales: self.lr_finetune_scales.unwrap_or(d.lr_finetune_scales),
        })
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
pub fn main(mut exp: Experiment) -> Result<(), Box<dyn Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    if let Some(name) = &cli.model {
        let choices: Vec<&str> = exp.models.iter().map(|(n, _)| *n).collect();
        let (_, build) = exp.models.iter().find(|(n, _)| n == name).ok_or_else(|| {
            format!(
                "unknown --model {name}; choose one of {}",
                choices.join(", ")
            )
        })?;
        exp.arch = build();
    }
    match cli.command {
        Some(Command::Evaluate {
            checkpoint,
            export: Some(file),
            images,
            data,
            adapter,
            ..
        }) => evaluate_export(&exp, &file, checkpoint.as_deref(), &data, images, &adapter),
        Some(Command::Evaluate {
            checkpoint,
            data,
            json,
            adapter,
            ..
        }) => evaluate(
            &exp,
            checkpoint
                .as_deref()
                .ok_or("--checkpoint or --export is required")?,
            &data,
            json,
            &adapter,
        ),
        Some(Command::Export {
            checkpoint,
            out,
            remove_all_pruned,
            onnx,
        }) => export(&exp, &checkpoint, &out, remove_all_pruned, onnx.as_deref()),
        Some(Command::Plot { metrics, out }) => plot(&metrics, out.as_deref()),
        None => train(&exp, &cli.train),
    }
}

fn train(exp: &Experiment, args: &TrainArgs) -> Result<(), Box<dyn Error>> {
    let cfg = args.config(&exp.defaults)?;
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
    let cache_path = (!args.no_pipeline_cache).then(|| {
        args.pipeline_cache
            .clone()
            .unwrap_or_else(|| args.out.join("pipeline-cache.bin"))
    });
    if let Some(path) = &cache_path {
        match gpu.load_pipeline_cache(path)? {
            PipelineCacheLoad::Loaded { bytes } => {
                log::info!("pipeline cache {}: {bytes} bytes", path.display())
            }
            PipelineCacheLoad::Discarded { reason } => log::warn!(
                "pipeline cache {} not used ({reason}); it will be rewritten",
                path.display()
            ),
            PipelineCacheLoad::Empty | PipelineCacheLoad::Unsupported => {}
        }
    }
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
    // Building the trainer created the pipelines of training and evaluation: keep them for the
    // next run now, and again at the end (fine-tuning builds a model of its own).
    let save_pipeline_cache = || -> Result<(), Box<dyn Error>> {
        if let Some(path) = &cache_path {
            if let Some(bytes) = gpu.save_pipeline_cache(path)? {
                log::info!(
                    "saved {bytes} bytes of pipeline cache to {}",
                    path.display()
                );
            }
        }
        Ok(())
    };
    save_pipeline_cache()?;
    let mut last = MetricsLog::read(&metrics_path)?.pop();
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")?
        .progress_chars("=> ");
    while trainer.epoch() < trainer.total_epochs() {
        let phase = match trainer.epoch() < cfg.epochs {
            true => "",
            false => " fine-tuning",
        };
        let bar = ProgressBar::new(0)
            .with_style(style.clone())
            .with_prefix(format!(
                "{}/{}{phase}",
                trainer.epoch() + 1,
                trainer.total_epochs()
            ));
        let progress = |p: &bayesian_bits::train::Progress| {
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
        };
        let report = if args.no_gate_metrics {
            trainer.train_epoch(progress)?
        } else {
            trainer.train_epoch_logged(progress, |s| Ok(metrics.append_step(s)?))?
        };
        bar.finish();
        println!(
            "epoch {}: train loss {:.4}, train acc {:.2}%, {:.0} img/s\n{}",
            report.epoch,
            report.train_loss,
            report.train_accuracy,
            report.images_per_second,
            report.table()
        );
        trainer.checkpoint()?.save(&ckpt_path)?;
        metrics.append(&report)?;
        if args.no_gate_metrics {
            plot_svg(&MetricsLog::read(&metrics_path)?, args.out.join("bits.svg"))?;
        } else {
            redraw(&metrics_path, &args.out)?;
        }
        last = Some(report);
    }
    let last: &EpochReport = last
        .as_ref()
        .ok_or("no epoch was trained (is --epochs 0?)")?;
    last.report().write_json(args.out.join("report.json"))?;
    println!("wrote {}", args.out.join("report.json").display());
    save_pipeline_cache()
}

fn plot(metrics: &Path, out: Option<&Path>) -> Result<(), Box<dyn Error>> {
    let dir = match out {
        Some(d) => d.to_path_buf(),
        None => match metrics.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    std::fs::create_dir_all(&dir)?;
    for path in redraw(metrics, &dir)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The architecture a checkpoint holds: the experiment's, without BN after fixed-gate
/// fine-tuning (spec §7.4).
fn checkpoint_arch(exp: &Experiment, ckpt: &Checkpoint) -> Arch {
    match ckpt.is_fixed_gate() {
        true => fixed_gate_arch(&exp.arch),
        false => exp.arch.clone(),
    }
}

/// The checkpoint's model on the GPU, validated against the experiment's architecture, in
/// fixed-gate mode for a fine-tuned checkpoint.
fn checkpoint_model(
    gpu: &Gpu,
    exp: &Experiment,
    ckpt: &Checkpoint,
    batch: usize,
) -> Result<Model, Box<dyn Error>> {
    let arch = checkpoint_arch(exp, ckpt);
    ckpt.validate_against(&arch)?;
    let params = bayesian_bits::export::params_of(ckpt);
    Ok(match ckpt.is_fixed_gate() {
        true => Model::fixed_gate(gpu, arch, batch, &params)?,
        false => Model::new(gpu, arch, batch, &params)?,
    })
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
    let batch = exp.defaults.batch_size;
    let mut model = checkpoint_model(&gpu, exp, &ckpt, batch)?;
    let test_set = load(exp, data, true, &[Split::Test])?
        .pop()
        .expect("test split");
    model.take_metrics(&gpu)?;
    for b in data::Prefetcher::new(data::Batcher::eval(test_set, batch)?)? {
        model.eval_batch(&gpu, &b.images, &b.labels)?;
    }
    let metrics = model.take_metrics(&gpu)?;
    let layers = layer_reports(&gpu, &model)?;
    let states = model.quantizer_states(&gpu)?;
    let report = Report {
        test_accuracy: 100.0 * f64::from(metrics.accuracy()),
        relative_bops_percent: graph_relative_bops(&exp.arch, &states)?,
        layers,
    };
    if json {
        println!("{}", report.to_json());
    } else {
        let gates = layer_gates(&exp.arch, &model.quantizer_states(&gpu)?);
        print!(
            "{}",
            format_table_with_flips(
                &report.layers,
                &gates,
                report.relative_bops_percent,
                report.test_accuracy
            )
        );
    }
    Ok(())
}

fn export(
    exp: &Experiment,
    checkpoint: &Path,
    out: &Path,
    remove_all_pruned: bool,
    onnx: Option<&Path>,
) -> Result<(), Box<dyn Error>> {
    use bayesian_bits::export::{self as bb_export, ExportOptions, PruneMode, SizeTable};
    let ckpt = Checkpoint::load(checkpoint)?;
    let arch = checkpoint_arch(exp, &ckpt);
    ckpt.validate_against(&arch)?;
    let options = ExportOptions {
        prune: if remove_all_pruned {
            PruneMode::All
        } else {
            PruneMode::Exact
        },
        note: format!(
            "from checkpoint {}",
            checkpoint.file_name().unwrap_or_default().to_string_lossy()
        ),
        fixed_gate: ckpt.is_fixed_gate(),
    };
    let model = bb_export::export(&arch, &bb_export::params_of(&ckpt), &options)?;
    let bytes = model.save(out)?;
    let table = SizeTable::new(&model, bytes);
    print!("{}", table.format());
    let json = out.with_file_name("export.json");
    std::fs::write(&json, table.to_json())?;
    println!("wrote {} and {}", out.display(), json.display());
    if let Some(path) = onnx {
        let bytes = bb_export::onnx::save_onnx(&model, path)?;
        println!("wrote {} ({bytes} bytes, ONNX QDQ)", path.display());
    }
    Ok(())
}

fn evaluate_export(
    exp: &Experiment,
    file: &Path,
    checkpoint: Option<&Path>,
    data: &Path,
    images: Option<usize>,
    adapter: &Option<String>,
) -> Result<(), Box<dyn Error>> {
    use bayesian_bits::export::{predictions, ExportedModel, IntPlan, SizeTable};
    use bayesian_bits::kernels::int_infer::IntEngine;
    let gpu = gpu(adapter)?;
    let model = ExportedModel::load(file)?;
    let plan = IntPlan::new(&model)?;
    let batch = 128;
    let engine = IntEngine::new(&gpu, &plan, batch)?;
    let mut fake_quant = match checkpoint {
        Some(c) => Some(checkpoint_model(&gpu, exp, &Checkpoint::load(c)?, batch)?),
        None => None,
    };
    let test_set = load(exp, data, true, &[Split::Test])?
        .pop()
        .expect("test split");
    let test_set = match images {
        Some(n) => Arc::new(test_set.head(n)?),
        None => test_set,
    };
    let classes = plan.classes;
    let (mut total, mut correct, mut correct_fq, mut agree) = (0, 0, 0, 0);
    let (mut seconds, mut seconds_fq) = (0.0, 0.0);
    for b in data::Batcher::eval(test_set, batch)? {
        let start = std::time::Instant::now();
        let logits = engine.infer(&gpu, &b.images, b.n)?;
        seconds += start.elapsed().as_secs_f64();
        let p = predictions(&logits, classes);
        correct += p
            .iter()
            .zip(&b.labels)
            .filter(|(a, l)| **a == **l as usize)
            .count();
        if let Some(m) = fake_quant.as_mut() {
            let start = std::time::Instant::now();
            m.eval_batch(&gpu, &b.images, &b.labels)?;
            let fq = predictions(&gpu.read(&m.logits(b.n)?)?, classes);
            seconds_fq += start.elapsed().as_secs_f64();
            agree += p.iter().zip(&fq).filter(|(a, f)| a == f).count();
            correct_fq += fq
                .iter()
                .zip(&b.labels)
                .filter(|(a, l)| **a == **l as usize)
                .count();
        }
        total += b.n;
    }
    let size = std::fs::metadata(file)?.len();
    print!("{}", SizeTable::new(&model, size).format());
    println!(
        "integer inference ({}): test accuracy {:.2} % on {total} images, {:.0} images/s",
        gpu.adapter_name(),
        100.0 * correct as f64 / total.max(1) as f64,
        total as f64 / seconds.max(1e-9)
    );
    if fake_quant.is_some() {
        println!(
            "fake-quantized float evaluation of the checkpoint: test accuracy {:.2} %, {:.0} images/s; \
             predictions agree on {agree}/{total} images ({:.3} %)",
            100.0 * correct_fq as f64 / total.max(1) as f64,
            total as f64 / seconds_fq.max(1e-9),
            100.0 * agree as f64 / total.max(1) as f64
        );
    }
    Ok(())
}
