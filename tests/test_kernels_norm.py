"""The kernels of gpu/kernels/norm.cu on hypothesis-drawn (m, c) matrices (channels-last memory;
c below, above and not a multiple of 32; float32 and float64; inputs offset by up to +1000) under
the emulator's re-run checks, against float64 numpy reductions; row slab counts and grids are
drawn independently, so slabs outnumber the blocks, blocks outnumber the channel groups, and a
slab may be empty. Output arrays start NaN-filled, so an element a kernel fails to write fails.
On a real GPU the same kernel tests run through CuPy.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gpu
from gpu.kernels import launch
from gpu.ops.norm import _slabs
from kernel_checks import DTYPES, assert_close, run

cp = gpu.cupy
REDUCTION_BLOCK = (32, 8)
BLOCKS_2D = st.sampled_from([(32, 8), (4, 64), (16, 2), (1, 32)])


# ---- cases ------------------------------------------------------------------------------------
@st.composite
def matrices(draw):
    """(m, c, dtype, offset, seed): an (m, c) matrix of m = 1 .. 300 rows, c = 1 .. 70 channels,
    values offset by 0, 3 or 1000 (as batch norm inputs are; the variance must survive it)."""
    m = draw(st.one_of(st.integers(1, 12), st.integers(13, 300)))
    c = draw(st.one_of(st.integers(1, 4), st.integers(5, 70)))
    return m, c, draw(DTYPES), draw(st.sampled_from([0.0, 3.0, 1000.0])), draw(st.integers(0, 99))


@st.composite
def slabbings(draw, m, c):
    """(slabs, rows per slab, total for launch) of a reduction: R = 1 .. 8 slabs of
    ceil(m / R) rows (the last ones may be empty), a grid of 1 .. 3 channel groups by 1 .. R + 1
    slab blocks (fewer or more than needed)."""
    slabs = draw(st.integers(1, 8))
    rows = -(-m // slabs)
    gx, gy = draw(st.integers(1, 3)), draw(st.integers(1, slabs + 1))
    return slabs, rows, (REDUCTION_BLOCK[0] * gx, REDUCTION_BLOCK[1] * gy)


def random_matrix(m, c, dtype, offset, rng):
    return (rng.standard_normal((m, c)) + offset).astype(dtype)


def channel_values(c, dtype, rng):
    return rng.uniform(0.5, 2, c).astype(dtype)


def nans(shape, dtype):
    return cp.full(shape, np.nan, dtype=dtype)


def slab_ranges(m, slabs, rows):
    """[(begin, end)] of each slab's rows (begin == end: empty)."""
    return [(min(r * rows, m), min((r + 1) * rows, m)) for r in range(slabs)]


def sizes(c, m, slabs=None, rows=None):
    tail = () if slabs is None else (np.int32(slabs), np.int64(rows))
    return (np.int32(c), np.int64(m), *tail)


# ---- statistics -------------------------------------------------------------------------------
@given(case=matrices(), data=st.data())
def test_batch_norm_partial_stats_are_each_slabs_mean_and_squared_deviations(case, data):
    m, c, dtype, offset, seed = case
    slabs, rows, total = data.draw(slabbings(m, c))
    x = random_matrix(m, c, dtype, offset, np.random.default_rng(seed))
    part_mean, part_m2 = nans((slabs, c), dtype), nans((slabs, c), dtype)
    run("norm.cu", "batch_norm_partial_stats", dtype, total,
        (cp.asarray(x), part_mean, part_m2, *sizes(c, m, slabs, rows)), REDUCTION_BLOCK)
    want_mean, want_m2 = np.zeros((slabs, c)), np.zeros((slabs, c))   # empty slabs: 0 and 0
    for r, (begin, end) in enumerate(slab_ranges(m, slabs, rows)):
        if end > begin:
            part = x[begin:end].astype(np.float64)
            want_mean[r] = part.mean(axis=0)
            want_m2[r] = ((part - want_mean[r]) ** 2).sum(axis=0)
    assert_close(part_mean, want_mean, dtype)
    assert_close(part_m2, want_m2, dtype)


