// Integer inference of an exported Bayesian Bits model, mirroring src/export/infer.rs bit for
// bit. Activations are NHWC with channels padded to 4: packed u8 codes (4 per u32) or f32.
// One invocation computes 4 output channels of one output pixel.
//
// Integer path: acc = sum over the window of dot4I8Packed(w, a ^ 0x80808080) + 128 * sum(w),
// i.e. sum w*a with unsigned activations a (a ^ 0x80 = a - 128 as i8), exact in i32. Weight rows
// are packed at 2, 4 or 8 bits (4 lanes of one window position and channel group are 4*wbits
// consecutive bits of a row); 2- and 4-bit codes are sign-extended into 8-bit lanes here.
// Float path: f32 sum, in window order, of products of operands split into 12-bit halves
// (exact products, so fused and unfused multiply-adds agree). Residual adds use the same split
// products; global average pooling writes plain f32 sums in pixel order.

requires packed_4x8_integer_dot_product;

struct Params {
    n: u32,
    h: u32,
    w: u32,
    cin4: u32,
    k: u32,
    pad: u32,
    oh: u32,
    ow: u32,
    cout: u32,
    cout4: u32,
    row_words: u32,
    wbits: u32,
    // 0: code clamp(rne(t*m), min_code, max_code); 1: real clamp(t*m, lo, hi); 2: logits t*m.
    out_mode: u32,
    max_code: i32,
    total: u32,
    stride: u32,
    m: f32,
    hi: f32,
    flush_below: f32,
    lo: f32,
    min_code: i32,
    // Residual add: the second input's multiplier.
    m2: f32,
    // Storage of the (first) input, the add's second input and the output: 0 packed u8 codes,
    // 1 f32 words, 2 packed i8 codes.
    a_repr: u32,
    b_repr: u32,
    y_repr: u32,
    // Input words a weight row reads per window position, and whether rows start at their own
    // word (grouped convolutions: row_word0) rather than at 0.
    win4: u32,
    grouped: u32,
    // ReLU6's bound in output steps (f32 max without).
    cap: f32,
    // Pooling: window width (p.k is its height; p.stride and p.pad as for convolutions).
    kw: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const PACKED_U8: u32 = 0u;
const F32_WORDS: u32 = 1u;
const PACKED_I8: u32 = 2u;

// Four packed 8-bit codes, unsigned or signed as `repr` says.
fn unpack_codes(word: u32, repr: u32) -> vec4<f32> {
    if repr == PACKED_I8 {
        return vec4<f32>(unpack4xI8(word));
    }
    return vec4<f32>(unpack4xU8(word));
}

fn pack_codes(v: vec4<f32>, repr: u32) -> u32 {
    if repr == PACKED_I8 {
        return pack4xI8(vec4<i32>(v));
    }
    return pack4xU8(vec4<u32>(v));
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x_packed: array<u32>;
@group(0) @binding(2) var<storage, read> x_f32: array<f32>;
@group(0) @binding(3) var<storage, read> w_packed: array<u32>;
@group(0) @binding(4) var<storage, read> w_f32: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read> wsum: array<i32>;
@group(0) @binding(7) var<storage, read_write> y_packed: array<u32>;
@group(0) @binding(8) var<storage, read_write> y_f32: array<f32>;
// Residual add and global pooling: inputs and output as words (packed codes or f32 bits).
@group(0) @binding(9) var<storage, read> a_words: array<u32>;
@group(0) @binding(10) var<storage, read> b_words: array<u32>;
@group(0) @binding(11) var<storage, read_write> y_words: array<u32>;
// Grouped convolutions: the first input word of each weight row's window.
@group(0) @binding(12) var<storage, read> row_word0: array<u32>;

struct Pixel {
    valid: bool,
    n: u32,
    oy: u32,
    ox: u32,
    o4: u32,
    index: u32,
}

fn pixel(wg: vec3<u32>, nwg: vec3<u32>, t: u32) -> Pixel {
    let index = (wg.x + wg.y * nwg.x) * WG + t;
    var px: Pixel;
    px.valid = index < p.total;
    px.index = index;
    px.o4 = index % p.cout4;
    let pix = index / p.cout4;
    px.ox = pix % p.ow;
    px.oy = (pix / p.ow) % p.oh;
    px.n = pix / (p.ow * p.oh);
    return px;
}

// Input word index of window position (ky, kx), or -1 where the window reads padding.
fn input_base(px: Pixel, ky: u32, kx: u32) -> i32 {
    let iy = i32(px.oy * p.stride + ky) - i32(p.pad);
    let ix = i32(px.ox * p.stride + kx) - i32(p.pad);
    if iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w) {
        return -1;
    }
    return ((i32(px.n) * i32(p.h) + iy) * i32(p.w) + ix) * i32(p.cin4);
}

// Four i8 lanes of weight group g (window position * cin4 + channel group) of row o.
fn weight_lanes(o: u32, g: u32) -> u32 {
    if p.wbits == 8u {
        return w_packed[o * p.row_words + g];
    }
    let bit = g * 4u * p.wbits;
    let word = bitcast<i32>(w_packed[o * p.row_words + bit / 32u]);
    let s = bit % 32u;
    let b = p.wbits;
    return pack4xI8(vec4<i32>(
        extractBits(word, s, b),
        extractBits(word, s + b, b),
        extractBits(word, s + 2u * b, b),
        extractBits(word, s + 3u * b, b),
    ));
}

fn acc_int(px: Pixel) -> vec4<f32> {
    if p.grouped != 0u {
        return acc_int_grouped(px);
    }
    var acc = vec4<i32>(0);
    for (var ky = 0u; ky < p.k; ky++) {
        for (var kx = 0u; kx < p.k; kx++) {
            let base = input_base(px, ky, kx);
            for (var c4 = 0u; c4 < p.cin4; c4++) {
                var a = 0u;
                if base >= 0 {
                    a = x_packed[u32(base) + c4];
                }
                // Unsigned codes a enter as a - 128 (a ^ 0x80 as i8); padding reads code 0 as
                // well, so the 128 * sum(w) correction covers every lane.
                if p.a_repr == PACKED_U8 {
                    a = a ^ 0x80808080u;
                }
                let g = (ky * p.k + kx) * p.win4 + c4;
                for (var j = 0u; j < 4u; j++) {
                    let o = px.o4 * 4u + j;
                    if o < p.cout {
                        acc[j] += dot4I8Packed(weight_lanes(o, g), a);
                    }
                }
            }
        }
    }
    return with_wsum(px, acc);
}

// Grouped rows read their own window (row_word0[o] .. + win4 words per pixel), one row at a
// time.
fn acc_int_grouped(px: Pixel) -> vec4<f32> {
    var acc = vec4<i32>(0);
    for (var j = 0u; j < 4u; j++) {
        let o = px.o4 * 4u + j;
        if o >= p.cout {
            continue;
        }
        for (var ky = 0u; ky < p.k; ky++) {
            for (var kx = 0u; kx < p.k; kx++) {
                let base = input_base(px, ky, kx);
                for (var c4 = 0u; c4 < p.win4; c4++) {
                    var a = 0u;
                    if base >= 0 {
                        a = x_packed[u32(base) + row_word0[o] + c4];
                    }
                    let g = (ky * p.k + kx) * p.win4 + c4;
                    if p.a_repr == PACKED_U8 {
                        a = a ^ 0x80808080u;
                    }
                    acc[j] += dot4I8Packed(weight_lanes(o, g), a);
                }
            }
        }
    }
    return with_wsum(px, acc);
}

fn with_wsum(px: Pixel, acc: vec4<i32>) -> vec4<f32> {
    var out = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let o = px.o4 * 4u + j;
        if o < p.cout {
            out[j] = f32(acc[j] + select(0, 128 * wsum[o], p.a_repr == PACKED_U8));
        }
    }
    return out;
}

