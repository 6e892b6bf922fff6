"""Masks: the masked_weight op (values, exactly-zero gradients, gradient check, gpu twin), masks
in layers and checkpoints, the mask-aware optimizer step, sparsity accounting, GUP / LUP against
naive thresholds written here, and bad input."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gpu
import ref
from backends import compare, to_host
from ref import checkpoint, optim, prune
from ref.gradcheck import check_vjp
from ref.models import small_cnn

T = ref.Tensor
ROOT = Path(__file__).resolve().parents[1]


def random_mask(rng, shape, keep=0.5):
    return (rng.random(shape) < keep).astype(np.float64)


# ---- the op ------------------------------------------------------------------------------------
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_masked_weight_values_and_gradient(shape, seed):
    rng = np.random.default_rng(seed)
    W = T(rng.standard_normal(shape), requires_grad=True)
    M = random_mask(rng, shape)
    y = ref.ops.masked_weight(W, M)
    np.testing.assert_array_equal(y.data, W.data * M)
    gy = rng.standard_normal(shape)
    y.backward(gy)
    np.testing.assert_array_equal(W.grad, gy * M)
    assert np.all(W.grad[M == 0] == 0)
    check_vjp(lambda w: ref.ops.masked_weight(w, M), [W], rng)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 2**32 - 1))
def test_masked_weight_is_the_same_on_the_gpu_backend(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(shape)
    M = random_mask(rng, shape).astype(dtype)
    result = compare("masked_weight", [W, M], dtype=dtype, requires_grad=[True, False])
    assert np.all(result.gpu_grads[0][M == 0] == 0)


def test_masked_weight_refuses_a_mask_of_another_shape_or_dtype():
    W = T(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"mask is float64 \(3, 2\), the weight float64 \(2, 3\)"):
        ref.ops.masked_weight(W, np.ones((3, 2)))
    with pytest.raises(ValueError, match="float32"):
        ref.ops.masked_weight(W, np.ones((2, 3), np.float32))


# ---- masks in a model ---------------------------------------------------------------------------
def model64(seed=0):
    return small_cnn(num_classes=3, in_channels=1, width=4, rng=seed).astype(np.float64)


def random_masks(model, seed=0, keep=0.5):
    rng = np.random.default_rng(seed)
    return {name: random_mask(rng, W.shape, keep) for name, W in prune.weights(model).items()}


def test_prunable_layers_and_the_first_last_switches():
    model = model64()
    names = list(prune.prunable_layers(model))
    assert names == ["features.0.weight", "features.3.weight", "features.7.weight",
                     "features.10.weight", "classifier.0.weight", "classifier.2.weight"]
    assert list(prune.prunable_layers(model, first=False, last=False)) == names[1:-1]
    assert list(prune.prunable_layers(model, kinds=("conv",))) == names[:4]
    assert all(not n.endswith("bias") for n in names)    # biases and BN are never prunable
    with pytest.raises(ValueError, match="kinds must be among"):
        prune.prunable_layers(model, kinds=("bn",))


def test_a_masked_model_computes_with_w_times_m_and_masked_weights_get_zero_gradient(rng):
    model, baked = model64(), model64()
    masks = random_masks(model)
    prune.apply_masks(model, masks)
    for name, W in prune.weights(baked).items():
        W *= masks[name]
    x = rng.random((5, 1, 8, 8))
    y = model(T(x))
    np.testing.assert_allclose(y.data, baked(T(x)).data, rtol=1e-12, atol=1e-12)
    y.sum().backward()
    for name, layer in prune.prunable_layers(model).items():
        assert np.all(layer.weight.grad[masks[name] == 0] == 0)
        assert np.all(layer.weight.data[masks[name] == 0] == 0)
    assert prune.get_masks(model).keys() == masks.keys()


def test_sparsity_counts_layers_kinds_and_the_whole(rng):
    model = model64()
    masks = random_masks(model, keep=0.3)
    prune.apply_masks(model, masks)
    report = prune.sparsity(model)
    for name, M in masks.items():
        layer = report["layers"][name]
        assert layer["size"] == M.size and layer["kept"] == int(M.sum())
        assert layer["zeros"] == M.size - int(M.sum())
        assert layer["sparsity"] == pytest.approx(1 - M.sum() / M.size)
    conv = [M for n, M in masks.items() if n.startswith("features")]
    assert report["conv"]["kept"] == sum(int(M.sum()) for M in conv)
    assert report["linear"]["size"] == sum(M.size for n, M in masks.items()
                                           if n.startswith("classifier"))
    assert report["global"]["kept"] == sum(int(M.sum()) for M in masks.values())
    prune.remove_masks(model)                  # baked in: the zeros still count
    assert prune.sparsity(model) == report and prune.get_masks(model) == {}


def test_masks_survive_a_checkpoint_round_trip(tmp_path):
    model = model64()
    masks = random_masks(model)
    prune.apply_masks(model, masks)
    checkpoint.save(tmp_path / "m.h5", model)
    saved = prune.masks.masks_in_checkpoint(checkpoint.read(tmp_path / "m.h5"))
    assert saved.keys() == masks.keys()
    other = model64(seed=1)
    prune.apply_masks(other, {name: np.ones_like(M) for name, M in saved.items()})
    checkpoint.load(tmp_path / "m.h5", other)
    for name, M in prune.get_masks(other).items():
        np.testing.assert_array_equal(M, masks[name])
    with pytest.raises(KeyError, match="unexpected"):      # masks need masked layers to load into
        checkpoint.load(tmp_path / "m.h5", model64())


@pytest.mark.parametrize("bad, message", [
    ({"features.0.weight": np.ones((4, 1, 3, 2))}, r"shape \(4, 1, 3, 2\) does not match"),
    ({"features.0.weight": np.full((4, 1, 3, 3), 0.5)}, r"is not 0/1: it holds \[0.5"),
    ({"features.1.weight": np.ones(4)}, "no prunable layer has the weight"),
    ({"nowhere.weight": np.ones(4)}, "no prunable layer has the weight")])
def test_bad_masks_are_refused_and_nothing_changes(bad, message):
    model = model64()
    before = {name: W.copy() for name, W in model.state_dict().items()}
    good = random_masks(model)
    with pytest.raises((ValueError, KeyError), match=message):
        prune.apply_masks(model, {**good, **bad})
    assert prune.get_masks(model) == {}
    for name, W in model.state_dict().items():
        np.testing.assert_array_equal(W, before[name])


def test_expand_channel_mask():
    m = np.array([1.0, 0.0, 1.0])
    filters = prune.expand_channel_mask(m, (3, 2, 1, 1), axis=0)
    np.testing.assert_array_equal(filters[:, :, 0, 0], [[1, 1], [0, 0], [1, 1]])
    inputs = prune.expand_channel_mask(m, (2, 3), axis=1)
    np.testing.assert_array_equal(inputs, [[1, 0, 1], [1, 0, 1]])
    with pytest.raises(ValueError, match="does not fit axis 1"):
        prune.expand_channel_mask(m, (3, 2), axis=1)


# ---- the mask-aware optimizer step ---------------------------------------------------------------
OPTIMIZERS = [
    (optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=5e-4)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    (optim.SGDW, dict(lr=0.1, momentum=0.9, weight_decay=5e-4)),
    (optim.Adam, dict(lr=0.01, weight_decay=1e-3))]


@pytest.mark.parametrize("make, kw", OPTIMIZERS)
def test_masked_weights_stay_exactly_zero_when_state_predates_the_mask(make, kw, rng):
    """Two unmasked steps build momentum everywhere, then masks arrive: every later step leaves
    the pruned weights at exactly 0, while the kept weights move as an unmasked optimizer moves
    them on the same gradients with the same (masked) state."""
    model = model64()
    x, y = rng.random((6, 1, 8, 8)), rng.integers(0, 3, 6)
    optimizer = make(model.parameters(), **kw)

    def step():
        optimizer.zero_grad()
        ref.ops.cross_entropy(model(T(x)), y).backward()
        optimizer.step()

    step()
    step()
    masks = random_masks(model, keep=0.3)
    prune.apply_masks(model, masks)
    prune.mask_optimizer(optimizer, model)
    for _ in range(3):
        step()
        for name, layer in prune.prunable_layers(model).items():
            assert np.all(layer.weight.data[masks[name] == 0] == 0), name
            assert np.any(layer.weight.data[masks[name] == 1] != 0), name
    assert prune.sparsity(model)["global"]["kept"] == sum(int(M.sum()) for M in masks.values())


def test_the_masked_step_equals_a_plain_step_on_kept_weights(rng):
    """One SGD step with masks = a plain SGD step on W * M with masked gradients, then * M."""
    W0, g = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    M = random_mask(rng, (4, 5))
    masked, plain = T(W0 * M, requires_grad=True), T(W0 * M, requires_grad=True)
    mask = T(M)
    opt = optim.SGD([masked], lr=0.1, momentum=0.9, weight_decay=1e-2)
    opt.set_masks([mask])
    ref_opt = optim.SGD([plain], lr=0.1, momentum=0.9, weight_decay=1e-2)
    for _ in range(3):
        masked.grad, plain.grad = g * M, g * M
        opt.step()
        ref_opt.step()
        np.testing.assert_array_equal(masked.data, plain.data * M)
    with pytest.raises(ValueError, match="1 masks for 2 parameters"):
        optim.SGD([masked, plain], lr=0.1).set_masks([mask])


@given(st.integers(0, 2**32 - 1), st.sampled_from(range(len(OPTIMIZERS) - 1)))
def test_the_masked_step_is_the_same_on_the_gpu_backend(seed, which):
    make, kw = OPTIMIZERS[which]
    rng = np.random.default_rng(seed)
    W0, M = rng.standard_normal((3, 4)), random_mask(rng, (3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(3)]
    results = []
    for backend in (ref, gpu):
        p = backend.Tensor(backend.asarray(W0.copy()), requires_grad=True)
        opt = make([p], **kw)
        for i, g in enumerate(grads):
            if i == 1:
                p.data *= backend.asarray(M)
                opt.set_masks([backend.Tensor(backend.asarray(M))])
            p.grad = backend.asarray(g)
            opt.step()
        results.append(to_host(p.data))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-10, atol=1e-12)
    assert np.all(results[1][M == 0] == 0)


# ---- GUP and LUP -------------------------------------------------------------------------------
def naive_threshold(arrays, fraction_pruned):
    values = sorted(abs(v) for W in arrays for v in W.ravel().tolist())
    return values[int(len(values) * fraction_pruned)]


def tied_weights(rng, sizes):
    """Weights with many equal magnitudes (and zeros): the strict > rule must prune the ties."""
    return {f"l{i}": rng.integers(-4, 5, size).astype(np.float64) / 4
            for i, size in enumerate(sizes)}


@given(st.integers(0, 2**32 - 1),
       st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=4),
       st.floats(0.05, 1.0))
def test_gup_and_lup_equal_the_naive_threshold_rule(seed, sizes, keep):
    weights = tied_weights(np.random.default_rng(seed), sizes)
    t = naive_threshold(weights.values(), 1 - keep)
    want = {name: (np.abs(W) > t).astype(float) for name, W in weights.items()}
    for method, expected in ((prune.magnitude.gup_masks, want),
                             (prune.magnitude.lup_masks,
                              {name: (np.abs(W) > naive_threshold([W], 1 - keep)).astype(float)
                               for name, W in weights.items()})):
        if any(not M.any() for M in expected.values()):
            with pytest.raises(ValueError, match="would empty the layers"):
                method(weights, keep)
            continue
        masks = method(weights, keep)
        for name in weights:
            np.testing.assert_array_equal(masks[name], expected[name])


def test_gup_ranks_globally_and_lup_per_layer():
    """keep 0.7 of 8 weights: GUP t = sorted[int(2.4)] = 0.3 over both layers; LUP t =
    sorted[int(1.2)] in each layer (0.2 and 2.0). At keep 0.5 GUP's t = 1.0 empties 'small'."""
    weights = {"small": np.array([0.1, 0.2, 0.3, 0.4]), "large": np.array([1.0, 2.0, 3.0, 4.0])}
    gup = prune.magnitude.gup_masks(weights, 0.7)
    np.testing.assert_array_equal(gup["small"], [0, 0, 0, 1])
    np.testing.assert_array_equal(gup["large"], [1, 1, 1, 1])
    lup = prune.magnitude.lup_masks(weights, 0.7)
    np.testing.assert_array_equal(lup["small"], [0, 0, 1, 1])
    np.testing.assert_array_equal(lup["large"], [0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"GUP at keep=0.5 would empty the layers \['small'\]"):
        prune.magnitude.gup_masks(weights, 0.5)
    with pytest.raises(ValueError, match="keep must be a fraction"):
        prune.magnitude.lup_masks(weights, 0)


def test_magnitude_masks_work_on_device_arrays(rng):
    weights = tied_weights(rng, [(5, 4), (3, 7)])
    for method in (prune.magnitude.gup_masks, prune.magnitude.lup_masks):
        host = method(weights, 0.4)
        device = method({n: gpu.asarray(W) for n, W in weights.items()}, 0.4)
        for name in weights:
            assert isinstance(device[name], gpu.cupy.ndarray)
            np.testing.assert_array_equal(to_host(device[name]), host[name])


def test_import_ref_reaches_every_subpackage_in_a_fresh_interpreter():
    code = ("import numpy as np, ref; ref.models.resnet18(); "
            "print(int(ref.prune.topk_mask(np.arange(10.0), 0.3).sum()), ref.nn.Conv2d.__name__, "
            "ref.attacks.pgd.__name__, ref.objectives.get('trades').name, ref.train.fit.__name__, "
            "ref.checkpoint.save.__name__, ref.optim.SGD.__name__, ref.prune.magnitude.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.stdout.split() == ["3", "Conv2d", "pgd", "trades", "fit", "save", "SGD",
                                     "ref.prune.magnitude"]
