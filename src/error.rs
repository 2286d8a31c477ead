//! The core error type of the GPU, kernel, quantizer, model, spec and export layers.
//!
//! Higher layers (`train`, `data`) have their own errors, which wrap this one; it names none
//! of them, so dependencies point down.

/// Result alias of the core layers (`train` has its own, `train::Result`).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, with the operation and the numbers involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU adapter matched the request.
    #[error(
        "no GPU adapter found ({detail}). Install a Vulkan, Metal or DX12 driver; on Linux without a GPU \
         `apt-get install mesa-vulkan-drivers libvulkan1` provides a software Vulkan adapter (lavapipe)"
    )]
    NoAdapter {
        /// What the adapter search reported.
        detail: String,
    },
    /// The adapter refused to create a device.
    #[error("the adapter refused to create a device: {0}")]
    RequestDevice(#[from] wgpu::RequestDeviceError),
    /// Two shapes or lengths that must agree do not.
    #[error("{op}: shape mismatch: expected {expected}, got {actual}")]
    Shape {
        /// The operation that checked the shapes.
        op: &'static str,
        /// What the operation needs.
        expected: String,
        /// What it was given.
        actual: String,
    },
    /// A quantizer range is not a positive finite number.
    #[error("{op}: x_max must be positive and finite, got {x_max}")]
    InvalidRange {
        /// The operation that checked the range.
        op: &'static str,
        /// The offending value.
        x_max: f32,
    },
    /// A tensor or dispatch exceeds a limit of the adapter.
    #[error("{op}: {what} is {value}, above the adapter's limit {limit}")]
    Limit {
        /// The operation that hit the limit.
        op: &'static str,
        /// Which limit (e.g. `max_storage_buffer_binding_size`).
        what: &'static str,
        /// The value that was requested.
        value: u64,
        /// The adapter's limit.
        limit: u64,
    },
    /// The device lacks a feature a kernel needs.
    #[error("{op}: {what} needs the device features {features}, which the device lacks")]
    MissingFeature {
        /// The operation that needed the feature.
        op: &'static str,
        /// The kernel (shader and entry point).
        what: String,
        /// The missing features.
        features: String,
    },
    /// An argument is outside what the operation accepts.
    #[error("{op}: {msg}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// wgpu reported a validation or out-of-memory error for an operation.
    #[error("{op}: GPU error: {msg}")]
    Gpu {
        /// The operation during which the error was raised.
        op: &'static str,
        /// wgpu's message.
        msg: String,
    },
    /// A file the library reads or writes for the device (a pipeline cache) could not be.
    #[error("{op}: {}: {source}", path.display())]
    File {
        /// The operation.
        op: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// Mapping a buffer for readback failed.
    #[error("buffer readback failed: {0}")]
    Map(#[from] wgpu::BufferAsyncError),
    /// A model could not be exported, or an export file could not be read or run.
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
}
