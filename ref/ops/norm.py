"""Batch normalisation over the channel axis, with torch.nn.functional.batch_norm's semantics.

Notation: x (n, c, h, w) or (n, c); every statistic is per channel over the m = n*h*w (or n)
values of that channel. Internally x is viewed channels-last as (n, s, c) with s = h*w (s = 1 for
(n, c)), so per-channel arrays (c,) broadcast along the last axis. The view costs no copy, and the
results keep x's memory order: a conv output (stored channels-last) stays channels-last.
    training: mean = sum x / m,  var = sum (x - mean)^2 / m          (biased, used to normalise)
              running_mean <- (1 - momentum) running_mean + momentum mean
              running_var  <- (1 - momentum) running_var  + momentum var m / (m - 1)
                              (var itself when biased_running_var: the BCS convention)
    eval:     mean, var = running_mean, running_var
    x_hat = (x - mean) / sqrt(var + eps),   y = weight * x_hat + bias   (weight 1, bias 0 if None)
Backward (sums and means over n, h, w):
    gbias = sum gy,   gweight = sum gy x_hat
    training: gx = weight/sqrt(var+eps) * (gy - mean(gy) - x_hat * mean(gy x_hat))
    eval:     gx = weight/sqrt(var+eps) * gy
The running statistics are updated in place (they are buffers) and get no gradient.
"""
import numbers

import numpy as np

from ref.tensor import Op


class BatchNorm(Op):
    """y = weight * (x - mean) / sqrt(var + eps) + bias, batch statistics when training
    (running statistics updated in place), running statistics otherwise; see the module
    docstring for the backward formulas."""

    def forward(self, x, running_mean, running_var, weight, bias, training=False, momentum=0.1,
                eps=1e-5, biased_running_var=False):
        _check(x, running_mean, running_var, weight, bias, training, momentum)
        x3 = _channels_last(x)                                        # (n, s, c)
        self.training, self.x_shape, self.m = training, x.shape, x3.size // x3.shape[2]
        if training:
            mean = _channel_sum(x3) / self.m                          # (c,)
            x_hat = x3 - mean                                         # (n, s, c) centred
            var = _channel_sum(x_hat, x_hat) / self.m                 # (c,) biased
            if running_mean is not None:
                unbiased = 1 if biased_running_var else self.m / (self.m - 1)
                _blend(running_mean, mean, momentum)
                _blend(running_var, var * unbiased, momentum)
        else:
            mean, var = running_mean.copy(), running_var              # (c,) kept for backward
        self.inv_std = 1 / np.sqrt(var + eps)                         # (c,)
        self.scale = self.inv_std if weight is None else weight * self.inv_std   # (c,)
        if training:
            x_hat *= self.inv_std                                     # (n, s, c) normalised
            self.x_hat = x_hat
            y = _affine(x_hat, weight, bias)                          # (n, s, c)
        else:
            self.x3, self.mean = x3, mean
            shift = (0 if bias is None else bias) - mean * self.scale   # (c,)
            y = _affine(x3, self.scale, shift)                        # (n, s, c)
        return _channels_first(y, x.shape)

    def backward(self, gy):
        gy3 = _channels_last(gy)                                      # (n, s, c)
        need_x, need_weight, need_bias = self.needs_grad[0], self.needs_grad[3], self.needs_grad[4]
        if self.training:
            x_hat = self.x_hat                                        # (n, s, c)
        elif need_weight:
            x_hat = (self.x3 - self.mean) * self.inv_std              # (n, s, c)
        gbias = _channel_sum(gy3) if need_bias or self.training else None           # (c,)
        gweight = _channel_sum(gy3, x_hat) if need_weight or self.training else None  # (c,)
        gx = None
        if need_x and self.training:
            gx = x_hat * (-gweight / self.m)                          # (n, s, c)
            gx += gy3
            gx -= gbias / self.m
            gx *= self.scale
        elif need_x:
            gx = gy3 * self.scale                                     # (n, s, c)
        return (None if gx is None else _channels_first(gx, self.x_shape), None, None,
                gweight if need_weight else None, gbias if need_bias else None)


def _channels_last(x):
    """The (n, s, c) view of x (n, c, h, w) or (n, c), s = h*w (or 1): no copy for any x whose
    h, w axes can merge (every contiguous x, NCHW- or NHWC-ordered)."""
    return x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1)   # (n, s, c)


def _channels_first(y3, shape):
    """The inverse of _channels_last: y3 (n, s, c) as an array of shape (n, c, h, w) or (n, c)."""
    return y3.transpose(0, 2, 1).reshape(shape)


def _channel_sum(a, b=None):
    """sum_{n, s} a[n, s, c] (times b[n, s, c] when given) per channel: (c,). Summing over s
    first and then over n keeps float32 sums of 1.3e5 values within ~1e-5 relative error (one
    einsum over both axes: ~1e-4)."""
    if b is None:
        return np.einsum("nsc->nc", a).sum(axis=0)
    return np.einsum("nsc,nsc->nc", a, b).sum(axis=0)


def _affine(x3, scale, shift):
    """scale[c] * x3 + shift[c] with either factor optional; x3 itself when both are None."""
    if scale is None and shift is None:
        return x3   # non-affine training: y is the saved x_hat, which nothing modifies in place
    y = x3 * scale if scale is not None else x3.copy(order="K")     # (n, s, c)
    if shift is not None:
        y += shift
    return y


def _blend(running, batch, momentum):
    """running <- (1 - momentum) running + momentum batch, in place."""
    running *= 1 - momentum
    running += momentum * batch


def _check(x, running_mean, running_var, weight, bias, training, momentum):
    """Raise a clear error for a bad shape, dtype or mode."""
    if x.ndim not in (2, 4):
        raise ValueError(f"batch_norm: x must be (n, c, h, w) or (n, c), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"batch_norm: x must be floating, got {x.dtype}")
    c = x.shape[1]
    named = {"running_mean": running_mean, "running_var": running_var, "weight": weight,
             "bias": bias}
    for name, v in named.items():
        if v is not None and v.shape != (c,):
            raise ValueError(f"batch_norm: {name} has shape {v.shape}, x {x.shape} has {c} "
                             f"channels, so it must be ({c},)")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError("batch_norm: training=False (eval) needs running_mean and running_var")
    if training and x.size <= c:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                         f"got x of shape {x.shape}")
    if not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1:
        raise ValueError(f"batch_norm: momentum must be a number in [0, 1], got {momentum!r}")


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, biased_running_var=False):
    """y = weight * (x - mean) / sqrt(var + eps) + bias per channel (see the module docstring).

    x: Tensor (n, c, h, w) or (n, c); running_mean, running_var: (c,) arrays or buffer Tensors,
    updated in place when training (None allowed when training); weight, bias: (c,) or None.
    """
    return BatchNorm.apply(x, running_mean, running_var, weight, bias, training=training,
                           momentum=momentum, eps=eps, biased_running_var=biased_running_var)
