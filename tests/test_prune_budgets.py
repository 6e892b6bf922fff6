"""Budgets against naive references: topk_mask against a stable sort written out, the adaptive
allocation against its defining properties and the worked cResNet-34 example of ALGORITHMS.md
2(b), the global ranking against one sort over all layers; bad input; numpy and gpu agree."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gpu
from backends import to_host
from ref import prune


def naive_topk(scores, keep):
    """1 at all but the int((1 - keep) n) smallest |s|, dropping in Python's stable sort order."""
    a = np.abs(scores).ravel().tolist()
    dropped = sorted(range(len(a)), key=lambda i: a[i])[:int((1 - keep) * len(a))]
    mask = np.ones(len(a))
    mask[dropped] = 0
    return mask.reshape(scores.shape)


def tied_scores(draw, n):
    """n scores from a few distinct magnitudes and random signs: many ties."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.integers(1, 6))
    return rng.integers(0, levels, n) * rng.choice([-1.0, 1.0], n)               # (n,)


keeps = st.floats(0.001, 1.0, allow_nan=False)


@given(st.data(), st.integers(1, 300), keeps, st.booleans())
def test_topk_mask_equals_a_stable_sort(data, n, keep, ties):
    if n - int((1 - keep) * n) < 1:
        keep = 1.0
    scores = (tied_scores(data.draw, n) if ties
              else np.random.default_rng(n).standard_normal(n))
    mask = prune.topk_mask(scores.reshape(1, n), keep)
    assert mask.dtype == scores.dtype and mask.shape == (1, n)
    np.testing.assert_array_equal(mask.ravel(), naive_topk(scores, keep))
    assert mask.sum() == n - int((1 - keep) * n)


@pytest.mark.parametrize("n, keep, kept", [(100, 0.1, 10), (100, 0.05, 5), (100, 0.3, 30),
                                           (1728, 0.01, 18), (1728, 1.0, 1728), (7, 0.5, 4)])
def test_topk_mask_keeps_the_authors_count(n, keep, kept):
    """kept = n - int((1 - keep) n) in float64: (1 - 0.3) * 100 = 70.00000000000001 and
    (1 - 0.01) * 1728 = 1710.72 both floor as the authors' code floors them."""
    rng = np.random.default_rng(0)
    scores = (rng.permutation(n) + 1.0) * rng.choice([-1.0, 1.0], n)            # distinct |s|
    mask = prune.topk_mask(scores, keep)
    assert int(mask.sum()) == kept == prune.kept_count(n, keep)
    kept_values = np.abs(scores)[mask == 1]
    assert kept_values.min() > np.abs(scores)[mask == 0].max(initial=-1)


def test_topk_mask_ties_drop_the_lower_index_first():
    scores = np.array([3.0, -1.0, 1.0, 2.0, -1.0, 1.0])
    # |s| sorted stably: 1 (index 1), 1 (2), 1 (4), 1 (5), 2, 3; int(0.5 * 6) = 3 are dropped
    np.testing.assert_array_equal(prune.topk_mask(scores, 0.5), [1, 0, 0, 1, 0, 1])


@pytest.mark.parametrize("keep", [0, -0.1, 1.5, float("nan"), True, "0.5", None])
def test_keep_outside_the_unit_interval_is_refused(keep):
    with pytest.raises(ValueError, match="keep must be a fraction in"):
        prune.topk_mask(np.ones(10), keep)


def test_a_keep_that_would_empty_a_layer_is_refused():
    assert prune.topk_mask(np.ones(10), 0.01).sum() == 1        # int(9.9) = 9 dropped
    with pytest.raises(ValueError, match="keeps no weight of a layer of 10"):
        prune.topk_mask(np.ones(10), 1e-17)                     # 1 - 1e-17 == 1.0
    with pytest.raises(ValueError, match="NaN or inf"):
        prune.topk_mask(np.array([1.0, np.nan, 2.0]), 0.5)


