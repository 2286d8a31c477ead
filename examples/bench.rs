//! Throughput of the GEMM and convolution kernels (GFLOP/s).
//!
//! `cargo run --release --example bench [-- --json] [--batch N] [--quick] [--large] [--portable]
//! [--engine cpu|gpu] [--full-tiles] [--seconds S] [--only TEXT]`
//!
//! Covers GEMM, every pass of the LeNet-5 and VGG-7 convolutions and the fully connected layers
//! (`fc`, GEMMs at the conv batch size), with the kernel configuration chosen for the adapter
//! (`BAYESIAN_BITS_ENGINE` or `--engine` override the engine).
//!
//! Times with timestamp queries when the adapter has them, else with the wall clock around
//! submit-and-wait; every shape is warmed up (pipeline compilation) first.

#[path = "common/exit.rs"]
mod exit;

use bayesian_bits::gpu::{Encoder, Engine, Gpu, KernelConfig, Tensor};
use bayesian_bits::kernels::conv;
use bayesian_bits::kernels::gemm::{self, GemmShape, Variant};
use bayesian_bits::spec::Conv2dShape;
use bayesian_bits::Result;
use clap::Parser;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "GEMM and convolution throughput of the WGSL kernels")]
struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Batch size of the convolution layers.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Batch 16 (overrides --batch): a quick run on slow adapters.
    #[arg(long)]
    quick: bool,
    /// Include GEMM 4096 (always included on non-CPU adapters).
    #[arg(long)]
    large: bool,
    /// Time the portable variant instead of the best one for the device.
    #[arg(long)]
    portable: bool,
    /// Force a tile engine (`cpu` or `gpu`) instead of the adapter's choice.
    #[arg(long)]
    engine: Option<String>,
    /// CPU engine: every product on the 64×512 tile, no narrow tiles (A/B runs in one binary).
    #[arg(long)]
    full_tiles: bool,
    /// Seconds of measurement each shape aims for (after warm-up).
    #[arg(long, default_value_t = 0.5)]
    seconds: f64,
    /// Only shapes whose name contains this (e.g. `gemm 1024`, `vgg7 conv2`, `backward_weight`).
    #[arg(long)]
    only: Option<String>,
}

/// Records one run of the work being timed.
type Record<'a> = &'a dyn Fn(&mut Encoder) -> Result<()>;

/// Times recorded work, on the GPU timeline when the adapter allows.
struct Timer {
    queries: Option<(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer)>,
}

impl Timer {
    fn new(gpu: &Gpu) -> Self {
        let wanted =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let queries = gpu.device().features().contains(wanted).then(|| {
            let device = gpu.device();
            let set = device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let buffer = |usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bench timestamps"),
                    size: 16,
                    usage,
                    mapped_at_creation: false,
                })
            };
            let resolve = buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
            let read = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
            (set, resolve, read)
        });
        Self { queries }
    }

    fn method(&self) -> &'static str {
        if self.queries.is_some() {
            "timestamp"
        } else {
            "wall"
        }
    }

    /// Seconds per repetition of `record`, run `reps` times in one command buffer.
    fn time(&self, gpu: &Gpu, reps: usize, record: Record) -> Result<f64> {
        let mut encoder = gpu.encoder("bench");
        if let Some((set, _, _)) = &self.queries {
            encoder.raw().write_timestamp(set, 0);
        }
        for _ in 0..reps {
            record(&mut encoder)?;
        }
        let start = Instant::now();
        let Some((set, resolve, read)) = &self.queries else {
            gpu.submit(encoder);
            gpu.wait()?;
            return Ok(start.elapsed().as_secs_f64() / reps as f64);
        };
        encoder.raw().write_timestamp(set, 1);
        encoder.raw().resolve_query_set(set, 0..2, resolve, 0);
        encoder.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
        gpu.submit(encoder);
        read.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        gpu.wait()?;
        let ticks: [u64; 2] = {
            let view =
                read.slice(..)
                    .get_mapped_range()
                    .map_err(|e| bayesian_bits::Error::Gpu {
                        op: "bench timestamps",
                        msg: e.to_string(),
                    })?;
            bytemuck::pod_read_unaligned(&view[..16])
        };
        read.unmap();
        let ns =
            ticks[1].wrapping_sub(ticks[0]) as f64 * f64::from(gpu.queue().get_timestamp_period());
        Ok(ns * 1e-9 / reps as f64)
    }

    /// Warms up (one run), then measures about `seconds`; returns GFLOP/s.
    fn gflops(&self, gpu: &Gpu, flops: f64, seconds: f64, record: Record) -> Result<f64> {
        let first = self.time(gpu, 1, record)?;
        let reps = (seconds / first.max(1e-6)).ceil().clamp(1.0, 50.0) as usize;
        Ok(flops / self.time(gpu, reps, record)? * 1e-9)
    }
}

