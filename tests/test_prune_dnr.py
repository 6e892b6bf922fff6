"""ref.prune.dnr: every pure step against a naive reference written here (plain loops, sorted())
on hand-made tie-free tensors, the capped regrowth with residual passes and the
regrow-more-than-available case included; hypothesis invariants of one rewiring (the budget met
up to the documented under-shoot, whole channels, no layer emptied) and of training with the
driver (inactive weights exactly zero after every optimizer step, momentum at masked positions
not zeroed); bit-exact resume through ref.train.fit; numpy and the emulated gpu give the same
masks after one rewiring, with a constant number of device reads; bad input."""
import math
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import datasets
import gpu
import ref
from backends import to_host
from ref import checkpoint, nn, objectives, optim, train
from ref.prune import dnr


# ---- hand-made tensors and naive references -----------------------------------------------------
def distinct(rng, shape, zeros=0.0):
    """Tie-free values: a permutation of 1 .. n over n with random signs; with zeros > 0 about that
    fraction of them exactly 0."""
    n = math.prod(shape)
    values = (rng.permutation(n) + 1.0) * rng.choice([-1.0, 1.0], n) / n          # (n,)
    values[rng.random(n) < zeros] = 0.0
    return values.reshape(shape)


def random_mask(rng, shape, active, variant="irregular"):
    """A 0/1 mask with `active` units (weights or whole output channels) on."""
    units = shape[0] if variant == "channel" else math.prod(shape)
    m = np.zeros(units)
    m[rng.permutation(units)[:active]] = 1
    if variant == "channel":
        return np.repeat(m, math.prod(shape[1:])).reshape(shape)
    return m.reshape(shape)


def naive_units(A, variant):
    """The unit magnitudes as a list: |a| per weight, or sqrt(sum of squares) per output channel."""
    if variant == "irregular":
        return [abs(a) for a in A.ravel().tolist()]
    return [math.sqrt(sum(a * a for a in row)) for row in A.reshape(A.shape[0], -1).tolist()]


def naive_unit_mask(M, variant):
    if variant == "irregular":
        return M.ravel().tolist()
    return M.reshape(M.shape[0], -1)[:, 0].tolist()


def naive_remove(values, mask, count):
    """The `count` active entries of smallest value switched off (ties: lower index first)."""
    active = [i for i, m in enumerate(mask) if m]
    out = list(mask)
    for i in sorted(active, key=lambda i: (values[i], i))[:count]:
        out[i] = 0
    return out


def naive_grow(values, mask, n):
    """The n inactive entries of largest nonzero value switched on (ties: higher index first)."""
    inactive = [i for i, m in enumerate(mask) if not m and values[i] != 0]
    out = list(mask)
    for i in sorted(inactive, key=lambda i: (-values[i], -i))[:n]:
        out[i] = 1
    return out


def naive_shares(momenta, masks):
    means = {}
    for name, M in masks.items():
        picked = [abs(b) for b, m in zip(momenta[name].ravel().tolist(), M.ravel().tolist()) if m]
        means[name] = sum(picked) / len(picked) if picked else math.nan
    total = sum(v for v in means.values() if not math.isnan(v))
    return {name: v / total for name, v in means.items()}


def naive_rates(rate, shares, sparsities):
    """sparse_learning's adjust_prune_rate, with its expected / actual < 1 test."""
    rates = {}
    for name, share in shares.items():
        rates[name] = rate
        if sparsities[name] < 0.2 and (1.0 / len(shares)) / share < 1.0:
            rates[name] = min(sparsities[name], rate)
    return rates


def naive_regrowth(shares, capacities, total):
    """calc_growth_redistribution transcribed: passes until the residual is 0."""
    regrowth, residual, mean_residual, passes = {}, 9999, 0, 0
    while residual > 0 and passes < 1000:
        residual = 0
        for name in shares:
            r = regrowth[name] if name in regrowth else math.ceil(shares[name] * total)
            r += mean_residual
            if r > 0.99 * capacities[name]:
                regrowth[name] = 0.99 * capacities[name]
                residual += r - regrowth[name]
            else:
                regrowth[name] = r
        mean_residual = residual / len(regrowth)
        passes += 1
    return regrowth


def naive_rewire(weights, masks, momenta, rate, target, adjustment, variant):
    """One rewiring with lists: statistics, rates, prune, counts, apportionment, growth."""
    names = list(weights)
    shares = naive_shares(momenta, masks)
    units = {n: naive_unit_mask(masks[n], variant) for n in names}
    w = {n: naive_units(weights[n], variant) for n in names}
    b = {n: naive_units(momenta[n], variant) for n in names}
    before = {n: int(sum(units[n])) for n in names}
    rates = naive_rates(rate, shares, {n: 1 - before[n] / len(units[n]) for n in names})
    removed = {n: min(math.ceil(rates[n] * before[n]), before[n] - 1) for n in names}
    pruned = {n: naive_remove(w[n], units[n], removed[n]) for n in names}
    wanted = naive_regrowth(shares, {n: len(units[n]) - before[n] + removed[n] for n in names},
                            sum(removed.values()) + adjustment)
    growable = {n: sum(1 for m, v in zip(pruned[n], b[n]) if not m and v != 0) for n in names}
    grow = naive_apportion(wanted, growable,
                           target - sum(before.values()) + sum(removed.values()))
    return {n: naive_grow(b[n], pruned[n], grow[n]) for n in names}


