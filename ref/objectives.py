"""Training objectives: natural, Madry AT, mixed-batch AT, TRADES, MART and the DNR hybrid.

Notation: f the model (in train mode for the loss), x clean images (n, c, h, w) in [0, 1],
y labels (n,), x' = the objective's attack on x (parameters frozen, see ref.attacks),
p = softmax f(x), q = softmax f(x'), CE the mean cross-entropy, KL_i = sum_k p_ik log(p_ik / q_ik).

    natural  CE(f(x), y)
    madry    CE(f(x'), y),  x' = PGD-CE from a uniform start
    mat      CE(f([x'_1 .. x'_h, x_{h+1} .. x_n]), y),  h = n // 2: one forward of the batch whose
             first half is adversarial (x' as madry, attacked alone) and second half clean
             (BCS's mixed-batch AT, ALGORITHMS.md 4(b))
    trades   CE(f(x), y) + beta / n sum_i KL_i,  x' = PGD-KL from x + 0.001 N(0, 1)
    mart     CE(f(x'), y) + mean_i -log(1.0001 - q_{i, t_i} + 1e-12)
             + beta / n sum_i sum_k p_ik (log p_ik - log(q_ik + 1e-12)) (1.0000001 - p_{i, y_i}),
             t_i = the most probable wrong class under q,  x' = PGD-CE from x + 0.001 N(0, 1)
    dnr      beta CE(f(x), y) + (1 - beta) CE(f(x'), y),  x' = PGD-CE from a uniform start

Gradients flow through every forward (both f(x) and f(x') in TRADES and MART), never through the
attack. Calling an objective, `objective(model, x, y, rng)`, returns the scalar loss Tensor and
leaves `objective.logits` (array (n, k)) for the running accuracy: f(x') for madry and mart, the
mixed batch's for mat, f(x) otherwise. Attack settings (eps, alpha, steps, random_start,
model_mode, select, restarts) are keyword arguments of each objective and default to the papers'
CIFAR-10 values.
"""
import numpy as np

from ref import asarray as ref_asarray
from ref.attacks import attack_mode, backend_of, pgd


class Objective:
    """An objective; `self.attack` holds its attack's keyword arguments for ref.attacks.pgd."""

    name = "objective"
    attack_defaults = {}
    loss = "ce"   # the attack's loss

    def __init__(self, beta=None, **attack):
        unknown = set(attack) - {"eps", "alpha", "steps", "random_start", "model_mode", "select",
                                 "restarts"}
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown attack settings {sorted(unknown)}")
        self.beta = beta
        self.attack = {**self.attack_defaults, **attack}
        self.logits = None

    def adversarial(self, model, x, y, rng):
        """x' = the attack on (x, y) with this objective's settings."""
        return pgd(model, x, y, loss=self.loss, rng=rng, **self.attack)

    def both_logits(self, model, x, y, rng):
        """(f(x), f(x')): the attack first, then the clean and the adversarial forward."""
        x_adv = self.adversarial(model, x, y, rng)                                 # (n, c, h, w)
        return _forward(model, x), _forward(model, x_adv)                          # (n, k) (n, k)

    def __call__(self, model, x, y, rng=None):
        raise NotImplementedError

    def __repr__(self):
        settings = ", ".join(f"{k}={v!r}" for k, v in self.attack.items())
        beta = "" if self.beta is None else f"beta={self.beta!r}, "
        return f"{type(self).__name__}({beta}{settings})"


def _forward(model, x):
    T, _ = backend_of(model)
    return model(T(x))                                                             # (n, k)


class Natural(Objective):
    name = "natural"

    def __init__(self):
        super().__init__()

    def __call__(self, model, x, y, rng=None):
        logits = _forward(model, x)                                                # (n, k)
        self.logits = logits.data
        return logits.ops.cross_entropy(logits, y)


class MadryAT(Objective):
    name = "madry"
    attack_defaults = dict(eps=8 / 255, alpha=2 / 255, steps=10, random_start="uniform")

    def __call__(self, model, x, y, rng=None):
        logits = _forward(model, self.adversarial(model, x, y, rng))               # (n, k)
        self.logits = logits.data
        return logits.ops.cross_entropy(logits, y)


class MixedAT(Objective):
    """The first n // 2 samples replaced by their PGD-CE points, the rest clean, in one forward
    (so BatchNorm sees the mixed batch); a batch of one sample is all clean."""

    name = "mat"
    attack_defaults = MadryAT.attack_defaults

    def __call__(self, model, x, y, rng=None):
        half = len(y) // 2
        _, xp = backend_of(model)
        x_adv = self.adversarial(model, x[:half], y[:half], rng) if half else x[:0]  # (half, ...)
        logits = _forward(model, xp.concatenate([x_adv, x[half:]]))                # (n, k)
        self.logits = logits.data
        return logits.ops.cross_entropy(logits, y)


