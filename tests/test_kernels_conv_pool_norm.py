"""The kernels of gpu/kernels/conv.cu, pool.cu and norm.cu, each launched through
gpu.kernels.launch on hypothesis-drawn shapes (stride, padding, dilation, odd sizes; float32 and
float64) under the emulator's re-run checks (reversed and shuffled thread order, one block), and
compared with a NumPy reference: fancy indexing for im2col, np.add.at for col2im, the loops of
reference.py for pooling, numpy reductions for batch norm. Copies and maxima must match exactly,
float64 sums to 1e-10, float32 sums loosely. On a real GPU the same tests run through CuPy.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu
import reference
from gpu.emulator import options
from gpu.kernels import launch
from test_conv import conv_cases
from test_pool import pool_cases

cp = gpu.cupy
DTYPES = st.sampled_from([np.float32, np.float64])
BLOCKS = st.sampled_from([32, 64, 256])
RTOL = {np.float32: 1e-4, np.float64: 1e-10}


def assert_close(got, want, dtype):
    np.testing.assert_allclose(cp.asnumpy(got), want, rtol=RTOL[dtype], atol=RTOL[dtype])


def run(file, name, dtype, total, args, block=256):
    """launch() under every re-run check of the emulator (ignored on a real GPU)."""
    with options.checks("order", "one_block"):
        launch(file, name, dtype, total, args, block=block)


# ---- conv.cu ----------------------------------------------------------------------------------
def conv_geometry(x_shape, W_shape, stride, padding, dilation):
    """The padded channels-last shape (n, hp, wp, c), the window (kh, kw, sy, sx, dy, dx) and
    the output size (oh, ow) of a conv2d case."""
    (n, c, h, w), (kh, kw) = x_shape, W_shape[2:]
    (sy, sx), (ph, pw), (dy, dx) = stride, padding, dilation
    hp, wp = h + 2 * ph, w + 2 * pw
    oh, ow = (hp - dy * (kh - 1) - 1) // sy + 1, (wp - dx * (kw - 1) - 1) // sx + 1
    return (n, hp, wp, c), (kh, kw, sy, sx, dy, dx), (oh, ow)


def conv_args(source, target, xpad_shape, window, out):
    sizes = (*xpad_shape[1:], *window, *out)    # hp wp c kh kw sy sx dy dx oh ow
    return (source, target, *(np.int32(v) for v in sizes), np.int64(target.size))


def im2col_reference(xpad, window, out):
    """cols[n, i, j, p, q, c] = xpad[n, i sy + p dy, j sx + q dx, c] by numpy fancy indexing."""
    kh, kw, sy, sx, dy, dx = window
    oh, ow = out
    rows = np.arange(oh)[:, None] * sy + np.arange(kh) * dy                 # (oh, kh)
    columns = np.arange(ow)[:, None] * sx + np.arange(kw) * dx              # (ow, kw)
    return xpad[:, rows[:, None, :, None], columns[None, :, None, :], :]    # (n, oh, ow, kh, kw, c)


def col2im_reference(gcols, xpad_shape, window):
    """gxpad: every column entry added (np.add.at) to the element it was read from."""
    kh, kw, sy, sx, dy, dx = window
    n, oh, ow = gcols.shape[:3]
    gxpad = np.zeros(xpad_shape)
    for p, q in np.ndindex(kh, kw):
        rows = (np.arange(oh) * sy + p * dy)[:, None]                        # (oh, 1)
        columns = np.arange(ow) * sx + q * dx                                # (ow,)
        np.add.at(gxpad, (slice(None), rows, columns), gcols[:, :, :, p, q, :])
    return gxpad


@given(case=conv_cases(), dtype=DTYPES, block=BLOCKS, seed=st.integers(0, 99))
def test_im2col_gathers_the_dilated_windows(case, dtype, block, seed):
    xpad_shape, window, out = conv_geometry(*case)
    xpad = np.random.default_rng(seed).standard_normal(xpad_shape).astype(dtype)
    cols = cp.full((xpad_shape[0], *out, *window[:2], xpad_shape[3]), np.nan, dtype=dtype)
    run("conv.cu", "im2col", dtype, cols.size,
        conv_args(cp.asarray(xpad), cols, xpad_shape, window, out), block)
    np.testing.assert_array_equal(cp.asnumpy(cols), im2col_reference(xpad, window, out))


@given(case=conv_cases(), dtype=DTYPES, block=BLOCKS, seed=st.integers(0, 99))
def test_col2im_gathers_what_the_scatter_adds(case, dtype, block, seed):
    xpad_shape, window, out = conv_geometry(*case)
    gcols = np.random.default_rng(seed).standard_normal(
        (xpad_shape[0], *out, *window[:2], xpad_shape[3])).astype(dtype)
    gxpad = cp.full(xpad_shape, np.nan, dtype=dtype)
    run("conv.cu", "col2im", dtype, gxpad.size,
        conv_args(cp.asarray(gcols), gxpad, xpad_shape, window, out), block)
    assert_close(gxpad, col2im_reference(gcols.astype(np.float64), xpad_shape, window), dtype)


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


# ---- norm.cu ----------------------------------------------------------------------------------
@st.composite
def norm_cases(draw):
    """(n, c, s) with n s >= 2 (up to 3 values per thread), a dtype and a seed; s = 1 is the
    (n, c) input."""
    n, c, s = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 120))
    return (max(n, 2) if s == 1 else n, c, s), draw(DTYPES), draw(st.integers(0, 99))


def norm_arrays(shape, dtype, seed, count):
    """`count` random (n, c, s) arrays (the first with an offset, as batch norm inputs have) and
    random per-channel arrays (c,)."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape).astype(dtype) for _ in range(count)]
    arrays[0] += dtype(3)
    return arrays, lambda: rng.uniform(0.5, 2, shape[1]).astype(dtype)


