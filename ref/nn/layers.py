"""Layers: Linear, Conv2d, ReLU, pooling, Flatten, Dropout, Identity (torch.nn semantics).

Notation: x input, y output; n batch, c in-channels (or features), o out-channels (or features),
h w input size, kh kw kernel size. Linear: x (n, c), W (o, c), b (o,), y = x W^T + b.
Conv2d: x (n, c, h, w), W (o, c, kh, kw), b (o,), y[n, o] = sum_c W[o, c] * x[n, c] + b[o]
(cross-correlation, see ref.ops.conv2d).

Parameters are float32 Tensors (Module.astype converts them) initialised as PyTorch's layers:
W ~ kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), b ~ U(-1/sqrt(fan_in),
1/sqrt(fan_in)), fan_in = c kh kw. `rng` (numpy Generator or seed; None = fresh) drives the init.
Every forward calls the op through its input's backend (`x.ops`), so layers run on any backend.
"""
import math

import numpy as np

from ref.nn import init
from ref.nn.module import Module
from ref.ops.conv import pair
from ref.tensor import Tensor


def parameter(shape):
    """A float32 Tensor of zeros that requires grad."""
    return Tensor(np.zeros(shape, dtype=np.float32), requires_grad=True)   # (shape)


def check_positive_int(value, name):
    """value as an int >= 1, else a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class _WeightLayer(Module):
    """A layer with weight W (o, c, ...) and optional bias b (o,). The forward reads the weight
    through `effective_weight()`, the single hook that pruning uses (W * mask)."""

    def _create_parameters(self, shape, bias, rng):
        self.weight = parameter(shape)                              # (o, c, ...)
        self.bias = parameter(shape[:1]) if bias else None          # (o,)
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None):
        """PyTorch's default: W ~ kaiming_uniform_(a=sqrt(5)), b ~ U(-1/sqrt(fan_in), ...)."""
        rng = np.random.default_rng(rng)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), rng=rng)
        if self.bias is not None:
            fan_in, _ = init.fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound, rng=rng)

    def effective_weight(self):
        """The weight the forward uses: W, or W * M once ref.prune attached a mask M (the buffer
        `weight_mask`), through ref.ops.masked_weight so that pruned weights get no gradient."""
        mask = self._buffers.get("weight_mask")
        if mask is None:
            return self.weight
        return self.weight.ops.masked_weight(self.weight, mask)


class Linear(_WeightLayer):
    """y = x W^T + b with x (n, in_features), W (out_features, in_features), b (out_features,)"""

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self._create_parameters((self.out_features, self.in_features), bias, rng)

    def forward(self, x):
        return x.ops.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Conv2d(_WeightLayer):
    """y = conv2d(x, W, b, stride, padding, dilation) with W (out_channels, in_channels, kh, kw)"""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, rng=None):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.dilation = pair(dilation, "dilation", 1)
        shape = (self.out_channels, self.in_channels) + self.kernel_size
        self._create_parameters(shape, bias, rng)

    def forward(self, x):
        return x.ops.conv2d(x, self.effective_weight(), self.bias, stride=self.stride,
                            padding=self.padding, dilation=self.dilation)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self.bias is not None}")


class ReLU(Module):
    """y = max(x, 0)"""

    def forward(self, x):
        return x.ops.relu(x)


class Identity(Module):
    """y = x"""

    def forward(self, x):
        return x


class Flatten(Module):
    """y = x with axes start_dim..end_dim merged (torch.nn.Flatten: start_dim=1)"""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.ops.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class _Pool2d(Module):
    """Shared constructor of MaxPool2d and AvgPool2d; stride defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """y[n, c, i, j] = max of x over the window at (i sy - ph, j sx - pw)"""

    def forward(self, x):
        return x.ops.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """y[n, c, i, j] = mean of x over the window at (i sy - ph, j sx - pw)"""

    def forward(self, x):
        return x.ops.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """y (n, c, oh, ow): the mean of x over PyTorch's adaptive windows"""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return x.ops.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Dropout(Module):
    """Training: y = x * M / (1 - p) with M ~ Bernoulli(1 - p); eval: y = x.

    rng: numpy Generator or seed for the masks (None = fresh), kept by the layer so that a seeded
    model draws the same masks on every run.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability p must be in [0, 1], got {p!r}")
        self.p = p
        self.rng = np.random.default_rng(rng)

    def forward(self, x):
        return x.ops.dropout(x, p=self.p, training=self.training, rng=self.rng)

    def extra_repr(self):
        return f"p={self.p}"