fn filled(gpu: &Gpu, label: &str, len: usize) -> Result<Tensor> {
    let data: Vec<f32> = (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    gpu.upload(label, &[len], &data)
}

struct ConvLayer {
    model: &'static str,
    layer: &'static str,
    c_in: usize,
    c_out: usize,
    size: usize,
    k: usize,
    pad: usize,
}

const fn layer(
    model: &'static str,
    layer: &'static str,
    c_in: usize,
    c_out: usize,
    size: usize,
    k: usize,
    pad: usize,
) -> ConvLayer {
    ConvLayer {
        model,
        layer,
        c_in,
        c_out,
        size,
        k,
        pad,
    }
}

const LAYERS: [ConvLayer; 8] = [
    layer("lenet5", "conv1", 1, 32, 28, 5, 0),
    layer("lenet5", "conv2", 32, 64, 12, 5, 0),
    layer("vgg7", "conv1", 3, 128, 32, 3, 1),
    layer("vgg7", "conv2", 128, 128, 32, 3, 1),
    layer("vgg7", "conv3", 128, 256, 16, 3, 1),
    layer("vgg7", "conv4", 256, 256, 16, 3, 1),
    layer("vgg7", "conv5", 256, 512, 8, 3, 1),
    layer("vgg7", "conv6", 512, 512, 8, 3, 1),
];

/// Fully connected layers: (model, layer, d_in, d_out).
const FC_LAYERS: [(&str, &str, usize, usize); 4] = [
    ("lenet5", "fc1", 1024, 512),
    ("lenet5", "fc2", 512, 10),
    ("vgg7", "fc1", 8192, 1024),
    ("vgg7", "fc2", 1024, 10),
];

fn main() -> std::process::ExitCode {
    exit::exit_code(run())
}

fn run() -> Result<()> {
    env_logger::init();
    let args = Args::parse();
    let mut gpu = Gpu::new_blocking()?;
    if let Some(engine) = &args.engine {
        gpu = gpu.with_engine(Engine::parse(engine)?);
    }
    if args.full_tiles {
        let config = KernelConfig {
            narrow_cpu_tiles: false,
            ..gpu.kernel_config().clone()
        };
        gpu = gpu.with_kernel_config(config);
    }
    let info = gpu.device().adapter_info();
    let variant = if args.portable {
        Variant::Portable
    } else {
        Variant::best(&gpu)
    };
    let timer = Timer::new(&gpu);
    let batch = if args.quick { 16 } else { args.batch };
    let large = args.large || info.device_type != wgpu::DeviceType::Cpu;
    if !args.json {
        println!(
            "adapter: {} ({:?}, {:?}); timing: {}; variant: {variant:?}; conv batch {batch}",
            info.name,
            info.backend,
            info.device_type,
            timer.method()
        );
        println!("kernels: {}", gpu.kernel_config());
    }

    let mut gemm_rows = Vec::new();
    let sizes: &[usize] = if large {
        &[512, 1024, 2048, 4096]
    } else {
        &[512, 1024, 2048]
    };
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    for &size in sizes.iter().filter(|&&s| wanted(&format!("gemm {s}"))) {
        let shape = GemmShape::new(size, size, size, false, false);
        let a = filled(&gpu, "a", size * size)?;
        let b = filled(&gpu, "b", size * size)?;
        let c = gpu.zeros("c", &[size * size])?;
        let flops = 2.0 * (size as f64).powi(3);
        let gflops = timer.gflops(&gpu, flops, args.seconds, &|e| {
            gemm::gemm(&gpu, e, variant, &shape, &a, &b, &c)
        })?;
        if !args.json {
            println!("gemm {size}x{size}x{size}: {gflops:8.1} GFLOP/s");
        }
        gemm_rows.push(serde_json::json!({"m": size, "n": size, "k": size, "gflops": gflops}));
    }

    let mut conv_rows = Vec::new();
    for l in &LAYERS {
        let name = format!("{} {}", l.model, l.layer);
        let passes_wanted: Vec<bool> = ["forward", "backward_data", "backward_weight"]
            .iter()
            .map(|p| wanted(&format!("{name} {p}")))
            .collect();
        if !passes_wanted.contains(&true) {
            continue;
        }
        let s = Conv2dShape::square(batch, l.c_in, l.size, l.size, l.c_out, l.k, l.pad);
        let x = filled(&gpu, "x", s.input().len())?;
        let w = filled(&gpu, "w", s.weight_len())?;
        let y = filled(&gpu, "y", s.output().len())?;
        let dx = gpu.zeros("dx", &[s.input().len()])?;
        let dw = gpu.zeros("dw", &[s.weight_len()])?;
        let scratch = gpu.zeros("scratch", &[conv::backward_scratch_len(&gpu, &s)])?;
        let flops = 2.0 * s.macs() as f64;
        let passes: [(&str, Record); 3] = [
            ("forward", &|e| {
                conv::conv2d_forward(&gpu, e, variant, &s, &x, &w, &y)
            }),
            ("backward_data", &|e| {
                conv::conv2d_backward_data(&gpu, e, variant, &s, &y, &w, &dx, &scratch, false)
            }),
            ("backward_weight", &|e| {
                conv::conv2d_backward_weight(&gpu, e, variant, &s, &x, &y, &dw, &scratch)
            }),
        ];
        for ((pass, record), _) in passes.into_iter().zip(&passes_wanted).filter(|(_, &w)| w) {
            let gflops = timer.gflops(&gpu, flops, args.seconds, record)?;
            if !args.json {
                println!(
                    "{:7} {:6} {:16} batch {batch:4}: {gflops:8.1} GFLOP/s",
                    l.model, l.layer, pass
                );
            }
            conv_rows.push(serde_json::json!({
                "model": l.model, "layer": l.layer, "pass": pass, "batch": batch, "gflops": gflops
            }));
        }
    }

    // Fully connected layers at the conv batch size: forward y = x·wᵀ, backward data dx = dy·w,
    // backward weight dw = dyᵀ·x (the model's GEMMs).
    let mut fc_rows = Vec::new();
    for (model, layer, d_in, d_out) in FC_LAYERS {
        let passes = [
            ("forward", GemmShape::new(batch, d_out, d_in, false, true)),
            (
                "backward_data",
                GemmShape::new(batch, d_in, d_out, false, false),
            ),
            (
                "backward_weight",
                GemmShape::new(d_out, d_in, batch, true, false),
            ),
        ];
        for (pass, shape) in passes {
            if !wanted(&format!("{model} {layer} {pass}")) {
                continue;
            }
            let a = filled(&gpu, "a", shape.m * shape.k)?;
            let b = filled(&gpu, "b", shape.k * shape.n)?;
            let c = gpu.zeros("c", &[shape.m * shape.n])?;
            let flops = 2.0 * (shape.m * shape.n * shape.k) as f64;
            let gflops = timer.gflops(&gpu, flops, args.seconds, &|e| {
                gemm::gemm(&gpu, e, variant, &shape, &a, &b, &c)
            })?;
            if !args.json {
                println!("{model:7} {layer:6} {pass:16} batch {batch:4}: {gflops:8.1} GFLOP/s");
            }
            fc_rows.push(serde_json::json!({
                "model": model, "layer": layer, "pass": pass, "batch": batch, "gflops": gflops
            }));
        }
    }

    if args.json {
        let report = serde_json::json!({
            "adapter": {
                "name": info.name,
                "backend": format!("{:?}", info.backend),
                "device_type": format!("{:?}", info.device_type),
            },
            "timing": timer.method(),
            "variant": format!("{variant:?}"),
            "engine": gpu.engine().name(),
            "kernels": gpu.kernel_config().to_string(),
            "gemm": gemm_rows,
            "conv": conv_rows,
            "fc": fc_rows,
        });
        println!("{report}");
    }
    Ok(())
}
