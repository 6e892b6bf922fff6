"""The kernels of gpu/kernels/pool.cu on hypothesis-drawn pools (windows, strides, padding, ties;
float32 and float64) under the emulator's re-run checks, against the loops of reference.py.
On a real GPU the same tests run through CuPy.
"""
import numpy as np
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


def sizes(x_shape, y_shape, total):
    return (*(np.int32(v) for v in (*x_shape[2:], *y_shape[2:])), np.int64(total))


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


@given(case=pool_cases(), dtype=DTYPES, ties=st.booleans(), block=BLOCKS, seed=st.integers(0, 99))
def test_max_pool_forward_gives_the_maximum_and_its_first_index(case, dtype, ties, block, seed):
    x_shape, kernel_size, stride, padding = case
    x = pool_input(x_shape, seed, dtype, ties)
    rows, columns = pool_windows(x_shape, kernel_size, stride, padding)
    y_shape = (*x_shape[:2], rows.shape[1], columns.shape[1])
    y, first = cp.full(y_shape, np.nan, dtype=dtype), cp.full(y_shape, -7, dtype=cp.int32)
    run("pool.cu", "max_pool_forward", dtype, y.size,
        (cp.asarray(x), cp.asarray(rows), cp.asarray(columns), y, first,
         *sizes(x_shape, y_shape, y.size)), block)
    np.testing.assert_array_equal(cp.asnumpy(y),
                                  reference.max_pool2d(x, kernel_size, stride, padding))
    np.testing.assert_array_equal(cp.asnumpy(first), first_maximum(x, rows, columns))


@given(case=pool_cases(), dtype=DTYPES, ties=st.booleans(), block=BLOCKS, seed=st.integers(0, 99))
def test_max_pool_backward_gives_gy_to_the_first_maximum(case, dtype, ties, block, seed):
    x_shape, kernel_size, stride, padding = case
    x = pool_input(x_shape, seed, dtype, ties)
    rows, columns = pool_windows(x_shape, kernel_size, stride, padding)
    y_shape = (*x_shape[:2], rows.shape[1], columns.shape[1])
    gy = np.random.default_rng(seed + 1).standard_normal(y_shape).astype(dtype)
    gx = cp.full(x_shape, np.nan, dtype=dtype)
    run("pool.cu", "max_pool_backward", dtype, gx.size,
        (cp.asarray(gy), cp.asarray(first_maximum(x, rows, columns)), cp.asarray(rows),
         cp.asarray(columns), cp.asarray(containing(rows, x_shape[2])),
         cp.asarray(containing(columns, x_shape[3])), gx, *sizes(x_shape, y_shape, gx.size)),
        block)
    _, want = reference.max_pool2d(x.astype(np.float64), kernel_size, stride, padding,
                                   gy=gy.astype(np.float64))
    assert_close(gx, want, dtype)


def check_average(x, rows, columns, dtype, block, seed, want_y):
    """avg_pool_forward against want_y, avg_pool_backward against gx = A^T gy B."""
    x_shape = x.shape
    y_shape = (*x_shape[:2], rows.shape[1], columns.shape[1])
    windows = (cp.asarray(rows), cp.asarray(columns))
    y = cp.full(y_shape, np.nan, dtype=dtype)
    run("pool.cu", "avg_pool_forward", dtype, y.size,
        (cp.asarray(x), *windows, y, *sizes(x_shape, y_shape, y.size)), block)
    assert_close(y, want_y, dtype)
    gy = np.random.default_rng(seed + 1).standard_normal(y_shape).astype(dtype)
    gx = cp.full(x_shape, np.nan, dtype=dtype)
    run("pool.cu", "avg_pool_backward", dtype, gx.size,
        (cp.asarray(gy), *windows, cp.asarray(containing(rows, x_shape[2])),
         cp.asarray(containing(columns, x_shape[3])), gx, *sizes(x_shape, y_shape, gx.size)),
        block)
    A, B = averaging_matrix(rows, x_shape[2]), averaging_matrix(columns, x_shape[3])
    assert_close(gx, A.T @ gy.astype(np.float64) @ B, dtype)


@given(case=pool_cases(), dtype=DTYPES, block=BLOCKS, seed=st.integers(0, 99))
def test_avg_pool_kernels_count_the_padding(case, dtype, block, seed):
    x_shape, kernel_size, stride, padding = case
    x = pool_input(x_shape, seed, dtype, ties=False)
    rows, columns = pool_windows(x_shape, kernel_size, stride, padding)
    want = reference.avg_pool2d(x.astype(np.float64), kernel_size, stride, padding)
    check_average(x, rows, columns, dtype, block, seed, want)


@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       oh=st.integers(1, 5), ow=st.integers(1, 5), dtype=DTYPES, block=BLOCKS,
       seed=st.integers(0, 99))
def test_avg_pool_kernels_on_adaptive_bins(n, c, h, w, oh, ow, dtype, block, seed):
    x = pool_input((n, c, h, w), seed, dtype, ties=False)
    want = reference.adaptive_avg_pool2d(x.astype(np.float64), (oh, ow))
    check_average(x, adaptive_windows(h, oh), adaptive_windows(w, ow), dtype, block, seed, want)
