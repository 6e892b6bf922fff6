"""BCS (ref.prune.bcs) against its definition (ALGORITHMS.md 4 and 7.4): the weight s max(theta, 0)
and its gradient against a naive conv / linear, exact initial counts with the reference's
per-layer densities (VGG16, ResNet), rewire against a naive reference with the same draws and
against a hand example with injected draws, one optimizer step against a hand computation,
hypothesis invariants of the whole step, resume, the baselines' masks, numpy vs the (emulated)
gpu backend over ten steps, and bad input."""
import copy
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gpu
import ref
import ref.prune.bcs as bcs
import reference
from backends import to_host
from ref import checkpoint, prune
from ref.models import resnet18, resnet50, small_cnn, vgg16_bn, wrn_28_4
from ref.nn import BatchNorm2d, Conv2d, Flatten, Linear, ReLU, Sequential

SEEDS = st.integers(0, 2**32 - 1)
EPSILON = bcs.REACTIVATED


class Draws:
    """A stand-in for the numpy Generator that returns the given draws in order and records the
    calls (the randomness injected by hand)."""

    def __init__(self, *draws):
        self.draws, self.calls = list(draws), []

    def choice(self, a, size, replace=True, p=None):
        self.calls.append((a, size, replace, None if p is None else list(p)))
        return np.array(self.draws.pop(0), dtype=np.int64)

    def standard_normal(self, shape, dtype=np.float64):
        self.calls.append(("normal", shape))
        return np.array(self.draws.pop(0), dtype=dtype).reshape(shape)


def tiny_net(seed, c=2, o=3, k=4):
    """conv3x3 (no bias) -> BN -> ReLU -> Linear, inputs (n, c, 4, 4), float64."""
    rng = np.random.default_rng(seed)
    return Sequential(Conv2d(c, o, 3, padding=1, bias=False, rng=rng), BatchNorm2d(o), ReLU(),
                      Flatten(), Linear(o * 16, k, rng=rng)).astype(np.float64)


def rewiring_net(seed, connectivity=0.5, **kw):
    model = tiny_net(seed, **kw)
    densities = bcs.reference_densities(model, connectivity)
    return bcs.to_rewiring(model, bcs.initial_parameters(model, densities, rng=seed))


def signed_thetas(rng, shape, dormant=0.4):
    """theta with positives, exact zeros and negatives; signs +-1."""
    theta = rng.standard_normal(shape)
    theta[rng.random(shape) < dormant / 2] = 0
    return theta, np.where(rng.random(shape) < 0.5, -1.0, 1.0)


