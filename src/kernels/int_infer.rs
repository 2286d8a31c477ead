//! Launchers of `shaders/int_infer.wgsl`: integer inference of an exported model
//! ([`crate::export`]), bit for bit equal to [`crate::export::infer_cpu`].

use crate::export::infer::{IntPlan, LayerPlan, OutMode, PoolGeom, Repr, Step, FLUSH_BELOW};
use crate::gpu::{Binding, Encoder, Gpu, PipelineKey, Shader, Tensor};
use crate::{Error, Result};

/// The integer-inference module.
pub static SHADER: Shader = Shader {
    name: "int_infer",
    source: include_str!("../../shaders/int_infer.wgsl"),
    requires: wgpu::Features::empty(),
    trusted: false,
};

/// Invocations per workgroup (fixed in the shader).
pub const WORKGROUP: u32 = 64;

macro_rules! key {
    ($name:ident, $entry:literal, $doc:literal) => {
        #[doc = $doc]
        pub static $name: PipelineKey = PipelineKey {
            shader: &SHADER,
            entry: $entry,
            constants: &[],
        };
    };
}

key!(
    INT_TO_PACKED,
    "int_to_packed",
    "Integer path, packed 8-bit output codes."
);
key!(INT_TO_F32, "int_to_f32", "Integer path, f32 output.");
key!(
    FLOAT_PACKED_TO_PACKED,
    "float_packed_to_packed",
    "Float path, packed input, packed output."
);
key!(
    FLOAT_PACKED_TO_F32,
    "float_packed_to_f32",
    "Float path, packed input, f32 output."
);
key!(
    FLOAT_F32_TO_PACKED,
    "float_f32_to_packed",
    "Float path, f32 input, packed output."
);
key!(
    FLOAT_F32_TO_F32,
    "float_f32_to_f32",
    "Float path, f32 input and output."
);
key!(POOL_PACKED, "pool_packed", "Max-pooling of packed codes.");
key!(POOL_F32, "pool_f32", "Max-pooling of f32 values.");
key!(ADD, "add", "Residual add of packed or f32 values.");
key!(
    AVG_POOL,
    "avg_pool",
    "Average pooling (as window sums) of packed or f32 values."
);

/// Every pipeline of this module.
pub static PIPELINES: [&PipelineKey; 10] = [
    &INT_TO_PACKED,
    &INT_TO_F32,
    &FLOAT_PACKED_TO_PACKED,
    &FLOAT_PACKED_TO_F32,
    &FLOAT_F32_TO_PACKED,
    &FLOAT_F32_TO_F32,
    &POOL_PACKED,
    &POOL_F32,
    &ADD,
    &AVG_POOL,
];

/// `struct Params` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    h: u32,
    w: u32,
    cin4: u32,
    k: u32,
    pad: u32,
    oh: u32,
    ow: u32,
    cout: u32,
    cout4: u32,
    row_words: u32,
    wbits: u32,
    out_mode: u32,
    max_code: i32,
    total: u32,
    stride: u32,
    m: f32,
    hi: f32,
    flush_below: f32,
    lo: f32,
    min_code: i32,
    m2: f32,
    a_repr: u32,
    b_repr: u32,
    y_repr: u32,
    win4: u32,
    grouped: u32,
    cap: f32,
    kw: u32,
    _pad: [u32; 3],
}

impl Params {
    /// The output fields of `out`.
    fn with_out(self, out: OutMode) -> Self {
        let (out_mode, min_code, max_code, cap, lo, hi) = match out {
            OutMode::Code { min, max, cap } => (0, min, max, cap, 0.0, 0.0),
            OutMode::Real { lo, hi } => (1, 0, 0, 0.0, lo, hi),
            OutMode::Logits => (2, 0, 0, 0.0, 0.0, 0.0),
        };
        Self {
            out_mode,
            min_code,
            max_code,
            cap,
            lo,
            hi,
            flush_below: FLUSH_BELOW,
            ..self
        }
    }
}

/// The uniform fields of a pooling window over `c4` channel groups.
fn pool_params(g: &PoolGeom, c4: usize) -> Params {
    Params {
        h: g.h as u32,
        w: g.w as u32,
        k: g.kh as u32,
        kw: g.kw as u32,
        stride: g.stride as u32,
        pad: g.pad as u32,
        oh: g.oh as u32,
        ow: g.ow as u32,
        cin4: c4 as u32,
        ..Params::default()
    }
}

/// Words per 4 channels of a value stored as `repr`.
fn words(repr: Repr) -> usize {
    match repr {
        Repr::Packed8 | Repr::PackedI8 => 1,
        Repr::F32 => 4,
    }
}

/// The shader's code for a storage (`PACKED_U8`, `F32_WORDS`, `PACKED_I8`).
fn repr_code(repr: Repr) -> u32 {
    match repr {
        Repr::Packed8 => 0,
        Repr::F32 => 1,
        Repr::PackedI8 => 2,
    }
}

