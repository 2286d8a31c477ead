// Elementwise kernels of residual networks, mirroring src/reference/layers/pool.rs: the residual
// add `y = a + b` of a shortcut join, and the gradient accumulation `dst += src` of a value read by
// two layers (in place: a buffer cannot be bound both read-only and read-write in one dispatch).
// One element per thread and iteration, no cross-thread sums: the results are exact.

struct ElementwiseParams {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;

override PER_THREAD: u32 = 4u;

@group(0) @binding(0) var<uniform> params: ElementwiseParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> src: array<f32>;
@group(0) @binding(5) var<storage, read_write> dst: array<f32>;

fn element_base(wg: vec3<u32>, nwg: vec3<u32>, t: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG * PER_THREAD + t;
}

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let base = element_base(wg, nwg, t);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if i < params.len {
            y[i] = a[i] + b[i];
        }
    }
}

@compute @workgroup_size(256)
fn accumulate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let base = element_base(wg, nwg, t);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if i < params.len {
            dst[i] += src[i];
        }
    }
}
