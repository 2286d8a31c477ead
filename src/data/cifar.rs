//! CIFAR-10 in its binary format: records of one label byte and 3072 pixel bytes (CHW).

use std::path::{Path, PathBuf};

use super::{read_data, DataError, Dataset, Split};

/// Per-channel mean subtracted from CIFAR-10 pixels after scaling to `[0, 1]`.
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// Per-channel standard deviation CIFAR-10 pixels are divided by after subtracting the mean.
pub const CIFAR10_STD: [f32; 3] = [0.2023, 0.1994, 0.2010];

/// The folder the official archive unpacks to.
pub(crate) const BATCH_DIR: &str = "cifar-10-batches-bin";
/// The five training batches and the test batch.
pub(crate) const FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

const NUM_CLASSES: usize = 10;
const PIXELS: usize = 3 * 32 * 32;
const RECORD: usize = 1 + PIXELS;
/// Size of an official batch file (10000 records).
const OFFICIAL_SIZE: u64 = 10_000 * RECORD as u64;

/// The folder that holds the `.bin` files: `dir/cifar-10-batches-bin` if it exists, else `dir`.
pub(crate) fn batch_dir(dir: &Path) -> PathBuf {
    let nested = dir.join(BATCH_DIR);
    if nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// Loads the CIFAR-10 `split` (all five training batches, or the test batch) from `dir`, the
/// folder of the `.bin` files or its parent holding `cifar-10-batches-bin/`. Pixels are scaled
/// to `[0, 1]` and normalised with [`CIFAR10_MEAN`] and [`CIFAR10_STD`]; images are `[3, 32, 32]`.
pub fn load_cifar10(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    match split {
        Split::Train => load_files(dir, &FILES[..5]),
        Split::Test => load_files(dir, &FILES[5..]),
    }
}

/// Loads only the first `count` training batches (`data_batch_1.bin` ..), 1 to 5, for quick
/// runs; otherwise as [`load_cifar10`].
pub fn load_cifar10_train_batches(dir: &Path, count: usize) -> Result<Dataset, DataError> {
    if !(1..=5).contains(&count) {
        let msg = format!("CIFAR-10 has 5 training batches, asked for {count}");
        return Err(DataError::Invalid { msg });
    }
    load_files(dir, &FILES[..count])
}

fn load_files(dir: &Path, names: &[&str]) -> Result<Dataset, DataError> {
    let dir = batch_dir(dir);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for name in names {
        let (path, bytes) = read_data(&dir, name)?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            let actual = bytes.len() as u64;
            return Err(DataError::Size {
                path,
                expected: OFFICIAL_SIZE,
                actual,
            });
        }
        for (index, record) in bytes.chunks_exact(RECORD).enumerate() {
            let label = u32::from(record[0]);
            if label as usize >= NUM_CLASSES {
                return Err(DataError::Label {
                    path,
                    index,
                    label,
                    num_classes: NUM_CLASSES,
                });
            }
            labels.push(label);
            let plane = PIXELS / 3;
            images.extend(record[1..].iter().enumerate().map(|(i, &p)| {
                let c = i / plane;
                (f32::from(p) / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
            }));
        }
    }
    Ok(Dataset {
        images,
        labels,
        channels: 3,
        height: 32,
        width: 32,
        num_classes: NUM_CLASSES,
        mean: CIFAR10_MEAN.to_vec(),
        std: CIFAR10_STD.to_vec(),
    })
}