/// Packs a layer's integer weight rows at `wbits` bits, each row starting on a word.
fn pack_rows(l: &LayerPlan) -> (Vec<u32>, usize) {
    let row = l.row_len();
    let b = l.wbits as usize;
    let row_words = (row * b).div_ceil(32);
    let mut words = vec![0u32; l.cout * row_words];
    let mask = (1u32 << b) - 1;
    for o in 0..l.cout {
        for i in 0..row {
            let bit = i * b;
            let code = l.weights_int[o * row + i] as u32 & mask;
            words[o * row_words + bit / 32] |= code << (bit % 32);
        }
    }
    (words, row_words)
}

/// One dispatch of the plan: its pipeline, its uniform fields without the batch, the values it
/// reads (binding, value index), its own tensors, and where it writes its output value.
#[derive(Debug)]
struct GpuStep {
    key: &'static PipelineKey,
    params: Params,
    /// Invocations per image.
    per_image: usize,
    reads: Vec<(u32, usize)>,
    tensors: Vec<(u32, Tensor)>,
    output_binding: u32,
    /// The value it writes.
    output: usize,
}

/// An exported model on the GPU for batches of up to `max_batch` images.
#[derive(Debug)]
pub struct IntEngine {
    plan_input: [usize; 3],
    classes: usize,
    max_batch: usize,
    /// Every value of the plan (0: the input) and its words per image.
    values: Vec<(Tensor, usize)>,
    steps: Vec<GpuStep>,
    plan: IntPlan,
}

