// im2col and col2im of a 2-D convolution (gpu/ops/conv.py does the matrix products with cuBLAS).
//
// Notation and layout as in ref/ops/conv.py: a chunk of m images, padded and channels-last,
// xpad (m, hp, wp, c); kernel kh kw, stride sy sx, dilation dy dx, output oh ow. The columns
//   cols[n, i, j, p, q, c] = xpad[n, i sy + p dy, j sx + q dx, c],   cols (m, oh, ow, kh, kw, c),
// are the (m oh ow, kh kw c) matrix that multiplies Wm (o, kh kw c). col2im is the adjoint,
//   gxpad[n, r, s, c] = sum of gcols[n, i, j, p, q, c] over r = i sy + p dy, s = j sx + q dx,
// computed as a gather: one thread per padded input element visits the (p, q) whose window
// reads it. Consecutive threads handle consecutive channels, so reads and writes are coalesced.

// One thread per column element.
template <typename T>
__global__ void im2col(const T* xpad, T* cols, const int hp, const int wp, const int c,
                       const int kh, const int kw, const int sy, const int sx, const int dy,
                       const int dx, const int oh, const int ow, const long long total)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const int ch = (int)(t % c);
        const int q = (int)(t / c % kw);
        const int p = (int)(t / ((long long)c * kw) % kh);
        const long long nij = t / ((long long)c * kw * kh);      // (n oh + i) ow + j
        const int j = (int)(nij % ow);
        const int i = (int)(nij / ow % oh);
        const long long n = nij / ((long long)ow * oh);
        const long long r = i * sy + p * dy, s = j * sx + q * dx;
        cols[t] = xpad[((n * hp + r) * wp + s) * c + ch];
    }
}

// One thread per element of gxpad: the sum over the window offsets (p, q) of the column entry
// that read this element, if a window at that offset exists (on the stride grid, inside oh ow).
template <typename T>
__global__ void col2im(const T* gcols, T* gxpad, const int hp, const int wp, const int c,
                       const int kh, const int kw, const int sy, const int sx, const int dy,
                       const int dx, const int oh, const int ow, const long long total)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const int ch = (int)(t % c);
        const int s = (int)(t / c % wp);
        const int r = (int)(t / ((long long)c * wp) % hp);
        const long long n = t / ((long long)c * wp * hp);
        T sum = T(0);
        for (int p = 0; p < kh; ++p) {
            const int ti = r - p * dy;                            // = i sy for the window row i
            if (ti < 0 || ti % sy != 0 || ti / sy >= oh) continue;
            for (int q = 0; q < kw; ++q) {
                const int tj = s - q * dx;                        // = j sx
                if (tj < 0 || tj % sx != 0 || tj / sx >= ow) continue;
                const long long window = (n * oh + ti / sy) * ow + tj / sx;
                sum += gcols[((window * kh + p) * kw + q) * c + ch];
            }
        }
        gxpad[t] = sum;
    }
}
