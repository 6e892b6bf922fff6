"""Inverted dropout (torch.nn.functional.dropout).

Notation: x input, p drop probability, mask M with M = 1 independently with probability 1 - p.
    training, 0 < p < 1:  y = x * M / (1 - p),   gx = gy * M / (1 - p)    (so E[y] = x)
    training, p = 1:      y = 0,                 gx = 0
    eval, or p = 0:       y = x                  (the input Tensor itself, no op recorded)
The mask is drawn on the host from a numpy Generator, so one seed gives the same mask on every
backend.
"""
import numpy as np   # the host Generator that draws the mask

from gpu import cupy as cp
from ref.tensor import Op


class Dropout(Op):
    """y = x * keep, keep = M / (1 - p) (0 when p = 1);  gx = gy * keep"""

    def forward(self, x, p=0.5, rng=None):
        mask = rng.random(x.shape) >= p                    # (x.shape) bool, P(True) = 1 - p
        self.keep = cp.asarray(mask, dtype=x.dtype)        # (x.shape)
        self.keep *= 1 / (1 - p) if p < 1 else 0
        return x * self.keep

    def backward(self, gy):
        return (gy * self.keep,)


def dropout(x, p=0.5, training=True, rng=None):
    """Zero each element with probability p and scale the rest by 1 / (1 - p) when training.

    rng: a numpy Generator for the mask (a fresh default_rng() when None).
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"dropout: rng must be a numpy.random.Generator or None, got "
                        f"{type(rng).__name__}")
    if not training or p == 0:
        return x
    return Dropout.apply(x, p=p, rng=np.random.default_rng() if rng is None else rng)
