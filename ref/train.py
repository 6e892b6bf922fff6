"""The training loop: fit() with progress, per-epoch HDF5 checkpoints, bit-exact resume, model
selection on a held-out split and NaN/inf detection; evaluate() is in ref.evaluate.

One epoch e (0-based) of fit:
    train_data.set_epoch(e); model.train()
    for batch i of n:  lr = schedule(e + i / n);  loss = objective(model, x, y, rng)
                       backward;  optimizer.step()
                       every log_every batches and at the end: read the losses and correct
                       counts kept on the device (one read), stop if a loss is not finite
    validate (clean accuracy and loss, PGD and, with val_verify, verified accuracy on val_data),
    schedule.end_epoch(record) if the schedule has it, checkpoint, report; stop early if
    end_epoch said so.

Checkpoints in out_dir (ref.checkpoint, atomic): last.h5 after every epoch, epoch_<e>.h5 every
`keep_every` epochs, best.h5 whenever the selection metric improves. Each holds the model, the
optimizer, the number of finished epochs, the state of every numpy Generator in use (fit's own,
which drives the attacks, and any a module holds, e.g. dropout), the metrics history, the best
metric so far, the state_dict() of the schedule and of the objective when they have one (StopC;
the fast trainer's perturbation memory) and why training stopped early, if it did. The loader's
batches depend only on (its seed, epoch) via set_epoch, so resuming from last.h5 after epoch k
reproduces an uninterrupted run bit for bit.
"""
import math
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from ref import checkpoint
from ref.attacks import pgd
from ref.evaluate import accuracy, batches, clean_accuracy_and_loss, verified_accuracy
from ref.evaluate import evaluate  # noqa: F401 (evaluate is part of this API)

SELECTABLE = ("val_robust_acc", "val_clean_acc", "val_verified_acc")   # model selection metrics


def fit(model, objective, optimizer, schedule, train_data, epochs, *, out_dir=None, resume=None,
        val_data=None, val_attack=None, val_verify=None, select=None, seed=0, keep_every=1,
        log_every=20, progress=True, metadata=None):
    """Train for `epochs` epochs (counting those already in a resumed checkpoint).

    objective: callable(model, x, y, rng) -> scalar loss Tensor, leaving `.logits` (ref.objectives);
    a batch's further items (a Loader's sample indices) are passed after rng.
    schedule: callable(epoch as float) -> lr, or None to keep optimizer.lr. A schedule may also
    have the end-of-epoch hook end_epoch(record) -> bool (e.g. ref.optim.StopC): fit calls it once
    per epoch with the epoch's complete record, before the checkpoint; True means stop: fit
    writes the checkpoint, prints "stopping after epoch k: " + schedule.stop_reason (a str such a
    schedule has) and returns the history. A schedule with state_dict() / load_state_dict() has
    its state saved in every checkpoint (extra "schedule_state") and restored on resume (a
    checkpoint without it is an error); resuming a stopped run trains no more epochs. The same
    holds for an objective with state_dict() / load_state_dict() (extra "objective_state").
    train_data: iterable of (x, y) batches with len() (a datasets.Loader; set_epoch is used).
    out_dir: directory for the checkpoints (none written when None).
    resume: a checkpoint path, or True for out_dir/last.h5 (a fresh start if it does not exist).
    val_data: (x, y) arrays for model selection and the records' val_loss (the mean clean
    cross-entropy in eval mode) and val_clean_acc; val_attack: pgd keyword arguments (eps, alpha,
    steps, ...) for the robust metric val_robust_acc, by default the objective's eps, alpha and
    steps with a CE loss and a uniform start; val_verify: dict(eps, method) for val_verified_acc,
    the accuracy verified by ref.certify's bounds (method "ibp" or "crown-ibp"). select:
    "val_robust_acc" (default when an attack is available), "val_clean_acc" or
    "val_verified_acc" (with val_verify). Returns the metrics history: one dict per epoch.
    """
    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs}")
    if resume is True and out_dir is None:
        raise ValueError("resume=True needs out_dir (the run directory holding last.h5)")
    val_attack = _val_attack(objective, val_attack) if val_data is not None else None
    select = select or ("val_robust_acc" if val_attack is not None else "val_clean_acc")
    if val_data is not None and select not in SELECTABLE:
        raise ValueError(f"select must be 'val_robust_acc', 'val_clean_acc' or "
                         f"'val_verified_acc', got {select!r}")
    if val_data is not None and select == "val_verified_acc" and val_verify is None:
        raise ValueError("select='val_verified_acc' needs val_verify (eps and bound method)")
    if val_data is not None and select == "val_robust_acc" and val_attack is None:
        raise ValueError("select='val_robust_acc' needs val_attack (the objective has no attack)")
    rng = np.random.default_rng(seed)
    generators = _generators(model, rng)
    state = dict(epoch=0, history=[], best=None, stopped=None)
    if resume:
        state = _resume(resume, out_dir, model, optimizer, generators,
                        dict(schedule=schedule, objective=objective), state)
    if state["stopped"]:
        print(f"nothing to train: the run stopped {state['stopped']}", file=sys.stderr)
        return state["history"]
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
    for epoch in range(state["epoch"], int(epochs)):
        record = _train_epoch(model, objective, optimizer, schedule, train_data, epoch, epochs, rng,
                              out_dir, log_every, progress)
        if val_data is not None:
            record["val_clean_acc"], record["val_loss"] = clean_accuracy_and_loss(model, val_data)
            if val_attack is not None:
                record["val_robust_acc"] = accuracy(
                    model, val_data, lambda m, x, y, r: pgd(m, x, y, rng=r, **val_attack),
                    seed=seed + epoch)
            if val_verify is not None:
                record["val_verified_acc"] = verified_accuracy(model, val_data, **val_verify)
        state["history"].append(record)
        state["epoch"] = epoch + 1
        improved = select in record and (state["best"] is None
                                         or record[select] > state["best"]["value"])
        if improved:
            state["best"] = dict(metric=select, value=record[select], epoch=epoch + 1)
        if hasattr(schedule, "end_epoch") and schedule.end_epoch(record):
            state["stopped"] = f"after epoch {epoch + 1}: {schedule.stop_reason}"
        if out_dir is not None:
            _save(out_dir, model, optimizer, generators,
                  dict(schedule=schedule, objective=objective), state, metadata, epoch + 1,
                  keep_every, improved)
        print(_summary(record, epochs), flush=True)
        if state["stopped"]:
            print(f"stopping {state['stopped']}", flush=True)
            break
    return state["history"]