def naive_apportion(wanted, free, total):
    """Quotas total * r / sum r floored (capped), then one unit at a time to the layer with the
    largest remainder that has room (the earliest on ties)."""
    weights = {n: max(0.0, r) for n, r in wanted.items()}
    norm = sum(weights.values())
    quota = {n: max(0, total) * r / norm if norm > 0 else 0.0 for n, r in weights.items()}
    counts = {n: min(math.floor(q), free[n]) for n, q in quota.items()}
    for _ in range(max(0, total) - sum(counts.values())):
        room = [n for n in counts if counts[n] < free[n]]
        if room:
            best = max(room, key=lambda n: (quota[n] - counts[n], -list(counts).index(n)))
            counts[best] += 1
    return counts


def toy_weights(rng, variant, density=0.2, zero_momenta=0.0):
    """ALGORITHMS.md 7.3.5's toy: conv 3 -> 4 (k3) and linear 16 -> 10, masked weights zero;
    about the fraction zero_momenta of the momenta exactly 0."""
    shapes = {"conv.weight": (4, 3, 3, 3), "fc.weight": (10, 16)}
    weights = {n: distinct(rng, s) for n, s in shapes.items()}
    masks = dnr.initial_masks(weights, density, rng, variant)
    momenta = {n: distinct(rng, s, zero_momenta) for n, s in shapes.items()}
    return {n: W * masks[n] for n, W in weights.items()}, masks, momenta


# ---- the steps ----------------------------------------------------------------------------------
def test_magnitude_prune_removes_the_smallest_active_weights():
    """ALGORITHMS.md 7.3.1: 8 x 8, 40 active distinct weights, p = 0.3: ceil(12) removed."""
    rng = np.random.default_rng(1)
    M = random_mask(rng, (8, 8), 40)
    W = distinct(rng, (8, 8)) * M
    pruned = dnr.magnitude_prune(W, M, 0.3)
    assert pruned.shape == M.shape and pruned.dtype == M.dtype
    assert M.sum() - pruned.sum() == 12 == math.ceil(0.3 * 40)
    np.testing.assert_array_equal(pruned.ravel(), naive_remove(np.abs(W).ravel().tolist(),
                                                               M.ravel().tolist(), 12))
    assert np.abs(W[(M == 1) & (pruned == 0)]).max() < np.abs(W[pruned == 1]).min()


