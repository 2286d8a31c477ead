//! Dataset loaders on small files written by the tests, batching and augmentation.

#![cfg(feature = "data")]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bayesian_bits::data::{
    load_cifar10, load_cifar10_train_batches, load_mnist, Augment, Batch, Batcher, DataError,
    Dataset, Prefetcher, Split, CIFAR10_MEAN, CIFAR10_STD, CROP_PADDING,
};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8], gz: bool) {
    if gz {
        std::fs::write(dir.join(format!("{name}.gz")), gzip(bytes)).unwrap();
    } else {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let header = std::iter::once(magic).chain(dims.iter().copied());
    header
        .flat_map(u32::to_be_bytes)
        .chain(data.iter().copied())
        .collect()
}

/// Three 2x2 images with pixels 0, 10, 20, .. and labels 7, 0, 9 as the MNIST test split.
fn write_mnist_test(dir: &Path, gz: bool) -> Vec<u8> {
    let pixels: Vec<u8> = (0..12).map(|i| i * 10).collect();
    write(
        dir,
        "t10k-images-idx3-ubyte",
        &idx(0x803, &[3, 2, 2], &pixels),
        gz,
    );
    write(
        dir,
        "t10k-labels-idx1-ubyte",
        &idx(0x801, &[3], &[7, 0, 9]),
        gz,
    );
    pixels
}

#[test]
fn mnist_round_trip_plain_and_gz() {
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let pixels = write_mnist_test(dir.path(), gz);
        let d = load_mnist(dir.path(), Split::Test).unwrap();
        assert_eq!((d.len(), d.channels(), d.height(), d.width()), (3, 1, 2, 2));
        assert_eq!((d.num_classes(), d.labels()), (10, &[7, 0, 9][..]));
        let expected: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
        assert_eq!(d.images(), expected);
        assert_eq!(d.image(2), Some(&expected[8..12]));
        assert_eq!(d.image(3), None);
        // The training files are absent: a typed error naming the file.
        let err = load_mnist(dir.path(), Split::Train).unwrap_err();
        assert!(
            matches!(&err, DataError::Io { path, .. } if path.ends_with("train-images-idx3-ubyte"))
        );
    }
}

#[test]
fn truncated_idx_names_file_and_sizes() {
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_mnist_test(dir.path(), gz);
        let mut short = idx(0x803, &[3, 2, 2], &[0; 12]);
        short.pop();
        write(dir.path(), "t10k-images-idx3-ubyte", &short, gz);
        let err = load_mnist(dir.path(), Split::Test).unwrap_err();
        let DataError::Size {
            path,
            expected,
            actual,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert!(
            path.to_string_lossy().contains("t10k-images-idx3-ubyte"),
            "{err}"
        );
        assert_eq!((*expected, *actual), (16 + 12, 16 + 11));
        assert!(
            err.to_string().contains("expected 28 bytes, found 27"),
            "{err}"
        );
    }
}

#[test]
fn corrupt_gzip_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist_test(dir.path(), false);
    let gz = gzip(&idx(0x801, &[3], &[7, 0, 9]));
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte.gz"),
        &gz[..gz.len() / 2],
    )
    .unwrap();
    let err = load_mnist(dir.path(), Split::Test).unwrap_err();
    assert!(
        matches!(&err, DataError::Gzip { path, .. } if path.ends_with("t10k-labels-idx1-ubyte.gz")),
        "{err}"
    );
}

#[test]
fn wrong_magic_bad_labels_and_counts_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist_test(dir.path(), false);
    let labels = |bytes: Vec<u8>| write(dir.path(), "t10k-labels-idx1-ubyte", &bytes, false);

    labels(idx(0x803, &[3], &[7, 0, 9]));
    let err = load_mnist(dir.path(), Split::Test).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Magic {
                expected: 0x801,
                actual: 0x803,
                ..
            }
        ),
        "{err}"
    );

    labels(idx(0x801, &[3], &[7, 10, 9]));
    let err = load_mnist(dir.path(), Split::Test).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Label {
                index: 1,
                label: 10,
                num_classes: 10,
                ..
            }
        ),
        "{err}"
    );

    labels(idx(0x801, &[2], &[7, 0]));
    let err = load_mnist(dir.path(), Split::Test).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                num_images: 3,
                num_labels: 2,
                ..
            }
        ),
        "{err}"
    );

    labels(vec![0, 0]);
    let err = load_mnist(dir.path(), Split::Test).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Size {
                expected: 8,
                actual: 2,
                ..
            }
        ),
        "{err}"
    );

    write(
        dir.path(),
        "t10k-images-idx3-ubyte",
        &idx(0x803, &[3, 0, 2], &[]),
        false,
    );
    labels(idx(0x801, &[3], &[7, 0, 9]));
    let err = load_mnist(dir.path(), Split::Test).unwrap_err();
    assert!(matches!(err, DataError::Dims { .. }), "{err}");
}

