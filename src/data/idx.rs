//! MNIST / Fashion-MNIST in the idx format (plain or gzipped).

use std::path::{Path, PathBuf};

use super::{read_data, DataError, Dataset, Split};

/// The four idx files of MNIST and Fashion-MNIST, without the `.gz` suffix.
pub(crate) const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

const NUM_CLASSES: usize = 10;

/// An idx file of unsigned bytes: its dimensions and its data.
struct Idx {
    path: PathBuf,
    dims: Vec<usize>,
    data: Vec<u8>,
}

/// Reads `dir/name` (or `.gz`) as a `u8` idx file of `rank` dimensions, checking the magic
/// number (`0x0000_08RR`) and that the length is exactly header plus data.
fn read_idx(dir: &Path, name: &str, rank: usize) -> Result<Idx, DataError> {
    let (path, mut bytes) = read_data(dir, name)?;
    let header = 4 * (1 + rank);
    let word = |i: usize| {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let expected_magic = 0x0800 | rank as u32;
    match word(0) {
        Some(magic) if magic == expected_magic => {}
        Some(actual) => {
            return Err(DataError::Magic {
                path,
                expected: expected_magic,
                actual,
            })
        }
        None => {
            return Err(DataError::Size {
                path,
                expected: header as u64,
                actual: bytes.len() as u64,
            })
        }
    }
    let Some(dims) = (1..=rank)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Option<Vec<_>>>()
    else {
        return Err(DataError::Size {
            path,
            expected: header as u64,
            actual: bytes.len() as u64,
        });
    };
    let expected = dims
        .iter()
        .map(|&d| d as u128)
        .product::<u128>()
        .saturating_add(header as u128);
    if expected != bytes.len() as u128 {
        let expected = u64::try_from(expected).unwrap_or(u64::MAX);
        return Err(DataError::Size {
            path,
            expected,
            actual: bytes.len() as u64,
        });
    }
    bytes.drain(..header);
    Ok(Idx {
        path,
        dims,
        data: bytes,
    })
}

/// Loads the MNIST or Fashion-MNIST `split` from `dir`, which holds the official idx files
/// (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-…`), each plain or `.gz`.
/// Pixels are scaled to `[0, 1]` with no normalisation; images are `[1, rows, cols]`.
pub fn load_mnist(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let [images, labels] = match split {
        Split::Train => [FILES[0], FILES[1]],
        Split::Test => [FILES[2], FILES[3]],
    };
    let images = read_idx(dir, images, 3)?;
    let labels = read_idx(dir, labels, 1)?;
    let [n, height, width] = [images.dims[0], images.dims[1], images.dims[2]];
    if n == 0 || height == 0 || width == 0 {
        let actual = format!("{:?}", images.dims);
        let expected = "at least one image of non-zero size".into();
        return Err(DataError::Dims {
            path: images.path,
            expected,
            actual,
        });
    }
    if labels.dims[0] != n {
        return Err(DataError::CountMismatch {
            images: images.path,
            labels: labels.path,
            num_images: n,
            num_labels: labels.dims[0],
        });
    }
    if let Some((index, &label)) = labels
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= NUM_CLASSES)
    {
        let label = label.into();
        return Err(DataError::Label {
            path: labels.path,
            index,
            label,
            num_classes: NUM_CLASSES,
        });
    }
    Ok(Dataset {
        images: images.data.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels: labels.data.iter().map(|&l| l.into()).collect(),
        channels: 1,
        height,
        width,
        num_classes: NUM_CLASSES,
        mean: vec![0.0],
        std: vec![1.0],
    })
}
