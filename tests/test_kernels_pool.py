"""The kernels of gpu/kernels/pool.cu on hypothesis-drawn pools (windows, strides, padding, ties;
float32 and float64) in both memory orders (channels_last 0: NCHW, 1: NHWC) under the emulator's
re-run checks, against the loops of reference.py; and the window tables of gpu/ops/pool.py, built
once per geometry. On a real GPU the same kernel tests run through CuPy.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gpu
import reference
from kernel_checks import BLOCKS, DTYPES, assert_close, run
from test_pool import pool_cases

cp = gpu.cupy


# ---- pool.cu ----------------------------------------------------------------------------------
def strided_windows(k, size, stride, padding):
    """(3, k) int32: start, end, divisor of windows i stride - padding .. + size."""
    starts = np.arange(k) * stride - padding
    return np.stack([starts, starts + size, np.full(k, size)]).astype(np.int32)


def adaptive_windows(size, k):
    starts = np.array([i * size // k for i in range(k)])
    ends = np.array([-(-(i + 1) * size // k) for i in range(k)])
    return np.stack([starts, ends, ends - starts]).astype(np.int32)


def containing(windows, size):
    """(2, size) int32: the windows first <= i < end containing each position, by a loop."""
    result = np.zeros((2, size), dtype=np.int32)
    for r in range(size):
        inside = [i for i in range(windows.shape[1]) if windows[0, i] <= r < windows[1, i]]
        result[:, r] = (inside[0], inside[-1] + 1) if inside else (0, 0)
    return result


def averaging_matrix(windows, size):
    """A (k, size): A[i, r] = 1 / divisor for the r of window i inside 0 <= r < size."""
    A = np.zeros((windows.shape[1], size))
    for i, (start, end, divisor) in enumerate(windows.T):
        A[i, max(start, 0):min(end, size)] = 1 / divisor
    return A


def pool_windows(x_shape, kernel_size, stride, padding):
    (kh, kw), (ph, pw) = kernel_size, padding
    sy, sx = kernel_size if stride is None else stride
    oh, ow = (x_shape[2] + 2 * ph - kh) // sy + 1, (x_shape[3] + 2 * pw - kw) // sx + 1
    return strided_windows(oh, kh, sy, ph), strided_windows(ow, kw, sx, pw)


def sizes(x_shape, y_shape, channels_last, total):
    """The kernels' scalar arguments: c h w oh ow channels_last total."""
    return (*(np.int32(v) for v in (x_shape[1], *x_shape[2:], *y_shape[2:], channels_last)),
            np.int64(total))


ORDERS = pytest.mark.parametrize("channels_last", [0, 1])


def to_device(a, channels_last):
    """The (n, c, h, w) host array a as C-contiguous device memory in the kernels' order:
    NHWC (n, h, w, c) when channels_last, else NCHW."""
    return cp.asarray(np.ascontiguousarray(a.transpose(0, 2, 3, 1) if channels_last else a))


def to_host(a, channels_last):
    """Device memory in the kernels' order back to a host (n, c, h, w) array."""
    a = cp.asnumpy(a)
    return a.transpose(0, 3, 1, 2) if channels_last else a


def filled(shape, value, dtype, channels_last):
    """Device memory for a (n, c, h, w) output in the kernels' order, filled with value."""
    n, c, h, w = shape
    return cp.full((n, h, w, c) if channels_last else shape, value, dtype=dtype)


def first_maximum(x, rows, columns):
    """numpy.argmax over each -inf padded window, flattened row-major: (n, c, oh, ow)."""
    n, c, h, w = x.shape
    first = np.zeros((n, c, rows.shape[1], columns.shape[1]), dtype=np.int32)
    for i, j in np.ndindex(*first.shape[2:]):
        window = np.full((n, c, rows[1, i] - rows[0, i], columns[1, j] - columns[0, j]), -np.inf)
        for p, q in np.ndindex(*window.shape[2:]):
            r, s = rows[0, i] + p, columns[0, j] + q
            if 0 <= r < h and 0 <= s < w:
                window[:, :, p, q] = x[:, :, r, s]
        first[:, :, i, j] = window.reshape(n, c, -1).argmax(axis=2)
    return first