/// CIFAR records with the given labels; pixel `i` of record `r` is `(31 * r + i) % 256`.
fn cifar_records(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (r, &label) in labels.iter().enumerate() {
        out.push(label);
        out.extend((0..3072).map(|i| ((31 * r + i) % 256) as u8));
    }
    out
}

fn cifar_value(r: usize, i: usize) -> f32 {
    let c = i / 1024;
    (((31 * r + i) % 256) as f32 / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
}

#[test]
fn cifar_round_trip_from_folder_or_parent_plain_and_gz() {
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let bins = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&bins).unwrap();
        write(&bins, "test_batch.bin", &cifar_records(&[3, 9]), gz);
        for root in [dir.path(), bins.as_path()] {
            let d = load_cifar10(root, Split::Test).unwrap();
            assert_eq!(
                (d.len(), d.channels(), d.height(), d.width()),
                (2, 3, 32, 32)
            );
            assert_eq!(d.labels(), [3, 9]);
            assert_eq!((d.mean(), d.std()), (&CIFAR10_MEAN[..], &CIFAR10_STD[..]));
            for (k, &v) in d.images().iter().enumerate() {
                assert!((v - cifar_value(k / 3072, k % 3072)).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn cifar_train_subset_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "data_batch_1.bin",
        &cifar_records(&[0, 1]),
        false,
    );
    write(dir.path(), "data_batch_2.bin", &cifar_records(&[2]), false);
    let d = load_cifar10_train_batches(dir.path(), 2).unwrap();
    assert_eq!(d.labels(), [0, 1, 2]);
    assert_eq!(d.image(2).unwrap()[5], cifar_value(0, 5));

    let err = load_cifar10(dir.path(), Split::Train).unwrap_err();
    assert!(
        matches!(&err, DataError::Io { path, .. } if path.ends_with("data_batch_3.bin")),
        "{err}"
    );
    for count in [0, 6] {
        let err = load_cifar10_train_batches(dir.path(), count).unwrap_err();
        assert!(matches!(err, DataError::Invalid { .. }), "{err}");
    }

    let mut short = cifar_records(&[0, 1]);
    short.pop();
    write(dir.path(), "data_batch_1.bin", &short, false);
    let err = load_cifar10_train_batches(dir.path(), 1).unwrap_err();
    assert!(
        matches!(&err, DataError::Size { path, expected: 30_730_000, actual: 6145 } if path.ends_with("data_batch_1.bin")),
        "{err}"
    );

    write(
        dir.path(),
        "data_batch_1.bin",
        &cifar_records(&[0, 10]),
        false,
    );
    let err = load_cifar10_train_batches(dir.path(), 1).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Label {
                index: 1,
                label: 10,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn dataset_new_validates() {
    let ok = Dataset::new(vec![0.0; 8], vec![0, 1], [1, 2, 2], 2, vec![0.0], vec![1.0]);
    assert!(ok.is_ok());
    let bad = [
        Dataset::new(vec![0.0; 7], vec![0, 1], [1, 2, 2], 2, vec![0.0], vec![1.0]),
        Dataset::new(vec![0.0; 8], vec![0, 2], [1, 2, 2], 2, vec![0.0], vec![1.0]),
        Dataset::new(vec![0.0; 8], vec![0, 1], [1, 2, 2], 2, vec![0.0], vec![0.0]),
        Dataset::new(vec![0.0; 8], vec![0, 1], [2, 1, 2], 2, vec![0.0], vec![1.0]),
        Dataset::new(vec![], vec![], [1, 2, 2], 2, vec![0.0], vec![1.0]),
        Dataset::new(vec![], vec![0], [usize::MAX, 2, 2], 2, vec![0.0], vec![1.0]),
    ];
    for result in bad {
        assert!(
            matches!(result, Err(DataError::Invalid { .. })),
            "{result:?}"
        );
    }
}

/// `n` one-pixel images whose value and label are their index.
fn indexed(n: usize) -> Arc<Dataset> {
    let images = (0..n).map(|i| i as f32).collect();
    let labels = (0..n as u32).collect();
    Arc::new(Dataset::new(images, labels, [1, 1, 1], n, vec![0.0], vec![1.0]).unwrap())
}

fn order(batches: impl Iterator<Item = Batch>) -> Vec<u32> {
    batches.flat_map(|b| b.labels).collect()
}

#[test]
fn shuffle_is_a_deterministic_permutation_per_epoch() {
    let d = indexed(10);
    let train = |epoch| Batcher::train(d.clone(), 4, 42, epoch, Augment::None).unwrap();
    let sizes: Vec<usize> = train(0).map(|b| b.n).collect();
    assert_eq!(sizes, [4, 4, 2]);
    let epoch3 = order(train(3));
    assert_eq!(
        epoch3,
        order(train(3)),
        "resuming at an epoch replays its order"
    );
    assert_ne!(epoch3, order(train(4)));
    assert_ne!(
        epoch3,
        order(Batcher::train(d.clone(), 4, 43, 3, Augment::None).unwrap())
    );
    let mut sorted = epoch3.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    for b in train(3) {
        let values: Vec<u32> = b.images.iter().map(|&v| v as u32).collect();
        assert_eq!((values, b.n), (b.labels.clone(), b.labels.len()));
    }
    assert_eq!(
        order(Batcher::eval(d.clone(), 3).unwrap()),
        (0..10).collect::<Vec<_>>()
    );
    assert!(matches!(
        Batcher::eval(d, 0),
        Err(DataError::Invalid { .. })
    ));
}

#[test]
fn mnist_sized_epoch_keeps_the_partial_last_batch() {
    let batcher = Batcher::train(indexed(60_000), 128, 0, 0, Augment::None).unwrap();
    assert_eq!(batcher.len(), 469);
    let sizes: Vec<usize> = batcher.map(|b| b.n).collect();
    assert_eq!(sizes.len(), 469);
    assert!(sizes[..468].iter().all(|&n| n == 128));
    assert_eq!(sizes[468], 96);
}

#[test]
fn prefetcher_yields_the_batchers_batches() {
    let d = indexed(1000);
    let direct: Vec<Batch> = Batcher::train(d.clone(), 64, 7, 2, Augment::None)
        .unwrap()
        .collect();
    let prefetch =
        Prefetcher::new(Batcher::train(d.clone(), 64, 7, 2, Augment::None).unwrap()).unwrap();
    assert_eq!(prefetch.len(), 16);
    assert_eq!(prefetch.collect::<Vec<_>>(), direct);
    // Dropping it early stops the worker without hanging.
    let mut early = Prefetcher::new(Batcher::eval(d, 1).unwrap()).unwrap();
    assert!(early.next().is_some());
}

/// Crop at `(dy, dx)` of the image padded by `CROP_PADDING` with `fill`, then mirror if `flip`.
fn crop(img: &[f32], fill: &[f32], dy: usize, dx: usize, flip: bool) -> Vec<f32> {
    let mut out = Vec::new();
    for (c, &fill) in fill.iter().enumerate() {
        for y in 0..32 {
            for x in 0..32 {
                let sx = if flip { 31 - x } else { x };
                let (py, px) = ((y + dy) as isize - 4, (sx + dx) as isize - 4);
                let inside = (0..32).contains(&py) && (0..32).contains(&px);
                out.push(if inside {
                    img[c * 1024 + py as usize * 32 + px as usize]
                } else {
                    fill
                });
            }
        }
    }
    out
}

#[test]
fn cifar_augmentation_crops_raw_zero_padding_and_flips() {
    assert_eq!(CROP_PADDING, 4);
    // 200 copies of one image with distinct values, normalised like CIFAR-10.
    let img: Vec<f32> = (0..3072).map(|i| i as f32).collect();
    let n = 200;
    let images = img.iter().copied().cycle().take(n * 3072).collect();
    let d = Dataset::new(
        images,
        vec![0; n],
        [3, 32, 32],
        10,
        CIFAR10_MEAN.to_vec(),
        CIFAR10_STD.to_vec(),
    );
    let d = Arc::new(d.unwrap());
    // The value of a raw zero pixel after ToTensor + Normalize.
    let fill: Vec<f32> = (0..3).map(|c| -CIFAR10_MEAN[c] / CIFAR10_STD[c]).collect();

    let (mut flips, mut shifts) = (0, 0);
    let batches: Vec<Batch> = Batcher::train(d.clone(), 64, 5, 1, Augment::CropFlip)
        .unwrap()
        .collect();
    for out in batches.iter().flat_map(|b| b.images.chunks_exact(3072)) {
        let (dy, dx, flip) = (0..9)
            .flat_map(|dy| (0..9).flat_map(move |dx| [(dy, dx, false), (dy, dx, true)]))
            .find(|&(dy, dx, flip)| crop(&img, &fill, dy, dx, flip) == out)
            .expect("every augmented image is a padded crop, maybe mirrored");
        flips += usize::from(flip);
        shifts += usize::from((dy, dx) != (4, 4));
    }
    assert!(
        (60..140).contains(&flips),
        "flip with p = 0.5: {flips} of {n}"
    );
    assert!(shifts > n / 2, "crops are shifted: {shifts} of {n}");
    let again: Vec<Batch> = Batcher::train(d.clone(), 64, 5, 1, Augment::CropFlip)
        .unwrap()
        .collect();
    assert_eq!(
        again, batches,
        "augmentation is determined by (seed, epoch, index)"
    );
    let other: Vec<Batch> = Batcher::train(d.clone(), 64, 5, 2, Augment::CropFlip)
        .unwrap()
        .collect();
    assert_ne!(other, batches);
    // Evaluation and Augment::None leave images untouched.
    for b in Batcher::eval(d.clone(), 64)
        .unwrap()
        .chain(Batcher::train(d, 64, 5, 1, Augment::None).unwrap())
    {
        assert!(b.images.chunks_exact(3072).all(|x| x == img));
    }
}
