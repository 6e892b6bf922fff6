// Batch normalisation (gpu/ops/norm.py): per-channel statistics, apply, and backward, on
// channels-last memory.
//
// Notation as in ref/ops/norm.py: x is the (m, c) matrix of the channels-last memory (m = n h w
// rows, or n for (n, c) input; row k holds the c channels of one pixel), so element (k, ch) lies
// at k c + ch and every statistic is per channel ch over the m rows. g prefix = gradient.
//     mean = sum x / m,   var = sum (x - mean)^2 / m                       (biased)
//     inv_std = 1 / sqrt(var + eps),   scale = weight inv_std,   shift = bias
//     y = (x - mean) scale + shift
//     gbias = sum gy,   gweight = inv_std sum gy (x - mean)
//     gx = scale (gy - gbias / m - (x - mean) inv_std gweight / m)        (training)
//     gx = scale gy                                                         (eval)
//
// Launches per call (the host, gpu/ops/norm.py):
//     training forward:  batch_norm_partial_stats, batch_norm_finalize_stats, batch_norm_apply
//     eval forward:      batch_norm_eval_coefficients, batch_norm_apply
//     training backward: batch_norm_partial_sums, batch_norm_finalize_sums, batch_norm_backward
//                        (the last only when x needs its gradient)
//     eval backward:     batch_norm_backward_eval, after the two sum kernels when weight or bias
//                        needs its gradient
//
// The reductions (partial_stats, partial_sums) run on a 2-D grid of 32 x 8 blocks: threadIdx.x
// over 32 consecutive channels (a warp reads 32 consecutive values of a row: coalesced),
// threadIdx.y over rows; blockIdx.x over the groups of 32 channels and blockIdx.y over the
// `slabs` row slabs, both with grid-stride loops (correct for any grid >= 1). Slab r holds the
// rows r rows_per_slab <= k < min(m, (r + 1) rows_per_slab) (the host keeps
// slabs rows_per_slab >= m; a slab past m is empty); its result per channel goes to row r of the
// (slabs, c) partial arrays, which the finalize kernels (one thread per channel) merge in slab
// order. Statistics are merged with Chan et al.'s parallel formula, exact in exact arithmetic and
// free of the cancellation of sum x^2 - m mean^2 in float32: for parts a, b of na, nb values
// with means ma, mb and sums of squared deviations M2a, M2b,
//     n = na + nb,  delta = mb - ma,  mean = ma + delta nb / n,  M2 = M2a + M2b + delta^2 na nb / n
// Each thread first does an exact two-pass mean and M2 over its own rows (it reads them twice),
// then the 8 threads of a column merge through a shared-memory tree, then the finalize merges
// the slabs. The elementwise kernels (apply, backward) use the same 2-D layout with any block:
// per-channel values are loaded once per thread and there is no division per element.
//
// Absent arrays: weight, bias and the running statistics may be absent; the host then passes a
// size-0 placeholder array and the flag has_weight / has_bias / has_running = 0 (1 when present),
// and the kernel never reads the placeholder (weight 1, bias 0, no running-statistics update).

constexpr int BLOCK_X = 32;   // channels per block of the reductions, as `// block: 32 8`
constexpr int BLOCK_Y = 8;    // rows per block of the reductions

// The part of one channel's statistics held by a thread, a block row or a slab: its mean and
// sum of squared deviations m2 over n values (the forward reduction) ...
template <typename T>
struct Moments {
    T mean, m2;
    long long n;
};

// ... or the sums of gy and gy (x - mean) (the backward reduction).
template <typename T>
struct Sums {
    T sum, dot;
};

// Merge part b into part a: Chan's formula (either part may be empty) ...
template <typename T>
__device__ __forceinline__ void merge(Moments<T>& a, const Moments<T>& b)
{
    if (b.n == 0) return;
    const long long total = a.n + b.n;
    const T delta = b.mean - a.mean;
    const T weight_b = T(b.n) / T(total);                     // nb / n
    a.mean += delta * weight_b;
    a.m2 += b.m2 + delta * delta * T(a.n) * weight_b;         // delta^2 na nb / n
    a.n = total;
}

// ... or plain sums.
template <typename T>
__device__ __forceinline__ void merge(Sums<T>& a, const Sums<T>& b)
{
    a.sum += b.sum;
    a.dot += b.dot;
}

// The parts of the BLOCK_Y thread rows of each channel column merged by a shared-memory tree
// (row ty takes row ty + half); the result is complete in thread row 0. Every thread of the block
// must call it (it has barriers); shared is the block's scratch. The last barrier orders row 0's
// final read of row 1 before any later call overwrites the scratch.
template <typename Part>
__device__ Part merge_rows(Part part, Part (*shared)[BLOCK_X])
{
    const int tx = threadIdx.x, ty = threadIdx.y;
    shared[ty][tx] = part;
    __syncthreads();
    for (int half = BLOCK_Y / 2; half > 0; half >>= 1) {
        if (ty < half) {
            merge(part, shared[ty + half][tx]);
            shared[ty][tx] = part;
        }
        __syncthreads();
    }
    return part;
}

