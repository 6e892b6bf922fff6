"""L-inf attacks on images in [0, 1]: FGSM, PGD (CE or KL loss), APGD-CE, minimal-eps search.

Notation: f the model, x0 clean images (n, c, h, w) in [0, 1], y labels (n,), x an iterate,
g = grad_x loss(f(x), y) (only the input gradient: parameters are frozen during an attack),
eps the L-inf radius, alpha the step, P(x) = clip01(x0 + clip(x - x0, -eps, eps)) the projection
onto the ball intersected with the image box. Per-sample losses:
    ce: loss_i = -log softmax(f(x))[i, y_i]
    kl: loss_i = sum_k p_ik (log p_ik - log q_ik),  p = softmax(f(x0)) fixed, q = softmax(f(x))
        (the TRADES inner maximisation)

PGD:   x_0 = P(x0 + delta),  x_{t+1} = P(x_t + alpha * sign(g_t)),  t = 0 .. steps-1
       (the step is the fused op pgd_step of the model's backend, ref/ops/update.py)
       delta: none 0 | uniform U(-eps, eps) | normal 0.001 N(0, 1); the start is projected too.
       select="last" returns x_steps; select="best" the iterate of highest loss among x_0..x_steps
       (per sample, the earliest on ties); select="best_evaluated" the highest-loss point among
       x_0..x_{steps-1}, the points whose loss the gradient steps computed anyway (RBSN's PGD:
       the final iterate is never evaluated). Restarts keep, per sample, the worse result: a
       misclassified point beats a correctly classified one, then the higher loss wins.
FGSM:  P(x0 + eps * sign(g(x0))), i.e. PGD with one step of alpha = eps and no random start.
APGD-CE (Croce & Hein 2020): step 2 eps, momentum 0.75, step halving with a restart from the
       best point at AutoAttack's checkpoints (for N = 100 steps the paper's w_j = p_j N with
       p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)); see apgd_ce.

Arrays in, arrays out (numpy or cupy, the backend of the model's first parameter); random starts
are drawn on the host from a numpy Generator and moved with xp.asarray, so both backends start
from identical points for the same seed. The model's modes and requires_grad flags are restored.
Each call reads from the device once (check_batch: the bounds of x and y together); the PGD and
APGD loops never synchronise with the host (check_labels compares the largest label on the host).
"""
import contextlib
import math

import numpy as np

from ref.tensor import enable_grad, no_grad

RANDOM_STARTS = ("none", "uniform", "normal")
LOSSES = ("ce", "kl")
SELECTS = ("last", "best", "best_evaluated")
MODEL_MODES = ("eval", "train")


# ---- backend, modes, validation ------------------------------------------------------------------
def backend_of(model):
    """(Tensor class, array module) of the model's first parameter."""
    p = next(iter(model.parameters()), None)
    if p is None:
        raise ValueError(f"{type(model).__name__} has no parameters to take a backend from")
    return type(p), p.xp


@contextlib.contextmanager
def attack_mode(model, mode="eval"):
    """Within this block every module is in `mode`, no parameter requires grad (so backward
    computes input gradients only) and ops record even inside no_grad(); each module's mode and
    each parameter's flag come back afterwards."""
    check_choice("model_mode", mode, MODEL_MODES)
    params = model.parameters()
    flags = [p.requires_grad for p in params]
    modes = [(m, m.training) for m in model.modules()]
    model.train(mode == "train")
    for p in params:
        p.requires_grad = False
    try:
        with enable_grad():
            yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad = flag
        for m, training in modes:
            m.training = training


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_batch(model, x, y):
    """Raise a clear error unless x is a floating batch in [0, 1] and y integer labels (n,)
    >= 0; returns the largest label, for check_labels. The bounds of x and y come back from
    the device in one read: one host synchronisation per attack, none inside its loop."""
    _, xp = backend_of(model)
    if not isinstance(x, xp.ndarray) or not isinstance(y, xp.ndarray):
        raise TypeError(f"x and y must be {xp.__name__} arrays (the model's backend), got "
                        f"{type(x).__name__} and {type(y).__name__}")
    if x.dtype.kind != "f" or x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty floating batch (n, ...), got {x.dtype} {x.shape}")
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise ValueError(f"y must be integer labels of shape ({x.shape[0]},) to match x, got "
                         f"{y.dtype} {y.shape}")
    bounds = [v.astype(np.float64) for v in (x.min(), x.max(), y.min(), y.max())]
    lo, hi, y_lo, y_hi = xp.stack(bounds).tolist()
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"x must lie in [0, 1], got values in [{lo}, {hi}]")
    if y_lo < 0:
        raise ValueError(f"labels must be >= 0, got {int(y_lo)}")
    return int(y_hi)