fn hi12(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) & 0xFFFFF000u);
}

fn mac_split(acc: f32, w: f32, x: f32) -> f32 {
    let wh = hi12(w);
    let wl = w - wh;
    let xh = hi12(x);
    let xl = x - xh;
    var a = acc + wh * xh;
    a += wh * xl;
    a += wl * xh;
    return a + wl * xl;
}

// Adds window lanes lane0..lane0+3 (input values xv) to the 4 output channels' sums.
fn float_lanes(px: Pixel, acc_in: vec4<f32>, lane0: u32, xv: vec4<f32>) -> vec4<f32> {
    var acc = acc_in;
    let row = p.k * p.k * p.win4 * 4u;
    for (var j = 0u; j < 4u; j++) {
        let o = px.o4 * 4u + j;
        if o < p.cout {
            acc[j] = float_row_lanes(o * row + lane0, acc[j], xv);
        }
    }
    return acc;
}

fn float_row_lanes(wb: u32, acc: f32, xv: vec4<f32>) -> f32 {
    var a = acc;
    for (var l = 0u; l < 4u; l++) {
        a = mac_split(a, w_f32[wb + l], xv[l]);
    }
    return a;
}

// Input word i as 4 values, from the packed or the f32 binding.
fn packed_values(i: u32) -> vec4<f32> {
    return unpack_codes(x_packed[i], p.a_repr);
}

fn f32_values(i: u32) -> vec4<f32> {
    let f = 4u * i;
    return vec4<f32>(x_f32[f], x_f32[f + 1u], x_f32[f + 2u], x_f32[f + 3u]);
}

