// 2-D max and average pooling (gpu/ops/pool.py), forward and backward, over any windows.
//
// Notation as in ref/ops/pool.py: x (n, c, h, w), y (n, c, oh, ow); g prefix = gradient. The
// windows along each axis are given as int arrays (the host builds them, ref's formulas):
//     rows (3, oh):         window i covers input rows rows[i] <= r < rows[oh + i] (the part
//                           outside 0 <= r < h is padding) and has divisor rows[2 oh + i]
//     columns (3, ow):      likewise along w
//     row_windows (2, h):   row r lies in the windows row_windows[r] <= i < row_windows[h + r]
//     column_windows (2, w) likewise
// Max pool: y = max of the window, padding counting as -inf; first[n, c, i, j] is the offset
// p kw + q of the first maximal cell in row-major order (NaN counts as the maximum, as in
// numpy.argmax); gx[r, s] sums gy over the windows whose first maximal cell is (r, s).
// Average pool: y[i, j] = (sum of the window's cells inside x) / (rows divisor * columns divisor);
// gx[r, s] sums gy[i, j] / (divisors) over the windows that contain (r, s).

template <typename T> __device__ __forceinline__ T negative_infinity();
template <> __device__ __forceinline__ float negative_infinity<float>()
{
    return __int_as_float((int)0xff800000u);
}
template <> __device__ __forceinline__ double negative_infinity<double>()
{
    return __longlong_as_double((long long)0xfff0000000000000ull);
}

// One thread per output element.
template <typename T>
__global__ void max_pool_forward(const T* x, const int* rows, const int* columns, T* y, int* first,
                                 const int h, const int w, const int oh, const int ow,
                                 const long long total)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const int j = (int)(t % ow);
        const int i = (int)(t / ow % oh);
        const T* plane = x + t / ((long long)ow * oh) * h * w;
        T best = T(0);
        int where = -1, k = 0;
        for (int r = rows[i]; r < rows[oh + i]; ++r) {
            for (int s = columns[j]; s < columns[ow + j]; ++s, ++k) {
                const bool inside = 0 <= r && r < h && 0 <= s && s < w;
                const T v = inside ? plane[(long long)r * w + s] : negative_infinity<T>();
                if (where < 0 || (best == best && !(v <= best))) {
                    best = v;
                    where = k;
                }
            }
        }
        y[t] = best;
        first[t] = where;
    }
}

// One thread per input pixel: the windows that contain it, each giving its gy if its first
// maximal cell is this pixel.
template <typename T>
__global__ void max_pool_backward(const T* gy, const int* first, const int* rows,
                                  const int* columns, const int* row_windows,
                                  const int* column_windows, T* gx, const int h, const int w,
                                  const int oh, const int ow, const long long total)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const int s = (int)(t % w);
        const int r = (int)(t / w % h);
        const long long plane = t / ((long long)w * h) * oh * ow;
        T sum = T(0);
        for (int i = row_windows[r]; i < row_windows[h + r]; ++i) {
            for (int j = column_windows[s]; j < column_windows[w + s]; ++j) {
                const int kw = columns[ow + j] - columns[j];
                const int k = (r - rows[i]) * kw + (s - columns[j]);
                const long long o = plane + (long long)i * ow + j;
                if (first[o] == k) sum += gy[o];
            }
        }
        gx[t] = sum;
    }
}

// One thread per output element.
template <typename T>
__global__ void avg_pool_forward(const T* x, const int* rows, const int* columns, T* y,
                                 const int h, const int w, const int oh, const int ow,
                                 const long long total)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const int j = (int)(t % ow);
        const int i = (int)(t / ow % oh);
        const T* plane = x + t / ((long long)ow * oh) * h * w;
        T sum = T(0);
        for (int r = max(rows[i], 0); r < min(rows[oh + i], h); ++r) {
            for (int s = max(columns[j], 0); s < min(columns[ow + j], w); ++s) {
                sum += plane[(long long)r * w + s];
            }
        }
        y[t] = sum / T(rows[2 * oh + i] * columns[2 * ow + j]);
    }
}

// One thread per input pixel.
template <typename T>
__global__ void avg_pool_backward(const T* gy, const int* rows, const int* columns,
                                  const int* row_windows, const int* column_windows, T* gx,
                                  const int h, const int w, const int oh, const int ow,
                                  const long long total)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const int s = (int)(t % w);
        const int r = (int)(t / w % h);
        const T* plane = gy + t / ((long long)w * h) * oh * ow;
        T sum = T(0);
        for (int i = row_windows[r]; i < row_windows[h + r]; ++i) {
            for (int j = column_windows[s]; j < column_windows[w + s]; ++j) {
                sum += plane[(long long)i * ow + j] / T(rows[2 * oh + i] * columns[2 * ow + j]);
            }
        }
        gx[t] = sum;
    }
}
