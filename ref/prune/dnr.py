"""DNR, dynamic network rewiring (Kundu, Nazemi, Beerel, Pedram, ASP-DAC 2021): a sparse network
trained from scratch in one run at a fixed density, rewired at every epoch boundary by magnitude
pruning and momentum-guided regrowth (ALGORITHMS.md 3 and 7.3).

DNR's training code is not public. Its rewiring is that of the sparse-momentum library it builds
on (TimDettmers/sparse_learning, sparselearning/core.py and funcs.py) and is tagged [code]; what
the paper adds is tagged [paper] (unverifiable in code); our own choices are tagged [inferred].

Notation: layers l = 1 .. L (the prunable Conv2d / Linear weights), W_l its weight (o, c, kh, kw)
or (o, c) with n_l entries, M_l its 0/1 mask, B_l the optimizer's momentum of W_l (SGD's
momentum_buffer; for Adam m1 / (sqrt(m2) + 1e-8) [code]), d the density, p_t the prune rate after
t iterations, T = epochs * iterations_per_epoch, A the growth adjustment.
A *unit* is what is pruned and grown: one weight (variant "irregular") or one output channel
W_l[j] (variant "channel" [paper]). Unit magnitudes: |W| and |B|, or the channel Frobenius norms
||W_l[j]||_F and ||B_l[j]||_F over (c, kh, kw) [paper; the axes inferred]. nnz_l = active units,
u_l = units of the layer, d_l the initial density of layer l, the budget
N* = sum_l kept_count(u_l, d_l) active units.

Training, one iteration [code unless tagged]:
    loss = beta CE(f(x), y) + (1 - beta) CE(f(x'), y)            (ref.objectives.DNRHybrid [paper])
           + rho / 2 sum_l ||W_l - z_l||^2                        (the dynamic L2 term [paper])
    backward: every weight gets its gradient, the inactive ones too, so B accumulates there
    optimizer step;  W_l <- W_l * M_l  (inactive weights exactly 0 again, B untouched);  t += 1
Warm-up: the first `warmup` epochs train the clean objective and are not followed by a rewiring
[paper; count unverified]. At the start of every epoch after the first non-warm-up one the masks
are rewired (the reference does it at the end of each epoch but the last, after its checkpoint,
which is the same sequence), and at the start of every epoch the anchors are refreshed:
z_l = W_l * M_l [paper: z refreshed once per epoch; z = W * M inferred, ALGORITHMS.md 3(b)(ii)].
As W is re-masked after every step, z is the weights of the epoch's start: the term pulls the
active weights towards them and the weights regrown at that start towards 0; at inactive
positions W = z = 0, so it adds nothing to the momentum that regrowth reads.

One rewiring (`rewire`), at prune rate p = p_t:
 1. shares   v_l = mean |B_l| over M_l = 1;  v_l <- v_l / sum of the v that are not NaN  [code]
             (a layer without active weight has v_l = NaN, left out of the sum; if the sum is 0
             the v stay as they are [code])
 2. rates    p_l = p, but min(s_l, p) when s_l = 1 - nnz_l / u_l < 0.2 and v_l > 1 / L  [code]
 3. prune    remove k_l = ceil(p_l nnz_l) active units of smallest magnitude  [code]; at most
             nnz_l - 1, so no layer is emptied [inferred: the reference can empty a layer and
             then fails on math.ceil(NaN) at the next rewiring]
 4. counts   r_l = ceil(v_l (sum_l k_l + A)), capped at 0.99 (u_l - nnz_l + k_l); the capped
             excess is spread equally over all layers in further passes (floats)  [code]
 5. budget   g_l: the G = N* - sum_l (nnz_l - k_l) units that bring the network back to its
             budget, apportioned in proportion to r_l (largest remainders), at most the layer's
             inactive units with nonzero momentum [inferred: the reference grows floor(r_l),
             which misses N* by up to L units and by its caps, and asks layers for units they
             cannot grow; DNR's constraint sum_l ||W_l||_0 = d sum_l n_l is exact]
 6. grow     g_l inactive units of layer l with the largest nonzero momentum magnitude  [code]
 7. W_l <- W_l * M_l  (a unit pruned in 3 and grown back in 6 keeps its weight, newly grown
             weights are 0 [code]);  B is not reset [code];
    A <- 0.25 A + 0.75 (N* - nnz) + mean over all rewirings so far of (N* - nnz)  [code]
Under-shoot: growth never activates a unit with zero momentum magnitude (in the reference these
tie with the active units, whose magnitude is 0 in step 6's ranking, and are grown or not in the
order of an unstable sort), so a rewiring ends with N* active units unless the whole network has
fewer than G inactive units with nonzero momentum (cf. issue #22 of sparse_learning); the next
rewiring's G makes up for it. An output channel without active weight followed by BatchNorm and
ReLU outputs beta; with beta <= 0 (beta starts at 0) it gets exactly zero gradient (relu'(0) = 0),
momentum included: in conv-BN-ReLU networks such channels cannot regrow, which holds the channel
variant to the channels it pruned itself and empties the growable part of a sparse first conv.
Ties between equal magnitudes: the lower flat index is pruned first and the higher one grown
first (keep_largest's rule).

Prune-rate decay, stepped every iteration [code]: cosine
p_t = eta_min + (p_0 - eta_min) (1 + cos(pi t / T)) / 2 (eta_min = 0.005; the closed form of
torch's CosineAnnealingLR, which the reference steps recursively: equal up to rounding) or linear
p_t = p_0 (1 - t / T) (the reference subtracts p_0 / T each step).
Initial masks: layer densities d_l = d ("uniform", the reference's default [code]) or Erdos-Renyi
d_l proportional to sum(shape_l) / prod(shape_l) ("erdos_renyi" [code], the budget kept exactly
[inferred]); kept_count(u_l, d_l) units of every layer drawn uniformly without replacement
("exact" [inferred]) or the reference's i.i.d. Bernoulli(d_l) draw per unit ("bernoulli" [code]).
Layers: every Conv2d and Linear weight [code]; the example's channel variant prunes the convs
only [inferred].

The masks live in each layer as the buffer `rewiring_mask` (saved in checkpoints) and NOT as
`weight_mask`: that one's forward op (ref.ops.masked_weight) masks the gradient, which would starve
the momentum that regrowth reads. On the GPU a rewiring reads the device twice in all (the
statistics; the growable units after the prune), whatever the number of layers; no tensor is
sorted twice within a step, so it needs no kernel of its own.

    rewiring = DNR(model, optimizer, density=0.1, epochs=E, iterations_per_epoch=len(loader),
                   lr_schedule=schedule, warmup=1, rho=1e-4, rng=0)
    train.fit(model, rewiring.objective(objectives.get("dnr", beta=0.5), objectives.get(
              "natural")), rewiring.optimizer, rewiring, loader, E, out_dir=...)
"""
import math
import numbers
import warnings

