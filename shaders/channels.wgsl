// Per-channel layouts and fixed-order reductions shared by the epilogue and batch-norm kernels.
// The host prepends this file (src/kernels/channels.rs holds the matching ChannelParams).
//
// A tensor is [n, channels, hw]: NCHW activations (hw = h*w), [n, c] activations (hw = 1) and
// weights [c_out, k] (n = 1, hw = k). Element i belongs to channel (i / hw) % channels.
// Reductions over a channel's m = n*hw elements run in two levels: a workgroup sums one slice of
// at most slice_len elements of one channel with a fixed tree and writes one partial; a second
// kernel adds a channel's partials in slice order. No atomics: results are reproducible bit for bit.

struct ChannelParams {
    len: u32,
    channels: u32,
    hw: u32,
    // Elements per channel, n * hw.
    m: u32,
    slices_per_channel: u32,
    slice_len: u32,
    num_slices: u32,
    // FLAG_* bits.
    flags: u32,
}

const WG: u32 = 256u;
const FLAG_RELU: u32 = 1u;
const FLAG_UNIT_SCALE: u32 = 2u;
const FLAG_RELU6: u32 = 4u;

// Elements per thread of the elementwise entry points.
override PER_THREAD: u32 = 4u;

@group(0) @binding(0) var<uniform> cp: ChannelParams;
// One vec2 per slice.
@group(0) @binding(1) var<storage, read_write> partials: array<vec2<f32>>;

fn channel_of(i: u32) -> u32 {
    return (i / cp.hw) % cp.channels;
}

// Flat index of element j (in order n, then position) of channel c.
fn channel_element(c: u32, j: u32) -> u32 {
    return ((j / cp.hw) * cp.channels + c) * cp.hw + j % cp.hw;
}

// First element of this thread in an elementwise kernel; it handles base + k * WG, k < PER_THREAD.
fn element_base(wg: vec3<u32>, nwg: vec3<u32>, t: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG * PER_THREAD + t;
}

// Linear workgroup index on a 2-D grid.
fn workgroup_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// Elements [start, end) of one channel covered by one slice.
struct Slice {
    channel: u32,
    start: u32,
    end: u32,
}

fn slice_range(slice: u32) -> Slice {
    let channel = slice / cp.slices_per_channel;
    let start = (slice % cp.slices_per_channel) * cp.slice_len;
    return Slice(channel, start, min(start + cp.slice_len, cp.m));
}

var<workgroup> red: array<vec2<f32>, WG>;

// Values each thread of the first reduction level adds.
const RED_GROUP: u32 = 16u;

// Fixed-order sum over the workgroup; every thread receives the total. WG / RED_GROUP threads
// add RED_GROUP consecutive values each, then thread 0 adds their results in order: three
// barriers where a tree takes eight (on CPU adapters the barriers are what a reduction costs).
fn workgroup_sum(t: u32, v: vec2<f32>) -> vec2<f32> {
    red[t] = v;
    workgroupBarrier();
    if t < WG / RED_GROUP {
        var sum = red[t * RED_GROUP];
        for (var j = 1u; j < RED_GROUP; j++) {
            sum += red[t * RED_GROUP + j];
        }
        red[t * RED_GROUP] = sum;
    }
    workgroupBarrier();
    if t == 0u {
        var sum = red[0];
        for (var j = 1u; j < WG / RED_GROUP; j++) {
            sum += red[j * RED_GROUP];
        }
        red[0] = sum;
    }
    workgroupBarrier();
    let total = red[0];
    workgroupBarrier();
    return total;
}