def check_labels(logits, top):
    """Raise unless the largest label `top` (check_batch) indexes a column of the logits (n, k)."""
    if top >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got {top}")


def _check_attack(model, x, y, eps, steps=1, alpha=0.0, restarts=1, eps_name="eps"):
    """Check the arguments; returns the largest label (check_batch)."""
    top = check_batch(model, x, y)
    if not eps >= 0:
        raise ValueError(f"{eps_name} must be >= 0, got {eps}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    if int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1, got {restarts}")
    return top


def _start_kind(random_start):
    """Normalise random_start: True -> "uniform", False -> "none"."""
    if random_start is True or random_start is False:
        return "uniform" if random_start else "none"
    check_choice("random_start", random_start, RANDOM_STARTS)
    return random_start


# ---- losses, gradients, projection ---------------------------------------------------------------
def _losses(logits, y, top, target, loss):
    """Per-sample loss Tensor (n,): CE against y, or KL(target || softmax(logits)). top: the
    largest label, checked against the logits on the host (the labels stay on the device)."""
    ops = logits.ops
    check_labels(logits, top)
    if loss == "ce":
        return ops.cross_entropy(logits, y, reduction="none", check=False)        # (n,)
    log_q = ops.log_softmax(logits, axis=1)                                        # (n, k)
    return ops.kl_div(log_q, target, reduction="none").sum(axis=1)                 # (n,)


def _loss_grad(model, x, y, top, target, loss):
    """Per-sample losses (n,), misclassified flags (n,) and g = d sum(losses) / dx at x."""
    T, xp = backend_of(model)
    xt = T(x, requires_grad=True)
    logits = model(xt)                                                             # (n, k)
    losses = _losses(logits, y, top, target, loss)                                 # (n,)
    losses.sum().backward()
    g = xt.grad if xt.grad is not None else xp.zeros_like(x)                       # (n, c, h, w)
    return losses.data, logits.data.argmax(axis=1) != y, g


def _loss_only(model, x, y, top, target, loss):
    """Per-sample losses (n,) and misclassified flags (n,) at x, without a graph."""
    T, _ = backend_of(model)
    with no_grad():
        logits = model(T(x))                                                       # (n, k)
        losses = _losses(logits, y, top, target, loss)                             # (n,)
    return losses.data, logits.data.argmax(axis=1) != y


def _target(model, x0, loss):
    """What the loss compares with: nothing extra for CE, clean probabilities p for KL."""
    if loss == "ce":
        return None
    T, _ = backend_of(model)
    with no_grad():
        logits = model(T(x0))                                                      # (n, k)
    return logits.ops.softmax(logits, axis=1).data                                 # (n, k)


def _project(xp, x0, x, eps):
    """P(x) = clip01(x0 + clip(x - x0, -eps, eps)); eps a number or (n, 1, .., 1)."""
    return xp.clip(x0 + xp.clip(x - x0, -eps, eps), 0, 1)                          # (n, c, h, w)


def _per_sample(flags, x):
    """(n,) -> (n, 1, .., 1), broadcastable against x."""
    return flags.reshape((-1,) + (1,) * (x.ndim - 1))


