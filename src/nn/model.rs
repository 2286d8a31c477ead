//! A model of [`Arch`] on the GPU: parameters in three packed Adam groups, one recorded
//! command buffer per training step, nothing read back inside a step.
//!
//! A training step records every layer's forward (`nn/layer/`, one module per kind), then
//! softmax cross-entropy, every layer's backward in reverse, then one optimiser dispatch per
//! parameter group (Adam, or SGD for the weights group, spec §7.5), all into one encoder and one
//! submission.
//!
//! The same recording serves range initialisation ([`Model::init`]: each quantizer first sets
//! its range from its input), inference ([`Model::forward`]: no loss) and fixed-gate fine-tuning
//! ([`Model::fixed_gate`]: fixed-bit quantizers, spec §7.4).

use super::layer::{self, Build, Context, Layer, Pass, PlanFixed, RangeInits, Scratch, WeightSide};
use crate::gpu::{Encoder, Gpu, Tensor};
use crate::kernels::elementwise::Add;
use crate::kernels::gemm::Variant;
use crate::kernels::loss::{MetricValues, Metrics, SoftmaxCrossEntropy};
use crate::kernels::optim::{AdamGroup, Optimizer, ParamArena, ParamSlice};
use crate::kernels::quant::FixedQuant;
use crate::kernels::range::RangeInit;
use crate::quant::{Quantizer, QuantizerConfig, QuantizerState, QuantizerStorage, StepState};
use crate::spec::fixed::{fixed_gates, FixedGates};
use crate::spec::{init_params, Activation, Arch, LayerKind, LayerSpec};
use crate::spec::{Group, InitConfig, Params, QuantizerInfo};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Where a `state_dict` tensor lives: a word range of one of the packed groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    store: Store,
    offset: usize,
    len: usize,
}

/// The packed buffers: the three Adam groups and the BN running statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Store {
    Weights,
    Gates,
    Scales,
    Buffers,
}

impl Store {
    const ALL: [Store; 4] = [Store::Weights, Store::Gates, Store::Scales, Store::Buffers];

    /// The optimizer group's name (`weights`, `gates`, `scales`).
    fn group_name(self) -> String {
        format!("{self:?}").to_lowercase()
    }
}

/// The stores an optimizer steps.
const OPTIMIZED: [Store; 3] = [Store::Weights, Store::Gates, Store::Scales];

/// Optimizer state of one parameter group (`weights`, `gates` or `scales`), for checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// Group name.
    pub group: String,
    /// The group's optimizer (its kind names the buffers; its settings are not state).
    pub optimizer: Optimizer,
    /// Steps taken.
    pub steps: u32,
    /// The optimizer's buffers, packed as the group's buffer, in the order of
    /// [`Optimizer::buffer_names`] (Adam: m, v; SGD: the momentum buffer).
    pub buffers: Vec<Vec<f32>>,
}

/// What [`Model::snapshot_async`] reads back in one round trip.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Loss and accuracy sums since the previous reset.
    pub metrics: MetricValues,
    /// x_max of every quantizer, by `state_dict` prefix.
    pub ranges: BTreeMap<String, f32>,
    /// Every quantizer's state by `state_dict` prefix, when asked for.
    pub quantizers: Option<BTreeMap<String, QuantizerState>>,
    /// Σ_q R_q of the last training step (before μ); 0 before any training step.
    pub regularizer: f64,
}

/// Learning rates of one step (the weights rate after the schedule).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearningRates {
    /// Weights, biases, BN γ and β.
    pub weights: f32,
    /// Gate logits.
    pub gates: f32,
    /// Ranges x_max.
    pub scales: f32,
}

/// Values a training step needs besides the batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepConfig {
    /// Seed of the gate noise.
    pub seed: u64,
    /// Noise counter of this step: `k + 1` for the k-th training step (0 is range init).
    pub step: u32,
    /// Regulariser strength μ.
    pub mu: f32,
    /// Learning rates.
    pub lr: LearningRates,
}

/// Activation buffers of the largest batch; plans for smaller batches use prefixes.
#[derive(Debug)]
struct Activations {
    input: Tensor,
    labels: Tensor,
    /// Output of every layer (quantized activation, pooled map or logits); `None` for a flatten,
    /// whose output is its input.
    outputs: Vec<Option<Tensor>>,
    /// Per weighted layer: conv output y (before the epilogue), and (BN) the full-precision conv
    /// output; per quantized layer: the activation quantizer's input a.
    y: Vec<Option<Tensor>>,
    a: Vec<Option<Tensor>>,
    y_fp: Vec<Option<Tensor>>,
    argmax: Vec<Option<Tensor>>,
    /// Gradient buffers of the values, assigned by [`GradSlots`].
    grads: Vec<Tensor>,
    scratch: Scratch,
    dlogits: Tensor,
}

/// Which gradient buffer holds dL/d(value) during the backward pass. Values are numbered as in
/// [`LayerSpec::inputs`]; a flatten's output shares its input's buffer. Buffers are reused once
/// the layer that produced a value has consumed its gradient, so a chain of layers needs two.
#[derive(Clone, Debug)]
struct GradSlots {
    /// The value whose buffer a value uses (itself, or a flatten's input, transitively).
    canonical: Vec<usize>,
    /// Buffer index per canonical value (`None`: the input, or the logits, whose gradient is
    /// `dlogits`).
    slot: Vec<Option<usize>>,
    count: usize,
}

impl GradSlots {
    fn new(arch: &Arch) -> Self {
        let values = arch.layers.len() + 1;
        let mut canonical: Vec<usize> = (0..values).collect();
        for (i, l) in arch.layers.iter().enumerate() {
            if l.kind == LayerKind::Flatten {
                canonical[i + 1] = canonical[l.inputs[0]];
            }
        }
        let mut slot = vec![None; values];
        let (mut free, mut count) = (Vec::new(), 0);
        let logits = canonical[values - 1];
        for (i, l) in arch.layers.iter().enumerate().rev() {
            for &v in &l.inputs {
                let c = canonical[v];
                if c != 0 && c != logits && slot[c].is_none() {
                    slot[c] = Some(free.pop().unwrap_or_else(|| {
                        count += 1;
                        count - 1
                    }));
                }
            }
            if canonical[i + 1] == i + 1 {
                if let Some(k) = slot[i + 1] {
                    free.push(k);
                }
            }
        }
        Self {
            canonical,
            slot,
            count,
        }
    }
}

