"""The masked weight of a pruned layer: the differentiable op every pruned forward goes through.

Notation: W a weight (any shape), M a 0/1 mask of W's shape and dtype (a buffer: it receives no
gradient), gy the gradient of the effective weight W_eff.
    masked_weight   W_eff = W * M,   gW = gy * M       (exactly 0 wherever M = 0)
Each way is one cupy elementwise product on the device; no custom kernel is needed.
"""
from ref.tensor import Op


class MaskedWeight(Op):
    """W_eff = W * M;  gW = gy * M"""

    def forward(self, W, M):
        self.M = M
        return W * M                                        # (W.shape)

    def backward(self, gy):
        return gy * self.M, None                            # (W.shape)


def masked_weight(W, M):
    """W * M with the gradient of W masked too (M: a 0/1 array or Tensor of W's shape and dtype,
    not differentiated)."""
    if tuple(M.shape) != tuple(W.shape) or M.dtype != W.dtype:
        raise ValueError(f"masked_weight: the mask is {M.dtype} {tuple(M.shape)}, the weight "
                         f"{W.dtype} {tuple(W.shape)}; they must agree")
    return MaskedWeight.apply(W, M)