def test_magnitude_prune_ranks_active_zero_weights_first_and_never_touches_inactive_ones():
    W = np.array([0.0, 0.5, 0.0, -0.2, 0.9, 0.0])
    M = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(dnr.magnitude_prune(W, M, 0.5), [0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(dnr.magnitude_prune(W, M, 0.0), M)
    np.testing.assert_array_equal(dnr.magnitude_prune(W, M, 0.99), [0, 0, 0, 0, 0, 0])


@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.floats(0, 0.999))
def test_magnitude_prune_equals_the_naive_sort(seed, n, rate):
    rng = np.random.default_rng(seed)
    M = random_mask(rng, (n,), int(rng.integers(0, n + 1)))
    W = distinct(rng, (n,)) * M
    want = naive_remove(np.abs(W).tolist(), M.tolist(), math.ceil(rate * M.sum()))
    np.testing.assert_array_equal(dnr.magnitude_prune(W, M, rate), want)


def test_momentum_statistics_equal_the_mean_over_active_positions_with_nan_left_out():
    rng = np.random.default_rng(2)
    masks = {"a": random_mask(rng, (4, 3), 5), "b": random_mask(rng, (6,), 2),
             "empty": np.zeros((3, 2))}
    momenta = {n: distinct(rng, M.shape) for n, M in masks.items()}
    shares, nonzeros = dnr.momentum_statistics(momenta, masks)
    want = naive_shares(momenta, masks)
    assert math.isnan(shares["empty"]) and math.isnan(want["empty"])
    for name in ("a", "b"):
        assert shares[name] == pytest.approx(want[name], rel=1e-12, abs=1e-15)
    assert shares["a"] + shares["b"] == pytest.approx(1.0, rel=1e-12, abs=1e-15)
    assert nonzeros == {"a": 5, "b": 2, "empty": 0}


def test_momentum_statistics_leave_the_shares_unnormalised_when_every_mean_is_zero():
    masks = {"a": np.ones(3), "b": np.ones(2)}
    shares, _ = dnr.momentum_statistics({"a": np.zeros(3), "b": np.zeros(2)}, masks)
    assert shares == {"a": 0.0, "b": 0.0}


def test_prune_rates_spare_the_relatively_dense_growing_layers():
    shares = {"dense_growing": 0.5, "dense_shrinking": 0.1, "sparse": 0.4, "nan": math.nan}
    sparsities = {"dense_growing": 0.1, "dense_shrinking": 0.15, "sparse": 0.9, "nan": 0.05}
    rates = dnr.prune_rates(0.3, shares, sparsities)
    assert rates == {"dense_growing": 0.1, "dense_shrinking": 0.3, "sparse": 0.3, "nan": 0.3}
    assert rates == naive_rates(0.3, shares, sparsities)


def test_regrowth_counts_spread_the_capped_residual_over_passes():
    """Layer a (share 0.7) wants ceil(35) but may take 0.99 * 10 = 9.9: the excess 25.1 is spread
    over the three layers, a's share of it capped again pass after pass, so b and c get
    25.1 / 3 * (1 + 1/3 + 1/9 + ...) = 12.55 each: 10 + 12.55 and 5 + 12.55."""
    shares, capacities = {"a": 0.7, "b": 0.2, "c": 0.1}, {"a": 10, "b": 100, "c": 100}
    counts = dnr.regrowth_counts(shares, capacities, 50)
    assert counts == naive_regrowth(shares, capacities, 50)
    assert counts["a"] == 9.9
    assert counts["b"] == pytest.approx(22.55, rel=1e-9, abs=1e-9)
    assert counts["c"] == pytest.approx(17.55, rel=1e-9, abs=1e-9)
    assert sum(counts.values()) == pytest.approx(50, rel=1e-9, abs=1e-9)


def test_regrowth_counts_without_a_cap_are_the_ceilings():
    counts = dnr.regrowth_counts({"a": 0.61, "b": 0.39}, {"a": 100, "b": 100}, 10)
    assert counts == {"a": 7, "b": 4}          # ceil(6.1), ceil(3.9): 11 for 10 removed


def test_regrowth_counts_warn_when_the_layers_are_too_full():
    with pytest.warns(UserWarning, match="nearly full"):
        counts = dnr.regrowth_counts({"a": 0.5, "b": 0.5}, {"a": 4, "b": 4}, 20)
    assert counts == {"a": 0.99 * 4, "b": 0.99 * 4}


@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.floats(0, 500))
def test_regrowth_counts_equal_the_transcribed_reference(seed, layers, total):
    rng = np.random.default_rng(seed)
    raw = rng.random(layers)
    shares = {f"l{i}": float(v) for i, v in enumerate(raw / raw.sum())}
    capacities = {name: int(rng.integers(10, 300)) for name in shares}   # not all capped
    if total > 0.98 * sum(capacities.values()):
        total = 0.5 * sum(capacities.values())   # a solvable redistribution
    counts = dnr.regrowth_counts(shares, capacities, total)
    assert counts == naive_regrowth(shares, capacities, total)
    assert all(counts[name] <= 0.99 * capacities[name] for name in shares)


def test_budget_counts_apportion_the_missing_units_by_largest_remainder():
    """r = (5.5, 2.2, 3.0) for 12 units: quotas 6.17, 2.47, 3.36 -> 6, 2, 3 and the last unit to
    the largest remainder (b's 0.47); a capped layer hands its share on, a unit per pass to each
    open layer; nothing grows for total <= 0."""
    wanted = {"a": 5.5, "b": 2.2, "c": 3.0}
    assert dnr.budget_counts(wanted, {"a": 50, "b": 50, "c": 50}, 12) == {"a": 6, "b": 3, "c": 3}
    assert dnr.budget_counts(wanted, {"a": 2, "b": 50, "c": 50}, 12) == {"a": 2, "b": 5, "c": 5}
    assert dnr.budget_counts(wanted, {"a": 2, "b": 3, "c": 50}, 12) == {"a": 2, "b": 3, "c": 7}
    assert dnr.budget_counts(wanted, {"a": 9, "b": 9, "c": 9}, -3) == {"a": 0, "b": 0, "c": 0}


@given(st.integers(0, 2**32 - 1), st.integers(1, 7), st.integers(-5, 400))
def test_budget_counts_equal_the_one_at_a_time_apportionment(seed, layers, total):
    rng = np.random.default_rng(seed)
    wanted = {f"l{i}": float(v) for i, v in enumerate(rng.random(layers) * 50 - 5)}
    free = {name: int(rng.integers(0, 80)) for name in wanted}
    counts = dnr.budget_counts(wanted, free, total)
    assert counts == naive_apportion(wanted, free, total)
    assert sum(counts.values()) == min(max(0, total), sum(free.values()))
    assert all(0 <= counts[name] <= free[name] for name in wanted)


