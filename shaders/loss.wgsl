// Softmax cross-entropy averaged over the batch, mirroring src/reference/layers/loss.rs: per row
// z_max is the first maximum (also the prediction), S = sum_j exp(z_j - z_max) in order j,
// loss_row = ln S - (z_label - z_max), dlogits = (exp(z_j - z_max) / S - onehot) / n.
// One workgroup: thread t takes rows t, t + 256, ...; thread 0 then adds the 256 per-thread
// sums in order and accumulates into the metrics buffer, so the result is reproducible bit for bit.
// A row whose label is >= classes adds no loss and no gradient; it is counted in metrics[4].

struct LossParams {
    n: u32,
    classes: u32,
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> params: LossParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
// [loss sum (f32 bits), correct, examples, batches, invalid labels], running sums.
@group(0) @binding(4) var<storage, read_write> metrics: array<u32>;

var<workgroup> loss_part: array<f32, WG>;
// Correct predictions, invalid labels.
var<workgroup> count_part: array<vec2<u32>, WG>;

@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_index) t: u32) {
    let classes = params.classes;
    let inv_n = 1.0 / f32(params.n);
    var loss = 0.0;
    var counts = vec2<u32>(0u);
    for (var row = t; row < params.n; row += WG) {
        let base = row * classes;
        var best = 0u;
        for (var j = 1u; j < classes; j++) {
            if logits[base + j] > logits[base + best] {
                best = j;
            }
        }
        let z_max = logits[base + best];
        var sum = 0.0;
        for (var j = 0u; j < classes; j++) {
            sum += exp(logits[base + j] - z_max);
        }
        let label = labels[row];
        let valid = label < classes;
        if valid {
            loss += log(sum) - (logits[base + label] - z_max);
        }
        counts += vec2<u32>(select(0u, 1u, best == label), select(1u, 0u, valid));
        for (var j = 0u; j < classes; j++) {
            let onehot = select(0.0, 1.0, j == label);
            dlogits[base + j] = select(0.0, (exp(logits[base + j] - z_max) / sum - onehot) * inv_n, valid);
        }
    }
    loss_part[t] = loss;
    count_part[t] = counts;
    workgroupBarrier();
    if t == 0u {
        var total = 0.0;
        var count = vec2<u32>(0u);
        for (var k = 0u; k < WG; k++) {
            total += loss_part[k];
            count += count_part[k];
        }
        metrics[0] = bitcast<u32>(bitcast<f32>(metrics[0]) + total);
        metrics[1] += count.x;
        metrics[2] += params.n;
        metrics[3] += 1u;
        metrics[4] += count.y;
    }
}
