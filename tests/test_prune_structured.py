"""Structured pruning: channel groups of every architecture (no stem, shortcut or pre-addition
conv in a ResNet), FP filter selection and NS thresholds against naive loops written here (ties
included), the channel masks over the weights, thinned models that compute what the masked ones
do (float64, eval and train mode), the NS sparsity gradient, the gpu backend, and bad input."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gpu
import ref
from backends import to_host
from ref import prune
from ref.attacks import backend_of
from ref.models import preact_resnet18, resnet18, resnet50, small_cnn, vgg16_bn, wide_resnet
from ref.nn.layers import Conv2d, Linear
from ref.nn.norm import BatchNorm2d
from ref.objectives import MadryAT, Natural
from ref.prune import structured

TOL = dict(rtol=1e-10, atol=1e-10)
seeds = st.integers(0, 2**32 - 1)

ARCHITECTURES = {
    "small_cnn": lambda: small_cnn(num_classes=3, width=4, rng=0),
    "resnet18": lambda: resnet18(num_classes=3, width=4, rng=0),
    "resnet50": lambda: resnet50(num_classes=3, width=4, rng=0),
    "preact_resnet18": lambda: preact_resnet18(num_classes=3, width=4, rng=0),
    "wide_resnet": lambda: wide_resnet(depth=10, widen=1, num_classes=3, rng=0)}


def randomised(model, seed=0):
    """The model in float64 with every parameter and buffer random (running_var > 0)."""
    rng = np.random.default_rng(seed)
    model.astype(np.float64)
    for name, t in model.state_dict().items():
        t[...] = rng.uniform(0.5, 2, t.shape) if name.endswith("var") else rng.standard_normal(
            t.shape)
    return model


def snapshot(model):
    return {name: to_host(a).copy() for name, a in model.state_dict().items()}


def assert_unchanged(model, before):
    assert snapshot(model).keys() == before.keys()
    for name, a in snapshot(model).items():
        np.testing.assert_array_equal(a, before[name], err_msg=name)


# ---- channel groups ------------------------------------------------------------------------------
def test_the_groups_of_the_feature_stacks():
    groups = structured.channel_groups(small_cnn(width=4))
    G = structured.ChannelGroup
    assert list(groups.values()) == [
        G("features.0", "features.1", "features.3", 1),
        G("features.3", "features.4", "features.7", 1),
        G("features.7", "features.8", "features.10", 1),
        G("features.10", "features.11", "classifier.0", 1)]
    assert list(groups) == [f"{g.conv}.weight" for g in groups.values()]


def test_the_residual_groups_are_the_inner_convs_of_each_block():
    groups = {name: structured.channel_groups(make()) for name, make in ARCHITECTURES.items()
              if name != "small_cnn"}
    G = structured.ChannelGroup
    assert groups["resnet18"]["layer2.1.conv1.weight"] == G("layer2.1.conv1", "layer2.1.bn1",
                                                            "layer2.1.conv2", 1)
    assert groups["resnet50"]["layer3.0.conv2.weight"] == G("layer3.0.conv2", "layer3.0.bn2",
                                                            "layer3.0.conv3", 1)
    assert groups["preact_resnet18"]["layer1.0.conv1.weight"] == G("layer1.0.conv1", "layer1.0.bn2",
                                                                   "layer1.0.conv2", 1)
    assert groups["wide_resnet"]["block3.layer.0.conv1.weight"] == G(
        "block3.layer.0.conv1", "block3.layer.0.bn2", "block3.layer.0.conv2", 1)
    expected_count = {"resnet18": 8, "resnet50": 2 * 16, "preact_resnet18": 8, "wide_resnet": 3}
    for arch, found in groups.items():
        assert len(found) == expected_count[arch], arch
        pre_addition = "conv3" if arch == "resnet50" else "conv2"
        for group in found.values():
            for path in (group.conv, group.consumer):
                assert "hortcut" not in path and path != "conv1", (arch, path)   # stem, shortcuts
            assert not group.conv.endswith(pre_addition), (arch, group)


def test_an_unknown_model_is_refused():
    with pytest.raises(ValueError, match="not the model Sequential"):
        structured.channel_groups(ref.nn.containers.Sequential(Conv2d(1, 2, 3)))


# ---- FP -----------------------------------------------------------------------------------------
def naive_l1_filter_mask(W, keep):
    """Sort the filters by (L1 norm, index) ascending and drop all but the last int(o keep)."""
    o = W.shape[0]
    norms = [sum(abs(v) for v in W[j].ravel().tolist()) for j in range(o)]
    ascending = sorted(range(o), key=lambda j: (norms[j], j))
    kept = set(ascending[o - int(o * keep):])
    return [float(j in kept) for j in range(o)]


@given(seeds, st.integers(1, 8), st.integers(1, 3), st.integers(1, 3), st.floats(0.01, 1.0))
def test_fp_keeps_the_largest_l1_filters_ties_to_the_higher_index(seed, o, c, k, keep):
    W = np.random.default_rng(seed).integers(-2, 3, (o, c, k, k)) / 4   # few levels: ties
    if int(o * keep) == 0:
        with pytest.raises(ValueError, match=rf"keep={keep!r} keeps int\({o} \* .* of layer7"):
            structured.l1_filter_mask(W, keep, "layer7")
        return
    m = structured.l1_filter_mask(W, keep, "layer7")
    np.testing.assert_array_equal(m, naive_l1_filter_mask(W, keep))
    assert m.dtype == W.dtype and m.sum() == int(o * keep)


def test_fp_keep_per_conv_leaves_the_others_whole():
    model = small_cnn(width=4, rng=0)
    masks = structured.fp_channel_masks(model, {"features.7.weight": 0.5})
    assert [int(m.sum()) for m in masks.values()] == [4, 4, 4, 8]
    W = model.features[7].weight.data
    np.testing.assert_array_equal(masks["features.7.weight"], naive_l1_filter_mask(W, 0.5))


# ---- NS -----------------------------------------------------------------------------------------
def naive_slimming(gammas, keep, min_keep):
    values = sorted(abs(v) for g in gammas.values() for v in g.tolist())
    tau = values[int(len(values) * (1 - keep))]
    masks = {}
    for name, g in gammas.items():
        C = len(g)
        ascending = sorted(range(C), key=lambda j: (abs(g[j]), j))
        floor = set(ascending[int((1 - min_keep) * C):])   # the C - int((1 - min_keep) C) largest
        masks[name] = [float(abs(g[j]) > tau or j in floor) for j in range(C)]
    return masks


@given(seeds, st.lists(st.integers(1, 8), min_size=1, max_size=4), st.floats(0.01, 1.0),
       st.floats(0.01, 1.0))
def test_ns_global_threshold_and_layer_floor_equal_the_naive_rule(seed, sizes, keep, min_keep):
    rng = np.random.default_rng(seed)
    gammas = {f"l{i}": rng.integers(-3, 4, C) / 4 for i, C in enumerate(sizes)}   # ties, zeros
    masks = structured.slimming_masks(gammas, keep, min_keep)
    for name, m in naive_slimming(gammas, keep, min_keep).items():
        np.testing.assert_array_equal(masks[name], m, err_msg=name)


def test_ns_ties_at_the_threshold_are_pruned_and_no_layer_vanishes():
    """6 values, keep 0.5: tau = sorted[3] = 0.5 prunes both 0.5's; 'small' keeps its largest."""
    gammas = {"small": np.array([0.1, 0.2]), "large": np.array([0.5, -0.5, 0.9, 1.0])}
    masks = structured.slimming_masks(gammas, 0.5, min_keep=0.05)
    np.testing.assert_array_equal(masks["small"], [0, 1])
    np.testing.assert_array_equal(masks["large"], [0, 0, 1, 1])


