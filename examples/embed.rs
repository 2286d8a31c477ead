//! Embedding: an application that owns its wgpu device hands it to the library, trains a few
//! LeNet-5 steps on synthetic data and classifies a batch. The library creates no instance and
//! never blocks: the application polls its own device when it wants results.

#[path = "common/exit.rs"]
mod exit;

use bayesian_bits::gpu::{Gpu, OPTIONAL_FEATURES};
use bayesian_bits::nn::{Arch, InitConfig, LearningRates, Model, StepConfig};

/// 28×28 images of class `label`: a bright square whose position encodes the class, plus noise.
fn synthetic_batch(n: usize, offset: usize) -> (Vec<f32>, Vec<u32>) {
    let mut images = vec![0.0f32; n * 784];
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = ((i + offset) % 10) as u32;
        let (row, col) = (4 + 10 * (label as usize / 5), 2 + 5 * (label as usize % 5));
        for y in row..row + 6 {
            for x in col..col + 4 {
                images[i * 784 + y * 28 + x] = 1.0;
            }
        }
        for (p, v) in images[i * 784..(i + 1) * 784].iter_mut().enumerate() {
            *v += 0.1 * (((p * 7919 + i * 104_729 + offset) % 97) as f32 / 97.0);
        }
        labels.push(label);
    }
    (images, labels)
}

fn main() -> std::process::ExitCode {
    exit::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    // The application's own instance, adapter and device.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("my application"),
        required_features: adapter.features() & OPTIONAL_FEATURES,
        required_limits: adapter.limits(),
        ..Default::default()
    }))?;
    println!("application device on {}", adapter.get_info().name);
    let gpu = Gpu::from_device(device.clone(), queue);
    // Pipelines built from here on go through a driver cache (Vulkan): an application stores
    // `pipeline_cache_data()` where it keeps its state and passes it back here next run.
    let stored: Option<Vec<u8>> = None;
    gpu.attach_pipeline_cache(stored.as_deref())?;

    // Initialise LeNet-5 as the paper does: default initialisation, then the quantizer ranges
    // from two calibration images (on the GPU).
    let arch = Arch::lenet5();
    let init = InitConfig {
        chain_logits: [6.0, 6.0, -6.0, -6.0],
        prune_logit: 6.0,
        seed: 7,
    };
    let (calibration, _) = synthetic_batch(2, 0);
    let batch = 32;
    let mut model = Model::init(&gpu, arch, batch, &init, &calibration)?;
    if let Some(data) = gpu.pipeline_cache_data() {
        println!("pipeline cache to store: {} bytes", data.len());
    }

    // Training steps are recorded and submitted; nothing waits.
    let lr = LearningRates {
        weights: 1e-3,
        gates: 1e-3,
        scales: 1e-3,
    };
    for step in 0..60 {
        let (images, labels) = synthetic_batch(batch, step * batch);
        model.train_step(
            &gpu,
            &images,
            &labels,
            &StepConfig {
                seed: init.seed,
                step: step as u32 + 1,
                mu: 0.1,
                lr,
            },
        )?;
    }

    // Classify a fresh batch: the logits stay on the device (an application could bind them in
    // its own pipelines); reading them returns a future, and the application polls its device.
    let (images, labels) = synthetic_batch(batch, 12_345);
    let logits = model.forward(&gpu, &images)?;
    let pending = gpu.read_async(&[&logits]);
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let logits = pollster::block_on(pending)?.remove(0);
    let predictions: Vec<u32> = logits
        .chunks(10)
        .map(|row| (0..10).fold(0, |best, c| if row[c] > row[best] { c } else { best }) as u32)
        .collect();
    let correct = predictions
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    println!("predictions {:?}", &predictions[..10]);
    println!("labels      {:?}", &labels[..10]);
    println!("accuracy on a fresh batch: {correct}/{batch}");
    Ok(())
}
