//! Tensor views of a shared buffer: writes through a `Tensor::slice`, `Tensor::from_buffer`, and
//! a quantizer whose state lives in packed optimizer groups (as `Model` builds every quantizer)
//! touch only their own words.

mod common;

use bayesian_bits::gpu::{Gpu, Tensor};
use bayesian_bits::kernels::optim::{AdamGroup, ParamArena, ParamSlice};
use bayesian_bits::quant::{Quantizer, QuantizerConfig, QuantizerState, QuantizerStorage};
use bayesian_bits::Error;
use common::gpu;

/// Words of the device's storage-offset alignment.
fn align_words(gpu: &Gpu) -> usize {
    gpu.limits().min_storage_buffer_offset_alignment.max(4) as usize / 4
}

/// Distinct values per word, so a write at the wrong place cannot go unnoticed.
fn sentinel(len: usize) -> Vec<f32> {
    (0..len).map(|i| 1000.0 + i as f32).collect()
}

#[test]
fn write_through_a_slice_changes_only_its_range() {
    let gpu = gpu();
    let a = align_words(gpu);
    let len = 3 * a + 7;
    let whole = gpu.upload("whole", &[len], &sentinel(len)).unwrap();
    let view = whole.slice(gpu, a, &[2, 3]).unwrap();
    assert_eq!(view.offset(), 4 * a as u64);
    let new = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
    gpu.write(&view, &new).unwrap();

    let mut expected = sentinel(len);
    expected[a..a + 6].copy_from_slice(&new);
    assert_eq!(gpu.read(&whole).unwrap(), expected);
    assert_eq!(gpu.read(&view).unwrap(), new);

    // A view of a view keeps the absolute offset.
    let inner = whole.slice(gpu, 2 * a, &[a]).unwrap();
    let inner = inner.slice(gpu, 0, &[1]).unwrap();
    gpu.write(&inner, &[42.0f32]).unwrap();
    expected[2 * a] = 42.0;
    assert_eq!(gpu.read(&whole).unwrap(), expected);

    let err = gpu.write(&view, &[1.0f32; 5]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Shape {
                op: "Gpu::write",
                ..
            }
        ),
        "{err}"
    );
}

fn raw_buffer(gpu: &Gpu, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("application buffer"),
        size: bytes,
        usage,
        mapped_at_creation: false,
    })
}

#[test]
fn from_buffer_views_an_application_buffer() {
    use wgpu::BufferUsages as U;
    let gpu = gpu();
    let a = align_words(gpu);
    let words = 2 * a + 4;
    let buffer = raw_buffer(
        gpu,
        4 * words as u64,
        U::STORAGE | U::COPY_SRC | U::COPY_DST,
    );
    let whole = Tensor::from_buffer(gpu, buffer.clone(), 0, &[words]).unwrap();
    gpu.write(&whole, &sentinel(words)).unwrap();
    let view = Tensor::from_buffer(gpu, buffer.clone(), 4 * a as u64, &[2, 2]).unwrap();
    assert_eq!((view.offset(), view.len()), (4 * a as u64, 4));
    gpu.write(&view, &[7.0f32, 8.0, 9.0, 10.0]).unwrap();
    let mut expected = sentinel(words);
    expected[a..a + 4].copy_from_slice(&[7.0, 8.0, 9.0, 10.0]);
    assert_eq!(gpu.read(&whole).unwrap(), expected);

    let invalid = |r: Result<Tensor, Error>| match r {
        Err(Error::InvalidArgument {
            op: "Tensor::from_buffer",
            msg,
        }) => msg,
        other => panic!("expected a from_buffer error, got {other:?}"),
    };
    // Misaligned (2 bytes is never a multiple of the ≥ 4-byte alignment).
    let msg = invalid(Tensor::from_buffer(gpu, buffer.clone(), 2, &[1]));
    assert!(msg.contains("byte 2"), "{msg}");
    // Past the end, and a shape whose size overflows.
    invalid(Tensor::from_buffer(gpu, buffer.clone(), 0, &[words + 1]));
    invalid(Tensor::from_buffer(
        gpu,
        buffer.clone(),
        0,
        &[usize::MAX, 2],
    ));
    // An empty view still needs its one word inside the buffer.
    let end = 4 * (2 * a) as u64;
    assert!(Tensor::from_buffer(gpu, buffer.clone(), end, &[0]).is_ok());
    invalid(Tensor::from_buffer(gpu, buffer, 4 * words as u64, &[0]));
    // Not a storage buffer.
    let uniform = raw_buffer(gpu, 64, U::UNIFORM | U::COPY_DST);
    let msg = invalid(Tensor::from_buffer(gpu, uniform, 0, &[4]));
    assert!(msg.contains("STORAGE"), "{msg}");

    // Storage without copy usages: bindable, but reads and writes say why they cannot run.
    let bare = raw_buffer(gpu, 16, U::STORAGE);
    let bare = Tensor::from_buffer(gpu, bare, 0, &[4]).unwrap();
    let err = gpu.write(&bare, &[0.0f32; 4]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { op: "Gpu::write", msg } if msg.contains("COPY_DST")),
        "{err}"
    );
    let err = gpu.read(&bare).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { op: "Gpu::read", msg } if msg.contains("COPY_SRC")),
        "{err}"
    );
}

