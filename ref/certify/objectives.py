"""Certified-training objectives (the Objective interface of ref.objectives: objective(model, x,
y, rng) returns the scalar loss Tensor and leaves `.logits`, the clean logits (n, k)).

Notation: f the model, CE the mean cross-entropy, lb (n, k) lower bounds of the margins
z_y - z_j over the eps-box (ref.certify.margin_lower_bounds; lb_y = 0), so that -lb bounds the
logit differences z_j - z_y from above and CE(-lb, y) = mean log(1 + sum_{j != y} exp(-lb_j)).

    crown_ibp  (1 - kappa) CE(-lb, y) + kappa CE(f(x), y),
               lb = beta lb_CROWN-IBP + (1 - beta) lb_IBP,  beta = 1 - eps_t / eps
               (lb_IBP alone once beta < 1e-5)
    ibp        the same with beta = 0 at every step
    smooth     CE(f(x), y) + beta / n sum_i KL(softmax f(x_i) || softmax f(x_i + d_i)),
               d_i ~ N(0, sigma^2 I), one draw per sample, no clip (stability training)

eps_t follows the reference's per-step linear ramp (EpsRamp); kappa = 0 is the reference's
(its clean CE is only logged). Gradients flow through both forwards of smooth (the clean branch
is not detached, as in the reference).
"""
import contextlib

import numpy as np

from ref.attacks import backend_of
from ref.certify.crown import mixed_margin_lower_bounds
from ref.certify.ibp import CLIPS, check_eps
from ref.certify.smoothing import check_sigma
from ref.objectives import Objective, ce_plus_kl
from ref.tensor import no_grad


class EpsRamp:
    """eps_t at global step t = epoch * steps_per_epoch + i (the reference's linear
    EpsilonScheduler with schedule_start 0): from eps0 at step 0 to eps at step
    t1 = (ramp_epochs - 1) * steps_per_epoch,

        eps_t = clip(eps0 + t / t1 (eps - eps0), eps0, eps),   eps at every step if t1 = 0.

    ramp_epochs = 1 gives eps from the first step (the reference's prune and finetune phases)."""

    def __init__(self, eps, eps0=0.0, ramp_epochs=1, steps_per_epoch=1):
        self.eps, self.eps0 = check_eps(eps), check_eps(eps0, "eps0")
        if self.eps0 > self.eps:
            raise ValueError(f"eps0 ({eps0}) must not exceed eps ({eps})")
        for name, value in (("ramp_epochs", ramp_epochs), ("steps_per_epoch", steps_per_epoch)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.t1 = int((ramp_epochs - 1) * steps_per_epoch)

    def __call__(self, t):
        if self.t1 == 0:
            return self.eps
        return float(np.clip(self.eps0 + t / self.t1 * (self.eps - self.eps0), self.eps0,
                             self.eps))


class CertifiedTraining(Objective):
    """CROWN-IBP training (module docstring). eps: the final l-inf radius (pixels in [0, 1]; the
    reference's 0.007); eps0, ramp_epochs, steps_per_epoch: the ramp (EpsRamp); clip: the input
    box (ref.certify.ibp.input_box). The step counter is the objective's state (saved in fit's
    checkpoints, so a resumed run continues the ramp)."""

    name = "crown_ibp"

    def __init__(self, eps=0.007, eps0=0.0, ramp_epochs=1, steps_per_epoch=1, kappa=0.0,
                 clip=True):
        super().__init__()
        self.ramp = EpsRamp(eps, eps0, ramp_epochs, steps_per_epoch)
        if not 0 <= kappa <= 1:
            raise ValueError(f"kappa must lie in [0, 1], got {kappa!r}")
        if clip not in CLIPS:
            raise ValueError(f"clip must be one of {CLIPS}, got {clip!r}")
        self.kappa, self.clip = kappa, clip
        self.step, self.eps_t = 0, None

    def crown_weight(self, eps_t):
        """beta, the weight of the CROWN-IBP bound: 1 - eps_t / eps."""
        return 1 - eps_t / self.ramp.eps if self.ramp.eps > 0 else 0.0

    def state_dict(self):
        return dict(step=self.step)

    def load_state_dict(self, state):
        self.step = int(state["step"])

    def __call__(self, model, x, y, rng=None):
        T, _ = backend_of(model)
        self.eps_t = self.ramp(self.step)
        self.step += 1
        with no_grad() if self.kappa == 0 else contextlib.nullcontext():
            logits = model(T(x))                                               # (n, k)
        self.logits = logits.data
        lb = mixed_margin_lower_bounds(model, x, y, self.eps_t, self.crown_weight(self.eps_t),
                                       self.clip)                              # (n, k)
        ops = lb.ops
        loss = ops.cross_entropy(-lb, y)
        if self.kappa == 0:
            return loss
        return loss * (1 - self.kappa) + ops.cross_entropy(logits, y) * self.kappa

    def __repr__(self):
        r = self.ramp
        return (f"{type(self).__name__}(eps={r.eps!r}, eps0={r.eps0!r}, ramp_steps={r.t1}, "
                f"kappa={self.kappa!r}, clip={self.clip!r})")


class IBPTraining(CertifiedTraining):
    """CertifiedTraining with IBP bounds only (beta = 0)."""

    name = "ibp"

    def crown_weight(self, eps_t):
        return 0.0


class StabilityTraining(Objective):
    """Stability training for randomized smoothing (module docstring): beta = 6, sigma = 0.25
    as the reference."""

    name = "smooth"

    def __init__(self, beta=6.0, sigma=0.25):
        super().__init__(beta)
        self.sigma = check_sigma(sigma)

    def __call__(self, model, x, y, rng=None):
        T, xp = backend_of(model)
        rng = np.random.default_rng() if rng is None else rng
        noise = xp.asarray(rng.standard_normal(x.shape) * self.sigma, dtype=x.dtype)
        logits, logits_noisy = model(T(x)), model(T(x + noise))               # (n, k) (n, k)
        self.logits = logits.data
        return ce_plus_kl(logits, logits_noisy, y, self.beta)

    def __repr__(self):
        return f"{type(self).__name__}(beta={self.beta!r}, sigma={self.sigma!r})"


CERTIFIED_OBJECTIVES = {c.name: c for c in (CertifiedTraining, IBPTraining, StabilityTraining)}
