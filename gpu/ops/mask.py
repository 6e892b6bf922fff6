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
Everything runs as cupy operations on the device (partition, comparisons, a cumulative sum);
no custom kernel is needed and nothing is copied to the host.
"""
from gpu import cupy as cp
from ref.ops.mask import _check_like, check_keep, kept_count  # noqa: F401 (shared helpers)
from ref.tensor import Op


def keep_largest(a, kept):
    """0/1 array of a's shape and dtype: 1 at the `kept` largest entries of a (1 <= kept <= a.size;
    see the module docstring for ties)."""
    flat = a.ravel()                                                               # (n,)
    n = flat.size
    if kept == n:
        return cp.ones_like(a)
    t = cp.partition(flat, n - kept)[n - kept]       # the smallest kept value (0-d)
    above = flat > t                                                               # (n,) bool
    ties = flat == t                                                               # (n,) bool
    wanted = kept - above.sum()                      # how many ties stay (>= 1)
    rank_from_end = cp.cumsum(ties[::-1])[::-1]      # 1 at the last tie, 2 at the one before ...
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
        self.M = keep_largest(cp.abs(S), kept)              # (S.shape)
        self.W, self.S = W, S
        return W * self.M                                   # (W.shape)

    def backward(self, gy):
        gW = gy * self.M if self.needs_grad[0] else None                          # (W.shape)
        gS = cp.sign(self.S) * self.W * gy if self.needs_grad[1] else None        # (S.shape)
        return gW, gS, None


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
