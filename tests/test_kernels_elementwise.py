"""The kernels of gpu/kernels/elementwise.cu under the emulator's re-run checks, against numpy;
and the gpu relu's backward on gy and y in one memory order (the kernel) or in two (operators)."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import gpu
from kernel_checks import DTYPES, run

cp = gpu.cupy


@given(size=st.integers(1, 700), dtype=DTYPES, seed=st.integers(0, 2 ** 32 - 1))
def test_relu_backward_passes_gy_where_y_is_positive(size, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(size).astype(dtype)
    x[rng.random(size) < 0.2] = 0
    x[rng.random(size) < 0.05] = np.nan
    y, gy = np.maximum(x, 0), rng.standard_normal(size).astype(dtype)
    gx = cp.full(size, np.nan, dtype=dtype)
    run("elementwise.cu", "relu_backward", dtype, size,
        (cp.asarray(gy), cp.asarray(y), gx, np.int64(size)))
    np.testing.assert_array_equal(cp.asnumpy(gx), np.where(x > 0, gy, 0))


@given(y_last=st.booleans(), gy_last=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_relu_gradient_in_any_memory_orders(y_last, gy_last, seed):
    """x and gy stored NCHW or NHWC: gx = gy [x > 0], in x's order when both orders agree."""
    rng = np.random.default_rng(seed)
    x, gy = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))

    def stored(a, last):
        a = cp.asarray(a)
        return cp.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if last else a
    t = gpu.Tensor(stored(x, y_last), requires_grad=True)
    gpu.ops.relu(t).backward(stored(gy, gy_last))
    np.testing.assert_array_equal(cp.asnumpy(t.grad), np.where(x > 0, gy, 0))
    if y_last == gy_last:
        assert t.grad.strides == t.data.strides
