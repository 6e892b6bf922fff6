"""The kernels of gpu/kernels/conv.cu (im2col, col2im) on hypothesis-drawn convolutions (stride,
padding, dilation, odd sizes; float32 and float64) under the emulator's re-run checks, against
numpy fancy indexing and np.add.at. On a real GPU the same tests run through CuPy.
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import gpu
from gpu.ops.conv import col2im, im2col
from kernel_checks import DTYPES, assert_close, checked, run
from test_conv import conv_cases

cp = gpu.cupy


# ---- conv.cu ----------------------------------------------------------------------------------
@st.composite
def column_cases(draw):
    """A conv2d case with 1 to 40 channels (one or two 32-wide channel blocks of the 2-D grid),
    x stored NCHW or NHWC, a dtype and a seed."""
    x_shape, W_shape, stride, padding, dilation = draw(conv_cases())
    x_shape = (x_shape[0], draw(st.sampled_from([1, 3, 8, 33, 40])), *x_shape[2:])
    return (x_shape, W_shape[2:], stride, padding, dilation, draw(st.booleans()), draw(DTYPES),
            draw(st.integers(0, 2 ** 32 - 1)))


def window_indices(out, k, stride, dilation):
    """(out, k) indices into the padded axis: i stride + p dilation."""
    return np.arange(out)[:, None] * stride + np.arange(k) * dilation


def output_size(size, k, stride, padding, dilation):
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def im2col_reference(x, kernel, stride, padding, dilation):
    """cols[n, i, j, p, q, c] = xpad[n, c, i sy + p dy, j sx + q dx] by numpy padding and fancy
    indexing: (n, oh, ow, kh, kw, c)."""
    (kh, kw), (sy, sx), (ph, pw), (dy, dx) = kernel, stride, padding, dilation
    oh, ow = (output_size(*a) for a in ((x.shape[2], kh, sy, ph, dy), (x.shape[3], kw, sx, pw, dx)))
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))).transpose(0, 2, 3, 1)   # (n, hp, wp, c)
    rows, columns = window_indices(oh, kh, sy, dy), window_indices(ow, kw, sx, dx)
    return xpad[:, rows[:, None, :, None], columns[None, :, None, :], :]


def col2im_reference(gcols, x_shape, stride, padding, dilation):
    """gx (n, h, w, c): every column entry added (np.add.at) to the padded element it was read
    from, then the padding cut off."""
    n, oh, ow, kh, kw, c = gcols.shape
    (sy, sx), (ph, pw), (dy, dx) = stride, padding, dilation
    gxpad = np.zeros((n, x_shape[2] + 2 * ph, x_shape[3] + 2 * pw, c))
    for p, q in np.ndindex(kh, kw):
        rows = (np.arange(oh) * sy + p * dy)[:, None]                        # (oh, 1)
        columns = np.arange(ow) * sx + q * dx                                # (ow,)
        np.add.at(gxpad, (slice(None), rows, columns), gcols[:, :, :, p, q, :])
    return gxpad[:, ph:ph + x_shape[2], pw:pw + x_shape[3]]


def stored(x, channels_last):
    """x (n, c, h, w) on the device, in NHWC memory when channels_last, else NCHW."""
    if channels_last:
        return cp.ascontiguousarray(cp.asarray(x).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return cp.asarray(x)


@given(case=column_cases())
def test_im2col_gathers_the_padded_dilated_windows_in_both_memory_orders(case):
    x_shape, kernel, stride, padding, dilation, channels_last, dtype, seed = case
    x = np.random.default_rng(seed).standard_normal(x_shape).astype(dtype)
    with checked():
        cols = im2col(stored(x, channels_last), *kernel, *stride, *padding, *dilation)
    np.testing.assert_array_equal(cp.asnumpy(cols),
                                  im2col_reference(x, kernel, stride, padding, dilation))


@given(case=column_cases())
def test_col2im_gathers_what_the_scatter_adds(case):
    x_shape, kernel, stride, padding, dilation, _, dtype, seed = case
    (sy, sx), (ph, pw), (dy, dx) = stride, padding, dilation
    oh = output_size(x_shape[2], kernel[0], sy, ph, dy)
    ow = output_size(x_shape[3], kernel[1], sx, pw, dx)
    gcols = np.random.default_rng(seed).standard_normal(
        (x_shape[0], oh, ow, *kernel, x_shape[1])).astype(dtype)
    gx = cp.full((x_shape[0], *x_shape[2:], x_shape[1]), np.nan, dtype=dtype)
    with checked():
        col2im(cp.asarray(gcols), *x_shape[2:], *stride, *padding, *dilation, out=gx)
    assert_close(gx, col2im_reference(gcols.astype(np.float64), x_shape, stride, padding,
                                      dilation), dtype)


@given(c=st.integers(1, 300), rows=st.integers(1, 40), seed=st.integers(0, 99))
def test_im2col_covers_every_channel_and_row_with_any_block(c, rows, seed):
    """A 1x1 stride-2 im2col (a strided copy) under every 2-D block shape the host may pick."""
    x = np.random.default_rng(seed).standard_normal((1, c, rows, 2))
    for width in (1, 4, 32):
        cols = cp.full((1, -(-rows // 2), 1, 1, 1, c), np.nan)
        run("conv.cu", "im2col", np.float64, (c, cols.shape[1]),
            (cp.asarray(x), cols, *(np.int64(v) for v in (c * rows * 2, 2, 1, rows * 2)),
             *(np.int32(v) for v in (rows, 2, c, 1, 1, 2, 2, 0, 0, 1, 1, cols.shape[1], 1,
                                     cols.shape[1]))), block=(width, 256 // width))
        np.testing.assert_array_equal(cp.asnumpy(cols)[0, :, 0, 0, 0], x[0, :, ::2, 0].T)