/// Kernels and views for one batch size.
#[derive(Debug)]
struct Plan {
    layers: Vec<Box<dyn Layer>>,
    /// Every value at this batch size: 0 the input, `i + 1` layer `i`'s output.
    values: Vec<Tensor>,
    /// Gradient buffers at this batch size, indexed by value (`None`: no gradient needed).
    dvalues: Vec<Option<Tensor>>,
    /// Gradient accumulation (`dst += src`) per tensor length, for values read by two layers.
    accumulate: HashMap<usize, Add>,
    loss: SoftmaxCrossEntropy,
    labels: Tensor,
    /// Fixed-gate mode: the fixed quantizer of every quantizer prefix at this batch size.
    fixed: Option<BTreeMap<String, PlanFixed>>,
}

/// Fixed-gate fine-tuning state of one quantizer: its bit width and 0/1 channel mask.
#[derive(Debug)]
struct FixedSide {
    bits: u32,
    mask: Option<Tensor>,
}

/// A batch of images or labels for [`Model::train_step`], [`Model::eval_batch`] and
/// [`Model::forward`]: host memory (uploaded with the step), or a tensor already on the device
/// (copied on the GPU inside the step's submission: nothing goes through the host).
///
/// Images are NCHW `f32`; labels are `u32` class indices, stored as 32-bit words (a label tensor
/// holds `u32` bit patterns, as [`Gpu::upload`] of a `&[u32]` writes them).
#[derive(Clone, Copy, Debug)]
pub enum Batch<'a, T> {
    /// Values in host memory.
    Host(&'a [T]),
    /// A device tensor (needs `COPY_SRC` usage, as every tensor this crate allocates has).
    Gpu(&'a Tensor),
}

impl<T> Batch<'_, T> {
    /// Number of values (32-bit words).
    pub fn len(&self) -> usize {
        match self {
            Batch::Host(v) => v.len(),
            Batch::Gpu(t) => t.len(),
        }
    }

    /// Whether the batch holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a, T> From<&'a [T]> for Batch<'a, T> {
    fn from(v: &'a [T]) -> Self {
        Batch::Host(v)
    }
}

impl<'a, T> From<&'a Vec<T>> for Batch<'a, T> {
    fn from(v: &'a Vec<T>) -> Self {
        Batch::Host(v)
    }
}

impl<'a, T, const N: usize> From<&'a [T; N]> for Batch<'a, T> {
    fn from(v: &'a [T; N]) -> Self {
        Batch::Host(v)
    }
}

impl<'a, T> From<&'a Tensor> for Batch<'a, T> {
    fn from(t: &'a Tensor) -> Self {
        Batch::Gpu(t)
    }
}

/// A Bayesian Bits model on the GPU.
#[derive(Debug)]
pub struct Model {
    arch: Arch,
    max_batch: usize,
    variant: Variant,
    stores: BTreeMap<Store, AdamGroup>,
    places: BTreeMap<String, Place>,
    /// x_min of every quantizer: inert, kept for the checkpoint (its sign fixed signedness).
    x_min: BTreeMap<String, f32>,
    infos: Vec<QuantizerInfo>,
    /// The batch-independent part of every weighted layer, shared by the plans.
    weights: Vec<Option<Arc<WeightSide>>>,
    act_storage: Vec<Option<QuantizerStorage>>,
    grad_slots: GradSlots,
    acts: Activations,
    plans: HashMap<usize, Plan>,
    /// Fixed-gate fine-tuning (spec §7.4): every quantizer's fixed bit width and mask, keyed by
    /// prefix; `None` for Bayesian Bits training.
    fixed: Option<BTreeMap<String, FixedSide>>,
    /// Batch size of the last training step (whose regulariser values are current).
    last_train_batch: Option<usize>,
    step_state: StepState,
    metrics: Metrics,
}

fn shape_err(op: &'static str, expected: String, actual: String) -> Error {
    Error::Shape {
        op,
        expected,
        actual,
    }
}

impl Model {
    /// Uploads `params` (names and shapes of `arch.state_dict_shapes()`, ranges already
    /// initialised) and allocates everything a batch of up to `max_batch` images needs.
    ///
    /// Fails before allocating activations when one would exceed the adapter's storage-binding
    /// limit, naming the largest batch that fits.
    pub fn new(gpu: &Gpu, arch: Arch, max_batch: usize, params: &Params) -> Result<Self> {
        Self::build(gpu, arch, max_batch, params, None)
    }

