"""gpu.ops conv2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d and batch_norm against ref.ops:
outputs and every input gradient through backends.compare (float64 to 1e-10, float32 loosely),
the batch chunking of conv2d, max-pool ties, NaN and -inf, batch-norm running statistics in
every mode, the same signatures, and the same errors for bad arguments."""
import inspect
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu
import gpu.ops.conv
import ref
from backends import compare, to_host
from test_conv import conv_cases
from test_pool import pool_cases

DTYPES = st.sampled_from([np.float32, np.float64])
OPS = ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm"]


@pytest.mark.parametrize("name", OPS)
def test_signatures_match_ref(name):
    assert inspect.signature(getattr(gpu.ops, name)) == inspect.signature(getattr(ref.ops, name))


# ---- conv2d -----------------------------------------------------------------------------------
def test_tf32_changes_float32_convolutions_by_its_rounding_only():
    """gpu.set_tf32(True): float32 conv2d within TF32's error of ref (10-bit operands: relative
    error ~1e-3 over a 27-term sum) but not equal to it; float64 unchanged; off again after."""
    rng = np.random.default_rng(0)
    x, W = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    want = ref.ops.conv2d(ref.Tensor(x), ref.Tensor(W), padding=1).data
    try:
        gpu.set_tf32(True)
        tf32, double = (to_host(gpu.ops.conv2d(gpu.Tensor(gpu.asarray(x.astype(d))),
                                               gpu.Tensor(gpu.asarray(W.astype(d))), padding=1))
                        for d in (np.float32, np.float64))
    finally:
        gpu.set_tf32(False)
    error = np.abs(tf32 - want).max() / np.abs(want).max()
    assert 1e-5 < error < 1e-2
    np.testing.assert_allclose(double, want, rtol=1e-10, atol=1e-12)
    compare("conv2d", [x, W], dict(padding=1), np.float32)


@given(case=conv_cases(), bias=st.booleans(), one_image_chunks=st.booleans(), dtype=DTYPES,
       seed=st.integers(0, 99))
def test_conv2d_matches_ref(case, bias, one_image_chunks, dtype, seed):
    x_shape, W_shape, stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    x, W = rng.standard_normal(x_shape), rng.standard_normal(W_shape)
    b = rng.standard_normal(W_shape[0]) if bias else None
    with mock.patch.object(gpu.ops.conv, "CHUNK_BYTES", 1 if one_image_chunks else 2 ** 40):
        compare("conv2d", [x, W, b], dict(stride=stride, padding=padding, dilation=dilation),
                dtype, seed=seed)


@pytest.mark.parametrize("requires_grad", [(True, False, False), (False, True, False),
                                           (False, False, True), (True, True, False)])
def test_conv2d_computes_only_the_requested_gradients(requires_grad, rng):
    x, W, b = rng.standard_normal((3, 2, 6, 5)), rng.standard_normal((4, 2, 3, 2)), rng.random(4)
    with mock.patch.object(gpu.ops.conv, "CHUNK_BYTES", 1):
        compare("conv2d", [x, W, b], dict(stride=(2, 1), padding=1), requires_grad=requires_grad)


def test_conv2d_chunks_of_several_images(rng):
    x, W = rng.standard_normal((5, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3))
    column_bytes = 2 * 3 * 3 * 4 * 4 * 8                       # the columns of one image
    with mock.patch.object(gpu.ops.conv, "CHUNK_BYTES", 2 * column_bytes):   # chunks 2, 2, 1
        compare("conv2d", [x, W, None], dict(padding=1))


