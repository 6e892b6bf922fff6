"""Softmax family and losses.

Notation: z logits (n, k); y labels (n,) integers in [0, k); p = softmax(z); log_p = log_softmax(z).
    log_softmax(z)[i, j] = z[i, j] - max_j z[i] - log sum_j exp(z[i, j] - max_j z[i])
    cross_entropy(z, y)  = -log_p[i, y_i]          reduced by mean (default), sum or none
    kl_div(log_q, p)     = p * (log p - log_q)     (torch.nn.functional.kl_div: input is log q,
                                                    target is p; 0 log 0 = 0)
Reductions: "mean" divides by the number of elements (kl_div) or samples (cross_entropy),
"batchmean" divides a sum by n, "sum" sums, "none" keeps every term.
Kernels (gpu/kernels/loss.cu): the row statistics m = max_j z, s = log sum_j exp(z - m) of the
softmax family, and cross-entropy forward and backward fused; the rest is cupy code.
"""
from gpu import cupy as cp
from gpu.kernels import launch
from ref.ops.loss import REDUCTIONS, check_labels
from ref.tensor import Op


def _statistics(rows):
    """m, s (r,) of the rows (r, k) of a C-contiguous array, k >= 1."""
    r, k = rows.shape
    m, s = cp.empty(r, dtype=rows.dtype), cp.empty(r, dtype=rows.dtype)   # (r,) (r,)
    launch("loss.cu", "softmax_statistics", rows.dtype, r, (rows, m, s, cp.int64(r), cp.int32(k)))
    return m, s


def _log_softmax(z, axis):
    if z.shape[axis] == 0:
        raise ValueError(f"softmax along axis {axis} of length 0 (shape {z.shape})")
    moved = cp.ascontiguousarray(cp.moveaxis(z, axis, -1))              # (..., k)
    m, s = _statistics(moved.reshape(-1, moved.shape[-1]))               # (r,) (r,)
    kept = moved.shape[:-1] + (1,)
    log_p = (moved - m.reshape(kept)) - s.reshape(kept)                 # (..., k)
    return cp.moveaxis(log_p, -1, axis)                                 # (z.shape)


def _reduce(values, reduction, n):
    """Apply reduction to per-term values; `n` is the divisor of "batchmean"/"mean"."""
    if reduction == "none":
        return values
    total = values.sum()
    return total if reduction == "sum" else total / n


class LogSoftmax(Op):
    """y = log_softmax(x) along axis;  gx = gy - softmax(x) * sum_axis gy"""

    def forward(self, x, axis=-1):
        self.axis = axis
        self.y = _log_softmax(x, axis)
        return self.y

    def backward(self, gy):
        return (gy - cp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True),)


class Softmax(Op):
    """y = softmax(x) along axis;  gx = y * (gy - sum_axis gy * y)"""

    def forward(self, x, axis=-1):
        self.axis = axis
        self.y = cp.exp(_log_softmax(x, axis))
        return self.y

    def backward(self, gy):
        return (self.y * (gy - (gy * self.y).sum(axis=self.axis, keepdims=True)),)


class CrossEntropy(Op):
    """loss_i = -log_softmax(z)[i, y_i];  gz[i] = (softmax(z)[i] - onehot(y_i)) * gloss_i"""

    def forward(self, z, labels, reduction="mean", check=True):
        check_labels(z, labels, check)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        n, k = z.shape
        self.z = cp.ascontiguousarray(z)                                      # (n, k)
        self.labels = cp.ascontiguousarray(labels, dtype=cp.int64)            # (n,)
        self.m, self.s = cp.empty(n, dtype=z.dtype), cp.empty(n, dtype=z.dtype)   # (n,) (n,)
        self.reduction = reduction
        losses = cp.empty(n, dtype=z.dtype)                                   # (n,)
        launch("loss.cu", "cross_entropy_forward", z.dtype, n,
               (self.z, self.labels, self.m, self.s, losses, cp.int64(n), cp.int32(k)))
        return _reduce(losses, reduction, n)

    def backward(self, gy):
        n, k = self.z.shape
        scale = gy / n if self.reduction == "mean" else gy                    # () or (n,)
        scale = cp.ascontiguousarray(cp.broadcast_to(scale, (n,)), dtype=self.z.dtype)   # (n,)
        gz = cp.empty_like(self.z)                                            # (n, k)
        launch("loss.cu", "cross_entropy_backward", self.z.dtype, n * k,
               (self.z, self.labels, self.m, self.s, scale, gz, cp.int64(n * k), cp.int32(k)))
        return gz, None


class KLDiv(Op):
    """terms = p * (log p - log_q), 0 where p = 0;
    g_log_q = -p * gy,  g_p = (log p + 1 - log_q) * gy"""

    def forward(self, log_q, p, reduction="mean"):
        if log_q.shape != p.shape:
            raise ValueError(f"kl_div: input {log_q.shape} and target {p.shape} differ in shape")
        if reduction not in REDUCTIONS + ("batchmean",):
            raise ValueError(f"reduction must be one of {REDUCTIONS + ('batchmean',)}, "
                             f"got {reduction!r}")
        positive = p > 0
        self.log_p = cp.log(cp.where(positive, p, 1))               # (shape) 0 where p = 0
        self.log_q, self.p, self.positive, self.reduction = log_q, p, positive, reduction
        terms = cp.where(positive, p * (self.log_p - log_q), 0)     # (shape)
        self.divisor = log_q.shape[0] if reduction == "batchmean" else terms.size
        return _reduce(terms, "mean" if reduction == "batchmean" else reduction, self.divisor)

    def backward(self, gy):
        if self.reduction != "none":
            gy = gy / self.divisor if self.reduction in ("mean", "batchmean") else gy
        g_log_q = -self.p * gy if self.needs_grad[0] else None
        g_p = (cp.where(self.positive, self.log_p + 1 - self.log_q, 0) * gy
               if self.needs_grad[1] else None)
        return g_log_q, g_p


def log_softmax(x, axis=-1):
    return LogSoftmax.apply(x, axis=axis)


def softmax(x, axis=-1):
    return Softmax.apply(x, axis=axis)


def cross_entropy(logits, labels, reduction="mean", check=True):
    """Cross-entropy of logits (n, k) against integer labels (n,) in [0, k). check=False skips
    the label range check, which reads the labels' bounds back from the device (a host
    synchronisation on the gpu backend): for labels already checked, as ref.attacks does once
    per attack."""
    return CrossEntropy.apply(logits, labels, reduction=reduction, check=check)


def kl_div(log_q, p, reduction="mean"):
    return KLDiv.apply(log_q, p, reduction=reduction)
