"""max_pool2d, avg_pool2d, adaptive_avg_pool2d: forward against the loops in reference.py,
backward by check_vjp (float64) and, for max pooling with ties, against the loop gradient;
float32; errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ref
import reference
from ref.gradcheck import check_vjp


@st.composite
def pool_cases(draw):
    """Small (x shape, kernel_size, stride or None, padding) with padding <= kernel / 2."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    h = draw(st.integers(max(1, kh - 2 * padding[0]), kh + 5))
    w = draw(st.integers(max(1, kw - 2 * padding[1]), kw + 5))
    return (n, c, h, w), (kh, kw), stride, padding


def _x(shape, seed, dtype=np.float64):
    return ref.Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype),
                      requires_grad=True)


@given(case=pool_cases(), seed=st.integers(0, 99))
def test_max_pool_forward_and_backward(case, seed):
    shape, kernel, stride, padding = case
    x = _x(shape, seed)
    y = ref.ops.max_pool2d(x, kernel, stride, padding)
    gy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    y.backward(gy)
    expected_y, expected_gx = reference.max_pool2d(x.data, kernel, stride, padding, gy)
    np.testing.assert_allclose(y.data, expected_y, rtol=1e-12)
    np.testing.assert_allclose(x.grad, expected_gx, rtol=1e-12)


@given(case=pool_cases(), seed=st.integers(0, 99))
def test_max_pool_ties_go_to_the_first_index(case, seed):
    """Inputs in {0, 1, 2} make most windows tie; the loop gradient picks the first maximum."""
    shape, kernel, stride, padding = case
    x = ref.Tensor(np.random.default_rng(seed).integers(0, 3, shape).astype(np.float64),
                   requires_grad=True)
    y = ref.ops.max_pool2d(x, kernel, stride, padding)
    gy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    y.backward(gy)
    np.testing.assert_allclose(x.grad, reference.max_pool2d(x.data, kernel, stride, padding, gy)[1],
                               rtol=1e-12)