# ---- pooling ----------------------------------------------------------------------------------
def pool_input(shape, seed, ties):
    """Random values, or small integers when `ties` (several maxima per window)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-2, 3, shape) if ties else rng.standard_normal(shape)).astype(float)


@given(case=pool_cases(), ties=st.booleans(), dtype=DTYPES, seed=st.integers(0, 99))
def test_max_pool2d_matches_ref(case, ties, dtype, seed):
    x_shape, kernel_size, stride, padding = case
    compare("max_pool2d", [pool_input(x_shape, seed, ties)],
            dict(kernel_size=kernel_size, stride=stride, padding=padding), dtype, seed=seed)


def test_max_pool2d_nan_and_infinities_follow_ref():
    """NaN wins its window (numpy.argmax); a window of -inf inputs gives its gradient to the
    first cell, which may be padding (then it is lost), as in ref."""
    x = np.array([[[[1.0, np.nan, 3.0, -np.inf, -np.inf],
                    [-np.inf, 2.0, 0.0, -np.inf, -np.inf],
                    [np.inf, 0.0, -np.inf, -np.inf, -np.inf]]]])
    for padding in (0, 1):
        result = compare("max_pool2d", [x], dict(kernel_size=2, stride=1, padding=padding))
        assert np.isnan(result.gpu).any() and np.isneginf(result.gpu).any()


@given(case=pool_cases(), dtype=DTYPES, seed=st.integers(0, 99))
def test_avg_pool2d_matches_ref(case, dtype, seed):
    x_shape, kernel_size, stride, padding = case
    compare("avg_pool2d", [pool_input(x_shape, seed, False)],
            dict(kernel_size=kernel_size, stride=stride, padding=padding), dtype, seed=seed)


@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       output_size=st.integers(1, 4) | st.tuples(st.integers(1, 5), st.integers(1, 5)),
       dtype=DTYPES, seed=st.integers(0, 99))
def test_adaptive_avg_pool2d_matches_ref(n, c, h, w, output_size, dtype, seed):
    compare("adaptive_avg_pool2d", [pool_input((n, c, h, w), seed, False)],
            dict(output_size=output_size), dtype, seed=seed)


# ---- batch norm -------------------------------------------------------------------------------
@st.composite
def norm_cases(draw):
    """(x shape, training, affine, biased_running_var, dtype, seed); (n, c) or (n, c, h, w)."""
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    spatial = draw(st.sampled_from([(), (1, 1), (3, 2), (4, 5), (9, 8)]))
    if spatial in ((), (1, 1)):
        n = max(n, 2)
    return ((n, c, *spatial), draw(st.booleans()), draw(st.booleans()), draw(st.booleans()),
            draw(DTYPES), draw(st.integers(0, 99)))


def norm_arrays(shape, seed):
    """x (offset from 0), running_mean, running_var, weight, bias as float64 numpy arrays."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    return (rng.standard_normal(shape) * 2 + 1, rng.standard_normal(c), rng.uniform(0.5, 2, c),
            rng.uniform(0.5, 2, c), rng.standard_normal(c))


@given(case=norm_cases())
def test_batch_norm_matches_ref(case):
    shape, training, affine, biased, dtype, seed = case
    x, running_mean, running_var, weight, bias = norm_arrays(shape, seed)
    arrays = [x, running_mean, running_var, weight if affine else None, bias if affine else None]
    compare("batch_norm", arrays, dict(training=training, momentum=0.3, eps=1e-3,
                                       biased_running_var=biased),
            dtype, requires_grad=[True, False, False, True, True], seed=seed)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("requires_grad", [(True, False, False), (False, True, False),
                                           (False, False, True), (False, True, True)])
def test_batch_norm_computes_only_the_requested_gradients(training, requires_grad):
    x, running_mean, running_var, weight, bias = norm_arrays((3, 2, 2, 3), 0)
    compare("batch_norm", [x, running_mean, running_var, weight, bias], dict(training=training),
            requires_grad=[requires_grad[0], False, False, *requires_grad[1:]])


def test_batch_norm_training_without_running_statistics():
    x, _, _, weight, bias = norm_arrays((4, 3), 1)
    compare("batch_norm", [x, None, None, weight, bias], dict(training=True))


@settings(max_examples=15)
@given(case=norm_cases(), momentum=st.sampled_from([0.0, 0.1, 1.0]))
def test_batch_norm_updates_the_running_statistics_like_ref(case, momentum):
    shape, training, affine, biased, dtype, seed = case
    x, running_mean, running_var, weight, bias = (a.astype(dtype) for a in norm_arrays(shape, seed))
    stats = {}
    for backend in (ref, gpu):
        move = (lambda a: a.copy()) if backend is ref else gpu.asarray
        running = [move(running_mean), move(running_var)]
        backend.ops.batch_norm(backend.Tensor(move(x)), *running, training=training,
                               momentum=momentum, biased_running_var=biased)
        stats[backend] = [to_host(a) for a in running]
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    for got, want in zip(stats[gpu], stats[ref]):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


def test_batch_norm_eval_gradient_ignores_later_running_stat_updates():
    x, running_mean, running_var, weight, bias = norm_arrays((3, 2, 2, 2), 2)
    grads = {}
    for backend in (ref, gpu):
        move = (lambda a: a.copy()) if backend is ref else gpu.asarray
        running = [move(running_mean), move(running_var)]
        leaves = [backend.Tensor(move(a), requires_grad=True) for a in (x, weight, bias)]
        y = backend.ops.batch_norm(leaves[0], *running, *leaves[1:], training=False)
        backend.ops.batch_norm(backend.Tensor(move(x + 5)), *running, training=True, momentum=1)
        y.backward(move(np.cos(x)))
        grads[backend] = [t.grad for t in leaves]
    for got, want in zip(grads[gpu], grads[ref]):
        np.testing.assert_allclose(to_host(got), want, rtol=1e-10)