def _start(xp, x0, eps, kind, rng):
    """x0 projected after a random offset: none | uniform | normal | surface (APGD). The offset
    is drawn on the host (numpy) and then moved to the backend."""
    if kind == "none":
        return x0
    if kind == "normal":
        delta = xp.asarray(0.001 * rng.standard_normal(x0.shape), dtype=x0.dtype)  # (n, c, h, w)
        return _project(xp, x0, x0 + delta, eps)
    t = rng.uniform(-1.0, 1.0, size=x0.shape)                                      # (n, c, h, w)
    if kind == "surface":   # each sample's largest |t| becomes 1: a point on the ball's surface
        largest = np.abs(t).reshape(len(t), -1).max(axis=1)                        # (n,)
        t = t / (_per_sample(largest, t) + 1e-12)                                  # (n, c, h, w)
    return _project(xp, x0, x0 + eps * xp.asarray(t, dtype=x0.dtype), eps)


def _keep(xp, old, new, replace):
    """Per sample, the entries of `new` where replace (n,) else those of `old`; old and new are
    tuples of arrays whose first axis is the sample, e.g. (x, losses, fooled)."""
    return tuple(xp.where(_per_sample(replace, a), a, b) for a, b in zip(new, old))  # each (n, ..)


def _keep_worse(xp, old, new):
    """Restart rule: misclassified beats correct, then the higher loss wins."""
    replace = (new[2] & ~old[2]) | ((new[2] == old[2]) & (new[1] > old[1]))       # (n,)
    return _keep(xp, old, new, replace)


# ---- PGD -----------------------------------------------------------------------------------------
def _pgd_run(model, x0, y, top, target, eps, alpha, steps, start, loss, select, rng, scored):
    """One PGD run. Returns (x, losses, fooled); losses and fooled are None unless `scored` or
    select is "best" or "best_evaluated" (they then belong to the returned point)."""
    T, xp = backend_of(model)
    x = _start(xp, x0, eps, start, rng)                                            # (n, c, h, w)
    best = None
    for _ in range(steps):
        losses, fooled, g = _loss_grad(model, x, y, top, target, loss)
        if select != "last":
            point = (x, losses, fooled)
            best = point if best is None else _keep(xp, best, point, losses > best[1])
        x = T.ops.pgd_step(x, g, x0, alpha, eps)                                   # (n, c, h, w)
    if select == "best_evaluated":
        return best
    if select == "last" and not scored:
        return x, None, None
    last = (x, *_loss_only(model, x, y, top, target, loss))
    return last if best is None else _keep(xp, best, last, last[1] > best[1])


def _pgd(model, x0, y, top, eps, alpha, steps, start, loss, restarts, select, rng):
    _, xp = backend_of(model)
    target = _target(model, x0, loss)
    worst = None
    for _ in range(restarts):
        run = _pgd_run(model, x0, y, top, target, eps, alpha, steps, start, loss, select, rng,
                       scored=restarts > 1)
        worst = run if worst is None else _keep_worse(xp, worst, run)
    return worst


def pgd(model, x, y, eps, alpha, steps, random_start="uniform", loss="ce", restarts=1,
        select="last", model_mode="eval", rng=None):
    """L-inf PGD: x_{t+1} = P(x_t + alpha sign(grad_x loss)); returns x_adv (same shape as x).

    random_start: "none" | "uniform" | "normal" (True = "uniform", False = "none").
    loss: "ce" (against y) or "kl" (TRADES: KL(softmax f(x) || softmax f(x_adv)), f(x) fixed).
    select: "last" iterate, per-sample "best" (highest-loss) iterate, start and end included, or
    "best_evaluated": the highest-loss point among x_0..x_{steps-1} (RBSN's PGD).
    restarts: independent random starts; per sample the worse result is kept (see module doc).
    model_mode: "eval" (running BN statistics) or "train" (batch statistics) during the attack.
    rng: numpy Generator for the random starts (a fresh unseeded one when None).
    """
    top = _check_attack(model, x, y, eps, steps, alpha, restarts)
    start = _start_kind(random_start)
    check_choice("loss", loss, LOSSES)
    check_choice("select", select, SELECTS)
    rng = np.random.default_rng() if rng is None else rng
    with attack_mode(model, model_mode):
        return _pgd(model, x, y, top, eps, alpha, steps, start, loss, restarts, select, rng)[0]