def ce_plus_kl(logits, logits_other, y, beta):
    """CE(z, y) + beta KL(softmax z || softmax z'), both batch means, for the logits z (n, k) of
    the clean inputs and z' (n, k) of perturbed ones (TRADES' loss; stability training's)."""
    ops = logits.ops
    kl = ops.kl_div(ops.log_softmax(logits_other, axis=1), ops.softmax(logits, axis=1),
                    reduction="batchmean")
    return ops.cross_entropy(logits, y) + beta * kl


class TRADES(Objective):
    name = "trades"
    attack_defaults = dict(eps=0.031, alpha=0.007, steps=10, random_start="normal")
    loss = "kl"

    def __init__(self, beta=6.0, **attack):
        super().__init__(beta, **attack)

    def __call__(self, model, x, y, rng=None):
        logits, logits_adv = self.both_logits(model, x, y, rng)                    # (n, k) (n, k)
        self.logits = logits.data
        return ce_plus_kl(logits, logits_adv, y, self.beta)


class MART(Objective):
    name = "mart"
    attack_defaults = dict(eps=8 / 255, alpha=2 / 255, steps=10, random_start="normal")

    def __init__(self, beta=6.0, **attack):
        super().__init__(beta, **attack)

    def __call__(self, model, x, y, rng=None):
        logits, logits_adv = self.both_logits(model, x, y, rng)                    # (n, k) (n, k)
        ops, xp = logits.ops, logits.xp
        self.logits = logits_adv.data
        rows = xp.arange(len(y))                                                   # (n,)
        q = ops.softmax(logits_adv, axis=1)                                        # (n, k)
        p = ops.softmax(logits, axis=1)                                            # (n, k)
        wrong = q.data.copy()                                                      # (n, k)
        wrong[rows, y] = -1
        top_wrong = wrong.argmax(axis=1)                                           # (n,)
        margin = -ops.log(1.0001 - q[rows, top_wrong] + 1e-12).mean()
        kl = ops.kl_div(ops.log(q + 1e-12), p, reduction="none").sum(axis=1)       # (n,)
        weighted = (kl * (1.0000001 - p[rows, y])).mean()
        return ops.cross_entropy(logits_adv, y) + margin + self.beta * weighted


class DNRHybrid(Objective):
    """beta CE(f(x), y) + (1 - beta) CE(f(x'), y); DNR's dynamic L2 term belongs to its pruning
    method, not to this loss."""

    name = "dnr"
    attack_defaults = dict(eps=8 / 255, alpha=2 / 255, steps=10, random_start="uniform")

    def __init__(self, beta=0.5, **attack):
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        super().__init__(beta, **attack)

    def __call__(self, model, x, y, rng=None):
        logits, logits_adv = self.both_logits(model, x, y, rng)                    # (n, k) (n, k)
        ops = logits.ops
        self.logits = logits.data
        return (self.beta * ops.cross_entropy(logits, y)
                + (1 - self.beta) * ops.cross_entropy(logits_adv, y))


