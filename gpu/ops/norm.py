"""Batch normalisation over the channel axis, with torch.nn.functional.batch_norm's semantics.

Notation: x (n, c, h, w) or (n, c); every statistic is per channel over the m = n*h*w (or n)
values of that channel.
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

Layout: the kernels work on the (m, c) matrix of channels-last memory (row k = the c channels of
one pixel). A 4-D x that is a view of NHWC memory (what conv2d returns) is used as it is, with no
copy; an NCHW-stored x is copied once to NHWC (cupy.ascontiguousarray of its (n, h, w, c)
transpose); a 2-D x (n, c) is the matrix itself. y and gx are fresh (m, c) arrays returned as
(n, c, h, w) views of NHWC memory, so a channels-last x gives a channels-last y and gx; gy
follows the same rule as x.

Kernels (gpu/kernels/norm.cu) and launches per call, all our own (no cupy launch inside the op;
per-channel arrays are only allocated with cupy.empty, and absent weight / bias / running
statistics are passed as size-0 placeholders with a flag):
    training forward  3: batch_norm_partial_stats (per (row slab, channel): mean and sum of
                         squared deviations, merged with Chan's formula), batch_norm_finalize_stats
                         (per channel: mean, var, inv_std = 1/sqrt(var + eps), scale =
                         weight inv_std, shift = bias, the running statistics updated in place),
                         batch_norm_apply (y = (x - mean) scale + shift)
    eval forward      2: batch_norm_eval_coefficients (the same per-channel values from the
                         running statistics), batch_norm_apply
    training backward 3: batch_norm_partial_sums (per (row slab, channel): sum gy and
                         sum gy (x - mean)), batch_norm_finalize_sums (gbias, gweight),
                         batch_norm_backward (gx); 2 when x needs no gradient
    eval backward     1: batch_norm_backward_eval (gx = scale gy); plus the 2 sum kernels when
                         weight or bias needs its gradient
The reductions run on (32, 8) blocks over a grid of channel groups of 32 by R row slabs, R chosen
here (_slabs) to give about 1024 blocks for large inputs; partial results are (R, c) arrays.
Forward saves the x matrix and the per-channel mean, inv_std and scale (eval: a copy of the
running mean made at forward time, so later buffer updates do not change the gradient).
"""
import numpy as np

from gpu import cupy as cp
from gpu.kernels import channel_block, launch
from ref.ops.norm import _check
from ref.tensor import Op

BLOCK = (32, 8)           # the reductions' block, as `// block: 32 8` in norm.cu
ROWS_PER_SLAB = 256       # a slab of at least this many rows per block of the reductions...
TARGET_BLOCKS = 1024      # ...unless that gives fewer blocks than this (enough to fill a GPU)
CHANNEL_THREADS = 256     # block of the one-thread-per-channel finalize kernels


class BatchNorm(Op):
    """y = weight * (x - mean) / sqrt(var + eps) + bias, batch statistics when training
    (running statistics updated in place), running statistics otherwise; see the module
    docstring for the backward formulas."""

    def forward(self, x, running_mean, running_var, weight, bias, training=False, momentum=0.1,
                eps=1e-5, biased_running_var=False):
        _check(x, running_mean, running_var, weight, bias, training, momentum)
        x2 = _matrix(x)                                               # (m, c)
        m, c = x2.shape
        dtype = x2.dtype
        self.training, self.x_shape, self.m, self.x2 = training, x.shape, m, x2
        weight, has_weight = _optional(weight, c, dtype)              # (c,) or (0,)
        bias, has_bias = _optional(bias, c, dtype)                    # (c,) or (0,)
        if training:                                                  # updated in place
            running_mean, running_var = _buffer(running_mean, dtype), _buffer(running_var, dtype)
        else:                                                         # only read
            running_mean, running_var = (cp.ascontiguousarray(v, dtype=dtype)
                                         for v in (running_mean, running_var))
        self.mean, self.inv_std, self.scale, shift = (cp.empty(c, dtype=dtype) for _ in range(4))
        per_channel = (weight, bias) if training else (running_mean, running_var, weight, bias)
        outputs = (self.mean, self.inv_std, self.scale, shift)        # (c,) each
        if training:
            part_mean, part_m2, slabs, rows = self._partials(x2)      # (R, c) (R, c)
            launch("norm.cu", "batch_norm_partial_stats", dtype, (c, slabs * BLOCK[1]),
                   (x2, part_mean, part_m2, cp.int32(c), cp.int64(m), cp.int32(slabs),
                    cp.int64(rows)), block=BLOCK)
            has_running = running_mean is not None
            placeholder = cp.empty(0, dtype=dtype)
            running = (running_mean, running_var) if has_running else (placeholder, placeholder)
            launch("norm.cu", "batch_norm_finalize_stats", dtype, c,
                   (part_mean, part_m2, *per_channel, *running, *outputs, cp.int32(c),
                    cp.int64(m), cp.int32(slabs), cp.int64(rows), cp.int32(has_weight),
                    cp.int32(has_bias), cp.int32(has_running), cp.int32(biased_running_var),
                    dtype.type(momentum), dtype.type(eps)), block=CHANNEL_THREADS)
        else:
            launch("norm.cu", "batch_norm_eval_coefficients", dtype, c,
                   (*per_channel, *outputs, cp.int32(c), cp.int32(has_weight),
                    cp.int32(has_bias), dtype.type(eps)), block=CHANNEL_THREADS)
        y = cp.empty((m, c), dtype=dtype)                             # (m, c)
        _elementwise("batch_norm_apply", (x2, self.mean, self.scale, shift, y))
        return _channels_first(y, x.shape)

    def backward(self, gy):
        gy2 = _matrix(gy)                                             # (m, c)
        need_x, need_weight, need_bias = self.needs_grad[0], self.needs_grad[3], self.needs_grad[4]
        gbias = gweight = None
        if need_weight or need_bias or self.training:
            gbias, gweight = self._sums(gy2)                          # (c,) (c,)
        gx = None
        if need_x:
            gx = cp.empty(gy2.shape, dtype=gy2.dtype)                 # (m, c)
            if self.training:
                _elementwise("batch_norm_backward", (gy2, self.x2, self.mean, self.inv_std,
                                                     self.scale, gbias, gweight, gx))
            else:
                _elementwise("batch_norm_backward_eval", (gy2, self.scale, gx))
            gx = _channels_first(gx, self.x_shape)
        return (gx, None, None, gweight if need_weight else None, gbias if need_bias else None)

    def _partials(self, x2):
        """Two (R, c) arrays for the slab results, R and the rows per slab (see _slabs)."""
        m, c = x2.shape
        slabs, rows = _slabs(m, c)
        return (cp.empty((slabs, c), dtype=x2.dtype), cp.empty((slabs, c), dtype=x2.dtype),
                slabs, rows)

    def _sums(self, gy2):
        """(sum gy, inv_std sum gy (x - mean)) per channel by batch_norm_partial_sums and
        batch_norm_finalize_sums."""
        m, c = gy2.shape
        dtype = gy2.dtype
        part_sum, part_dot, slabs, rows = self._partials(gy2)        # (R, c) (R, c)
        launch("norm.cu", "batch_norm_partial_sums", dtype, (c, slabs * BLOCK[1]),
               (gy2, self.x2, self.mean, part_sum, part_dot, cp.int32(c), cp.int64(m),
                cp.int32(slabs), cp.int64(rows)), block=BLOCK)
        gbias, gweight = cp.empty(c, dtype=dtype), cp.empty(c, dtype=dtype)   # (c,) (c,)
        launch("norm.cu", "batch_norm_finalize_sums", dtype, c,
               (part_sum, part_dot, self.inv_std, gbias, gweight, cp.int32(c), cp.int32(slabs)),
               block=CHANNEL_THREADS)
        return gbias, gweight


