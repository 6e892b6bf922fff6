"""Reductions (sum, mean, max) and shape ops (reshape, transpose, flatten, pad, concatenate,
getitem): forward against NumPy or loops, backward by check_vjp, the max tie rule, bad input."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ref
from ref.gradcheck import check_vjp
from reference import max_grad

shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)
seeds = st.integers(0, 2**32 - 1)


@st.composite
def reduction_cases(draw):
    """(shape, axis, keepdims) with axis None, one int (maybe negative) or a tuple of axes."""
    shape = draw(shapes)
    ndim = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                          st.lists(st.integers(0, ndim - 1), min_size=1, unique=True).map(tuple)))
    return shape, axis, draw(st.booleans())


def normal_axes(axis, ndim):
    return tuple(range(ndim)) if axis is None else tuple(sorted(np.atleast_1d(axis) % ndim))


REDUCTIONS = {"sum": (ref.ops.sum, np.sum), "mean": (ref.ops.mean, np.mean),
              "max": (ref.ops.max, np.max)}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(case=reduction_cases(), seed=seeds)
def test_reduction_forward_and_vjp(name, case, seed):
    op, definition = REDUCTIONS[name]
    shape, axis, keepdims = case
    rng = np.random.default_rng(seed)
    t = ref.Tensor(rng.standard_normal(shape), requires_grad=True)
    y = op(t, axis, keepdims)
    np.testing.assert_allclose(y.data, definition(t.data, axis=axis, keepdims=keepdims),
                               rtol=1e-13, atol=1e-14)
    check_vjp(lambda u: op(u, axis, keepdims), [t], rng)


@given(case=reduction_cases(), seed=seeds)
def test_max_gradient_goes_to_first_maximum(case, seed):
    shape, axis, _ = case
    rng = np.random.default_rng(seed)
    t = ref.Tensor(rng.integers(0, 3, shape).astype(np.float64), requires_grad=True)   # ties
    y = ref.ops.max(t, axis)
    gy = rng.standard_normal(y.shape)                                 # (reduced shape)
    y.backward(gy)
    np.testing.assert_array_equal(t.grad, max_grad(t.data, normal_axes(axis, t.ndim), gy))


def test_tensor_reduction_methods_and_bad_axis(rng):
    t = ref.Tensor(rng.standard_normal((2, 3, 4)))
    np.testing.assert_allclose(t.sum(axis=(0, 2)).data, t.data.sum(axis=(0, 2)), rtol=1e-14)
    np.testing.assert_allclose(t.mean(-1, keepdims=True).data, t.data.mean(-1, keepdims=True))
    np.testing.assert_array_equal(t.max().data, t.data.max())
    for op in (ref.ops.sum, ref.ops.mean, ref.ops.max):
        with pytest.raises(ValueError, match="axis 3 out of range"):
            op(t, axis=3)


@given(shape=shapes, seed=seeds, data=st.data())
def test_reshape_transpose_flatten(shape, seed, data):
    rng = np.random.default_rng(seed)
    t = ref.Tensor(rng.standard_normal(shape), requires_grad=True)
    ndim = len(shape)
    perm = data.draw(st.permutations(range(ndim)))
    negative = tuple(a - ndim for a in perm)                          # same permutation
    start = data.draw(st.integers(-ndim, ndim - 1))
    end = data.draw(st.integers(start % ndim, ndim - 1))
    merged = shape[:start % ndim] + (int(np.prod(shape[start % ndim:end + 1])),) + shape[end + 1:]
    cases = [
        (lambda u: u.reshape(shape[::-1]), t.data.reshape(shape[::-1])),
        (lambda u: u.reshape(-1), t.data.ravel()),
        (lambda u: u.transpose(*perm), np.transpose(t.data, perm)),
        (lambda u: ref.ops.transpose(u, negative), np.transpose(t.data, perm)),
        (lambda u: u.transpose(), t.data.T),
        (lambda u: u.flatten(start, end), t.data.reshape(merged)),
    ]
    for f, expected in cases:
        np.testing.assert_array_equal(f(t).data, expected)
        check_vjp(f, [t], rng)


@given(shape=shapes, seed=seeds, data=st.data())
def test_pad_against_assignment(shape, seed, data):
    rng = np.random.default_rng(seed)
    widths = [tuple(data.draw(st.integers(0, 2)) for _ in range(2)) for _ in shape]
    value = data.draw(st.sampled_from([0.0, -1.5]))
    t = ref.Tensor(rng.standard_normal(shape), requires_grad=True)
    expected = np.full([s + a + b for s, (a, b) in zip(shape, widths)], value)   # (padded)
    expected[tuple(slice(a, a + s) for s, (a, _) in zip(shape, widths))] = t.data
    np.testing.assert_array_equal(ref.ops.pad(t, widths, value).data, expected)
    check_vjp(lambda u: ref.ops.pad(u, widths, value), [t], rng)


@given(shape=shapes, seed=seeds, data=st.data())
def test_concatenate_against_assignment(shape, seed, data):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    parts = []
    for size in sizes:
        part_shape = list(shape)
        part_shape[axis] = size
        parts.append(ref.Tensor(rng.standard_normal(part_shape), requires_grad=True))
    expected_shape = list(shape)
    expected_shape[axis] = sum(sizes)
    expected = np.empty(expected_shape)                               # (joined)
    start = 0
    for part, size in zip(parts, sizes):
        index = [slice(None)] * len(shape)
        index[axis] = slice(start, start + size)
        expected[tuple(index)] = part.data
        start += size
    np.testing.assert_array_equal(ref.ops.concatenate(parts, axis).data, expected)
    check_vjp(lambda *us: ref.ops.concatenate(us, axis), parts, rng)


@pytest.mark.parametrize("index", [
    (slice(1, None, 2), 0), (Ellipsis, slice(None, 2)), (np.array([2, 0, 2, 2]),),
    (np.array([[0, 1], [1, 1]]), slice(1, 3)), (np.array([True, False, True, True]),),
    (1, np.array([3, 3, 0])), 2,
])
def test_getitem_accumulates_repeated_indices(index, rng):
    t = ref.Tensor(rng.standard_normal((4, 5)), requires_grad=True)
    y = t[index]
    np.testing.assert_array_equal(y.data, t.data[index])
    gy = rng.standard_normal(y.shape)                                 # (y.shape)
    y.backward(gy)
    expected = np.zeros((4, 5))                                       # (4, 5)
    positions = np.arange(20).reshape(4, 5)[index]                    # flat position of each y
    for position, g in zip(np.ravel(positions), np.ravel(gy)):
        expected.flat[position] += g
    np.testing.assert_allclose(t.grad, expected, rtol=1e-15)


@pytest.mark.parametrize("call, message", [
    (lambda t: ref.ops.transpose(t, (0, 0, 1)), "not a permutation"),
    (lambda t: ref.ops.transpose(t, (0, 1, 3)), "not a permutation"),
    (lambda t: ref.ops.transpose(t, (0, 1)), "not a permutation"),
    (lambda t: ref.ops.pad(t, ((0, 1), (1, 0))), "pad_width"),
    (lambda t: ref.ops.pad(t, ((0, 1), (1, 0), (-1, 0))), "pad_width"),
])
def test_shape_ops_reject_bad_arguments(call, message, rng):
    with pytest.raises(ValueError, match=message):
        call(ref.Tensor(rng.standard_normal((2, 3, 4))))
