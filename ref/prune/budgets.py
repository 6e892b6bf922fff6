"""Budgets: how many weights each layer keeps, and which ones by score. Pure array functions.

Notation: a layer has n weights and scores S (any shape, numpy or cupy); keep is the kept
fraction k in (0, 1]; a network has layer sizes n_1 .. n_L.

    kept_count(n, k)     = n - int((1 - k) n)        (the authors' count rule: int() of a Python
                                                      float, e.g. n = 1728, k = 0.01 keeps 18)
    topk_mask(S, k)      M = 1 at the kept_count(n, k) largest |S|, 0 elsewhere
    adaptive_keep_ratios rho_i with m_i / n_i^p constant and sum m_i = k sum n_i (RBSN, greedy)
    global_topk_masks    one ranking of |S| over all layers: the kept_count(sum n_i, k) largest

Ties (equal |S|) follow a stable ascending sort: the weights are dropped in the order of that
sort, so among equal |S| the lower flat index (over the concatenated layers for the global
ranking) is dropped first and the higher one kept. Masks have S's shape and dtype and stay on
S's backend; the threshold is found with a partition (O(n)), not a full sort.
"""
import numbers

import numpy as np

from ref.nn.module import array_module, backend
from ref.ops.mask import check_keep, kept_count  # noqa: F401 (part of this module's API)


def keep_largest(a, kept):
    """0/1 mask (a's shape and dtype) of the `kept` largest entries of a, by the array function of
    a's backend (ref.ops.keep_largest: ties keep the higher flat indices, no host sync)."""
    return backend("numpy" if array_module(a) is np else "gpu").ops.keep_largest(a, kept)


def topk_mask(scores, keep):
    """M (scores.shape, scores.dtype): 1 at the kept_count(n, keep) largest |scores|.

    Ties: among equal |scores| the lower flat index is dropped first. Scores must be finite.
    """
    xp = array_module(scores)
    a = xp.abs(scores).ravel()                                                     # (n,)
    if not bool(xp.isfinite(a).all()):
        raise ValueError("topk_mask: the scores hold NaN or inf")
    return keep_largest(a, kept_count(a.size, keep)).reshape(scores.shape)           # (S.shape)


def global_topk_masks(scores, keep):
    """{name: M}: the kept_count(N, keep) largest |S| over all layers together (N = sum of the
    sizes), one ranking and one threshold for the whole network; ties as topk_mask over the
    layers concatenated in the dict's order. A ValueError names a layer left with no weight."""
    names = list(scores)
    xp = array_module(scores[names[0]])
    a = xp.concatenate([xp.abs(scores[name]).ravel() for name in names])          # (N,)
    if not bool(xp.isfinite(a).all()):
        raise ValueError("global_topk_masks: the scores hold NaN or inf")
    flat = keep_largest(a, kept_count(a.size, keep))                                 # (N,)
    masks, start = {}, 0
    for name in names:
        S = scores[name]
        masks[name] = flat[start:start + S.size].reshape(S.shape)                 # (S.shape)
        start += S.size
    check_not_empty(masks, f"keep={keep!r} with one global ranking")
    return masks


def check_not_empty(masks, what):
    """ValueError naming every layer whose mask keeps nothing."""
    empty = [name for name, M in masks.items() if not bool(M.any())]
    if empty:
        raise ValueError(f"{what} would empty the layers {empty}")


def _check_sizes(sizes):
    if not sizes or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1
                        for n in sizes):
        raise ValueError(f"sizes must be a non-empty list of positive integers, got {sizes!r}")


def adaptive_keep_ratios(sizes, keep, p):
    """Per-layer keep ratios rho_i with m_i = rho_i n_i proportional to n_i^p and sum m_i close to
    keep * sum n_i: the greedy rule of RBSN's set_model_prune_rate (ALGORITHMS.md 2(b)), exactly.

        walk the layers by ascending size (stable: equal sizes keep their order);
        budget = int(keep sum n);  c = keep sum n / sum n^p
        for layer i in that order:  rho_i = min(1, c n_i^(p - 1));  budget -= int(rho_i n_i);
                                    c = budget / sum of n_j^p over the layers after i

    p = 1 gives keep in every layer up to the rounding of c (one weight per layer); p = 0 gives
    the same count in every layer, with small layers clipped to dense. Returns floats in the
    order of `sizes`; a layer keeps kept_count(n_i, rho_i) weights.
    """
    _check_sizes(sizes)
    keep = check_keep(keep)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    counts = [int(sizes[i]) for i in order]
    budget = int(keep * np.sum(counts))
    c = keep * np.sum(counts) / np.sum(np.power(counts, p))
    ratios = [0.0] * len(sizes)
    for position, (i, n) in enumerate(zip(order, counts)):
        rho = min(1.0, float(c * np.power(n, p - 1.0)))
        ratios[i] = rho
        budget -= int(rho * n)
        if position + 1 < len(counts):   # the reference divides by an empty sum at the end
            c = budget / np.sum(np.power(counts[position + 1:], p))
    for i, (n, rho) in enumerate(zip(sizes, ratios)):
        if n - int((1 - rho) * n) < 1:
            raise ValueError(f"keep={keep!r}, p={p!r} leaves layer {i} (size {n}) with no "
                             f"weight")
    return ratios


def uniform_keep_ratios(sizes, keep):
    """keep in every layer (HYDRA's and edge-popup's budget)."""
    _check_sizes(sizes)
    keep = check_keep(keep)
    for n in sizes:
        kept_count(n, keep)
    return [keep] * len(sizes)


BUDGETS = ("uniform", "adaptive", "global")


def layer_keep_ratios(sizes, keep, budget="uniform", p=1.0):
    """Per-layer keep ratios of a static budget: "uniform" (uniform_keep_ratios) or "adaptive"
    (adaptive_keep_ratios(sizes, keep, p))."""
    if budget == "uniform":
        return uniform_keep_ratios(sizes, keep)
    if budget == "adaptive":
        return adaptive_keep_ratios(sizes, keep, p)
    raise ValueError(f"a per-layer budget must be 'uniform' or 'adaptive', got {budget!r}")


def layer_masks(scores, keep, budget="uniform", p=1.0):
    """{name: M} from {name: S} under a budget: "uniform" or "adaptive" (topk_mask of each layer
    with its layer_keep_ratios) or "global" (global_topk_masks)."""
    if budget == "global":
        return global_topk_masks(scores, keep)
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    ratios = layer_keep_ratios([int(S.size) for S in scores.values()], keep, budget, p)
    return {name: topk_mask(S, rho) for (name, S), rho in zip(scores.items(), ratios)}