def test_momentum_regrow_takes_the_largest_inactive_momenta():
    M = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    B = np.array([9.0, -0.5, 0.1, 8.0, 0.7, -0.3])
    np.testing.assert_array_equal(dnr.momentum_regrow(M, B, 2), [1, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(dnr.momentum_regrow(M, B, 0), M)


def test_momentum_regrow_more_than_available_under_shoots():
    """n = 5 wanted, but only two inactive positions have nonzero momentum: those two grow, the
    zero-momentum one stays off (the reference's unstable sort may or may not pick it)."""
    M = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    B = np.array([3.0, 0.2, 0.0, 1.0, -0.4])
    grown = dnr.momentum_regrow(M, B, 5)
    np.testing.assert_array_equal(grown, [1, 1, 0, 1, 1])
    np.testing.assert_array_equal(grown, naive_grow(np.abs(B).tolist(), M.tolist(), 5))
    np.testing.assert_array_equal(dnr.momentum_regrow(M, B, 100), grown)


@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(0, 70), st.booleans())
def test_momentum_regrow_equals_the_naive_sort(seed, n, grow, zeros):
    rng = np.random.default_rng(seed)
    M = random_mask(rng, (n,), int(rng.integers(0, n + 1)))
    B = distinct(rng, (n,), zeros=0.3 if zeros else 0.0)
    np.testing.assert_array_equal(dnr.momentum_regrow(M, B, grow),
                                  naive_grow(np.abs(B).tolist(), M.tolist(), grow))


def test_growth_adjustment_smooths_the_missing_count():
    adjustment, history = dnr.growth_adjustment(0.0, [], 100, 96)
    assert (adjustment, history) == (0.75 * 4 + 4, [4])
    adjustment, history = dnr.growth_adjustment(adjustment, history, 100, 102)
    assert history == [4, -2]
    assert adjustment == pytest.approx(0.25 * 7.0 + 0.75 * -2 + 1.0, rel=1e-12, abs=1e-12)


def test_prune_rate_decays_per_iteration():
    assert dnr.prune_rate_at(0, 0.5, 100) == pytest.approx(0.5, rel=1e-12, abs=1e-12)
    assert dnr.prune_rate_at(50, 0.5, 100) == pytest.approx(0.2525, rel=1e-12, abs=1e-12)
    assert dnr.prune_rate_at(100, 0.5, 100) == pytest.approx(0.005, rel=1e-12, abs=1e-12)
    linear = [dnr.prune_rate_at(t, 0.5, 100, "linear") for t in range(101)]
    assert linear[25] == pytest.approx(0.375, rel=1e-12, abs=1e-12)
    rate = 0.5        # the reference's LinearDecay subtracts p0 / T per step: equal up to rounding
    for t in range(1, 101):
        rate -= 0.5 / 100
        assert linear[t] == pytest.approx(rate, rel=1e-9, abs=1e-12)


@given(st.integers(1, 500), st.floats(0.006, 0.99), st.sampled_from(dnr.DECAYS))
def test_prune_rate_never_rises(total, initial, decay):
    rates = [dnr.prune_rate_at(t, initial, total, decay) for t in range(total + 1)]
    assert all(b <= a + 1e-15 for a, b in zip(rates, rates[1:]))
    assert rates[0] == pytest.approx(initial, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("variant", dnr.VARIANTS)
def test_one_rewiring_equals_the_naive_composition(variant):
    """ALGORITHMS.md 7.3.5: conv 3 -> 4 (k3) and linear 16 -> 10, p = 0.5, d = 0.2."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        for zeros in (0.0, 0.9):               # 0.9: layers short of growable units
            weights, masks, momenta = toy_weights(rng, variant, zero_momenta=zeros)
            target = dnr.budget(weights, 0.2, variant)
            for adjustment in (0.0, 3.5, -2.0):
                new, report = dnr.rewire(weights, masks, momenta, 0.5, target, adjustment,
                                         variant)
                want = naive_rewire(weights, masks, momenta, 0.5, target, adjustment, variant)
                for name, M in new.items():
                    assert M.shape == weights[name].shape and M.dtype == weights[name].dtype
                    np.testing.assert_array_equal(naive_unit_mask(M, variant), want[name], name)
                assert report["total"] == sum(sum(m) for m in want.values())
                assert report["total"] == target - report["undershoot"]
                assert zeros or report["undershoot"] == 0


rewire_cases = st.tuples(st.integers(0, 2**32 - 1), st.sampled_from(dnr.VARIANTS),
                         st.floats(0.05, 1.0), st.floats(0, 0.99), st.booleans(),
                         st.floats(-5, 20))


@pytest.mark.filterwarnings("ignore:regrowth_counts")   # tiny layers at high density are full
@given(rewire_cases)
def test_every_rewiring_meets_the_budget_up_to_the_under_shoot(case):
    seed, variant, density, rate, zero_momenta, adjustment = case
    rng = np.random.default_rng(seed)
    shapes = {"a": (int(rng.integers(1, 6)), 2, 3, 3), "b": (int(rng.integers(1, 8)), 5),
              "c": (int(rng.integers(1, 5)), int(rng.integers(1, 9)))}
    weights = {n: distinct(rng, s) for n, s in shapes.items()}
    try:
        masks = dnr.initial_masks(weights, density, rng, variant)
    except ValueError:                       # a layer too small for the density keeps nothing
        return
    weights = {n: W * masks[n] for n, W in weights.items()}
    momenta = {n: distinct(rng, s, zeros=0.7 if zero_momenta else 0.0) for n, s in shapes.items()}
    target = dnr.budget(weights, density, variant)
    new, report = dnr.rewire(weights, masks, momenta, rate, target, adjustment, variant)
    counts = {n: int(dnr.unit_mask(M, variant).sum()) for n, M in new.items()}
    assert report["nonzeros"] == counts and report["total"] == sum(counts.values())
    assert report["total"] == target - report["undershoot"]
    for name, M in new.items():
        assert set(np.unique(M)) <= {0.0, 1.0}
        assert counts[name] >= 1, f"{name} emptied"
        units = dnr.unit_mask(M, variant)
        np.testing.assert_array_equal(M, dnr.weight_mask(units, M.shape, variant))  # whole units
        grown = (units == 1) & (dnr.unit_mask(masks[name], variant) == 0)
        assert np.all(dnr.unit_magnitudes(momenta[name], variant)[grown] > 0)
    if report["undershoot"]:                 # nothing left to grow anywhere
        for name, M in new.items():
            idle = dnr.unit_mask(M, variant) == 0
            assert np.all(dnr.unit_magnitudes(momenta[name], variant)[idle] == 0)


def test_initial_masks_have_exact_counts_or_the_reference_bernoulli_draw():
    weights = {"conv": np.ones((16, 3, 3, 3)), "fc": np.ones((10, 64))}
    exact = dnr.initial_masks(weights, 0.1, 0)
    assert {n: int(M.sum()) for n, M in exact.items()} == {"conv": 432 - 388, "fc": 64}
    channels = dnr.initial_masks(weights, 0.25, 0, "channel")
    assert int(channels["conv"].reshape(16, -1)[:, 0].sum()) == 4
    np.testing.assert_array_equal(channels["conv"],
                                  dnr.weight_mask(channels["conv"][:, 0, 0, 0], (16, 3, 3, 3),
                                                  "channel"))
    bernoulli = dnr.initial_masks(weights, 0.3, 7, init="bernoulli")
    rng = np.random.default_rng(7)
    for name, W in weights.items():
        np.testing.assert_array_equal(bernoulli[name].ravel(), rng.random(W.size) < 0.3)
    again = dnr.initial_masks(weights, 0.1, np.random.default_rng(0))
    for name in weights:
        np.testing.assert_array_equal(again[name], exact[name])
    with pytest.raises(ValueError, match="left layer tiny .* empty"):
        dnr.initial_masks({"tiny": np.ones((1, 2))}, 0.01, 0, init="bernoulli")


SMALL_CNN = [(16, 1, 3, 3), (16, 16, 3, 3), (32, 16, 3, 3), (32, 32, 3, 3), (64, 32), (10, 64)]


def test_erdos_renyi_densities_are_the_references_closed_form():
    """No layer above 1: d_l = eps sum(shape_l) / prod(shape_l), eps = d N / sum_l sum(shape_l),
    the value the reference's search approaches; then the exact counts on those densities."""
    densities = dnr.layer_densities(SMALL_CNN, 0.1, "erdos_renyi")
    eps = 0.1 * 18960 / sum(sum(shape) for shape in SMALL_CNN)
    for d, shape in zip(densities, SMALL_CNN):
        assert d == pytest.approx(eps * sum(shape) / math.prod(shape), rel=1e-12, abs=1e-15)
    assert dnr.layer_densities(SMALL_CNN, 0.1) == [0.1] * 6
    weights = {f"l{i}": np.ones(shape) for i, shape in enumerate(SMALL_CNN)}
    masks = dnr.initial_masks(weights, 0.1, 0, distribution="erdos_renyi")
    assert [int(M.sum()) for M in masks.values()] == [
        math.prod(s) - int((1 - d) * math.prod(s)) for s, d in zip(SMALL_CNN, densities)]
    assert sum(int(M.sum()) for M in masks.values()) == dnr.budget(weights, 0.1,
                                                                   distribution="erdos_renyi")


@given(st.lists(st.tuples(st.integers(1, 64), st.integers(1, 64), st.sampled_from([1, 3])),
                min_size=1, max_size=6), st.floats(0.01, 1.0))
def test_erdos_renyi_densities_keep_the_budget_with_full_layers_clipped(dims, density):
    shapes = [(o, c, k, k) if k > 1 else (o, c) for o, c, k in dims]
    densities = dnr.layer_densities(shapes, density, "erdos_renyi")
    sizes = [math.prod(shape) for shape in shapes]
    assert sum(d * n for d, n in zip(densities, sizes)) == pytest.approx(
        density * sum(sizes), rel=1e-9, abs=1e-9)
    ratios = [d * n / sum(shape) for d, n, shape in zip(densities, sizes, shapes) if d < 1]
    assert all(0 < d <= 1 for d in densities)
    assert max(ratios, default=1) == pytest.approx(min(ratios, default=1), rel=1e-9)
    full = [sum(shape) / n for d, n, shape in zip(densities, sizes, shapes) if d == 1]
    scaled = [sum(shape) / n for d, n, shape in zip(densities, sizes, shapes) if d < 1]
    assert min(full, default=math.inf) >= max(scaled, default=0)   # the densest ones clip


def test_l2_penalty_and_its_gradient():
    rng = np.random.default_rng(3)
    W = [ref.Tensor(distinct(rng, (3, 4)), requires_grad=True),
         ref.Tensor(distinct(rng, (5,)), requires_grad=True)]
    z = [distinct(rng, (3, 4)), distinct(rng, (5,))]
    penalty = dnr.l2_penalty(W, z, 0.3)
    want = 0.3 / 2 * sum((a - b) ** 2 for t, s in zip(W, z)
                         for a, b in zip(t.data.ravel().tolist(), s.ravel().tolist()))
    assert float(penalty.item()) == pytest.approx(want, rel=1e-12, abs=1e-15)
    penalty.backward()
    for t, s in zip(W, z):
        np.testing.assert_allclose(t.grad, 0.3 * (t.data - s), rtol=1e-12, atol=1e-15)


# ---- the driver ---------------------------------------------------------------------------------
def toy_model(seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False, rng=rng), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3, rng=rng)).astype(dtype)