@given(case=matrices(), data=st.data(), has_weight=st.booleans(), has_bias=st.booleans(),
       has_running=st.booleans(), biased=st.booleans(),
       momentum=st.sampled_from([0.0, 0.1, 1.0]), eps=st.sampled_from([0.0, 1e-5, 1e-3]))
def test_batch_norm_finalize_stats_merges_the_slabs(case, data, has_weight, has_bias,
                                                    has_running, biased, momentum, eps):
    m, c, dtype, offset, seed = case
    m = max(m, 2)                                   # training needs two values per channel
    slabs = data.draw(st.integers(1, 8))
    rows = -(-m // slabs)
    rng = np.random.default_rng(seed)
    x = random_matrix(m, c, dtype, offset, rng).astype(np.float64)
    counts = np.zeros((slabs, 1))
    part_mean, part_m2 = np.zeros((slabs, c)), np.zeros((slabs, c))   # empty slabs: 0 and 0
    for r, (begin, end) in enumerate(slab_ranges(m, slabs, rows)):
        if end > begin:
            counts[r] = end - begin
            part_mean[r] = x[begin:end].mean(axis=0)
            part_m2[r] = ((x[begin:end] - part_mean[r]) ** 2).sum(axis=0)
    part_mean, part_m2 = part_mean.astype(dtype), part_m2.astype(dtype)   # the kernel's inputs
    weight, bias, running_mean, running_var = (channel_values(c, dtype, rng) for _ in range(4))
    present = {"weight": has_weight, "bias": has_bias, "running": has_running}

    def device(a, key):
        return cp.asarray(a) if present[key] else cp.empty(0, dtype=dtype)

    running = [device(running_mean, "running"), device(running_var, "running")]
    outputs = [nans(c, dtype) for _ in range(4)]                  # mean, inv_std, scale, shift
    run("norm.cu", "batch_norm_finalize_stats", dtype, c,
        (cp.asarray(part_mean), cp.asarray(part_m2),
         device(weight, "weight"), device(bias, "bias"), *running, *outputs,
         *sizes(c, m, slabs, rows), np.int32(has_weight), np.int32(has_bias),
         np.int32(has_running), np.int32(biased), dtype(momentum), dtype(eps)))
    # the exact merge of the given (rounded) parts, in float64
    part_mean, part_m2 = part_mean.astype(np.float64), part_m2.astype(np.float64)
    mean = (counts * part_mean).sum(axis=0) / m
    var = (part_m2.sum(axis=0) + (counts * (part_mean - mean) ** 2).sum(axis=0)) / m
    inv_std = 1 / np.sqrt(var + eps)
    wants = [mean, inv_std, weight * inv_std if has_weight else inv_std,
             bias if has_bias else np.zeros(c)]
    for got, want in zip(outputs, wants):
        assert_close(got, want, dtype)
    if has_running:
        batch_var = var if biased else var * m / (m - 1)
        assert_close(running[0], (1 - momentum) * running_mean + momentum * mean, dtype)
        assert_close(running[1], (1 - momentum) * running_var + momentum * batch_var, dtype)


@given(case=matrices(), data=st.data())
def test_batch_norm_statistics_are_sound_in_float32_with_a_large_offset(case, data):
    """partial_stats then finalize_stats (as the op runs them, on any slabbing) give the mean and
    biased variance of a float64 reference: no cancellation with values of 1000 +- 1 in float32."""
    m, c, dtype, offset, seed = case
    m = max(m, 2)
    slabs, rows, total = data.draw(slabbings(m, c))
    x = random_matrix(m, c, dtype, offset, np.random.default_rng(seed))
    part_mean, part_m2 = nans((slabs, c), dtype), nans((slabs, c), dtype)
    run("norm.cu", "batch_norm_partial_stats", dtype, total,
        (cp.asarray(x), part_mean, part_m2, *sizes(c, m, slabs, rows)), REDUCTION_BLOCK)
    outputs = [nans(c, dtype) for _ in range(4)]                  # mean, inv_std, scale, shift
    empty = cp.empty(0, dtype=dtype)
    run("norm.cu", "batch_norm_finalize_stats", dtype, c,
        (part_mean, part_m2, empty, empty, empty, empty, *outputs, *sizes(c, m, slabs, rows),
         *(np.int32(0) for _ in range(4)), dtype(0.1), dtype(0)))
    x64 = x.astype(np.float64)
    assert_close(outputs[0], x64.mean(axis=0), dtype)
    assert_close(1 / cp.asnumpy(outputs[1]).astype(np.float64) ** 2, x64.var(axis=0), dtype)


@given(c=st.integers(1, 70), dtype=DTYPES, has_weight=st.booleans(), has_bias=st.booleans(),
       eps=st.sampled_from([0.0, 1e-5]), seed=st.integers(0, 99))
def test_batch_norm_eval_coefficients_come_from_the_running_statistics(c, dtype, has_weight,
                                                                       has_bias, eps, seed):
    rng = np.random.default_rng(seed)
    running_mean, running_var, weight, bias = (channel_values(c, dtype, rng) for _ in range(4))
    running_mean -= dtype(1.2)
    outputs = [nans(c, dtype) for _ in range(4)]                  # mean, inv_std, scale, shift
    empty = cp.empty(0, dtype=dtype)
    run("norm.cu", "batch_norm_eval_coefficients", dtype, c,
        (cp.asarray(running_mean), cp.asarray(running_var),
         cp.asarray(weight) if has_weight else empty, cp.asarray(bias) if has_bias else empty,
         *outputs, np.int32(c), np.int32(has_weight), np.int32(has_bias), dtype(eps)))
    inv_std = 1 / np.sqrt(running_var.astype(np.float64) + eps)
    wants = [running_mean, inv_std, weight * inv_std if has_weight else inv_std,
             bias if has_bias else np.zeros(c)]
    for got, want in zip(outputs, wants):
        assert_close(got, want, dtype)


# ---- forward apply ----------------------------------------------------------------------------
@given(case=matrices(), block=BLOCKS_2D)
def test_batch_norm_apply_is_the_affine_map(case, block):
    m, c, dtype, offset, seed = case
    rng = np.random.default_rng(seed)
    x = random_matrix(m, c, dtype, offset, rng)
    mean, scale, shift = (channel_values(c, dtype, rng) for _ in range(3))
    mean += dtype(offset)
    y = nans((m, c), dtype)
    run("norm.cu", "batch_norm_apply", dtype, (c, m),
        (cp.asarray(x), cp.asarray(mean), cp.asarray(scale), cp.asarray(shift), y, *sizes(c, m)),
        block)
    assert_close(y, (x.astype(np.float64) - mean) * scale + shift, dtype)


# ---- backward ---------------------------------------------------------------------------------
@given(case=matrices(), data=st.data())
def test_batch_norm_partial_sums_are_each_slabs_sum_gy_and_sum_gy_x_centred(case, data):
    m, c, dtype, offset, seed = case
    slabs, rows, total = data.draw(slabbings(m, c))
    rng = np.random.default_rng(seed)
    x, gy = random_matrix(m, c, dtype, offset, rng), random_matrix(m, c, dtype, 0.0, rng)
    mean = x.astype(np.float64).mean(axis=0).astype(dtype)
    part_sum, part_dot = nans((slabs, c), dtype), nans((slabs, c), dtype)
    run("norm.cu", "batch_norm_partial_sums", dtype, total,
        (cp.asarray(gy), cp.asarray(x), cp.asarray(mean), part_sum, part_dot,
         *sizes(c, m, slabs, rows)), REDUCTION_BLOCK)
    want_sum, want_dot = np.zeros((slabs, c)), np.zeros((slabs, c))   # empty slabs: 0 and 0
    centred = gy.astype(np.float64) * (x.astype(np.float64) - mean)
    for r, (begin, end) in enumerate(slab_ranges(m, slabs, rows)):
        want_sum[r] = gy[begin:end].astype(np.float64).sum(axis=0)
        want_dot[r] = centred[begin:end].sum(axis=0)
    assert_close(part_sum, want_sum, dtype)
    assert_close(part_dot, want_dot, dtype)


@given(slabs=st.integers(1, 9), c=st.integers(1, 70), dtype=DTYPES, seed=st.integers(0, 99))
def test_batch_norm_finalize_sums_adds_the_slabs(slabs, c, dtype, seed):
    rng = np.random.default_rng(seed)
    part_sum, part_dot = (rng.standard_normal((slabs, c)).astype(dtype) for _ in range(2))
    inv_std = channel_values(c, dtype, rng)
    gbias, gweight = nans(c, dtype), nans(c, dtype)
    run("norm.cu", "batch_norm_finalize_sums", dtype, c,
        (cp.asarray(part_sum), cp.asarray(part_dot), cp.asarray(inv_std), gbias, gweight,
         np.int32(c), np.int32(slabs)))
    assert_close(gbias, part_sum.astype(np.float64).sum(axis=0), dtype)
    assert_close(gweight, part_dot.astype(np.float64).sum(axis=0) * inv_std, dtype)


@given(case=matrices(), block=BLOCKS_2D)
def test_batch_norm_backward_is_the_training_gradient(case, block):
    m, c, dtype, offset, seed = case
    rng = np.random.default_rng(seed)
    x, gy = random_matrix(m, c, dtype, offset, rng), random_matrix(m, c, dtype, 0.0, rng)
    mean, inv_std, scale, gbias, gweight = (channel_values(c, dtype, rng) for _ in range(5))
    mean += dtype(offset)
    gx = nans((m, c), dtype)
    arrays = (gy, x, mean, inv_std, scale, gbias, gweight)
    run("norm.cu", "batch_norm_backward", dtype, (c, m),
        (*(cp.asarray(a) for a in arrays), gx, *sizes(c, m)), block)
    x_hat = (x.astype(np.float64) - mean) * inv_std
    assert_close(gx, scale * (gy - gbias / m - x_hat * gweight / m), dtype)


@given(case=matrices(), block=BLOCKS_2D)
def test_batch_norm_backward_eval_scales_gy(case, block):
    m, c, dtype, offset, seed = case
    rng = np.random.default_rng(seed)
    gy, scale = random_matrix(m, c, dtype, offset, rng), channel_values(c, dtype, rng)
    gx = nans((m, c), dtype)
    run("norm.cu", "batch_norm_backward_eval", dtype, (c, m),
        (cp.asarray(gy), cp.asarray(scale), gx, *sizes(c, m)), block)
    assert_close(gx, gy.astype(np.float64) * scale, dtype)


# ---- host contract ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["batch_norm_partial_stats", "batch_norm_partial_sums"])
def test_reductions_declare_their_block_size(name):
    with pytest.raises(ValueError, match=r"declares `// block: 32 8`; launched with "
                                         r"block=\(16, 16\)"):
        launch("norm.cu", name, np.float32, (32, 8), (), block=(16, 16))


@given(m=st.integers(1, 10 ** 7), c=st.integers(1, 4096))
def test_slabs_cover_the_rows_without_empty_slabs(m, c):
    """gpu.ops.norm._slabs: R slabs of `rows` rows cover the m rows, none empty, at most ~1024
    blocks (at least one slab), and about 256 rows per slab while that stays under it."""
    slabs, rows = _slabs(m, c)
    cap = -(-1024 // -(-c // 32))                  # ceil(1024 / channel groups)
    assert 1 <= slabs <= cap and slabs * rows >= m > (slabs - 1) * rows
    assert rows <= 256 or -(-m // 256) > cap
