// Range initialisation (spec §1.2, §7.1): the smallest and largest value of a tensor, each
// widened to include 0, as the official range setter reads them before the first step. Two
// dispatches: per workgroup a partial (min, max) of PER_THREAD · 256 consecutive elements, then
// one workgroup combines the partials. Minimum and maximum are exact in any order, so the result
// equals the CPU reference's bit for bit.

struct RangeParams {
    len: u32,
    groups: u32,
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 256u;

override PER_THREAD: u32 = 16u;

@group(0) @binding(0) var<uniform> params: RangeParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> x_max: array<f32>;
@group(0) @binding(4) var<storage, read_write> x_min: array<f32>;

var<workgroup> lo: array<f32, 256>;
var<workgroup> hi: array<f32, 256>;

// Tree reduction of lo/hi over the workgroup; the result lands in lo[0], hi[0].
fn reduce_workgroup(t: u32) {
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if t < stride {
            lo[t] = min(lo[t], lo[t + stride]);
            hi[t] = max(hi[t], hi[t + stride]);
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn partials_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let group = wg.x + wg.y * nwg.x;
    let base = group * WG * PER_THREAD + t;
    // Starting from 0 widens the range to include 0, as the official setter does.
    var mn = 0.0;
    var mx = 0.0;
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if i < params.len {
            mn = min(mn, x[i]);
            mx = max(mx, x[i]);
        }
    }
    lo[t] = mn;
    hi[t] = mx;
    reduce_workgroup(t);
    if t == 0u && group < params.groups {
        partials[group] = vec2<f32>(lo[0], hi[0]);
    }
}

@compute @workgroup_size(256)
fn finalize(@builtin(local_invocation_index) t: u32) {
    var mn = 0.0;
    var mx = 0.0;
    for (var g = t; g < params.groups; g += WG) {
        mn = min(mn, partials[g].x);
        mx = max(mx, partials[g].y);
    }
    lo[t] = mn;
    hi[t] = mx;
    reduce_workgroup(t);
    if t == 0u {
        x_max[0] = hi[0];
        x_min[0] = lo[0];
    }
}
