//! Dataset loaders in their official formats (CIFAR-10 binary, MNIST/Fashion-MNIST idx), the
//! per-epoch batcher with CIFAR augmentation and background prefetch, and checked downloads.
//!
//! The in-memory part ([`Dataset`], [`Batcher`], [`Prefetcher`]) comes with feature `train` or
//! `data`; the loaders and downloads (gzip, tar, TLS) with feature `data` only.
//!
//! A [`Dataset`] holds every image in memory, NCHW, after the dataset's transform:
//! MNIST-style data is scaled to `[0, 1]` (torchvision's `ToTensor`), CIFAR-10 is scaled and then
//! normalised per channel (`Normalize(mean, std)`).

mod batch;
#[cfg(feature = "data")]
mod cifar;
#[cfg(feature = "data")]
mod download;
#[cfg(feature = "data")]
mod idx;

#[cfg(feature = "data")]
use std::io::Read;
#[cfg(feature = "data")]
use std::path::Path;
use std::path::PathBuf;

pub use batch::{Augment, Batch, Batcher, Prefetcher, CROP_PADDING};
#[cfg(feature = "data")]
pub use cifar::{load_cifar10, load_cifar10_train_batches, CIFAR10_MEAN, CIFAR10_STD};
#[cfg(feature = "data")]
pub use download::{
    ensure_cifar10, ensure_cifar10_from, ensure_fashion_mnist, ensure_mnist, CIFAR10_MD5,
    CIFAR10_URL, CIFAR10_URL_ENV, FASHION_MNIST_URL, FASHION_MNIST_URL_ENV, MNIST_URL,
    MNIST_URL_ENV,
};
#[cfg(feature = "data")]
pub use idx::load_mnist;

/// Errors raised while reading or fetching a dataset; every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The file's (decompressed) length is not what its format requires.
    #[error("{path}: expected {expected} bytes, found {actual}: the file is truncated or corrupt")]
    Size {
        /// File that failed.
        path: PathBuf,
        /// Length the format requires, in bytes.
        expected: u64,
        /// Length found, in bytes (after gunzip for `.gz` files).
        actual: u64,
    },
    /// The idx magic number is not the one of the expected file kind.
    #[error("{path}: wrong magic number {actual:#010x}, expected {expected:#010x}")]
    Magic {
        /// File that failed.
        path: PathBuf,
        /// Magic number of the expected kind (`0x803` images, `0x801` labels).
        expected: u32,
        /// Magic number found.
        actual: u32,
    },
    /// The dimensions in a file header are unusable.
    #[error("{path}: wrong dimensions: expected {expected}, found {actual}")]
    Dims {
        /// File that failed.
        path: PathBuf,
        /// What the loader needs.
        expected: String,
        /// What the header says.
        actual: String,
    },
    /// An image file and its label file hold different numbers of items.
    #[error("{images} holds {num_images} images but {labels} holds {num_labels} labels")]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// The label file.
        labels: PathBuf,
        /// Images in the image file.
        num_images: usize,
        /// Labels in the label file.
        num_labels: usize,
    },
    /// A label is not below the number of classes.
    #[error(
        "{path}: label {label} of item {index} is out of range (dataset has {num_classes} classes)"
    )]
    Label {
        /// File that failed.
        path: PathBuf,
        /// Index of the item within the file.
        index: usize,
        /// The offending label.
        label: u32,
        /// Number of classes of the dataset.
        num_classes: usize,
    },
    /// A `.gz` file could not be decompressed.
    #[error("{path}: bad gzip data: {source}")]
    Gzip {
        /// File that failed.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// A downloaded archive could not be unpacked or lacks an expected member; nothing was kept.
    #[error("{url}: bad archive: {msg} (nothing was kept)")]
    Archive {
        /// Where the archive came from.
        url: String,
        /// What is wrong.
        msg: String,
    },
    /// A download's MD5 digest differs from the published one; nothing was kept.
    #[error(
        "{url}: md5 mismatch: expected {expected}, got {actual}; the download is corrupt or the \
         server serves another file (nothing was kept)"
    )]
    Checksum {
        /// Where the file came from.
        url: String,
        /// Published digest (lower-case hex).
        expected: String,
        /// Digest of what was received.
        actual: String,
    },
    /// A download failed (offline, HTTP error, timeout); `manual` says how to do it by hand.
    #[error("cannot download {url}: {cause}\nTo install the data by hand: {manual}")]
    Download {
        /// The URL that failed.
        url: String,
        /// The client's error.
        cause: String,
        /// The manual steps.
        manual: String,
    },
    /// An argument or an in-memory dataset is inconsistent.
    #[error("invalid dataset argument: {msg}")]
    Invalid {
        /// What is wrong.
        msg: String,
    },
    /// The prefetch thread could not be started.
    #[error("cannot start the prefetch thread: {source}")]
    Thread {
        /// The OS error.
        source: std::io::Error,
    },
}