/// One group of the optimizer, laid out as `Model` lays out its stores: other tensors before and
/// after the quantizer's, each filled with sentinels.
struct Packed {
    group: AdamGroup,
    mine: ParamSlice,
    others: [ParamSlice; 2],
}

impl Packed {
    fn new(gpu: &Gpu, label: &str, len: usize, initial: &[f32]) -> Packed {
        let mut arena = ParamArena::new(gpu);
        let before = arena.push(3).unwrap();
        let mine = arena.push(len).unwrap();
        let after = arena.push(5).unwrap();
        let group = arena.build(gpu, label).unwrap();
        for s in [before, after] {
            group.write(gpu, s, &sentinel(s.len)).unwrap();
        }
        group.write(gpu, mine, initial).unwrap();
        Packed {
            group,
            mine,
            others: [before, after],
        }
    }

    /// Asserts the quantizer's words hold `mine` and every other tensor kept its sentinels.
    fn check(&self, gpu: &Gpu, mine: &[f32]) {
        let words = gpu.read(self.group.params()).unwrap();
        assert_eq!(self.mine.of(&words).unwrap(), mine);
        for s in self.others {
            assert_eq!(s.of(&words).unwrap(), sentinel(s.len), "neighbour at {s:?}");
        }
    }
}

#[test]
fn quantizer_setters_in_a_packed_group_change_only_their_words() {
    let gpu = gpu();
    let channels = 3;
    let logits = [6.0, 5.0, 4.0, 3.0, 6.0, 6.0, 6.0];
    let scales = Packed::new(gpu, "scales", 1, &[1.5]);
    let gates = Packed::new(gpu, "gates", 4 + channels, &logits);
    let storage = QuantizerStorage {
        x_max: scales.group.param_view(gpu, scales.mine, &[1]).unwrap(),
        logits: gates
            .group
            .param_view(gpu, gates.mine, &[4 + channels])
            .unwrap(),
        x_max_grad: scales.group.grad_view(gpu, scales.mine, &[1]).unwrap(),
        logit_grad: gates
            .group
            .grad_view(gpu, gates.mine, &[4 + channels])
            .unwrap(),
    };
    let config = QuantizerConfig {
        len: 6 * channels,
        prune_channels: channels,
        signed: true,
        x_max: 1.5,
        chain_logits: [6.0, 5.0, 4.0, 3.0],
        prune_logit: 6.0,
        mac_ratio: 1.0,
        id: 0,
    };
    let q = Quantizer::with_storage(gpu, config, storage).unwrap();
    scales.check(gpu, &[1.5]);
    gates.check(gpu, &logits);

    q.set_x_max(gpu, 0.25).unwrap();
    let new_logits = [-1.0, 2.0, -3.0, 4.0, -5.0, 0.5, 7.0];
    q.set_logits(gpu, &new_logits).unwrap();
    scales.check(gpu, &[0.25]);
    gates.check(gpu, &new_logits);
    assert_eq!(
        q.read_state(gpu).unwrap(),
        QuantizerState {
            x_max: 0.25,
            chain_logits: [-1.0, 2.0, -3.0, 4.0],
            prune_logits: vec![-5.0, 0.5, 7.0],
        }
    );

    // Refused values leave the group untouched.
    assert!(matches!(
        q.set_x_max(gpu, -1.0),
        Err(Error::InvalidRange { .. })
    ));
    assert!(matches!(
        q.set_logits(gpu, &new_logits[..4]),
        Err(Error::Shape { .. })
    ));
    scales.check(gpu, &[0.25]);
    gates.check(gpu, &new_logits);
}
