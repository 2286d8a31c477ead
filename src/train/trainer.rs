//! The training procedure of spec §7.1 around a GPU [`Model`]: initialisation, range
//! initialisation, epochs with the weights-only schedule, evaluation, checkpoints and resume.

use super::checkpoint::{Checkpoint, EPOCH, MODEL, SEED, STEP};
use super::report::{relative_bops_percent, EpochReport, LayerReport};
use super::schedule::LrSchedule;
use crate::data::{Augment, Batcher, Dataset, Prefetcher};
use crate::gpu::Gpu;
use crate::kernels::loss::MetricValues;
use crate::nn::model::AdamState;
use crate::nn::{Arch, LearningRates, Model, StepConfig};
use crate::reference::model::{self as reference, InitConfig};
use crate::{Error, Result};
use std::sync::Arc;
use std::time::Instant;

/// Hyper-parameters of a run; the constructors give the paper's recipes (spec §7.2, §7.3).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Epochs E (also sets the schedule's milestone K = int(2E/3)).
    pub epochs: u32,
    /// Images per training step.
    pub batch_size: usize,
    /// Regulariser strength μ.
    pub mu: f32,
    /// Base learning rate of weights, biases and BN parameters (scheduled).
    pub lr_weights: f32,
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
}

impl TrainConfig {
    /// LeNet-5 on MNIST: 100 epochs, batch 128, μ = 0.1, ℓ = (6, 6, −6, −6).
    pub fn mnist() -> Self {
        Self {
            epochs: 100,
            batch_size: 128,
            mu: 0.1,
            lr_weights: 1e-3,
            lr_gates: 1e-3,
            lr_scales: 1e-3,
            seed: 0,
            chain_logits: [6.0, 6.0, -6.0, -6.0],
            prune_logit: 6.0,
            max_steps_per_epoch: None,
            log_every: 20,
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
    schedule: LrSchedule,
    /// Epochs completed.
    epoch: u32,
    /// Training steps completed (the next step's noise counter is `step + 1`).
    step: u32,
}

const OPTIMIZER_GROUPS: [&str; 3] = ["weights", "gates", "scales"];

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
        let mut params = reference::init_params(&arch, &init);
        let first = Batcher::train(train.clone(), 2, cfg.seed, 0, augment)?
            .next()
            .ok_or_else(|| Error::InvalidArgument {
                op: "Trainer::new",
                msg: "the training set is empty".into(),
            })?;
        reference::range_init(&arch, &mut params, &first.images, first.n, cfg.seed);
        let model = Model::new(gpu, arch.clone(), cfg.batch_size, &params)?;
        Ok(Self {
            gpu: gpu.clone(),
            schedule: LrSchedule::new(cfg.epochs),
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

    /// Continues a run from a checkpoint written by [`Trainer::checkpoint`]: parameters, Adam
    /// state, epoch and step, so the run proceeds exactly as if uninterrupted.
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
        ckpt.validate_against(&arch)?;
        let params = ckpt
            .tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.data.clone()))
            .collect();
        let mut model = Model::new(gpu, arch.clone(), cfg.batch_size, &params)?;
        let mut state = Vec::new();
        for g in OPTIMIZER_GROUPS {
            let get = |what: &str| {
                ckpt.get_extra(&format!("adam.{g}.{what}"))
                    .map(|t| t.data.clone())
            };
            if let (Some(m), Some(v)) = (get("m"), get("v")) {
                let steps = ckpt.get_u64(&format!("adam.{g}.steps"))?.unwrap_or(0) as u32;
                state.push(AdamState {
                    group: g.to_string(),
                    steps,
                    m,
                    v,
                });
            }
        }
        model.set_optimizer_state(gpu, &state)?;
        let epoch = ckpt.get_u64(EPOCH)?.unwrap_or(0) as u32;
        let step = ckpt.get_u64(STEP)?.unwrap_or(0) as u32;
        let seed = ckpt.get_u64(SEED)?.unwrap_or(cfg.seed);
        let cfg = TrainConfig { seed, ..cfg };
        Ok(Self {
            gpu: gpu.clone(),
            schedule: LrSchedule::new(cfg.epochs),
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
    pub fn train_epoch(&mut self, mut progress: impl FnMut(&Progress)) -> Result<EpochReport> {
        let epoch = self.epoch + 1;
        let lr = LearningRates {
            weights: self
                .schedule
                .learning_rate(f64::from(self.cfg.lr_weights), epoch) as f32,
            gates: self.cfg.lr_gates,
            scales: self.cfg.lr_scales,
        };
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
        let (mut images, mut loss_sum, mut correct, mut seen) = (0usize, 0f64, 0u64, 0u64);
        let mut regularizer = 0.0;
        for (i, batch) in Prefetcher::new(batcher)?.take(steps).enumerate() {
            let cfg = StepConfig {
                seed: self.cfg.seed,
                step: self.step + 1,
                mu: self.cfg.mu,
                lr,
            };
            self.model
                .train_step(&self.gpu, &batch.images, &batch.labels, &cfg)?;
            self.step += 1;
            images += batch.n;
            if (i + 1) % self.cfg.log_every.max(1) == 0 || i + 1 == steps {
                let m = self.model.take_metrics(&self.gpu)?;
                self.check_health(&m)?;
                regularizer = self.model.regularizer(&self.gpu)?;
                loss_sum += f64::from(m.loss_sum);
                correct += u64::from(m.correct);
                seen += u64::from(m.examples);
                progress(&Progress {
                    step: i + 1,
                    steps,
                    loss: m.mean_loss(),
                    accuracy: 100.0 * m.accuracy(),
                    images_per_second: images as f64 / start.elapsed().as_secs_f64(),
                });
            }
        }
        let images_per_second = images as f64 / start.elapsed().as_secs_f64();
        self.epoch = epoch;
        let layers = self.layer_reports()?;
        let test = self.evaluate()?;
        Ok(EpochReport {
            epoch: u64::from(epoch),
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: 100.0 * correct as f64 / seen.max(1) as f64,
            test_accuracy: 100.0 * f64::from(test.accuracy()),
            relative_bops_percent: relative_bops_percent(&self.arch, &layers)?,
            regularizer,
            images_per_second,
            layers,
        })
    }

    /// A NaN/inf loss or a range that left (0, ∞) stops training, naming the quantizer.
    fn check_health(&self, m: &MetricValues) -> Result<()> {
        let ranges = self.model.ranges(&self.gpu)?;
        let culprit = ranges.iter().find(|(_, x)| !(x.is_finite() && **x > 0.0));
        let detail = match culprit {
            Some((name, x)) => format!(
                "{name}.x_max = {x} (ranges must stay positive and finite; lower the range learning rate)"
            ),
            None if !m.loss_sum.is_finite() => format!("the training loss is {}", m.loss_sum),
            None => return Ok(()),
        };
        Err(Error::Diverged {
            step: self.step,
            detail,
        })
    }

    /// Test-set loss and accuracy with deterministic gates and BN running statistics.
    pub fn evaluate(&mut self) -> Result<MetricValues> {
        self.model.take_metrics(&self.gpu)?;
        for batch in Prefetcher::new(Batcher::eval(self.test.clone(), self.cfg.batch_size)?)? {
            self.model
                .eval_batch(&self.gpu, &batch.images, &batch.labels)?;
        }
        self.model.take_metrics(&self.gpu)
    }

    /// Test-time bit widths and kept channels per weighted layer. **Blocking.**
    pub fn layer_reports(&self) -> Result<Vec<LayerReport>> {
        layer_reports(&self.gpu, &self.model)
    }

    /// Parameters (official names), Adam state, epoch, step and seed. **Blocking.**
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
        for AdamState { group, steps, m, v } in self.model.optimizer_state(&self.gpu)? {
            ckpt.set_u64(format!("adam.{group}.steps"), u64::from(steps));
            ckpt.insert_extra(format!("adam.{group}.m"), vec![m.len()], m)?;
            ckpt.insert_extra(format!("adam.{group}.v"), vec![v.len()], v)?;
        }
        ckpt.set_u64(EPOCH, u64::from(self.epoch));
        ckpt.set_u64(STEP, u64::from(self.step));
        ckpt.set_u64(SEED, self.cfg.seed);
        ckpt.set_meta(MODEL, self.arch.name);
        Ok(ckpt)
    }
}

/// Test-time bit widths and kept channels of a model's weighted layers. **Blocking.**
pub fn layer_reports(gpu: &Gpu, model: &Model) -> Result<Vec<LayerReport>> {
    let states = model.quantizer_states(gpu)?;
    Ok(model
        .arch()
        .weighted_layers()
        .map(|l| {
            let weight = &states[&format!("{}.weight_quantizer.quantizer", l.name)];
            let act = states.get(&format!("{}.activation_quantizer.quantizer", l.name));
            LayerReport::from_states(l.name, l.out_channels(), weight, act)
        })
        .collect())
}

fn check_data(arch: &Arch, data: &Dataset) -> Result<()> {
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