def driver(seed, density=0.3, variant="irregular", epochs=3, steps=2, warmup=0, rho=0.01,
           **options):
    model = toy_model(seed)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    rewiring = dnr.DNR(model, optimizer, density, epochs, steps, variant=variant,
                       warmup=warmup, rho=rho, rng=seed, **options)
    return model, rewiring


@pytest.mark.filterwarnings("ignore:regrowth_counts")
@given(st.integers(0, 2**32 - 1), st.sampled_from(dnr.VARIANTS), st.floats(0.1, 1.0),
       st.floats(0, 0.1))
def test_training_keeps_inactive_weights_zero_and_their_momentum_unmasked(
        seed, variant, density, rho):
    """After every optimizer step W = 0 wherever M = 0 and the momentum buffer is SGD's
    m buf + g at EVERY position (grad + wd p, p the weight before the step); after each
    rewiring the active weights count the budget and whole channels."""
    model, rewiring = driver(seed, density, variant, rho=rho)
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((6, 1, 4, 4)), rng.integers(0, 3, 6)
    objective = rewiring.objective(objectives.get("natural"))
    inner = rewiring.optimizer.optimizer
    for epoch in range(3):
        for step in range(2):
            loss = objective(model, x, y, rng)
            rewiring.optimizer.zero_grad()
            loss.backward()
            old = {}
            for name, layer in rewiring.layers.items():
                buffer = inner.state[rewiring.param_index[name]].get("momentum_buffer")
                old[name] = (layer.weight.data.copy(), layer.weight.grad.copy(),
                             None if buffer is None else buffer.copy())
            rewiring.optimizer.step()
            for name, M in rewiring.masks().items():
                W = rewiring.layers[name].weight.data
                assert np.all(W[M == 0] == 0), name
                w, g, b = old[name]
                expected = g + 5e-4 * w if b is None else 0.9 * b + g + 5e-4 * w
                buffer = dnr.momentum_of(inner, rewiring.param_index[name])
                np.testing.assert_allclose(buffer, expected, rtol=1e-12, atol=1e-15)
        record = {}
        rewiring.end_epoch(record)
        report = record["dnr"]["rewiring"]
        if epoch >= 1:                       # the epochs after the first start with a rewiring
            assert report["total"] == rewiring.target - report["undershoot"]
        if variant == "channel":
            for M in rewiring.masks().values():
                rows = M.reshape(M.shape[0], -1)
                assert np.all(rows.min(axis=1) == rows.max(axis=1))
        assert all(layer["channels"] > 0 for layer in record["dnr"]["layers"].values())


