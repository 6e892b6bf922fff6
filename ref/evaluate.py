"""Robust accuracy under a set of attacks, with the gradient-masking sanity checks.

Notation: f the model (eval mode), (x, y) a test batch, eps the L-inf radius. A sample counts as
robust to an attack when f classifies both x and the attack's x_adv correctly, so every robust
accuracy is at most the clean accuracy (and any attack gives an UPPER bound on true robustness).

Attack names:  fgsm | pgd<k> (k steps from a uniform random start) | pgd<k>x<r> (the same with
               r restarts) | apgd | apgd<k> (APGD-CE, 100 steps by default).
PGD steps are alpha = max(eps / 4, 2.5 eps / k): the usual 2/255 at eps 8/255 for k >= 10 and
Madry's 2.5 eps / k for shorter runs. All attacks on batch b draw their starts from
numpy.random.default_rng((seed, b)), so PGD-50 continues the path of PGD-10 from one start.

Sanity checks (ADVERSARIAL.md), each recorded as {"passed", "detail"}; "tol" absorbs noise:
    in_ball          every ||x_adv - x||_inf <= eps (+ 4 float eps of the dtype), x_adv in [0, 1]
    monotone_in_eps  accuracy under the curve attack never rises as eps grows (within tol)
    large_eps        accuracy at large_eps is at most max_large_eps_acc
    pgd_vs_fgsm      every PGD accuracy <= FGSM accuracy + tol
    more_iterations  more steps or restarts never raise PGD accuracy (+ tol)
    input_gradients  no NaN in grad_x CE at clean points, no sample with an all-zero gradient
    deterministic    two eval-mode forward passes of every batch agree exactly
    verified_robust  (with verify) no sample verified at eps (every margin lower bound of
                     ref.certify > 0) falls to an attack at eps: verified accuracy is never above
                     any attack's accuracy (a failure is an unsound bound or a broken check)
"""
import re
import time

import numpy as np

from ref.attacks import apgd_ce, attack_mode, backend_of, fgsm, input_gradient, pgd
from ref.certify.crown import METHODS, certified_rows, margin_lower_bounds
from ref.tensor import no_grad

DEFAULT_ATTACKS = ("fgsm", "pgd10", "pgd50", "apgd")
DEFAULT_CURVE = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


# ---- data and accuracy ---------------------------------------------------------------------------
def batches(data, batch_size, model):
    """(x, y) batches on the model's backend, x in the model's dtype: from a pair of arrays
    (uint8 images become x / 255) or from an iterable of such pairs (e.g. a datasets.Loader);
    anything a batch holds after (x, y), such as a Loader's sample indices, follows unchanged."""
    _, xp = backend_of(model)
    dtype = model.parameters()[0].dtype
    if isinstance(data, tuple):
        x, y = data
        if len(x) != len(y):
            raise ValueError(f"data has {len(x)} images but {len(y)} labels")
        data = ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size))
    for xb, yb, *rest in data:
        xb = xp.asarray(xb)                                                        # (b, c, h, w)
        xb = xb.astype(dtype) / 255 if xb.dtype == np.uint8 else xb.astype(dtype, copy=False)
        yield xb, xp.asarray(yb), *rest


def logits(model, x):
    """f(x) (n, k) in eval mode, without a graph; the model's modes are restored."""
    T, _ = backend_of(model)
    with attack_mode(model, "eval"), no_grad():
        return model(T(x)).data                                                    # (n, k)


def predict(model, x):
    """Predicted classes (n,) of f(x) in eval mode."""
    return logits(model, x).argmax(axis=1)                                         # (n,)


