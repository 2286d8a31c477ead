//! One epoch of mini-batches: deterministic shuffle, CIFAR augmentation, background prefetch.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{DataError, Dataset};

/// Zero padding, in raw pixels, of the random crop of [`Augment::CropFlip`].
pub const CROP_PADDING: usize = 4;

/// Training-time augmentation of each image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Augment {
    /// Images as loaded.
    None,
    /// torchvision's `RandomCrop(size, padding=4)` then `RandomHorizontalFlip(0.5)`, applied as
    /// on the raw image before `ToTensor` and `Normalize`: padded pixels are raw zeros, so they
    /// hold `(0 - mean) / std` of their channel.
    CropFlip,
}

/// Random-stream purposes, so the shuffle and the augmentation draw independent numbers.
const SHUFFLE: u64 = 0;
const AUGMENT: u64 = 1;

/// A ChaCha8 stream keyed by `(seed, epoch, index, purpose)`: identical on every platform.
fn rng(seed: u64, epoch: u64, index: u64, purpose: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, word) in key.chunks_exact_mut(8).zip([seed, epoch, index, purpose]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// One mini-batch: `n` images NCHW and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `n * channels * height * width` values, NCHW.
    pub images: Vec<f32>,
    /// `n` labels.
    pub labels: Vec<u32>,
    /// Number of images in the batch (the last batch of an epoch may be short).
    pub n: usize,
}

/// Iterator over one epoch of a dataset in batches; the last, partial batch is kept.
#[derive(Debug)]
pub struct Batcher {
    dataset: Arc<Dataset>,
    order: Vec<usize>,
    next: usize,
    batch_size: usize,
    augment: Augment,
    seed: u64,
    epoch: u64,
}

impl Batcher {
    /// Epoch `epoch` of training: the order is a permutation drawn from `(seed, epoch)` alone,
    /// so resuming at epoch `k` replays the same batches; augmentation of image `i` draws from
    /// `(seed, epoch, i)`.
    pub fn train(
        dataset: Arc<Dataset>,
        batch_size: usize,
        seed: u64,
        epoch: u64,
        augment: Augment,
    ) -> Result<Self, DataError> {
        let mut batcher = Self::eval(dataset, batch_size)?;
        batcher.order.shuffle(&mut rng(seed, epoch, 0, SHUFFLE));
        batcher.augment = augment;
        batcher.seed = seed;
        batcher.epoch = epoch;
        Ok(batcher)
    }

    /// The dataset in order, without augmentation (evaluation).
    pub fn eval(dataset: Arc<Dataset>, batch_size: usize) -> Result<Self, DataError> {
        if batch_size == 0 {
            let msg = "batch size must be at least 1".to_string();
            return Err(DataError::Invalid { msg });
        }
        let order = (0..dataset.len()).collect();
        Ok(Self {
            dataset,
            order,
            next: 0,
            batch_size,
            augment: Augment::None,
            seed: 0,
            epoch: 0,
        })
    }

    fn batch(&self, indices: &[usize]) -> Batch {
        let d = &*self.dataset;
        let len = d.image_len();
        let mut images = vec![0.0; indices.len() * len];
        for (out, &i) in images.chunks_exact_mut(len).zip(indices) {
            let src = &d.images[i * len..(i + 1) * len];
            match self.augment {
                Augment::None => out.copy_from_slice(src),
                Augment::CropFlip => {
                    let mut rng = rng(self.seed, self.epoch, i as u64, AUGMENT);
                    let dy = rng.random_range(0..=2 * CROP_PADDING);
                    let dx = rng.random_range(0..=2 * CROP_PADDING);
                    let flip = rng.random_bool(0.5);
                    crop_flip(d, src, out, dy, dx, flip);
                }
            }
        }
        let labels = indices.iter().map(|&i| d.labels[i]).collect();
        Batch {
            images,
            labels,
            n: indices.len(),
        }
    }
}