    /// A model for fixed-gate fine-tuning (spec §7.4) of a network without BN, as
    /// [`crate::spec::fixed::fixed_gate_arch`] and [`crate::spec::fixed::fixed_gate_params`] make
    /// it from a trained Bayesian Bits model: every quantizer runs at the test-time bit width and
    /// pruning mask of its (frozen) logits in `params`, with direct rounding; steps train the
    /// weights, biases and ranges on the cross-entropy alone (the gate group is not stepped and
    /// μ is ignored). Use SGD for the weights ([`Model::set_weights_optimizer`]) as the paper does.
    pub fn fixed_gate(gpu: &Gpu, arch: Arch, max_batch: usize, params: &Params) -> Result<Self> {
        const OP: &str = "Model::fixed_gate";
        if let Some(l) = arch.layers.iter().find(|l| l.batch_norm) {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: format!(
                    "{}: layer {} has batch norm; fold it first (spec::fixed::fixed_gate_arch)",
                    arch.name, l.name
                ),
            });
        }
        let gates = fixed_gates(&arch, params).map_err(|e| shape_err(OP, e.0, "missing".into()))?;
        Self::build(gpu, arch, max_batch, params, Some(gates))
    }

    fn build(
        gpu: &Gpu,
        arch: Arch,
        max_batch: usize,
        params: &Params,
        fixed: Option<BTreeMap<String, FixedGates>>,
    ) -> Result<Self> {
        const OP: &str = "Model::new";
        check_batch(gpu, &arch, max_batch)?;
        check_supported(&arch)?;
        for (name, shape) in arch.state_dict_shapes() {
            let len: usize = shape.iter().product();
            match params.get(&name) {
                Some(v) if v.len() == len => {}
                Some(v) => {
                    return Err(shape_err(
                        OP,
                        format!("{name}: {shape:?}"),
                        format!("{} values", v.len()),
                    ))
                }
                None => {
                    return Err(shape_err(
                        OP,
                        format!("{name}: {shape:?}"),
                        "missing".into(),
                    ))
                }
            }
        }
        let infos = arch.quantizers();
        let (stores, places, x_min) = build_stores(gpu, &arch, &infos, params)?;
        let view = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let p = places[name];
            stores[&p.store].param_view(
                gpu,
                ParamSlice {
                    offset: p.offset,
                    len: p.len,
                },
                shape,
            )
        };
        let grad_view = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let p = places[name];
            stores[&p.store].grad_view(
                gpu,
                ParamSlice {
                    offset: p.offset,
                    len: p.len,
                },
                shape,
            )
        };
        let quant_storage = |info: &QuantizerInfo| -> Result<QuantizerStorage> {
            let x_max = format!("{}.x_max", info.prefix);
            // The logits ℓ4…ℓ32, ℓ2 are one contiguous block starting at ℓ4.
            let len = 4 + info.prune_channels;
            let logits = ParamSlice {
                offset: places[&format!("{}.gamma_4", info.prefix)].offset,
                len,
            };
            let gates = &stores[&Store::Gates];
            Ok(QuantizerStorage {
                x_max: view(&x_max, &[1])?,
                logits: gates.param_view(gpu, logits, &[len])?,
                x_max_grad: grad_view(&x_max, &[1])?,
                logit_grad: gates.grad_view(gpu, logits, &[len])?,
            })
        };
        let find = |prefix: String| infos.iter().find(|q| q.prefix == prefix);
        let mut weights = Vec::new();
        let mut act_storage = Vec::new();
        let mut outputs = Vec::new();
        let (mut y, mut a, mut y_fp, mut argmax) = (vec![], vec![], vec![], vec![]);
        let mut largest = arch.input.iter().product::<usize>();
        for l in &arch.layers {
            let out_len = max_batch * l.output_len();
            largest = largest.max(l.output_len());
            let zeros = |what: &str| gpu.zeros(&format!("{} {what}", l.name), &[out_len]);
            outputs.push(match l.kind {
                LayerKind::Flatten => None,
                _ => Some(zeros("output")?),
            });
            argmax.push(match l.kind {
                LayerKind::MaxPool { .. } => Some(zeros("argmax")?),
                _ => None,
            });
            y.push(match l.is_weighted() {
                true => Some(zeros("y")?),
                false => None,
            });
            a.push(match l.act_quant {
                true => Some(zeros("a")?),
                false => None,
            });
            y_fp.push(match l.batch_norm {
                true => Some(zeros("y_fp")?),
                false => None,
            });
            act_storage.push(match find(l.activation_quantizer()) {
                Some(info) => Some(quant_storage(info)?),
                None => None,
            });
            if !l.is_weighted() {
                weights.push(None);
                continue;
            }
            let winfo =
                find(l.weight_quantizer()).expect("every weighted layer has a weight quantizer");
            let signed = x_min[&winfo.prefix] < 0.0;
            let wlen = l.weight_shape().iter().product();
            let quantizer = Quantizer::with_storage(
                gpu,
                quant_config(winfo, signed, wlen, params),
                quant_storage(winfo)?,
            )?;
            let param = |leaf: &str, shape: &[usize]| -> Result<(Tensor, Tensor)> {
                let name = format!("{}.{leaf}", l.name);
                Ok((view(&name, shape)?, grad_view(&name, shape)?))
            };
            let side = WeightSide::new(gpu, l, quantizer, max_batch, &param)?;
            weights.push(Some(Arc::new(side)));
        }
        let scratch = max_batch * largest;
        let grad_slots = GradSlots::new(&arch);
        let acts = Activations {
            input: gpu.zeros("input", &[max_batch * arch.input.iter().product::<usize>()])?,
            labels: gpu.zeros("labels", &[max_batch])?,
            outputs,
            y,
            a,
            y_fp,
            argmax,
            grads: (0..grad_slots.count)
                .map(|k| gpu.zeros(&format!("value gradient {k}"), &[scratch]))
                .collect::<Result<_>>()?,
            scratch: Scratch {
                da: gpu.zeros("da", &[scratch])?,
                dy: gpu.zeros("dy", &[scratch])?,
                dy_fp: gpu.zeros("dy_fp", &[scratch])?,
            },
            dlogits: gpu.zeros("dlogits", &[max_batch * arch.classes])?,
        };
        let fixed = match fixed {
            Some(gates) => Some(
                gates
                    .into_iter()
                    .map(|(prefix, gates)| {
                        let mask = match &gates.mask {
                            Some(m) => {
                                Some(gpu.upload(&format!("{prefix} mask"), &[m.len()], m)?)
                            }
                            None => None,
                        };
                        let bits = gates.bits;
                        Ok((prefix, FixedSide { bits, mask }))
                    })
                    .collect::<Result<_>>()?,
            ),
            None => None,
        };
        let mut model = Self {
            fixed,
            variant: Variant::best(gpu),
            arch,
            max_batch,
            stores,
            places,
            x_min,
            infos,
            weights,
            act_storage,
            grad_slots,
            acts,
            plans: HashMap::new(),
            last_train_batch: None,
            step_state: StepState::new(gpu),
            metrics: Metrics::new(gpu)?,
        };
        model.prepare(gpu)?;
        Ok(model)
    }

    /// A freshly initialised model, as the official code starts a run (spec §2.7, §7.1): PyTorch's
    /// default initialisation with `init`'s logits and seed, then range initialisation on the
    /// GPU from `calibration` (NCHW images, 1 to `max_batch` of them; the trainer uses 2): every
    /// quantizer's `x_max`/`x_min` become the largest and smallest value it sees, with gates
    /// sampled from `init.seed` at step 0, and BN running statistics take one update.
    /// **Blocking** (it reads the measured signs back).
    ///
    /// Signedness (`x_min < 0`) decides how each quantizer rounds, so it must be known before
    /// the pass that measures it: the pass runs with the signedness the graph suggests
    /// (unsigned after a ReLU) and is repeated from scratch with the measured signs until they
    /// agree — once for every network whose activations are signed where they are not ReLU'd.
    pub fn init(
        gpu: &Gpu,
        arch: Arch,
        max_batch: usize,
        init: &InitConfig,
        calibration: &[f32],
    ) -> Result<Self> {
        const OP: &str = "Model::init";
        let per_image: usize = arch.input.iter().product();
        let n = calibration.len() / per_image.max(1);
        if calibration.is_empty() || n * per_image != calibration.len() || n > max_batch {
            return Err(shape_err(
                OP,
                format!("1 to {max_batch} calibration images of {:?}", arch.input),
                format!("{} values", calibration.len()),
            ));
        }
        if let Some(i) = calibration.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: format!("calibration value {i} is {}", calibration[i]),
            });
        }
        let initial = init_params(&arch, init);
        let mut signed: BTreeMap<String, bool> = arch
            .quantizers()
            .into_iter()
            .map(|q| {
                // Unsigned after a ReLU or ReLU6, signed otherwise.
                let nonnegative = arch.layers.iter().any(|l| {
                    l.activation != Activation::None
                        && l.act_quant
                        && l.activation_quantizer() == q.prefix
                });
                (q.prefix, !nonnegative)
            })
            .collect();
        // Each repeat learns every sign the previous pass got wrong, so the number of passes is
        // bounded by the quantizers downstream of a wrong guess; two suffice for every preset.
        for _ in 0..=signed.len() {
            let mut params = initial.clone();
            for (prefix, &s) in &signed {
                params.insert(format!("{prefix}.x_min"), vec![if s { -1.0 } else { 0.0 }]);
            }
            let mut model = Self::new(gpu, arch.clone(), max_batch, &params)?;
            let x_min = model.range_init_pass(gpu, n, calibration, init.seed)?;
            let measured: BTreeMap<String, bool> =
                x_min.iter().map(|(k, &v)| (k.clone(), v < 0.0)).collect();
            if measured == signed {
                model.x_min = x_min;
                return Ok(model);
            }
            signed = measured;
        }
        Err(Error::InvalidArgument {
            op: OP,
            msg: format!(
                "{}: the signs of the quantizer ranges did not settle; the calibration images \
                 may be degenerate",
                arch.name
            ),
        })
    }

    /// Runs one range-initialisation pass over `n` calibration images and returns every
    /// quantizer's measured `x_min` (its `x_max` is written on the GPU). **Blocking.**
    fn range_init_pass(
        &mut self,
        gpu: &Gpu,
        n: usize,
        images: &[f32],
        seed: u64,
    ) -> Result<BTreeMap<String, f32>> {
        self.plan(gpu, n)?;
        let mut ranges = RangeInits::default();
        for q in &self.infos {
            let len = if q.weight { q.len } else { q.len * n };
            let x_min = gpu.zeros(&format!("{} x_min", q.prefix), &[1])?;
            ranges
                .0
                .insert(q.prefix.clone(), (RangeInit::new(gpu, len)?, x_min));
        }
        gpu.write(&self.plans[&n].values[0], images)?;
        self.step_state.set(gpu, seed, 0, true, 0.0);
        let mut enc = gpu.encoder("range initialisation");
        self.record_forward(gpu, &mut enc, n, Pass::RangeInit(&ranges))?;
        gpu.submit(enc);
        let tensors: Vec<&Tensor> = ranges.0.values().map(|(_, t)| t).collect();
        let values = gpu.read_blocking(&tensors)?;
        let relu_adds: Vec<String> = self
            .arch
            .layers
            .iter()
            .filter(|l| l.kind == LayerKind::Add && l.activation == Activation::Relu)
            .map(LayerSpec::activation_quantizer)
            .collect();
        Ok(ranges
            .0
            .keys()
            .zip(values)
            .map(|(prefix, v)| {
                // The GPU add applies its ReLU through the unsigned quantizer, so the range saw
                // the sum before the ReLU; after it the minimum is 0.
                let x_min = if relu_adds.contains(prefix) {
                    0.0
                } else {
                    v[0]
                };
                (prefix.clone(), x_min)
            })
            .collect())
    }

    /// Whether this is a fixed-gate fine-tuning model ([`Model::fixed_gate`]).
    pub fn is_fixed_gate(&self) -> bool {
        self.fixed.is_some()
    }

    /// The architecture.
    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    /// Largest batch the model was allocated for.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Creates every pipeline and bind group a full batch's training step and evaluation use,
    /// by running their recording through [`Gpu::preparing`] (which records no commands), so the
    /// first step does not stall on shader compilation. The step constants are queued only by
    /// [`Model::train_step`] and [`Model::eval_batch`], so preparing changes no device state.
    fn prepare(&mut self, gpu: &Gpu) -> Result<()> {
        let n = self.max_batch;
        self.plan(gpu, n)?;
        let dry = gpu.preparing();
        let mut enc = dry.encoder("prepare (records nothing)");
        self.record_forward(&dry, &mut enc, n, Pass::Train)?;
        self.record_backward(&dry, &mut enc, n)?;
        self.record_forward(&dry, &mut enc, n, Pass::Eval)?;
        dry.prepare([&crate::kernels::optim::ADAM])
    }

    fn plan(&mut self, gpu: &Gpu, n: usize) -> Result<()> {
        if self.plans.contains_key(&n) {
            return Ok(());
        }
        const OP: &str = "Model::plan";
        if n == 0 || n > self.max_batch {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: format!(
                    "batch of {n} images; the model holds 1 to {}",
                    self.max_batch
                ),
            });
        }
        let prefix = |t: &Tensor, per_sample: usize| t.slice(gpu, 0, &[n * per_sample]);
        let input_len = self.arch.input.iter().product();
        let mut values = vec![prefix(&self.acts.input, input_len)?];
        for (i, l) in self.arch.layers.iter().enumerate() {
            values.push(match &self.acts.outputs[i] {
                Some(t) => prefix(t, l.output_len())?,
                None => values[l.inputs[0]].clone(),
            });
        }
        let slots = &self.grad_slots;
        let last = values.len() - 1;
        let dlogits = prefix(&self.acts.dlogits, self.arch.classes)?;
        let dvalues = (0..values.len())
            .map(|v| {
                let c = slots.canonical[v];
                match slots.slot[c] {
                    _ if c == slots.canonical[last] => Ok(Some(dlogits.clone())),
                    Some(k) => prefix(
                        &self.acts.grads[k],
                        self.arch.value_shape(v).iter().product(),
                    )
                    .map(Some),
                    None => Ok(None),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let mut layers = Vec::new();
        for (i, l) in self.arch.layers.iter().enumerate() {
            let out = l.output_len();
            let view = |t: &Option<Tensor>| t.as_ref().map(|t| prefix(t, out)).transpose();
            let act_quant = match &self.act_storage[i] {
                Some(storage) => {
                    let info_prefix = l.activation_quantizer();
                    let info = self
                        .infos
                        .iter()
                        .find(|q| q.prefix == info_prefix)
                        .expect("activation quantizer info");
                    let cfg = QuantizerConfig {
                        len: n * out,
                        prune_channels: 0,
                        signed: self.x_min[&info.prefix] < 0.0,
                        x_max: 1.0,
                        chain_logits: [0.0; 4],
                        prune_logit: 0.0,
                        mac_ratio: info.mac_ratio,
                        id: info.id,
                    };
                    let a = prefix(self.acts.a[i].as_ref().expect("a"), out)?;
                    Some((Quantizer::with_storage(gpu, cfg, storage.clone())?, a))
                }
                None => None,
            };
            layers.push(layer::build(Build {
                gpu,
                n,
                index: i,
                spec: l,
                argmax: view(&self.acts.argmax[i])?,
                y: view(&self.acts.y[i])?,
                y_fp: view(&self.acts.y_fp[i])?,
                act_quant,
                side: self.weights[i].clone(),
            })?);
        }
        let mut accumulate = HashMap::new();
        for l in &self.arch.layers {
            for &v in &l.inputs {
                let len = n * self.arch.value_shape(v).iter().product::<usize>();
                if let std::collections::hash_map::Entry::Vacant(e) = accumulate.entry(len) {
                    e.insert(Add::new(gpu, len)?);
                }
            }
        }
        let fixed = match &self.fixed {
            Some(sides) => Some(self.plan_fixed(gpu, n, sides)?),
            None => None,
        };
        let plan = Plan {
            fixed,
            layers,
            values,
            dvalues,
            accumulate,
            loss: SoftmaxCrossEntropy::new(gpu, n, self.arch.classes)?,
            labels: prefix(&self.acts.labels, 1)?,
        };
        self.plans.insert(n, plan);
        Ok(())
    }

    /// The fixed quantizer of every prefix of `sides` at batch size `n`.
    fn plan_fixed(
        &self,
        gpu: &Gpu,
        n: usize,
        sides: &BTreeMap<String, FixedSide>,
    ) -> Result<BTreeMap<String, PlanFixed>> {
        let mut fixed = BTreeMap::new();
        for (prefix, side) in sides {
            let info = self
                .infos
                .iter()
                .find(|q| &q.prefix == prefix)
                .expect("a fixed quantizer of the network");
            let len = if info.weight { info.len } else { info.len * n };
            let signed = self.x_min[prefix] < 0.0;
            let channels = side.mask.as_ref().map_or(0, Tensor::len);
            let quant = FixedQuant::new(gpu, len, side.bits, signed, channels)?;
            let partials = gpu.zeros(&format!("{prefix} partials"), &[quant.partials_len()])?;
            let mask = side.mask.clone();
            fixed.insert(
                prefix.clone(),
                PlanFixed {
                    quant,
                    partials,
                    mask,
                },
            );
        }
        Ok(fixed)
    }

    /// Plans for the batch and copies its images (and labels) into the model's input buffers;
    /// returns the batch size, which the labels give, else the images.
    fn load_batch(
        &mut self,
        gpu: &Gpu,
        enc: &mut Encoder,
        op: &'static str,
        images: Batch<f32>,
        labels: Option<Batch<u32>>,
    ) -> Result<usize> {
        let per_image: usize = self.arch.input.iter().product();
        let n = match &labels {
            Some(l) => l.len(),
            None => images.len() / per_image,
        };
        if images.len() != n * per_image || n == 0 {
            return Err(shape_err(
                op,
                format!(
                    "{n} images of {:?} ({} values)",
                    self.arch.input,
                    n * per_image
                ),
                format!("{} values", images.len()),
            ));
        }
        self.plan(gpu, n)?;
        let plan = &self.plans[&n];
        load(gpu, enc, op, images, &plan.values[0])?;
        if let Some(labels) = labels {
            load(gpu, enc, op, labels, &plan.labels)?;
        }
        Ok(n)
    }

    /// Records and submits one training step on a batch (`images` NCHW, `labels` < classes).
    /// Loss and accuracy accumulate on the GPU ([`Model::take_metrics`]); nothing is read back.
    pub fn train_step<'a>(
        &mut self,
        gpu: &Gpu,
        images: impl Into<Batch<'a, f32>>,
        labels: impl Into<Batch<'a, u32>>,
        cfg: &StepConfig,
    ) -> Result<()> {
        let (images, labels) = (images.into(), Some(labels.into()));
        let mut enc = gpu.encoder("training step");
        let n = self.load_batch(gpu, &mut enc, "Model::train_step", images, labels)?;
        self.last_train_batch = Some(n);
        self.step_state.set(gpu, cfg.seed, cfg.step, true, cfg.mu);
        self.record_forward(gpu, &mut enc, n, Pass::Train)?;
        self.record_backward(gpu, &mut enc, n)?;
        for (store, lr) in OPTIMIZED
            .into_iter()
            .zip([cfg.lr.weights, cfg.lr.gates, cfg.lr.scales])
        {
            if store == Store::Gates && self.fixed.is_some() {
                // Frozen: the logits only say which bits and channels the quantizers keep.
                continue;
            }
            self.stores
                .get_mut(&store)
                .expect("optimizer group")
                .step(gpu, &mut enc, lr)?;
        }
        gpu.submit(enc);
        Ok(())
    }

    /// Records and submits the evaluation of a batch with test-time gates and BN running
    /// statistics; correct predictions and the loss accumulate in the metrics.
    pub fn eval_batch<'a>(
        &mut self,
        gpu: &Gpu,
        images: impl Into<Batch<'a, f32>>,
        labels: impl Into<Batch<'a, u32>>,
    ) -> Result<()> {
        let (images, labels) = (images.into(), Some(labels.into()));
        let mut enc = gpu.encoder("evaluation");
        let n = self.load_batch(gpu, &mut enc, "Model::eval_batch", images, labels)?;
        self.step_state.set(gpu, 0, 0, false, 0.0);
        self.record_forward(gpu, &mut enc, n, Pass::Eval)?;
        gpu.submit(enc);
        Ok(())
    }

    /// Records and submits inference on a batch of NCHW images (their count follows from the
    /// length) with test-time gates and BN running statistics, and returns the logits
    /// `[n, classes]`: a view of a model buffer, valid until the next pass over `n` images. Read
    /// it with [`Gpu::read_async`], bind it in the application's own pipelines, or take
    /// intermediate features with [`Model::output`]. Nothing is read back; metrics are untouched.
    pub fn forward<'a>(&mut self, gpu: &Gpu, images: impl Into<Batch<'a, f32>>) -> Result<Tensor> {
        let mut enc = gpu.encoder("inference");
        let n = self.load_batch(gpu, &mut enc, "Model::forward", images.into(), None)?;
        self.step_state.set(gpu, 0, 0, false, 0.0);
        self.record_forward(gpu, &mut enc, n, Pass::Infer)?;
        gpu.submit(enc);
        self.logits(n)
    }

    /// The output of layer `layer` (its `state_dict` module name, e.g. `classifier.0`) in the
    /// last pass over `n` images: `[n, c, h, w]` after a conv or pooling layer, `[n, features]`
    /// after a linear layer or flatten. A view of a model buffer, like [`Model::logits`].
    pub fn output(&self, n: usize, layer: &str) -> Result<Tensor> {
        const OP: &str = "Model::output";
        let plan = self.plans.get(&n).ok_or_else(|| Error::InvalidArgument {
            op: OP,
            msg: format!("no batch of {n} images has been run"),
        })?;
        let (i, spec) = self
            .arch
            .layers
            .iter()
            .enumerate()
            .find(|(_, l)| l.name == layer)
            .ok_or_else(|| Error::InvalidArgument {
                op: OP,
                msg: format!("{} has no layer named {layer:?}", self.arch.name),
            })?;
        let shape = match spec.kind {
            LayerKind::Linear { .. } | LayerKind::Flatten => vec![n, spec.output_len()],
            _ => [vec![n], spec.output.to_vec()].concat(),
        };
        plan.values[i + 1].view(&shape)
    }

    /// The logits `[n, classes]` of the last forward pass over a batch of `n` images (a view of
    /// a model buffer: read it with [`Gpu::read_async`] after the batch's submission).
    pub fn logits(&self, n: usize) -> Result<Tensor> {
        let plan = self.plans.get(&n).ok_or_else(|| Error::InvalidArgument {
            op: "Model::logits",
            msg: format!("no batch of {n} images has been run"),
        })?;
        let logits = plan.values.last().expect("a model has layers");
        logits.view(&[n, self.arch.classes])
    }

    /// Reads the accumulated loss and accuracy and resets them. **Blocking.**
    pub fn take_metrics(&self, gpu: &Gpu) -> Result<MetricValues> {
        let values = self.metrics.read(gpu)?;
        let mut enc = gpu.encoder("reset metrics");
        self.metrics.reset(&mut enc);
        gpu.submit(enc);
        Ok(values)
    }

    /// What the layers of the plan for `n` images share while `pass` is recorded.
    fn context<'a>(&'a self, gpu: &'a Gpu, n: usize, pass: Pass<'a>) -> Context<'a> {
        let plan = &self.plans[&n];
        Context {
            gpu,
            n,
            variant: self.variant,
            pass,
            step: &self.step_state,
            values: &plan.values,
            dvalues: &plan.dvalues,
            canonical: &self.grad_slots.canonical,
            accumulate: &plan.accumulate,
            scratch: &self.acts.scratch,
            fixed: plan.fixed.as_ref(),
            written: vec![false; plan.values.len()],
        }
    }

    fn record_forward(&self, gpu: &Gpu, enc: &mut Encoder, n: usize, pass: Pass) -> Result<()> {
        let plan = &self.plans[&n];
        if self.fixed.is_none() {
            for q in plan.layers.iter().flat_map(|l| l.quantizers()) {
                q.sample_gates(gpu, enc, &self.step_state)?;
            }
        }
        let cx = self.context(gpu, n, pass);
        for l in &plan.layers {
            l.forward(&cx, enc)?;
        }
        if matches!(pass, Pass::Infer | Pass::RangeInit(_)) {
            return Ok(());
        }
        let logits = plan.values.last().expect("a model has layers");
        let dlogits = plan
            .dvalues
            .last()
            .and_then(Option::as_ref)
            .expect("dlogits");
        plan.loss
            .forward(gpu, enc, logits, &plan.labels, dlogits, &self.metrics)
    }

    /// Records the backward pass. Gradients flow from value to value: a layer reads the gradient
    /// of its output and writes (its first reader in backward order) or adds (the others) the
    /// gradients of its inputs; the network input needs none.
    fn record_backward(&self, gpu: &Gpu, enc: &mut Encoder, n: usize) -> Result<()> {
        let plan = &self.plans[&n];
        let mut cx = self.context(gpu, n, Pass::Train);
        for (i, l) in plan.layers.iter().enumerate().rev() {
            if let Some(dout) = &plan.dvalues[i + 1] {
                l.backward(&mut cx, enc, dout)?;
            }
        }
        Ok(())
    }

    /// Every `state_dict` tensor (official names and layouts). **Blocking.**
    pub fn params(&self, gpu: &Gpu) -> Result<Params> {
        let mut out = self.read_places(gpu, AdamGroup::params, &Store::ALL)?;
        for (prefix, v) in &self.x_min {
            out.insert(format!("{prefix}.x_min"), vec![*v]);
        }
        Ok(out)
    }

    /// Gradients of the last training step (cross-entropy + μ·ΣR), by parameter name; the
    /// running statistics' entries are meaningless. **Blocking.**
    pub fn grads(&self, gpu: &Gpu) -> Result<Params> {
        self.read_places(gpu, AdamGroup::grads, &Store::ALL)
    }

    /// The tensors of `stores` (each read in full, in one round trip), by `state_dict` name.
    fn read_places(
        &self,
        gpu: &Gpu,
        which: fn(&AdamGroup) -> &Tensor,
        stores: &[Store],
    ) -> Result<Params> {
        let tensors: Vec<&Tensor> = stores.iter().map(|s| which(&self.stores[s])).collect();
        let words = gpu.read_blocking(&tensors)?;
        let mut out = Params::new();
        for (name, place) in &self.places {
            if let Some(i) = stores.iter().position(|s| *s == place.store) {
                let range = place.offset..place.offset + place.len;
                out.insert(name.clone(), words[i][range].to_vec());
            }
        }
        Ok(out)
    }

    /// The optimizer of each parameter group, by group name (`weights`, `gates`, `scales`).
    pub fn optimizers(&self) -> Vec<(String, Optimizer)> {
        OPTIMIZED
            .iter()
            .map(|s| (s.group_name(), self.stores[s].optimizer()))
            .collect()
    }

    /// Switches the weights group (weights, biases, BN γ and β) to `optimizer` with fresh
    /// state; gates and ranges stay on Adam (spec §7.5). Call before the first step, or to
    /// start a new phase.
    pub fn set_weights_optimizer(&mut self, gpu: &Gpu, optimizer: Optimizer) -> Result<()> {
        self.stores
            .get_mut(&Store::Weights)
            .expect("weights group")
            .set_optimizer(gpu, optimizer)
    }

    /// Optimizer state of the three groups, for checkpoints. **Blocking.**
    pub fn optimizer_state(&self, gpu: &Gpu) -> Result<Vec<OptimizerState>> {
        let groups: Vec<&AdamGroup> = OPTIMIZED.iter().map(|s| &self.stores[s]).collect();
        let tensors: Vec<&Tensor> = groups.iter().flat_map(|g| g.moments()).collect();
        let mut words = gpu.read_blocking(&tensors)?.into_iter();
        Ok(OPTIMIZED
            .iter()
            .zip(groups)
            .map(|(store, group)| OptimizerState {
                group: store.group_name(),
                optimizer: group.optimizer(),
                steps: group.steps(),
                buffers: words.by_ref().take(group.moments().len()).collect(),
            })
            .collect())
    }

    /// Restores optimizer state written by [`Model::optimizer_state`]; each group must already
    /// run the optimizer kind the state belongs to.
    pub fn set_optimizer_state(&mut self, gpu: &Gpu, state: &[OptimizerState]) -> Result<()> {
        const OP: &str = "Model::set_optimizer_state";
        for st in state {
            let store = OPTIMIZED
                .into_iter()
                .find(|s| s.group_name() == st.group)
                .ok_or_else(|| Error::InvalidArgument {
                    op: OP,
                    msg: format!("unknown optimizer group {:?}", st.group),
                })?;
            let group = self.stores.get_mut(&store).expect("group");
            let have = group.optimizer();
            if have.name() != st.optimizer.name() || st.buffers.len() != group.moments().len() {
                return Err(Error::InvalidArgument {
                    op: OP,
                    msg: format!(
                        "the {} group runs {} but the state is {} with {} buffers",
                        st.group,
                        have.name(),
                        st.optimizer.name(),
                        st.buffers.len()
                    ),
                });
            }
            for (tensor, data) in group.moments().into_iter().zip(&st.buffers) {
                gpu.write(tensor, data)?;
            }
            group.set_steps(st.steps);
        }
        Ok(())
    }

    /// x_max of every quantizer, by `state_dict` prefix: a small readback (the ranges group
    /// only), cheap enough to check every few steps. **Blocking.**
    pub fn ranges(&self, gpu: &Gpu) -> Result<BTreeMap<String, f32>> {
        let words = gpu.read(self.stores[&Store::Scales].params())?;
        Ok(self
            .infos
            .iter()
            .map(|q| {
                (
                    q.prefix.clone(),
                    words[self.places[&format!("{}.x_max", q.prefix)].offset],
                )
            })
            .collect())
    }

    /// Current state of every quantizer, by `state_dict` prefix. **Blocking.**
    pub fn quantizer_states(&self, gpu: &Gpu) -> Result<BTreeMap<String, QuantizerState>> {
        // Only the logits and ranges: the weights group is by far the largest.
        let params = self.read_places(gpu, AdamGroup::params, &[Store::Gates, Store::Scales])?;
        Ok(self
            .infos
            .iter()
            .map(|q| {
                let get = |t: &str| params[&format!("{}.{t}", q.prefix)].clone();
                let state = QuantizerState {
                    x_max: get("x_max")[0],
                    chain_logits: ["gamma_4", "gamma_8", "gamma_16", "gamma_32"].map(|g| get(g)[0]),
                    prune_logits: if q.prune_channels > 0 {
                        get("gamma_2")
                    } else {
                        vec![]
                    },
                };
                (q.prefix.clone(), state)
            })
            .collect())
    }

    /// Copies the loss and accuracy sums, every range, with `quantizers` every gate logit, and
    /// the regulariser values of the last training step into one staging buffer, then resets
    /// the sums: two submissions (the copy, then the reset), no waiting.
    ///
    /// Returns the future of the [`Snapshot`] (it resolves once the device has been polled past
    /// the copy, e.g. by `Device::poll`) and the index of the reset submission, after which the
    /// copy is done.
    pub fn snapshot_async(
        &self,
        gpu: &Gpu,
        quantizers: bool,
    ) -> (
        impl std::future::Future<Output = Result<Snapshot>> + use<>,
        wgpu::SubmissionIndex,
    ) {
        let mut tensors: Vec<&Tensor> =
            vec![self.metrics.tensor(), self.stores[&Store::Scales].params()];
        if quantizers {
            tensors.push(self.stores[&Store::Gates].params());
        }
        let regs = self.regularizer_tensors();
        let num_regs = regs.len();
        tensors.extend(regs);
        let read = gpu.read_async(&tensors);
        let mut enc = gpu.encoder("reset metrics");
        self.metrics.reset(&mut enc);
        let index = gpu.submit(enc);
        let offset = |name: String| self.places[&name].offset;
        let layout: Vec<(String, usize, [usize; 4], usize, usize)> = self
            .infos
            .iter()
            .map(|q| {
                let p = &q.prefix;
                (
                    p.clone(),
                    offset(format!("{p}.x_max")),
                    ["gamma_4", "gamma_8", "gamma_16", "gamma_32"]
                        .map(|g| offset(format!("{p}.{g}"))),
                    if q.prune_channels > 0 {
                        offset(format!("{p}.gamma_2"))
                    } else {
                        0
                    },
                    q.prune_channels,
                )
            })
            .collect();
        let future = async move {
            let words = read.await?;
            let metrics = Metrics::values_from(&words[0])?;
            let scales = &words[1];
            let ranges = layout
                .iter()
                .map(|(p, x, ..)| (p.clone(), scales[*x]))
                .collect();
            let states = quantizers.then(|| {
                let gates = &words[2];
                layout
                    .iter()
                    .map(|(p, x, chain, prune, channels)| {
                        let state = QuantizerState {
                            x_max: scales[*x],
                            chain_logits: chain.map(|o| gates[o]),
                            prune_logits: gates[*prune..*prune + *channels].to_vec(),
                        };
                        (p.clone(), state)
                    })
                    .collect()
            });
            let regularizer = words[words.len() - num_regs..]
                .iter()
                .map(|v| f64::from(v[0]))
                .sum();
            Ok(Snapshot {
                metrics,
                ranges,
                quantizers: states,
                regularizer,
            })
        };
        (future, index)
    }

    /// `R_q` of every quantizer at the last training batch size, in [`Arch::quantizers`] order.
    fn regularizer_tensors(&self) -> Vec<&Tensor> {
        if self.fixed.is_some() {
            // Fixed-gate fine-tuning trains on the cross-entropy alone.
            return Vec::new();
        }
        // Before any training step every R_q is still 0: nothing to read.
        let Some(plan) = self.last_train_batch.and_then(|n| self.plans.get(&n)) else {
            return Vec::new();
        };
        plan.layers
            .iter()
            .flat_map(|l| l.quantizers())
            .map(|q| &q.reg_value)
            .collect()
    }

    /// Σ_q R_q of the last training step (before μ). **Blocking.**
    pub fn regularizer(&self, gpu: &Gpu) -> Result<f64> {
        let tensors = self.regularizer_tensors();
        if tensors.is_empty() {
            return Ok(0.0);
        }
        Ok(gpu
            .read_blocking(&tensors)?
            .iter()
            .map(|v| f64::from(v[0]))
            .sum())
    }
}