def accuracy(model, data, attack=None, batch_size=256, seed=0):
    """Fraction of samples classified correctly clean and, if attack(model, x, y, rng) -> x_adv
    is given, also at x_adv; batch b uses rng = default_rng((seed, b))."""
    correct = total = 0
    for b, (x, y, *_) in enumerate(batches(data, batch_size, model)):
        ok = predict(model, x) == y                                                # (n,)
        if attack is not None:
            ok &= predict(model, attack(model, x, y, np.random.default_rng((seed, b)))) == y
        correct, total = correct + int(ok.sum()), total + len(y)
    return correct / total


def verified(model, x, y, eps, method="ibp"):
    """Boolean array (n,): the samples of the batch (x, y) verified at l-inf radius eps by
    `method` ("ibp" or "crown-ibp"): every margin lower bound z_y - z_j (j != y) is > 0."""
    with attack_mode(model, "eval"), no_grad():
        return certified_rows(margin_lower_bounds(model, x, y, eps, method), y)    # (n,)


def verified_accuracy(model, data, eps, method="ibp", batch_size=256):
    """Fraction of the samples of `data` (as `accuracy` takes it) verified at eps by `method`."""
    count = total = 0
    for x, y, *_ in batches(data, batch_size, model):
        count, total = count + int(verified(model, x, y, eps, method).sum()), total + len(y)
    return count / total


def clean_accuracy_and_loss(model, data, batch_size=256):
    """(accuracy, mean cross-entropy) of f in eval mode on `data`, from one forward pass:

        accuracy = (1 / N) #{i : argmax f(x_i) = y_i}
        loss     = (1 / N) sum_i -log_softmax(f(x_i))[y_i]

    The accuracy equals accuracy(model, data, batch_size=batch_size)."""
    T, _ = backend_of(model)
    correct = total = 0
    loss_sum = 0.0
    for x, y, *_ in batches(data, batch_size, model):
        z = T(logits(model, x))                                                    # (n, k)
        with no_grad():
            loss_sum += float(z.ops.cross_entropy(z, y, reduction="sum").item())
        correct, total = correct + int((z.data.argmax(axis=1) == y).sum()), total + len(y)
    return correct / total, loss_sum / total


# ---- attacks by name -----------------------------------------------------------------------------
def parse_attack(name):
    """"fgsm" | "pgd<k>" | "pgd<k>x<r>" | "apgd" | "apgd<k>" -> dict(kind, steps, restarts)."""
    match = re.fullmatch(r"(fgsm)|(pgd)(\d+)(?:x(\d+))?|(apgd)(\d+)?", name)
    if match is None:
        raise ValueError(f"unknown attack {name!r}: use fgsm, pgd<k>, pgd<k>x<r>, apgd or apgd<k>")
    if match[1]:
        return dict(kind="fgsm", steps=1, restarts=1)
    if match[2]:
        return dict(kind="pgd", steps=int(match[3]), restarts=int(match[4] or 1))
    return dict(kind="apgd", steps=int(match[6] or 100), restarts=1)


def run_attack(spec, model, x, y, eps, rng):
    """x_adv of the attack described by spec (parse_attack) at radius eps."""
    if spec["kind"] == "fgsm":
        return fgsm(model, x, y, eps)
    if spec["kind"] == "apgd":
        return apgd_ce(model, x, y, eps, spec["steps"], rng=rng)
    alpha = max(eps / 4, 2.5 * eps / spec["steps"])
    return pgd(model, x, y, eps, alpha, spec["steps"], "uniform", restarts=spec["restarts"],
               rng=rng)


