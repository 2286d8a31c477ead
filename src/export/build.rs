//! [`export`]: a model's parameters → [`ExportedModel`] at the learned bit widths.

use super::format::{
    weight_dtype, ActQuant, AddManifest, Codes, ExportError, ExportedLayer, ExportedModel,
    LayerManifest, Manifest, PoolManifest, Pruning, WeightQuant, WeightedManifest, FORMAT_NAME,
    FORMAT_VERSION,
};
use super::pack;
use crate::nn::{Arch, LayerKind, LayerSpec};
use crate::quant::{graph_relative_bops, QuantizerState};
use crate::spec::bn::{fold_bias, fold_weight, BnParams};
use crate::spec::quant;
use crate::spec::Activation;
use crate::spec::Params;
use std::collections::{BTreeMap, BTreeSet};

/// What to do with pruned channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PruneMode {
    /// Remove a pruned channel only where that is exact; keep it (zero weights, bias only)
    /// where its non-zero constant output feeds a zero-padded convolution.
    #[default]
    Exact,
    /// Remove every pruned channel, folding its constant into the next layer's bias even
    /// where padding makes that inexact at the borders (recorded as `removal_exact: false`).
    All,
}

/// Options of [`export`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportOptions {
    /// Pruned-channel handling.
    pub prune: PruneMode,
    /// Free text added to the manifest description (e.g. the checkpoint it came from).
    pub note: String,
    /// The parameters are a fixed-gate fine-tuned model (spec §7.4; its architecture has no
    /// BN, [`crate::spec::fixed::fixed_gate_arch`]): every quantizer rounds directly at its
    /// test-time width ([`quant::fixed_quantize`]), so the codes are `rne(clip(w)/s_b)` rather
    /// than the stage integers of the residual decomposition.
    pub fixed_gate: bool,
}

/// One quantizer read from the parameters, with test-time gates.
struct QuantRead {
    x_max: f32,
    signed: bool,
    chain: [f32; 4],
    prune: Vec<f32>,
    bits: u32,
    stages: usize,
}

fn read_quantizer(params: &Params, prefix: &str, model: &str) -> Result<QuantRead, ExportError> {
    let get = |leaf: &str| -> Result<&Vec<f32>, ExportError> {
        params
            .get(&format!("{prefix}.{leaf}"))
            .ok_or_else(|| ExportError::Params {
                model: model.to_string(),
                msg: format!("missing {prefix}.{leaf}"),
            })
    };
    let x_max = get("x_max")?[0];
    if !(x_max.is_finite() && x_max > 0.0) {
        return Err(ExportError::Params {
            model: model.to_string(),
            msg: format!("{prefix}.x_max is {x_max}; a range must be positive and finite"),
        });
    }
    let signed = get("x_min")?[0] < 0.0;
    let chain = ["gamma_4", "gamma_8", "gamma_16", "gamma_32"]
        .map(|g| get(g).map(|v| v[0]))
        .into_iter()
        .collect::<Result<Vec<f32>, _>>()?;
    let prune_logits = params
        .get(&format!("{prefix}.gamma_2"))
        .cloned()
        .unwrap_or_default();
    // Test-time gates: the crate's deterministic gate rule (spec §2.4) with the ≤ −2 break.
    let g = quant::gates(
        [chain[0], chain[1], chain[2], chain[3]],
        &prune_logits,
        false,
        |_| 0.5,
    );
    let stages = quant::evaluated_stages(g.chain);
    Ok(QuantRead {
        x_max,
        signed,
        chain: g.chain,
        prune: g.prune,
        bits: quant::STAGE_BITS[stages - 1],
        stages,
    })
}

