"""Matrix products.

matmul: numpy.matmul semantics for operands of 2 or more dimensions (leading axes broadcast).
linear: y = x W^T + b with x (n, i), W (o, i), b (o,), y (n, o), as torch.nn.functional.linear.
"""
from gpu import cupy as cp
from gpu.ops.elementwise import unbroadcast
from ref.tensor import Op


class MatMul(Op):
    """y = a @ b;  ga = gy @ b^T,  gb = a^T @ gy (summed over broadcast leading axes)"""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul needs operands of 2+ dimensions, got {a.shape} and {b.shape}")
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        ga = (unbroadcast(gy @ cp.swapaxes(self.b, -1, -2), self.a.shape)
              if self.needs_grad[0] else None)
        gb = (unbroadcast(cp.swapaxes(self.a, -1, -2) @ gy, self.b.shape)
              if self.needs_grad[1] else None)
        return ga, gb


class Linear(Op):
    """y[n, o] = sum_i x[n, i] W[o, i] + b[o]
    gx = gy W,  gW = gy^T x,  gb = sum_n gy"""

    def forward(self, x, W, b=None):
        if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[1]:
            raise ValueError(f"linear: x {x.shape} and W {W.shape} must be (n, i) and (o, i)")
        if b is not None and b.shape != (W.shape[0],):
            raise ValueError(f"linear: bias shape {b.shape} != ({W.shape[0]},)")
        self.x, self.W = x, W
        y = x @ W.T                                   # (n, o)
        return y if b is None else y + b

    def backward(self, gy):                           # gy (n, o)
        gx = gy @ self.W if self.needs_grad[0] else None          # (n, i)
        gW = gy.T @ self.x if self.needs_grad[1] else None        # (o, i)
        gb = gy.sum(axis=0) if self.needs_grad[2] else None       # (o,)
        return gx, gW, gb


def matmul(a, b): return MatMul.apply(a, b)
def linear(x, W, b=None): return Linear.apply(x, W, b)