// Each entry point reads only its own input binding (automatic layouts list what is used).
fn acc_float_packed(px: Pixel) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    let row = p.k * p.k * p.win4 * 4u;
    for (var ky = 0u; ky < p.k; ky++) {
        for (var kx = 0u; kx < p.k; kx++) {
            let base = input_base(px, ky, kx);
            if base < 0 {
                continue;
            }
            for (var c4 = 0u; c4 < p.win4; c4++) {
                let lane0 = ((ky * p.k + kx) * p.win4 + c4) * 4u;
                if p.grouped == 0u {
                    acc = float_lanes(px, acc, lane0, packed_values(u32(base) + c4));
                } else {
                    for (var j = 0u; j < 4u; j++) {
                        let o = px.o4 * 4u + j;
                        if o < p.cout {
                            let xv = packed_values(u32(base) + row_word0[o] + c4);
                            acc[j] = float_row_lanes(o * row + lane0, acc[j], xv);
                        }
                    }
                }
            }
        }
    }
    return acc;
}

fn acc_float_f32(px: Pixel) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    let row = p.k * p.k * p.win4 * 4u;
    for (var ky = 0u; ky < p.k; ky++) {
        for (var kx = 0u; kx < p.k; kx++) {
            let base = input_base(px, ky, kx);
            if base < 0 {
                continue;
            }
            for (var c4 = 0u; c4 < p.win4; c4++) {
                let lane0 = ((ky * p.k + kx) * p.win4 + c4) * 4u;
                if p.grouped == 0u {
                    acc = float_lanes(px, acc, lane0, f32_values(u32(base) + c4));
                } else {
                    for (var j = 0u; j < 4u; j++) {
                        let o = px.o4 * 4u + j;
                        if o < p.cout {
                            let xv = f32_values(u32(base) + row_word0[o] + c4);
                            acc[j] = float_row_lanes(o * row + lane0, acc[j], xv);
                        }
                    }
                }
            }
        }
    }
    return acc;
}

// The number written for y = t*m. Zero results (and -0) become +0 explicitly: min/max of
// signed zeros is implementation-defined.
fn write_out(y: f32) -> f32 {
    if p.out_mode == 0u {
        let v = clamp(round(min(y, p.cap)), f32(p.min_code), f32(p.max_code));
        return select(v, 0.0, v == 0.0);
    }
    if p.out_mode == 1u {
        let v = clamp(y, p.lo, p.hi);
        return select(0.0, v, abs(v) >= p.flush_below);
    }
    return y;
}

fn finish(px: Pixel, acc: vec4<f32>) -> vec4<f32> {
    var out = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let o = px.o4 * 4u + j;
        if o < p.cout {
            out[j] = write_out((acc[j] + bias[o]) * p.m);
        }
    }
    return out;
}

fn store_packed(px: Pixel, v: vec4<f32>) {
    y_packed[px.index] = pack_codes(v, p.y_repr);
}

fn store_f32(px: Pixel, v: vec4<f32>) {
    let i = 4u * px.index;
    y_f32[i] = v.x;
    y_f32[i + 1u] = v.y;
    y_f32[i + 2u] = v.z;
    y_f32[i + 3u] = v.w;
}

@compute @workgroup_size(64)
fn int_to_packed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let px = pixel(wg, nwg, t);
    if px.valid {
        store_packed(px, finish(px, acc_int(px)));
    }
}

@compute @workgroup_size(64)
fn int_to_f32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let px = pixel(wg, nwg, t);
    if px.valid {
        store_f32(px, finish(px, acc_int(px)));
    }
}

@compute @workgroup_size(64)
fn float_packed_to_packed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let px = pixel(wg, nwg, t);
    if px.valid {
        store_packed(px, finish(px, acc_float_packed(px)));
    }
}

@compute @workgroup_size(64)
fn float_packed_to_f32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let px = pixel(wg, nwg, t);
    if px.valid {
        store_f32(px, finish(px, acc_float_packed(px)));
    }
}

@compute @workgroup_size(64)
fn float_f32_to_packed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let px = pixel(wg, nwg, t);
    if px.valid {
        store_packed(px, finish(px, acc_float_f32(px)));
    }
}

@compute @workgroup_size(64)
fn float_f32_to_f32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let px = pixel(wg, nwg, t);
    if px.valid {
        store_f32(px, finish(px, acc_float_f32(px)));
    }
}

// Pooling over NHWC: window p.k x p.kw, stride p.stride, padding p.pad; p.h, p.w: input
// size, p.oh, p.ow: output; p.cin4: words (packed) or vec4s (f32) per pixel; p.total = n * oh *
// ow * cin4. The window is visited row by row, skipping padding.
struct Window {
    // Input index of the window's first row and column (may lie in the padding).
    n: u32,
    y0: i32,
    x0: i32,
    c4: u32,
}