def test_max_pool_tie_hand_made():
    """Window [[5, 5], [5, 1]]: the top-left 5 is first in row-major order and takes the gradient;
    overlapping windows (stride 1) each send theirs to their own first maximum."""
    x = ref.Tensor(np.array([[[[5.0, 5.0, 2.0], [5.0, 1.0, 2.0]]]]), requires_grad=True)
    y = ref.ops.max_pool2d(x, 2, stride=1)
    np.testing.assert_array_equal(y.data, [[[[5.0, 5.0]]]])
    y.backward(np.array([[[[10.0, 1.0]]]]))
    np.testing.assert_array_equal(x.grad, [[[[10.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]])


def test_max_pool_padding_never_wins():
    x = ref.Tensor(-np.ones((1, 1, 2, 2)) * 7, requires_grad=True)
    y = ref.ops.max_pool2d(x, 2, stride=1, padding=1)
    np.testing.assert_array_equal(y.data, np.full((1, 1, 3, 3), -7.0))
    y.backward(np.ones(y.shape))
    np.testing.assert_array_equal(x.grad[0, 0], [[4, 2], [2, 1]])   # first index of each window


@given(case=pool_cases(), seed=st.integers(0, 99))
def test_avg_pool_forward_and_gradcheck(case, seed):
    shape, kernel, stride, padding = case
    x = _x(shape, seed)
    y = ref.ops.avg_pool2d(x, kernel, stride, padding)
    np.testing.assert_allclose(y.data, reference.avg_pool2d(x.data, kernel, stride, padding),
                               rtol=1e-10, atol=1e-12)
    check_vjp(lambda x: ref.ops.avg_pool2d(x, kernel, stride, padding), [x],
              np.random.default_rng(seed))


@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       oh=st.integers(1, 10), ow=st.integers(1, 10), seed=st.integers(0, 99))
def test_adaptive_avg_pool_forward_and_gradcheck(n, c, h, w, oh, ow, seed):
    x = _x((n, c, h, w), seed)
    output_size = oh if oh == ow else (oh, ow)
    y = ref.ops.adaptive_avg_pool2d(x, output_size)
    np.testing.assert_allclose(y.data, reference.adaptive_avg_pool2d(x.data, output_size),
                               rtol=1e-10, atol=1e-12)
    check_vjp(lambda x: ref.ops.adaptive_avg_pool2d(x, output_size), [x],
              np.random.default_rng(seed))


def test_adaptive_global_average_pool(rng):
    x = ref.Tensor(rng.standard_normal((3, 4, 7, 5)), requires_grad=True)
    y = ref.ops.adaptive_avg_pool2d(x, 1)
    np.testing.assert_allclose(y.data, x.data.mean(axis=(2, 3), keepdims=True), rtol=1e-14)
    y.backward(np.ones(y.shape))
    np.testing.assert_allclose(x.grad, np.full(x.shape, 1 / 35), rtol=1e-14)


def test_adaptive_bins_hand_made():
    """h = 5 into 3 bins: rows 0-1, 1-3, 3-4 (floor(i 5/3) to ceil((i+1) 5/3)); the bins overlap."""
    x = ref.Tensor(np.arange(5.0).reshape(1, 1, 5, 1))
    y = ref.ops.adaptive_avg_pool2d(x, (3, 1))
    np.testing.assert_allclose(y.data.ravel(), [0.5, 2.0, 3.5], rtol=1e-15)


@pytest.mark.parametrize("pool, args", [(ref.ops.max_pool2d, (3, 2, 1)),
                                        (ref.ops.avg_pool2d, ((2, 3), 1, (1, 0))),
                                        (ref.ops.adaptive_avg_pool2d, ((4, 3),))])
def test_float32(pool, args, rng):
    x64 = rng.standard_normal((2, 3, 9, 8))
    x = ref.Tensor(x64.astype(np.float32), requires_grad=True)
    y = pool(x, *args)
    gy = rng.standard_normal(y.shape)
    y.backward(gy.astype(np.float32))
    x_ref = ref.Tensor(x.data.astype(np.float64), requires_grad=True)
    y_ref = pool(x_ref, *args)
    y_ref.backward(gy)
    assert y.dtype == x.grad.dtype == np.float32
    np.testing.assert_allclose(y.data, y_ref.data, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x64 = rng.standard_normal((2, 3, 11, 9))
    for ours, theirs, args in ((ref.ops.max_pool2d, F.max_pool2d, ((3, 2), (2, 1), (1, 1))),
                               (ref.ops.avg_pool2d, F.avg_pool2d, (3, 2, 1)),
                               (ref.ops.adaptive_avg_pool2d, F.adaptive_avg_pool2d, ((4, 5),))):
        x = ref.Tensor(x64, requires_grad=True)
        y = ours(x, *args)
        gy = rng.standard_normal(y.shape)
        y.backward(gy)
        tx = torch.tensor(x64, requires_grad=True)
        ty = theirs(tx, *args)
        ty.backward(torch.tensor(gy))
        np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-14)


def _zeros(shape, dtype=np.float64):
    return ref.Tensor(np.zeros(shape, dtype=dtype))


@pytest.mark.parametrize("pool, x, args, error, match", [
    (ref.ops.max_pool2d, _zeros((1, 1, 4, 4), np.int64), (2,), TypeError, "floating.*int64"),
    (ref.ops.avg_pool2d, _zeros((1, 4, 4)), (2,), ValueError, r"4 dimensions.*\(1, 4, 4\)"),
    (ref.ops.adaptive_avg_pool2d, _zeros((4, 4)), (2,), ValueError, "4 dimensions"),
    (ref.ops.max_pool2d, _zeros((1, 1, 4, 4)), (0,), ValueError, "kernel_size must be >= 1"),
    (ref.ops.avg_pool2d, _zeros((1, 1, 4, 4)), (2, 0), ValueError, "stride must be >= 1"),
    (ref.ops.max_pool2d, _zeros((1, 1, 4, 4)), (2, 1, 2), ValueError, "padding 2 must be at most"),
    (ref.ops.avg_pool2d, _zeros((1, 1, 4, 4)), (3, 1, -1), ValueError, "padding must be >= 0"),
    (ref.ops.max_pool2d, _zeros((1, 1, 2, 4)), (3,), ValueError, r"output size \(0, 1\) < 1"),
    (ref.ops.avg_pool2d, _zeros((1, 1, 4, 4)), (2.0,), TypeError, "kernel_size must be an int"),
    (ref.ops.adaptive_avg_pool2d, _zeros((1, 1, 4, 4)), ((2, 0),), ValueError, "output_size must"),
    (ref.ops.adaptive_avg_pool2d, _zeros((1, 1, 4, 4)), ("2",), TypeError, "output_size"),
])
def test_bad_arguments_raise(pool, x, args, error, match):
    with pytest.raises(error, match=match):
        pool(x, *args)