# ---- the parameterisation ----------------------------------------------------------------------
@given(seed=SEEDS, conv=st.booleans())
def test_weight_is_s_theta_on_active_positions_and_dormant_ones_are_exactly_inert(seed, conv):
    """W = s theta [theta > 0]; dL/dtheta = s dL/dW [theta > 0] (dL/dW from the naive op); a
    dormant connection adds exactly 0 and gets exactly 0 (ALGORITHMS.md 7.4.1)."""
    rng = np.random.default_rng(seed)
    layer = (bcs.RewiringConv2d(2, 3, 3, padding=1, bias=True) if conv
             else bcs.RewiringLinear(5, 3, bias=True)).astype(np.float64)
    theta, s = signed_thetas(rng, layer.weight.shape)
    layer.weight.data[...] = theta
    layer.set_sign(s)
    x = rng.standard_normal((2, 2, 4, 4) if conv else (2, 5))
    W = s * theta * (theta > 0)                                                    # (W.shape)
    naive = reference.conv2d(x, W, layer.bias.data, padding=1) if conv else \
        reference.linear(x, W, layer.bias.data)
    y = layer(ref.Tensor(x))
    np.testing.assert_allclose(y.data, naive, rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    gW = (reference.conv2d_weight_grad(gy, x, W.shape, padding=1) if conv else gy.T @ x)
    np.testing.assert_allclose(layer.weight.grad, s * gW * (theta > 0), rtol=1e-12, atol=1e-12)
    assert np.all(layer.weight.grad[theta <= 0] == 0)
    other = np.where(theta > 0, theta, -rng.random(theta.shape))   # other dormant values
    layer.weight.data[...] = other
    np.testing.assert_array_equal(layer(ref.Tensor(x)).data, y.data)


def test_dense_form_bakes_s_theta_into_plain_layers():
    model = rewiring_net(0)
    x = np.random.default_rng(1).standard_normal((3, 2, 4, 4))
    model.eval()
    before = model(ref.Tensor(x)).data
    theta = bcs.thetas(model)
    signs = {name: layer.weight_sign.data for name, layer in bcs.rewiring_layers(model).items()}
    dense = bcs.dense_form(copy.deepcopy(model))
    assert not bcs.rewiring_layers(dense)
    assert not any(name.endswith(bcs.SIGN) for name, _ in dense.named_buffers())
    for name, W in prune.weights(dense).items():
        np.testing.assert_array_equal(W, signs[name] * np.maximum(theta[name], 0))
    np.testing.assert_array_equal(dense(ref.Tensor(x)).data, before)
    plain = tiny_net(5)
    plain.load_state_dict(dense.state_dict())           # a plain network of the same layout


def test_reference_batch_norm_stores_the_biased_variance():
    model = bcs.reference_batch_norm(tiny_net(0))
    x = np.random.default_rng(0).standard_normal((4, 2, 4, 4))
    model(ref.Tensor(x))
    bn = model[1]
    assert bn.biased_running_var
    z = reference.conv2d(x, model[0].weight.data, padding=1)                       # (n, o, h, w)
    np.testing.assert_allclose(bn.running_var.data, 0.9 + 0.1 * z.var(axis=(0, 2, 3)),
                               rtol=1e-12)


# ---- initial connectivity -------------------------------------------------------------------
def fan_in_out(W):
    return math.prod(W.shape[1:]), W.shape[0]


@pytest.mark.parametrize("connectivity", [0.01, 0.1])
def test_initial_counts_are_exact_with_the_reference_densities_of_vgg16(connectivity):
    """models/sparse_vgg16.py: conv1-2 0.6, conv3-4 0.2, conv5-13 and dense14-15 0.5 p,
    dense16 0.6; exactly int(p_l fan_in fan_out) active positions per layer."""
    p = connectivity
    model = vgg16_bn(classifier="hydra", rng=0)
    want = [0.6, 0.6, 0.2, 0.2] + [0.5 * p] * 11 + [0.6]
    densities = bcs.reference_densities(model, p)
    assert list(densities.values()) == want
    if connectivity == 0.1:
        return                                           # the draws once are enough
    initial = bcs.initial_parameters(model, densities, rng=0)
    for (name, W), density in zip(prune.weights(model).items(), want):
        fan_in, fan_out = fan_in_out(W)
        assert int(initial[name]["active"].sum()) == int(density * fan_in * fan_out), name


def test_reference_densities_of_the_resnets_and_the_wide_resnet():
    """sparse_resnet.py: stem 0.6, stage 1 0.2 (its shortcuts too), stages 2-4 0.5 p, output
    0.6; sparse_wideresnet.py: stem 0.6, block 1 0.1, blocks 2-3 0.5 p, output 0.6."""
    p = 0.05
    for model in (resnet18(rng=0), resnet50(width=8, rng=0)):
        densities = bcs.reference_densities(model, p)
        for name, density in densities.items():
            stage = name.split(".")[0]
            want = {"conv1": 0.6, "linear": 0.6, "layer1": 0.2}.get(stage, 0.5 * p)
            assert density == want, name
    assert densities["layer1.0.shortcut.0.weight"] == 0.2      # ResNet-50's stage-1 shortcut
    densities = bcs.reference_densities(wrn_28_4(rng=0), p)
    for name, density in densities.items():
        want = {"conv1": 0.6, "fc": 0.6, "block1": 0.1}.get(name.split(".")[0], 0.5 * p)
        assert density == want, name


def test_initial_counts_of_a_resnet_and_the_count_rule():
    model = resnet18(width=8, rng=0)
    densities = bcs.reference_densities(model, 0.01)
    initial = bcs.initial_parameters(model, densities, rng=3)
    for name, W in prune.weights(model).items():
        fan_in, fan_out = fan_in_out(W)
        assert int(initial[name]["active"].sum()) == int(densities[name] * fan_in * fan_out)
    # the reference multiplies left to right: 0.29 * 10 * 10 is 29.000000000000004, while
    # 0.29 * 100 is 28.999999999999996
    assert bcs.active_count(10, 10, 0.29) == 29 and int(0.29 * 100) == 28


@given(seed=SEEDS, connectivity=st.sampled_from([0.05, 0.3, 1.0]))
def test_initial_parameters_and_to_rewiring(seed, connectivity):
    """theta = |he_normal| * active (|x| <= 2 sigma), s = +-1, biases 0; the same seed gives the
    same draws, on both backends."""
    model = tiny_net(seed)
    densities = bcs.reference_densities(model, connectivity)
    initial = bcs.initial_parameters(model, densities, rng=seed)
    again = bcs.initial_parameters(model, densities, rng=seed)
    for name, drawn in initial.items():
        for key in drawn:
            np.testing.assert_array_equal(again[name][key], drawn[key])
        fan_in = math.prod(drawn["sign"].shape[1:])
        sigma = math.sqrt(2 / fan_in) / bcs.HE_STD_CORRECTION
        assert np.all((drawn["magnitude"] >= 0) & (drawn["magnitude"] <= 2 * sigma))
        assert set(np.unique(drawn["sign"])) <= {-1.0, 1.0}
    on_gpu = copy.deepcopy(model).to("gpu")
    for net in (bcs.to_rewiring(model, initial), bcs.to_rewiring(on_gpu, initial)):
        for name, layer in bcs.rewiring_layers(net).items():
            drawn = initial[name]
            np.testing.assert_array_equal(to_host(layer.weight),
                                          drawn["magnitude"] * drawn["active"])
            np.testing.assert_array_equal(to_host(layer.weight_sign), drawn["sign"])
            assert layer.bias is None or not to_host(layer.bias).any()
    assert isinstance(on_gpu[0].weight.data, gpu.cupy.ndarray)


# ---- rewiring -------------------------------------------------------------------------------
def naive_rewire(thetas, budget, rng):
    """The reference's sample_connectivity written with loops, the same draws in the same order:
    rng.choice(L, R, p = n_l / sum n), then per drawn layer rng.choice(#dormant, r_l) ranks into
    its dormant positions listed in C order."""
    thetas = {name: theta.copy() for name, theta in thetas.items()}
    sizes = [theta.size for theta in thetas.values()]
    active = sum(1 for theta in thetas.values() for value in theta.flat if value > 0)
    reactivated = dict.fromkeys(thetas, 0)
    if budget - active <= 0:
        return thetas, reactivated
    per_layer = [0] * len(sizes)
    for layer in rng.choice(len(sizes), budget - active, p=np.array(sizes) / sum(sizes)):
        per_layer[layer] += 1
    for (name, theta), r in zip(thetas.items(), per_layer):
        if r == 0:
            continue
        dormant = [index for index in np.ndindex(theta.shape) if theta[index] <= 0]
        r = min(r, len(dormant))
        for rank in rng.choice(len(dormant), r, replace=False):
            theta[dormant[rank]] = EPSILON
        reactivated[name] = r
    return thetas, reactivated


layer_shapes = st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
                        min_size=1, max_size=4)


