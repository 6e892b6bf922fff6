"""Reductions over axes: sum, mean, max.

Notation: x input, y output (x.shape with the reduced axes removed, or kept as 1 with keepdims).
Tie rule for max: the gradient goes to the first maximal element in C order along the reduced
axes (like numpy.argmax), so it is a valid subgradient and sums to gy.
"""
import math

import numpy as np

from ref.ops.shape import _inverse_permutation
from ref.tensor import Op


def _axes(axis, ndim):
    """Normalised tuple of non-negative axes; None means all."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} out of range for an array of {ndim} dimensions")
    return tuple(sorted(a % ndim for a in axes))


def _keep_shape(shape, axes):
    """shape with the reduced axes set to 1 (the keepdims shape)."""
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


class Sum(Op):
    """y = sum_{axes} x;  gx = gy broadcast back over the reduced axes"""

    def forward(self, x, axis=None, keepdims=False):
        self.x_shape, self.axes = x.shape, _axes(axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, gy):
        gy = gy.reshape(_keep_shape(self.x_shape, self.axes))     # (x.shape with 1s)
        return (np.broadcast_to(gy, self.x_shape).copy(),)          # (x.shape)


class Mean(Op):
    """y = sum_{axes} x / m, m = number of reduced elements;  gx = gy / m broadcast"""

    def forward(self, x, axis=None, keepdims=False):
        self.x_shape, self.axes = x.shape, _axes(axis, x.ndim)
        self.count = math.prod(x.shape[a] for a in self.axes)
        return x.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, gy):
        gy = gy.reshape(_keep_shape(self.x_shape, self.axes)) / self.count
        return (np.broadcast_to(gy, self.x_shape).copy(),)          # (x.shape)


class Max(Op):
    """y = max_{axes} x;  gx = gy at the first argmax, 0 elsewhere"""

    def forward(self, x, axis=None, keepdims=False):
        axes = _axes(axis, x.ndim)
        kept = [a for a in range(x.ndim) if a not in axes]
        moved = x.transpose(kept + list(axes))                       # (kept..., reduced...)
        flat = moved.reshape(moved.shape[:len(kept)] + (-1,))        # (kept..., m)
        self.first = flat.argmax(axis=-1)                            # (kept...)
        self.x_shape, self.axes, self.kept, self.moved_shape = x.shape, axes, kept, moved.shape
        y = np.take_along_axis(flat, self.first[..., None], axis=-1)[..., 0]   # (kept...)
        return y.reshape(_keep_shape(x.shape, axes)) if keepdims else y

    def backward(self, gy):
        gy = gy.reshape(self.first.shape)                            # (kept...)
        gflat = np.zeros(self.first.shape + (math.prod(self.moved_shape[len(self.kept):]),),
                         dtype=gy.dtype)                             # (kept..., m)
        np.put_along_axis(gflat, self.first[..., None], gy[..., None], axis=-1)
        gmoved = gflat.reshape(self.moved_shape)                     # (kept..., reduced...)
        inverse = _inverse_permutation(self.kept + list(self.axes))
        return (gmoved.transpose(inverse),)                          # (x.shape)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return Max.apply(x, axis=axis, keepdims=keepdims)
