// Optimisers over one packed parameter group, each mirroring its CPU reference.
//
// Adam with PyTorch semantics (spec §4.2), mirroring reference::layers::AdamState::update: no weight decay, no AMSGrad, eps added after the bias
// correction. The host writes the per-step values (lr and the bias corrections 1 - beta^t,
// computed in f64 as PyTorch does) into the uniform once per step.

struct AdamParams {
    len: u32,
    lr: f32,
    // 1 - beta1^t, 1 - beta2^t.
    bias1: f32,
    bias2: f32,
    beta1: f32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;

override PER_THREAD: u32 = 4u;

@group(0) @binding(0) var<uniform> params: AdamParams;
@group(0) @binding(1) var<storage, read_write> p: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let base = (wg.x + wg.y * nwg.x) * WG * PER_THREAD + t;
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if i < params.len {
            let g = grad[i];
            let m_new = params.beta1 * m[i] + params.one_minus_beta1 * g;
            let v_new = params.beta2 * v[i] + params.one_minus_beta2 * g * g;
            m[i] = m_new;
            v[i] = v_new;
            let m_hat = m_new / params.bias1;
            let v_hat = v_new / params.bias2;
            p[i] = p[i] - params.lr * m_hat / (sqrt(v_hat) + params.eps);
        }
    }
}

// SGD with PyTorch semantics (torch.optim.SGD, dampening 0), mirroring
// reference::layers::SgdState::update: d = g (+ wd·p); with momentum buf = d on the first step,
// else mu·buf + d, then d = buf, or d + mu·buf with Nesterov; p -= lr·d. The flags are uniform
// across the dispatch, so the branches never diverge.

struct SgdParams {
    len: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    // 1 on the group's first step (the buffer starts as a copy of d).
    first: u32,
    nesterov: u32,
    _pad0: u32,
    _pad1: u32,
}

// The momentum buffer is binding 3 (`m`); the uniform has its own binding, as no two resource
// variables of a module may share one.
@group(0) @binding(5) var<uniform> sgd_params: SgdParams;

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let base = (wg.x + wg.y * nwg.x) * WG * PER_THREAD + t;
    let mu = sgd_params.momentum;
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if i < sgd_params.len {
            var d = grad[i];
            if sgd_params.weight_decay != 0.0 {
                d = d + sgd_params.weight_decay * p[i];
            }
            if mu != 0.0 {
                var b = d;
                if sgd_params.first == 0u {
                    b = mu * m[i] + d;
                }
                m[i] = b;
                if sgd_params.nesterov != 0u {
                    d = d + mu * b;
                } else {
                    d = b;
                }
            }
            p[i] = p[i] - sgd_params.lr * d;
        }
    }
}
