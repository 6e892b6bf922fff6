// Fused non-differentiable updates (gpu/ops/update.py; the NumPy twin is ref/ops/update.py).
//
// One thread per element; a thread reads and writes only its own element, so p, buf and v are
// updated in place. The operations run in the order of the NumPy code, so the results agree with
// it up to the GPU's fused multiply-adds.

// torch.optim.SGD, in place on p and buf (buf is not touched when momentum = 0):
//     d = g + weight_decay p;  buf = d (first) | momentum buf + (1 - dampening) d;
//     d = d + momentum buf (nesterov) | buf (momentum > 0);  p = p - lr d
template <typename T>
__global__ void sgd_update(T* p, const T* g, T* buf, const T lr, const T momentum,
                           const T one_minus_dampening, const T weight_decay, const int nesterov,
                           const int first, const long long total)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        T d = g[t];
        if (weight_decay != T(0)) d = d + weight_decay * p[t];
        if (momentum != T(0)) {
            const T b = first ? d : buf[t] * momentum + one_minus_dampening * d;
            buf[t] = b;
            d = nesterov ? d + momentum * b : b;
        }
        p[t] = p[t] - lr * d;
    }
}

// tfa SGDW (decoupled decay), in place on p and v (v is not touched when momentum = 0):
//     p = p - decay p;  v = momentum v - lr g;  p = p + (momentum v - lr g) (nesterov) | p + v
//     momentum = 0:  p = p - lr g
template <typename T>
__global__ void sgdw_update(T* p, const T* g, T* v, const T lr, const T decay, const T momentum,
                            const int nesterov, const long long total)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        T q = p[t];
        q = q - decay * q;
        if (momentum == T(0)) {
            q = q - lr * g[t];
        } else {
            const T u = v[t] * momentum - lr * g[t];
            v[t] = u;
            q = nesterov ? q + (momentum * u - lr * g[t]) : q + u;
        }
        p[t] = q;
    }
}

// BCS's update of the connection parameters theta (= p): the SGDW step above without nesterov,
// then noise where p was > 0 before the step (the active connections), in place on p and v:
//     a = [p > 0];  p = p - decay p;  v = momentum v - lr g;  p = p + v;  p = p + noise_std noise a
//     momentum = 0:  p = p - decay p - lr g  (v not touched)
template <typename T>
__global__ void sgdw_noise_update(T* p, const T* g, T* v, const T* noise, const T lr,
                                  const T decay, const T noise_std, const T momentum,
                                  const long long total)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const T before = p[t];
        T q = before - decay * before;
        if (momentum == T(0)) {
            q = q - lr * g[t];
        } else {
            const T u = v[t] * momentum - lr * g[t];
            v[t] = u;
            q = q + u;
        }
        if (before > T(0)) q = q + noise_std * noise[t];
        p[t] = q;
    }
}

// numpy.clip(value, lo, hi) for lo <= hi: NaN stays NaN.
template <typename T>
__device__ T clip(const T value, const T lo, const T hi)
{
    return value < lo ? lo : (value > hi ? hi : value);
}

// One PGD step on a batch of n samples of m elements each (total = n m), per-sample alpha, eps:
//     y = clip(x0 + clip(x + alpha sign(g) - x0, -eps, eps), 0, 1)
// sign as numpy.sign: sign(0) = 0 and NaN stays NaN (0 * g keeps it).
template <typename T>
__global__ void pgd_step(const T* x, const T* g, const T* x0, const T* alpha, const T* eps, T* y,
                         const long long total, const long long m)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const long long i = t / m;
        const T sign = g[t] > T(0) ? T(1) : (g[t] < T(0) ? T(-1) : T(0) * g[t]);
        const T step = (x[t] + alpha[i] * sign) - x0[t];
        y[t] = clip(x0[t] + clip(step, -eps[i], eps[i]), T(0), T(1));
    }
}
