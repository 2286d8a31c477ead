//! The training procedure of spec §7.1 around a GPU [`Model`]: initialisation, range
//! initialisation, epochs with the learning-rate schedule, evaluation, checkpoints and resume.

use super::checkpoint::{Checkpoint, EPOCH, FIXED_GATE_PHASE, MODEL, PHASE, SEED, STEP};
use super::metrics::{layer_gates, StepMetrics};
use super::report::{EpochReport, LayerReport};
use super::schedule::Schedule;
use super::{Result, TrainError};
use crate::data::{Augment, Batcher, Dataset, Prefetcher};
use crate::gpu::Gpu;
use crate::kernels::loss::MetricValues;
use crate::kernels::optim::Optimizer;
use crate::nn::model::Snapshot;
use crate::nn::{Arch, LearningRates, Model, OptimizerState, StepConfig};
use crate::quant::{graph_relative_bops, QuantizerState};
use crate::spec::fixed::{fixed_gate_arch, fixed_gate_params};
use crate::spec::optim::SgdConfig;
use crate::spec::{InitConfig, Params};
use crate::Error;
use futures::FutureExt;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// Where an epoch hands its step lines.
type StepSink<'a> = dyn FnMut(&StepMetrics) -> Result<()> + 'a;

/// Readbacks a training epoch lets the device owe before it waits for the oldest.
pub const READBACKS_IN_FLIGHT: usize = 2;

/// A readback on its way.
struct Pending {
    step_in_epoch: usize,
    /// Training steps completed when it was recorded.
    step: u32,
    /// Images trained this epoch when it was recorded.
    images: usize,
    submission: wgpu::SubmissionIndex,
    future: Pin<Box<dyn Future<Output = crate::Result<Snapshot>>>>,
}

/// What an epoch accumulates from its readbacks.
struct Sums {
    epoch: u64,
    steps: usize,
    start: Instant,
    loss_sum: f64,
    correct: u64,
    seen: u64,
    regularizer: f64,
}

/// Hyper-parameters of a run; the constructors give the paper's recipes (spec §7.2, §7.3).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Epochs E (also sets the linear tail's milestone K = int(2E/3)).
    pub epochs: u32,
    /// Images per training step.
    pub batch_size: usize,
    /// Regulariser strength μ.
    pub mu: f32,
    /// Base learning rate of weights, biases and BN parameters (scheduled).
    pub lr_weights: f32,
    /// Optimizer of the weights group (gates and ranges always use Adam, spec §7.5).
    pub optimizer: Optimizer,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Learning rate of the gate logits.
    pub lr_gates: f32,
    /// Learning rate of the ranges.
    pub lr_scales: f32,
    /// Seed of the initialisation, data order, augmentation and gate noise.
    pub seed: u64,
    /// Initial ℓ4, ℓ8, ℓ16, ℓ32.
    pub chain_logits: [f32; 4],
    /// Initial ℓ2 of every prunable channel.
    pub prune_logit: f32,
    /// Stop each epoch after this many steps (quick runs); `None` for whole epochs.
    pub max_steps_per_epoch: Option<usize>,
    /// Read loss and accuracy back every this many steps (the only readback inside an epoch).
    pub log_every: usize,
    /// Fixed-gate fine-tuning epochs after the `epochs` of Bayesian Bits training (spec §7.4;
    /// 0: none). The official code fine-tunes 10 epochs on ImageNet only.
    pub finetune_epochs: u32,
    /// Fine-tuning learning rate of the weights and biases (SGD, Nesterov momentum 0.9),
    /// cosine-annealed to 0 over all fine-tuning steps.
    pub lr_finetune_weights: f32,
    /// Fine-tuning learning rate of the ranges (Adam), annealed like the weights'.
    pub lr_finetune_scales: f32,
}

