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
"""
import numpy as np


def _check_buffer(name, momentum, buf):
    if momentum and buf is None:
        raise ValueError(f"{name}: momentum={momentum!r} needs a buffer array, got None")


def sgd_update_(p, g, buf, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                first=False):
    """One torch.optim.SGD step on p in place. buf: the momentum buffer (None when momentum is
    0), overwritten with the decayed gradient when `first` (its old content is not read)."""
    _check_buffer("sgd_update_", momentum, buf)
    if weight_decay:
        g = g + weight_decay * p                                      # (p.shape)
    if momentum:
        if first:
            buf[...] = g
        else:
            buf *= momentum
            buf += (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf                   # (p.shape)
    p -= lr * g


def sgdw_update_(p, g, v, lr, decay, momentum=0.0, nesterov=False):
    """One SGDW step on p in place (decay: this step's decoupled decay wd_t). v: the velocity
    (zeros before the first step; None when momentum is 0)."""
    _check_buffer("sgdw_update_", momentum, v)
    p -= decay * p
    if not momentum:
        p -= lr * g
        return
    v *= momentum
    v -= lr * g
    p += (momentum * v - lr * g) if nesterov else v


def sgdw_noise_update_(p, g, v, noise, lr, decay, noise_std, momentum=0.0):
    """One SGDW step on p in place (sgdw_update_ without nesterov), then noise_std * noise added
    where p was > 0 before the step: BCS's update of the connection parameters theta, whose
    active connections (theta > 0) get the noise (ALGORITHMS.md 7.4.4)."""
    _check_buffer("sgdw_noise_update_", momentum, v)
    active = p > 0                                                    # (p.shape) bool
    sgdw_update_(p, g, v, lr, decay, momentum)
    p += noise_std * noise * active


def pgd_step(x, g, x0, alpha, eps):
    """The next PGD iterate: the step alpha sign(g) from x, projected onto the eps-ball around
    x0 and the image box [0, 1]. Returns a new array of x's shape."""
    return np.clip(x0 + np.clip(x + alpha * np.sign(g) - x0, -eps, eps), 0, 1)   # (x.shape)