// The number of rows of slab r: min(m, (r + 1) rows_per_slab) - r rows_per_slab, or 0.
__device__ __forceinline__ long long slab_rows(const int r, const long long rows_per_slab,
                                               const long long m)
{
    const long long begin = r * rows_per_slab;
    const long long end = begin + rows_per_slab < m ? begin + rows_per_slab : m;
    return end > begin ? end - begin : 0;
}

// The loops of the two reductions: for every (channel group, slab r) of the grid (grid-stride on
// both axes, block-uniform), the part of each thread, thread_part(ch, begin, end) over the rows
// begin + ty, begin + ty + BLOCK_Y, .. < end of slab r (an empty part when ch >= c), merged over
// the block's thread rows, then store(r, ch, part) by thread row 0.
template <typename Part, typename ThreadPart, typename Store>
__device__ void reduce_slabs(const int c, const long long m, const int slabs,
                             const long long rows_per_slab, Part (*shared)[BLOCK_X],
                             ThreadPart thread_part, Store store)
{
    for (int group = (int)blockIdx.x * BLOCK_X; group < c; group += (int)gridDim.x * BLOCK_X) {
        const int ch = group + (int)threadIdx.x;
        for (int r = (int)blockIdx.y; r < slabs; r += (int)gridDim.y) {
            const long long begin = r * rows_per_slab;
            const long long end = begin + slab_rows(r, rows_per_slab, m);
            Part part = ch < c ? thread_part(ch, begin, end) : Part{};
            part = merge_rows(part, shared);
            if (threadIdx.y == 0 && ch < c) store(r, ch, part);
        }
    }
}

// Per (slab r, channel ch): the mean part_mean[r, ch] and the sum of squared deviations
// part_m2[r, ch] of x[k, ch] over the rows k of slab r (0 and 0 for an empty slab).
// Every thread takes part in the barriers (also those with ch >= c, which hold an empty part);
// the loops over channel groups and slabs are block-uniform.
// block: 32 8
template <typename T>
__global__ void batch_norm_partial_stats(const T* x, T* part_mean, T* part_m2, const int c,
                                         const long long m, const int slabs,
                                         const long long rows_per_slab)
{
    __shared__ Moments<T> shared[BLOCK_Y][BLOCK_X];
    const long long ty = threadIdx.y;
    reduce_slabs(c, m, slabs, rows_per_slab, shared,
        [&](const int ch, const long long begin, const long long end) {
            Moments<T> part = {T(0), T(0), 0};
            T sum = T(0);                                     // pass 1: the thread's mean
            for (long long k = begin + ty; k < end; k += BLOCK_Y) {
                sum += x[k * c + ch];
                ++part.n;
            }
            if (part.n > 0) part.mean = sum / T(part.n);
            for (long long k = begin + ty; k < end; k += BLOCK_Y) {   // pass 2: its M2
                const T d = x[k * c + ch] - part.mean;
                part.m2 += d * d;
            }
            return part;
        },
        [&](const int r, const int ch, const Moments<T>& part) {
            part_mean[(long long)r * c + ch] = part.mean;
            part_m2[(long long)r * c + ch] = part.m2;
        });
}

// One thread per channel: merge the slab parts in order into mean and var = M2 / m, then
//     inv_std = 1 / sqrt(var + eps),  scale = weight inv_std (inv_std when has_weight = 0),
//     shift = bias (0 when has_bias = 0),
// and when has_running = 1 update the running statistics in place:
//     running_mean <- (1 - momentum) running_mean + momentum mean
//     running_var  <- (1 - momentum) running_var  + momentum var m / (m - 1)
// (var itself when biased_running_var = 1; the host guarantees m > 1).
template <typename T>
__global__ void batch_norm_finalize_stats(const T* part_mean, const T* part_m2, const T* weight,
                                          const T* bias, T* running_mean, T* running_var,
                                          T* mean, T* inv_std, T* scale, T* shift, const int c,
                                          const long long m, const int slabs,
                                          const long long rows_per_slab, const int has_weight,
                                          const int has_bias, const int has_running,
                                          const int biased_running_var, const T momentum,
                                          const T eps)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c;
         ch += (int)(blockDim.x * gridDim.x)) {
        Moments<T> total = {T(0), T(0), 0};
        for (int r = 0; r < slabs; ++r) {
            const long long e = (long long)r * c + ch;
            merge(total, Moments<T>{part_mean[e], part_m2[e], slab_rows(r, rows_per_slab, m)});
        }
        const T mu = total.mean, var = total.m2 / T(m);
        const T inv = T(1) / sqrt(var + eps);
        mean[ch] = mu;
        inv_std[ch] = inv;
        scale[ch] = has_weight ? weight[ch] * inv : inv;
        shift[ch] = has_bias ? bias[ch] : T(0);
        if (has_running) {
            const T batch_var = biased_running_var ? var : var * (T(m) / T(m - 1));
            running_mean[ch] = (T(1) - momentum) * running_mean[ch] + momentum * mu;
            running_var[ch] = (T(1) - momentum) * running_var[ch] + momentum * batch_var;
        }
    }
}