def _slabs(m, c):
    """(R, rows per slab) for the reductions over m rows of c channels: R = ceil(m / 256) row
    slabs, at most ceil(1024 / channel groups) (then longer slabs), at least 1; rows per slab =
    ceil(m / R), and R recomputed from it so that no slab is empty."""
    groups = -(-c // BLOCK[0])
    slabs = min(max(-(-m // ROWS_PER_SLAB), 1), -(-TARGET_BLOCKS // groups))
    rows = max(-(-m // slabs), 1)
    return max(-(-m // rows), 1), rows


def _matrix(a):
    """The (m, c) channels-last matrix of a (n, c, h, w) or (n, c): a view when a is stored
    channels-last (or is a contiguous (n, c)), else one copy."""
    if a.ndim == 2:
        return cp.ascontiguousarray(a)                                # (n, c)
    last = cp.ascontiguousarray(a.transpose(0, 2, 3, 1))              # (n, h, w, c) no copy if NHWC
    return last.reshape(-1, a.shape[1])                               # (m, c)


def _channels_first(a2, shape):
    """a2 (m, c) as the (n, c, h, w) view of its NHWC memory (or as (n, c))."""
    if len(shape) == 2:
        return a2
    n, c, h, w = shape
    return a2.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def _optional(v, c, dtype):
    """(array, flag) for the kernels: v as a contiguous (c,) array of dtype and 1 (no copy when
    it already is one), or a size-0 placeholder and 0 when v is None."""
    if v is None:
        return cp.empty(0, dtype=dtype), 0
    return cp.ascontiguousarray(v, dtype=dtype), 1


def _buffer(v, dtype):
    """A running statistic that training updates in place in the kernel: it must already be a
    contiguous array of x's dtype (eval converts one that is not, as it only reads it)."""
    if v is not None and (v.dtype != dtype or not v.flags.c_contiguous):
        raise TypeError(f"batch_norm: running statistics must be contiguous {np.dtype(dtype)} "
                        f"arrays like x, got {v.dtype} (contiguous: {v.flags.c_contiguous})")
    return v


def _elementwise(name, arrays):
    """Run a one-thread-per-element kernel over the (m, c) matrices in `arrays` (the first gives
    the shape) on a 2-D grid: x over the channels, y over the rows."""
    m, c = arrays[0].shape
    launch("norm.cu", name, arrays[0].dtype, (c, m), (*arrays, cp.int32(c), cp.int64(m)),
           block=channel_block(c))


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, biased_running_var=False):
    """y = weight * (x - mean) / sqrt(var + eps) + bias per channel (see the module docstring).

    x: Tensor (n, c, h, w) or (n, c); running_mean, running_var: (c,) arrays or buffer Tensors,
    updated in place when training (None allowed when training); weight, bias: (c,) or None.
    """
    return BatchNorm.apply(x, running_mean, running_var, weight, bias, training=training,
                           momentum=momentum, eps=eps, biased_running_var=biased_running_var)