def fgsm(model, x, y, eps, model_mode="eval"):
    """Fast gradient sign method: x_adv = clip01(x + eps sign(grad_x CE(f(x), y)))."""
    top = _check_attack(model, x, y, eps)
    with attack_mode(model, model_mode):
        return _pgd(model, x, y, top, eps, eps, 1, "none", "ce", 1, "last", None)[0]


def input_gradient(model, x, y, model_mode="eval"):
    """g = d sum_i CE(f(x_i), y_i) / dx (n, c, h, w), parameters frozen (for gradient checks)."""
    top = _check_attack(model, x, y, 0.0)
    with attack_mode(model, model_mode):
        return _loss_grad(model, x, y, top, None, "ce")[2]


# ---- APGD-CE -------------------------------------------------------------------------------------
def apgd_checkpoints(steps):
    """Iterations after which APGD may halve its step, as in AutoAttack: windows of length
    max(int(0.22 N), 1), each next one shorter by max(int(0.03 N), 1) but never below
    max(int(0.06 N), 1). For N = 100: 22, 41, 57, 70, 80, 87, 93, 99."""
    window = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    points, t = [], 0
    while t + window <= steps:
        t += window
        points.append(t)
        window = max(window - shrink, shortest)
    return points


def _apgd_run(model, x0, y, top, eps, steps, rho, rng):
    """One APGD-CE run from a random point on the ball's surface. Returns (x, losses, fooled):
    per sample the latest misclassified iterate if any, else the highest-loss iterate."""
    T, xp = backend_of(model)
    x = _start(xp, x0, eps, "surface", rng)                                        # (n, c, h, w)
    losses, fooled, g = _loss_grad(model, x, y, top, None, "ce")
    best = (x, losses, g)                            # highest-loss iterate and its gradient
    adv = (x, losses, fooled)                        # latest misclassified iterate; fooled ever
    history = [losses]                               # loss of every iterate, the start first
    step = xp.full(_per_sample(y, x).shape, 2 * eps, dtype=x.dtype)                # (n, 1, 1, 1)
    x_prev = x
    best_at_check, halved_at_check = losses, xp.ones(y.shape, dtype=bool)          # (n,) (n,)
    checkpoints, last_check = apgd_checkpoints(steps), 0
    for i in range(1, steps + 1):
        a = 0.75 if i > 1 else 1.0
        z = T.ops.pgd_step(x, g, x0, step, eps)                                    # (n, c, h, w)
        x_prev, x = x, _project(xp, x0, x + a * (z - x) + (1 - a) * (x - x_prev), eps)
        losses, fooled, g = _loss_grad(model, x, y, top, None, "ce")
        adv = _keep(xp, adv, (x, losses, fooled), fooled)
        best = _keep(xp, best, (x, losses, g), losses > best[1])
        history.append(losses)
        if i in checkpoints:
            rises = sum((history[j] > history[j - 1]).astype(x.dtype)
                        for j in range(last_check + 1, i + 1))                     # (n,)
            halve = ((rises <= rho * (i - last_check))
                     | (~halved_at_check & (best_at_check >= best[1])))            # (n,)
            halved_at_check, best_at_check, last_check = halve, best[1], i
            back = _per_sample(halve, x)                                           # (n, 1, 1, 1)
            step = xp.where(back, step / 2, step)                                  # (n, 1, 1, 1)
            x, g = xp.where(back, best[0], x), xp.where(back, best[2], g)          # (n, c, h, w)
    return _keep(xp, (best[0], best[1], adv[2]), adv, adv[2])


