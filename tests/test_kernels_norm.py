"""The kernels of gpu/kernels/norm.cu on hypothesis-drawn shapes (float32 and float64) under the
emulator's re-run checks, against numpy reductions. On a real GPU the same tests run through
CuPy.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu
from gpu.kernels import launch
from kernel_checks import BLOCKS, DTYPES, assert_close, run

cp = gpu.cupy


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