fn quant_config(
    info: &QuantizerInfo,
    signed: bool,
    len: usize,
    params: &Params,
) -> QuantizerConfig {
    QuantizerConfig {
        len,
        prune_channels: info.prune_channels,
        signed,
        x_max: params[&format!("{}.x_max", info.prefix)][0],
        chain_logits: [0.0; 4],
        prune_logit: 0.0,
        mac_ratio: info.mac_ratio,
        id: info.id,
    }
}

/// Refuses networks the GPU model cannot run: layer kinds without kernels yet, a ReLU or ReLU6
/// without an activation quantizer after it (the epilogue's backward relies on the unsigned
/// quantizer for the ReLU mask), and a ReLU6 after a residual add (the add kernel has no clamp).
fn check_supported(arch: &Arch) -> Result<()> {
    for l in &arch.layers {
        let problem = match l.kind {
            _ if l.activation != Activation::None && !l.act_quant => {
                Some("a ReLU or ReLU6 must be followed by an activation quantizer")
            }
            LayerKind::Add if l.activation == Activation::Relu6 => {
                Some("a ReLU6 after a residual add is not supported on the GPU yet")
            }
            _ => None,
        };
        if let Some(msg) = problem {
            return Err(Error::InvalidArgument {
                op: "Model::new",
                msg: format!("{}: layer {}: {msg}", arch.name, l.name),
            });
        }
    }
    Ok(())
}

