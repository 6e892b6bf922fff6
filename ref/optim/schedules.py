"""Learning-rate schedules: callables mapping a (possibly fractional) epoch e to an lr.

The training loop sets `optimizer.lr = schedule(e)` at each epoch start, or at each iteration
with e = epoch + i / iterations_per_epoch. Each schedule's docstring gives its formula.
"""
import math

import numpy as np

from ref.optim.optimizers import check_range


class Cosine:
    """lr(e) = base_lr * 0.5 * (1 + cos(pi * e / epochs)).

    hydra_offset=True gives HYDRA's cosine_schedule, lr(e) = base_lr * 0.5 * (1 + cos(pi * (e - 1)
    / epochs)) for the epochs e = 0 .. epochs - 1: epoch 0 runs slightly below base_lr and epoch 1
    at exactly base_lr.
    """

    def __init__(self, base_lr, epochs, hydra_offset=False):
        check_range("base_lr", base_lr, 0.0, math.inf)
        if epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {epochs!r}")
        self.base_lr, self.epochs, self.hydra_offset = base_lr, epochs, hydra_offset

    def __call__(self, epoch):
        e = epoch - 1 if self.hydra_offset else epoch
        return self.base_lr * 0.5 * (1 + math.cos(math.pi * e / self.epochs))

    def __repr__(self):
        return (f"Cosine(base_lr={self.base_lr}, epochs={self.epochs}, "
                f"hydra_offset={self.hydra_offset})")


class MultiStep:
    """lr(e) = base_lr * gamma ** #{milestones m with m <= e}, as torch MultiStepLR; e.g.
    milestones (0.5 E, 0.75 E) divide the lr by 10 at 50% and 75% of training.

    strict=True counts only m < e, as Keras PiecewiseConstantDecay (used by BCS with
    iteration-based boundaries, e = iteration / iterations_per_epoch): the lr changes one
    iteration after the boundary.
    """

    def __init__(self, base_lr, milestones, gamma=0.1, strict=False):
        check_range("base_lr", base_lr, 0.0, math.inf)
        check_range("gamma", gamma, 0.0, math.inf)
        self.base_lr, self.gamma, self.strict = base_lr, gamma, strict
        self.milestones = tuple(sorted(milestones))

    def __call__(self, epoch):
        passed = sum(m < epoch if self.strict else m <= epoch for m in self.milestones)
        return self.base_lr * self.gamma ** passed

    def __repr__(self):
        return (f"MultiStep(base_lr={self.base_lr}, milestones={list(self.milestones)}, "
                f"gamma={self.gamma}, strict={self.strict})")


class Piecewise:
    """Linear interpolation between points (e_0, lr_0), (e_1, lr_1), ... with e_0 < e_1 < ...:

        lr(e) = lr_i + (e - e_i) / (e_{i+1} - e_i) * (lr_{i+1} - lr_i)   for e_i <= e <= e_{i+1},

    lr_0 before e_0 and the last lr after the last point (numpy.interp). E.g. robust_overfitting's
    'superconverge' schedule is Piecewise([(0, 0), (2 E // 5, lr_max), (E, 0)]).
    """

    def __init__(self, points):
        self.points = [(float(e), float(lr)) for e, lr in points]
        epochs = [e for e, _ in self.points]
        if not self.points or any(b <= a for a, b in zip(epochs, epochs[1:])):
            raise ValueError(f"points must be (epoch, lr) pairs with strictly increasing epochs, "
                             f"got {points!r}")
        for e, lr in self.points:
            check_range(f"lr at epoch {e}", lr, 0.0, math.inf)

    def __call__(self, epoch):
        epochs, lrs = zip(*self.points)
        return float(np.interp(epoch, epochs, lrs))

    def __repr__(self):
        return f"Piecewise({self.points})"


class LinearWarmup:
    """lr(e) = schedule(e) * (start_factor + (1 - start_factor) * clip(e / warmup_epochs, 0, 1)).

    The factor rises linearly from start_factor at e = 0 to 1 at e = warmup_epochs; called per
    iteration with a fractional epoch the lr grows from ~0 smoothly.
    """

    def __init__(self, schedule, warmup_epochs, start_factor=0.0):
        if not callable(schedule):
            raise TypeError(f"schedule must be callable, got {type(schedule).__name__}")
        if warmup_epochs <= 0:
            raise ValueError(f"warmup_epochs must be > 0, got {warmup_epochs!r}")
        check_range("start_factor", start_factor, 0.0, 1.0)
        self.schedule, self.warmup_epochs, self.start_factor = schedule, warmup_epochs, start_factor

    def __call__(self, epoch):
        ramp = min(1.0, max(0.0, epoch / self.warmup_epochs))
        return self.schedule(epoch) * (self.start_factor + (1 - self.start_factor) * ramp)

    def __repr__(self):
        return (f"LinearWarmup({self.schedule!r}, warmup_epochs={self.warmup_epochs}, "
                f"start_factor={self.start_factor})")