def test_the_sparsity_term_adds_s_sign_gamma_to_the_gradient(rng):
    s = 1e-2
    x, y = rng.random((4, 3, 8, 8)), rng.integers(0, 3, 4)
    runs = []
    for objective in (Natural(), structured.SlimmingObjective(Natural(), s)):
        model = randomised(small_cnn(num_classes=3, width=4, rng=0))
        model.features[1].weight.data[1] = 0                       # sign(0) = 0
        loss = objective(model, x, y)
        loss.backward()
        runs.append((loss.item(), {name: p.grad for name, p in model.named_parameters()}))
        assert objective.logits.shape == (4, 3)
    parameters = dict(model.named_parameters())
    gammas = {f"{g.bn}.weight": parameters[f"{g.bn}.weight"].data
              for g in structured.channel_groups(model).values()}
    (plain_loss, plain), (loss, grads) = runs
    penalty = sum(np.abs(gamma).sum() for gamma in gammas.values())
    np.testing.assert_allclose(loss, plain_loss + s * penalty, **TOL)
    for name, g in plain.items():
        extra = s * np.sign(gammas[name]) if name in gammas else 0
        np.testing.assert_allclose(grads[name], g + extra, **TOL, err_msg=name)
    wrapped = structured.SlimmingObjective(MadryAT(eps=0.1))
    assert wrapped.attack == MadryAT(eps=0.1).attack and wrapped.s == 1e-4