def norm_sizes(shape, *extra):
    n, c, s = shape
    return (np.int32(c), np.int64(s), *(np.int64(v) for v in extra))


@settings(max_examples=15)
@given(case=norm_cases())
def test_batch_norm_stats_are_the_mean_and_biased_variance(case):
    shape, dtype, seed = case
    (x,), _ = norm_arrays(shape, dtype, seed, 1)
    mean, var = cp.full(shape[1], np.nan, dtype=dtype), cp.full(shape[1], np.nan, dtype=dtype)
    run("norm.cu", "batch_norm_stats", dtype, shape[1] * 256,
        (cp.asarray(x), mean, var, *norm_sizes(shape, shape[0] * shape[2])))
    assert_close(mean, x.astype(np.float64).mean(axis=(0, 2)), dtype)
    assert_close(var, x.astype(np.float64).var(axis=(0, 2)), dtype)


@settings(max_examples=15)
@given(case=norm_cases())
def test_batch_norm_sums_are_sum_gy_and_sum_gy_x_hat(case):
    shape, dtype, seed = case
    (x, gy), channel = norm_arrays(shape, dtype, seed, 2)
    mean, inv_std = channel(), channel()
    gbias, gweight = cp.full(shape[1], np.nan, dtype=dtype), cp.full(shape[1], np.nan, dtype=dtype)
    run("norm.cu", "batch_norm_sums", dtype, shape[1] * 256,
        (cp.asarray(gy), cp.asarray(x), cp.asarray(mean), cp.asarray(inv_std), gbias, gweight,
         *norm_sizes(shape, shape[0] * shape[2])))
    x_hat = (x.astype(np.float64) - mean[:, None]) * inv_std[:, None]
    assert_close(gbias, gy.astype(np.float64).sum(axis=(0, 2)), dtype)
    assert_close(gweight, (gy * x_hat).sum(axis=(0, 2)), dtype)


@given(case=norm_cases(), block=BLOCKS)
def test_batch_norm_apply_is_the_affine_map(case, block):
    shape, dtype, seed = case
    (x,), channel = norm_arrays(shape, dtype, seed, 1)
    mean, scale, shift = channel(), channel(), channel()
    y = cp.full(shape, np.nan, dtype=dtype)
    run("norm.cu", "batch_norm_apply", dtype, y.size,
        (cp.asarray(x), cp.asarray(mean), cp.asarray(scale), cp.asarray(shift), y,
         *norm_sizes(shape, y.size)), block)
    want = (x.astype(np.float64) - mean[:, None]) * scale[:, None] + shift[:, None]
    assert_close(y, want, dtype)


@given(case=norm_cases(), block=BLOCKS)
def test_batch_norm_backward_is_the_training_gradient(case, block):
    shape, dtype, seed = case
    (x, gy), channel = norm_arrays(shape, dtype, seed, 2)
    mean, inv_std, scale, gbias, gweight = (channel() for _ in range(5))
    m = shape[0] * shape[2]
    gx = cp.full(shape, np.nan, dtype=dtype)
    arrays = (gy, x, mean, inv_std, scale, gbias, gweight)
    run("norm.cu", "batch_norm_backward", dtype, gx.size,
        (*(cp.asarray(a) for a in arrays), gx, *norm_sizes(shape, m, gx.size)), block)
    x_hat = (x.astype(np.float64) - mean[:, None]) * inv_std[:, None]
    want = scale[:, None] * (gy - gbias[:, None] / m - x_hat * gweight[:, None] / m)
    assert_close(gx, want, dtype)


@pytest.mark.parametrize("name", ["batch_norm_stats", "batch_norm_sums"])
def test_reductions_declare_their_block_size(name):
    with pytest.raises(ValueError, match=r"declares `// block: 256`; launched with block=128"):
        launch("norm.cu", name, np.float32, 256, (), block=128)
