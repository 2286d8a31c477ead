//! A command encoder that keeps one compute pass open across dispatches.
//!
//! wgpu orders dispatches inside a pass by their buffer use, so consecutive dispatches need no
//! pass of their own: [`Gpu::dispatch`](super::Gpu::dispatch) records into the open pass and a
//! copy or clear closes it. A training step then records a handful of passes instead of one per
//! dispatch. A profiling handle gives every dispatch its own pass, for its timestamps.

/// A `wgpu::CommandEncoder` with at most one open compute pass ([`Gpu::encoder`](super::Gpu::encoder)).
#[derive(Debug)]
pub struct Encoder {
    inner: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
    /// Compute passes begun so far.
    passes: usize,
}

impl From<wgpu::CommandEncoder> for Encoder {
    /// Wraps an application's encoder: kernels record into it, and [`Encoder::finish`] or
    /// [`Encoder::into_inner`] hands it back.
    fn from(inner: wgpu::CommandEncoder) -> Self {
        Self {
            inner,
            pass: None,
            passes: 0,
        }
    }
}

impl Encoder {
    /// The open compute pass, begun (with `timestamp_writes`, if any) when none is open or when
    /// timestamps are asked for, which need a pass of their own.
    pub(super) fn compute_pass(
        &mut self,
        label: &str,
        timestamp_writes: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() || timestamp_writes.is_some() {
            self.end_pass();
            let pass = self.inner.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes,
            });
            self.pass = Some(pass.forget_lifetime());
            self.passes += 1;
        }
        self.pass.as_mut().expect("a pass was just opened")
    }

    /// Ends the open compute pass, if any.
    pub fn end_pass(&mut self) {
        self.pass = None;
    }

    /// Compute passes begun so far.
    pub fn passes(&self) -> usize {
        self.passes
    }

    /// The underlying encoder, for commands this type does not wrap (the open pass is ended).
    pub fn raw(&mut self) -> &mut wgpu::CommandEncoder {
        self.end_pass();
        &mut self.inner
    }

    /// Records a buffer-to-buffer copy (ends the open pass).
    pub fn copy_buffer_to_buffer(
        &mut self,
        source: &wgpu::Buffer,
        source_offset: u64,
        destination: &wgpu::Buffer,
        destination_offset: u64,
        bytes: u64,
    ) {
        self.raw().copy_buffer_to_buffer(
            source,
            source_offset,
            destination,
            destination_offset,
            bytes,
        );
    }

    /// Records zeroing a whole buffer (ends the open pass).
    pub fn clear_buffer(&mut self, buffer: &wgpu::Buffer) {
        self.raw().clear_buffer(buffer, 0, None);
    }

    /// Ends the open pass and returns the encoder.
    pub fn into_inner(mut self) -> wgpu::CommandEncoder {
        self.end_pass();
        self.inner
    }

    /// Ends the open pass and finishes the command buffer.
    pub fn finish(self) -> wgpu::CommandBuffer {
        self.into_inner().finish()
    }
}