# ---- evaluate ------------------------------------------------------------------------------------
def evaluate(model, data, eps=8 / 255, attacks=DEFAULT_ATTACKS, eps_curve=DEFAULT_CURVE,
             curve_attack=None, large_eps=0.5, max_large_eps_acc=0.1, batch_size=256, seed=0,
             tol=0.01, verify=(), verbose=True):
    """Clean and robust accuracy of `model` on `data` plus the sanity checks (module doc).

    data: (x, y) arrays (uint8 or [0, 1] images) or an iterable of batches (datasets.Loader).
    attacks: attack names; eps_curve: multiples of eps at which `curve_attack` (default: the
    first PGD attack, else pgd10) is run, plus large_eps; verify: bound methods of ref.certify
    ("ibp", "crown-ibp") whose verified accuracy at eps is measured too (a BN-free model).
    Returns a dict (accuracy, attacks, eps_curve, verified, checks, sanity_failed, ...) and
    prints the table when verbose.
    """
    specs = {name: parse_attack(name) for name in attacks}
    unknown = set(verify) - set(METHODS)
    if unknown:
        raise ValueError(f"verify: unknown methods {sorted(unknown)}; choose from {METHODS}")
    curve_name = curve_attack or next((a for a in attacks if specs[a]["kind"] == "pgd"), "pgd10")
    curve_spec = parse_attack(curve_name)
    curve_eps = sorted({float(m * eps) for m in eps_curve} | {float(large_eps)})
    if not eps >= 0 or min(curve_eps) < 0:
        raise ValueError(f"eps and the curve's radii must be >= 0, got eps={eps}, "
                         f"eps_curve={eps_curve}, large_eps={large_eps}")
    start = time.perf_counter()
    correct = dict.fromkeys(["clean", *specs], 0)
    curve = dict.fromkeys(curve_eps, 0)
    excess = dict.fromkeys(specs, 0.0)                  # worst violation of the ball or the box
    certified = dict.fromkeys(verify, 0)
    broken = dict.fromkeys(verify, 0)                   # verified samples an attack broke
    total = nan_grads = zero_grads = 0
    deterministic = True
    for b, (x, y, *_) in enumerate(batches(data, batch_size, model)):
        z = logits(model, x)                                                       # (n, k)
        deterministic = deterministic and bool((z == logits(model, x)).all())
        clean = z.argmax(axis=1) == y                                              # (n,)
        correct["clean"] += int(clean.sum())
        g = input_gradient(model, x, y).reshape(len(y), -1)                        # (n, chw)
        nan_grads += int((g != g).any(axis=1).sum())                               # NaN != NaN
        zero_grads += int((g == 0).all(axis=1).sum())
        robust = {}
        for name, spec in specs.items():
            x_adv = run_attack(spec, model, x, y, eps, np.random.default_rng((seed, b)))
            tol_ball = 4 * float(np.finfo(x.dtype).eps)
            excess[name] = max(excess[name], float(abs(x_adv - x).max()) - eps - tol_ball,
                               -float(x_adv.min()), float(x_adv.max()) - 1)
            robust[name, eps] = clean & (predict(model, x_adv) == y)               # (n,)
            correct[name] += int(robust[name, eps].sum())
        robust[curve_name, 0.0] = clean                # nothing moves in a ball of radius 0
        for e in curve_eps:
            if (curve_name, e) not in robust:
                x_adv = run_attack(curve_spec, model, x, y, e, np.random.default_rng((seed, b)))
                robust[curve_name, e] = clean & (predict(model, x_adv) == y)       # (n,)
            curve[e] += int(robust[curve_name, e].sum())
        for method in verify:
            proven = verified(model, x, y, eps, method)                            # (n,)
            certified[method] += int(proven.sum())
            for name in specs:
                broken[method] += int((proven & ~robust[name, eps]).sum())
        total += len(y)
    accuracy_of = {name: count / total for name, count in correct.items()}
    result = dict(
        n=total, eps=eps, seed=seed, tol=tol,
        accuracy=accuracy_of, attacks=specs,
        eps_curve=dict(attack=curve_name, eps=curve_eps, accuracy=[curve[e] / total
                                                                   for e in curve_eps]),
        gradients=dict(nan_samples=nan_grads, zero_samples=zero_grads),
        verified={method: count / total for method, count in certified.items()})
    result["checks"] = _checks(result, specs, excess, deterministic, large_eps,
                               max_large_eps_acc)
    if verify:
        result["checks"]["verified_robust"] = _check(not any(broken.values()), "; ".join(
            f"{count} samples verified by {method} fall to an attack"
            for method, count in broken.items() if count)
            or "every verified sample survives every attack")
    result["sanity_failed"] = [k for k, v in result["checks"].items() if not v["passed"]]
    result["time_s"] = time.perf_counter() - start
    if verbose:
        print(format_table(result), flush=True)
    return result