/// Everything about one weighted layer before channel selection.
struct Prepared<'a> {
    spec: &'a LayerSpec,
    wq: QuantRead,
    act: Option<QuantRead>,
    /// Per element: integer code (≤ 16 bits) — or 0 at 32 bits.
    codes: Vec<i64>,
    /// Per element: the fake-quantized value the float evaluation multiplies (z2 not applied).
    fq: Vec<f32>,
    /// BN-folded bias (f64 so that folds accumulate without extra rounding).
    bias: Vec<f64>,
    codes_clamped: usize,
}

fn param<'a>(
    params: &'a Params,
    name: &str,
    len: usize,
    model: &str,
) -> Result<&'a [f32], ExportError> {
    match params.get(name) {
        Some(v) if v.len() == len => Ok(v),
        Some(v) => Err(ExportError::Params {
            model: model.to_string(),
            msg: format!("{name} has {} elements, expected {len}", v.len()),
        }),
        None => Err(ExportError::Params {
            model: model.to_string(),
            msg: format!("missing {name}"),
        }),
    }
}

fn prepare<'a>(
    spec: &'a LayerSpec,
    params: &Params,
    model: &str,
    fixed_gate: bool,
) -> Result<Prepared<'a>, ExportError> {
    let name = &spec.name;
    let c_out = spec.out_channels();
    let numel: usize = spec.weight_shape().iter().product();
    let raw = param(params, &format!("{name}.weight"), numel, model)?;
    let (w, bias): (Vec<f32>, Vec<f32>) = if spec.batch_norm {
        let get = |t: &str| param(params, &format!("{name}.{t}"), c_out, model);
        let (gamma, beta, mean, var) = (
            get("gamma")?,
            get("beta")?,
            get("running_mean")?,
            get("running_var")?,
        );
        let p = BnParams {
            gamma,
            beta,
            running_mean: mean,
            running_var: var,
        };
        (fold_weight(raw, gamma, var), fold_bias(&p))
    } else if spec.bias {
        (
            raw.to_vec(),
            param(params, &format!("{name}.bias"), c_out, model)?.to_vec(),
        )
    } else {
        (raw.to_vec(), vec![0.0; c_out])
    };
    let wq = read_quantizer(params, &format!("{name}.weight_quantizer.quantizer"), model)?;
    let act = if spec.act_quant {
        Some(read_quantizer(
            params,
            &format!("{name}.activation_quantizer.quantizer"),
            model,
        )?)
    } else {
        None
    };
    let (lo, hi) = if wq.bits < 32 {
        pack::code_range(wq.bits, wq.signed)
    } else {
        (0, 0)
    };
    let mut codes = Vec::with_capacity(numel);
    let mut fq = Vec::with_capacity(numel);
    let mut codes_clamped = 0;
    let step = quant::scales(wq.x_max, wq.signed)[wq.stages - 1];
    for &v in &w {
        let (value, n) = if fixed_gate {
            // Direct rounding, as the fine-tuned model computes (no integer clamp, spec §1.7).
            let n = (quant::clip(v, wq.x_max, wq.signed).0 / step).round_ties_even();
            (step * n, n as i64)
        } else {
            let d = quant::decompose(v, wq.x_max, wq.signed, wq.chain);
            // The code from the stage integers, never a re-rounding of y / s_b (spec §1.7).
            let n = pack::code_from_stages(&d.k[..d.stages]);
            (quant::combine(d.parts, wq.chain), n)
        };
        fq.push(value);
        if wq.bits < 32 {
            if n < lo || n > hi {
                codes_clamped += 1;
            }
            codes.push(n.clamp(lo, hi));
        } else {
            codes.push(0);
        }
    }
    Ok(Prepared {
        spec,
        wq,
        act,
        codes,
        fq,
        bias: bias.into_iter().map(f64::from).collect(),
        codes_clamped,
    })
}