/// Which half of a dataset to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training set (60000 MNIST images, 50000 CIFAR-10 images).
    Train,
    /// The test set (10000 images).
    Test,
}

/// A labelled image dataset held in memory, images NCHW after the dataset's transform.
#[derive(Clone, Debug)]
pub struct Dataset {
    images: Vec<f32>,
    labels: Vec<u32>,
    channels: usize,
    height: usize,
    width: usize,
    num_classes: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Dataset {
    /// Builds a dataset from transformed images (`labels.len()` images of `[c, h, w]`, NCHW) and
    /// the per-channel normalisation `(x - mean) / std` that was applied after scaling to
    /// `[0, 1]` (mean 0, std 1 for none). The normalisation tells the augmentation which value a
    /// zero raw pixel (crop padding) takes.
    pub fn new(
        images: Vec<f32>,
        labels: Vec<u32>,
        [channels, height, width]: [usize; 3],
        num_classes: usize,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> Result<Self, DataError> {
        let invalid = |msg: String| Err(DataError::Invalid { msg });
        let image_len = channels
            .checked_mul(height)
            .and_then(|n| n.checked_mul(width));
        match image_len.and_then(|n| n.checked_mul(labels.len())) {
            Some(0) | None => {
                return invalid(format!(
                    "image shape [{channels}, {height}, {width}] x {} items is empty or too large",
                    labels.len()
                ))
            }
            Some(n) if n != images.len() => {
                return invalid(format!(
                    "{} labels of [{channels}, {height}, {width}] need {n} values, got {}",
                    labels.len(),
                    images.len()
                ))
            }
            Some(_) => {}
        }
        if mean.len() != channels || std.len() != channels {
            return invalid(format!(
                "{channels} channels need {channels} means and stds, got {} and {}",
                mean.len(),
                std.len()
            ));
        }
        if std.iter().any(|s| !s.is_normal()) || mean.iter().any(|m| !m.is_finite()) {
            return invalid(format!(
                "mean {mean:?} and std {std:?} must be finite, std non-zero"
            ));
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= num_classes)
        {
            return invalid(format!(
                "label {label} of item {index} is not below num_classes {num_classes}"
            ));
        }
        Ok(Self {
            images,
            labels,
            channels,
            height,
            width,
            num_classes,
            mean,
            std,
        })
    }

    /// The first `n` items (all of them if there are fewer), e.g. for a quick evaluation.
    pub fn head(&self, n: usize) -> Result<Self, DataError> {
        let n = n.min(self.len());
        Self::new(
            self.images[..n * self.image_len()].to_vec(),
            self.labels[..n].to_vec(),
            [self.channels, self.height, self.width],
            self.num_classes,
            self.mean.clone(),
            self.std.clone(),
        )
    }

    /// All images, NCHW.
    pub fn images(&self) -> &[f32] {
        &self.images
    }

    /// All labels, each below [`Self::num_classes`].
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Image `i` (`[c, h, w]`), or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[f32]> {
        let n = self.image_len();
        self.images
            .get(i.checked_mul(n)?..i.checked_add(1)?.checked_mul(n)?)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset holds no image (never true for a loaded one).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image, `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Channels per image.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of classes; every label is below it.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Per-channel mean subtracted after scaling to `[0, 1]`.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Per-channel standard deviation divided by after subtracting the mean.
    pub fn std(&self) -> &[f32] {
        &self.std
    }
}

/// `dir/name` if it exists, else `dir/name.gz` if that exists.
#[cfg(feature = "data")]
fn locate(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// Reads `dir/name` (or `dir/name.gz`), gunzipping content that starts with the gzip magic.
/// Returns the path read and the (decompressed) bytes.
#[cfg(feature = "data")]
fn read_data(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>), DataError> {
    let path = locate(dir, name).unwrap_or_else(|| dir.join(name));
    let bytes = std::fs::read(&path).map_err(|source| DataError::Io {
        path: path.clone(),
        source,
    })?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok((path, bytes));
    }
    let mut plain = Vec::new();
    match flate2::read::GzDecoder::new(bytes.as_slice()).read_to_end(&mut plain) {
        Ok(_) => Ok((path, plain)),
        Err(source) => Err(DataError::Gzip { path, source }),
    }
}
