"""Batch normalisation over the channel axis, with torch.nn.functional.batch_norm's semantics.

Notation: x (n, c, h, w) or (n, c); every statistic is per channel over the m = n*h*w (or n)
values of that channel. Internally x is viewed as (n, c, s) with s = h*w (s = 1 for (n, c)), and
per-channel arrays (c,) broadcast as (c, 1).
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

Kernels (gpu/kernels/norm.cu): the statistics and the backward sums are reductions with one
block of BLOCK threads per channel; y = (x - mean) scale + shift with scale = weight/sqrt(var+eps)
and gx are elementwise. Forward saves x, mean and 1/sqrt(var + eps); x_hat is recomputed where it
is needed instead of being stored.
"""
from gpu import cupy as cp
from gpu.kernels import launch
from ref.ops.norm import _check
from ref.tensor import Op

BLOCK = 256  # threads per channel in the reductions, as `// block: 256` in norm.cu


class BatchNorm(Op):
    """y = weight * (x - mean) / sqrt(var + eps) + bias, batch statistics when training
    (running statistics updated in place), running statistics otherwise; see the module
    docstring for the backward formulas."""

    def forward(self, x, running_mean, running_var, weight, bias, training=False, momentum=0.1,
                eps=1e-5, biased_running_var=False):
        _check(x, running_mean, running_var, weight, bias, training, momentum)
        n, c = x.shape[:2]
        x3 = cp.ascontiguousarray(x).reshape(n, c, -1)                # (n, c, s)
        self.training, self.x_shape, self.m = training, x.shape, x3.size // c
        if training:
            mean, var = _statistics(x3)                               # (c,) (c,) biased
            if running_mean is not None:
                unbiased = 1 if biased_running_var else self.m / (self.m - 1)
                _blend(running_mean, mean, momentum)
                _blend(running_var, var * unbiased, momentum)
        else:
            mean, var = running_mean.copy(), running_var              # (c,) kept for backward
        self.inv_std = _per_channel(1 / cp.sqrt(var + eps), x)        # (c,)
        self.scale = self.inv_std if weight is None else _per_channel(weight * self.inv_std, x)
        self.x3, self.mean = x3, _per_channel(mean, x)                # (n, c, s), (c,)
        shift = cp.zeros(c, dtype=x.dtype) if bias is None else _per_channel(bias, x)   # (c,)
        y = cp.empty(x3.shape, dtype=x.dtype)                         # (n, c, s)
        _elementwise("batch_norm_apply", (x3, self.mean, self.scale, shift, y))
        return y.reshape(x.shape)

    def backward(self, gy):
        gy3 = cp.ascontiguousarray(gy).reshape(self.x3.shape)         # (n, c, s)
        need_x, need_weight, need_bias = self.needs_grad[0], self.needs_grad[3], self.needs_grad[4]
        gbias = gweight = None
        if need_weight or need_bias or self.training:
            gbias, gweight = _sums(gy3, self.x3, self.mean, self.inv_std)   # (c,) (c,)
        gx = None
        if need_x and self.training:
            gx = cp.empty(gy3.shape, dtype=gy3.dtype)                 # (n, c, s)
            _elementwise("batch_norm_backward", (gy3, self.x3, self.mean, self.inv_std,
                                                 self.scale, gbias, gweight, gx),
                         cp.int64(self.m))
        elif need_x:
            gx = gy3 * self.scale[:, None]                            # (n, c, s)
        return (None if gx is None else gx.reshape(self.x_shape), None, None,
                gweight if need_weight else None, gbias if need_bias else None)


def _per_channel(v, x):
    """A (c,) array in x's dtype, contiguous, as the kernels take it."""
    return cp.ascontiguousarray(v, dtype=x.dtype)


def _statistics(x3):
    """(mean, biased var) per channel of x3 (n, c, s), by the batch_norm_stats kernel."""
    c = x3.shape[1]
    mean, var = cp.empty(c, dtype=x3.dtype), cp.empty(c, dtype=x3.dtype)   # (c,) (c,)
    _reduction("batch_norm_stats", x3, (x3, mean, var))
    return mean, var


def _sums(gy3, x3, mean, inv_std):
    """(sum gy, sum gy x_hat) per channel, x_hat = (x3 - mean) inv_std, by batch_norm_sums."""
    c = x3.shape[1]
    gbias, gweight = cp.empty(c, dtype=x3.dtype), cp.empty(c, dtype=x3.dtype)   # (c,) (c,)
    _reduction("batch_norm_sums", x3, (gy3, x3, mean, inv_std, gbias, gweight))
    return gbias, gweight


def _reduction(name, x3, arrays):
    """Run a one-block-per-channel kernel: arrays, then c s m."""
    n, c, s = x3.shape
    launch("norm.cu", name, x3.dtype, c * BLOCK,
           (*arrays, cp.int32(c), cp.int64(s), cp.int64(n * s)), block=BLOCK)


def _elementwise(name, arrays, *scalars):
    """Run a one-thread-per-element kernel over the first array (n, c, s): arrays, c, s, the
    given scalars, and the element count."""
    x3 = arrays[0]
    launch("norm.cu", name, x3.dtype, x3.size,
           (*arrays, cp.int32(x3.shape[1]), cp.int64(x3.shape[2]), *scalars, cp.int64(x3.size)))


def _blend(running, batch, momentum):
    """running <- (1 - momentum) running + momentum batch, in place."""
    running *= 1 - momentum
    running += momentum * batch


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, biased_running_var=False):
    """y = weight * (x - mean) / sqrt(var + eps) + bias per channel (see the module docstring).

    x: Tensor (n, c, h, w) or (n, c); running_mean, running_var: (c,) arrays or buffer Tensors,
    updated in place when training (None allowed when training); weight, bias: (c,) or None.
    """
    return BatchNorm.apply(x, running_mean, running_var, weight, bias, training=training,
                           momentum=momentum, eps=eps, biased_running_var=biased_running_var)
