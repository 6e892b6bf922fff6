"""Optimizers: SGD, SGDW and Adam over a list of parameter Tensors.

Notation: p a parameter, g its gradient, lr the learning rate, wd the weight decay, m the momentum,
t the number of updates p has received. Optimizers update `p.data` in place (the Tensor and its
array keep their identity), skip parameters whose `.grad` is None (as PyTorch does) and do array
math only through `p.xp`, so they run on every backend; SGD and SGDW update through the fused ops
`p.ops.sgd_update_` / `p.ops.sgdw_update_` (ref/ops/update.py, one kernel each on the GPU).

    SGD   (PyTorch)   g <- g + wd p;  buf <- g (t = 1) | m buf + (1 - dampening) g;
                      g <- g + m buf (nesterov) | buf;  p <- p - lr g
    SGDW  (tfa/Keras) p <- p - wd_t p;  v <- m v - lr g;  p <- p + v       (wd_t = wd lr / lr_0)
    Adam  (PyTorch)   g <- g + wd p;  m1 <- b1 m1 + (1 - b1) g;  m2 <- b2 m2 + (1 - b2) g^2;
                      p <- p - lr / (1 - b1^t) * m1 / (sqrt(m2) / sqrt(1 - b2^t) + eps)

`lr` is a settable attribute: schedules (ref.optim.schedules) set it each epoch or iteration.
"""
import math
import numbers

import ref
from ref.tensor import Tensor


class Optimizer:
    """Shared bookkeeping: the parameter list, `lr`, the step counter and per-parameter state.

    `self.state[i]` holds the state of parameter i ({name: array or int}), created on its first
    update. Subclasses define `_update(p, g, state)` and list their state names in `state_names`.
    """

    state_names = ()

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("params is empty: pass model.parameters()")
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor):
                raise TypeError(f"params[{i}] must be a Tensor, got {type(p).__name__}")
        self.lr = lr
        self.step_count = 0
        self.state = [{} for _ in self.params]
        self.masks = [None] * len(self.params)

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"lr must be a finite number >= 0, got {value!r}")
        self._lr = float(value)

    def step(self):
        """Update every parameter that has a gradient, then re-apply the masks (set_masks)."""
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                self._update(p, p.grad, state)
        self.step_count += 1
        for p, state, mask in zip(self.params, self.state, self.masks):
            if mask is not None:
                p.data *= mask.data
                for value in state.values():
                    if hasattr(value, "shape"):
                        value *= mask.data

    def set_masks(self, masks):
        """Keep pruned weights at exactly zero: masks[i] is None or a 0/1 Tensor of params[i]'s
        shape (a layer's `weight_mask` buffer, read at every step, so a mask replaced in place
        is followed). After every step p *= M and each state array of p (momentum, velocity,
        moments) *= M, so state made before the mask cannot move a pruned weight either."""
        masks = list(masks)
        if len(masks) != len(self.params):
            raise ValueError(f"set_masks: {len(masks)} masks for {len(self.params)} parameters")
        for i, (p, mask) in enumerate(zip(self.params, masks)):
            if mask is not None and tuple(mask.shape) != p.shape:
                raise ValueError(f"set_masks: mask {i} has shape {tuple(mask.shape)}, its "
                                 f"parameter {p.shape}")
        self.masks = masks

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def _update(self, p, g, state):
        raise NotImplementedError

    # ---- state --------------------------------------------------------------------------------
    def _scalars(self):
        return {"lr": self.lr, "step": self.step_count, "num_params": len(self.params)}

    def _set_scalars(self, state):
        self.lr = float(state["lr"])
        self.step_count = int(state["step"])

    def state_dict(self):
        """{"lr", "step", "num_params", and "<name>.<i>" per state entry of parameter i}.

        Arrays are the optimizer's own (not copies), as in Module.state_dict.
        """
        state = self._scalars()
        for i, own in enumerate(self.state):
            state.update((f"{name}.{i}", value) for name, value in own.items())
        return state

    def load_state_dict(self, state):
        """Replace the optimizer state by `state` (from state_dict or a checkpoint; any backend).

        Raises ValueError if the parameter count or an array shape differs and KeyError naming
        missing or unexpected entries; nothing is changed unless the whole state matches.
        """
        n = len(self.params)
        if state.get("num_params") != n:
            raise ValueError(f"state is for num_params={state.get('num_params')!r} parameters, "
                             f"this optimizer has {n}")
        scalars = self._scalars()
        missing = sorted(set(scalars) - set(state))
        per_param = [{} for _ in self.params]
        unexpected, wrong = [], []
        for key, value in state.items():
            if key in scalars:
                continue
            name, _, index = key.rpartition(".")
            if name not in self.state_names or not index.isdigit() or int(index) >= n:
                unexpected.append(key)
            elif hasattr(value, "shape") and tuple(value.shape) != self.params[int(index)].shape:
                wrong.append(f"{key}: saved {tuple(value.shape)} vs parameter "
                             f"{self.params[int(index)].shape}")
            else:
                per_param[int(index)][name] = value
        if missing or unexpected:
            raise KeyError(f"{type(self).__name__} state: missing {missing}, "
                           f"unexpected {sorted(unexpected)}")
        if wrong:
            raise ValueError("optimizer state shape mismatch: " + "; ".join(wrong))
        self._set_scalars(state)
        self.state = [{name: _to_param(p, value) for name, value in own.items()}
                      for p, own in zip(self.params, per_param)]

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.lr}, params={len(self.params)})"


