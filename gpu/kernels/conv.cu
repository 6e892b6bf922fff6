// im2col and col2im of a 2-D convolution (gpu/ops/conv.py does the matrix products with cuBLAS).
//
// Notation as in ref/ops/conv.py: a chunk of m images x (m, h, w, c) addressed through element
// strides (sn, sr, ss, sc) of its n, row, column and channel axes (channels-last memory has
// sc = 1, NCHW memory sr = w, ss = 1), so either memory order is read without a copy; kernel
// kh kw, stride sy sx, zero padding ph pw, dilation dy dx, output oh ow. The columns
//   cols[n, i, j, p, q, c] = x[n, i sy + p dy - ph, j sx + q dx - pw, c]  (0 outside x),
//   cols (m, oh, ow, kh, kw, c), are the (m oh ow, kh kw c) matrix that multiplies Wm (o, kh kw c).
// col2im is the adjoint, written straight into the unpadded gx (m, h, w, c):
//   gx[n, r, s, c] = sum of gcols[n, i, j, p, q, c] over r + ph = i sy + p dy, s + pw = j sx + q dx,
// a gather: each element visits the (p, q) whose window reads it.
//
// Both kernels run on a 2-D grid: x over the channels (consecutive threads, consecutive channels:
// coalesced), y over the rows (one output pixel n, i, j of im2col, one input pixel n, r, s of
// col2im); a row's coordinates come from int divisions once per row, so there is no division per
// element in im2col and only an int remainder by the stride in col2im. The host keeps
// rows * kh * kw * c below 2^31 per launch.

// One thread per (output pixel, channel): its kh kw column entries.
template <typename T>
__global__ void im2col(const T* x, T* cols, const long long sn, const long long sr,
                       const long long ss, const long long sc, const int h, const int w,
                       const int c, const int kh, const int kw, const int sy, const int sx,
                       const int ph, const int pw, const int dy, const int dx, const int oh,
                       const int ow, const int rows)
{
    for (int row = blockIdx.y * blockDim.y + threadIdx.y; row < rows;
         row += (int)(blockDim.y * gridDim.y)) {
        const int j = row % ow;
        const int i = row / ow % oh;
        const long long n = row / (ow * oh);
        for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c;
             ch += (int)(blockDim.x * gridDim.x)) {
            const T* image = x + n * sn + ch * sc;
            T* out = cols + (long long)row * kh * kw * c + ch;
            for (int p = 0; p < kh; ++p) {
                const int r = i * sy + p * dy - ph;
                for (int q = 0; q < kw; ++q) {
                    const int s = j * sx + q * dx - pw;
                    const bool inside = 0 <= r && r < h && 0 <= s && s < w;
                    out[(p * kw + q) * c] = inside ? image[r * sr + s * ss] : T(0);
                }
            }
        }
    }
}

// One thread per (input pixel, channel) of gx: the sum over the window offsets (p, q) of the
// column entry that read this element, if a window at that offset exists (on the stride grid,
// inside oh ow).
template <typename T>
__global__ void col2im(const T* gcols, T* gx, const int h, const int w, const int c,
                       const int kh, const int kw, const int sy, const int sx, const int ph,
                       const int pw, const int dy, const int dx, const int oh, const int ow,
                       const int rows)
{
    for (int row = blockIdx.y * blockDim.y + threadIdx.y; row < rows;
         row += (int)(blockDim.y * gridDim.y)) {
        const int s = row % w + pw;                               // padded coordinates
        const int r = row / w % h + ph;
        const long long n = row / (w * h);
        for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c;
             ch += (int)(blockDim.x * gridDim.x)) {
            T sum = T(0);
            for (int p = 0; p < kh; ++p) {
                const int ti = r - p * dy;                        // = i sy for the window row i
                if (ti < 0 || ti % sy != 0 || ti / sy >= oh) continue;
                for (int q = 0; q < kw; ++q) {
                    const int tj = s - q * dx;                    // = j sx
                    if (tj < 0 || tj % sx != 0 || tj / sx >= ow) continue;
                    const long long window = (n * oh + ti / sy) * ow + tj / sx;
                    sum += gcols[((window * kh + p) * kw + q) * c + ch];
                }
            }
            gx[(long long)row * c + ch] = sum;
        }
    }
}