/// Crops the image at `(dy, dx)` of its [`CROP_PADDING`]-padded version (raw zero padding, i.e.
/// `-mean / std` after normalisation), then mirrors it horizontally if `flip`.
fn crop_flip(d: &Dataset, src: &[f32], out: &mut [f32], dy: usize, dx: usize, flip: bool) {
    let (h, w) = (d.height, d.width);
    for (c, (plane, dst)) in src
        .chunks_exact(h * w)
        .zip(out.chunks_exact_mut(h * w))
        .enumerate()
    {
        let fill = -d.mean[c] / d.std[c];
        for (y, row) in dst.chunks_exact_mut(w).enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                let sx = if flip { w - 1 - x } else { x };
                // Coordinates in the unpadded image; out of range means padding.
                let (py, px) = (
                    (y + dy).checked_sub(CROP_PADDING),
                    (sx + dx).checked_sub(CROP_PADDING),
                );
                *v = match (py, px) {
                    (Some(py), Some(px)) if py < h && px < w => plane[py * w + px],
                    _ => fill,
                };
            }
        }
    }
}

impl Iterator for Batcher {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let end = self.order.len().min(self.next + self.batch_size);
        let indices = self.order.get(self.next..end).filter(|s| !s.is_empty())?;
        let batch = self.batch(indices);
        self.next = end;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.order.len() - self.next).div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batcher {}

/// Runs a [`Batcher`] on a background thread, keeping up to two batches ready, so the consumer
/// (the GPU loop) does not wait for batch assembly. Dropping it stops the thread.
#[derive(Debug)]
pub struct Prefetcher {
    rx: Receiver<Batch>,
    remaining: usize,
}

impl Prefetcher {
    /// Starts assembling `batcher`'s batches on a new thread.
    pub fn new(batcher: Batcher) -> Result<Self, DataError> {
        let remaining = batcher.len();
        let (tx, rx) = sync_channel(2);
        std::thread::Builder::new()
            .name("bayesian-bits-prefetch".into())
            .spawn(move || {
                for batch in batcher {
                    // A send fails only once the Prefetcher is dropped: stop then.
                    if tx.send(batch).is_err() {
                        break;
                    }
                }
            })
            .map_err(|source| DataError::Thread { source })?;
        Ok(Self { rx, remaining })
    }
}

impl Iterator for Prefetcher {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let batch = self.rx.recv().ok()?;
        self.remaining -= 1;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Prefetcher {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1x2x3 image with values 1..=6 and no normalisation, plus one with mean 0.5, std 0.25.
    fn dataset(mean: f32, std: f32) -> Dataset {
        let images = (1..=6).map(|v| v as f32).collect();
        Dataset::new(images, vec![0], [1, 2, 3], 1, vec![mean], vec![std]).unwrap()
    }

    #[test]
    fn centre_crop_is_identity_and_flip_mirrors() {
        let d = dataset(0.0, 1.0);
        let mut out = vec![0.0; 6];
        crop_flip(
            &d,
            d.image(0).unwrap(),
            &mut out,
            CROP_PADDING,
            CROP_PADDING,
            false,
        );
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        crop_flip(
            &d,
            d.image(0).unwrap(),
            &mut out,
            CROP_PADDING,
            CROP_PADDING,
            true,
        );
        assert_eq!(out, [3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
    }

    #[test]
    fn shifted_crop_shows_raw_zero_padding() {
        let d = dataset(0.5, 0.25);
        let pad = -0.5 / 0.25;
        let mut out = vec![0.0; 6];
        // One row down, one column right: the top row and the left column are padding.
        crop_flip(
            &d,
            d.image(0).unwrap(),
            &mut out,
            CROP_PADDING - 1,
            CROP_PADDING - 1,
            false,
        );
        assert_eq!(out, [pad, pad, pad, pad, 1.0, 2.0]);
        // The same crop, mirrored: the padding column moves to the right.
        crop_flip(
            &d,
            d.image(0).unwrap(),
            &mut out,
            CROP_PADDING - 1,
            CROP_PADDING - 1,
            true,
        );
        assert_eq!(out, [pad, pad, pad, 2.0, 1.0, pad]);
    }

    #[test]
    fn streams_differ_by_every_key_part() {
        let draw = |s, e, i, p| rng(s, e, i, p).random::<u64>();
        let base = draw(1, 2, 3, 0);
        assert_eq!(base, draw(1, 2, 3, 0));
        assert!([
            draw(9, 2, 3, 0),
            draw(1, 9, 3, 0),
            draw(1, 2, 9, 0),
            draw(1, 2, 3, 1)
        ]
        .iter()
        .all(|&v| v != base));
    }
}
