"""The kernels of gpu/kernels/conv.cu (im2col, col2im) on hypothesis-drawn convolutions (stride,
padding, dilation, odd sizes; float32 and float64) under the emulator's re-run checks, against
numpy fancy indexing and np.add.at. On a real GPU the same tests run through CuPy.
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import gpu
from kernel_checks import BLOCKS, DTYPES, assert_close, run
from test_conv import conv_cases

cp = gpu.cupy


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