def _check(passed, detail):
    return dict(passed=bool(passed), detail=detail)


def _checks(result, specs, excess, deterministic, large_eps, max_large_eps_acc):
    acc, tol = result["accuracy"], result["tol"]
    curve = result["eps_curve"]
    rises = [(a, b, acc_a, acc_b) for a, b, acc_a, acc_b in zip(
        curve["eps"], curve["eps"][1:], curve["accuracy"], curve["accuracy"][1:])
        if acc_b > acc_a + tol]
    at_large = curve["accuracy"][curve["eps"].index(float(large_eps))]
    pgds = [name for name, spec in specs.items() if spec["kind"] == "pgd"]
    above_fgsm = [n for n in pgds if "fgsm" in acc and acc[n] > acc["fgsm"] + tol]
    helped = [(a, b) for a in pgds for b in pgds if a != b
              and specs[b]["steps"] >= specs[a]["steps"]
              and specs[b]["restarts"] >= specs[a]["restarts"] and acc[b] > acc[a] + tol]
    outside = {name: value for name, value in excess.items() if value > 0}
    grads = result["gradients"]
    return dict(
        in_ball=_check(not outside, f"worst excess over eps or [0, 1] per attack: {outside}"
                       if outside else "every x_adv within eps of x and inside [0, 1]"),
        monotone_in_eps=_check(not rises, "; ".join(
            f"acc rises from {pa:.4f} at eps {a:.4g} to {pb:.4f} at eps {b:.4g}"
            for a, b, pa, pb in rises) or "accuracy never rises with eps"),
        large_eps=_check(at_large <= max_large_eps_acc,
                         f"accuracy {at_large:.4f} at eps {large_eps} "
                         f"(at most {max_large_eps_acc} expected)"),
        pgd_vs_fgsm=_check(not above_fgsm, f"PGD above FGSM: {above_fgsm}" if above_fgsm
                           else "no PGD attack is weaker than FGSM"),
        more_iterations=_check(not helped, "; ".join(f"{b} ({acc[b]:.4f}) above {a} "
                                                     f"({acc[a]:.4f})" for a, b in helped)
                               or "more steps or restarts never raised accuracy"),
        input_gradients=_check(grads["nan_samples"] == 0 and grads["zero_samples"] == 0,
                               f"{grads['nan_samples']} samples with NaN and "
                               f"{grads['zero_samples']} with all-zero input gradients"),
        deterministic=_check(deterministic, "eval-mode predictions repeat exactly"
                             if deterministic else "eval-mode predictions differ between runs"))


def format_table(result):
    """The evaluation as text: accuracies, the accuracy-vs-eps curve and the checks."""
    lines = [f"evaluation on {result['n']} samples, eps = {result['eps']:.4f}",
             f"  {'attack':<12}{'accuracy':>10}"]
    lines += [f"  {name:<12}{value:>10.4f}" for name, value in result["accuracy"].items()]
    lines += [f"  {name:<12}{value:>10.4f}  verified"
              for name, value in result.get("verified", {}).items()]
    curve = result["eps_curve"]
    lines.append(f"  accuracy vs eps ({curve['attack']}): " + "  ".join(
        f"{e:.4g}: {a:.4f}" for e, a in zip(curve["eps"], curve["accuracy"])))
    for name, check in result["checks"].items():
        lines.append(f"  ok    {name}: {check['detail']}" if check["passed"]
                     else f"SANITY CHECK FAILED: {name}: {check['detail']}")
    return "\n".join(lines)