# ---- the adaptive allocation ------------------------------------------------------------------
sizes_strategy = st.lists(st.integers(1, 5000), min_size=1, max_size=12)


def kept_counts(sizes, ratios):
    return [n - int((1 - rho) * n) for n, rho in zip(sizes, ratios)]


def assume_nonempty(sizes, keep, p):
    try:
        return prune.adaptive_keep_ratios(sizes, keep, p)
    except ValueError as error:
        assert "with no weight" in str(error)
        return None


@given(sizes_strategy, st.floats(0.01, 1.0), st.floats(0.0, 1.0))
def test_kept_counts_sum_to_the_target_within_one_weight_per_layer(sizes, keep, p):
    ratios = assume_nonempty(sizes, keep, p)
    if ratios is None:
        return
    assert all(0 < rho <= 1 for rho in ratios)
    target = int(keep * sum(sizes))
    assert abs(sum(kept_counts(sizes, ratios)) - target) <= len(sizes)


@given(sizes_strategy, st.floats(0.01, 1.0), st.floats(0.0, 0.999))
def test_kept_ratios_do_not_grow_with_layer_size(sizes, keep, p):
    """For n_i <= n_j: rho_j <= rho_i, up to the rounding of one weight per layer in c (the
    greedy rule recomputes c from an integer budget: |c - c_exact| < L / sum n^p)."""
    ratios = assume_nonempty(sizes, keep, p)
    if ratios is None:
        return
    slack = len(sizes)
    for ni, ri in zip(sizes, ratios):
        for nj, rj in zip(sizes, ratios):
            if ni <= nj:
                assert rj <= ri + slack / ni + slack / nj


@given(sizes_strategy, st.floats(0.01, 1.0))
def test_p_one_keeps_the_same_ratio_in_every_layer(sizes, keep):
    ratios = assume_nonempty(sizes, keep, 1.0)
    if ratios is None:
        return
    for n, rho in zip(sizes, ratios):
        assert abs(rho * n - keep * n) <= len(sizes) + 1   # c = keep up to the rounding
    assert prune.uniform_keep_ratios(sizes, keep) == [keep] * len(sizes)


@given(sizes_strategy, st.floats(0.01, 1.0))
def test_p_zero_keeps_equal_counts_clipped_at_dense(sizes, keep):
    ratios = assume_nonempty(sizes, keep, 0.0)
    if ratios is None:
        return
    dense = [rho == 1.0 for rho in ratios]
    counts = [rho * n for n, rho in zip(sizes, ratios)]
    free = [m for m, d in zip(counts, dense) if not d]
    if free:
        assert max(free) - min(free) <= len(sizes)   # the same count up to rounding
        assert all(n <= max(free) + len(sizes) for n, d in zip(sizes, dense) if d)


def cresnet34_sizes():
    """Scores per prunable conv of RBSN's cResNet-34 (1x1-conv classifier), in module order."""
    from ref.models import resnet34
    model = resnet34(classifier="conv")
    return [int(W.size) for W in prune.weights(model).values()]


def test_worked_example_of_the_specification():
    """ALGORITHMS.md 2(b): cResNet-34, K = 0.01. p = 0.1: the stem conv comes out dense, the
    classifier ~77% dense; p = 0: stem and classifier dense, the others ~5,880 each; p = 1: 0.01
    everywhere up to rounding."""
    sizes = cresnet34_sizes()
    assert len(sizes) == 37 and sizes[0] == 1728 and sizes[-1] == 5120
    ratios = prune.adaptive_keep_ratios(sizes, 0.01, 0.1)
    assert ratios[0] == 1.0 and 0.76 < ratios[-1] < 0.78
    assert all(r < 0.01 for r, n in zip(ratios, sizes) if n == 512 * 512 * 9)
    equal = prune.adaptive_keep_ratios(sizes, 0.01, 0.0)
    assert equal[0] == equal[-1] == 1.0
    assert {round(r * n, -1) for r, n in zip(equal[1:-1], sizes[1:-1])} == {5880}
    uniform = prune.adaptive_keep_ratios(sizes, 0.01, 1.0)
    assert all(abs(r * n - 0.01 * n) <= len(sizes) for r, n in zip(uniform, sizes))


