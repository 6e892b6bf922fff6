"""Lottery ticket and IWI steps against naive references, and the measurements of
ref.prune.sensitivity against loops written here."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ref
from ref import optim, prune
from ref.models import small_cnn
from ref.prune import lottery, sensitivity

T = ref.Tensor


def model64(seed=0):
    return small_cnn(num_classes=3, in_channels=1, width=4, rng=seed).astype(np.float64)


def naive_prune_remaining(arrays, rate):
    """The reference's iterative rule with a plain sort: t = a[Z + int(nonzero rate)]."""
    values = sorted(abs(v) for W in arrays.values() for v in W.ravel().tolist())
    nonzero = sum(v != 0 for v in values)
    t = values[len(values) - nonzero + int(nonzero * rate)]
    return {name: (np.abs(W) > t).astype(float) for name, W in arrays.items()}


@given(st.integers(0, 2**32 - 1), st.floats(0.05, 0.8), st.integers(1, 4))
def test_prune_remaining_equals_the_naive_rule_round_after_round(seed, rate, rounds):
    rng = np.random.default_rng(seed)
    weights = {"a": rng.integers(-6, 7, (6, 5)) / 3, "b": rng.integers(-6, 7, (4, 9)) / 3}
    masks = {name: np.ones_like(W) for name, W in weights.items()}
    for _ in range(rounds):
        effective = {name: W * masks[name] for name, W in weights.items()}
        want = naive_prune_remaining(effective, rate)
        if any(not M.any() for M in want.values()):
            with pytest.raises(ValueError, match="would empty the layers"):
                lottery.prune_remaining(effective, rate)
            return
        masks = lottery.prune_remaining(effective, rate)
        for name in weights:
            np.testing.assert_array_equal(masks[name], want[name])


def test_round_sparsities_follow_the_schedule_on_distinct_weights():
    """Distinct magnitudes (no ties): each round removes int(nonzero rate) + 1 weights (the strict
    > also drops the weight at the threshold index, as the reference does), so the sparsity is
    1 - (1 - rate)^r up to two weights a round."""
    rng = np.random.default_rng(0)
    values = rng.permutation(2000) + 1.0
    weights = {"a": values[:800].reshape(20, 40), "b": values[800:].reshape(30, 40)}
    masks = {name: np.ones_like(W) for name, W in weights.items()}
    kept = 2000
    for r, nominal in enumerate(lottery.round_sparsities(0.2, 5)[1:], start=1):
        masks = lottery.prune_remaining({n: W * masks[n] for n, W in weights.items()}, 0.2)
        kept -= int(kept * 0.2) + 1
        assert sum(int(M.sum()) for M in masks.values()) == kept
        assert abs((1 - kept / 2000) - nominal) <= 2 * r / 2000
    assert lottery.round_sparsities(0.5, 3) == [0, 0.5, 0.75, 0.875]
    with pytest.raises(ValueError, match=r"rate must be a fraction in \(0, 1\)"):
        lottery.round_sparsities(1.0, 3)


def test_rewinding_restores_the_initial_weights_bit_for_bit(rng):
    """Train a little, prune, rewind: every surviving weight (and every BN entry) is theta_0's."""
    model = model64()
    initial = {name: value.copy() for name, value in model.state_dict().items()}
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = rng.random((8, 1, 8, 8)), rng.integers(0, 3, 8)
    for _ in range(3):
        opt.zero_grad()
        ref.ops.cross_entropy(model(T(x)), y).backward()
        opt.step()
    masks = lottery.prune_remaining(prune.effective_weights(model), 0.3)
    lottery.rewind(model, initial, masks)
    state = model.state_dict()
    for name, value in initial.items():
        if name in masks:
            kept = masks[name] == 1
            np.testing.assert_array_equal(state[name][kept], value[kept])
            assert np.all(state[name][~kept] == 0)
        else:
            np.testing.assert_array_equal(state[name], value)
    assert prune.get_masks(model).keys() == masks.keys()
    second = lottery.prune_remaining(prune.effective_weights(model), 0.3)
    lottery.rewind(model, initial, second)               # a second round replaces the masks
    for name, M in prune.get_masks(model).items():
        np.testing.assert_array_equal(M, second[name])


