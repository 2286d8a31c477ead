//! Checked downloads of the official dataset files when they are absent.
//!
//! Everything is written to a hidden temporary file or folder next to its destination, verified
//! (MD5 against the published digest), then renamed into place: an error leaves no half file.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use md5::{Digest, Md5};

use super::{cifar, idx, locate, DataError};

/// Official CIFAR-10 binary archive.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// MD5 of [`CIFAR10_URL`]'s archive, as published on the CIFAR-10 page.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// Environment variable that replaces [`CIFAR10_URL`] (a mirror of the same archive).
pub const CIFAR10_URL_ENV: &str = "BAYESIAN_BITS_CIFAR10_URL";
/// Base URL of the MNIST idx files: torchvision's mirror, as the original site often refuses
/// downloads.
pub const MNIST_URL: &str = "https://ossci-datasets.s3.amazonaws.com/mnist";
/// Environment variable that replaces [`MNIST_URL`].
pub const MNIST_URL_ENV: &str = "BAYESIAN_BITS_MNIST_URL";
/// Base URL of the official Fashion-MNIST idx files.
pub const FASHION_MNIST_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com";
/// Environment variable that replaces [`FASHION_MNIST_URL`].
pub const FASHION_MNIST_URL_ENV: &str = "BAYESIAN_BITS_FASHION_MNIST_URL";

/// MD5 of the `.gz` files, in the order of `idx::FILES` (the digests torchvision checks).
const MNIST_MD5: [&str; 4] = [
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
];
const FASHION_MNIST_MD5: [&str; 4] = [
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79",
    "bb300cfdad3c16e7a12a480ee83cd310",
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the response, and for each read of the body (a stalled transfer).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest body accepted (the CIFAR-10 archive is 163 MiB).
const MAX_BYTES: u64 = 512 << 20;

/// A file or folder that is removed when dropped, unless it was renamed away first.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        // Nothing to do if it was moved into place; a failure here cannot be reported.
        let _ = if self.0.is_dir() {
            fs::remove_dir_all(&self.0)
        } else {
            fs::remove_file(&self.0)
        };
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn url_from_env(var: &str, default: &str) -> String {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => {
            log::info!("{var} is set: using {url}");
            url
        }
        _ => default.to_string(),
    }
}

/// Makes sure CIFAR-10 is in `dir` (the `.bin` files in `dir` or `dir/cifar-10-batches-bin`):
/// if any is missing, downloads [`CIFAR10_URL`] (or `$BAYESIAN_BITS_CIFAR10_URL`), checks
/// [`CIFAR10_MD5`] and unpacks it to `dir/cifar-10-batches-bin`. Returns the folder of the
/// `.bin` files, ready for [`load_cifar10`](super::load_cifar10).
pub fn ensure_cifar10(dir: &Path) -> Result<PathBuf, DataError> {
    ensure_cifar10_from(
        dir,
        &url_from_env(CIFAR10_URL_ENV, CIFAR10_URL),
        CIFAR10_MD5,
    )
}

/// [`ensure_cifar10`] with the archive's URL and its expected MD5 (lower-case hex) given.
pub fn ensure_cifar10_from(dir: &Path, url: &str, md5: &str) -> Result<PathBuf, DataError> {
    let found = cifar::batch_dir(dir);
    if cifar::FILES.iter().all(|f| locate(&found, f).is_some()) {
        return Ok(found);
    }
    let target = dir.join(cifar::BATCH_DIR);
    let manual = format!(
        "download {url} (md5 {md5}) and unpack it in {} (`tar xzf cifar-10-binary.tar.gz`) so that \
         {} holds {}; or set {CIFAR10_URL_ENV} to a mirror of that archive",
        dir.display(),
        target.display(),
        cifar::FILES.join(", "),
    );
    let archive = fetch(url, md5, dir, "cifar-10-binary.tar.gz", &manual)?;
    let staging = Temp(dir.join(format!(
        ".{}.{}.unpack",
        cifar::BATCH_DIR,
        std::process::id()
    )));
    fs::create_dir_all(&staging.0).map_err(io_error(&staging.0))?;
    let bad = |msg: String| DataError::Archive {
        url: url.to_string(),
        msg,
    };
    unpack_batches(&archive.0, &staging.0).map_err(|e| bad(e.to_string()))?;
    if let Some(missing) = cifar::FILES.iter().find(|f| !staging.0.join(f).is_file()) {
        return Err(bad(format!("no {}/{missing} in it", cifar::BATCH_DIR)));
    }
    fs::create_dir_all(&target).map_err(io_error(&target))?;
    for entry in fs::read_dir(&staging.0).map_err(io_error(&staging.0))? {
        let from = entry.map_err(io_error(&staging.0))?.path();
        let to = target.join(from.file_name().unwrap_or_default());
        fs::rename(&from, &to).map_err(io_error(&to))?;
    }
    log::info!("CIFAR-10: unpacked {url} into {}", target.display());
    Ok(target)
}