impl IntEngine {
    /// Uploads the weights of `plan` and allocates activations for `max_batch` images.
    pub fn new(gpu: &Gpu, plan: &IntPlan, max_batch: usize) -> Result<Self> {
        const OP: &str = "IntEngine::new";
        if max_batch == 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: "max_batch must be at least 1".into(),
            });
        }
        let [c, h, w] = plan.input;
        let input_words = h * w * 4 * c.div_ceil(4);
        let mut values = vec![(
            gpu.zeros("int input", &[max_batch * input_words])?,
            input_words,
        )];
        let mut steps = Vec::new();
        for step in &plan.steps {
            let (gpu_step, out_words) = match step {
                Step::MaxPool {
                    source,
                    geom,
                    c4,
                    repr,
                } => {
                    let packed = repr.is_packed();
                    let s = GpuStep {
                        key: if packed { &POOL_PACKED } else { &POOL_F32 },
                        params: Params {
                            a_repr: repr_code(*repr),
                            ..pool_params(geom, *c4)
                        },
                        per_image: geom.oh * geom.ow * c4,
                        reads: vec![(if packed { 1 } else { 2 }, *source)],
                        tensors: Vec::new(),
                        output_binding: if packed { 7 } else { 8 },
                        output: values.len(),
                    };
                    (s, geom.oh * geom.ow * c4 * words(*repr))
                }
                Step::AvgPool {
                    source,
                    geom,
                    c4,
                    repr,
                } => {
                    let s = GpuStep {
                        key: &AVG_POOL,
                        params: Params {
                            a_repr: repr_code(*repr),
                            y_repr: repr_code(Repr::F32),
                            ..pool_params(geom, *c4)
                        },
                        per_image: geom.oh * geom.ow * c4,
                        reads: vec![(9, *source)],
                        tensors: Vec::new(),
                        output_binding: 11,
                        output: values.len(),
                    };
                    (s, geom.oh * geom.ow * c4 * words(Repr::F32))
                }
                Step::Flatten { source } => {
                    // The flattened value is its input: no dispatch, the same buffer.
                    values.push(values[*source].clone());
                    continue;
                }
                Step::Add(a) => {
                    let s = GpuStep {
                        key: &ADD,
                        params: Params {
                            m: a.m[0],
                            m2: a.m[1],
                            a_repr: repr_code(a.inputs[0]),
                            b_repr: repr_code(a.inputs[1]),
                            y_repr: repr_code(a.output),
                            ..Params::default()
                        }
                        .with_out(a.out),
                        per_image: a.pixels * a.c4,
                        reads: vec![(9, a.sources[0]), (10, a.sources[1])],
                        tensors: Vec::new(),
                        output_binding: 11,
                        output: values.len(),
                    };
                    (s, a.pixels * a.c4 * words(a.output))
                }
                Step::Layer(l) => {
                    let mut tensors = Vec::new();
                    let row_words = if l.int_path {
                        let (packed, row_words) = pack_rows(l);
                        tensors.push((3, gpu.upload("int weights", &[packed.len()], &packed)?));
                        tensors.push((6, gpu.upload("int wsum", &[l.wsum.len()], &l.wsum)?));
                        row_words
                    } else {
                        let w = &l.weights_f32;
                        tensors.push((4, gpu.upload("float weights", &[w.len()], w)?));
                        0
                    };
                    tensors.push((5, gpu.upload("int bias", &[l.bias.len()], &l.bias)?));
                    // Dense layers bind one unused word: every layer entry point reads the
                    // binding (in its grouped branch).
                    let word0 = match l.row_word0.is_empty() {
                        true => vec![0u32],
                        false => l.row_word0.clone(),
                    };
                    tensors.push((12, gpu.upload("int row words", &[word0.len()], &word0)?));
                    let key = match (l.int_path, l.input.is_packed(), l.output.is_packed()) {
                        (true, _, true) => &INT_TO_PACKED,
                        (true, _, false) => &INT_TO_F32,
                        (false, true, true) => &FLOAT_PACKED_TO_PACKED,
                        (false, true, false) => &FLOAT_PACKED_TO_F32,
                        (false, false, true) => &FLOAT_F32_TO_PACKED,
                        (false, false, false) => &FLOAT_F32_TO_F32,
                    };
                    let cout4 = l.cout4();
                    let s = GpuStep {
                        key,
                        params: Params {
                            h: l.h as u32,
                            w: l.w as u32,
                            cin4: l.cin4 as u32,
                            win4: l.win4 as u32,
                            grouped: u32::from(!l.row_word0.is_empty()),
                            k: l.k as u32,
                            pad: l.pad as u32,
                            stride: l.stride as u32,
                            oh: l.oh as u32,
                            ow: l.ow as u32,
                            cout: l.cout as u32,
                            cout4: cout4 as u32,
                            row_words: row_words as u32,
                            wbits: l.wbits,
                            m: l.m,
                            a_repr: repr_code(l.input),
                            y_repr: repr_code(l.output),
                            ..Params::default()
                        }
                        .with_out(l.out),
                        per_image: l.oh * l.ow * cout4,
                        reads: vec![(if l.input.is_packed() { 1 } else { 2 }, l.source)],
                        tensors,
                        output_binding: if l.output.is_packed() { 7 } else { 8 },
                        output: values.len(),
                    };
                    (s, l.oh * l.ow * cout4 * words(l.output))
                }
            };
            values.push((gpu.zeros("int value", &[max_batch * out_words])?, out_words));
            steps.push(gpu_step);
        }
        if !matches!(plan.steps.last(), Some(Step::Layer(_))) {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: "the plan does not end with a layer".into(),
            });
        }
        Ok(Self {
            plan_input: plan.input,
            classes: plan.classes,
            max_batch,
            values,
            steps,
            plan: plan.clone(),
        })
    }

    /// Largest batch.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Records the inference of `n` images already in the input buffer (see [`Self::infer`]).
    fn record(&self, gpu: &Gpu, encoder: &mut Encoder, n: usize) -> Result<()> {
        const OP: &str = "IntEngine::infer";
        let batch_of = |v: usize| -> Result<Binding> {
            let (t, per) = &self.values[v];
            Binding::range(gpu, t.buffer(), 0, n * per)
        };
        for s in &self.steps {
            let total = n * s.per_image;
            let params = Params {
                n: n as u32,
                total: total as u32,
                ..s.params
            };
            let uniform = gpu.constant_uniform(&params);
            let mut bindings = vec![(0, Binding::whole(&uniform))];
            for &(b, v) in &s.reads {
                bindings.push((b, batch_of(v)?));
            }
            bindings.extend(s.tensors.iter().map(|(b, t)| (*b, t.binding())));
            bindings.push((s.output_binding, batch_of(s.output)?));
            let grid = gpu.grid(OP, (total as u32).div_ceil(WORKGROUP))?;
            gpu.dispatch(encoder, s.key, &bindings, grid)?;
        }
        Ok(())
    }

    /// Logits `[n, classes]` of images `[n, C, H, W]` (`n ≤ max_batch`). **Blocking.**
    pub fn infer(&self, gpu: &Gpu, images: &[f32], n: usize) -> Result<Vec<f32>> {
        const OP: &str = "IntEngine::infer";
        let [c, h, w] = self.plan_input;
        if n == 0 || n > self.max_batch || images.len() != n * c * h * w {
            return Err(Error::Shape {
                op: OP,
                expected: format!("1..={} images of {c}×{h}×{w}", self.max_batch),
                actual: format!("{} values for {n} images", images.len()),
            });
        }
        let x = self.plan.input_nhwc(images, n);
        gpu.queue()
            .write_buffer(self.values[0].0.buffer(), 0, bytemuck::cast_slice(&x));
        let mut encoder = gpu.encoder("int inference");
        self.record(gpu, &mut encoder, n)?;
        gpu.submit(encoder);
        let (out, per) = self.values.last().expect("the input value at least");
        let per = *per;
        let view = out.slice(gpu, 0, &[n * per])?;
        let y = gpu.read(&view)?;
        Ok((0..n)
            .flat_map(|b| y[b * per..b * per + self.classes].to_vec())
            .collect())
    }
}