@given(shapes=layer_shapes, dormant=st.floats(0.0, 1.0), budget_fraction=st.floats(0.0, 1.0),
       seed=SEEDS)
def test_rewire_equals_the_naive_reference_with_the_same_draws(shapes, dormant,
                                                               budget_fraction, seed):
    rng = np.random.default_rng(seed)
    thetas = {f"layer{i}": signed_thetas(rng, shape, dormant)[0] for i, shape in enumerate(shapes)}
    total = sum(theta.size for theta in thetas.values())
    budget = int(budget_fraction * total)
    want, want_counts = naive_rewire(thetas, budget, np.random.default_rng(seed + 1))
    got = {name: theta.copy() for name, theta in thetas.items()}
    counts = bcs.rewire(got, budget, np.random.default_rng(seed + 1))
    assert counts == want_counts
    for name in thetas:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_rewire_with_injected_draws_by_hand():
    """ALGORITHMS.md 7.4.3: three layers with 2, 1 and 1 active connections, budget 7: R = 3;
    the layer draw [2, 0, 2] gives r = (1, 0, 2); the ranks pick among the dormant positions in
    C order (layer 0: flat 1, 2; layer 2: flat 1, 2)."""
    thetas = {"a": np.array([0.3, -0.1, 0.0, 0.2]), "b": np.array([[-1.0, 0.5], [0.0, -2.0]]),
              "c": np.array([0.1, -0.4, -0.5])}
    draws = Draws([2, 0, 2], [1], [1, 0])
    counts = bcs.rewire(thetas, 7, draws)
    assert draws.calls == [(3, 3, True, [4 / 11, 4 / 11, 3 / 11]), (2, 1, False, None),
                           (2, 2, False, None)]
    assert counts == {"a": 1, "b": 0, "c": 2}
    np.testing.assert_array_equal(thetas["a"], [0.3, -0.1, EPSILON, 0.2])
    np.testing.assert_array_equal(thetas["b"], [[-1.0, 0.5], [0.0, -2.0]])
    np.testing.assert_array_equal(thetas["c"], [0.1, EPSILON, EPSILON])