def test_adaptive_ratios_follow_the_greedy_order_on_a_hand_computed_case():
    """sizes (300, 100, 200), keep 0.5, p = 0: equal counts of 100 would clip the 100-layer.
    Ascending: 100 -> c = 300 / 3 = 100 -> rho = 1, budget 300 - 100 = 200, c = 200 / 2 = 100;
    200 -> rho = 0.5, budget 100, c = 100; 300 -> rho = 1/3."""
    assert prune.adaptive_keep_ratios([300, 100, 200], 0.5, 0.0) == pytest.approx(
        [1 / 3, 1.0, 0.5], rel=1e-15)


@pytest.mark.parametrize("sizes, keep, p, message", [
    ([10, 20], 0.5, 1.5, "p must be in"), ([10, 20], 0.5, -0.1, "p must be in"),
    ([10, 20], 1.2, 0.5, "keep must be a fraction"), ([], 0.5, 0.5, "sizes must be"),
    ([10, 0], 0.5, 0.5, "sizes must be"), ([10, 2.5], 0.5, 0.5, "sizes must be"),
    ([1000, 1000], 0.0004, 1.0, "with no weight")])
def test_adaptive_ratios_refuse_bad_input(sizes, keep, p, message):
    with pytest.raises(ValueError, match=message):
        prune.adaptive_keep_ratios(sizes, keep, p)


# ---- global ranking and the budget dispatcher -------------------------------------------------
@given(st.data(), st.lists(st.integers(1, 40), min_size=1, max_size=4), st.floats(0.05, 1.0))
def test_global_topk_equals_one_stable_sort_over_all_layers(data, sizes, keep):
    scores = {f"l{i}": tied_scores(data.draw, n).reshape(n, 1) for i, n in enumerate(sizes)}
    want = naive_topk(np.concatenate([s.ravel() for s in scores.values()]), keep)
    try:
        masks = prune.global_topk_masks(scores, keep)
    except ValueError as error:   # the ranking left a layer empty: check that it really did
        assert "would empty the layers" in str(error)
        starts = np.cumsum([0] + sizes)
        assert any(want[a:b].sum() == 0 for a, b in zip(starts, starts[1:]))
        return
    np.testing.assert_array_equal(np.concatenate([m.ravel() for m in masks.values()]), want)


def test_layer_masks_dispatch_each_budget():
    rng = np.random.default_rng(1)
    scores = {"a": rng.standard_normal((4, 25)), "b": rng.standard_normal((10, 40))}
    uniform = prune.layer_masks(scores, 0.2)
    assert [int(m.sum()) for m in uniform.values()] == [20, 80]
    adaptive = prune.layer_masks(scores, 0.2, "adaptive", p=0.0)
    assert [int(m.sum()) for m in adaptive.values()] == [50, 50]   # equal counts, 100 in all
    assert sum(int(m.sum()) for m in prune.layer_masks(scores, 0.2, "global").values()) == 100
    with pytest.raises(ValueError, match="budget must be one of"):
        prune.layer_masks(scores, 0.2, "per-channel")


# ---- backends ---------------------------------------------------------------------------------
@given(st.data(), st.integers(1, 200), keeps)
def test_topk_mask_is_the_same_on_the_gpu_backend(data, n, keep):
    if n - int((1 - keep) * n) < 1:
        keep = 1.0
    scores = tied_scores(data.draw, n).astype(np.float32).reshape(n, 1)
    on_device = prune.topk_mask(gpu.asarray(scores), keep)
    assert isinstance(on_device, gpu.cupy.ndarray)
    np.testing.assert_array_equal(to_host(on_device), prune.topk_mask(scores, keep))
