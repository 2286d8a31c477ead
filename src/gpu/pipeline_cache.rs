//! Driver pipeline caches kept across runs (`wgpu::PipelineCache`, Vulkan only in wgpu 30).
//!
//! A driver turns each pipeline into machine code when it is created; with a cache seeded from
//! an earlier run it can skip that work. The data wgpu returns is framed here with the adapter's
//! cache key and an MD5 checksum, so that a file from another device, a truncated write or a
//! flipped byte is recognised and discarded (with the reason) instead of reaching the driver:
//! wgpu checks its own header, but not the bytes after it.

use super::Gpu;
use crate::{Error, Result};
use md5::{Digest, Md5};
use std::path::Path;

/// First bytes of a framed cache.
const MAGIC: &[u8; 8] = b"BBPLCACH";
/// Version of the framing below.
const FORMAT: u32 = 1;

/// What [`Gpu::attach_pipeline_cache`] or [`Gpu::load_pipeline_cache`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipelineCacheLoad {
    /// The device has no pipeline cache (wgpu implements them on Vulkan only, and a device the
    /// application created needs `Features::PIPELINE_CACHE`): nothing was attached.
    Unsupported,
    /// No earlier data: an empty cache was attached.
    Empty,
    /// An earlier run's data seeded the attached cache.
    Loaded {
        /// Bytes of driver data.
        bytes: usize,
    },
    /// The data was unusable, for the reason given; an empty cache was attached, and the next
    /// save replaces the data.
    Discarded {
        /// Why the data was not used.
        reason: String,
    },
}