def pool_input(shape, seed, dtype, ties):
    """Random values, or small integers when `ties` (so windows hold several maxima)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape) if ties else rng.standard_normal(shape)
    return x.astype(dtype)


@ORDERS
@given(case=pool_cases(), dtype=DTYPES, ties=st.booleans(), block=BLOCKS, seed=st.integers(0, 99))
def test_max_pool_forward_gives_the_maximum_and_its_first_index(channels_last, case, dtype, ties,
                                                                block, seed):
    x_shape, kernel_size, stride, padding = case
    x = pool_input(x_shape, seed, dtype, ties)
    rows, columns = pool_windows(x_shape, kernel_size, stride, padding)
    y_shape = (*x_shape[:2], rows.shape[1], columns.shape[1])
    y = filled(y_shape, np.nan, dtype, channels_last)
    first = filled(y_shape, -7, np.int32, channels_last)
    run("pool.cu", "max_pool_forward", dtype, y.size,
        (to_device(x, channels_last), cp.asarray(rows), cp.asarray(columns), y, first,
         *sizes(x_shape, y_shape, channels_last, y.size)), block)
    np.testing.assert_array_equal(to_host(y, channels_last),
                                  reference.max_pool2d(x, kernel_size, stride, padding))
    np.testing.assert_array_equal(to_host(first, channels_last), first_maximum(x, rows, columns))


@ORDERS
@given(case=pool_cases(), dtype=DTYPES, ties=st.booleans(), block=BLOCKS, seed=st.integers(0, 99))
def test_max_pool_backward_gives_gy_to_the_first_maximum(channels_last, case, dtype, ties, block,
                                                         seed):
    x_shape, kernel_size, stride, padding = case
    x = pool_input(x_shape, seed, dtype, ties)
    rows, columns = pool_windows(x_shape, kernel_size, stride, padding)
    y_shape = (*x_shape[:2], rows.shape[1], columns.shape[1])
    gy = np.random.default_rng(seed + 1).standard_normal(y_shape).astype(dtype)
    gx = filled(x_shape, np.nan, dtype, channels_last)
    run("pool.cu", "max_pool_backward", dtype, gx.size,
        (to_device(gy, channels_last), to_device(first_maximum(x, rows, columns), channels_last),
         cp.asarray(rows), cp.asarray(columns), cp.asarray(containing(rows, x_shape[2])),
         cp.asarray(containing(columns, x_shape[3])), gx,
         *sizes(x_shape, y_shape, channels_last, gx.size)), block)
    _, want = reference.max_pool2d(x.astype(np.float64), kernel_size, stride, padding,
                                   gy=gy.astype(np.float64))
    assert_close(to_host(gx, channels_last), want, dtype)


def check_average(x, rows, columns, dtype, block, seed, want_y, channels_last):
    """avg_pool_forward against want_y, avg_pool_backward against gx = A^T gy B, on memory in the
    order channels_last."""
    x_shape = x.shape
    y_shape = (*x_shape[:2], rows.shape[1], columns.shape[1])
    windows = (cp.asarray(rows), cp.asarray(columns))
    y = filled(y_shape, np.nan, dtype, channels_last)
    run("pool.cu", "avg_pool_forward", dtype, y.size,
        (to_device(x, channels_last), *windows, y,
         *sizes(x_shape, y_shape, channels_last, y.size)), block)
    assert_close(to_host(y, channels_last), want_y, dtype)
    gy = np.random.default_rng(seed + 1).standard_normal(y_shape).astype(dtype)
    gx = filled(x_shape, np.nan, dtype, channels_last)
    run("pool.cu", "avg_pool_backward", dtype, gx.size,
        (to_device(gy, channels_last), *windows, cp.asarray(containing(rows, x_shape[2])),
         cp.asarray(containing(columns, x_shape[3])), gx,
         *sizes(x_shape, y_shape, channels_last, gx.size)), block)
    A, B = averaging_matrix(rows, x_shape[2]), averaging_matrix(columns, x_shape[3])
    assert_close(to_host(gx, channels_last), A.T @ gy.astype(np.float64) @ B, dtype)


@ORDERS
@given(case=pool_cases(), dtype=DTYPES, block=BLOCKS, seed=st.integers(0, 99))
def test_avg_pool_kernels_count_the_padding(channels_last, case, dtype, block, seed):
    x_shape, kernel_size, stride, padding = case
    x = pool_input(x_shape, seed, dtype, ties=False)
    rows, columns = pool_windows(x_shape, kernel_size, stride, padding)
    want = reference.avg_pool2d(x.astype(np.float64), kernel_size, stride, padding)
    check_average(x, rows, columns, dtype, block, seed, want, channels_last)


@ORDERS
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       oh=st.integers(1, 5), ow=st.integers(1, 5), dtype=DTYPES, block=BLOCKS,
       seed=st.integers(0, 99))
def test_avg_pool_kernels_on_adaptive_bins(channels_last, n, c, h, w, oh, ow, dtype, block, seed):
    x = pool_input((n, c, h, w), seed, dtype, ties=False)
    want = reference.adaptive_avg_pool2d(x.astype(np.float64), (oh, ow))
    check_average(x, adaptive_windows(h, oh), adaptive_windows(w, ow), dtype, block, seed, want,
                  channels_last)


# ---- gpu/ops/pool.py: window tables built once per geometry ------------------------------------
def windows_of(table):
    """The windows containing each position of a (2, size) containing table, as ranges."""
    first, end = cp.asnumpy(table)
    return [list(range(a, b)) for a, b in zip(first, end)]


@given(case=pool_cases())
def test_cached_tables_match_the_loops(case):
    from gpu.ops import pool
    x_shape, kernel_size, stride, padding = case
    rows, columns = pool_windows(x_shape, kernel_size, stride, padding)
    sy, sx = kernel_size if stride is None else stride
    for size, want, window, step, pad in ((x_shape[2], rows, kernel_size[0], sy, padding[0]),
                                          (x_shape[3], columns, kernel_size[1], sx, padding[1])):
        windows, inside = pool._strided_axis(0, size, want.shape[1], window, step, pad)
        np.testing.assert_array_equal(cp.asnumpy(windows), want)
        assert windows.dtype == inside.dtype == np.int32
        assert windows_of(inside) == windows_of(cp.asarray(containing(want, size)))
    for size, k in ((x_shape[2], 1), (x_shape[3], x_shape[3] + 2)):
        windows, inside = pool._adaptive_axis(0, size, k)
        np.testing.assert_array_equal(cp.asnumpy(windows), adaptive_windows(size, k))
        assert windows_of(inside) == windows_of(cp.asarray(containing(windows, size)))


POOLS = {"max_pool2d": ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1)),
         "avg_pool2d": ("AvgPool2d", dict(kernel_size=2)),
         "adaptive_avg_pool2d": ("AdaptiveAvgPool2d", dict(output_size=(2, 3))),
         "global_avg_pool2d": ("AdaptiveAvgPool2d", dict(output_size=1))}


@pytest.mark.skipif(not gpu.EMULATED, reason="the launch counter instruments the emulated cupy")
@pytest.mark.parametrize("x_last", [False, True])
@pytest.mark.parametrize("name", sorted(POOLS))
def test_a_second_call_launches_only_the_pool_kernel(name, x_last):
    """Same geometry again: forward one launch and no upload (the tables are cached); backward
    one launch with gy in y's order, plus one copy of gy otherwise ((n, c, 1, 1): the same
    memory in both orders)."""
    from gpu.ops import pool
    from gpu.tools import counter
    cls, params = POOLS[name]
    rng = np.random.default_rng(0)
    x = to_device(rng.standard_normal((2, 3, 7, 6)), x_last)
    x = x.transpose(0, 3, 1, 2) if x_last else x                       # (n, c, h, w) view
    getattr(pool, cls)().forward(x, **params)                          # may upload the tables
    for gy_last in (False, True):
        op = getattr(pool, cls)()
        with counter.counting() as forward:
            y = op.forward(x, **params)
        assert (forward.launches, forward.total("kernel"), forward.total("upload")) == (1, 1, 0), \
            forward.table()
        assert y.transpose(0, 2, 3, 1).flags.c_contiguous == x_last or y.shape[2:] == (1, 1)
        gy = to_device(rng.standard_normal(y.shape), gy_last)
        gy = gy.transpose(0, 3, 1, 2) if gy_last else gy
        with counter.counting() as backward:
            gx = op.backward(gy)[0]
        copies = int(gy_last != x_last and y.shape[2:] != (1, 1))
        assert (backward.launches, backward.total("kernel"), backward.total("upload")) == \
            (1 + copies, 1, 0), backward.table()
        assert gx.shape == x.shape and gx.transpose(0, 2, 3, 1).flags.c_contiguous == x_last