def _val_attack(objective, val_attack):
    """The PGD settings for validation: given, or taken from the objective's attack."""
    if val_attack is not None:
        return dict(val_attack)
    attack = getattr(objective, "attack", {})
    if "eps" not in attack:
        return None
    return dict(eps=attack["eps"], alpha=attack["alpha"], steps=attack["steps"])


def _generators(model, rng):
    """{name: Generator}: fit's own and every Generator a module keeps as an attribute."""
    found = {"fit": rng}
    for prefix, module in model.named_modules():
        for name, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                found[f"{prefix}.{name}" if prefix else name] = value
    return found


def _resume(resume, out_dir, model, optimizer, generators, stateful, state):
    path = os.path.join(out_dir, "last.h5") if resume is True else os.fspath(resume)
    if resume is True and not os.path.exists(path):
        print(f"no checkpoint at {path}: starting from epoch 1", file=sys.stderr)
        return state
    extra = checkpoint.load(path, model, optimizer)
    missing = sorted(set(generators) - set(extra["rng_states"]))
    if missing:
        raise ValueError(f"checkpoint {path!r} holds no state for the generators {missing}")
    for name, holder in stateful.items():
        if hasattr(holder, "load_state_dict"):
            if f"{name}_state" not in extra:
                raise ValueError(f"checkpoint {path!r} holds no state for the {name} {holder!r}")
            holder.load_state_dict(extra[f"{name}_state"])
    for name, g in generators.items():
        g.bit_generator.state = extra["rng_states"][name]
    print(f"resumed from {path} after epoch {extra['epoch']}", file=sys.stderr)
    return dict(epoch=int(extra["epoch"]), history=extra["history"], best=extra["best"],
                stopped=extra.get("stopped"))


def _save(out_dir, model, optimizer, generators, stateful, state, metadata, epoch, keep_every,
          improved):
    extra = dict(epoch=epoch, history=state["history"], best=state["best"],
                 rng_states={name: g.bit_generator.state for name, g in generators.items()},
                 metadata=metadata or {}, stopped=state["stopped"])
    extra.update((f"{name}_state", holder.state_dict()) for name, holder in stateful.items()
                 if hasattr(holder, "state_dict"))
    names = (["best.h5"] if improved else []) + (
        [f"epoch_{epoch:03d}.h5"] if keep_every and epoch % keep_every == 0 else []) + ["last.h5"]
    for name in names:
        checkpoint.save(os.path.join(out_dir, name), model, optimizer, **extra)