impl TrainConfig {
    /// LeNet-5 on MNIST: 100 epochs, batch 128, μ = 0.1, ℓ = (6, 6, −6, −6).
    pub fn mnist() -> Self {
        Self {
            epochs: 100,
            batch_size: 128,
            mu: 0.1,
            lr_weights: 1e-3,
            optimizer: Optimizer::Adam,
            schedule: Schedule::LinearTail,
            lr_gates: 1e-3,
            lr_scales: 1e-3,
            seed: 0,
            chain_logits: [6.0, 6.0, -6.0, -6.0],
            prune_logit: 6.0,
            max_steps_per_epoch: None,
            log_every: 20,
            finetune_epochs: 0,
            lr_finetune_weights: 1e-4,
            lr_finetune_scales: 1e-4,
        }
    }

    /// VGG-7 on CIFAR-10: 300 epochs, batch 128, μ = 0.01, ℓ = (6, 6, 6, 6).
    pub fn cifar10() -> Self {
        Self {
            epochs: 300,
            mu: 0.01,
            chain_logits: [6.0; 4],
            ..Self::mnist()
        }
    }
}

/// Progress inside an epoch, reported after every metrics readback.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Steps done in this epoch.
    pub step: usize,
    /// Steps this epoch will take.
    pub steps: usize,
    /// Mean training loss since the last report.
    pub loss: f32,
    /// Training accuracy (percent) since the last report.
    pub accuracy: f32,
    /// Training images per second since the epoch started.
    pub images_per_second: f64,
}

/// A training run in progress.
#[derive(Debug)]
pub struct Trainer {
    gpu: Gpu,
    arch: Arch,
    cfg: TrainConfig,
    model: Model,
    train: Arc<Dataset>,
    test: Arc<Dataset>,
    augment: Augment,
    /// Epochs completed.
    epoch: u32,
    /// Training steps completed (the next step's noise counter is `step + 1`).
    step: u32,
}

impl Trainer {
    /// Initialises a model as the official code does (PyTorch default initialisation, then
    /// range initialisation on the first 2 images of a shuffled, augmented training batch).
    pub fn new(
        gpu: &Gpu,
        arch: Arch,
        cfg: TrainConfig,
        train: Arc<Dataset>,
        test: Arc<Dataset>,
        augment: Augment,
    ) -> Result<Self> {
        check_data(&arch, &train)?;
        check_data(&arch, &test)?;
        let init = InitConfig {
            chain_logits: cfg.chain_logits,
            prune_logit: cfg.prune_logit,
            seed: cfg.seed,
        };
        let first = Batcher::train(train.clone(), 2, cfg.seed, 0, augment)?
            .next()
            .ok_or_else(|| Error::InvalidArgument {
                op: "Trainer::new",
                msg: "the training set is empty".into(),
            })?;
        let model = Model::init(gpu, arch.clone(), cfg.batch_size, &init, &first.images)?;
        let model = with_optimizer(gpu, model, &cfg)?;
        Ok(Self {
            gpu: gpu.clone(),
            arch,
            cfg,
            model,
            train,
            test,
            augment,
            epoch: 0,
            step: 0,
        })
    }