# ---- masks and thinning -------------------------------------------------------------------------
def assert_consistent_sizes(model):
    for path, layer in model.named_modules():
        if isinstance(layer, Conv2d):
            shape = (layer.out_channels, layer.in_channels, *layer.kernel_size)
        elif isinstance(layer, Linear):
            shape = (layer.out_features, layer.in_features)
        elif isinstance(layer, BatchNorm2d):
            shape = (layer.num_features,)
        else:
            continue
        assert layer.weight.shape == shape, path
        assert all(t.shape[0] == shape[0] for t in layer.parameters() + layer.buffers()), path
        assert "weight_mask" not in layer._buffers, path


def outputs(model, x):
    Tensor, xp = backend_of(model)
    return to_host(model(Tensor(xp.asarray(x))).data)


def check_thinning(model, channel_masks, x):
    """Mask, then thin: the masked model is untouched, the sizes fit, the outputs agree."""
    structured.prune_channels(model, channel_masks)
    before = snapshot(model)
    thinned = structured.thin(model, channel_masks)
    assert_unchanged(model, before)
    assert_consistent_sizes(thinned)
    layers = dict(thinned.named_modules())
    for name, m in channel_masks.items():
        conv = structured.channel_groups(model)[name].conv
        assert layers[conv].out_channels == int(to_host(m).sum()), name
    for mode in ("eval", "train"):                       # train mode: batch statistics
        np.testing.assert_allclose(outputs(thinned.train(mode == "train"), x),
                                   outputs(model.train(mode == "train"), x), **TOL)
    return thinned


def random_channel_masks(model, seed):
    """A random 0/1 mask per group, at least one channel kept in each."""
    rng = np.random.default_rng(seed)
    masks = {}
    for name, group in structured.channel_groups(model).items():
        m = (rng.random(dict(model.named_modules())[group.conv].out_channels) < 0.5) * 1.0
        m[rng.integers(m.size)] = 1
        masks[name] = m
    return masks


@given(seeds)
def test_channel_masks_over_the_weights_equal_naive_loops(seed):
    model = small_cnn(num_classes=3, width=4, rng=0)
    channel_masks = random_channel_masks(model, seed)
    groups = structured.channel_groups(model).values()
    weights = prune.weights(model)
    expected = {f"{path}.weight": np.ones(weights[f"{path}.weight"].shape)
                for g in groups for path in (g.conv, g.consumer)}
    for name, group in zip(channel_masks, groups):
        consumer = expected[f"{group.consumer}.weight"]
        for j, kept in enumerate(channel_masks[name]):
            expected[name][j] *= kept                                  # filter j
            for s in range(group.block):
                consumer[:, j * group.block + s] *= kept               # its inputs
    masks = structured.channel_weight_masks(model, channel_masks)
    assert masks.keys() == expected.keys()
    for name, M in masks.items():
        np.testing.assert_array_equal(M, expected[name], err_msg=name)


@given(seeds)
def test_a_thinned_small_cnn_computes_what_the_masked_one_does(seed):
    model = randomised(small_cnn(num_classes=3, width=4, rng=0), seed)
    x = np.random.default_rng(seed).random((3, 3, 8, 8))
    check_thinning(model, random_channel_masks(model, seed), x)


@pytest.mark.parametrize("method", ["fp", "ns"])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_thinned_models_compute_what_the_masked_ones_do(arch, method, rng):
    model = randomised(ARCHITECTURES[arch]())
    channel_masks = (structured.fp_channel_masks(model, 0.5) if method == "fp"
                     else structured.ns_channel_masks(model, 0.4))
    check_thinning(model, channel_masks, rng.random((2, 3, 8, 8)))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "preact_resnet18", "wide_resnet"])
def test_fp_on_a_resnet_removes_filters_of_the_inner_convs_only(arch):
    model = ARCHITECTURES[arch]()
    before = snapshot(model)
    structured.prune_channels(model, structured.fp_channel_masks(model, 0.5))
    groups = structured.channel_groups(model).values()
    inner = {f"{g.conv}.weight" for g in groups}
    masks = prune.get_masks(model)
    assert masks.keys() == inner | {f"{g.consumer}.weight" for g in groups}
    for name, M in masks.items():
        every_filter_kept = bool(M.reshape(M.shape[0], -1).any(axis=1).all())
        assert every_filter_kept == (name not in inner), name
    untouched = [name for name in prune.weights(model) if name not in masks]
    assert "conv1.weight" in untouched and any("hortcut" in name for name in untouched)
    for name in untouched:                   # the stem, the shortcuts, the classifier
        np.testing.assert_array_equal(prune.weights(model)[name], before[name], err_msg=name)