/// The export format and the integer engine cover every layer the builder makes —
/// convolutions (square kernel, stride and padding, any groups, depthwise included), linear
/// layers, max and average pooling, global average pooling, flatten and residual adds — with
/// ReLU, ReLU6 (conv/linear) or no activation; anything else is refused by name.
fn check_exportable(arch: &Arch) -> Result<(), ExportError> {
    for l in &arch.layers {
        let activation_ok = match l.activation {
            Activation::None | Activation::Relu => true,
            Activation::Relu6 => l.is_weighted(),
        };
        if !activation_ok {
            return Err(ExportError::Activation {
                model: arch.name.clone(),
                layer: l.name.clone(),
                activation: l.activation,
            });
        }
        let supported = match l.kind {
            LayerKind::Conv {
                kernel,
                stride,
                pad,
                ..
            } => kernel[0] == kernel[1] && stride[0] == stride[1] && pad[0] == pad[1],
            _ => true,
        };
        if !supported {
            return Err(ExportError::Params {
                model: arch.name.clone(),
                msg: format!(
                    "layer {} ({:?}) is not supported by the export yet: convolutions need a \
                     square kernel, stride and padding",
                    l.name, l.kind
                ),
            });
        }
    }
    Ok(())
}

/// Channel groups of a layer (1 unless a grouped convolution).
fn groups_of(l: &LayerSpec) -> usize {
    match l.kind {
        LayerKind::Conv { groups, .. } => groups,
        _ => 1,
    }
}

/// The manifest's name of a layer kind, and its pooling window.
fn kind_name(kind: &LayerKind) -> (&'static str, Option<PoolManifest>) {
    let window = |kernel, stride, pad| {
        Some(PoolManifest {
            kernel,
            stride,
            pad,
        })
    };
    match *kind {
        LayerKind::Conv { .. } => ("conv", None),
        LayerKind::Linear { .. } => ("linear", None),
        LayerKind::GlobalAvgPool => ("global_avg_pool", None),
        LayerKind::Add => ("add", None),
        LayerKind::Flatten => ("flatten", None),
        LayerKind::MaxPool {
            kernel: 2,
            stride: 2,
            pad: 0,
        } => ("maxpool2x2", None),
        LayerKind::MaxPool {
            kernel,
            stride,
            pad,
        } => ("maxpool", window(kernel, stride, pad)),
        LayerKind::AvgPool {
            kernel,
            stride,
            pad,
        } => ("avgpool", window(kernel, stride, pad)),
    }
}

/// Whether a layer passes a constant channel on as a constant channel (so that a pruned
/// channel's constant can be folded past it): max-pooling (padding never wins), unpadded
/// average pooling, global pooling and flatten.
fn keeps_constants(kind: &LayerKind) -> bool {
    matches!(
        kind,
        LayerKind::MaxPool { .. }
            | LayerKind::AvgPool { pad: 0, .. }
            | LayerKind::GlobalAvgPool
            | LayerKind::Flatten
    )
}

/// The weighted layer into whose bias the pruned channels of layer `i` can fold: the only
/// reader of its output, reached through channel-preserving layers (max-pool, global average
/// pooling) that each have a single reader too. `None` where the output feeds a residual add, a
/// grouped convolution or more than one layer: then every channel stays, so that shapes agree.
/// (A grouped layer's own output channels stay as well, see [`export`].)
fn fold_target(arch: &Arch, readers: &[Vec<usize>], i: usize) -> Option<usize> {
    let mut v = i + 1;
    loop {
        let [r] = readers[v][..] else { return None };
        match arch.layers[r].kind {
            LayerKind::Conv { groups: 1, .. } | LayerKind::Linear { .. } => return Some(r),
            ref k if keeps_constants(k) => v = r + 1,
            _ => return None,
        }
    }
}

/// The weighted layer whose (kept) output channels value `v` carries, through pooling and
/// flatten; `None` for the network input and residual sums (all channels).
fn channel_source(arch: &Arch, mut v: usize) -> Option<usize> {
    while v > 0 {
        let l = &arch.layers[v - 1];
        match l.kind {
            LayerKind::Conv { .. } | LayerKind::Linear { .. } => return Some(v - 1),
            LayerKind::Add => return None,
            _ => v = l.inputs[0],
        }
    }
    None
}

