"""Memory order on the gpu backend: conv2d hands on channels-last memory, and batch norm and
pooling read and write it as it comes (no transposing copy), like ref (tests/test_layout.py).

Each op runs on x stored NCHW and NHWC on the device, with gy in either order, against ref on
the same values: outputs and gradients equal, and a channels-last x gives a channels-last y and
gx.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gpu
import ref

cp = gpu.cupy

OPS = {
    "batch_norm_train": lambda ops, x, p: ops.batch_norm(x, None, None, p["w"], p["b"],
                                                         training=True),
    "batch_norm_eval": lambda ops, x, p: ops.batch_norm(x, p["mean"], p["var"], p["w"], p["b"]),
    "max_pool2d": lambda ops, x, p: ops.max_pool2d(x, 2, 1, 1),
    "avg_pool2d": lambda ops, x, p: ops.avg_pool2d(x, 3, 2, 1),
    "adaptive_avg_pool2d": lambda ops, x, p: ops.adaptive_avg_pool2d(x, (2, 3)),
    "global_avg_pool2d": lambda ops, x, p: ops.adaptive_avg_pool2d(x, 1),
    "conv2d": lambda ops, x, p: ops.conv2d(x, p["W"], padding=1),
    "conv2d_stride_2": lambda ops, x, p: ops.conv2d(x, p["W"], stride=2, padding=1),
    "conv2d_1x1": lambda ops, x, p: ops.conv2d(x, p["W1"]),
    "relu": lambda ops, x, p: ops.relu(x),
}


def stored(a, channels_last):
    """The device array of a (n, c, h, w) in NCHW or NHWC memory, viewed as (n, c, h, w)."""
    if not channels_last:
        return cp.ascontiguousarray(cp.asarray(a))
    return cp.ascontiguousarray(cp.asarray(a).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def is_channels_last(a):
    return a.transpose(0, 2, 3, 1).flags.c_contiguous


@given(name=st.sampled_from(sorted(OPS)), x_last=st.booleans(), gy_last=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2 ** 32 - 1),
       shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(3, 6),
                       st.integers(3, 6)))
def test_gpu_ops_in_both_memory_orders_match_ref(name, x_last, gy_last, dtype, seed, shape):
    rng = np.random.default_rng(seed)
    c = shape[1]
    host = dict(w=rng.standard_normal(c), b=rng.standard_normal(c), mean=rng.standard_normal(c),
                var=rng.random(c) + 0.5, W=rng.standard_normal((4, c, 3, 3)),
                W1=rng.standard_normal((4, c, 1, 1)))
    host = {k: v.astype(dtype) for k, v in host.items()}
    device = {k: cp.asarray(v) for k, v in host.items()}
    x = rng.standard_normal(shape).astype(dtype) + 2
    x_ref = ref.Tensor(x, requires_grad=True)
    x_gpu = gpu.Tensor(stored(x, x_last), requires_grad=True)
    y_ref, y_gpu = OPS[name](ref.ops, x_ref, host), OPS[name](gpu.ops, x_gpu, device)
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    y_ref.backward(gy)
    y_gpu.backward(stored(gy, gy_last))
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (1e-4, 1e-5)
    np.testing.assert_allclose(cp.asnumpy(y_gpu.data), y_ref.data, rtol=rtol, atol=atol)
    np.testing.assert_allclose(cp.asnumpy(x_gpu.grad), x_ref.grad, rtol=rtol, atol=atol)
    if x_last or name.startswith("conv2d"):
        assert is_channels_last(y_gpu.data), f"{name}: y is not channels-last"
    if x_last:
        assert is_channels_last(x_gpu.grad), f"{name}: gx is not channels-last"


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_after_a_conv_makes_no_copy_of_the_activation(training):
    """conv -> batch norm, forward and backward: the batch norm launches only its own kernels
    (no cupy copy or transpose of the (n, c, h, w) activation or its gradient)."""
    from gpu.tools import counter
    rng = np.random.default_rng(0)
    x = gpu.Tensor(cp.asarray(rng.standard_normal((2, 3, 6, 6))), requires_grad=True)
    W = gpu.Tensor(cp.asarray(rng.standard_normal((8, 3, 3, 3))), requires_grad=True)
    w, b = (gpu.Tensor(cp.asarray(rng.standard_normal(8)), requires_grad=True) for _ in range(2))
    mean, var = cp.zeros(8), cp.ones(8)
    h = gpu.ops.conv2d(x, W, padding=1)
    with counter.counting() as counts:
        y = gpu.ops.batch_norm(h, mean, var, w, b, training=training)
        y.backward(stored(np.ones(y.shape), True))
    rows = {op: row for op, row in counts.rows().items() if op.startswith("gpu.ops.norm")}
    assert rows and all(row["cupy"] == 0 for row in rows.values()), counts.table()
