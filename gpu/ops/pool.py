"""2-D pooling as in torch.nn.functional (ceil_mode=False): max, average, adaptive average.

Notation: n batch, c channels, h w input size, kh kw window, sy sx stride (default: the window),
ph pw padding, oh ow output size, oh = (h + 2 ph - kh) // sy + 1 (ow likewise); padding is at most
half the window, as PyTorch requires. x (n, c, h, w)  y (n, c, oh, ow); g prefix = gradient.

    max_pool2d:  y[n, c, i, j] = max_{p < kh, q < kw} xpad[n, c, i sy + p, j sx + q]
                 (xpad padded with -inf). Tie rule: gy[n, c, i, j] goes to the FIRST maximal
                 element of its window in row-major (p, q) order, as numpy.argmax picks it.
    avg_pool2d:  y[n, c, i, j] = 1/(kh kw) sum_{p, q} xpad[n, c, i sy + p, j sx + q]
                 (xpad padded with zeros that count in the divisor: count_include_pad=True).
    adaptive_avg_pool2d:  y[n, c, i, j] = mean of x[n, c, r0(i):r1(i), s0(j):s1(j)] with
                 r0(i) = floor(i h / oh), r1(i) = ceil((i + 1) h / oh), s0 s1 likewise with w ow;
                 output size 1 is the global average pool.

Every pool is described by its windows along h and along w: (starts, ends, divisors), the rows
r0 <= r < r1 of window i (the part outside x is padding) and the divisor of the averages. The
kernels of gpu/kernels/pool.cu take these as int arrays `rows` (3, oh) and `columns` (3, ow);
their backward passes gather, for each input pixel, over the windows that contain it, given as
`row_windows` (2, h) and `column_windows` (2, w) (first window, one past the last).
"""
from gpu import cupy as cp
from gpu.kernels import launch
from ref.ops.conv import check_input, pair
from ref.ops.pool import _window_geometry
from ref.tensor import Op


def _strided_windows(k, size, stride, padding):
    """(3, k) windows i stride - padding <= r < i stride - padding + size, divisor size."""
    starts = cp.arange(k) * stride - padding                           # (k,)
    return _windows(starts, starts + size, cp.full(k, size))           # (3, k)


def _adaptive_windows(size, k):
    """(3, k) windows of PyTorch's adaptive bins, floor(i size/k) to ceil((i+1) size/k)"""
    i = cp.arange(k)                # (k,)
    starts = i * size // k          # (k,)
    ends = -(-(i + 1) * size // k)  # (k,) ceil
    return _windows(starts, ends, ends - starts)


def _windows(starts, ends, divisors):
    """(starts, ends, divisors) of k windows packed as the (3, k) int32 array the kernels take."""
    return cp.stack([starts, ends, divisors]).astype(cp.int32)         # (3, k)


def _containing(windows, size):
    """(2, size): position r lies in the windows first[r] <= i < end[r] (starts and ends of the
    windows never decrease, so these are ranges)."""
    r = cp.arange(size, dtype=cp.int32)                                 # (size,)
    first = cp.searchsorted(windows[1], r, side="right")                # (size,) first end > r
    end = cp.searchsorted(windows[0], r, side="right")                  # (size,) starts <= r
    return cp.stack([first, end]).astype(cp.int32)                      # (2, size)


def _gather(name, gy, x_shape, rows, columns, *saved):
    """gx (n, c, h, w) by the backward kernel `name`, one thread per input pixel; its arguments:
    gy, saved, rows, columns, the windows containing each row and column, gx."""
    gx = cp.empty(x_shape, dtype=gy.dtype)                                    # (n, c, h, w)
    windows = (_containing(rows, x_shape[2]), _containing(columns, x_shape[3]))
    _launch(name, gy.dtype, gx.size,
            (cp.ascontiguousarray(gy), *saved, rows, columns, *windows, gx), x_shape, gy.shape)
    return gx


def _launch(name, dtype, total, arrays, x_shape, y_shape):
    """Run kernel `name` of pool.cu over `total` elements: arrays, then h w oh ow total."""
    sizes = (cp.int32(v) for v in (*x_shape[2:], *y_shape[2:]))
    launch("pool.cu", name, dtype, total, (*arrays, *sizes, cp.int64(total)))


class MaxPool2d(Op):
    """y = max over each window of the -inf padded x;  gx: gy at the first maximal element"""

    def forward(self, x, kernel_size, stride=None, padding=0):
        (kh, kw), (sy, sx), (ph, pw), (oh, ow) = _window_geometry(
            x, kernel_size, stride, padding, "max_pool2d")
        n, c, h, w = self.x_shape = x.shape
        self.rows = _strided_windows(oh, kh, sy, ph)                     # (3, oh)
        self.columns = _strided_windows(ow, kw, sx, pw)                  # (3, ow)
        y = cp.empty((n, c, oh, ow), dtype=x.dtype)                      # (n, c, oh, ow)
        self.first = cp.empty((n, c, oh, ow), dtype=cp.int32)            # (n, c, oh, ow)
        _launch("max_pool_forward", x.dtype, y.size,
                (cp.ascontiguousarray(x), self.rows, self.columns, y, self.first),
                x.shape, y.shape)
        return y

    def backward(self, gy):                                                  # gy (n, c, oh, ow)
        return (_gather("max_pool_backward", gy, self.x_shape, self.rows, self.columns,
                        self.first),)                                        # (n, c, h, w)


class AvgPool2d(Op):
    """y = window sums / divisors (padding counts as zeros);  gx = sum of gy / divisors over the
    windows containing each pixel"""

    def forward(self, x, kernel_size, stride=None, padding=0):
        (kh, kw), (sy, sx), (ph, pw), (oh, ow) = _window_geometry(
            x, kernel_size, stride, padding, "avg_pool2d")
        return self._average(x, _strided_windows(oh, kh, sy, ph), _strided_windows(ow, kw, sx, pw))

    def _average(self, x, rows, columns):
        """rows (3, oh), columns (3, ow): (starts, ends, divisors) of the windows along h, w."""
        self.x_shape, self.rows, self.columns = x.shape, rows, columns
        y = cp.empty((*x.shape[:2], rows.shape[1], columns.shape[1]),
                     dtype=x.dtype)                                          # (n, c, oh, ow)
        _launch("avg_pool_forward", x.dtype, y.size,
                (cp.ascontiguousarray(x), rows, columns, y), x.shape, y.shape)
        return y

    def backward(self, gy):                                                  # gy (n, c, oh, ow)
        return (_gather("avg_pool_backward", gy, self.x_shape, self.rows, self.columns),)


class AdaptiveAvgPool2d(AvgPool2d):
    """y[n, c, i, j] = mean of x over rows floor(i h/oh)..ceil((i+1) h/oh) and columns likewise"""

    def forward(self, x, output_size):
        check_input(x, "x", "adaptive_avg_pool2d")
        oh, ow = pair(output_size, "output_size", 1)
        h, w = x.shape[2:]
        return self._average(x, _adaptive_windows(h, oh), _adaptive_windows(w, ow))


def max_pool2d(x, kernel_size, stride=None, padding=0):
    return MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    return AvgPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def adaptive_avg_pool2d(x, output_size):
    return AdaptiveAvgPool2d.apply(x, output_size=output_size)
