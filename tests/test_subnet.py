"""subnet_weight, the subnet layers and HYDRA's steps against the definitions: the mask against a
stable sort, the straight-through score gradient against sign(S) W times the naive conv weight
gradient (ALGORITHMS.md 7.1.2), scaled_score_init against its formula, keep 1 against the dense
model, the dense export, the phase freezing, and the gpu twin on hypothesis-drawn shapes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gpu
import ref
import reference
from backends import compare, to_host
from ref import checkpoint, optim, prune
from ref.gradcheck import check_vjp
from ref.models import small_cnn
from ref.nn import SubnetConv2d, SubnetLinear, dense_form, subnet_form
from ref.prune import hydra

T = ref.Tensor


def stable_topk(S, keep):
    """1 at all but the int((1 - keep) n) smallest |S| in Python's stable sort order."""
    a = np.abs(S).ravel().tolist()
    mask = np.ones(len(a))
    mask[sorted(range(len(a)), key=lambda i: a[i])[:int((1 - keep) * len(a))]] = 0
    return mask.reshape(S.shape)


def draw_case(seed, shape, ties):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(shape)
    S = (rng.integers(-3, 4, shape) / 3.0 if ties else rng.standard_normal(shape))
    return rng, W, S


shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4)
keeps = st.sampled_from([1.0, 0.5, 0.3, 0.1, 0.05, 0.01])


