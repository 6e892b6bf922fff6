"""The adversarial lottery ticket (iterative magnitude pruning with rewinding) and inverse weights
inheritance (IWI), as pure steps; examples/cifar_lottery.py drives them with ref.train.fit.

Notation: theta_0 the initial state of the network (every parameter and buffer), W_r the
weights after the adversarial training of round r, M_r its masks (M_0 = 1), rate the fraction
of the remaining weights each round removes, R the number of rounds.

Ticket search [code: rethinking-network-pruning lottery-ticket/weight-level, ALGORITHMS.md 5(b);
adversarial training in place of clean training: paper]:
    for r = 0 .. R - 1:  train (adversarially, masks M_r fixed) -> W_r
                         M_{r+1} = prune_remaining(W_r * M_r, rate)
                         rewind: load theta_0 (BN included), apply M_{r+1}
    the ticket is (theta_0, M_R); training it is round R. Sparsity after r rounds: about
    1 - (1 - rate)^r (round_sparsities).
    prune_remaining: a = all |W * M| sorted ascending (zeros first), N weights, Z of them zero;
                     t = a[Z + int((N - Z) rate)],  M' = [|W * M| > t]       (one global ranking)
IWI [paper; details inferred, ALGORITHMS.md 5(b)]: the dense network inherits the trained
ticket's weights W_t at the kept positions and `fill` elsewhere,
    W_dense = M * W_t + (1 - M) * F,   F = 0 ("zero") or theta_0's weight ("init"),
every other entry of the state (BN, biases) from the ticket, and is then trained adversarially
with no mask.
"""
from ref.nn.module import array_module
from ref.prune.budgets import check_not_empty
from ref.prune.magnitude import threshold_masks
from ref.prune.masks import MASK, apply_masks, remove_masks


def check_rate(rate):
    if isinstance(rate, bool) or not 0 < rate < 1:
        raise ValueError(f"rate must be a fraction in (0, 1), got {rate!r}")
    return float(rate)


def prune_remaining(weights, rate):
    """{name: M'}: remove the fraction `rate` of the nonzero weights of `weights` ({name: W * M})
    with one global threshold t = a[Z + int((N - Z) rate)] (zeros stay pruned)."""
    rate = check_rate(rate)
    xp = array_module(next(iter(weights.values())))
    total = sum(int(W.size) for W in weights.values())
    nonzero = sum(int(xp.count_nonzero(W)) for W in weights.values())
    masks = threshold_masks(weights, total - nonzero + int(nonzero * rate))
    check_not_empty(masks, f"pruning {rate!r} of the remaining weights")
    return masks


def round_sparsities(rate, rounds):
    """Nominal sparsity after each of the rounds 0 .. rounds: 1 - (1 - rate)^r."""
    rate = check_rate(rate)
    return [1 - (1 - rate) ** r for r in range(rounds + 1)]


def rewind(model, initial_state, masks):
    """Load theta_0 (every parameter and buffer, BN statistics included, as the reference does)
    and attach `masks`, which zeroes the pruned weights: the surviving weights are theta_0's."""
    remove_masks(model)
    model.load_state_dict(initial_state)
    apply_masks(model, masks)


def inherited_state(ticket_state, masks, initial_state=None, fill="zero"):
    """IWI: the dense network's state. Weights W = M * W_t + (1 - M) * F with F = 0 (fill
    "zero") or initial_state's weight (fill "init"); every other entry from the ticket, except
    the masks (`*.weight_mask` buffers), which the dense network does not have."""
    if fill not in ("zero", "init"):
        raise ValueError(f"fill must be 'zero' or 'init', got {fill!r}")
    if fill == "init" and initial_state is None:
        raise ValueError("fill='init' needs initial_state (theta_0)")
    state = {}
    for name, value in ticket_state.items():
        if name.endswith("." + MASK):
            continue
        if name in masks:
            M = masks[name]
            F = 0 if fill == "zero" else initial_state[name]
            value = M * value + (1 - M) * F                                        # (W.shape)
        state[name] = value
    return state
