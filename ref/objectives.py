"""Training objectives: natural, Madry AT, TRADES, MART and the DNR hybrid.

Notation: f the model (in train mode for the loss), x clean images (n, c, h, w) in [0, 1],
y labels (n,), x' = the objective's attack on x (parameters frozen, see ref.attacks),
p = softmax f(x), q = softmax f(x'), CE the mean cross-entropy, KL_i = sum_k p_ik log(p_ik / q_ik).

    natural  CE(f(x), y)
    madry    CE(f(x'), y),  x' = PGD-CE from a uniform start
    trades   CE(f(x), y) + beta / n sum_i KL_i,  x' = PGD-KL from x + 0.001 N(0, 1)
    mart     CE(f(x'), y) + mean_i -log(1.0001 - q_{i, t_i} + 1e-12)
             + beta / n sum_i sum_k p_ik (log p_ik - log(q_ik + 1e-12)) (1.0000001 - p_{i, y_i}),
             t_i = the most probable wrong class under q,  x' = PGD-CE from x + 0.001 N(0, 1)
    dnr      beta CE(f(x), y) + (1 - beta) CE(f(x'), y),  x' = PGD-CE from a uniform start

Gradients flow through every forward (both f(x) and f(x') in TRADES and MART), never through the
attack. Calling an objective, `objective(model, x, y, rng)`, returns the scalar loss Tensor and
leaves `objective.logits` (array (n, k)) for the running accuracy: f(x') for madry and mart, f(x)
otherwise. Attack settings (eps, alpha, steps, random_start, model_mode, select, restarts) are
keyword arguments of each objective and default to the papers' CIFAR-10 values.
"""
from ref.attacks import backend_of, pgd


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


class TRADES(Objective):
    name = "trades"
    attack_defaults = dict(eps=0.031, alpha=0.007, steps=10, random_start="normal")
    loss = "kl"

    def __init__(self, beta=6.0, **attack):
        super().__init__(beta, **attack)

    def __call__(self, model, x, y, rng=None):
        logits, logits_adv = self.both_logits(model, x, y, rng)                    # (n, k) (n, k)
        ops = logits.ops
        self.logits = logits.data
        kl = ops.kl_div(ops.log_softmax(logits_adv, axis=1), ops.softmax(logits, axis=1),
                        reduction="batchmean")
        return ops.cross_entropy(logits, y) + self.beta * kl


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


OBJECTIVES = {c.name: c for c in (Natural, MadryAT, TRADES, MART, DNRHybrid)}
OBJECTIVES["at"] = MadryAT


def get(name, **kw):
    """OBJECTIVES[name](**kw); names: natural, madry (= at), trades, mart, dnr."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](**kw)