    /// Continues a run from a checkpoint written by [`Trainer::checkpoint`]: parameters,
    /// optimizer state, epoch and step, so the run proceeds exactly as if uninterrupted.
    /// `cfg.optimizer` must be the kind the checkpoint's state was written with.
    pub fn resume(
        gpu: &Gpu,
        arch: Arch,
        cfg: TrainConfig,
        train: Arc<Dataset>,
        test: Arc<Dataset>,
        augment: Augment,
        ckpt: &Checkpoint,
    ) -> Result<Self> {
        check_data(&arch, &train)?;
        check_data(&arch, &test)?;
        let epoch = ckpt.get_u64(EPOCH)?.unwrap_or(0) as u32;
        let finetuning = ckpt.is_fixed_gate();
        let arch = match finetuning {
            true => fixed_gate_arch(&arch),
            false => arch,
        };
        ckpt.validate_against(&arch)?;
        let params = ckpt
            .tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.data.clone()))
            .collect();
        let mut model = match finetuning {
            true => finetune_model(gpu, arch.clone(), &cfg, &params)?,
            false => {
                let model = Model::new(gpu, arch.clone(), cfg.batch_size, &params)?;
                with_optimizer(gpu, model, &cfg)?
            }
        };
        let mut state = Vec::new();
        for (group, optimizer) in model.optimizers() {
            if let Some(other) = other_optimizer_state(ckpt, &group, optimizer) {
                return Err(Error::InvalidArgument {
                    op: "Trainer::resume",
                    msg: format!(
                        "the checkpoint holds {other} state for the {group} group but this run uses {}",
                        optimizer.name()
                    ),
                }
                .into());
            }
            let key = |what: &str| format!("{}.{group}.{what}", optimizer.name());
            let buffers: Option<Vec<Vec<f32>>> = optimizer
                .buffer_names()
                .iter()
                .map(|b| ckpt.get_extra(&key(b)).map(|t| t.data.clone()))
                .collect();
            if let Some(buffers) = buffers {
                let steps = ckpt.get_u64(&key("steps"))?.unwrap_or(0) as u32;
                state.push(OptimizerState {
                    group,
                    optimizer,
                    steps,
                    buffers,
                });
            }
        }
        model.set_optimizer_state(gpu, &state)?;
        let step = ckpt.get_u64(STEP)?.unwrap_or(0) as u32;
        let seed = ckpt.get_u64(SEED)?.unwrap_or(cfg.seed);
        let cfg = TrainConfig { seed, ..cfg };
        Ok(Self {
            gpu: gpu.clone(),
            arch,
            cfg,
            model,
            train,
            test,
            augment,
            epoch,
            step,
        })
    }

    /// The GPU model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Epochs completed.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Trains one epoch, then evaluates; `progress` is called after every metrics readback.
    ///
    /// Same as [`Trainer::train_epoch_logged`] without step lines: the readbacks then copy
    /// only the loss, accuracy, ranges and regulariser, not the gate logits.
    pub fn train_epoch(&mut self, progress: impl FnMut(&Progress)) -> Result<EpochReport> {
        self.run_epoch(progress, None)
    }

    /// Trains one epoch, then evaluates. Every `log_every` steps (and after the epoch's last)
    /// the loss and accuracy sums, ranges, gate logits and regulariser are copied out with
    /// [`Gpu::read_async`]; when a copy has arrived, `progress` is called and then `on_step`
    /// with the [`StepMetrics`] of that step (e.g. to append it to `metrics.jsonl`).
    ///
    /// Training never waits for a readback: copies are collected when the device has passed
    /// them, so the lines arrive late by up to [`READBACKS_IN_FLIGHT`] intervals. The loop
    /// waits for the device only when it is more than that many intervals ahead (bounded
    /// queued uploads), and at the end of the epoch. A step is still one submission; each
    /// readback adds two (the copy and the reset of the sums).
    pub fn train_epoch_logged(
        &mut self,
        progress: impl FnMut(&Progress),
        mut on_step: impl FnMut(&StepMetrics) -> Result<()>,
    ) -> Result<EpochReport> {
        self.run_epoch(progress, Some(&mut on_step))
    }

    /// Epochs of the whole run: Bayesian Bits training, then fixed-gate fine-tuning.
    pub fn total_epochs(&self) -> u32 {
        self.cfg.epochs + self.cfg.finetune_epochs
    }

    /// Replaces the Bayesian Bits model by its fixed-gate fine-tuning model (spec §7.4): BN
    /// folded statically, test-time bits and masks, SGD for the weights. **Blocking.**
    fn start_finetuning(&mut self) -> Result<()> {
        let params = self.model.params(&self.gpu)?;
        let arch = fixed_gate_arch(&self.arch);
        let params = fixed_gate_params(&self.arch, &params).map_err(|e| Error::Shape {
            op: "Trainer::start_finetuning",
            expected: e.0,
            actual: "missing".into(),
        })?;
        self.model = finetune_model(&self.gpu, arch.clone(), &self.cfg, &params)?;
        self.arch = arch;
        Ok(())
    }

    fn run_epoch(
        &mut self,
        mut progress: impl FnMut(&Progress),
        mut on_step: Option<&mut StepSink<'_>>,
    ) -> Result<EpochReport> {
        let epoch = self.epoch + 1;
        let finetune_epoch = epoch.checked_sub(self.cfg.epochs).filter(|&e| e > 0);
        if finetune_epoch.is_some() && !self.model.is_fixed_gate() {
            self.start_finetuning()?;
        }
        let base = LearningRates {
            weights: self.cfg.lr_weights,
            gates: self.cfg.lr_gates,
            scales: self.cfg.lr_scales,
        };
        let epoch_lr = self
            .cfg
            .schedule
            .learning_rates(self.cfg.epochs, epoch, base);
        let batcher = Batcher::train(
            self.train.clone(),
            self.cfg.batch_size,
            self.cfg.seed,
            u64::from(epoch),
            self.augment,
        )?;
        let steps = batcher
            .len()
            .min(self.cfg.max_steps_per_epoch.unwrap_or(usize::MAX));
        let start = Instant::now();
        let mut images = 0usize;
        let mut sums = Sums {
            epoch: u64::from(epoch),
            steps,
            start,
            loss_sum: 0.0,
            correct: 0,
            seen: 0,
            regularizer: 0.0,
        };
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let gates = on_step.is_some();
        for (i, batch) in Prefetcher::new(batcher)?.take(steps).enumerate() {
            let (mu, lr) = match finetune_epoch {
                // Cosine annealing stepped per iteration over all fine-tuning steps (spec §7.4).
                Some(e) => {
                    let t = (e as usize - 1) * steps + i;
                    let total = self.cfg.finetune_epochs as usize * steps;
                    let factor =
                        0.5 * (1.0 + (std::f64::consts::PI * t as f64 / total as f64).cos());
                    let lr = LearningRates {
                        weights: (f64::from(self.cfg.lr_finetune_weights) * factor) as f32,
                        gates: 0.0,
                        scales: (f64::from(self.cfg.lr_finetune_scales) * factor) as f32,
                    };
                    (0.0, lr)
                }
                None => (self.cfg.mu, epoch_lr),
            };
            let cfg = StepConfig {
                seed: self.cfg.seed,
                step: self.step + 1,
                mu,
                lr,
            };
            self.model
                .train_step(&self.gpu, &batch.images, &batch.labels, &cfg)?;
            self.step += 1;
            images += batch.n;
            if (i + 1) % self.cfg.log_every.max(1) == 0 || i + 1 == steps {
                let (future, submission) = self.model.snapshot_async(&self.gpu, gates);
                pending.push_back(Pending {
                    step_in_epoch: i + 1,
                    step: self.step,
                    images,
                    submission,
                    future: Box::pin(future),
                });
                // Collect what has arrived without waiting; wait only when too far ahead.
                self.poll()?;
                loop {
                    let too_far = pending.len() > READBACKS_IN_FLIGHT;
                    let Some(p) = pending.front_mut() else { break };
                    let ready = p.future.as_mut().now_or_never();
                    let ready = match ready {
                        Some(r) => r,
                        None if too_far => {
                            self.wait_for(p.submission.clone())?;
                            pollster::block_on(p.future.as_mut())
                        }
                        None => break,
                    };
                    let p = pending.pop_front().expect("front exists");
                    self.collect(&p, ready?, &mut sums, &mut progress, &mut on_step)?;
                }
            }
        }
        self.gpu.wait()?;
        while let Some(mut p) = pending.pop_front() {
            let snapshot = pollster::block_on(p.future.as_mut());
            self.collect(&p, snapshot?, &mut sums, &mut progress, &mut on_step)?;
        }
        let images_per_second = images as f64 / start.elapsed().as_secs_f64();
        self.epoch = epoch;
        let states = self.model.quantizer_states(&self.gpu)?;
        let layers = layer_reports_from(&self.model, &states);
        let gates = layer_gates(&self.arch, &states);
        let test = self.evaluate()?;
        Ok(EpochReport {
            epoch: u64::from(epoch),
            train_loss: sums.loss_sum / sums.seen.max(1) as f64,
            train_accuracy: 100.0 * sums.correct as f64 / sums.seen.max(1) as f64,
            test_accuracy: 100.0 * f64::from(test.accuracy()),
            relative_bops_percent: graph_relative_bops(&self.arch, &states)?,
            regularizer: sums.regularizer,
            images_per_second,
            layers,
            gates,
        })
    }

    /// Polls the device once without blocking (fires the callbacks of finished copies).
    fn poll(&self) -> crate::Result<()> {
        self.gpu
            .device()
            .poll(wgpu::PollType::Poll)
            .map(drop)
            .map_err(|e| Error::Gpu {
                op: "poll",
                msg: e.to_string(),
            })
    }

    /// Blocks until `submission` has finished. **Blocking.**
    fn wait_for(&self, submission: wgpu::SubmissionIndex) -> crate::Result<()> {
        self.gpu
            .device()
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map(drop)
            .map_err(|e| Error::Gpu {
                op: "wait",
                msg: e.to_string(),
            })
    }

    /// Checks and accumulates one arrived readback, then reports it.
    fn collect(
        &self,
        p: &Pending,
        snapshot: Snapshot,
        sums: &mut Sums,
        progress: &mut impl FnMut(&Progress),
        on_step: &mut Option<&mut StepSink<'_>>,
    ) -> Result<()> {
        let m = &snapshot.metrics;
        check_health(p.step, &snapshot)?;
        sums.regularizer = snapshot.regularizer;
        sums.loss_sum += f64::from(m.loss_sum);
        sums.correct += u64::from(m.correct);
        sums.seen += u64::from(m.examples);
        let images_per_second = p.images as f64 / sums.start.elapsed().as_secs_f64();
        progress(&Progress {
            step: p.step_in_epoch,
            steps: sums.steps,
            loss: m.mean_loss(),
            accuracy: 100.0 * m.accuracy(),
            images_per_second,
        });
        if let (Some(on_step), Some(states)) = (on_step.as_mut(), &snapshot.quantizers) {
            on_step(&StepMetrics {
                epoch: sums.epoch,
                step: u64::from(p.step),
                loss: f64::from(m.mean_loss()),
                accuracy: 100.0 * f64::from(m.accuracy()),
                regularizer: snapshot.regularizer,
                images_per_second,
                layers: layer_gates(&self.arch, states),
            })?;
        }
        Ok(())
    }

    /// Test-set loss and accuracy with deterministic gates and BN running statistics.
    pub fn evaluate(&mut self) -> Result<MetricValues> {
        self.model.take_metrics(&self.gpu)?;
        for batch in Prefetcher::new(Batcher::eval(self.test.clone(), self.cfg.batch_size)?)? {
            self.model
                .eval_batch(&self.gpu, &batch.images, &batch.labels)?;
        }
        Ok(self.model.take_metrics(&self.gpu)?)
    }

    /// Test-time bit widths and kept channels per weighted layer. **Blocking.**
    pub fn layer_reports(&self) -> Result<Vec<LayerReport>> {
        layer_reports(&self.gpu, &self.model)
    }

    /// Parameters (official names), optimizer state (`adam.weights.m`, …,
    /// `sgd.weights.momentum_buffer`), epoch, step and seed. **Blocking.**
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let mut ckpt = Checkpoint::new();
        let shapes = self.arch.state_dict_shapes();
        let mut params = self.model.params(&self.gpu)?;
        for (name, shape) in shapes {
            let data = params
                .remove(&name)
                .expect("the model holds every state_dict tensor");
            ckpt.insert(name, shape, data)?;
        }
        for st in self.model.optimizer_state(&self.gpu)? {
            let key = |what: &str| format!("{}.{}.{what}", st.optimizer.name(), st.group);
            ckpt.set_u64(key("steps"), u64::from(st.steps));
            for (name, data) in st.optimizer.buffer_names().iter().zip(st.buffers) {
                ckpt.insert_extra(key(name), vec![data.len()], data)?;
            }
        }
        ckpt.set_u64(EPOCH, u64::from(self.epoch));
        ckpt.set_u64(STEP, u64::from(self.step));
        ckpt.set_u64(SEED, self.cfg.seed);
        ckpt.set_meta(MODEL, &self.arch.name);
        if self.model.is_fixed_gate() {
            ckpt.set_meta(PHASE, FIXED_GATE_PHASE);
        }
        Ok(ckpt)
    }
}

