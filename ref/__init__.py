"""ref: a NumPy autograd for conv nets and the reference implementation of robust pruning.

    import ref
    x = ref.Tensor(array, requires_grad=True)
    y = ref.ops.relu(x).sum(); y.backward(); x.grad
    model = ref.models.resnet18(); ref.prune.topk_mask(scores, keep=0.1)
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


# the subpackages, reachable as attributes after `import ref` (as torch.nn after `import torch`)
from ref import (attacks, certify, checkpoint, evaluate, interop, models, nn,  # noqa: E402
                 objectives, optim, prune, train)

__all__ = ["Op", "Tensor", "asarray", "attacks", "certify", "checkpoint", "evaluate", "interop",
           "is_grad_enabled", "models", "nn", "no_grad", "objectives", "ops", "optim", "prune",
           "train"]
