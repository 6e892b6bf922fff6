"""Softmax family and losses.

Notation: z logits (n, k); y labels (n,) integers in [0, k); p = softmax(z); log_p = log_softmax(z).
    log_softmax(z)[i, j] = z[i, j] - max_j z[i] - log sum_j exp(z[i, j] - max_j z[i])
    cross_entropy(z, y)  = -log_p[i, y_i]          reduced by mean (default), sum or none
    kl_div(log_q, p)     = p * (log p - log_q)     (torch.nn.functional.kl_div: input is log q,
                                                    target is p; 0 log 0 = 0)
Reductions: "mean" divides by the number of elements (kl_div) or samples (cross_entropy),
"batchmean" divides a sum by n, "sum" sums, "none" keeps every term.
"""
import numpy as np

from ref.tensor import Op

REDUCTIONS = ("mean", "sum", "none")


def _log_softmax(z, axis):
    shifted = z - z.max(axis=axis, keepdims=True)                     # (z.shape)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


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
        return (gy - np.exp(self.y) * gy.sum(axis=self.axis, keepdims=True),)


class Softmax(Op):
    """y = softmax(x) along axis;  gx = y * (gy - sum_axis gy * y)"""

    def forward(self, x, axis=-1):
        self.axis = axis
        self.y = np.exp(_log_softmax(x, axis))
        return self.y

    def backward(self, gy):
        return (self.y * (gy - (gy * self.y).sum(axis=self.axis, keepdims=True)),)


class CrossEntropy(Op):
    """loss_i = -log_softmax(z)[i, y_i];  gz[i] = (softmax(z)[i] - onehot(y_i)) * gloss_i"""

    def forward(self, z, labels, reduction="mean", check=True):
        check_labels(z, labels, check)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        n = z.shape[0]
        self.log_p, self.labels, self.reduction = _log_softmax(z, 1), labels, reduction   # (n, k)
        losses = -self.log_p[np.arange(n), labels]                                         # (n,)
        return _reduce(losses, reduction, n)

    def backward(self, gy):
        n = self.log_p.shape[0]
        gz = np.exp(self.log_p)                                     # (n, k) softmax
        gz[np.arange(n), self.labels] -= 1
        scale = gy / n if self.reduction == "mean" else gy          # () or (n,)
        return gz * (scale[:, None] if self.reduction == "none" else scale), None


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
        self.log_p = np.log(np.where(positive, p, 1))               # (shape) 0 where p = 0
        self.log_q, self.p, self.positive, self.reduction = log_q, p, positive, reduction
        terms = np.where(positive, p * (self.log_p - log_q), 0)     # (shape)
        self.divisor = log_q.shape[0] if reduction == "batchmean" else terms.size
        return _reduce(terms, "mean" if reduction == "batchmean" else reduction, self.divisor)

    def backward(self, gy):
        if self.reduction != "none":
            gy = gy / self.divisor if self.reduction in ("mean", "batchmean") else gy
        g_log_q = -self.p * gy if self.needs_grad[0] else None
        g_p = (np.where(self.positive, self.log_p + 1 - self.log_q, 0) * gy
               if self.needs_grad[1] else None)
        return g_log_q, g_p


def check_labels(z, labels, check_range=True):
    """Raise a clear error unless z is (n, k) floating and labels (n,) integers in [0, k) (the
    range only when check_range: one read of a flag from the device, the bounds only on error)."""
    if z.ndim != 2:
        raise ValueError(f"logits must be (n, classes), got shape {z.shape}")
    if z.dtype.kind != "f":
        raise TypeError(f"logits must be floating, got {z.dtype}")
    if labels.shape != (z.shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers of shape ({z.shape[0]},), got "
                         f"{labels.dtype} {labels.shape}")
    if check_range and labels.size and ((labels < 0) | (labels >= z.shape[1])).any():
        raise ValueError(f"labels must lie in [0, {z.shape[1]}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")


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
