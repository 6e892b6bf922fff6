"""Learning-rate schedules: callables mapping a (possibly fractional) epoch e to an lr.

The training loop sets `optimizer.lr = schedule(e)` at each epoch start, or at each iteration
with e = epoch + i / iterations_per_epoch. Each schedule's docstring gives its formula.

StopE and StopC are the two training lengths of "Achieving Adversarial Robustness via Sparsity":
a fixed number of epochs with the lr divided by 10 at fixed fractions of training (StopE), and
training until the validation loss stops improving (StopC). StopC adapts to the run, so it also
has the end-of-epoch hook that ref.train.fit calls (StopC.end_epoch) and a state to checkpoint.
"""
import math

import numpy as np

from ref.optim.optimizers import check_range


class Cosine:
    """lr(e) = base_lr * 0.5 * (1 + cos(pi * e / epochs)).

    hydra_offset=True gives HYDRA's cosine_schedule, lr(e) = base_lr * 0.5 * (1 + cos(pi * (e - 1)
    / epochs)) for the epochs e = 0 .. epochs - 1: epoch 0 runs slightly below base_lr and epoch 1
    at exactly base_lr; a one-epoch run (cos(-pi) = -1) trains at lr 0, as the reference does.
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


class PerEpoch:
    """lr(e) = schedule(floor(e)): the lr set once at the start of each epoch, as the reference
    repositories do (e.g. HYDRA's cosine_schedule), while fit asks at every iteration."""

    def __init__(self, schedule):
        if not callable(schedule):
            raise TypeError(f"schedule must be callable, got {type(schedule).__name__}")
        self.schedule = schedule

    def __call__(self, epoch):
        return self.schedule(math.floor(epoch))

    def __repr__(self):
        return f"PerEpoch({self.schedule!r})"


class StopE(MultiStep):
    """Stop-E: `epochs` epochs with the lr multiplied by `factor` (divided by 10) at fixed
    fractions of training,

        lr(e) = base_lr * factor ** #{f in fractions with int(f * epochs) <= e},

    i.e. MultiStep with milestones int(f * epochs); by default the lr drops at 50% and 75%.
    """

    def __init__(self, base_lr, epochs, fractions=(0.5, 0.75), factor=0.1):
        if int(epochs) != epochs or epochs <= 0:
            raise ValueError(f"epochs must be an integer > 0, got {epochs!r}")
        for f in fractions:
            check_range("each of fractions", f, 0.0, 1.0)
        check_open_unit("factor", factor)
        super().__init__(base_lr, [int(f * epochs) for f in fractions], gamma=factor)
        self.epochs, self.fractions = int(epochs), tuple(fractions)

    def __repr__(self):
        return (f"StopE(base_lr={self.base_lr}, epochs={self.epochs}, "
                f"fractions={list(self.fractions)}, factor={self.gamma})")


class StopC:
    """Stop-C: train until a validation metric converges; lr(e) = base_lr * factor ** decays.

    After each epoch, end_epoch(record) reads v = record[monitor] (by default "val_loss", the
    clean validation cross-entropy of ref.train.fit) and applies, with best the best v so far:

        improved  <=>  no best yet,  or  v < best * (1 - threshold)   (mode "min")
                                     or  v > best * (1 + threshold)   (mode "max")
        improved:      best = v,  bad_epochs = 0
        otherwise:     bad_epochs += 1, and when bad_epochs > patience (a plateau):
                           decays < max_decays:   decays += 1, bad_epochs = 0   (lr *= factor)
                           decays == max_decays:  stopped = True                (training ends)

    The improvement test is torch ReduceLROnPlateau's threshold_mode="rel", and a plateau is its
    "num_bad_epochs > patience": patience epochs without improvement are tolerated and the next
    one decays the lr (patience=0 decays at the first). best is kept across decays. With the
    defaults the lr goes base_lr -> base_lr / 10 -> base_lr / 100, and the third plateau ends
    training. The lr is constant within an epoch; a decay decided after epoch k applies from
    epoch k + 1. state_dict() / load_state_dict() carry (best, bad_epochs, decays, stopped) as
    JSON values, so a resumed run continues the rule exactly.
    """

    MODES = ("min", "max")

    def __init__(self, base_lr, patience=10, threshold=1e-4, factor=0.1, max_decays=2,
                 monitor="val_loss", mode="min"):
        check_range("base_lr", base_lr, 0.0, math.inf)
        check_count("patience", patience)
        check_range("threshold", threshold, 0.0, math.inf)
        check_open_unit("factor", factor)
        check_count("max_decays", max_decays)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.base_lr, self.patience, self.threshold = base_lr, patience, threshold
        self.factor, self.max_decays, self.monitor, self.mode = factor, max_decays, monitor, mode
        self.best, self.bad_epochs, self.decays, self.stopped = None, 0, 0, False

    def __call__(self, epoch):
        return self.base_lr * self.factor ** self.decays

    def end_epoch(self, record):
        """Apply the rule (class doc) to record[monitor]; return True when training must stop."""
        if self.stopped:
            raise RuntimeError("StopC.end_epoch called after the schedule stopped training")
        if self.monitor not in record:
            raise KeyError(f"StopC monitors {self.monitor!r}, which the epoch's record lacks "
                           f"(it has {sorted(record)}); fit records val_* only with val_data")
        value = float(record[self.monitor])
        if self._improves(value):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                if self.decays == self.max_decays:
                    self.stopped = True
                else:
                    self.decays, self.bad_epochs = self.decays + 1, 0
        return self.stopped

    def _improves(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best * (1 - self.threshold)
        return value > self.best * (1 + self.threshold)

    @property
    def stop_reason(self):
        """Why training stopped, in words (for the log)."""
        return (f"{self.monitor} did not improve on its best {self.best:.6g} by a relative "
                f"{self.threshold:g} (mode {self.mode!r}) for {_count(self.patience + 1, 'epoch')} "
                f"after {_count(self.decays, 'lr decay')}")

    def state_dict(self):
        return dict(best=self.best, bad_epochs=self.bad_epochs, decays=self.decays,
                    stopped=self.stopped)

    def load_state_dict(self, state):
        self.best, self.bad_epochs = state["best"], int(state["bad_epochs"])
        self.decays, self.stopped = int(state["decays"]), bool(state["stopped"])

    def __repr__(self):
        return (f"StopC(base_lr={self.base_lr}, patience={self.patience}, "
                f"threshold={self.threshold}, factor={self.factor}, "
                f"max_decays={self.max_decays}, monitor={self.monitor!r}, mode={self.mode!r})")


def check_open_unit(name, value):
    """ValueError naming the argument unless 0 < value < 1."""
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")


def check_count(name, value):
    """ValueError naming the argument unless value is an integer >= 0."""
    if int(value) != value or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def _count(n, noun):
    """'1 epoch', '2 epochs'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