@given(shapes, keeps, st.booleans(), st.integers(0, 2**32 - 1))
def test_subnet_weight_forward_and_straight_through_gradients(shape, keep, ties, seed):
    rng, W0, S0 = draw_case(seed, shape, ties)
    if W0.size - int((1 - keep) * W0.size) < 1:
        keep = 1.0
    W, S = T(W0, requires_grad=True), T(S0, requires_grad=True)
    y = ref.ops.subnet_weight(W, S, keep)
    M = stable_topk(S0, keep)
    np.testing.assert_array_equal(y.data, W0 * M)
    gy = rng.standard_normal(shape)
    y.backward(gy)
    np.testing.assert_array_equal(W.grad, gy * M)                  # masked weights: exactly 0
    np.testing.assert_array_equal(S.grad, np.sign(S0) * W0 * gy)   # every score, masked or not
    frozen = T(S0)                                                 # frozen scores: no gradient
    W.grad = None
    ref.ops.subnet_weight(W, frozen, keep).backward(gy)
    assert frozen.grad is None and W.grad is not None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(shape=shapes, keep=keeps, ties=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_subnet_weight_is_the_same_on_the_gpu_backend(dtype, shape, keep, ties, seed):
    _, W, S = draw_case(seed, shape, ties)
    if W.size - int((1 - keep) * W.size) < 1:
        keep = 1.0
    compare("subnet_weight", [W, S, keep], dtype=dtype)
    compare("subnet_weight", [W, S, keep], dtype=dtype, requires_grad=[True, False, False])
    mask = ref.ops.keep_largest(np.abs(S).astype(dtype), W.size - int((1 - keep) * W.size))
    on_device = gpu.ops.keep_largest(gpu.asarray(np.abs(S).astype(dtype)),
                                     W.size - int((1 - keep) * W.size))
    np.testing.assert_array_equal(to_host(on_device), mask)


def test_a_conv_through_subnet_weight_is_the_conv_of_w_times_m(rng):
    """ALGORITHMS.md 7.1.2: SubnetConv(3, 8, 3, padding 1, no bias), k = 0.25, x (2, 3, 8, 8),
    loss = sum(y R): y = conv(x, W * M), dL/dx = conv's with W * M, dL/dS = sign(S) W gW_eff."""
    layer = SubnetConv2d(3, 8, 3, padding=1, bias=False, keep=0.25, rng=0).astype(np.float64)
    W, S = layer.weight.data, layer.scores.data
    M = stable_topk(S, 0.25)
    assert M.sum() == 216 - int(0.75 * 216)
    x = T(rng.standard_normal((2, 3, 8, 8)), requires_grad=True)
    R = rng.standard_normal((2, 8, 8, 8))
    y = layer(x)
    np.testing.assert_allclose(y.data, reference.conv2d(x.data, W * M, padding=1),
                               rtol=1e-12, atol=1e-12)
    y.backward(R)
    g_eff = reference.conv2d_weight_grad(R, x.data, W.shape, padding=1)
    np.testing.assert_allclose(layer.scores.grad, np.sign(S) * W * g_eff, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, M * g_eff, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad, reference.conv2d_input_grad(R, W * M, x.shape, padding=1),
                               rtol=1e-10, atol=1e-12)
    linear = SubnetLinear(6, 4, keep=0.5, rng=1).astype(np.float64)
    check_vjp(linear, [T(rng.standard_normal((5, 6)), requires_grad=True)], rng)


def test_scaled_score_init_is_its_formula_per_layer():
    """ALGORITHMS.md 7.1.3: conv 3 -> 4 k3 and linear 16 -> 10: S = sqrt(6 / fan_in) W / max|W|."""
    rng = np.random.default_rng(3)
    W_conv, W_linear = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((10, 16))
    np.testing.assert_allclose(hydra.scaled_score_init(W_conv),
                               np.sqrt(6 / 27) * W_conv / np.abs(W_conv).max(), rtol=1e-15)
    np.testing.assert_allclose(hydra.scaled_score_init(W_linear),
                               np.sqrt(6 / 16) * W_linear / np.abs(W_linear).max(), rtol=1e-15)
    model = small_cnn(num_classes=3, in_channels=1, width=4, rng=0).astype(np.float64)
    hydra.to_subnet(model, 0.5)
    for path, layer in hydra.subnet_layers(model).items():
        W = layer.weight.data
        fan_in = np.prod(W.shape[1:])
        np.testing.assert_allclose(layer.scores.data, np.sqrt(6 / fan_in) * W / np.abs(W).max(),
                                   rtol=1e-15, err_msg=path)
        np.testing.assert_array_equal(layer.mask(), stable_topk(W, 0.5))   # the first mask: LWM


def dense64(seed=0):
    return small_cnn(num_classes=3, in_channels=1, width=4, rng=seed).astype(np.float64)


def test_the_subnet_form_at_keep_one_computes_what_the_dense_model_does(tmp_path, rng):
    dense = dense64()
    checkpoint.save(tmp_path / "dense.h5", dense)
    model = hydra.to_subnet(dense64(seed=5), 1.0)
    missing = hydra.load_dense(tmp_path / "dense.h5", model)
    assert missing and all(name.endswith(".scores") for name in missing)
    x = rng.random((4, 1, 8, 8))
    for mode in ("train", "eval"):
        dense.train(mode == "train")
        model.train(mode == "train")
        np.testing.assert_array_equal(model(T(x)).data, dense(T(x)).data)
    names = [n for n, _ in model.named_parameters() if not n.endswith(".scores")]
    assert names == [n for n, _ in dense.named_parameters()]
    with pytest.raises(ValueError, match="shape mismatch"):
        hydra.load_dense(tmp_path / "dense.h5", hydra.to_subnet(
            small_cnn(num_classes=3, in_channels=1, width=8).astype(np.float64), 1.0))
    with pytest.raises(KeyError, match=r"missing \['last.running_mean'"):
        hydra.load_dense(tmp_path / "dense.h5", hydra.to_subnet(
            small_cnn(num_classes=3, in_channels=1, width=4, last_bn=True), 1.0))


def test_dense_export_bakes_the_mask_in_and_loads_into_the_plain_architecture(tmp_path, rng):
    model = hydra.to_subnet(dense64(), 0.1)
    x = rng.random((4, 1, 8, 8))
    model.eval()
    y = model(T(x)).data
    masks = {path: layer.mask() for path, layer in hydra.subnet_layers(model).items()}
    dense_form(model)
    assert hydra.subnet_layers(model) == {}
    np.testing.assert_array_equal(model(T(x)).data, y)
    checkpoint.save(tmp_path / "final.h5", model)
    plain = dense64(seed=9)
    checkpoint.load(tmp_path / "final.h5", plain)
    report = prune.sparsity(plain)
    for path, M in masks.items():
        assert report["layers"][f"{path}.weight"]["kept"] == int(M.sum())
    assert report["global"]["sparsity"] >= 0.89
    np.testing.assert_array_equal(plain.eval()(T(x)).data, y)


def test_each_phase_trains_only_its_tensors(rng):
    x, y = rng.random((6, 1, 8, 8)), rng.integers(0, 3, 6)
    for phase, freeze_bn in (("prune", False), ("prune", True), ("finetune", False)):
        model = hydra.to_subnet(dense64(), 0.3)
        hydra.set_phase(model, phase, freeze_bn=freeze_bn)
        before = {name: p.data.copy() for name, p in model.named_parameters()}
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        ref.ops.cross_entropy(model(T(x)), y).backward()
        opt.step()
        batch_norms = {f"{path}.{name}" for path, m in model.named_modules()
                       if isinstance(m, ref.nn.BatchNorm2d) for name in ("weight", "bias")}
        for name, p in model.named_parameters():
            changed = not np.array_equal(p.data, before[name])
            if name.endswith(".scores"):
                assert changed == (phase == "prune"), name
            elif name in batch_norms:
                assert changed == (not freeze_bn), name
            else:
                assert changed == (phase == "finetune"), name
    with pytest.raises(ValueError, match="phase must be one of"):
        hydra.set_phase(model, "train")


def test_bad_keep_and_layers_are_refused():
    with pytest.raises(ValueError, match="keep must be a fraction"):
        hydra.to_subnet(dense64(), 1.5)
    with pytest.raises(ValueError, match="keep must be a fraction"):
        SubnetLinear(3, 2, keep=0)
    with pytest.raises(TypeError, match="only Conv2d and Linear"):
        subnet_form(dense64(), ["features.1"])
    with pytest.raises(ValueError, match=r"scores is float32 \(3, 2\)"):
        ref.ops.subnet_weight(T(np.ones((2, 3), np.float32)), T(np.ones((3, 2), np.float32)), 1)


@given(st.integers(0, 2**32 - 1), keeps)
def test_a_subnet_model_is_the_same_on_the_gpu_backend(seed, keep):
    rng = np.random.default_rng(seed)
    x = rng.random((3, 1, 8, 8))
    outputs, grads = [], []
    for backend in ("numpy", "gpu"):
        model = hydra.to_subnet(dense64(seed=seed % 7), keep).to(backend)
        hydra.set_phase(model, "prune")
        tensor = ref.Tensor if backend == "numpy" else gpu.Tensor
        xb = x if backend == "numpy" else gpu.asarray(x)
        out = model(tensor(xb))
        out.backward(out.xp.asarray(np.ones(out.shape)))
        outputs.append(to_host(out.data))
        grads.append([to_host(layer.scores.grad) for layer in
                      hydra.subnet_layers(model).values()])
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-10, atol=1e-12)
    for g_gpu, g_ref in zip(grads[1], grads[0]):
        np.testing.assert_allclose(g_gpu, g_ref, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not gpu.EMULATED, reason="counts host reads on the emulator's device arrays")
