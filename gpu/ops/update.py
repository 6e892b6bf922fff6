"""Fused updates that are not differentiated: optimizer steps and the PGD step, on plain arrays.

They are ops so that each backend runs them its own way (gpu.ops: one kernel each) while the
optimizers (ref/optim) and attacks (ref/attacks.py) call them through `t.ops` on both backends.

Notation: p parameter, g its gradient, lr learning rate, wd weight decay, m momentum; x the
iterate, g = grad_x loss, x0 the clean images, alpha the step, eps the L-inf radius.
    sgd_update_   (torch.optim.SGD)  g <- g + wd p;  buf <- g (first) | m buf + (1 - dampening) g;
                                     g <- g + m buf (nesterov) | buf;  p <- p - lr g
                                     (m = 0: no buffer, p <- p - lr (g + wd p))
    sgdw_update_  (tfa SGDW)         p <- p - decay p;  v <- m v - lr g;
                                     p <- p + (m v - lr g) (nesterov) | p + v
                                     (m = 0: no velocity, p <- p - lr g)
    sgdw_noise_update_ (BCS)         a <- [p > 0] (before the step);  the sgdw_update_ step
                                     (no nesterov);  p <- p + noise_std * noise * a
                                     (noise: N(0, 1) draws of p's shape, made by the caller)
    pgd_step                         clip(x0 + clip(x + alpha sign(g) - x0, -eps, eps), 0, 1)
                                     (sign(0) = 0; alpha and eps numbers or per-sample arrays
                                     (n, 1, .., 1))
The names ending in "_" update their first array (and the buffer) in place and return None.
Kernels: gpu/kernels/update.cu, one thread per element; p and the buffers must be C-contiguous.
"""
import numbers

from gpu import cupy as cp
from gpu.kernels import launch
from ref.ops.update import _check_buffer


def sgd_update_(p, g, buf, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                first=False):
    """One torch.optim.SGD step on p in place. buf: the momentum buffer (None when momentum is
    0), overwritten with the decayed gradient when `first` (its old content is not read)."""
    _check_buffer("sgd_update_", momentum, buf)
    T = p.dtype.type
    g = cp.ascontiguousarray(g, dtype=p.dtype)                        # (p.shape)
    buf = p if buf is None else buf    # momentum = 0: the kernel never touches buf
    launch("update.cu", "sgd_update", p.dtype, p.size,
           (p, g, buf, T(lr), T(momentum), T(1 - dampening), T(weight_decay), cp.int32(nesterov),
            cp.int32(first), cp.int64(p.size)))


def sgdw_update_(p, g, v, lr, decay, momentum=0.0, nesterov=False):
    """One SGDW step on p in place (decay: this step's decoupled decay wd_t). v: the velocity
    (zeros before the first step; None when momentum is 0)."""
    _check_buffer("sgdw_update_", momentum, v)
    T = p.dtype.type
    g = cp.ascontiguousarray(g, dtype=p.dtype)                        # (p.shape)
    v = p if v is None else v          # momentum = 0: the kernel never touches v
    launch("update.cu", "sgdw_update", p.dtype, p.size,
           (p, g, v, T(lr), T(decay), T(momentum), cp.int32(nesterov), cp.int64(p.size)))


def sgdw_noise_update_(p, g, v, noise, lr, decay, noise_std, momentum=0.0):
    """One SGDW step on p in place (sgdw_update_ without nesterov), then noise_std * noise added
    where p was > 0 before the step: BCS's update of the connection parameters theta, whose
    active connections (theta > 0) get the noise (ALGORITHMS.md 7.4.4)."""
    _check_buffer("sgdw_noise_update_", momentum, v)
    T = p.dtype.type
    g, noise = (cp.ascontiguousarray(a, dtype=p.dtype) for a in (g, noise))   # (p.shape) each
    v = p if v is None else v          # momentum = 0: the kernel never touches v
    launch("update.cu", "sgdw_noise_update", p.dtype, p.size,
           (p, g, v, noise, T(lr), T(decay), T(noise_std), T(momentum), cp.int64(p.size)))


def pgd_step(x, g, x0, alpha, eps):
    """The next PGD iterate: the step alpha sign(g) from x, projected onto the eps-ball around
    x0 and the image box [0, 1]. Returns a new array of x's shape."""
    n = x.shape[0]
    x, g, x0 = (cp.ascontiguousarray(a, dtype=x.dtype) for a in (x, g, x0))   # (x.shape) each
    y = cp.empty_like(x)                                                       # (x.shape)
    launch("update.cu", "pgd_step", x.dtype, x.size,
           (x, g, x0, _per_sample(alpha, x), _per_sample(eps, x), y, cp.int64(x.size),
            cp.int64(x.size // n if n else 1)))
    return y


def _per_sample(value, x):
    """alpha or eps as a device array (n,) of x's dtype: a number repeated, or an array of one
    value per sample, shaped (n, 1, .., 1) (or one element) to broadcast against x (n, ...).
    A number is written by a fill on the device: no upload (a host -> device copy from pageable
    memory waits for the device's queue)."""
    n = x.shape[0]
    if isinstance(value, numbers.Real):
        return cp.full(n, value, dtype=x.dtype)                              # (n,)
    a = cp.asarray(value, dtype=x.dtype)
    if a.size != 1 and a.shape != (n,) + (1,) * (x.ndim - 1):
        raise ValueError(f"pgd_step: alpha and eps must be numbers or per-sample arrays of shape "
                         f"{(n,) + (1,) * (x.ndim - 1)}, got shape {a.shape}")
    return cp.ascontiguousarray(cp.broadcast_to(a.reshape(-1), (n,)))        # (n,)