def test_momentum_accumulates_where_the_weights_are_inactive():
    model, rewiring = driver(1, 0.3)
    rng = np.random.default_rng(1)
    objective = rewiring.objective(objectives.get("natural"))
    for _ in range(2):
        loss = objective(model, rng.standard_normal((6, 1, 4, 4)), rng.integers(0, 3, 6))
        rewiring.optimizer.zero_grad()
        loss.backward()
        rewiring.optimizer.step()
    for name, B in rewiring.momenta().items():
        M, W = rewiring.masks()[name], rewiring.layers[name].weight.data
        assert np.all(W[M == 0] == 0) and np.count_nonzero(B[M == 0]) > 0.5 * (M == 0).sum()


def test_the_schedule_rewires_after_warm_up_and_never_after_the_last_epoch():
    model, rewiring = driver(4, epochs=4, warmup=1)
    rng = np.random.default_rng(0)
    x, y = rng.random((6, 1, 4, 4)), rng.integers(0, 3, 6)
    robust = objectives.get("dnr", beta=0.5, eps=0.1, alpha=0.05, steps=1)
    objective = rewiring.objective(robust)
    rewired, used = [], []
    for epoch in range(4):
        for _ in range(2):
            loss = objective(model, x, y, rng)
            used.append("clean" if rewiring.in_warmup() else "robust")
            rewiring.optimizer.zero_grad()
            loss.backward()
            rewiring.optimizer.step()
        record = {}
        rewiring.end_epoch(record)
        rewired.append(record["dnr"]["rewiring"] is not None)
    assert rewired == [False, False, True, True]        # at the starts of epochs 3 and 4
    assert used == ["clean"] * 2 + ["robust"] * 6
    assert rewiring.steps == 8 and rewiring.prune_rate() == pytest.approx(0.005, abs=1e-12)
    assert rewiring(1.5) == rewiring.optimizer.lr == 0.1


