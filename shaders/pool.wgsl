// 2x2 max-pool with stride 2 over NCHW (an odd last row or column is dropped, as PyTorch),
// mirroring src/reference/layers/pool.rs: the window is scanned in row-major order and only a
// strictly greater value replaces the maximum, so ties go to the first maximum. The forward
// writes the flat input index of each maximum; the backward gathers: every input element reads
// the one window it can belong to (stride = window), so dx is written completely, without
// atomics or a separate clear.

struct PoolParams {
    // Output elements n * c * oh * ow.
    out_len: u32,
    // Input elements n * c * h * w.
    in_len: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 256u;

override PER_THREAD: u32 = 4u;

@group(0) @binding(0) var<uniform> params: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(4) var<storage, read> argmax_in: array<u32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;

fn element_base(wg: vec3<u32>, nwg: vec3<u32>, t: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG * PER_THREAD + t;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let base = element_base(wg, nwg, t);
    for (var k = 0u; k < PER_THREAD; k++) {
        let o = base + k * WG;
        if o < params.out_len {
            let plane = o / (params.oh * params.ow);
            let r = o % (params.oh * params.ow);
            let top_left = (plane * params.h + 2u * (r / params.ow)) * params.w + 2u * (r % params.ow);
            var best = top_left;
            let window = array<u32, 3>(top_left + 1u, top_left + params.w, top_left + params.w + 1u);
            for (var e = 0u; e < 3u; e++) {
                if x[window[e]] > x[best] {
                    best = window[e];
                }
            }
            y[o] = x[best];
            argmax[o] = best;
        }
    }
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let base = element_base(wg, nwg, t);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if i < params.in_len {
            let plane = i / (params.h * params.w);
            let r = i % (params.h * params.w);
            let oy = (r / params.w) / 2u;
            let ox = (r % params.w) / 2u;
            var g = 0.0;
            if oy < params.oh && ox < params.ow {
                let o = (plane * params.oh + oy) * params.ow + ox;
                if argmax_in[o] == i {
                    g = dy[o];
                }
            }
            dx[i] = g;
        }
    }
}