@pytest.mark.parametrize("fill", ["zero", "init"])
def test_inherited_state_takes_the_ticket_where_kept_and_the_fill_elsewhere(fill, rng):
    ticket, dense = model64(seed=1), model64(seed=2)
    initial = {name: value.copy() for name, value in dense.state_dict().items()}
    masks = {name: (rng.random(W.shape) < 0.3).astype(float)
             for name, W in prune.weights(ticket).items()}
    prune.apply_masks(ticket, masks)
    state = lottery.inherited_state(ticket.state_dict(), masks, initial, fill)
    dense.load_state_dict(state)                       # no mask entries: a dense model loads it
    for name, value in dense.state_dict().items():
        want = ticket.state_dict()[name]
        if name in masks:
            fill_values = 0 if fill == "zero" else initial[name]
            want = np.where(masks[name] == 1, want, fill_values)
        np.testing.assert_array_equal(value, want)
    with pytest.raises(ValueError, match="fill must be"):
        lottery.inherited_state(ticket.state_dict(), masks, initial, "random")
    with pytest.raises(ValueError, match="needs initial_state"):
        lottery.inherited_state(ticket.state_dict(), masks, None, "init")


# ---- sensitivity and statistics ----------------------------------------------------------------
def test_kernel_and_channel_counts_equal_loops(rng):
    W = rng.standard_normal((5, 3, 3, 3)) * (rng.random((5, 3, 3, 3)) < 0.4)
    counts = np.zeros(10, int)
    for j in range(5):
        for i in range(3):
            counts[int((W[j, i] != 0).sum())] += 1
    np.testing.assert_array_equal(sensitivity.kernel_kept_counts(W), counts)
    per_out, per_in = sensitivity.kept_per_channel(W)
    np.testing.assert_array_equal(per_out, [(W[j] != 0).sum() for j in range(5)])
    np.testing.assert_array_equal(per_in, [(W[:, i] != 0).sum() for i in range(3)])
    linear = rng.standard_normal((4, 6)) * (rng.random((4, 6)) < 0.5)
    per_out, per_in = sensitivity.kept_per_channel(linear)
    np.testing.assert_array_equal(per_out, (linear != 0).sum(axis=1))
    np.testing.assert_array_equal(per_in, (linear != 0).sum(axis=0))


def test_magnitude_histogram_counts_the_kept_weights():
    W = np.array([0.0, 1e-9, 0.001, -0.5, 8.0, 100.0])
    counts = sensitivity.magnitude_histogram(W)
    assert counts.sum() == 5                              # the zero is not a kept weight
    edges = sensitivity.HISTOGRAM_EDGES
    assert counts[0] == 1 and counts[-1] == 2             # 1e-9 clipped low, 8 and 100 high
    assert counts[np.searchsorted(edges, -3, side="right") - 1] == 1


def test_channels_present_and_compression(rng):
    model = model64()
    masks = {name: np.ones(W.shape) for name, W in prune.weights(model).items()}
    masks["features.0.weight"][1] = 0                    # one of 4 filters gone
    masks["classifier.2.weight"][:] = 0
    masks["classifier.2.weight"][0, 0] = 1
    prune.apply_masks(model, masks)
    present = sensitivity.channels_present(model)
    assert present["layers"]["features.0.weight"] == 0.75
    assert present["layers"]["classifier.2.weight"] == 1 / 3
    total = sum(W.shape[0] for W in prune.weights(model).values())
    assert present["global"] == pytest.approx((total - 1 - 2) / total)
    report = prune.sparsity(model)
    assert sensitivity.compression_ratio(report) == pytest.approx(
        sum(M.size for M in masks.values()) / sum(M.sum() for M in masks.values()))
    stats = sensitivity.layer_statistics(model)
    assert stats["layers"]["features.0.weight"]["kernel_kept_counts"] == [1] + [0] * 8 + [3]


def test_layer_sensitivity_prunes_one_layer_at_a_time_and_restores_it(rng):
    model = model64()
    masks = {name: (rng.random(W.shape) < 0.8).astype(float)
             for name, W in prune.weights(model).items()}
    prune.apply_masks(model, masks)
    before = {name: value.copy() for name, value in model.state_dict().items()}
    x = rng.random((4, 1, 8, 8))
    seen = []

    def measure(m):
        seen.append({n: int(r["kept"]) for n, r in prune.sparsity(m)["layers"].items()})
        return {"sum": float(m.eval()(T(x)).data.sum())}

    result = sensitivity.layer_sensitivity(model, measure, 0.5)
    names = list(masks)
    assert list(result["layers"]) == names
    for k, name in enumerate(names):
        for other in names:      # only the named layer lost weights: LUP's t = a[int(n / 2)],
            n = masks[other].size                # and the strict > drops that one too
            if other == name:
                assert seen[k + 1][other] == n - int(n * 0.5) - 1
            else:
                assert seen[k + 1][other] == int(masks[other].sum())
        assert result["layers"][name]["sum_drop"] == result["base"]["sum"] - \
            result["layers"][name]["sum"]
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    with pytest.raises(ValueError, match="1 - fraction must be a fraction"):
        sensitivity.layer_sensitivity(model, measure, 1.0)