@pytest.mark.parametrize("classifier", ["linear", "hydra"])
def test_a_thinned_vgg16_bn_computes_what_the_masked_one_does(classifier, rng):
    model = randomised(vgg16_bn(num_classes=3, classifier=classifier, rng=0))
    channel_masks = structured.ns_channel_masks(model, 0.3, min_keep=0.05)
    last = structured.channel_groups(model)["features.40.weight"]
    head = ("classifier.0", 4) if classifier == "hydra" else ("classifier", 1)   # block p p
    assert (last.consumer, last.block) == head
    M = structured.channel_weight_masks(model, channel_masks)[f"{last.consumer}.weight"]
    m = channel_masks["features.40.weight"]
    for feature in range(M.shape[1]):         # channel-major: feature = c p p + s
        assert np.all(M[:, feature] == m[feature // last.block])
    check_thinning(model, channel_masks, rng.random((2, 3, 32, 32)))


def test_masks_and_thinning_on_the_gpu_backend(rng):
    host = randomised(small_cnn(num_classes=3, width=4, rng=0))
    device = randomised(small_cnn(num_classes=3, width=4, rng=0)).to("gpu")
    for method in (lambda net: structured.fp_channel_masks(net, 0.5),
                   lambda net: structured.ns_channel_masks(net, 0.5)):
        want, got = method(host), method(device)
        for name, m in want.items():
            assert isinstance(got[name], gpu.cupy.ndarray)
            np.testing.assert_array_equal(to_host(got[name]), m)
    x, y = rng.random((3, 3, 8, 8)), rng.integers(0, 3, 3)
    objective = structured.SlimmingObjective(Natural())
    np.testing.assert_allclose(to_host(objective(device, gpu.asarray(x), gpu.asarray(y)).data),
                               objective(host, x, y).data, **TOL)
    thinned = check_thinning(device, structured.ns_channel_masks(device, 0.5), x)
    np.testing.assert_allclose(outputs(thinned, x), outputs(structured.thin(
        host, structured.ns_channel_masks(host, 0.5)), x), **TOL)


# ---- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, message", [
    (lambda m: structured.fp_channel_masks(m, 0), ValueError, r"keep of .* got 0"),
    (lambda m: structured.fp_channel_masks(m, 1.5), ValueError, r"keep of .* got 1.5"),
    (lambda m: structured.fp_channel_masks(m, {"features.0.weight": float("nan")}), ValueError,
     r"keep of features.0.weight must be a fraction in \(0, 1\], got nan"),
    (lambda m: structured.fp_channel_masks(m, 0.2), ValueError,
     r"keep=0.2 keeps int\(4 \* 0.2\) = 0 of the 4 filters of features.0.weight"),
    (lambda m: structured.fp_channel_masks(m, {"classifier.0.weight": 0.5}), KeyError,
     r"no channel group has the conv \['classifier.0.weight'\]"),
    (lambda m: structured.ns_channel_masks(m, True), ValueError, "keep must be .* got True"),
    (lambda m: structured.ns_channel_masks(m, 0.5, min_keep=0), ValueError,
     r"min_keep must be a fraction in \(0, 1\], got 0"),
    (lambda m: structured.SlimmingObjective(Natural(), s=-1), ValueError, "got -1"),
    (lambda m: structured.prune_channels(m, {"features.0.weight": np.zeros(4)}), ValueError,
     r"would empty the layers \['features.0.weight'\]"),
    (lambda m: structured.thin(m, {"features.0.weight": np.ones(3)}), ValueError,
     r"mask of features.0.weight: shape \(3,\)"),
    (lambda m: structured.thin(m, {"features.0.weight": np.full(4, 0.5)}), ValueError,
     r"is not 0/1"),
    (lambda m: structured.ns_channel_masks(small_cnn(width=4, affine_bn=False), 0.5), ValueError,
     "features.1 has no gamma")])
def test_bad_input_is_refused_naming_the_value_and_nothing_changes(call, error, message):
    model = small_cnn(num_classes=3, width=4, rng=0)
    before = snapshot(model)
    with pytest.raises(error, match=message):
        call(model)
    assert_unchanged(model, before)