fn pool_window(index: u32) -> Window {
    var win: Window;
    win.c4 = index % p.cin4;
    let pix = index / p.cin4;
    let ox = pix % p.ow;
    let oy = (pix / p.ow) % p.oh;
    win.n = pix / (p.ow * p.oh);
    win.y0 = i32(oy * p.stride) - i32(p.pad);
    win.x0 = i32(ox * p.stride) - i32(p.pad);
    return win;
}

// The input index of window position t, or -1 in the padding.
fn window_source(win: Window, t: u32) -> i32 {
    let y = win.y0 + i32(t / p.kw);
    let x = win.x0 + i32(t % p.kw);
    if y < 0 || x < 0 || y >= i32(p.h) || x >= i32(p.w) {
        return -1;
    }
    return ((i32(win.n) * i32(p.h) + y) * i32(p.w) + x) * i32(p.cin4) + i32(win.c4);
}

@compute @workgroup_size(64)
fn pool_packed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let index = (wg.x + wg.y * nwg.x) * WG + t;
    if index >= p.total {
        return;
    }
    let win = pool_window(index);
    // -128 is below every code a window holds.
    var m = vec4<f32>(-128.0);
    for (var q = 0u; q < p.k * p.kw; q++) {
        let s = window_source(win, q);
        if s >= 0 {
            m = max(m, unpack_codes(x_packed[u32(s)], p.a_repr));
        }
    }
    y_packed[index] = pack_codes(m, p.a_repr);
}

@compute @workgroup_size(64)
fn pool_f32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let index = (wg.x + wg.y * nwg.x) * WG + t;
    if index >= p.total {
        return;
    }
    let win = pool_window(index);
    var m = vec4<f32>(-3.4028235e38);
    for (var q = 0u; q < p.k * p.kw; q++) {
        let s = window_source(win, q);
        if s >= 0 {
            let i = 4u * u32(s);
            m = max(m, vec4<f32>(x_f32[i], x_f32[i + 1u], x_f32[i + 2u], x_f32[i + 3u]));
        }
    }
    let o = 4u * index;
    y_f32[o] = m.x;
    y_f32[o + 1u] = m.y;
    y_f32[o + 2u] = m.z;
    y_f32[o + 3u] = m.w;
}

// Four channels (channel group `index`) of a value stored as packed codes or f32 words.
fn load_a(index: u32) -> vec4<f32> {
    if p.a_repr != F32_WORDS {
        return unpack_codes(a_words[index], p.a_repr);
    }
    let i = 4u * index;
    return bitcast<vec4<f32>>(vec4<u32>(a_words[i], a_words[i + 1u], a_words[i + 2u], a_words[i + 3u]));
}

fn load_b(index: u32) -> vec4<f32> {
    if p.b_repr != F32_WORDS {
        return unpack_codes(b_words[index], p.b_repr);
    }
    let i = 4u * index;
    return bitcast<vec4<f32>>(vec4<u32>(b_words[i], b_words[i + 1u], b_words[i + 2u], b_words[i + 3u]));
}

fn store_words(index: u32, v: vec4<f32>) {
    if p.y_repr != F32_WORDS {
        y_words[index] = pack_codes(v, p.y_repr);
        return;
    }
    let i = 4u * index;
    let u = bitcast<vec4<u32>>(v);
    y_words[i] = u.x;
    y_words[i + 1u] = u.y;
    y_words[i + 2u] = u.z;
    y_words[i + 3u] = u.w;
}

// Residual add of one channel group: t = a*m + b*m2 with split products, then write_out;
// p.total = n * pixels * c4.
@compute @workgroup_size(64)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let index = (wg.x + wg.y * nwg.x) * WG + t;
    if index >= p.total {
        return;
    }
    let a = load_a(index);
    let b = load_b(index);
    var out = vec4<f32>(0.0);
    for (var l = 0u; l < 4u; l++) {
        out[l] = write_out(mac_split(mac_split(0.0, p.m, a[l]), p.m2, b[l]));
    }
    store_words(index, out);
}

// Average pooling as sums: per output pixel and channel group, the f32 sum over the window
// in row-major order (padding skipped), packed or f32 input, f32 output.
@compute @workgroup_size(64)
fn avg_pool(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let index = (wg.x + wg.y * nwg.x) * WG + t;
    if index >= p.total {
        return;
    }
    let win = pool_window(index);
    var acc = vec4<f32>(0.0);
    for (var q = 0u; q < p.k * p.kw; q++) {
        let s = window_source(win, q);
        if s >= 0 {
            acc = acc + load_a(u32(s));
        }
    }
    store_words(index, acc);
}
