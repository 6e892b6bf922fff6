"""ref: a NumPy autograd for conv nets and the reference implementation of robust pruning.

    import ref
    x = ref.Tensor(array, requires_grad=True)
    y = ref.ops.relu(x).sum(); y.backward(); x.grad
"""
import numpy as np

from ref import ops
from ref.tensor import Op, Tensor, is_grad_enabled, no_grad

Tensor.ops = ops


def asarray(a, dtype=None):
    """`a` as a numpy array on the host (a cupy array is copied from the device)."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        a = a.get()
    return np.asarray(a, dtype=dtype)


__all__ = ["Op", "Tensor", "asarray", "is_grad_enabled", "no_grad", "ops"]