class FastFGSM(Objective):
    """RBSN's fast trainer (ALGORITHMS.md 2(b), code/util/attack.py FGSM_RS): FGSM from a random
    start that each training sample keeps across epochs, with the augmentation done here so that
    the stored perturbation follows the image's geometry; then CE(f(x_aug + d'), y).

    Memory: delta_i (c, h + 2p, w + 2p) per dataset index i, U(-eps, eps) at the first visit.
    Per sample of a batch (dataset indices idx, from a Loader built with indices=True and without
    augmentation): offsets dy, dx uniform on {0 .. 2p - 1} (the reference's randint(0, 2p)), a
    left-right flip with probability 1/2, and

        x_aug = flip(pad(x, p, value 0.5)[dy:dy + h, dx:dx + w])
        d     = flip(delta_i[dy:dy + h, dx:dx + w])
        d'    = clip(d + alpha sign(grad_d CE(f(x_aug + d), y)), -eps, eps)
        d'    = clip(x_aug + d', 0, 1) - x_aug
        delta_i[dy:dy + h, dx:dx + w] = flip(d')        (the rest of delta_i unchanged)
        loss  = CE(f(x_aug + d'), y)

    Both forwards run in the model's training mode (as the reference's). The reference's EMA soft
    targets are computed but never used there, so they are left out. The memory (and which
    samples have one) is the objective's state_dict, saved in fit's checkpoints.
    """

    name = "fast"

    def __init__(self, num_samples, image_shape, eps=8 / 255, alpha=4 / 255, padding=4,
                 fill=0.5):
        super().__init__(eps=eps, alpha=alpha, steps=1)
        c, h, w = image_shape
        self.padding, self.fill = padding, fill
        self.memory = np.zeros((num_samples, c, h + 2 * padding, w + 2 * padding))
        self.seen = np.zeros(num_samples, dtype=bool)

    def state_dict(self):
        return dict(memory=self.memory, seen=self.seen)

    def load_state_dict(self, state):
        self.memory, self.seen = state["memory"], np.asarray(state["seen"], dtype=bool)

    def _on_backend(self, xp, dtype):
        """The memory on the batch's backend (moved there once)."""
        if not isinstance(self.memory, xp.ndarray) or self.memory.dtype != dtype:
            self.memory = xp.asarray(ref_asarray(self.memory), dtype=dtype)
        return self.memory

    def __call__(self, model, x, y, rng=None, idx=None):
        if idx is None:
            raise ValueError("the fast trainer keeps a perturbation per training sample: it needs "
                             "the sample indices: datasets.Loader(..., indices=True, "
                             "augment=None)")
        T, xp = backend_of(model)
        eps, alpha, p = self.attack["eps"], self.attack["alpha"], self.padding
        n, c, h, w = x.shape
        memory = self._on_backend(xp, x.dtype)
        fresh = idx[~self.seen[idx]]                                               # (m,)
        memory[xp.asarray(fresh)] = xp.asarray(
            rng.uniform(-eps, eps, (len(fresh),) + memory.shape[1:]), dtype=x.dtype)
        self.seen[fresh] = True
        dy, dx = rng.integers(0, 2 * p, n), rng.integers(0, 2 * p, n)              # (n,) (n,)
        flip = xp.asarray(rng.random(n) < 0.5).reshape(n, 1, 1, 1)                 # (n, 1, 1, 1)
        window = _window(xp, dy, dx, c, h, w)
        padded = xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=self.fill)
        x_aug = _flip(xp, padded[window], flip)                                    # (n, c, h, w)
        canvas = memory[xp.asarray(idx)]                                    # (n, c, h+2p, w+2p)
        with attack_mode(model, "train"):
            d = T(_flip(xp, canvas[window], flip), requires_grad=True)              # (n, c, h, w)
            logits = model(T(x_aug) + d)
            d.ops.cross_entropy(logits, y).backward()
        d_new = xp.clip(d.data + alpha * xp.sign(d.grad), -eps, eps)               # (n, c, h, w)
        d_new = xp.clip(x_aug + d_new, 0, 1) - x_aug                               # (n, c, h, w)
        canvas[window] = _flip(xp, d_new, flip)
        memory[xp.asarray(idx)] = canvas
        logits = _forward(model, x_aug + d_new)                                    # (n, k)
        self.logits = logits.data
        return logits.ops.cross_entropy(logits, y)


def _window(xp, dy, dx, c, h, w):
    """The index of the crops (n, c, h, w) at offsets (dy, dx) of an (n, c, h', w') array."""
    n = len(dy)
    rows = xp.asarray(dy[:, None] + np.arange(h))                                  # (n, h)
    cols = xp.asarray(dx[:, None] + np.arange(w))                                  # (n, w)
    return (xp.arange(n)[:, None, None, None], xp.arange(c)[None, :, None, None],
            rows[:, None, :, None], cols[:, None, None, :])


def _flip(xp, a, flip):
    """a (n, c, h, w) mirrored left-right where flip (n, 1, 1, 1) is True."""
    return xp.where(flip, a[..., ::-1], a)                                         # (n, c, h, w)


OBJECTIVES = {c.name: c for c in (Natural, MadryAT, MixedAT, TRADES, MART, DNRHybrid)}
OBJECTIVES["at"] = MadryAT


def get(name, **kw):
    """OBJECTIVES[name](**kw); names: natural, madry (= at), mat, trades, mart, dnr, and the
    certified ones of ref.certify.objectives: crown_ibp, ibp, smooth."""
    from ref.certify.objectives import CERTIFIED_OBJECTIVES   # ref.certify builds on this module
    known = {**OBJECTIVES, **CERTIFIED_OBJECTIVES}
    if name not in known:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(known)}")
    return known[name](**kw)
