"""One-shot magnitude pruning: GUP (one global threshold) and LUP (a threshold per layer).

Notation: `weights` a dict {name: W} (numpy or cupy arrays), keep the kept fraction k in (0, 1],
N the number of weights considered (all layers for GUP, one layer for LUP), a = the N values
|W| sorted ascending. The rule is that of rethinking-network-pruning's cifar_prune.py
(ALGORITHMS.md 5(b), 7.5.1):

    t = a[int(N (1 - k))],    M = [|W| > t]      (strict: every weight equal to t is pruned)

so at least the fraction 1 - k is pruned, more when values tie at t (zeros always go), and keep
= 1 prunes the smallest |W| (and its ties) too. Masks have W's shape and dtype. A threshold that
would leave a layer without any weight is refused with a ValueError naming the layers.

The one-shot method is then: masks = gup_masks(weights(model), keep); apply_masks(model, masks);
adversarial fine-tuning with mask_optimizer (ref.prune.masks), which keeps the masks fixed.
"""
from ref.nn.module import array_module
from ref.prune.budgets import check_keep, check_not_empty


def threshold_masks(weights, index):
    """{name: [|W| > t]} with t the index-th smallest of all |W| together (0-based)."""
    xp = array_module(next(iter(weights.values())))
    a = xp.concatenate([xp.abs(W).ravel() for W in weights.values()])             # (N,)
    t = xp.partition(a, index)[index]                                             # 0-d
    return {name: (xp.abs(W) > t).astype(W.dtype) for name, W in weights.items()}  # (W.shape)


def gup_masks(weights, keep):
    """GUP: one threshold t = sorted(all |W|)[int(N (1 - keep))] over every layer; M = |W| > t."""
    keep = check_keep(keep)
    total = sum(int(W.size) for W in weights.values())
    masks = threshold_masks(weights, int(total * (1 - keep)))
    check_not_empty(masks, f"GUP at keep={keep!r}")
    return masks


def lup_masks(weights, keep):
    """LUP: in each layer t = sorted(|W|)[int(n (1 - keep))] over its n weights; M = |W| > t."""
    keep = check_keep(keep)
    masks = {}
    for name, W in weights.items():
        masks.update(threshold_masks({name: W}, int(W.size * (1 - keep))))
    check_not_empty(masks, f"LUP at keep={keep!r}")
    return masks