/// The fixed-gate fine-tuning model of a folded network (spec §7.4): SGD with Nesterov momentum
/// 0.9 for the weights, Adam for the ranges.
fn finetune_model(gpu: &Gpu, arch: Arch, cfg: &TrainConfig, params: &Params) -> Result<Model> {
    let mut model = Model::fixed_gate(gpu, arch, cfg.batch_size, params)?;
    model.set_weights_optimizer(gpu, Optimizer::Sgd(SgdConfig::NESTEROV))?;
    Ok(model)
}

/// `model` with `cfg`'s weights optimizer (Adam, its default, is kept without reallocating its
/// state).
fn with_optimizer(gpu: &Gpu, mut model: Model, cfg: &TrainConfig) -> Result<Model> {
    if cfg.optimizer != Optimizer::Adam {
        model.set_weights_optimizer(gpu, cfg.optimizer)?;
    }
    Ok(model)
}

/// The kind of another optimizer whose state `ckpt` holds for `group` (a `KIND.GROUP.steps`
/// key), if any.
fn other_optimizer_state<'a>(
    ckpt: &'a Checkpoint,
    group: &str,
    ours: Optimizer,
) -> Option<&'a str> {
    let suffix = format!(".{group}.steps");
    ckpt.metadata
        .keys()
        .filter_map(|k| k.strip_suffix(suffix.as_str()))
        .find(|kind| *kind != ours.name())
}

