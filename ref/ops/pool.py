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

Both averages are separable: y = A x B^T over the two spatial axes, with A (oh, h) and B (ow, w)
holding 1/divisor on each window's inputs, so gx = A^T gy B. Max pooling reuses the channels-last
im2col / col2im of ref.ops.conv. Every pool works on channels-last x and returns y and gx as
(n, c, h, w) views of channels-last memory, as conv2d does.
"""
import numpy as np

from ref.ops.conv import (check_input, col2im, im2col, interior, out_size, pair,
                          to_padded_nhwc)
from ref.tensor import Op


def _window_geometry(x, kernel_size, stride, padding, op):
    """(kh, kw), (sy, sx), (ph, pw), (oh, ow) of a max or average pool, checked."""
    check_input(x, "x", op)
    kh, kw = pair(kernel_size, "kernel_size", 1)
    sy, sx = pair(kernel_size if stride is None else stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"{op}: padding {padding!r} must be at most half of kernel_size "
                         f"{kernel_size!r}")
    h, w = x.shape[2:]
    oh, ow = out_size(h, kh, sy, ph), out_size(w, kw, sx, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"{op}: output size ({oh}, {ow}) < 1 for input ({h}, {w}), kernel_size "
                         f"{kernel_size!r}, stride {stride!r}, padding {padding!r}")
    return (kh, kw), (sy, sx), (ph, pw), (oh, ow)


class MaxPool2d(Op):
    """y = max over each window of the -inf padded x;  gx: gy at the first maximal element"""

    def forward(self, x, kernel_size, stride=None, padding=0):
        (kh, kw), (self.sy, self.sx), (self.ph, self.pw), (oh, ow) = _window_geometry(
            x, kernel_size, stride, padding, "max_pool2d")
        n, c, h, w = self.x_shape = x.shape
        xpad = to_padded_nhwc(x, self.ph, self.pw, -np.inf)              # (n, hp, wp, c)
        cols = im2col(xpad, kh, kw, self.sy, self.sx, 1, 1)              # (n, oh, ow, kh, kw, c)
        cols = cols.reshape(n, oh, ow, kh * kw, c)                       # (n, oh, ow, kh*kw, c)
        self.first = cols.argmax(axis=3)[:, :, :, None, :]               # (n, oh, ow, 1, c)
        y = np.take_along_axis(cols, self.first, axis=3)[:, :, :, 0, :]  # (n, oh, ow, c)
        self.kernel = (kh, kw)
        return y.transpose(0, 3, 1, 2)                                   # (n, c, oh, ow)

    def backward(self, gy):                                                      # gy (n, c, oh, ow)
        n, c, h, w = self.x_shape
        (kh, kw), (oh, ow) = self.kernel, gy.shape[2:]
        gcols = np.zeros((n, oh, ow, kh * kw, c), dtype=gy.dtype)            # (n, oh, ow, kh*kw, c)
        np.put_along_axis(gcols, self.first, gy.transpose(0, 2, 3, 1)[:, :, :, None, :], axis=3)
        gxpad = col2im(gcols.reshape(n, oh, ow, kh, kw, c), h + 2 * self.ph, w + 2 * self.pw,
                       self.sy, self.sx, 1, 1)                                     # (n, hp, wp, c)
        return (interior(gxpad, self.ph, self.pw, h, w).transpose(0, 3, 1, 2),)   # (n, c, h, w)


def _average_matrix(size, starts, ends, divisors, dtype):
    """A[i, r] = 1 / divisors[i] for starts[i] <= r < ends[i], else 0: A (len(starts), size)."""
    r = np.arange(size)                                    # (size,)
    inside = (starts[:, None] <= r) & (r < ends[:, None])  # (k, size)
    return (inside / divisors[:, None]).astype(dtype)      # (k, size)


class AvgPool2d(Op):
    """y = A x B^T (A (oh, h), B (ow, w) averaging matrices);  gx = A^T gy B, each computed as two
    products over channels-last x: first along h, then along w"""

    def forward(self, x, kernel_size, stride=None, padding=0):
        (kh, kw), (sy, sx), (ph, pw), (oh, ow) = _window_geometry(
            x, kernel_size, stride, padding, "avg_pool2d")
        rows = np.arange(oh) * sy - ph     # (oh,) window starts
        columns = np.arange(ow) * sx - pw  # (ow,)
        return self._average(x, (rows, rows + kh, np.full(oh, kh)),
                             (columns, columns + kw, np.full(ow, kw)))

    def _average(self, x, rows, columns):
        """rows, columns: (starts, ends, divisors) of the windows along h and along w."""
        n, c, h, w = self.x_shape = x.shape
        self.A = _average_matrix(h, *rows, x.dtype)                          # (oh, h)
        self.B = _average_matrix(w, *columns, x.dtype)                       # (ow, w)
        xN = np.ascontiguousarray(x.transpose(0, 2, 3, 1))                   # (n, h, w, c)
        t = self.A @ xN.reshape(n, h, w * c)                                 # (n, oh, w*c)
        yN = self.B @ t.reshape(-1, w, c)                                    # (n*oh, ow, c)
        return yN.reshape(n, len(self.A), len(self.B), c).transpose(0, 3, 1, 2)  # (n, c, oh, ow)

    def backward(self, gy):                                                  # gy (n, c, oh, ow)
        n, c, h, w = self.x_shape
        gyN = np.ascontiguousarray(gy.transpose(0, 2, 3, 1))                 # (n, oh, ow, c)
        gt = self.B.T @ gyN.reshape(-1, gyN.shape[2], c)                     # (n*oh, w, c)
        gxN = self.A.T @ gt.reshape(n, -1, w * c)                            # (n, h, w*c)
        return (gxN.reshape(n, h, w, c).transpose(0, 3, 1, 2),)              # (n, c, h, w)


class AdaptiveAvgPool2d(AvgPool2d):
    """y[n, c, i, j] = mean of x over rows floor(i h/oh)..ceil((i+1) h/oh) and columns likewise"""

    def forward(self, x, output_size):
        check_input(x, "x", "adaptive_avg_pool2d")
        oh, ow = pair(output_size, "output_size", 1)
        h, w = x.shape[2:]
        return self._average(x, _adaptive_windows(h, oh), _adaptive_windows(w, ow))


def _adaptive_windows(size, k):
    """(starts, ends, divisors) of PyTorch's adaptive bins, floor(i size/k) to ceil((i+1) size/k)"""
    i = np.arange(k)                # (k,)
    starts = i * size // k          # (k,)
    ends = -(-(i + 1) * size // k)  # (k,) ceil
    return starts, ends, ends - starts


def max_pool2d(x, kernel_size, stride=None, padding=0):
    return MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    return AvgPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def adaptive_avg_pool2d(x, output_size):
    return AdaptiveAvgPool2d.apply(x, output_size=output_size)
