"""Batch normalisation layers (torch.nn.BatchNorm1d / BatchNorm2d).

Notation: x (n, c) for BatchNorm1d, (n, c, h, w) for BatchNorm2d; statistics per channel c.
    y = weight * (x - mean) / sqrt(var + eps) + bias
with batch statistics in training mode (the running statistics are updated in place by the op:
running <- (1 - momentum) running + momentum batch) and the running statistics in eval mode.
Parameters: weight = 1, bias = 0 (c,), only when affine (affine=False registers neither, the
"non-affine BN" of edge-popup and RBSN). Buffers: running_mean = 0, running_var = 1 (c,).
biased_running_var=True stores the biased batch variance in running_var (BCS); PyTorch stores
the unbiased one. There is no num_batches_tracked buffer.
"""
import numpy as np

from ref.nn.layers import check_positive_int, parameter
from ref.nn.module import Module
from ref.tensor import Tensor


class _BatchNorm(Module):
    ndim = None   # the number of input dimensions the subclass accepts

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 biased_running_var=False):
        super().__init__()
        self.num_features = check_positive_int(num_features, "num_features")
        self.eps, self.momentum = eps, momentum
        self.affine, self.biased_running_var = affine, biased_running_var
        c = self.num_features
        if affine:
            self.weight = parameter(c)                                    # (c,)
            self.bias = parameter(c)                                      # (c,)
            self.weight.data[...] = 1
        self.register_buffer("running_mean", Tensor(np.zeros(c, dtype=np.float32)))   # (c,)
        self.register_buffer("running_var", Tensor(np.ones(c, dtype=np.float32)))     # (c,)

    def forward(self, x):
        if x.ndim != self.ndim:
            raise ValueError(f"{type(self).__name__} expects a {self.ndim}-d input, got shape "
                             f"{x.shape}")
        return x.ops.batch_norm(x, self.running_mean, self.running_var,
                                self.weight if self.affine else None,
                                self.bias if self.affine else None,
                                training=self.training, momentum=self.momentum, eps=self.eps,
                                biased_running_var=self.biased_running_var)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of x (n, c)."""
    ndim = 2


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of x (n, c, h, w), statistics over n, h, w."""
    ndim = 4
