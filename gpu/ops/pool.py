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
`row_windows` (2, h) and `column_windows` (2, w) (first window, one past the last). These tables
depend only on the geometry: they are built once per geometry on the host and kept on the device
(_strided_axis, _adaptive_axis), so a forward pass is one kernel launch and a backward pass one
(plus one copy when gy is not stored in y's order).

Memory order: x stored channels-last (x.transpose(0, 2, 3, 1) C-contiguous, as conv2d returns
it) is read as that NHWC memory, and y and gx are NHWC memory returned as (n, c, oh, ow) and
(n, c, h, w) views, like ref; any other x is read as NCHW (copied if it is neither). The kernels
take the order as the flag channels_last.
"""
import functools

import numpy as np

from gpu import cupy as cp
from gpu.kernels import launch
from gpu.ops.conv import is_channels_last
from ref.ops.conv import check_input, pair
from ref.ops.pool import _window_geometry
from ref.tensor import Op


# ---- window tables, one pair per axis geometry ----------------------------------------------
# The cached device arrays are shared by every call with the same geometry: read-only by
# convention (the kernels take them as const int*; nothing may write to them).
@functools.lru_cache(maxsize=256)
def _strided_axis(device, size, k, window, stride, padding):
    """Device tables of k windows i stride - padding <= r < i stride - padding + window (divisor
    window) over an axis of `size` inputs: (windows (3, k), containing (2, size)), int32, on
    `device` (the current device's id: part of the cache key, as the tables live there)."""
    starts = np.arange(k) * stride - padding                            # (k,)
    return _upload(size, starts, starts + window, np.full(k, window))


@functools.lru_cache(maxsize=256)
def _adaptive_axis(device, size, k):
    """Device tables of PyTorch's k adaptive bins floor(i size / k) <= r < ceil((i + 1) size / k)
    (divisor: the bin's length) over an axis of `size` inputs: (windows (3, k), containing
    (2, size)), int32, on `device` (as in _strided_axis)."""
    i = np.arange(k)                # (k,)
    starts = i * size // k          # (k,)
    ends = -(-(i + 1) * size // k)  # (k,) ceil
    return _upload(size, starts, ends, ends - starts)


def _upload(size, starts, ends, divisors):
    """(windows, containing) as device int32 arrays, from host numpy: windows (3, k) = (starts,
    ends, divisors); containing (2, size): position r lies in the windows first[r] <= i < end[r]
    with first[r] = the first window whose end > r and end[r] = the number of windows whose
    start <= r (starts and ends never decrease, so these are ranges; empty, first >= end, when
    no window contains r)."""
    r = np.arange(size)                                                   # (size,)
    first = np.searchsorted(ends, r, side="right")                        # (size,)
    end = np.searchsorted(starts, r, side="right")                        # (size,)
    windows = np.stack([starts, ends, divisors]).astype(np.int32)         # (3, k)
    containing = np.stack([first, end]).astype(np.int32)                  # (2, size)
    return cp.asarray(windows), cp.asarray(containing)


def _strided(x_shape, kernel, stride, padding, out):
    """(rows, columns, row_windows, column_windows) of a max or average pool (cached)."""
    (h, w), (kh, kw), (sy, sx), (ph, pw), (oh, ow) = x_shape[2:], kernel, stride, padding, out
    (rows, row_windows), (columns, column_windows) = (
        _strided_axis(cp.cuda.Device().id, int(h), int(oh), int(kh), int(sy), int(ph)),
        _strided_axis(cp.cuda.Device().id, int(w), int(ow), int(kw), int(sx), int(pw)))
    return rows, columns, row_windows, column_windows


# ---- memory order ----------------------------------------------------------------------------
def _memory(a, channels_last):
    """The C-contiguous memory of a (n, c, h, w) in the order the kernels read: NHWC (n, h, w, c)
    when channels_last, else NCHW; a view when a is stored so, else one copy."""
    return cp.ascontiguousarray(a.transpose(0, 2, 3, 1) if channels_last else a)


def _empty(shape, dtype, channels_last):
    """(memory for the kernel, its (n, c, h, w) view): NHWC memory viewed as NCHW when
    channels_last."""
    n, c, h, w = shape
    if not channels_last:
        a = cp.empty(shape, dtype=dtype)
        return a, a
    a = cp.empty((n, h, w, c), dtype=dtype)                             # (n, h, w, c)
    return a, a.transpose(0, 3, 1, 2)                                   # (n, c, h, w) view


def _launch(name, dtype, total, arrays, x_shape, y_shape, channels_last):
    """Run kernel `name` of pool.cu over `total` elements: arrays, then c h w oh ow channels_last
    total."""
    sizes = (cp.int32(v) for v in (x_shape[1], *x_shape[2:], *y_shape[2:], channels_last))
    launch("pool.cu", name, dtype, total, (*arrays, *sizes, cp.int64(total)))


class _Pool(Op):
    """What the pools share: the forward launch on x in its memory order and the backward gather
    over the windows containing each input pixel."""

    def _forward(self, name, x, tables, y_shape, argmax=False):
        """y (n, c, oh, ow) by kernel `name` (x, rows, columns, y[, first]) with tables = (rows,
        columns, row_windows, column_windows); with argmax, also the int32 index table first, of
        y's shape and order, saved for backward in self.saved."""
        self.x_shape, self.tables = x.shape, tables
        self.channels_last = is_channels_last(x)
        y, y_view = _empty(y_shape, x.dtype, self.channels_last)
        self.saved = [_empty(y_shape, np.int32, self.channels_last)[0]] if argmax else []
        _launch(name, x.dtype, y.size,
                (_memory(x, self.channels_last), *tables[:2], y, *self.saved),
                x.shape, y_shape, self.channels_last)
        return y_view

    def _gather(self, name, gy):
        """gx (n, c, h, w) by kernel `name` (gy, saved, rows, columns, row_windows,
        column_windows, gx), one thread per input pixel, in x's order; gy is brought to y's
        order (a copy only if it is stored otherwise)."""
        gx, gx_view = _empty(self.x_shape, gy.dtype, self.channels_last)
        _launch(name, gy.dtype, gx.size,
                (_memory(gy, self.channels_last), *self.saved, *self.tables, gx),
                self.x_shape, gy.shape, self.channels_last)
        return gx_view


class MaxPool2d(_Pool):
    """y = max over each window of the -inf padded x;  gx: gy at the first maximal element"""

    def forward(self, x, kernel_size, stride=None, padding=0):
        kernel, stride, padding, (oh, ow) = _window_geometry(
            x, kernel_size, stride, padding, "max_pool2d")
        tables = _strided(x.shape, kernel, stride, padding, (oh, ow))
        return self._forward("max_pool_forward", x, tables, (*x.shape[:2], oh, ow), argmax=True)

    def backward(self, gy):                                                  # gy (n, c, oh, ow)
        return (self._gather("max_pool_backward", gy),)                      # (n, c, h, w)


class AvgPool2d(_Pool):
    """y = window sums / divisors (padding counts as zeros);  gx = sum of gy / divisors over the
    windows containing each pixel"""

    def forward(self, x, kernel_size, stride=None, padding=0):
        kernel, stride, padding, (oh, ow) = _window_geometry(
            x, kernel_size, stride, padding, "avg_pool2d")
        tables = _strided(x.shape, kernel, stride, padding, (oh, ow))
        return self._forward("avg_pool_forward", x, tables, (*x.shape[:2], oh, ow))

    def backward(self, gy):                                                  # gy (n, c, oh, ow)
        return (self._gather("avg_pool_backward", gy),)                      # (n, c, h, w)


class AdaptiveAvgPool2d(AvgPool2d):
    """y[n, c, i, j] = mean of x over rows floor(i h/oh)..ceil((i+1) h/oh) and columns likewise"""

    def forward(self, x, output_size):
        check_input(x, "x", "adaptive_avg_pool2d")
        oh, ow = pair(output_size, "output_size", 1)
        h, w = x.shape[2:]
        (rows, row_windows), (columns, column_windows) = (
            _adaptive_axis(cp.cuda.Device().id, int(h), int(oh)),
            _adaptive_axis(cp.cuda.Device().id, int(w), int(ow)))
        return self._forward("avg_pool_forward", x, (rows, columns, row_windows, column_windows),
                             (*x.shape[:2], oh, ow))


def max_pool2d(x, kernel_size, stride=None, padding=0):
    return MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    return AvgPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def adaptive_avg_pool2d(x, output_size):
    return AdaptiveAvgPool2d.apply(x, output_size=output_size)