/// Writes a host batch into `dst` through the queue, or records the copy of a device batch into
/// `enc` (the caller checked the length).
fn load<T: bytemuck::Pod>(
    gpu: &Gpu,
    enc: &mut Encoder,
    op: &'static str,
    src: Batch<T>,
    dst: &Tensor,
) -> Result<()> {
    match src {
        Batch::Host(values) => gpu.write(dst, values),
        Batch::Gpu(t) => {
            t.expect_usage(op, wgpu::BufferUsages::COPY_SRC)?;
            let (from, to) = (t.buffer(), dst.buffer());
            enc.copy_buffer_to_buffer(from, t.offset(), to, dst.offset(), dst.bytes());
            Ok(())
        }
    }
}

/// Refuses a batch whose largest activation would exceed one storage binding, naming the
/// largest batch that fits.
pub fn check_batch(gpu: &Gpu, arch: &Arch, batch: usize) -> Result<()> {
    let limits = gpu.limits();
    let binding = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    let per_sample = arch
        .layers
        .iter()
        .map(|l| l.output.iter().product::<usize>())
        .chain([arch.input.iter().product()])
        .max()
        .unwrap_or(1);
    let largest = (binding / (4 * per_sample as u64)) as usize;
    if batch == 0 || batch > largest {
        return Err(Error::InvalidArgument {
            op: "Model::new",
            msg: format!(
                "batch size {batch} does not fit this adapter: the largest activation of {} needs {} bytes per image and one storage binding holds {binding} bytes; the largest batch that fits is {largest}",
                arch.name,
                4 * per_sample
            ),
        });
    }
    Ok(())
}