def _to_param(p, value):
    """A saved state entry in p's backend and dtype (a fresh array), or a saved int as int."""
    if hasattr(value, "shape"):
        return p.xp.array(ref.asarray(value), dtype=p.dtype)   # (p.shape)
    return int(value)


def check_range(name, value, low, high):
    """ValueError naming the argument unless low <= value <= high."""
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")


class SGD(Optimizer):
    """torch.optim.SGD, in its update order:

        g = grad + wd p;  buf = g on the first update, else m buf + (1 - dampening) g;
        g = g + m buf if nesterov else buf;  p -= lr g.
    """

    state_names = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        super().__init__(params, lr)
        check_range("momentum", momentum, 0.0, 1.0)
        check_range("dampening", dampening, 0.0, 1.0)
        check_range("weight_decay", weight_decay, 0.0, math.inf)
        if nesterov and (momentum == 0 or dampening != 0):
            raise ValueError(f"nesterov needs momentum > 0 and dampening = 0, got "
                             f"momentum={momentum!r}, dampening={dampening!r}")
        self.momentum, self.dampening = momentum, dampening
        self.nesterov, self.weight_decay = nesterov, weight_decay

    def _update(self, p, g, state):
        buf, first = state.get("momentum_buffer"), False
        if self.momentum and buf is None:   # the first update fills the buffer
            buf, first = p.xp.empty_like(p.data), True                     # (p.shape)
            state["momentum_buffer"] = buf
        p.ops.sgd_update_(p.data, g, buf, self.lr, self.momentum, self.dampening, self.nesterov,
                          self.weight_decay, first)


class SGDW(Optimizer):
    """tfa.optimizers.SGDW (decoupled weight decay on Keras momentum SGD), as BCS trains with it
    (ALGORITHMS.md 4(b) step 3 and 7.4):

        p -= wd_t p                                  (the decay comes first, on p alone)
        v  = m v - lr g;  p += v                     (v starts at 0; nesterov: p += m v - lr g)

    The decay follows the lr: wd_t = weight_decay * lr / initial_lr, where initial_lr is the lr
    given here (saved in state_dict), because BCS schedules lr and wd with the same piecewise
    factors (0.1, 0.01, 0.001 with 5e-4, 5e-5, 5e-6). The velocity v is lr-scaled (v = -lr buf
    while lr is constant), so after an lr change the step differs from SGD's p -= lr buf.
    """

    state_names = ("velocity",)

    def __init__(self, params, lr, momentum=0.9, weight_decay=5e-4, nesterov=False):
        super().__init__(params, lr)
        if self.lr <= 0:
            raise ValueError(f"SGDW scales its decay by lr / initial_lr: lr must be > 0, "
                             f"got {lr!r}")
        check_range("momentum", momentum, 0.0, 1.0)
        check_range("weight_decay", weight_decay, 0.0, 1.0)
        self.initial_lr, self.momentum = self.lr, momentum
        self.weight_decay, self.nesterov = weight_decay, nesterov

    @property
    def decay(self):
        """wd_t, the decoupled decay of the next step."""
        return self.weight_decay * self.lr / self.initial_lr

    def _scalars(self):
        return {**super()._scalars(), "initial_lr": self.initial_lr}

    def _set_scalars(self, state):
        super()._set_scalars(state)
        self.initial_lr = float(state["initial_lr"])

    def _update(self, p, g, state):
        v = state.get("velocity")
        if self.momentum and v is None:
            v = state["velocity"] = p.xp.zeros_like(p.data)               # (p.shape)
        p.ops.sgdw_update_(p.data, g, v, self.lr, self.decay, self.momentum, self.nesterov)


class Adam(Optimizer):
    """torch.optim.Adam (L2 weight decay added to the gradient, per-parameter step t):

        g = grad + wd p;  m1 = b1 m1 + (1 - b1) g;  m2 = b2 m2 + (1 - b2) g^2;
        p -= lr / (1 - b1^t) * m1 / (sqrt(m2) / sqrt(1 - b2^t) + eps).
    """

    state_names = ("exp_avg", "exp_avg_sq", "step")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        for i, beta in enumerate(betas):
            if not 0 <= beta < 1:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {beta!r}")
        check_range("eps", eps, 0.0, math.inf)
        check_range("weight_decay", weight_decay, 0.0, math.inf)
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay

    def _update(self, p, g, state):
        b1, b2 = self.betas
        if self.weight_decay:
            g = g + self.weight_decay * p.data                            # (p.shape)
        if not state:
            state.update(step=0, exp_avg=p.xp.zeros_like(p.data),         # (p.shape)
                         exp_avg_sq=p.xp.zeros_like(p.data))              # (p.shape)
        state["step"] += 1
        t, m1, m2 = state["step"], state["exp_avg"], state["exp_avg_sq"]
        m1 *= b1
        m1 += (1 - b1) * g
        m2 *= b2
        m2 += (1 - b2) * g * g
        denom = p.xp.sqrt(m2) / math.sqrt(1 - b2 ** t) + self.eps        # (p.shape)
        p.data -= self.lr / (1 - b1 ** t) * (m1 / denom)
