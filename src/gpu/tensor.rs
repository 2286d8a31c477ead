//! Storage buffers of 32-bit words with a shape.

use super::{Binding, Gpu};
use crate::{Error, Result};

/// A GPU storage buffer — or an aligned range of one — of `f32` (or `u32`) values with a
/// row-major shape.
#[derive(Clone, Debug)]
pub struct Tensor {
    buffer: wgpu::Buffer,
    /// Offset in bytes (0 unless the tensor is a [`Tensor::slice`] of a packed buffer).
    offset: u64,
    shape: Vec<usize>,
}

impl Tensor {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the elements in bytes.
    pub fn bytes(&self) -> u64 {
        4 * self.len() as u64
    }

    /// The underlying buffer (at least 4 bytes, even when empty); see [`Tensor::offset`].
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Byte offset of the first element in [`Tensor::buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Wraps `bytes_offset..bytes_offset + 4·len(shape)` of an existing storage buffer (e.g. one
    /// an embedding application owns) as a tensor, without copying.
    ///
    /// The buffer needs `STORAGE` usage ([`Gpu::write`] also needs `COPY_DST`, [`Gpu::read`]
    /// `COPY_SRC`); the offset must be a multiple of the device's
    /// `min_storage_buffer_offset_alignment`, and the range (at least one word, as for
    /// [`Gpu::zeros`]) must lie inside the buffer and fit one storage binding.
    pub fn from_buffer(
        gpu: &Gpu,
        buffer: wgpu::Buffer,
        bytes_offset: u64,
        shape: &[usize],
    ) -> Result<Tensor> {
        const OP: &str = "Tensor::from_buffer";
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: format!("the buffer has usage {:?}, without STORAGE", buffer.usage()),
            });
        }
        let align = u64::from(gpu.limits().min_storage_buffer_offset_alignment).max(4);
        let len = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| u64::try_from(n).ok());
        let end = len
            .and_then(|n| n.max(1).checked_mul(4))
            .and_then(|b| b.checked_add(bytes_offset));
        match end {
            Some(end) if bytes_offset.is_multiple_of(align) && end <= buffer.size() => {}
            _ => {
                return Err(Error::InvalidArgument {
                    op: OP,
                    msg: format!(
                        "shape {shape:?} at byte {bytes_offset} of a {}-byte buffer (offsets must be multiples of {align} bytes and the range must lie inside the buffer)",
                        buffer.size()
                    ),
                })
            }
        }
        let len: usize = shape.iter().product();
        gpu.check_binding(OP, len)?;
        Ok(Tensor {
            buffer,
            offset: bytes_offset,
            shape: shape.to_vec(),
        })
    }

    /// Fails with [`Error::InvalidArgument`] naming `op` unless the buffer has `usage`.
    pub(crate) fn expect_usage(&self, op: &'static str, usage: wgpu::BufferUsages) -> Result<()> {
        if self.buffer.usage().contains(usage) {
            return Ok(());
        }
        Err(Error::InvalidArgument {
            op,
            msg: format!(
                "the buffer has usage {:?}, without {usage:?}",
                self.buffer.usage()
            ),
        })
    }

    /// The tensor as a shader binding.
    pub fn binding(&self) -> Binding<'_> {
        self.into()
    }

    /// Elements `offset..offset + len` of this tensor as a tensor of `shape`, sharing its buffer.
    /// The start must be a multiple of the device's `min_storage_buffer_offset_alignment`.
    pub fn slice(&self, gpu: &Gpu, offset: usize, shape: &[usize]) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        let start = self.offset as usize / 4 + offset;
        if offset + len > self.len() {
            return Err(Error::Shape {
                op: "Tensor::slice",
                expected: format!("a range inside {} elements", self.len()),
                actual: format!("{offset}..{}", offset + len),
            });
        }
        Binding::range(gpu, &self.buffer, start, len)?;
        Ok(Tensor {
            buffer: self.buffer.clone(),
            offset: 4 * start as u64,
            shape: shape.to_vec(),
        })
    }

    /// The same buffer seen with another shape of equal element count (e.g. flatten).
    pub fn view(&self, shape: &[usize]) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        if len != self.len() {
            return Err(Error::Shape {
                op: "Tensor::view",
                expected: format!("{} elements", self.len()),
                actual: format!("{shape:?} ({len} elements)"),
            });
        }
        Ok(Tensor {
            buffer: self.buffer.clone(),
            offset: self.offset,
            shape: shape.to_vec(),
        })
    }

    /// `self` if it has `expected` elements, else a [`Error::Shape`] naming `op`.
    pub fn expect_len_view(self, op: &'static str, expected: usize) -> Result<Tensor> {
        self.expect_len(op, expected)?;
        Ok(self)
    }

    /// Fails with a [`Error::Shape`] naming `op` unless the tensor has `expected` elements.
    pub fn expect_len(&self, op: &'static str, expected: usize) -> Result<()> {
        if self.len() == expected {
            return Ok(());
        }
        Err(Error::Shape {
            op,
            expected: format!("{expected} elements"),
            actual: format!("{:?}", self.shape),
        })
    }
}

impl Gpu {
    /// Fails with [`Error::Limit`] naming `op` unless `len` 32-bit elements fit one storage binding.
    pub fn check_binding(&self, op: &'static str, len: usize) -> Result<()> {
        let limits = self.limits();
        let binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let bytes = 4 * len as u64;
        if bytes > binding {
            return Err(Error::Limit {
                op,
                what: "max_storage_buffer_binding_size (bytes)",
                value: bytes,
                limit: binding,
            });
        }
        Ok(())
    }

    /// A zero-filled tensor. Fails if it exceeds the adapter's storage-binding or buffer size.
    pub fn zeros(&self, label: &str, shape: &[usize]) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        let bytes = 4 * len as u64;
        self.check_binding("allocate tensor", len)?;
        let buffer = self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            buffer,
            offset: 0,
            shape: shape.to_vec(),
        })
    }

    /// A tensor holding `data` (any 4-byte plain type: `f32`, `u32`, `i32`).
    pub fn upload<T: bytemuck::Pod>(
        &self,
        label: &str,
        shape: &[usize],
        data: &[T],
    ) -> Result<Tensor> {
        let tensor = self.zeros(label, shape)?;
        self.write(&tensor, data)?;
        Ok(tensor)
    }

    /// Overwrites a tensor's contents — only its own range of the buffer when it is a view
    /// ([`Tensor::slice`], [`Tensor::from_buffer`]); queued, takes effect at the next submit.
    pub fn write<T: bytemuck::Pod>(&self, tensor: &Tensor, data: &[T]) -> Result<()> {
        const OP: &str = "Gpu::write";
        if std::mem::size_of::<T>() != 4 {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: format!("elements must be 4 bytes, got {}", std::mem::size_of::<T>()),
            });
        }
        tensor.expect_len(OP, data.len())?;
        tensor.expect_usage(OP, wgpu::BufferUsages::COPY_DST)?;
        if !data.is_empty() {
            self.queue()
                .write_buffer(tensor.buffer(), tensor.offset(), bytemuck::cast_slice(data));
        }
        Ok(())
    }
}