def _train_epoch(model, objective, optimizer, schedule, train_data, epoch, epochs, rng, out_dir,
                 log_every, progress):
    """One pass over train_data; returns the epoch's metrics.

    Each batch's loss and number of correct predictions stay on the device until they are read,
    all together, every `log_every` batches and after the last (so a step does not wait for the
    device). Raises FloatingPointError naming the first batch of a non-finite loss when it is
    read; the epoch's checkpoint comes later, so no checkpoint holds its effect."""
    if hasattr(train_data, "set_epoch"):
        train_data.set_epoch(epoch)
    model.train()
    n = len(train_data)
    lr = optimizer.lr if schedule is None else schedule(epoch)
    bar = _Progress(n, f"epoch {epoch + 1}/{epochs}", progress, log_every)
    loss_sum = correct = seen = 0
    pending = []      # (loss, correct count, batch size) of the batches not read yet
    start = time.perf_counter()
    for i, (x, y, *extra) in enumerate(batches(train_data, None, model)):
        if schedule is not None:
            optimizer.lr = schedule(epoch + i / n)
        loss = objective(model, x, y, rng, *extra)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pending.append((loss.data, (objective.logits.argmax(axis=1) == y).sum(), len(y)))
        if (i + 1) % log_every and i + 1 < n:
            continue
        for j, (value, right, size) in enumerate(_read(loss.xp, pending), i + 2 - len(pending)):
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at epoch {epoch + 1}, batch {j}: "
                                         f"training stopped; {_kept(out_dir, epoch)}")
            loss_sum, correct, seen = loss_sum + value * size, correct + right, seen + size
        pending = []
        bar.update(i + 1, loss_sum / seen, correct / seen, seen / (time.perf_counter() - start))
    bar.close()
    elapsed = time.perf_counter() - start
    return dict(epoch=epoch + 1, lr=lr, train_loss=loss_sum / seen, train_acc=correct / seen,
                examples_per_s=seen / elapsed, time_s=elapsed)


def _read(xp, pending):
    """[(loss as float, correct count as int, batch size)] of the pending batches, their device
    values read in one transfer (float64 holds both the float32 losses and the counts exactly)."""
    values = xp.stack([xp.stack([loss.astype(np.float64), right.astype(np.float64)])
                       for loss, right, _ in pending]).tolist()                    # (b, 2)
    return [(loss, int(right), size) for (loss, right), (_, _, size) in zip(values, pending)]


def _kept(out_dir, epoch):
    """What a stop during `epoch` leaves behind."""
    if out_dir is not None and epoch > 0:
        return (f"the last good checkpoint {os.path.join(out_dir, 'last.h5')} (epoch {epoch}) "
                f"is unchanged")
    return "no checkpoint was written"


_VALIDATION_LABELS = dict(val_loss="val_loss", val_clean_acc="clean_acc",
                          val_robust_acc="robust_acc", val_verified_acc="verified_acc")


def _summary(record, epochs):
    val = "".join(f"  {label} {record[key]:.4f}" for key, label in _VALIDATION_LABELS.items()
                  if key in record)
    return (f"epoch {record['epoch']}/{epochs}  lr {record['lr']:.4g}  loss "
            f"{record['train_loss']:.4f}  acc {record['train_acc']:.4f}{val}  "
            f"({record['time_s']:.1f} s, {record['examples_per_s']:.0f} ex/s)")


class _Progress:
    """A tqdm bar on a terminal; otherwise a plain line on stderr every `log_every` batches."""

    def __init__(self, total, label, enabled, log_every):
        self.total, self.label, self.log_every = total, label, log_every
        self.enabled, self.tty = enabled, sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=label, leave=False) if enabled and self.tty else None

    def update(self, batch, loss, acc, rate):
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}", ex_s=f"{rate:.0f}",
                                 refresh=False)
            self.bar.update(batch - self.bar.n)
        elif self.enabled and (batch % self.log_every == 0 or batch == self.total):
            print(f"{self.label} batch {batch}/{self.total} loss {loss:.4f} acc {acc:.4f} "
                  f"{rate:.0f} ex/s", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
