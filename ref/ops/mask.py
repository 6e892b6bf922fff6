"""Pruned weights: the differentiable ops every pruned forward goes through, and the top-k rule.

Notation: W a weight (any shape, n entries), M a 0/1 mask of W's shape and dtype, S scores of W's
shape, keep the kept fraction in (0, 1], gy the gradient of the effective weight W_eff.

    masked_weight   W_eff = W * M                   gW = gy * M       (exactly 0 where M = 0)
                    (M is a buffer: no gradient)
    subnet_weight   W_eff = W * M,  M = keep_largest(|S|, kept_count(n, keep)), recomputed at
                    every forward;  gW = gy * M,  gS = sign(S) * W * gy  (straight-through: every
                    score gets a gradient, the masked ones too; sign(0) = 0)
    kept_count(n, keep) = n - int((1 - keep) n)      (the authors' count rule, Python floats)
    keep_largest(a, k)  = 1 at the k largest entries of a, 0 elsewhere; ties at the threshold
                          keep the higher flat indices (the order of a stable ascending sort,
                          dropped from the front). No host synchronisation: the threshold is a
                          partition, the tie count stays an array.
"""
import numbers

import numpy as np

from ref.tensor import Op


def check_keep(keep, name="keep"):
    """keep as a float in (0, 1], else a ValueError naming the value."""
    if (isinstance(keep, bool) or not isinstance(keep, numbers.Real)
            or not 0 < keep <= 1):   # also refuses NaN
        raise ValueError(f"{name} must be a fraction in (0, 1], got {keep!r}")
    return float(keep)


def kept_count(n, keep):
    """n - int((1 - keep) n): how many of n weights a layer keeps; a ValueError when that is 0."""
    keep = check_keep(keep)
    kept = n - int((1 - keep) * n)
    if kept < 1:
        raise ValueError(f"keep={keep!r} keeps no weight of a layer of {n}: that would empty it")
    return kept


def keep_largest(a, kept):
    """0/1 array of a's shape and dtype: 1 at the `kept` largest entries of a (1 <= kept <= a.size;
    see the module docstring for ties)."""
    flat = a.ravel()                                                               # (n,)
    n = flat.size
    if kept == n:
        return np.ones_like(a)
    t = np.partition(flat, n - kept)[n - kept]       # the smallest kept value (0-d)
    above = flat > t                                                               # (n,) bool
    ties = flat == t                                                               # (n,) bool
    wanted = kept - above.sum()                      # how many ties stay (>= 1)
    rank_from_end = np.cumsum(ties[::-1])[::-1]      # 1 at the last tie, 2 at the one before ...
    return (above | (ties & (rank_from_end <= wanted))).astype(a.dtype).reshape(a.shape)


class MaskedWeight(Op):
    """W_eff = W * M;  gW = gy * M"""

    def forward(self, W, M):
        self.M = M
        return W * M                                        # (W.shape)

    def backward(self, gy):
        return gy * self.M, None                            # (W.shape)


class SubnetWeight(Op):
    """W_eff = W * M, M = keep_largest(|S|, kept);  gW = gy * M,  gS = sign(S) * W * gy"""

    def forward(self, W, S, kept):
        self.M = keep_largest(np.abs(S), kept)              # (S.shape)
        self.W, self.S = W, S
        return W * self.M                                   # (W.shape)

    def backward(self, gy):
        gW = gy * self.M if self.needs_grad[0] else None                          # (W.shape)
        gS = np.sign(self.S) * self.W * gy if self.needs_grad[1] else None        # (S.shape)
        return gW, gS, None


def _check_like(op, name, A, W):
    if tuple(A.shape) != tuple(W.shape) or A.dtype != W.dtype:
        raise ValueError(f"{op}: the {name} is {A.dtype} {tuple(A.shape)}, the weight "
                         f"{W.dtype} {tuple(W.shape)}; they must agree")


def masked_weight(W, M):
    """W * M with the gradient of W masked too (M: a 0/1 array or Tensor of W's shape and dtype,
    not differentiated)."""
    _check_like("masked_weight", "mask", M, W)
    return MaskedWeight.apply(W, M)


def subnet_weight(W, S, keep):
    """W * M with M the top kept_count(n, keep) of |S|; the straight-through gradient reaches S
    (frozen scores or weights: a Tensor without requires_grad gets nothing)."""
    _check_like("subnet_weight", "scores", S, W)
    return SubnetWeight.apply(W, S, kept_count(S.size, keep))