/// Frames driver data `payload` for the adapter cache key `key`.
fn frame(key: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + key.len() + 48);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&Md5::digest(payload));
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The driver data of `framed` if it was framed for `key` and is intact, else why not.
fn unframe<'a>(framed: &'a [u8], key: &str) -> std::result::Result<&'a [u8], String> {
    let mut rest = framed;
    let mut take = |n: usize, what: &str| -> std::result::Result<&'a [u8], String> {
        if rest.len() < n {
            return Err(format!("truncated in the {what}"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    if take(MAGIC.len(), "header")? != MAGIC {
        return Err("not a bayesian-bits pipeline cache (wrong magic bytes)".into());
    }
    let format = u32_at(take(4, "header")?);
    if format != FORMAT {
        return Err(format!(
            "framing version {format}; this build reads version {FORMAT}"
        ));
    }
    let key_len = u32_at(take(4, "header")?) as usize;
    let file_key = take(key_len, "adapter key")?;
    if file_key != key.as_bytes() {
        return Err(format!(
            "written for adapter {:?}, this device is {key:?}",
            String::from_utf8_lossy(file_key)
        ));
    }
    let checksum = take(16, "checksum")?;
    let len = u64::from_le_bytes(take(8, "header")?.try_into().expect("8 bytes"));
    if (rest.len() as u64) < len {
        return Err(format!(
            "truncated: {} of {len} bytes of driver data",
            rest.len()
        ));
    }
    if rest.len() as u64 > len {
        return Err(format!(
            "{} bytes after the {len} bytes of driver data",
            rest.len() as u64 - len
        ));
    }
    if Md5::digest(rest).as_slice() != checksum {
        return Err("checksum mismatch: the driver data is corrupted".into());
    }
    Ok(rest)
}

/// The error of a cache file that could not be read or written.
fn file_error(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::File {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Gpu {
    /// wgpu's cache key of this device's adapter, where its backend supports pipeline caches
    /// and the device has the feature.
    fn pipeline_cache_key(&self) -> Option<String> {
        if !self
            .device
            .features()
            .contains(wgpu::Features::PIPELINE_CACHE)
        {
            return None;
        }
        wgpu::util::pipeline_cache_key(&self.device.adapter_info())
    }

    /// Attaches a driver pipeline cache to the device's pipelines, seeded with `data` from
    /// [`Gpu::pipeline_cache_data`] of an earlier run (or empty with `None`). Every clone of
    /// this handle shares it. Pipelines created before (e.g. by building a model) are not in
    /// it: attach first.
    ///
    /// Data framed for another adapter, truncated or corrupted is discarded with the reason
    /// ([`PipelineCacheLoad::Discarded`]): the cache only saves compilation work, so nothing is
    /// lost by starting empty. Fails with [`Error::Gpu`] if the device cannot create the cache.
    pub fn attach_pipeline_cache(&self, data: Option<&[u8]>) -> Result<PipelineCacheLoad> {
        const OP: &str = "Gpu::attach_pipeline_cache";
        let Some(key) = self.pipeline_cache_key() else {
            return Ok(PipelineCacheLoad::Unsupported);
        };
        let (seed, status) = match data.map(|d| unframe(d, &key)) {
            None => (None, PipelineCacheLoad::Empty),
            Some(Ok(payload)) => (
                Some(payload),
                PipelineCacheLoad::Loaded {
                    bytes: payload.len(),
                },
            ),
            Some(Err(reason)) => (None, PipelineCacheLoad::Discarded { reason }),
        };
        let cache = self.scoped(OP, || {
            // SAFETY: `seed` is the intact payload (checksum verified) of data this crate framed
            // from `PipelineCache::get_data` for an adapter with the same wgpu cache key; wgpu
            // validates its own header inside it, and `fallback` starts empty where wgpu or the
            // driver rejects it.
            unsafe {
                self.device
                    .create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                        label: Some("bayesian-bits pipelines"),
                        data: seed,
                        fallback: true,
                    })
            }
        })?;
        *self
            .pipeline_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(cache);
        Ok(status)
    }

    /// The attached pipeline cache's data, framed for [`Gpu::attach_pipeline_cache`] in a later
    /// run on the same adapter; `None` without an attached cache or where the driver gives no
    /// data.
    pub fn pipeline_cache_data(&self) -> Option<Vec<u8>> {
        let key = self.pipeline_cache_key()?;
        let cache = self
            .pipeline_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        cache.get_data().map(|payload| frame(&key, &payload))
    }

    /// [`Gpu::attach_pipeline_cache`] with the data of the file at `path` (written by
    /// [`Gpu::save_pipeline_cache`]); a missing file attaches an empty cache. Fails with
    /// [`Error::File`] where the file exists but cannot be read.
    pub fn load_pipeline_cache(&self, path: &Path) -> Result<PipelineCacheLoad> {
        if self.pipeline_cache_key().is_none() {
            return Ok(PipelineCacheLoad::Unsupported);
        }
        match std::fs::read(path) {
            Ok(data) => self.attach_pipeline_cache(Some(&data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.attach_pipeline_cache(None),
            Err(e) => Err(file_error("Gpu::load_pipeline_cache", path, e)),
        }
    }

    /// Writes [`Gpu::pipeline_cache_data`] to `path` atomically (a temporary file renamed over
    /// it, so an interrupted save leaves the old file) and returns the bytes written; `None`
    /// (and no file) where there is no data. Fails with [`Error::File`] where the file (or its
    /// directory) cannot be written.
    pub fn save_pipeline_cache(&self, path: &Path) -> Result<Option<usize>> {
        let Some(data) = self.pipeline_cache_data() else {
            return Ok(None);
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| file_error("Gpu::save_pipeline_cache", dir, e))?;
        }
        crate::fs::write_atomic(path, &data)
            .map_err(|e| file_error("Gpu::save_pipeline_cache", path, e))?;
        Ok(Some(data.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips_and_names_each_defect() {
        let payload: Vec<u8> = (0..200u8).collect();
        let framed = frame("wgpu_pipeline_cache_vulkan_1_2", &payload);
        assert_eq!(
            unframe(&framed, "wgpu_pipeline_cache_vulkan_1_2"),
            Ok(&payload[..])
        );
        let reason = |bytes: &[u8], key: &str| unframe(bytes, key).unwrap_err();
        assert!(reason(&framed, "wgpu_pipeline_cache_vulkan_1_3").contains("written for adapter"));
        assert!(reason(
            &framed[..framed.len() - 1],
            "wgpu_pipeline_cache_vulkan_1_2"
        )
        .contains("truncated: 199 of 200"));
        assert!(reason(&framed[..10], "wgpu_pipeline_cache_vulkan_1_2").contains("truncated"));
        let mut longer = framed.clone();
        longer.push(0);
        assert!(reason(&longer, "wgpu_pipeline_cache_vulkan_1_2").contains("1 bytes after"));
        let mut flipped = framed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(reason(&flipped, "wgpu_pipeline_cache_vulkan_1_2").contains("checksum"));
        let mut magic = framed.clone();
        magic[0] = b'X';
        assert!(reason(&magic, "wgpu_pipeline_cache_vulkan_1_2").contains("magic"));
        let mut version = framed;
        version[8] = 9;
        assert!(reason(&version, "wgpu_pipeline_cache_vulkan_1_2").contains("version 9"));
    }
}
