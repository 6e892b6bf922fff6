// Softmax statistics and fused softmax + cross-entropy over the rows of z (gpu/ops/loss.py).
//
// Notation as in ref/ops/loss.py: z logits (n, k), labels y (n,) in [0, k) (checked on the host).
// For row i:  m_i = max_j z[i, j],  s_i = log sum_j exp(z[i, j] - m_i),
//     log_softmax(z)[i, j] = (z[i, j] - m_i) - s_i
//     loss[i]              = -((z[i, y_i] - m_i) - s_i)
//     gz[i, j]             = (exp((z[i, j] - m_i) - s_i) - [j == y_i]) * scale[i]
// where scale[i] is the gradient of loss[i] (gy, or gy / n for the mean). Rows are short (k
// classes), so the row kernels take one thread per row; the backward one thread per element.

// m and s of one row of k >= 1 entries (the host refuses k = 0).
template <typename T>
__device__ void row_statistics(const T* row, const int k, T& m, T& s)
{
    m = row[0];
    for (int j = 1; j < k; ++j) m = max(m, row[j]);
    T total = T(0);
    for (int j = 0; j < k; ++j) total += exp(row[j] - m);
    s = log(total);
}

// One thread per row: m[i] and s[i] (log_softmax and softmax apply them on the host).
template <typename T>
__global__ void softmax_statistics(const T* z, T* m, T* s, const long long n, const int k)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        row_statistics(z + i * k, k, m[i], s[i]);
    }
}

// One thread per row: loss[i], and m[i], s[i] saved for the backward.
template <typename T>
__global__ void cross_entropy_forward(const T* z, const long long* labels, T* m, T* s, T* loss,
                                      const long long n, const int k)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const T* row = z + i * k;
        T mi, si;
        row_statistics(row, k, mi, si);
        m[i] = mi;
        s[i] = si;
        loss[i] = -((row[labels[i]] - mi) - si);
    }
}

// One thread per element of gz (n, k); total = n k.
template <typename T>
__global__ void cross_entropy_backward(const T* z, const long long* labels, const T* m,
                                       const T* s, const T* scale, T* gz, const long long total,
                                       const int k)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const long long i = t / k;
        const T p = exp((z[t] - m[i]) - s[i]);
        gz[t] = (t % k == labels[i] ? p - T(1) : p) * scale[i];
    }
}