@given(shapes=layer_shapes, dormant=st.floats(0.0, 1.0), budget_fraction=st.floats(0.0, 1.0),
       seed=SEEDS)
def test_rewire_invariants(shapes, dormant, budget_fraction, seed):
    """Active connections stay as they are (nothing pruned, also above the budget); reactivated
    ones were dormant and hold exactly 1e-12; the active count reaches the budget whenever every
    layer has at least the missing number of dormant positions, and never passes it."""
    rng = np.random.default_rng(seed)
    before = {f"layer{i}": signed_thetas(rng, shape, dormant)[0]
              for i, shape in enumerate(shapes)}
    total = sum(theta.size for theta in before.values())
    budget = int(budget_fraction * total)
    after = {name: theta.copy() for name, theta in before.items()}
    counts = bcs.rewire(after, budget, rng)
    active_before = sum((theta > 0).sum() for theta in before.values())
    active_after = sum((theta > 0).sum() for theta in after.values())
    missing = budget - active_before
    for name, theta in before.items():
        changed = after[name] != theta
        assert np.all(theta[changed] <= 0) and np.all(after[name][changed] == EPSILON)
        assert counts[name] == changed.sum()
    assert active_before <= active_after <= max(active_before, budget)
    if missing <= 0:
        assert active_after == active_before
    elif all((theta <= 0).sum() >= missing for theta in before.values()):
        assert active_after == budget


# ---- one step of the optimizer --------------------------------------------------------------
def hand_net():
    layer = bcs.RewiringLinear(2, 2).astype(np.float64)
    layer.weight.data[...] = [[0.5, -0.2], [0.0, 0.3]]
    layer.set_sign(np.array([[1.0, -1.0], [-1.0, 1.0]]))
    layer.bias.data[...] = [0.5, -0.5]
    return Sequential(layer)