// One thread per channel, eval mode: mean = running_mean (a copy: backward uses it even if the
// buffers change later), inv_std = 1 / sqrt(running_var + eps), scale and shift as in
// batch_norm_finalize_stats.
template <typename T>
__global__ void batch_norm_eval_coefficients(const T* running_mean, const T* running_var,
                                             const T* weight, const T* bias, T* mean,
                                             T* inv_std, T* scale, T* shift, const int c,
                                             const int has_weight, const int has_bias,
                                             const T eps)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c;
         ch += (int)(blockDim.x * gridDim.x)) {
        const T inv = T(1) / sqrt(running_var[ch] + eps);
        mean[ch] = running_mean[ch];
        inv_std[ch] = inv;
        scale[ch] = has_weight ? weight[ch] * inv : inv;
        shift[ch] = has_bias ? bias[ch] : T(0);
    }
}

// One thread per (row, channel) element of the (m, c) matrices:
//     y = (x - mean) scale + shift.
template <typename T>
__global__ void batch_norm_apply(const T* x, const T* mean, const T* scale, const T* shift, T* y,
                                 const int c, const long long m)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c;
         ch += (int)(blockDim.x * gridDim.x)) {
        const T mu = mean[ch], s = scale[ch], b = shift[ch];
        for (long long k = blockIdx.y * (long long)blockDim.y + threadIdx.y; k < m;
             k += (long long)blockDim.y * gridDim.y) {
            const long long e = k * c + ch;
            y[e] = (x[e] - mu) * s + b;
        }
    }
}

// Per (slab r, channel ch): part_sum[r, ch] = sum gy and part_dot[r, ch] = sum gy (x - mean)
// over the rows of slab r (0 for an empty slab); plain sums per thread, then a shared-memory tree
// over the 8 thread rows (same grid, loops and barrier rules as batch_norm_partial_stats).
// block: 32 8
template <typename T>
__global__ void batch_norm_partial_sums(const T* gy, const T* x, const T* mean, T* part_sum,
                                        T* part_dot, const int c, const long long m,
                                        const int slabs, const long long rows_per_slab)
{
    __shared__ Sums<T> shared[BLOCK_Y][BLOCK_X];
    const long long ty = threadIdx.y;
    reduce_slabs(c, m, slabs, rows_per_slab, shared,
        [&](const int ch, const long long begin, const long long end) {
            Sums<T> part = {T(0), T(0)};
            const T mu = mean[ch];
            for (long long k = begin + ty; k < end; k += BLOCK_Y) {
                const long long e = k * c + ch;
                part.sum += gy[e];
                part.dot += gy[e] * (x[e] - mu);
            }
            return part;
        },
        [&](const int r, const int ch, const Sums<T>& part) {
            part_sum[(long long)r * c + ch] = part.sum;
            part_dot[(long long)r * c + ch] = part.dot;
        });
}

// One thread per channel: gbias = sum over slabs of part_sum, gweight = inv_std sum over slabs
// of part_dot (in slab order).
template <typename T>
__global__ void batch_norm_finalize_sums(const T* part_sum, const T* part_dot, const T* inv_std,
                                         T* gbias, T* gweight, const int c, const int slabs)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c;
         ch += (int)(blockDim.x * gridDim.x)) {
        T sum = T(0), dot = T(0);
        for (int r = 0; r < slabs; ++r) {
            sum += part_sum[(long long)r * c + ch];
            dot += part_dot[(long long)r * c + ch];
        }
        gbias[ch] = sum;
        gweight[ch] = dot * inv_std[ch];
    }
}

// One thread per (row, channel) element, training mode:
//     gx = scale (gy - gbias / m - (x - mean) inv_std gweight / m).
template <typename T>
__global__ void batch_norm_backward(const T* gy, const T* x, const T* mean, const T* inv_std,
                                    const T* scale, const T* gbias, const T* gweight, T* gx,
                                    const int c, const long long m)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c;
         ch += (int)(blockDim.x * gridDim.x)) {
        const T mu = mean[ch], inv = inv_std[ch], s = scale[ch];
        const T mean_gy = gbias[ch] / T(m), mean_gy_x_hat = gweight[ch] / T(m);
        for (long long k = blockIdx.y * (long long)blockDim.y + threadIdx.y; k < m;
             k += (long long)blockDim.y * gridDim.y) {
            const long long e = k * c + ch;
            const T x_hat = (x[e] - mu) * inv;
            gx[e] = s * (gy[e] - mean_gy - x_hat * mean_gy_x_hat);
        }
    }
}

// One thread per (row, channel) element, eval mode: gx = scale gy.
template <typename T>
__global__ void batch_norm_backward_eval(const T* gy, const T* scale, T* gx, const int c,
                                         const long long m)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c;
         ch += (int)(blockDim.x * gridDim.x)) {
        const T s = scale[ch];
        for (long long k = blockIdx.y * (long long)blockDim.y + threadIdx.y; k < m;
             k += (long long)blockDim.y * gridDim.y) {
            const long long e = k * c + ch;
            gx[e] = s * gy[e];
        }
    }
}