type Stores = (
    BTreeMap<Store, AdamGroup>,
    BTreeMap<String, Place>,
    BTreeMap<String, f32>,
);

/// Lays every `state_dict` tensor out in its group and uploads `params`. A quantizer's logits
/// are contiguous (`ℓ4, ℓ8, ℓ16, ℓ32, ℓ2…`) so its kernels bind them as one range.
fn build_stores(
    gpu: &Gpu,
    arch: &Arch,
    infos: &[QuantizerInfo],
    params: &Params,
) -> Result<Stores> {
    let mut arenas: BTreeMap<Store, ParamArena> = Store::ALL
        .iter()
        .map(|&s| (s, ParamArena::new(gpu)))
        .collect();
    let mut places = BTreeMap::new();
    let mut x_min = BTreeMap::new();
    for (name, shape) in arch.state_dict_shapes() {
        let len: usize = shape.iter().product();
        if infos.iter().any(|q| name.starts_with(&q.prefix)) {
            continue;
        }
        let store = match Group::of(&name) {
            Some(Group::Weights) => Store::Weights,
            _ => Store::Buffers,
        };
        let slice = arenas.get_mut(&store).expect("arena").push(len)?;
        places.insert(
            name,
            Place {
                store,
                offset: slice.offset,
                len,
            },
        );
    }
    for q in infos {
        let scale = arenas.get_mut(&Store::Scales).expect("arena").push(1)?;
        places.insert(
            format!("{}.x_max", q.prefix),
            Place {
                store: Store::Scales,
                offset: scale.offset,
                len: 1,
            },
        );
        let logits = arenas
            .get_mut(&Store::Gates)
            .expect("arena")
            .push(4 + q.prune_channels)?;
        for (k, g) in ["gamma_4", "gamma_8", "gamma_16", "gamma_32"]
            .iter()
            .enumerate()
        {
            places.insert(
                format!("{}.{g}", q.prefix),
                Place {
                    store: Store::Gates,
                    offset: logits.offset + k,
                    len: 1,
                },
            );
        }
        if q.prune_channels > 0 {
            places.insert(
                format!("{}.gamma_2", q.prefix),
                Place {
                    store: Store::Gates,
                    offset: logits.offset + 4,
                    len: q.prune_channels,
                },
            );
        }
        let lo = params[&format!("{}.x_min", q.prefix)][0];
        x_min.insert(q.prefix.clone(), lo);
        let hi = params[&format!("{}.x_max", q.prefix)][0];
        if !(hi.is_finite() && hi > 0.0) {
            return Err(Error::InvalidRange {
                op: "Model::new (range not initialised?)",
                x_max: hi,
            });
        }
    }
    let mut stores = BTreeMap::new();
    for (store, arena) in arenas {
        stores.insert(store, arena.build(gpu, &format!("{store:?} group"))?);
    }
    for (name, place) in &places {
        stores[&place.store].write(
            gpu,
            ParamSlice {
                offset: place.offset,
                len: place.len,
            },
            &params[name],
        )?;
    }
    Ok((stores, places, x_min))
}