def test_one_step_equals_the_hand_computation():
    """ALGORITHMS.md 7.4.4 with lr 0.1, wd 0.01 (lr = lr_0, so wd_t = 0.01), m 0.9, sigma 0.5
    (noise_std = lr sigma = 0.05), noise nu = [[1, 2], [-1, -2]]:
        theta_1 = theta - 0.01 theta         = [[0.495, -0.198], [0, 0.297]]
        v'      = 0.9 v - 0.1 g              = [[0.17, -0.11], [0.075, -0.04]]
        theta_2 = theta_1 + v'               = [[0.665, -0.308], [0.075, 0.257]]
        theta_3 = theta_2 + 0.05 nu A_before = [[0.715, -0.308], [0.075, 0.157]]
    (A_before = [[1, 0], [0, 1]]: the connection at [1, 0], dormant at 0, becomes active
    through its momentum and gets no noise); the bias gets the SGDW step without noise:
        b = 0.99 [0.5, -0.5] - 0.1 [1, -1] = [0.395, -0.395].
    Budget 3 = the active count after the step: nothing is rewired."""
    model = hand_net()
    theta, bias = model[0].weight, model[0].bias
    optimizer = bcs.RewiringSGDW(model, lr=0.1, budget=3, momentum=0.9, weight_decay=0.01,
                                 noise=0.5)
    optimizer.rng = draws = Draws([[1.0, 2.0], [-1.0, -2.0]])
    optimizer.state[0]["velocity"] = np.array([[0.2, -0.1], [0.05, 0.0]])
    theta.grad = np.array([[0.1, 0.2], [-0.3, 0.4]])
    bias.grad = np.array([1.0, -1.0])
    optimizer.step()
    np.testing.assert_allclose(theta.data, [[0.715, -0.308], [0.075, 0.157]], rtol=1e-14,
                               atol=1e-15)
    np.testing.assert_allclose(optimizer.state[0]["velocity"], [[0.17, -0.11], [0.075, -0.04]],
                               rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(bias.data, [0.395, -0.395], rtol=1e-14, atol=1e-15)
    assert draws.calls == [("normal", (2, 2))] and optimizer.last_rewired == {"0.weight": 0}


def test_temperature_gives_the_langevin_noise_and_zero_noise_draws_nothing():
    model = hand_net()
    optimizer = bcs.RewiringSGDW(model, lr=0.1, budget=2, temperature=0.02)
    assert optimizer.noise_std == pytest.approx(math.sqrt(2 * 0.1 * 0.02), rel=1e-15)
    quiet = bcs.RewiringSGDW(model, lr=0.1, budget=2, noise=0.0)
    quiet.rng = Draws()
    model[0].weight.grad = np.zeros((2, 2))
    quiet.step()                                         # Draws() would fail on any draw


@given(seed=SEEDS, connectivity=st.sampled_from([0.1, 0.5, 0.9]), steps=st.integers(1, 4))
def test_step_invariants(seed, connectivity, steps):
    """Over steps with random gradients (noise off, so theta before the rewire is the SGDW
    value): signs never change; the velocity is m v - lr g everywhere (a reactivated connection
    keeps it); theta is the SGDW value except at reactivated positions, which were dormant and
    hold exactly 1e-12; the active count is the budget whenever every layer had enough dormant
    positions."""
    rng = np.random.default_rng(seed)
    model = rewiring_net(seed, connectivity)
    sizes = [theta.size for theta in bcs.thetas(model).values()]
    budget = bcs.global_budget(sizes, connectivity)
    optimizer = bcs.RewiringSGDW(model, lr=0.05, budget=budget, noise=0.0, rng=seed)
    layers = bcs.rewiring_layers(model)
    signs = {name: layer.weight_sign.data.copy() for name, layer in layers.items()}
    velocity = {name: np.zeros(layer.weight.shape) for name, layer in layers.items()}
    index = {id(p): i for i, p in enumerate(optimizer.params)}
    for _ in range(steps):
        for p in model.parameters():
            p.grad = rng.standard_normal(p.shape)
        start = {name: layer.weight.data.copy() for name, layer in layers.items()}
        grads = {name: layer.weight.grad for name, layer in layers.items()}
        optimizer.step()
        sgdw = {}
        for name, theta in start.items():
            velocity[name] = 0.9 * velocity[name] - 0.05 * grads[name]
            sgdw[name] = theta - optimizer.decay * theta + velocity[name]
            np.testing.assert_allclose(optimizer.state[index[id(layers[name].weight)]][
                "velocity"], velocity[name], rtol=1e-13, atol=1e-15)
        missing = budget - sum((theta > 0).sum() for theta in sgdw.values())
        for name, layer in layers.items():
            theta = layer.weight.data
            reactivated = (sgdw[name] <= 0) & (theta > 0)
            np.testing.assert_array_equal(theta[reactivated], EPSILON)
            np.testing.assert_allclose(theta[~reactivated], sgdw[name][~reactivated],
                                       rtol=1e-13, atol=1e-15)
            np.testing.assert_array_equal(layer.weight_sign.data, signs[name])
        active = sum(bcs.active_counts(bcs.thetas(model)).values())
        if missing > 0 and all((theta <= 0).sum() >= missing for theta in sgdw.values()):
            assert active == budget


def test_resumed_optimizer_draws_what_the_uninterrupted_one_draws(tmp_path):
    """The rng state and the rewired count travel in the optimizer's state (a checkpoint)."""
    def run(steps, model, optimizer, start=0):
        for step in range(start, steps):
            grads = np.random.default_rng(step)
            for p in model.parameters():
                p.grad = grads.standard_normal(p.shape)
            optimizer.step()

    def fresh():
        model = rewiring_net(7, 0.3)
        return model, bcs.RewiringSGDW(model, lr=0.1, budget=200, noise=0.1, rng=11)

    model, optimizer = fresh()
    run(5, model, optimizer)
    first, first_optimizer = fresh()
    run(3, first, first_optimizer)
    checkpoint.save(tmp_path / "c.h5", first, first_optimizer)
    resumed, resumed_optimizer = fresh()
    checkpoint.load(tmp_path / "c.h5", resumed, resumed_optimizer)
    run(5, resumed, resumed_optimizer, start=3)
    assert resumed_optimizer.rewired == optimizer.rewired > 0
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


# ---- the baselines --------------------------------------------------------------------------
def test_baselines_fixed_masks_and_weights():
    model = rewiring_net(0)                       # only for the layer shapes
    plain = tiny_net(0)
    initial = bcs.initial_parameters(plain, dict.fromkeys(prune.weights(plain), 0.1), rng=2)
    total = sum(W.size for W in prune.weights(plain).values())
    budget = bcs.global_budget([total], 0.3)
    masks = bcs.random_fixed_masks(initial, budget, np.random.default_rng(3))
    assert sum(int(M.sum()) for M in masks.values()) == budget
    for name, M in masks.items():
        assert np.all(M[initial[name]["active"] == 1] == 1)       # the initial set is kept
    bcs.to_fixed(plain, initial, masks)
    for name, W in prune.weights(plain).items():
        drawn = initial[name]
        np.testing.assert_array_equal(W, drawn["sign"] * drawn["magnitude"] * masks[name])
    counts = {name: int(M.sum()) for name, M in masks.items()}
    trained = prune.weights(tiny_net(4))
    magnitude = bcs.magnitude_fixed_masks(trained, counts)
    assert set(magnitude) == set(bcs.thetas(model))
    for name, M in magnitude.items():
        assert M.sum() == counts[name]
        assert np.abs(trained[name][M == 1]).min() > np.abs(trained[name][M == 0]).max()
    empty = bcs.magnitude_fixed_masks(trained, dict.fromkeys(counts, 0))
    assert not any(M.any() for M in empty.values())


# ---- numpy and gpu --------------------------------------------------------------------------
def test_numpy_and_emulated_gpu_agree_on_ten_steps_in_float64():
    """The same seed: the same noise, layer draws and positions on both backends; theta,
    velocities and the reactivated counts agree at every step."""
    x = np.random.default_rng(0).random((8, 1, 8, 8))
    y = np.arange(8) % 4
    model = small_cnn(num_classes=4, in_channels=1, width=4, rng=0).astype(np.float64)
    densities = bcs.reference_densities(model, 0.2)
    bcs.to_rewiring(model, bcs.initial_parameters(model, densities, rng=1))
    budget = bcs.global_budget([t.size for t in bcs.thetas(model).values()], 0.2)
    runs = {}
    for backend, move in ((ref, np.asarray), (gpu, gpu.asarray)):
        net = copy.deepcopy(model).to("numpy" if backend is ref else "gpu")
        optimizer = bcs.RewiringSGDW(net, lr=0.1, budget=budget, noise=0.05, rng=5)
        history = []
        for _ in range(10):
            logits = net(backend.Tensor(move(x)))
            loss = logits.ops.cross_entropy(logits, move(y))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append((dict(optimizer.last_rewired),   # copies: numpy updates in place
                            {name: to_host(t).copy() for name, t in optimizer.thetas().items()},
                            [to_host(s["velocity"]).copy() for s in optimizer.state]))
        runs[backend] = history
    assert sum(sum(step[0].values()) for step in runs[ref]) > 0
    for step, (want, got) in enumerate(zip(runs[ref], runs[gpu])):
        assert got[0] == want[0], step
        for name, theta in want[1].items():
            np.testing.assert_array_equal(got[1][name] > 0, theta > 0, err_msg=f"{step} {name}")
            np.testing.assert_allclose(got[1][name], theta, rtol=1e-10, atol=1e-13)
        for a, b in zip(got[2], want[2]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


# ---- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("connectivity", [0, 1.5, -0.1, float("nan"), True])
def test_connectivity_outside_the_unit_interval_is_refused(connectivity):
    with pytest.raises(ValueError, match=f"connectivity must be a fraction in \\(0, 1\\], got "
                                         f"{connectivity!r}"):
        bcs.reference_densities(tiny_net(0), connectivity)
    with pytest.raises(ValueError, match="connectivity"):
        bcs.global_budget([10], connectivity)


def test_bad_budget_noise_temperature_density_and_layers_are_refused():
    model = rewiring_net(0)
    total = sum(t.size for t in bcs.thetas(model).values())
    with pytest.raises(ValueError, match=f"budget {total + 1} is larger than the {total} "
                                         f"prunable weights"):
        bcs.RewiringSGDW(model, lr=0.1, budget=total + 1)
    with pytest.raises(ValueError, match=f"budget {total + 1} is larger"):
        bcs.rewire(bcs.thetas(model), total + 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="budget must be a non-negative integer, got -1"):
        bcs.rewire(bcs.thetas(model), -1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="noise must be a number >= 0, got -0.1"):
        bcs.RewiringSGDW(model, lr=0.1, budget=10, noise=-0.1)
    with pytest.raises(ValueError, match="temperature must be None or a number >= 0, got -1"):
        bcs.RewiringSGDW(model, lr=0.1, budget=10, temperature=-1)
    with pytest.raises(ValueError, match="has no rewiring layer"):
        bcs.RewiringSGDW(tiny_net(0), lr=0.1, budget=10)
    with pytest.raises(ValueError, match="initial density of 4.weight must lie in \\[0, 1\\], "
                                         "got 1.2"):
        bcs.initial_parameters(tiny_net(0), {"4.weight": 1.2})
    with pytest.raises(KeyError, match="no prunable layer has the weight"):
        bcs.initial_parameters(tiny_net(0), {"1.weight": 0.5})
    initial = bcs.initial_parameters(model, {"0.weight": 0.5}, rng=0)
    with pytest.raises(TypeError, match="0.weight belongs to a RewiringConv2d"):
        bcs.to_rewiring(model, initial)