/// The activation quantizer's manifest entry.
fn act_manifest(a: &QuantRead) -> ActQuant {
    ActQuant {
        bits: a.bits,
        signed: a.signed,
        x_max: a.x_max,
        scale: if a.bits == 32 {
            1.0
        } else {
            quant::scales(a.x_max, a.signed)[a.stages - 1]
        },
        clip: quant::CLIP_SHRINK * a.x_max,
    }
}

/// Exports `params` (official `state_dict` names, e.g. from a checkpoint) of `arch` with
/// test-time gates: per conv/linear layer the weight codes at the learned bit width, the
/// BN-folded bias, the kept output channels, and in the manifest every quantizer's bits,
/// signedness, range and step (see the [module docs](super)).
pub fn export(
    arch: &Arch,
    params: &Params,
    options: &ExportOptions,
) -> Result<ExportedModel, ExportError> {
    let model = arch.name.as_str();
    check_exportable(arch)?;
    let readers = arch.readers();
    // Per layer: the prepared weighted layer, by layer index.
    let mut prep: Vec<Option<Prepared>> = arch
        .layers
        .iter()
        .map(|l| {
            l.is_weighted()
                .then(|| prepare(l, params, model, options.fixed_gate))
                .transpose()
        })
        .collect::<Result<_, _>>()?;
    let last = arch.layers.len() - 1;

    // Channel decisions, layer by layer.
    let mut kept: Vec<Vec<usize>> = vec![Vec::new(); arch.layers.len()];
    let mut pruning: Vec<Pruning> = vec![Pruning::default(); arch.layers.len()];
    // Per layer j: (input channel removed, its constant, channels of the layer it came from)
    // to fold into j's bias.
    let mut folds: Vec<Vec<(usize, f64, usize)>> = vec![Vec::new(); arch.layers.len()];
    for i in 0..arch.layers.len() {
        let Some(p) = &prep[i] else { continue };
        let c_out = p.spec.out_channels();
        let z2 = &p.wq.prune;
        pruning[i].removal_exact = true;
        if !p.spec.prune || z2.is_empty() || i == last {
            kept[i] = (0..c_out).collect();
            continue;
        }
        // A grouped layer keeps whole groups of output channels (ONNX's grouped `Conv` needs
        // them), so its pruned channels stay as constants too.
        let target = match groups_of(p.spec) {
            1 => fold_target(arch, &readers, i),
            _ => None,
        };
        let padded_next = target.is_some_and(
            |t| matches!(arch.layers[t].kind, LayerKind::Conv { pad, .. } if pad != [0, 0]),
        );
        let act = p.act.as_ref();
        let pr = &mut pruning[i];
        let mut live: BTreeSet<usize> = BTreeSet::new();
        for (c, &z) in z2.iter().enumerate() {
            if z > 0.0 {
                live.insert(c);
                continue;
            }
            pr.pruned.push(c);
            let Some(t) = target else {
                pr.kept_for_exactness.push(c);
                continue;
            };
            // The constant the pruned channel emits: quantize(act(bias)) (spec §5.2, P12).
            let activated = p.spec.activation.apply(p.bias[c] as f32);
            let constant = match act {
                Some(a) if options.fixed_gate => {
                    quant::fixed_quantize(&[activated], a.x_max, a.signed, a.bits, None)[0]
                }
                Some(a) => quant::quantize(&[activated], a.x_max, a.signed, a.chain, None)[0],
                None => activated,
            };
            let exact = constant == 0.0 || !padded_next;
            if exact || options.prune == PruneMode::All {
                pr.removed.push(c);
                if constant != 0.0 {
                    pr.folded_into_next.push(c);
                    folds[t].push((c, f64::from(constant), c_out));
                }
                pr.removal_exact &= exact;
            } else {
                pr.kept_for_exactness.push(c);
            }
        }
        let mut k: BTreeSet<usize> = live;
        k.extend(pr.kept_for_exactness.iter().copied());
        if k.is_empty() {
            // Every channel removed: keep the first as a constant channel so the next layer
            // keeps a (constant) input.
            let c = pr.removed.remove(0);
            pr.folded_into_next.retain(|&x| x != c);
            if let Some(t) = target {
                folds[t].retain(|&(x, _, _)| x != c);
            }
            pr.kept_for_exactness.push(c);
            k.insert(c);
        }
        kept[i] = k.into_iter().collect();
    }

    // Fold removed channels' constants into the reading layer's bias (before row selection).
    for (j, fold) in folds.iter().enumerate() {
        let Some(p) = prep[j].as_mut() else { continue };
        let spec = p.spec;
        let row: usize = spec.fan_in();
        for o in 0..spec.out_channels() {
            if !p.wq.prune.is_empty() && p.wq.prune[o] == 0.0 {
                continue; // Zero weights: nothing to fold.
            }
            let mut add = 0.0f64;
            for &(c, v, c_in_prev) in fold {
                let per_channel = row / c_in_prev;
                let base = o * row + c * per_channel;
                add += p.fq[base..base + per_channel]
                    .iter()
                    .map(|&w| f64::from(w))
                    .sum::<f64>()
                    * v;
            }
            p.bias[o] += add;
        }
    }

    // Tensors and manifest.
    let mut layers = Vec::new();
    let mut manifests = Vec::with_capacity(arch.layers.len());
    for (i, spec) in arch.layers.iter().enumerate() {
        let (kind, pool) = kind_name(&spec.kind);
        let mut manifest = LayerManifest {
            name: spec.name.to_string(),
            kind: kind.to_string(),
            pool,
            inputs: spec.inputs.clone(),
            input: spec.input,
            output: spec.output,
            weighted: None,
            add: None,
        };
        if spec.kind == LayerKind::Add {
            let prefix = spec.activation_quantizer();
            let a = read_quantizer(params, &prefix, model)?;
            manifest.add = Some(AddManifest {
                relu: spec.activation == Activation::Relu,
                activation: act_manifest(&a),
            });
        }
        let Some(p) = &prep[i] else {
            manifests.push(manifest);
            continue;
        };
        let c_out = spec.out_channels();
        let row = spec.fan_in();
        // Input columns kept: those of the kept channels of the layer the input comes from
        // (each spanning `per_channel` columns of the row), else all.
        let source = match groups_of(spec) {
            1 => channel_source(arch, spec.inputs[0]),
            _ => None, // A grouped layer's input keeps every channel (see `fold_target`).
        };
        let (in_cols, in_kept): (Vec<usize>, usize) = match source {
            None => ((0..row).collect(), spec.weight_shape()[1]),
            Some(src) => {
                let per_channel = row / arch.layers[src].out_channels();
                let cols = kept[src]
                    .iter()
                    .flat_map(|&c| c * per_channel..(c + 1) * per_channel)
                    .collect();
                let columns_per_channel = match spec.kind {
                    LayerKind::Linear { .. } => per_channel,
                    _ => 1,
                };
                (cols, kept[src].len() * columns_per_channel)
            }
        };
        let z2 = &p.wq.prune;
        let rows = &kept[i];
        let zero_row = |o: usize| !z2.is_empty() && z2[o] == 0.0;
        let weight = if p.wq.bits == 32 {
            let mut v = Vec::with_capacity(rows.len() * in_cols.len());
            for &o in rows {
                for &c in &in_cols {
                    v.push(if zero_row(o) { 0.0 } else { p.fq[o * row + c] });
                }
            }
            Codes::Float(v)
        } else {
            let mut v = Vec::with_capacity(rows.len() * in_cols.len());
            for &o in rows {
                for &c in &in_cols {
                    v.push(if zero_row(o) {
                        0
                    } else {
                        p.codes[o * row + c] as i32
                    });
                }
            }
            Codes::Int(v)
        };
        let shape = match spec.kind {
            LayerKind::Conv { kernel, .. } => vec![rows.len(), in_kept, kernel[0], kernel[1]],
            _ => vec![rows.len(), in_kept],
        };
        let scale = if p.wq.bits == 32 {
            1.0
        } else {
            quant::scales(p.wq.x_max, p.wq.signed)[p.wq.stages - 1]
        };
        let (kernel, padding, stride) = match spec.kind {
            LayerKind::Conv {
                kernel,
                pad,
                stride,
                ..
            } => (kernel[0], pad[0], stride[0]),
            _ => (1, 0, 1),
        };
        manifest.weighted = Some(WeightedManifest {
            kernel,
            padding,
            stride,
            groups: groups_of(spec),
            out_channels: c_out,
            kept_out: rows.len(),
            in_kept,
            weight: WeightQuant {
                bits: p.wq.bits,
                signed: p.wq.signed,
                x_max: p.wq.x_max,
                scale,
                dtype: weight_dtype(p.wq.bits, p.wq.signed).to_string(),
                shape,
                codes_clamped: p.codes_clamped,
            },
            batch_norm_folded: spec.batch_norm,
            relu: spec.activation != Activation::None,
            relu6: spec.activation == Activation::Relu6,
            activation: p.act.as_ref().map(act_manifest),
            pruning: pruning[i].clone(),
        });
        manifests.push(manifest);
        layers.push(ExportedLayer {
            name: spec.name.to_string(),
            weight,
            bias: rows.iter().map(|&o| p.bias[o] as f32).collect(),
            kept: rows.iter().map(|&o| o as u32).collect(),
        });
    }
    let mut description = format!(
        "{model} exported by bayesian-bits {}: per conv/linear layer the weight codes at the learned \
         bit width (value = scale * code; 2/4-bit codes packed LSB-first, 32-bit layers as f32), the bias \
         with batch norm folded in (f32), and the kept output-channel indices; activation quantizers \
         (unsigned after a ReLU, signed otherwise) with the listed bits and range; layers read the \
         values listed in `inputs` (0 is the network input, i + 1 the output of layer i)",
        env!("CARGO_PKG_VERSION")
    );
    if !options.note.is_empty() {
        description.push_str("; ");
        description.push_str(&options.note);
    }
    let mut exported = ExportedModel {
        manifest: Manifest {
            format: FORMAT_NAME.to_string(),
            format_version: FORMAT_VERSION,
            description,
            model: model.to_string(),
            input: arch.input,
            classes: arch.classes,
            relative_bops_percent: relative_bops_of(arch, params)?,
            fixed_gate: options.fixed_gate,
            layers: manifests,
            checksums: Default::default(),
        },
        layers,
    };
    exported.manifest.checksums = exported.checksums()?;
    Ok(exported)
}

/// Relative BOPs of the test-time network (spec §6, counted on the graph).
fn relative_bops_of(arch: &Arch, params: &Params) -> Result<f64, ExportError> {
    let mut states = BTreeMap::new();
    for q in arch.quantizers() {
        let get = |leaf: &str| params.get(&format!("{}.{leaf}", q.prefix));
        let chain = ["gamma_4", "gamma_8", "gamma_16", "gamma_32"]
            .map(|g| get(g).and_then(|v| v.first().copied()).unwrap_or(0.0));
        let state = QuantizerState {
            x_max: get("x_max").and_then(|v| v.first().copied()).unwrap_or(1.0),
            chain_logits: chain,
            prune_logits: get("gamma_2").cloned().unwrap_or_default(),
        };
        states.insert(q.prefix, state);
    }
    graph_relative_bops(arch, &states).map_err(|e| ExportError::Params {
        model: arch.name.clone(),
        msg: e.to_string(),
    })
}
