"""Ops that move elements without arithmetic: reshape, transpose, flatten, pad, concatenate,
getitem. Each backward moves the gradient back to where the element came from.
"""
import itertools
import math

from gpu import cupy as cp
from ref.ops.shape import _inverse_permutation
from ref.tensor import Op


class Reshape(Op):
    """y = x viewed with another shape of the same size"""

    def forward(self, x, shape):
        self.x_shape = x.shape
        return x.reshape(shape)

    def backward(self, gy):
        return gy.reshape(self.x_shape), None


class Transpose(Op):
    """y = x with permuted axes (reversed when axes is None);  gx = gy permuted back"""

    def forward(self, x, axes=None):
        axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(axes)
        if sorted(a + x.ndim if a < 0 else a for a in axes) != list(range(x.ndim)):
            raise ValueError(f"transpose axes {axes} are not a permutation of {x.ndim} axes")
        self.axes = tuple(a % x.ndim for a in axes)
        return x.transpose(self.axes)

    def backward(self, gy):
        return gy.transpose(_inverse_permutation(self.axes)), None


class Pad(Op):
    """Constant padding. pad_width: ((before, after), ...) per axis, as numpy.pad;
    gx = gy cropped."""

    def forward(self, x, pad_width, value=0.0):
        self.pad_width = tuple((int(a), int(b)) for a, b in pad_width)
        if len(self.pad_width) != x.ndim or min(min(p) for p in self.pad_width) < 0:
            raise ValueError(f"pad_width {pad_width} must give (before, after) >= 0 for each of "
                             f"{x.ndim} axes")
        return cp.pad(x, self.pad_width, constant_values=value)

    def backward(self, gy):
        crop = tuple(slice(a, gy.shape[i] - b) for i, (a, b) in enumerate(self.pad_width))
        return gy[crop], None


class Concatenate(Op):
    """y = the inputs joined along `axis`;  each gx is its slice of gy"""

    def forward(self, *xs, axis=0):
        self.axis = axis % xs[0].ndim
        self.bounds = list(itertools.accumulate([0] + [x.shape[self.axis] for x in xs]))
        return cp.concatenate(xs, axis=self.axis)

    def backward(self, gy):
        index = [slice(None)] * gy.ndim
        grads = []
        for start, stop in zip(self.bounds[:-1], self.bounds[1:]):
            index[self.axis] = slice(start, stop)
            grads.append(gy[tuple(index)])
        return tuple(grads)


class GetItem(Op):
    """y = x[index] (basic or advanced numpy indexing);  gx = zeros with gy added at index,
    repeated indices accumulating (numpy.add.at)."""

    def forward(self, x, index):
        self.x_shape, self.index = x.shape, index
        return x[index]

    def backward(self, gy):
        gx = cp.zeros(self.x_shape, dtype=gy.dtype)   # (x.shape)
        cp.add.at(gx, self.index, gy)
        return gx, None


def reshape(x, shape): return Reshape.apply(x, shape)
def transpose(x, axes=None): return Transpose.apply(x, axes)
def pad(x, pad_width, value=0.0): return Pad.apply(x, pad_width, value)
def concatenate(xs, axis=0): return Concatenate.apply(*xs, axis=axis)
def getitem(x, index): return GetItem.apply(x, index)


def flatten(x, start_dim=0, end_dim=-1):
    """Merge axes start_dim..end_dim into one (torch.flatten)."""
    shape = x.shape
    start, end = start_dim % len(shape), end_dim % len(shape)
    merged = math.prod(shape[start:end + 1])
    return reshape(x, shape[:start] + (merged,) + shape[end + 1:])