/// Test-time bit widths and kept channels of a model's weighted layers. **Blocking.**
pub fn layer_reports(gpu: &Gpu, model: &Model) -> Result<Vec<LayerReport>> {
    Ok(layer_reports_from(model, &model.quantizer_states(gpu)?))
}

/// A NaN/inf loss or a range that left (0, ∞) stops training, naming the quantizer.
fn check_health(step: u32, snapshot: &Snapshot) -> Result<()> {
    let culprit = snapshot
        .ranges
        .iter()
        .find(|(_, x)| !(x.is_finite() && **x > 0.0));
    let loss = snapshot.metrics.loss_sum;
    let detail = match culprit {
        Some((name, x)) => format!(
            "{name}.x_max = {x} (ranges must stay positive and finite; lower the range learning rate)"
        ),
        None if !loss.is_finite() => format!("the training loss is {loss}"),
        None => return Ok(()),
    };
    Err(TrainError::Diverged { step, detail })
}

fn layer_reports_from(
    model: &Model,
    states: &BTreeMap<String, QuantizerState>,
) -> Vec<LayerReport> {
    model
        .arch()
        .weighted_layers()
        .map(|l| {
            let weight = &states[&format!("{}.weight_quantizer.quantizer", l.name)];
            let act = states.get(&format!("{}.activation_quantizer.quantizer", l.name));
            LayerReport::from_states(&l.name, l.out_channels(), weight, act)
        })
        .collect()
}

fn check_data(arch: &Arch, data: &Dataset) -> crate::Result<()> {
    let shape = [data.channels(), data.height(), data.width()];
    if shape != arch.input || data.num_classes() != arch.classes {
        return Err(Error::Shape {
            op: "Trainer",
            expected: format!(
                "{} images of {:?} in {} classes",
                arch.name, arch.input, arch.classes
            ),
            actual: format!("{shape:?} in {} classes", data.num_classes()),
        });
    }
    Ok(())
}