import numpy as np

import ref
from ref import objectives
from ref.nn.module import array_module
from ref.nn.subnet import SubnetLayer
from ref.optim.optimizers import SGD, Adam
from ref.prune.budgets import check_keep, kept_count, keep_largest
from ref.prune.masks import MASK, expand_channel_mask, prunable_layers

REWIRING_MASK = "rewiring_mask"   # the buffer name of a layer's DNR mask
VARIANTS = ("irregular", "channel")
DECAYS = ("cosine", "linear")
INITS = ("exact", "bernoulli")
DISTRIBUTIONS = ("uniform", "erdos_renyi")
CAP = 0.99              # a layer regrows at most this fraction of its free units [code]
DENSE_SPARSITY = 0.2    # adjust_prune_rate's "relatively dense" layer [code]
MAX_PASSES = 1000       # residual passes of the growth redistribution [code]


# ---- checks --------------------------------------------------------------------------------------
def check_density(density):
    """density as a float in (0, 1], else a ValueError naming the value."""
    return check_keep(density, "density")


def check_prune_rate(rate, name="prune_rate"):
    """rate as a float in [0, 1), else a ValueError naming the value."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
        raise ValueError(f"{name} must be a fraction in [0, 1), got {rate!r}")
    return float(rate)


def check_rho(rho):
    """rho as a finite float >= 0, else a ValueError naming the value."""
    if (isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not math.isfinite(rho)
            or rho < 0):
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")
    return float(rho)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


# ---- units: one weight, or one output channel ---------------------------------------------------
def unit_size(shape, variant):
    """Weights per unit: 1 (irregular) or c kh kw (channel)."""
    _check_choice("variant", variant, VARIANTS)
    return 1 if variant == "irregular" else math.prod(shape[1:])


def unit_magnitudes(A, variant):
    """|A| (A's shape) or the Frobenius norm of every output channel, ||A[j]||_F (o,)."""
    _check_choice("variant", variant, VARIANTS)
    xp = array_module(A)
    if variant == "irregular":
        return xp.abs(A)                                                         # (A.shape)
    return xp.sqrt((A * A).reshape(A.shape[0], -1).sum(axis=1))                # (o,)


def unit_mask(M, variant):
    """The mask of the units: M itself, or m[j] = M[j, 0, ..] for whole-channel masks (o,)."""
    return M if variant == "irregular" else M.reshape(M.shape[0], -1)[:, 0]   # (o,)


def weight_mask(m, shape, variant):
    """The weight mask of `shape` from a unit mask (expand_channel_mask for channels)."""
    return m if variant == "irregular" else expand_channel_mask(m, shape, 0)  # (shape)


def _count_active(M):
    """sum(M != 0) as a Python int (reads the device)."""
    return int(ref.asarray((M != 0).sum()))


def _counts_per_layer(masks):
    """{name: sum(M != 0)} as Python ints, from one device read for all layers."""
    xp = array_module(next(iter(masks.values())))
    counts = ref.asarray(xp.stack([(M != 0).sum() for M in masks.values()]))     # (L,)
    return dict(zip(masks, counts.tolist()))


# ---- the pure steps ------------------------------------------------------------------------------
def prune_count(nonzeros, rate):
    """k = ceil(rate * nonzeros): how many active units a prune rate removes [code]."""
    return math.ceil(rate * nonzeros)


def remove_smallest(W, M, count, nonzeros=None):
    """M with the `count` active entries of smallest |W| set to 0 (M's shape and dtype); inactive
    entries never compete, even where W is 0 at an active one. Ties: the lower flat index goes
    first. `nonzeros` (sum M, if the caller knows it) spares a device read."""
    count = _check_count("count", count)
    nonzeros = _count_active(M) if nonzeros is None else nonzeros
    if count > nonzeros:
        raise ValueError(f"cannot remove {count} of {nonzeros} active entries")
    xp = array_module(M)
    if count == nonzeros:
        return xp.zeros_like(M)
    ranked = xp.where(M != 0, xp.abs(W), -1)            # inactive entries rank last  (M.shape)
    return keep_largest(ranked, nonzeros - count).astype(M.dtype)                  # (M.shape)


def magnitude_prune(W, M, rate):
    """M with the ceil(rate * sum M) active weights of smallest |W| removed, nothing else changed
    (sparse_learning's magnitude_prune [code]; W, M any shape, numpy or cupy). When nothing is
    to be removed the reference returns W != 0, which would also drop an active weight that is
    exactly 0; M is returned unchanged here [inferred]."""
    rate = check_prune_rate(rate, "rate")
    nonzeros = _count_active(M)
    return remove_smallest(W, M, prune_count(nonzeros, rate), nonzeros)


def momentum_statistics(momenta, masks):
    """(shares, nonzeros): shares {name: v_l}, v_l = mean |B_l| over M_l = 1 divided by the sum
    of the v that are not NaN (a layer without active weight: NaN, left out; a zero sum leaves
    the v as they are) [code: gather_statistics, momentum_redistribution]; nonzeros {name:
    sum M_l} in weights. One device read for all layers."""
    names = list(masks)
    xp = array_module(masks[names[0]])
    rows = [xp.stack([(masks[name] != 0).sum().astype(xp.float64),
                      (xp.abs(momenta[name]) * masks[name]).sum().astype(xp.float64)])
            for name in names]                                                     # L x (2,)
    sums = ref.asarray(xp.stack(rows)).tolist()                                    # (L, 2)
    nonzeros = {name: int(n) for name, (n, _) in zip(names, sums)}
    means = {name: total / n if n else math.nan for name, (n, total) in zip(names, sums)}
    norm = sum(v for v in means.values() if not math.isnan(v))
    shares = {name: v / norm if norm != 0 else v for name, v in means.items()}
    return shares, nonzeros


def prune_rates(rate, shares, sparsities):
    """{name: p_l}: p_l = rate, but min(s_l, rate) for a relatively dense layer that is growing,
    s_l < 0.2 and v_l > 1 / L [code: adjust_prune_rate]. sparsities {name: s_l} before the prune."""
    expected = 1 / len(shares)
    return {name: min(sparsities[name], rate)
            if sparsities[name] < DENSE_SPARSITY and shares[name] > expected else rate
            for name in shares}


def regrowth_counts(shares, capacities, total):
    """{name: r_l}, floats: how many units each layer regrows [code: calc_growth_redistribution].

        pass 1:  r_l = ceil(v_l * total)                (total = units removed + adjustment)
        every pass:  r_l += mean_residual (0 in pass 1);  if r_l > 0.99 capacity_l:
                     the excess r_l - 0.99 capacity_l joins the residual, r_l = 0.99 capacity_l
                     mean_residual = residual / L;   repeat while residual > 0 (<= 1000 passes)

    capacities {name: free units after the prune} (the reference's zeros + ceil(p_l nnz_l)).
    A NaN share counts as 0 [inferred: the reference fails on math.ceil(NaN)]. The caller grows
    floor(r_l) units. Rounding can keep a residual below one unit alive for all 1000 passes (a
    capped value plus a share of about one ulp rounds up by a whole ulp); the reference then
    prints an error, here only a residual of a unit or more gives a warning (layers too full)."""
    counts, mean_residual, residual, passes = {}, 0.0, math.inf, 0
    while residual > 0 and passes < MAX_PASSES:
        residual = 0.0
        for name, share in shares.items():
            if name in counts:
                wanted = counts[name]
            else:
                wanted = math.ceil((0.0 if math.isnan(share) else share) * total)
            wanted += mean_residual
            cap = CAP * capacities[name]
            if wanted > cap:
                counts[name] = cap
                residual += wanted - cap
            else:
                counts[name] = wanted
        mean_residual = residual / len(counts)
        passes += 1
    if residual >= 1:
        warnings.warn(f"regrowth_counts: {residual} units left after {MAX_PASSES} passes; the "
                      f"layers are nearly full", stacklevel=2)
    return counts


def momentum_regrow(M, momentum, n):
    """M with the n inactive entries of largest |momentum| set to 1 [code: momentum_growth].
    Entries with zero momentum are never grown, so fewer than n grow when fewer inactive entries
    have nonzero momentum (the under-shoot). Ties: the higher flat index grows first."""
    n = _check_count("n", n)
    xp = array_module(M)
    if n == 0:
        return M.copy()
    G = xp.where(M != 0, 0, xp.abs(momentum))                                    # (M.shape)
    grown = keep_largest(G, min(n, G.size)) * (G > 0)                              # (M.shape)
    return xp.maximum(M, grown.astype(M.dtype))                                    # (M.shape)


def budget_counts(wanted, free, total):
    """{name: g_l}, integers summing to min(total, sum free) (step 5 [inferred]): the quotas
    q_l = total * r_l / sum r (wanted {name: r_l}, regrowth_counts' floats, negative ones as 0)
    floored and capped at free {name: units the layer can grow}; the units left go one at a
    time, in passes, to the layers below their cap with the largest remainder q_l - g_l (ties:
    the earlier layer). total <= 0 grows nothing."""
    total = max(0, total)
    wanted = {name: max(0.0, r) for name, r in wanted.items()}   # r_l < 0 when A < -removed
    norm = sum(wanted.values())
    quota = {name: total * r / norm if norm > 0 else 0.0 for name, r in wanted.items()}
    counts = {name: min(math.floor(q), free[name]) for name, q in quota.items()}
    while sum(counts.values()) < total:
        room = [name for name in counts if counts[name] < free[name]]
        if not room:
            break
        room.sort(key=lambda name: counts[name] - quota[name])   # stable: earlier layer first
        for name in room[:total - sum(counts.values())]:
            counts[name] += 1
    return counts


def growth_adjustment(adjustment, history, target, nonzeros):
    """(A', history'): history' = history + [target - nonzeros],
    A' = 0.25 A + 0.75 (target - nonzeros) + mean(history')  [code: truncate_weights]."""
    history = list(history) + [target - nonzeros]
    return 0.25 * adjustment + 0.75 * (target - nonzeros) + float(np.mean(history)), history


def prune_rate_at(step, initial, total_steps, decay="cosine", eta_min=0.005):
    """p_t after `step` iterations of `total_steps` (0 <= step <= total_steps): cosine
    eta_min + (initial - eta_min) (1 + cos(pi t / T)) / 2, or linear initial (1 - t / T) [code]."""
    _check_choice("decay", decay, DECAYS)
    if not 0 <= step <= total_steps:
        raise ValueError(f"step must be in [0, {total_steps}], got {step!r}")
    if decay == "linear":
        return initial * (1 - step / total_steps)
    return eta_min + (initial - eta_min) * (1 + math.cos(math.pi * step / total_steps)) / 2


def layer_densities(shapes, density, distribution="uniform"):
    """[d_l], the initial density of every layer (shapes: the weights' shapes):
    "uniform"      d_l = density (the reference's 'constant' init [code]);
    "erdos_renyi"  d_l = min(1, eps sum(shape_l) / prod(shape_l)) (the reference's 'linear' init,
                   SET's Erdos-Renyi rule [code]), eps with sum_l d_l n_l = density sum_l n_l.
                   The reference searches eps to within 5 weights and leaves a layer with d_l > 1
                   dense, short of the budget; here eps is solved exactly and a layer clipped at 1
                   hands its excess to the others (eps solved again over them) [inferred; RigL's
                   ERK, which sparse_learning's issue #20 suggests]."""
    density = check_density(density)
    _check_choice("distribution", distribution, DISTRIBUTIONS)
    if distribution == "uniform":
        return [density] * len(shapes)
    sizes = [math.prod(shape) for shape in shapes]
    dense = set()
    while len(dense) < len(shapes):
        free = [i for i in range(len(shapes)) if i not in dense]
        eps = ((density * sum(sizes) - sum(sizes[i] for i in dense))
               / sum(sum(shapes[i]) for i in free))
        over = {i for i in free if eps * sum(shapes[i]) > sizes[i]}
        if not over:
            break
        dense |= over
    return [1.0 if i in dense else eps * sum(shape) / size
            for i, (shape, size) in enumerate(zip(shapes, sizes))]


def unit_counts(weights, density, variant="irregular", distribution="uniform"):
    """{name: kept_count(u_l, d_l)}: the active units of each layer at the start (d_l from
    layer_densities); their sum N* is the budget every rewiring aims at."""
    densities = layer_densities([W.shape for W in weights.values()], density, distribution)
    return {name: kept_count(W.size // unit_size(W.shape, variant), d)
            for (name, W), d in zip(weights.items(), densities)}


def budget(weights, density, variant="irregular", distribution="uniform"):
    """N* = sum of unit_counts(...): the active units every rewiring aims at."""
    return sum(unit_counts(weights, density, variant, distribution).values())


def initial_masks(weights, density, rng=None, variant="irregular", init="exact",
                  distribution="uniform"):
    """{name: M} (W's shape, dtype and backend): in every layer unit_counts(...) units drawn
    uniformly without replacement ("exact" [inferred]) or each unit active with probability d_l
    ("bernoulli" [code]); units are weights or output channels (variant), d_l from
    layer_densities(distribution). rng: a numpy Generator or seed. A ValueError names a layer
    that a Bernoulli draw left empty."""
    _check_choice("init", init, INITS)
    rng = np.random.default_rng(rng)
    counts = unit_counts(weights, density, variant, distribution)
    densities = layer_densities([W.shape for W in weights.values()], density, distribution)
    masks = {}
    for (name, W), d in zip(weights.items(), densities):
        units = W.size // unit_size(W.shape, variant)
        if init == "exact":
            active = np.zeros(units)                                                 # (u,)
            active[rng.permutation(units)[:counts[name]]] = 1
        else:
            active = (rng.random(units) < d).astype(np.float64)                      # (u,)
        if not active.any():
            raise ValueError(f"the Bernoulli draw at density {d} left layer {name} "
                             f"({units} units) empty; use init='exact' or another seed")
        unit_shape = W.shape if variant == "irregular" else (W.shape[0],)
        m = array_module(W).asarray(active.reshape(unit_shape), dtype=W.dtype)
        masks[name] = weight_mask(m, W.shape, variant)                               # (W.shape)
    return masks


def rewire(weights, masks, momenta, prune_rate, target, adjustment=0.0, variant="irregular"):
    """One rewiring, steps 1-6 of the module docstring, on {name: W}, {name: M} (weight-shaped,
    whole channels for the channel variant) and {name: B}; returns (new masks {name: M'} of W's
    shape, dtype and backend, report). The report (host numbers) has prune_rate, target,
    adjustment, and per layer shares, rates, nonzeros_before, pruned (k_l), wanted (r_l),
    regrown (g_l: units active after that were inactive after the prune), nonzeros (after), then
    total and under-shoot."""
    prune_rate = check_prune_rate(prune_rate)
    names = list(weights)
    shares, active = momentum_statistics(momenta, masks)                 # device read 1
    size = {name: unit_size(weights[name].shape, variant) for name in names}
    units = {name: weights[name].size // size[name] for name in names}
    before = {name: active[name] // size[name] for name in names}
    empty = [name for name in names if before[name] == 0]
    if empty:
        raise ValueError(f"rewire: the layers {empty} have no active unit")
    rates = prune_rates(prune_rate, shares, {name: 1 - before[name] / units[name]
                                             for name in names})
    pruned_count = {name: min(prune_count(before[name], rates[name]), before[name] - 1)
                    for name in names}
    pruned = {name: remove_smallest(unit_magnitudes(weights[name], variant),
                                    unit_mask(masks[name], variant), pruned_count[name],
                                    before[name]) for name in names}
    wanted = regrowth_counts(shares, {name: units[name] - before[name] + pruned_count[name]
                                      for name in names},
                             sum(pruned_count.values()) + adjustment)
    momentum_units = {name: unit_magnitudes(momenta[name], variant) for name in names}
    growable = _counts_per_layer({name: (pruned[name] == 0) & (momentum_units[name] != 0)
                                  for name in names})                    # device read 2
    grow = budget_counts(wanted, growable, target - sum(before.values())
                         + sum(pruned_count.values()))
    grown = {name: momentum_regrow(pruned[name], momentum_units[name], grow[name])
             for name in names}
    after = {name: before[name] - pruned_count[name] + grow[name] for name in names}
    new_masks = {name: weight_mask(grown[name], weights[name].shape, variant)
                 for name in names}
    total = sum(after.values())
    report = dict(prune_rate=prune_rate, target=target, adjustment=adjustment, shares=shares,
                  rates=rates, nonzeros_before=before, pruned=pruned_count, wanted=wanted,
                  regrown=grow, nonzeros=after, total=total, undershoot=max(0, target - total))
    return new_masks, report


def l2_penalty(weights, anchors, rho):
    """rho / 2 sum_l ||W_l - z_l||^2 as a scalar Tensor (weights: Tensors, anchors: arrays of
    their shapes), the dynamic L2 term [paper]; its gradient is rho (W_l - z_l)."""
    total = None
    for W, z in zip(weights, anchors):
        difference = W - z                                                         # (W.shape)
        term = (difference * difference).sum()
        total = term if total is None else total + term
    return total * (rho / 2)


def momentum_of(optimizer, index):
    """B of optimizer.params[index]: SGD's momentum_buffer, Adam's m1 / (sqrt(m2) + 1e-8)
    [code: get_momentum_for_weight], zeros before its first update."""
    state, p = optimizer.state[index], optimizer.params[index]
    if "momentum_buffer" in state:
        return state["momentum_buffer"]
    if "exp_avg" in state:
        return state["exp_avg"] / (p.xp.sqrt(state["exp_avg_sq"]) + 1e-8)          # (p.shape)
    return p.xp.zeros_like(p.data)                                                 # (p.shape)


def remove_rewiring_masks(model):
    """Drop every layer's rewiring mask (the weights are already 0 where it was 0): a plain dense
    model, e.g. for final.h5. Returns the model."""
    for layer in model.modules():
        if layer._buffers.pop(REWIRING_MASK, None) is not None:
            object.__delattr__(layer, REWIRING_MASK)
    return model


# ---- the driver ----------------------------------------------------------------------------------
class DNR:
    """DNR training state, and the schedule that ref.train.fit calls: DNR(...)(epoch) is the lr
    (of lr_schedule, or the optimizer's when None), end_epoch(record) adds the epoch's rewiring
    and densities to fit's record, state_dict() / load_state_dict() make resume bit-exact (the
    masks are buffers of the model, the momenta the optimizer's state). Train with
    fit(model, dnr.objective(robust, clean), dnr.optimizer, dnr, ...): dnr.optimizer re-masks
    the weights after every step, dnr.objective adds the dynamic L2 term and carries out the
    epoch's start (rewiring when due, anchors z = W * M) before the epoch's first loss.

    The masks are created here (initial_masks with `init`, `distribution` and `rng`) on
    prunable_layers(model, **selection) and the masked weights zeroed. The optimizer must update
    those weights and have a momentum (SGD with momentum > 0, or Adam)."""

    def __init__(self, model, optimizer, density, epochs, iterations_per_epoch, *,
                 variant="irregular", prune_rate=0.5, decay="cosine", eta_min=0.005, warmup=0,
                 rho=0.0, init="exact", distribution="uniform", lr_schedule=None, rng=None,
                 **selection):
        self.density = check_density(density)
        self.initial_rate = check_prune_rate(prune_rate)
        self.rho = check_rho(rho)
        _check_choice("variant", variant, VARIANTS)
        _check_choice("decay", decay, DECAYS)
        for name, value in (("epochs", epochs), ("iterations_per_epoch", iterations_per_epoch)):
            if _check_count(name, value) == 0:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        if _check_count("warmup", warmup) >= epochs:
            raise ValueError(f"warmup must be below epochs={epochs}, got {warmup!r}")
        if not ((isinstance(optimizer, SGD) and optimizer.momentum > 0)
                or isinstance(optimizer, Adam)):
            raise ValueError(f"DNR grows by momentum: use SGD with momentum > 0 or Adam, got "
                             f"{optimizer!r}")
        self.eta_min = check_prune_rate(eta_min, "eta_min")
        self.variant, self.decay, self.warmup = variant, decay, warmup
        self.epochs, self.total_steps = epochs, epochs * iterations_per_epoch
        self.lr_schedule = lr_schedule
        self.layers = prunable_layers(model, **selection)
        index = {id(p): i for i, p in enumerate(optimizer.params)}
        for name, layer in self.layers.items():
            if isinstance(layer, SubnetLayer) or layer._buffers.get(MASK) is not None:
                raise ValueError(f"{name}: DNR needs a plain layer (its forward must not mask the "
                                 f"gradient); remove its weight_mask or subnet form first")
            if id(layer.weight) not in index:
                raise ValueError(f"the optimizer does not update {name}")
        self.param_index = {name: index[id(layer.weight)] for name, layer in self.layers.items()}
        weights = self.weights()
        self.target = budget(weights, self.density, variant, distribution)
        for name, M in initial_masks(weights, self.density, rng, variant, init,
                                     distribution).items():
            layer = self.layers[name]
            layer.register_buffer(REWIRING_MASK, type(layer.weight)(M))
        self.remask()
        self.optimizer = RemaskingOptimizer(optimizer, self)
        self.steps, self.epochs_done, self.adjustment, self.adjustments = 0, 0, 0.0, []
        self.epoch_started, self.anchors, self.last_rewiring = False, None, None

    # ---- arrays -----------------------------------------------------------------------------
    def weights(self):
        """{name: W_l}"""
        return {name: layer.weight.data for name, layer in self.layers.items()}

    def masks(self):
        """{name: M_l} (the rewiring_mask buffers)"""
        return {name: getattr(layer, REWIRING_MASK).data for name, layer in self.layers.items()}

    def momenta(self):
        """{name: B_l} (momentum_of the wrapped optimizer)"""
        inner = self.optimizer.optimizer
        return {name: momentum_of(inner, i) for name, i in self.param_index.items()}

    def remask(self):
        """W_l <- W_l * M_l in every layer (the momentum untouched)."""
        for layer in self.layers.values():
            layer.weight.data *= getattr(layer, REWIRING_MASK).data

    # ---- the schedule fit calls ------------------------------------------------------------------
    def __call__(self, epoch):
        return self.optimizer.lr if self.lr_schedule is None else self.lr_schedule(epoch)

    def prune_rate(self):
        """p_t at the current iteration."""
        return prune_rate_at(min(self.steps, self.total_steps), self.initial_rate,
                             self.total_steps, self.decay, self.eta_min)

    def in_warmup(self):
        """Whether the current epoch is a warm-up one (clean objective)."""
        return self.epochs_done < self.warmup

    def start_epoch(self):
        """Once per epoch, before its first loss: rewire when a non-warm-up epoch has ended
        (warmup < epochs done), then refresh the anchors z_l = W_l * M_l."""
        if self.epoch_started:
            return
        if self.epochs_done > self.warmup:
            self.rewire_now()
        self.anchors = [layer.weight.data * getattr(layer, REWIRING_MASK).data   # (W.shape)
                        for layer in self.layers.values()]
        self.epoch_started = True

    def rewire_now(self):
        """Rewire the masks (module docstring, steps 1-7) and keep the report."""
        new_masks, report = rewire(self.weights(), self.masks(), self.momenta(),
                                   self.prune_rate(), self.target, self.adjustment, self.variant)
        for name, M in new_masks.items():
            getattr(self.layers[name], REWIRING_MASK).data = M
        self.remask()
        self.adjustment, self.adjustments = growth_adjustment(
            self.adjustment, self.adjustments, self.target, report["total"])
        self.last_rewiring = report

    def after_step(self):
        """After every optimizer step: W_l <- W_l * M_l, one more iteration of the decay."""
        self.remask()
        self.steps += 1

    def penalty(self):
        """rho / 2 sum_l ||W_l - z_l||^2 (a Tensor), None when rho = 0."""
        if self.rho == 0:
            return None
        return l2_penalty([layer.weight for layer in self.layers.values()], self.anchors,
                          self.rho)

    def active_counts(self):
        """{name: (active weights, output channels with an active weight)}, one device read."""
        masks = self.masks()
        xp = array_module(next(iter(masks.values())))
        rows = [xp.stack([(M != 0).sum(), (M.reshape(M.shape[0], -1) != 0).any(axis=1).sum()])
                for M in masks.values()]
        return dict(zip(masks, map(tuple, ref.asarray(xp.stack(rows)).tolist())))  # L x (2,)

    def end_epoch(self, record):
        """fit's end-of-epoch hook: record["dnr"] = the rewiring done at this epoch's start (None
        if there was none), the prune rate now, per layer the density (active weights / n_l) and
        the fraction of output channels with an active weight, and the global density."""
        counts = self.active_counts()
        shapes = {name: layer.weight.shape for name, layer in self.layers.items()}
        record["dnr"] = dict(
            rewiring=self.last_rewiring, prune_rate=self.prune_rate(),
            layers={name: dict(density=n / math.prod(shapes[name]), channels=c / shapes[name][0])
                    for name, (n, c) in counts.items()},
            density=sum(n for n, _ in counts.values()) / sum(map(math.prod, shapes.values())))
        self.epochs_done += 1
        self.epoch_started, self.last_rewiring = False, None
        return False

    def state_dict(self):
        """The counters fit checkpoints: iterations, epochs done, the growth adjustment and its
        history (masks and anchors need none: the masks are buffers, z is refreshed from the
        checkpointed weights at the next epoch's start)."""
        return dict(steps=self.steps, epochs_done=self.epochs_done, adjustment=self.adjustment,
                    adjustments=list(self.adjustments))

    def load_state_dict(self, state):
        self.steps, self.epochs_done = int(state["steps"]), int(state["epochs_done"])
        self.adjustment = float(state["adjustment"])
        self.adjustments = [int(a) for a in state["adjustments"]]
        self.epoch_started, self.last_rewiring = False, None

    def objective(self, objective, warmup_objective=None):
        """The loss fit trains with (DNRObjective): `objective` (the hybrid) + the dynamic L2
        term, `warmup_objective` (default: natural) in the warm-up epochs."""
        return DNRObjective(self, objective, warmup_objective or objectives.get("natural"))

    def __repr__(self):
        return (f"DNR(density={self.density}, variant={self.variant!r}, prune_rate="
                f"{self.initial_rate}, decay={self.decay!r}, warmup={self.warmup}, "
                f"rho={self.rho}, layers={len(self.layers)})")


class DNRObjective:
    """objective(model, x, y, rng) + rho / 2 sum_l ||W_l - z_l||^2, the warm-up objective in the
    warm-up epochs; the first call of an epoch first runs dnr.start_epoch(). Leaves `.logits`
    and exposes the objective's `.attack` (fit's default validation attack)."""

    def __init__(self, dnr, objective, warmup_objective):
        self.dnr, self.robust, self.clean = dnr, objective, warmup_objective
        self.attack = getattr(objective, "attack", {})
        self.logits = None

    def __call__(self, model, x, y, rng=None, *batch_extras):
        self.dnr.start_epoch()
        objective = self.clean if self.dnr.in_warmup() else self.robust
        loss = objective(model, x, y, rng, *batch_extras)
        self.logits = objective.logits
        penalty = self.dnr.penalty()
        return loss if penalty is None else loss + penalty

    def __repr__(self):
        return f"DNRObjective({self.robust!r}, warm-up {self.clean!r}, rho={self.dnr.rho})"


class RemaskingOptimizer:
    """An optimizer whose step() is optimizer.step() followed by W_l <- W_l * M_l for the DNR
    layers (momentum untouched) and one iteration of the prune-rate decay. lr, zero_grad and the
    state are the wrapped optimizer's."""

    def __init__(self, optimizer, dnr):
        self.optimizer, self.dnr = optimizer, dnr

    @property
    def lr(self):
        return self.optimizer.lr

    @lr.setter
    def lr(self, value):
        self.optimizer.lr = value

    def zero_grad(self):
        self.optimizer.zero_grad()

    def step(self):
        self.optimizer.step()
        self.dnr.after_step()

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state)

    def __repr__(self):
        return f"RemaskingOptimizer({self.optimizer!r})"
