"""Memory order: conv2d hands on channels-last memory, and every op takes it.

conv2d returns y and gx as (n, c, h, w) views of channels-last (NHWC-ordered) memory, so the batch
norm, relu, pooling and add that follow get such arrays. Here each op runs on channels-last inputs
against the loops of reference.py (forward) and the dot-product check (backward), and a
conv -> batch norm -> relu -> pool chain gives the same numbers for both memory orders of x.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ref
import reference
from ref.gradcheck import check_vjp


def channels_last(a):
    """The values of a (n, c, h, w) in NHWC-ordered memory, viewed as (n, c, h, w)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def is_channels_last(a):
    return a.transpose(0, 2, 3, 1).flags.c_contiguous


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, 0)])
def test_conv2d_gives_channels_last_y_and_gx_with_the_loop_values(stride, padding):
    rng = np.random.default_rng(0)
    x = ref.Tensor(rng.standard_normal((2, 3, 6, 5)), requires_grad=True)
    W = ref.Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    y = ref.ops.conv2d(x, W, stride=stride, padding=padding)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    assert is_channels_last(y.data) and not y.data.flags.c_contiguous
    assert is_channels_last(x.grad)
    np.testing.assert_allclose(y.data, reference.conv2d(x.data, W.data, None, stride, padding),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        x.grad, reference.conv2d_input_grad(gy, W.data, x.shape, stride, padding),
        rtol=1e-12, atol=1e-12)


OPS = {
    "batch_norm_train": (
        lambda x, p: ref.ops.batch_norm(x, None, None, p["w"], p["b"], training=True),
        lambda x, p: reference.batch_norm(x, None, None, p["w"], p["b"], training=True)[0]),
    "batch_norm_eval": (
        lambda x, p: ref.ops.batch_norm(x, p["mean"], p["var"], p["w"], p["b"]),
        lambda x, p: reference.batch_norm(x, p["mean"], p["var"], p["w"], p["b"])[0]),
    "relu": (lambda x, p: ref.ops.relu(x), lambda x, p: np.maximum(x, 0)),
    "max_pool2d": (lambda x, p: ref.ops.max_pool2d(x, 2, 1, 1),
                   lambda x, p: reference.max_pool2d(x, 2, 1, 1)),
    "avg_pool2d": (lambda x, p: ref.ops.avg_pool2d(x, 3, 2, 1),
                   lambda x, p: reference.avg_pool2d(x, 3, 2, 1)),
    "adaptive_avg_pool2d": (lambda x, p: ref.ops.adaptive_avg_pool2d(x, (2, 3)),
                            lambda x, p: reference.adaptive_avg_pool2d(x, (2, 3))),
}


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(sorted(OPS)), seed=st.integers(0, 2 ** 32 - 1),
       shape=st.tuples(st.integers(2, 3), st.integers(1, 5), st.integers(3, 5),
                       st.integers(3, 5)))
def test_ops_on_channels_last_input_match_the_loops(name, seed, shape):
    rng = np.random.default_rng(seed)
    c = shape[1]
    params = dict(w=rng.standard_normal(c), b=rng.standard_normal(c),
                  mean=rng.standard_normal(c), var=rng.random(c) + 0.5)
    op, loop = OPS[name]
    x = channels_last(rng.standard_normal(shape))
    y = op(ref.Tensor(x), params)
    np.testing.assert_allclose(y.data, loop(x, params), rtol=1e-10, atol=1e-12)
    check_vjp(lambda t: op(t, params), [ref.Tensor(x, requires_grad=True)], rng)


def test_both_memory_orders_give_the_same_chain():
    """conv -> batch norm -> relu -> max pool -> conv, values and every gradient, on x stored
    NCHW and NHWC."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 8, 7))
    W1, W2 = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal((5, 4, 3, 3))
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    results = []
    for stored in (np.ascontiguousarray(x), channels_last(x)):
        leaves = [ref.Tensor(a.copy(), requires_grad=True) for a in (W1, W2, gamma, beta)]
        t = ref.Tensor(stored, requires_grad=True)
        h = ref.ops.conv2d(t, leaves[0], padding=1)
        h = ref.ops.relu(ref.ops.batch_norm(h, None, None, leaves[2], leaves[3], training=True))
        y = ref.ops.conv2d(ref.ops.max_pool2d(h, 2), leaves[1], stride=2, padding=1)
        y.backward(np.cos(np.arange(y.size).reshape(y.shape)))
        results.append([y.data, t.grad] + [leaf.grad for leaf in leaves])
    for nchw, nhwc in zip(*results):
        np.testing.assert_allclose(nhwc, nchw, rtol=1e-12, atol=1e-12)
