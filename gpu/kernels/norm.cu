// Batch normalisation (gpu/ops/norm.py): per-channel statistics, apply, and backward.
//
// Notation as in ref/ops/norm.py: x viewed as (n, c, s) (s = h w, or 1 for (n, c) input); every
// statistic is per channel ch over its m = n s values, the k-th of which (0 <= k < m) is
//     x[(k / s) c s + ch s + k % s].
//     batch_norm_stats:     mean = sum x / m,   var = sum (x - mean)^2 / m          (two passes)
//     batch_norm_apply:     y = (x - mean) scale + shift    (scale = weight / sqrt(var + eps))
//     batch_norm_sums:      gbias = sum gy,   gweight = sum gy (x - mean) inv_std
//     batch_norm_backward:  gx = scale (gy - gbias / m - (x - mean) inv_std gweight / m)
// The reductions run one block of 256 threads per channel (a grid-stride loop over channels):
// each thread sums a strided share of the channel, then a shared-memory tree adds the 256 parts.

// The element k of channel ch in the (n, c, s) layout.
__device__ __forceinline__ long long channel_element(long long k, int ch, int c, long long s)
{
    return (k / s * c + ch) * s + k % s;
}

// The sum of v over the 256 threads of the block, returned to every thread. All threads of the
// block must call it (it has barriers); partial is the block's shared scratch of 256 values.
template <typename T>
__device__ T block_total(T v, T* partial)
{
    partial[threadIdx.x] = v;
    __syncthreads();
    for (int half = 128; half > 0; half >>= 1) {
        if ((int)threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    const T total = partial[0];
    __syncthreads();   // everyone has read partial[0] before the next call overwrites it
    return total;
}

// One block per channel: mean (c,) and biased var (c,).
// block: 256
template <typename T>
__global__ void batch_norm_stats(const T* x, T* mean, T* var, const int c, const long long s,
                                 const long long m)
{
    __shared__ T partial[256];
    for (int ch = blockIdx.x; ch < c; ch += gridDim.x) {
        T sum = T(0);
        for (long long k = threadIdx.x; k < m; k += blockDim.x) {
            sum += x[channel_element(k, ch, c, s)];
        }
        const T mu = block_total(sum, partial) / T(m);
        T squares = T(0);
        for (long long k = threadIdx.x; k < m; k += blockDim.x) {
            const T d = x[channel_element(k, ch, c, s)] - mu;
            squares += d * d;
        }
        const T sigma2 = block_total(squares, partial) / T(m);
        if (threadIdx.x == 0) {
            mean[ch] = mu;
            var[ch] = sigma2;
        }
    }
}

// One thread per element: y = (x - mean[ch]) scale[ch] + shift[ch].
template <typename T>
__global__ void batch_norm_apply(const T* x, const T* mean, const T* scale, const T* shift, T* y,
                                 const int c, const long long s, const long long total)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const int ch = (int)(t / s % c);
        y[t] = (x[t] - mean[ch]) * scale[ch] + shift[ch];
    }
}

// One block per channel: gbias = sum gy and gweight = sum gy x_hat, x_hat = (x - mean) inv_std.
// block: 256
template <typename T>
__global__ void batch_norm_sums(const T* gy, const T* x, const T* mean, const T* inv_std,
                                T* gbias, T* gweight, const int c, const long long s,
                                const long long m)
{
    __shared__ T partial[256];
    for (int ch = blockIdx.x; ch < c; ch += gridDim.x) {
        T sum = T(0), dot = T(0);
        for (long long k = threadIdx.x; k < m; k += blockDim.x) {
            const long long e = channel_element(k, ch, c, s);
            sum += gy[e];
            dot += gy[e] * (x[e] - mean[ch]);
        }
        const T total = block_total(sum, partial);
        const T projection = block_total(dot, partial) * inv_std[ch];
        if (threadIdx.x == 0) {
            gbias[ch] = total;
            gweight[ch] = projection;
        }
    }
}

// One thread per element: gx of training mode from the per-channel sums.
template <typename T>
__global__ void batch_norm_backward(const T* gy, const T* x, const T* mean, const T* inv_std,
                                    const T* scale, const T* gbias, const T* gweight, T* gx,
                                    const int c, const long long s, const long long m,
                                    const long long total)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const int ch = (int)(t / s % c);
        const T x_hat = (x[t] - mean[ch]) * inv_std[ch];
        gx[t] = scale[ch] * (gy[t] - gbias[ch] / T(m) - x_hat * gweight[ch] / T(m));
    }
}