/// Extracts the regular files directly under `cifar-10-batches-bin/` into `into`; other entries
/// are skipped, so nothing can be written outside `into`.
fn unpack_batches(archive: &Path, into: &Path) -> io::Result<()> {
    let file = BufReader::new(File::open(archive)?);
    let mut tar = tar::Archive::new(GzDecoder::new(file));
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let mut parts = path.components().filter(|c| *c != Component::CurDir);
        if let (Some(Component::Normal(folder)), Some(Component::Normal(name)), None) =
            (parts.next(), parts.next(), parts.next())
        {
            if folder == cifar::BATCH_DIR && entry.header().entry_type().is_file() {
                entry.unpack(into.join(name))?;
            }
        }
    }
    Ok(())
}

/// Makes sure MNIST is in `dir`: each idx file missing (plain or `.gz`) is downloaded from
/// [`MNIST_URL`] (or `$BAYESIAN_BITS_MNIST_URL`) as `<file>.gz`, MD5-checked, and saved in
/// `dir`. Returns `dir`, ready for [`load_mnist`](super::load_mnist).
pub fn ensure_mnist(dir: &Path) -> Result<PathBuf, DataError> {
    ensure_idx(dir, &url_from_env(MNIST_URL_ENV, MNIST_URL), &MNIST_MD5)
}

/// [`ensure_mnist`] for Fashion-MNIST, from [`FASHION_MNIST_URL`] (or
/// `$BAYESIAN_BITS_FASHION_MNIST_URL`).
pub fn ensure_fashion_mnist(dir: &Path) -> Result<PathBuf, DataError> {
    ensure_idx(
        dir,
        &url_from_env(FASHION_MNIST_URL_ENV, FASHION_MNIST_URL),
        &FASHION_MNIST_MD5,
    )
}

fn ensure_idx(dir: &Path, base: &str, md5s: &[&str; 4]) -> Result<PathBuf, DataError> {
    for (file, md5) in idx::FILES.iter().zip(md5s) {
        if locate(dir, file).is_some() {
            continue;
        }
        let name = format!("{file}.gz");
        let url = format!("{}/{name}", base.trim_end_matches('/'));
        let manual = format!("download {url} (md5 {md5}) into {}", dir.display());
        let temp = fetch(&url, md5, dir, &name, &manual)?;
        let dest = dir.join(&name);
        fs::rename(&temp.0, &dest).map_err(io_error(&dest))?;
        log::info!("saved {url} as {}", dest.display());
    }
    Ok(dir.to_path_buf())
}

/// Downloads `url` into a temporary file in `dir` named after `name` and checks its MD5.
fn fetch(url: &str, md5: &str, dir: &Path, name: &str, manual: &str) -> Result<Temp, DataError> {
    let failed = |cause: String| DataError::Download {
        url: url.into(),
        cause,
        manual: manual.into(),
    };
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    log::info!("downloading {url} into {}", dir.display());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(READ_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| failed(e.to_string()))?;
    let mut body = response.body_mut().with_config().limit(MAX_BYTES).reader();
    let temp = Temp(dir.join(format!(".{name}.{}.part", std::process::id())));
    let mut file = File::create(&temp.0).map_err(io_error(&temp.0))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = body.read(&mut buf).map_err(|e| failed(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(io_error(&temp.0))?;
    }
    let actual = format!("{:x}", hasher.finalize());
    if !actual.eq_ignore_ascii_case(md5) {
        let (url, expected) = (url.to_string(), md5.to_string());
        return Err(DataError::Checksum {
            url,
            expected,
            actual,
        });
    }
    log::info!("{url}: md5 {actual} verified");
    Ok(temp)
}
