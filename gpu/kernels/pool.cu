// 2-D max and average pooling (gpu/ops/pool.py), forward and backward, over any windows, on
// NCHW or NHWC (channels-last) memory.
//
// Notation as in ref/ops/pool.py: x (n, c, h, w), y (n, c, oh, ow); g prefix = gradient. The
// windows along each axis are given as int arrays (the host builds them once per geometry):
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
//
// Memory order: the flag channels_last (0 or 1; one value for the whole launch, so every branch
// on it is block-uniform) says how all five arrays x, gx (n, c, h, w) and y, gy, first
// (n, c, oh, ow) are stored. With depth = 1 (NCHW) or c (NHWC), the element (n, ch, r, s) of an
// array of spatial size (R, S) lies at
//     NCHW (channels_last = 0): ((n c + ch) R + r) S + s  = image R S depth + ch' + (r S + s) depth
//                               with image = n c + ch, ch' = 0
//     NHWC (channels_last = 1): ((n R + r) S + s) c + ch  = image R S depth + ch' + (r S + s) depth
//                               with image = n, ch' = ch
// Each thread owns the element at flat offset t of its output array (y forward, gx backward) and
// splits t as pixel = t / depth, ch' = t - pixel depth (NHWC: ch fastest, so consecutive threads
// read consecutive channels: coalesced), j = pixel % S, i = pixel / S % R, image = pixel / (R S);
// the same (image, ch') address the thread's plane in the other array.

template <typename T> __device__ __forceinline__ T negative_infinity();
template <> __device__ __forceinline__ float negative_infinity<float>()
{
    return __int_as_float((int)0xff800000u);
}
template <> __device__ __forceinline__ double negative_infinity<double>()
{
    return __longlong_as_double((long long)0xfff0000000000000ull);
}

// One thread per output element t of y (order: channels_last): y[t] = max of the window of output
// (i, j), first[t] = its row-major offset p kw + q (ties: the first; a NaN wins and stays).
template <typename T>
__global__ void max_pool_forward(const T* x, const int* rows, const int* columns, T* y, int* first,
                                 const int c, const int h, const int w, const int oh, const int ow,
                                 const int channels_last, const long long total)
{
    const long long depth = channels_last ? c : 1;           // x offset of (r, s + 1) - (r, s)
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const long long pixel = channels_last ? t / c : t;   // (image oh + i) ow + j
        const long long ch = t - pixel * depth;              // NHWC: t % c; NCHW: 0
        const int j = (int)(pixel % ow);
        const int i = (int)(pixel / ow % oh);
        const T* plane = x + pixel / ((long long)oh * ow) * h * w * depth + ch;   // x(image, ch)
        T best = T(0);
        int where = -1, k = 0;
        for (int r = rows[i]; r < rows[oh + i]; ++r) {
            for (int s = columns[j]; s < columns[ow + j]; ++s, ++k) {
                const bool inside = 0 <= r && r < h && 0 <= s && s < w;
                const T v = inside ? plane[((long long)r * w + s) * depth] : negative_infinity<T>();
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

// One thread per input pixel t of gx (order: channels_last): the windows (i, j) that contain it,
// each giving its gy if its first maximal cell is this pixel. gy and first are in the same order.
template <typename T>
__global__ void max_pool_backward(const T* gy, const int* first, const int* rows,
                                  const int* columns, const int* row_windows,
                                  const int* column_windows, T* gx, const int c, const int h,
                                  const int w, const int oh, const int ow,
                                  const int channels_last, const long long total)
{
    const long long depth = channels_last ? c : 1;           // gy offset of (i, j + 1) - (i, j)
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const long long pixel = channels_last ? t / c : t;   // (image h + r) w + s
        const long long ch = t - pixel * depth;              // NHWC: t % c; NCHW: 0
        const int s = (int)(pixel % w);
        const int r = (int)(pixel / w % h);
        const long long plane = pixel / ((long long)h * w) * oh * ow * depth + ch;  // gy(image, ch)
        T sum = T(0);
        for (int i = row_windows[r]; i < row_windows[h + r]; ++i) {
            for (int j = column_windows[s]; j < column_windows[w + s]; ++j) {
                const int kw = columns[ow + j] - columns[j];
                const int k = (r - rows[i]) * kw + (s - columns[j]);
                const long long o = plane + ((long long)i * ow + j) * depth;
                if (first[o] == k) sum += gy[o];
            }
        }
        gx[t] = sum;
    }
}

// One thread per output element t of y (order: channels_last): y[t] = (sum of the window's cells
// inside x) / (divisor of rows i * divisor of columns j).
template <typename T>
__global__ void avg_pool_forward(const T* x, const int* rows, const int* columns, T* y,
                                 const int c, const int h, const int w, const int oh, const int ow,
                                 const int channels_last, const long long total)
{
    const long long depth = channels_last ? c : 1;           // x offset of (r, s + 1) - (r, s)
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const long long pixel = channels_last ? t / c : t;   // (image oh + i) ow + j
        const long long ch = t - pixel * depth;              // NHWC: t % c; NCHW: 0
        const int j = (int)(pixel % ow);
        const int i = (int)(pixel / ow % oh);
        const T* plane = x + pixel / ((long long)oh * ow) * h * w * depth + ch;   // x(image, ch)
        T sum = T(0);
        for (int r = max(rows[i], 0); r < min(rows[oh + i], h); ++r) {
            for (int s = max(columns[j], 0); s < min(columns[ow + j], w); ++s) {
                sum += plane[((long long)r * w + s) * depth];
            }
        }
        y[t] = sum / T(rows[2 * oh + i] * columns[2 * ow + j]);
    }
}

// One thread per input pixel t of gx (order: channels_last): gx[t] = sum over the windows (i, j)
// containing it of gy[i, j] / (divisor of rows i * divisor of columns j); gy in the same order.
template <typename T>
__global__ void avg_pool_backward(const T* gy, const int* rows, const int* columns,
                                  const int* row_windows, const int* column_windows, T* gx,
                                  const int c, const int h, const int w, const int oh,
                                  const int ow, const int channels_last, const long long total)
{
    const long long depth = channels_last ? c : 1;           // gy offset of (i, j + 1) - (i, j)
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const long long pixel = channels_last ? t / c : t;   // (image h + r) w + s
        const long long ch = t - pixel * depth;              // NHWC: t % c; NCHW: 0
        const int s = (int)(pixel % w);
        const int r = (int)(pixel / w % h);
        const T* plane = gy + pixel / ((long long)h * w) * oh * ow * depth + ch;  // gy(image, ch)
        T sum = T(0);
        for (int i = row_windows[r]; i < row_windows[h + r]; ++i) {
            for (int j = column_windows[s]; j < column_windows[w + s]; ++j) {
                sum += plane[((long long)i * ow + j) * depth] /
                       T(rows[2 * oh + i] * columns[2 * ow + j]);
            }
        }
        gx[t] = sum;
    }
}
