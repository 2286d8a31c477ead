//! Launchers of `shaders/int_infer.wgsl`: integer inference of an exported model
//! ([`crate::export`]), bit for bit equal to [`crate::export::infer_cpu`].

use crate::export::infer::{IntPlan, LayerPlan, OutMode, Repr, Step, FLUSH_BELOW};
use crate::gpu::{Binding, Encoder, Gpu, PipelineKey, Shader, Tensor};
use crate::{Error, Result};

/// The integer-inference module.
pub static SHADER: Shader = Shader {
    name: "int_infer",
    source: include_str!("../../shaders/int_infer.wgsl"),
    requires: wgpu::Features::empty(),
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
key!(POOL_PACKED, "pool_packed", "2×2 max-pool of packed codes.");
key!(POOL_F32, "pool_f32", "2×2 max-pool of f32 values.");

/// Every pipeline of this module.
pub static PIPELINES: [&PipelineKey; 8] = [
    &INT_TO_PACKED,
    &INT_TO_F32,
    &FLOAT_PACKED_TO_PACKED,
    &FLOAT_PACKED_TO_F32,
    &FLOAT_F32_TO_PACKED,
    &FLOAT_F32_TO_F32,
    &POOL_PACKED,
    &POOL_F32,
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
    max_code: u32,
    total: u32,
    _pad0: u32,
    m: f32,
    hi: f32,
    flush_below: f32,
    _pad1: u32,
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

#[derive(Debug)]
struct GpuLayer {
    key: &'static PipelineKey,
    params: Params,
    weights: Tensor,
    bias: Tensor,
    wsum: Option<Tensor>,
    input: Repr,
    output: Tensor,
    out_words_per_image: usize,
}

#[derive(Debug)]
struct GpuPool {
    key: &'static PipelineKey,
    params: Params,
    output: Tensor,
    repr: Repr,
    out_words_per_image: usize,
}

#[derive(Debug)]
enum GpuStep {
    Layer(GpuLayer),
    Pool(GpuPool),
}

/// An exported model on the GPU for batches of up to `max_batch` images.
#[derive(Debug)]
pub struct IntEngine {
    plan_input: [usize; 3],
    classes: usize,
    max_batch: usize,
    input: Tensor,
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
        let input = gpu.zeros("int input", &[max_batch * h * w * 4 * c.div_ceil(4)])?;
        let mut steps = Vec::new();
        for step in &plan.steps {
            match step {
                Step::Pool { h, w, c4, repr } => {
                    let (oh, ow) = (h / 2, w / 2);
                    let per = oh * ow * c4 * if *repr == Repr::Packed8 { 1 } else { 4 };
                    steps.push(GpuStep::Pool(GpuPool {
                        key: if *repr == Repr::Packed8 {
                            &POOL_PACKED
                        } else {
                            &POOL_F32
                        },
                        params: Params {
                            h: *h as u32,
                            w: *w as u32,
                            cin4: *c4 as u32,
                            oh: oh as u32,
                            ow: ow as u32,
                            ..Params::default()
                        },
                        output: gpu.zeros("int pool output", &[max_batch * per])?,
                        repr: *repr,
                        out_words_per_image: per,
                    }));
                }
                Step::Layer(l) => {
                    let (weights, row_words, wsum) = if l.int_path {
                        let (words, row_words) = pack_rows(l);
                        let wsum = gpu.upload("int wsum", &[l.wsum.len()], &l.wsum)?;
                        (
                            gpu.upload("int weights", &[words.len()], &words)?,
                            row_words,
                            Some(wsum),
                        )
                    } else {
                        (
                            gpu.upload("float weights", &[l.weights_f32.len()], &l.weights_f32)?,
                            0,
                            None,
                        )
                    };
                    let (out_mode, max_code, hi) = match l.out {
                        OutMode::Code { max } => (0, max, 0.0),
                        OutMode::Real { hi } => (1, 0, hi),
                        OutMode::Logits => (2, 0, 0.0),
                    };
                    let key = match (l.int_path, l.input, l.output) {
                        (true, _, Repr::Packed8) => &INT_TO_PACKED,
                        (true, _, Repr::F32) => &INT_TO_F32,
                        (false, Repr::Packed8, Repr::Packed8) => &FLOAT_PACKED_TO_PACKED,
                        (false, Repr::Packed8, Repr::F32) => &FLOAT_PACKED_TO_F32,
                        (false, Repr::F32, Repr::Packed8) => &FLOAT_F32_TO_PACKED,
                        (false, Repr::F32, Repr::F32) => &FLOAT_F32_TO_F32,
                    };
                    let cout4 = l.cout4();
                    let per = l.oh * l.ow * cout4 * if l.output == Repr::Packed8 { 1 } else { 4 };
                    steps.push(GpuStep::Layer(GpuLayer {
                        key,
                        params: Params {
                            h: l.h as u32,
                            w: l.w as u32,
                            cin4: l.cin4 as u32,
                            k: l.k as u32,
                            pad: l.pad as u32,
                            oh: l.oh as u32,
                            ow: l.ow as u32,
                            cout: l.cout as u32,
                            cout4: cout4 as u32,
                            row_words: row_words as u32,
                            wbits: l.wbits,
                            out_mode,
                            max_code,
                            m: l.m,
                            hi,
                            flush_below: FLUSH_BELOW,
                            ..Params::default()
                        },
                        weights,
                        bias: gpu.upload("int bias", &[l.bias.len()], &l.bias)?,
                        wsum,
                        input: l.input,
                        output: gpu.zeros("int layer output", &[max_batch * per])?,
                        out_words_per_image: per,
                    }));
                }
            }
        }
        Ok(Self {
            plan_input: plan.input,
            classes: plan.classes,
            max_batch,
            input,
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
        let mut prev: (&Tensor, usize) = (&self.input, self.input.len() / self.max_batch);
        for step in &self.steps {
            match step {
                GpuStep::Pool(s) => {
                    let total =
                        n * s.out_words_per_image / if s.repr == Repr::Packed8 { 1 } else { 4 };
                    let params = Params {
                        n: n as u32,
                        total: total as u32,
                        ..s.params
                    };
                    let x = Binding::range(gpu, prev.0.buffer(), 0, n * prev.1)?;
                    let y = Binding::range(gpu, s.output.buffer(), 0, n * s.out_words_per_image)?;
                    let uniform = gpu.constant_uniform(&params);
                    let bindings = if s.repr == Repr::Packed8 {
                        [(0, Binding::whole(&uniform)), (1, x), (7, y)]
                    } else {
                        [(0, Binding::whole(&uniform)), (2, x), (8, y)]
                    };
                    gpu.dispatch(
                        encoder,
                        s.key,
                        &bindings,
                        gpu.grid(OP, (total as u32).div_ceil(WORKGROUP))?,
                    )?;
                    prev = (&s.output, s.out_words_per_image);
                }
                GpuStep::Layer(l) => {
                    let total = n * (l.params.oh * l.params.ow * l.params.cout4) as usize;
                    let params = Params {
                        n: n as u32,
                        total: total as u32,
                        ..l.params
                    };
                    let uniform = gpu.constant_uniform(&params);
                    let x = Binding::range(gpu, prev.0.buffer(), 0, n * prev.1)?;
                    let y = Binding::range(gpu, l.output.buffer(), 0, n * l.out_words_per_image)?;
                    let mut bindings = vec![(0, Binding::whole(&uniform)), (5, l.bias.binding())];
                    bindings.push((if l.input == Repr::Packed8 { 1 } else { 2 }, x));
                    match &l.wsum {
                        Some(ws) => {
                            bindings.push((3, l.weights.binding()));
                            bindings.push((6, ws.binding()));
                        }
                        None => bindings.push((4, l.weights.binding())),
                    }
                    let packed_out = std::ptr::eq(l.key, &INT_TO_PACKED)
                        || std::ptr::eq(l.key, &FLOAT_PACKED_TO_PACKED)
                        || std::ptr::eq(l.key, &FLOAT_F32_TO_PACKED);
                    bindings.push((if packed_out { 7 } else { 8 }, y));
                    gpu.dispatch(
                        encoder,
                        l.key,
                        &bindings,
                        gpu.grid(OP, (total as u32).div_ceil(WORKGROUP))?,
                    )?;
                    prev = (&l.output, l.out_words_per_image);
                }
            }
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
            .write_buffer(self.input.buffer(), 0, bytemuck::cast_slice(&x));
        let mut encoder = gpu.encoder("int inference");
        self.record(gpu, &mut encoder, n)?;
        gpu.submit(encoder);
        let out = match self.steps.last() {
            Some(GpuStep::Layer(l)) => l,
            _ => {
                return Err(Error::InvalidArgument {
                    op: OP,
                    msg: "the plan does not end with a layer".into(),
                })
            }
        };
        let per = out.out_words_per_image;
        let view = out.output.slice(gpu, 0, &[n * per])?;
        let y = gpu.read(&view)?;
        Ok((0..n)
            .flat_map(|b| y[b * per..b * per + self.classes].to_vec())
            .collect())
    }
}