def test_fit_resumes_bit_for_bit_and_the_model_exports_dense(tmp_path):
    x, y = datasets.load("digits", "train")

    def run(out, epochs, resume=None):
        model = ref.models.small_cnn(num_classes=10, in_channels=1, width=4, rng=0)
        loader = datasets.Loader(x[:96], y[:96], 32, shuffle=True, seed=0)
        optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        rewiring = dnr.DNR(model, optimizer, 0.3, 3, len(loader), warmup=1, rho=1e-3,
                           lr_schedule=optim.Cosine(0.05, 3), rng=0)
        objective = rewiring.objective(objectives.get("dnr", eps=0.1, alpha=0.05, steps=1))
        history = train.fit(model, objective, rewiring.optimizer, rewiring, loader, epochs,
                            out_dir=out, resume=resume, seed=0, progress=False)
        return model, rewiring, history

    def without_times(history):
        return [{k: v for k, v in h.items() if k not in ("time_s", "examples_per_s")}
                for h in history]

    model, rewiring, history = run(tmp_path / "a", 3)
    assert [h["dnr"]["rewiring"] is not None for h in history] == [False, False, True]
    size = sum(W.size for W in rewiring.weights().values())
    assert [h["dnr"]["density"] for h in history] == [rewiring.target / size] * 3
    shutil.copy(tmp_path / "a" / "epoch_002.h5", tmp_path / "a" / "last.h5")
    resumed, _, again = run(tmp_path / "a", 3, resume=True)
    assert without_times(again) == without_times(history)
    for (name, a), (_, b) in zip(model.state_dict().items(), resumed.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert any(name.endswith(dnr.REWIRING_MASK) for name in model.state_dict())
    path = tmp_path / "final.h5"
    checkpoint.save(path, dnr.remove_rewiring_masks(model))
    plain = ref.models.small_cnn(num_classes=10, in_channels=1, width=4)
    checkpoint.load(path, plain)
    kept = sum(int((W != 0).sum()) for W in ref.prune.weights(plain).values())
    assert kept == rewiring.target


def test_adam_momentum_is_the_normalised_first_moment():
    """sparse_learning's get_momentum_for_weight for Adam: m1 / (sqrt(m2) + 1e-8)."""
    model = toy_model(2)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    rewiring = dnr.DNR(model, optimizer, 0.3, 2, 1, rng=2)
    rng = np.random.default_rng(2)
    assert all(np.all(B == 0) for B in rewiring.momenta().values())     # before any step
    loss = rewiring.objective(objectives.get("natural"))(
        model, rng.standard_normal((6, 1, 4, 4)), rng.integers(0, 3, 6))
    loss.backward()
    rewiring.optimizer.step()
    for name, B in rewiring.momenta().items():
        state = optimizer.state[rewiring.param_index[name]]
        np.testing.assert_allclose(B, state["exp_avg"] / (np.sqrt(state["exp_avg_sq"]) + 1e-8),
                                   rtol=1e-12, atol=1e-15)


# ---- the gpu twin -------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", dnr.VARIANTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_and_gpu_give_the_same_masks_after_one_rewiring(variant, dtype):
    rng = np.random.default_rng(5)
    weights, masks, momenta = toy_weights(rng, variant, 0.3)
    weights, masks, momenta = ({n: a.astype(dtype) for n, a in d.items()}
                               for d in (weights, masks, momenta))
    target = dnr.budget(weights, 0.3, variant)
    on_host = dnr.rewire(weights, masks, momenta, 0.4, target, 1.5, variant)
    on_device = dnr.rewire(*({n: gpu.asarray(a) for n, a in d.items()}
                             for d in (weights, masks, momenta)), 0.4, target, 1.5, variant)
    for name, M in on_host[0].items():
        assert isinstance(on_device[0][name], gpu.cupy.ndarray)
        np.testing.assert_array_equal(to_host(on_device[0][name]), M, err_msg=name)
    assert on_device[1] == on_host[1]


@pytest.mark.skipif(not gpu.EMULATED, reason="counts host reads on the emulator's device arrays")
@pytest.mark.parametrize("layers", [2, 7])
def test_a_rewiring_reads_the_device_twice_whatever_the_layer_count(monkeypatch, layers):
    rng = np.random.default_rng(6)
    shapes = {f"l{i}": (6, 3, 3, 3) if i % 2 else (8, 12) for i in range(layers)}
    weights = {n: distinct(rng, s) for n, s in shapes.items()}
    masks = dnr.initial_masks(weights, 0.3, rng)
    args = [{n: gpu.asarray(a) for n, a in d.items()} for d in (
        {n: W * masks[n] for n, W in weights.items()}, masks,
        {n: distinct(rng, s) for n, s in shapes.items()})]
    reads = []
    for name in ("get", "item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
        original = getattr(gpu.cupy.ndarray, name, None)
        if original is not None:
            def counted(self, *a, _original=original, **k):
                reads.append(1)
                return _original(self, *a, **k)
            monkeypatch.setattr(gpu.cupy.ndarray, name, counted)
    dnr.rewire(*args, 0.5, dnr.budget(weights, 0.3), 0.0)
    assert len(reads) == 2


def test_the_driver_runs_on_the_gpu_as_on_numpy():
    """Two epochs of the driver on both backends (float64): the same masks and weights."""
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((6, 1, 4, 4)), rng.integers(0, 3, 6)
    results = []
    for backend in ("numpy", "gpu"):
        model = toy_model(9).to(backend)
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        rewiring = dnr.DNR(model, optimizer, 0.3, 2, 2, rho=0.01, rng=9)
        objective = rewiring.objective(objectives.get("natural"))
        xb = x if backend == "numpy" else gpu.asarray(x)
        for _ in range(2):
            for _ in range(2):
                loss = objective(model, xb, y if backend == "numpy" else gpu.asarray(y))
                rewiring.optimizer.zero_grad()
                loss.backward()
                rewiring.optimizer.step()
            rewiring.end_epoch({})
        results.append({n: to_host(a) for n, a in model.state_dict().items()})
    for name, value in results[0].items():
        np.testing.assert_allclose(results[1][name], value, rtol=1e-10, atol=1e-12,
                                   err_msg=name)


# ---- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    (dict(density=0), "density must be a fraction in \\(0, 1\\], got 0"),
    (dict(density=1.5), "density must be a fraction in \\(0, 1\\], got 1.5"),
    (dict(density=float("nan")), "density must be a fraction in \\(0, 1\\], got nan"),
    (dict(rho=-1.0), "rho must be a finite number >= 0, got -1.0"),
    (dict(prune_rate=1.0), "prune_rate must be a fraction in \\[0, 1\\), got 1.0"),
    (dict(prune_rate=-0.1), "prune_rate must be a fraction in \\[0, 1\\), got -0.1"),
    (dict(variant="filter"), "variant must be one of \\('irregular', 'channel'\\), got 'filter'"),
    (dict(decay="step"), "decay must be one of \\('cosine', 'linear'\\), got 'step'"),
    (dict(init="uniform"), "init must be one of \\('exact', 'bernoulli'\\), got 'uniform'"),
    (dict(warmup=3), "warmup must be below epochs=3, got 3"),
    (dict(epochs=0), "epochs must be >= 1, got 0"),
    (dict(eta_min=1.0), "eta_min must be a fraction in \\[0, 1\\), got 1.0"),
])
def test_bad_settings_are_refused_naming_the_value(options, message):
    settings = dict(density=0.3, epochs=3, steps=2) | options
    with pytest.raises(ValueError, match=message):
        driver(0, **settings)