def test_subnet_weight_on_the_device_reads_nothing_back_to_the_host(monkeypatch, rng):
    """The threshold, the ties and the mask stay device arrays: with every device -> host read
    of the emulated cupy refused, subnet_weight runs forward and backward."""
    W = gpu.Tensor(gpu.asarray(rng.standard_normal((8, 4, 3, 3))), requires_grad=True)
    S = gpu.Tensor(gpu.asarray(rng.integers(-3, 4, (8, 4, 3, 3)) / 3.0), requires_grad=True)
    gy = gpu.asarray(rng.standard_normal((8, 4, 3, 3)))

    def refuse(*args, **kwargs):
        raise AssertionError("a device value was read on the host")

    for name in ("get", "item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
        monkeypatch.setattr(gpu.cupy.ndarray, name, refuse, raising=False)
    gpu.ops.subnet_weight(W, S, 0.3).backward(gy)
    monkeypatch.undo()
    assert to_host(W.grad).shape == (8, 4, 3, 3) and to_host(S.grad).shape == (8, 4, 3, 3)
    with pytest.raises(AssertionError, match="read on the host"):   # the guard does work
        monkeypatch.setattr(gpu.cupy.ndarray, "__bool__", refuse)
        bool(W.data.sum() > 0)


def test_the_adaptive_budget_gives_each_subnet_layer_its_ratio():
    model = hydra.to_subnet(dense64(), 0.2, "adaptive", p=0.5)
    layers = hydra.subnet_layers(model)
    sizes = [layer.weight.size for layer in layers.values()]
    ratios = prune.adaptive_keep_ratios(sizes, 0.2, 0.5)
    assert [layer.keep for layer in layers.values()] == ratios
    assert [int(layer.mask().sum()) for layer in layers.values()] == [
        n - int((1 - rho) * n) for n, rho in zip(sizes, ratios)]
    with pytest.raises(ValueError, match="must be 'uniform' or 'adaptive', got 'global'"):
        hydra.to_subnet(dense64(), 0.2, "global")