def apgd_ce(model, x, y, eps, steps=100, restarts=1, rho=0.75, model_mode="eval", rng=None):
    """APGD with the CE loss (Croce & Hein 2020), the strong evaluation attack.

    From a random point on the ball's surface: z = P(x_t + s sign(g_t)),
    x_{t+1} = P(x_t + 0.75 (z - x_t) + 0.25 (x_t - x_{t-1})) (plain step z at t = 0), s = 2 eps
    per sample. At each checkpoint (apgd_checkpoints) a sample halves s and continues from its
    highest-loss point when its loss rose in at most rho of the window's steps, or when s was not
    halved at the previous checkpoint and the best loss has not improved since. (The window's
    first comparison is with the iterate before it, the start point for the first window.)
    Returns per sample the latest misclassified iterate when one was found, else the
    highest-loss iterate; restarts keep the worse result as in pgd.
    """
    top = _check_attack(model, x, y, eps, steps, restarts=restarts)
    _, xp = backend_of(model)
    rng = np.random.default_rng() if rng is None else rng
    with attack_mode(model, model_mode):
        worst = None
        for _ in range(restarts):
            run = _apgd_run(model, x, y, top, eps, steps, rho, rng)
            worst = run if worst is None else _keep_worse(xp, worst, run)
    return worst[0]


# ---- minimal eps ---------------------------------------------------------------------------------
def minimal_eps(model, x, y, eps_max=0.5, steps=20, search_steps=10, random_start="none",
                model_mode="eval", rng=None):
    """Per-sample smallest eps at which PGD misclassifies the sample, found by bisection.

    For each sample: eps* = 0 when the clean point is already misclassified; inf when PGD at
    eps_max fails; otherwise `search_steps` rounds of bisection on [0, eps_max], each running PGD
    (`steps` steps of alpha = 2.5 eps / steps, last iterate) at the midpoint of every sample's
    bracket at once; eps* is the bracket's upper end, a radius at which the attack succeeded.
    This is an attack result, hence an UPPER bound on the true minimal adversarial L-inf
    distance (what the sparsity paper calls the "distortion bound"); PGD success need not be
    monotone in eps, so the bisection is approximate. Returns an array (n,) of x's dtype.
    """
    top = _check_attack(model, x, y, eps_max, steps, eps_name="eps_max")
    if int(search_steps) != search_steps or search_steps < 0:
        raise ValueError(f"search_steps must be an integer >= 0, got {search_steps}")
    start = _start_kind(random_start)
    _, xp = backend_of(model)
    rng = np.random.default_rng() if rng is None else rng

    def fools(idx, eps):                                                           # eps (m,)
        e = _per_sample(eps, x[idx])                                               # (m, 1, 1, 1)
        return _pgd_run(model, x[idx], y[idx], top, None, e, 2.5 * e / steps, steps, start, "ce",
                        "last", rng, scored=True)[2]

    with attack_mode(model, model_mode):
        wrong = _loss_only(model, x, y, top, None, "ce")[1]                        # (n,)
        everyone = xp.arange(len(y))                                               # (n,)
        reached = fools(everyone, xp.full(y.shape, eps_max, dtype=x.dtype)) & ~wrong
        result = xp.where(wrong, 0.0, math.inf).astype(x.dtype)                    # (n,)
        idx = xp.nonzero(reached)[0]                                               # (m,)
        lo = xp.zeros(idx.shape, dtype=x.dtype)                                    # (m,)
        hi = xp.full(idx.shape, eps_max, dtype=x.dtype)                            # (m,)
        for _ in range(search_steps if len(idx) else 0):
            mid = (lo + hi) / 2                                                    # (m,)
            ok = fools(idx, mid)                                                   # (m,)
            lo, hi = xp.where(ok, lo, mid), xp.where(ok, mid, hi)                  # (m,) (m,)
        result[idx] = hi
    return result