def test_batch_norm_running_statistics_as_buffer_tensors(rng):
    x = gpu.Tensor(gpu.asarray(rng.standard_normal((5, 2, 3, 3))))
    mean, var = gpu.Tensor(gpu.cupy.zeros(2)), gpu.Tensor(gpu.cupy.ones(2))
    gpu.ops.batch_norm(x, mean, var, training=True, momentum=1.0, biased_running_var=True)
    np.testing.assert_allclose(mean.numpy(), x.numpy().mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(var.numpy(), x.numpy().var(axis=(0, 2, 3)), rtol=1e-12)


# ---- errors -----------------------------------------------------------------------------------
def _x(*shape, dtype=np.float64):
    return np.zeros(shape, dtype=dtype)


BAD_CALLS = [
    ("conv2d", (_x(1, 2, 5, 5, dtype=np.int32), _x(3, 2, 3, 3)), {}),
    ("conv2d", (_x(2, 5, 5), _x(3, 2, 3, 3)), {}),
    ("conv2d", (_x(1, 2, 5, 5), _x(3, 4, 3, 3)), {}),
    ("conv2d", (_x(1, 2, 5, 5), _x(3, 2, 3, 3, dtype=np.float32)), {}),
    ("conv2d", (_x(1, 2, 5, 5), _x(3, 2, 3, 3), _x(2)), {}),
    ("conv2d", (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), dict(stride=0)),
    ("conv2d", (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), dict(stride=1.5)),
    ("conv2d", (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), dict(padding=-1)),
    ("conv2d", (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), dict(dilation=(1, 0))),
    ("conv2d", (_x(1, 2, 2, 5), _x(3, 2, 3, 3)), {}),
    ("max_pool2d", (_x(1, 2, 5, 5),), dict(kernel_size=2, padding=2)),
    ("max_pool2d", (_x(1, 2, 1, 5),), dict(kernel_size=2)),
    ("max_pool2d", (_x(2, 5, 5),), dict(kernel_size=2)),
    ("avg_pool2d", (_x(1, 2, 5, 5, dtype=np.int64),), dict(kernel_size=2)),
    ("avg_pool2d", (_x(1, 2, 5, 5),), dict(kernel_size=(2, 2, 2))),
    ("avg_pool2d", (_x(1, 2, 5, 5),), dict(kernel_size=2, stride=0)),
    ("adaptive_avg_pool2d", (_x(1, 2, 5, 5),), dict(output_size=0)),
    ("adaptive_avg_pool2d", (_x(5, 5),), dict(output_size=1)),
    ("batch_norm", (_x(2, 3, 4), _x(3), _x(3)), {}),
    ("batch_norm", (_x(2, 3, dtype=np.int32), _x(3), _x(3)), {}),
    ("batch_norm", (_x(2, 3), _x(4), _x(3)), {}),
    ("batch_norm", (_x(2, 3), _x(3), _x(3), _x(2)), {}),
    ("batch_norm", (_x(2, 3), _x(3), None), dict(training=True)),
    ("batch_norm", (_x(2, 3), None, None), {}),
    ("batch_norm", (_x(1, 3), None, None), dict(training=True)),
    ("batch_norm", (_x(1, 3, 1, 1), None, None), dict(training=True)),
    ("batch_norm", (_x(2, 3), _x(3), _x(3)), dict(momentum=1.5)),
]


@pytest.mark.parametrize("name, arrays, params", BAD_CALLS,
                         ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(BAD_CALLS)])
def test_bad_arguments_raise_the_errors_of_ref(name, arrays, params):
    errors = {}
    for backend in (ref, gpu):
        args = [backend.Tensor(a if backend is ref else gpu.asarray(a)) if i == 0 else
                (a if a is None or backend is ref else gpu.asarray(a))
                for i, a in enumerate(arrays)]
        with pytest.raises((TypeError, ValueError)) as raised:
            getattr(backend.ops, name)(*args, **params)
        errors[backend] = raised.value
    assert type(errors[gpu]) is type(errors[ref])
    assert str(errors[gpu]) == str(errors[ref])