def test_bad_input_to_the_steps_is_refused():
    with pytest.raises(ValueError, match="beta must lie in \\[0, 1\\], got 1.5"):
        objectives.get("dnr", beta=1.5)
    with pytest.raises(ValueError, match="rate must be a fraction in \\[0, 1\\), got 1"):
        dnr.magnitude_prune(np.ones(3), np.ones(3), 1)
    with pytest.raises(ValueError, match="n must be an integer >= 0, got -1"):
        dnr.momentum_regrow(np.ones(3), np.ones(3), -1)
    with pytest.raises(ValueError, match="cannot remove 4 of 3 active entries"):
        dnr.remove_smallest(np.ones(3), np.ones(3), 4)
    with pytest.raises(ValueError, match="the layers \\['b'\\] have no active unit"):
        dnr.rewire({"a": np.ones(2), "b": np.ones(2)}, {"a": np.ones(2), "b": np.zeros(2)},
                   {"a": np.ones(2), "b": np.ones(2)}, 0.5, 2)
    model = toy_model(0)
    with pytest.raises(ValueError, match="use SGD with momentum > 0 or Adam"):
        dnr.DNR(model, optim.SGD(model.parameters(), lr=0.1), 0.3, 2, 2)
    ref.prune.apply_masks(model, {"0.weight": np.ones((4, 1, 3, 3))})
    with pytest.raises(ValueError, match="0.weight: DNR needs a plain layer"):
        dnr.DNR(model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9), 0.3, 2, 2)
