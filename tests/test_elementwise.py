"""Elementwise ops: forward against NumPy written independently, backward by check_vjp (float64),
broadcasting, operators with Python scalars, tie rules, float32 dtype and stability."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ref
from ref.gradcheck import check_vjp

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4)
seeds = st.integers(0, 2**32 - 1)


def away_from_zero(x):
    """Keep samples at least 0.1 from the kink at 0 so finite differences are smooth."""
    return np.where(x < 0, x - 0.1, x + 0.1)


# name: (op, definition, input domain)
UNARY = {
    "neg": (ref.ops.neg, lambda x: 0 - x, lambda x: x),
    "exp": (ref.ops.exp, np.exp, lambda x: x),
    "log": (ref.ops.log, np.log, lambda x: np.abs(x) + 0.5),
    "sqrt": (ref.ops.sqrt, lambda x: x ** 0.5, lambda x: np.abs(x) + 0.5),
    "abs": (ref.ops.abs, lambda x: np.where(x < 0, -x, x), away_from_zero),
    "sign": (ref.ops.sign, lambda x: (x > 0) * 1.0 - (x < 0), away_from_zero),
    "relu": (ref.ops.relu, lambda x: np.where(x > 0, x, 0.0), away_from_zero),
    "sigmoid": (ref.ops.sigmoid, lambda x: 1 / (1 + np.exp(-x)), lambda x: x),
    "tanh": (ref.ops.tanh, lambda x: np.expm1(2 * x) / (np.expm1(2 * x) + 2), lambda x: x),
    "square": (lambda x: x ** 2, lambda x: x * x, lambda x: x),
    "cube": (lambda x: ref.ops.pow(x, 3), lambda x: x * x * x, lambda x: x),
    "reciprocal": (lambda x: x ** -1, lambda x: 1 / x, away_from_zero),
    "pow_half": (lambda x: x ** 0.5, np.sqrt, lambda x: np.abs(x) + 0.5),
}

BINARY = {
    "add": (ref.ops.add, lambda a, b: a + b),
    "sub": (ref.ops.sub, lambda a, b: a - b),
    "mul": (ref.ops.mul, lambda a, b: a * b),
    "div": (ref.ops.div, lambda a, b: a * (1 / b)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(shape=shapes, seed=seeds)
def test_unary_forward_and_vjp(name, shape, seed):
    op, definition, domain = UNARY[name]
    rng = np.random.default_rng(seed)
    x = domain(rng.standard_normal(shape))                          # (shape)
    t = ref.Tensor(x, requires_grad=True)
    y = op(t)
    assert y.shape == x.shape and y.dtype == np.float64
    np.testing.assert_allclose(y.data, definition(x), rtol=1e-13, atol=1e-15)
    check_vjp(op, [t], rng)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_float32_keeps_dtype(name, rng):
    op, definition, domain = UNARY[name]
    x = domain(rng.standard_normal((4, 5))).astype(np.float32)     # (4, 5)
    y = op(ref.Tensor(x, requires_grad=True))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, definition(x.astype(np.float64)), rtol=2e-6, atol=1e-6)
    y.backward(np.ones((4, 5), dtype=np.float32))


@pytest.mark.parametrize("name", sorted(BINARY))
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
       seed=seeds)
def test_binary_broadcast_forward_and_vjp(name, shapes, seed):
    op, definition = BINARY[name]
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shapes.input_shapes[0])                  # (shape a)
    b = away_from_zero(rng.standard_normal(shapes.input_shapes[1]))  # (shape b)
    ta, tb = ref.Tensor(a, requires_grad=True), ref.Tensor(b, requires_grad=True)
    y = op(ta, tb)
    assert y.shape == shapes.result_shape
    np.testing.assert_allclose(y.data, definition(a, b), rtol=1e-14, atol=1e-15)
    check_vjp(op, [ta, tb], rng)
    ta.requires_grad = False                                         # only b gets a gradient
    check_vjp(op, [ta, tb], rng)


@pytest.mark.parametrize("expression, definition", [
    (lambda t: t + 2.0, lambda x: x + 2), (lambda t: 2.0 + t, lambda x: x + 2),
    (lambda t: t - 2.0, lambda x: x - 2), (lambda t: 2.0 - t, lambda x: 2 - x),
    (lambda t: t * 3.0, lambda x: 3 * x), (lambda t: 3.0 * t, lambda x: 3 * x),
    (lambda t: t / 4.0, lambda x: x * 0.25), (lambda t: 4.0 / t, lambda x: 4 * (1 / x)),
    (lambda t: -t, lambda x: 0 - x), (lambda t: (t * t + 1.0).log().exp(), lambda x: x * x + 1),
])
def test_operators_with_python_scalars(expression, definition, rng):
    x = away_from_zero(rng.standard_normal((3, 4)))                  # (3, 4)
    t = ref.Tensor(x, requires_grad=True)
    np.testing.assert_allclose(expression(t).data, definition(x), rtol=1e-14)
    check_vjp(expression, [t], rng)


def test_binary_float32_keeps_dtype(rng):
    a = ref.Tensor(rng.standard_normal((3, 1)).astype(np.float32), requires_grad=True)
    b = ref.Tensor(rng.standard_normal((4,)).astype(np.float32) + 3, requires_grad=True)
    for op, definition in BINARY.values():
        y = op(a, b) * 2.0 + 1.0
        assert y.dtype == np.float32
        np.testing.assert_allclose(y.data, definition(a.data.astype(np.float64), b.data) * 2 + 1,
                                   rtol=1e-5, atol=1e-6)


def test_tie_rules_at_zero():
    x = ref.Tensor(np.array([-1.0, 0.0, -0.0, 2.0]), requires_grad=True)
    for op, expected in [(ref.ops.relu, [0, 0, 0, 1]), (ref.ops.abs, [-1, 0, 0, 1]),
                         (ref.ops.sign, [0, 0, 0, 0])]:
        x.grad = None
        op(x).backward(np.ones(4))
        np.testing.assert_array_equal(x.grad, expected)
    np.testing.assert_array_equal(ref.ops.relu(x).data, [0, 0, 0, 2])


def test_sigmoid_and_exp_extremes_are_stable():
    x = ref.Tensor(np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0]), requires_grad=True)
    y = ref.ops.sigmoid(x)                    # RuntimeWarnings from ref.* are errors (setup.cfg)
    np.testing.assert_allclose(y.data, [0, np.exp(-40.0), 0.5, 1, 1], rtol=1e-12, atol=1e-16)
    y.backward(np.ones(5))
    assert np.all(np.isfinite(x.grad)) and x.grad[2] == 0.25
