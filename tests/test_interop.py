"""ref.interop against PyTorch: to_torch twins of every architecture (outputs and gradients in
eval and train mode), from_torch round trips, state dicts of the PyTorch definitions in
tests/test_models.py (saved as DataParallel checkpoints), the reference repos' key layouts,
pruned models (zero pattern, PGD adversarial examples under a PGD written here in torch) and
bad input (clear errors, the model unchanged)."""
import copy

import numpy as np
import pytest

import ref
import ref.models as models
from ref.interop import from_torch, to_torch
from ref.prune.magnitude import gup_masks, lup_masks
from ref.prune.masks import apply_masks, weights
from test_models import torch_reference

torch = pytest.importorskip("torch")

# small options for the architectures of ref.models (16x16 inputs); any other one in MODELS is
# tested with its defaults on 32x32 inputs. wrn_28_4 / wrn_28_10 are wide_resnet's class at a
# fixed size (5.8M / 36M weights): slow.
SMALL = {"small_cnn": dict(width=4), "vgg16_bn": dict(classifier="hydra"),
         "resnet18": dict(width=4), "resnet34": dict(width=2), "resnet50": dict(width=2),
         "preact_resnet18": dict(width=4), "wide_resnet": dict(depth=10, widen=1),
         "wrn_28_4": {}, "wrn_28_10": {}, "certified_cnn": dict(in_channels=3, input_size=16),
         "cifar_model": dict(input_size=16), "cifar_model_large": dict(input_size=16)}
ARCHS = [pytest.param(name, marks=pytest.mark.slow) if name.startswith("wrn_28") else name
         for name in models.MODELS]


def close(actual, expected, rtol=1e-10):
    """assert_allclose with rtol and an atol scaled to the values."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol,
                               atol=rtol * max(np.abs(expected).max(), 1e-30))


def build(name, dtype=np.float64, seed=0, **kw):
    """A model with random BN statistics and affine parameters (so that they matter)."""
    model = models.get(name, rng=seed, **{**SMALL.get(name, {}), **kw}).astype(dtype)
    rng = np.random.default_rng(seed)
    for key, t in model.named_buffers():
        t.data = (rng.uniform(0.5, 1.5, t.shape) if key.endswith("running_var")
                  else 0.1 * rng.standard_normal(t.shape)).astype(dtype)
    for key, t in model.named_parameters():
        if ".bn" in key or key.startswith("bn"):
            t.data = (t.data + 0.1 * rng.standard_normal(t.shape)).astype(dtype)
    return model


def ce_gradients(model, x, y):
    """(logits, grad_x, {name: grad}) of the summed cross-entropy of our model."""
    model.zero_grad()
    xt = ref.Tensor(x, requires_grad=True)
    out = model(xt)
    ref.ops.cross_entropy(out, ref.Tensor(y), reduction="sum").backward()
    return out.data, xt.grad, {k: p.grad for k, p in model.named_parameters()}


def torch_ce_gradients(twin, x, y):
    xt = torch.tensor(x, requires_grad=True)
    out = twin(xt)
    torch.nn.functional.cross_entropy(out, torch.from_numpy(y), reduction="sum").backward()
    return out.detach().numpy(), xt.grad.numpy(), {k: p.grad.numpy()
                                                   for k, p in twin.named_parameters()}


@pytest.mark.parametrize("name", ARCHS)
def test_to_torch_and_back(name, rng):
    """The twin computes our logits and gradients (eval and train mode, float64); loading the
    twin's state into a freshly initialised model gives back the same function."""
    model = build(name)
    size = 16 if name in SMALL else 32
    x, y = rng.random((4, 3, size, size)), rng.integers(0, 10, 4)   # batch 2: ill-conditioned
    for train in (False, True):
        ours = copy.deepcopy(model).train(train)
        twin = to_torch(ours)
        assert twin.training is train and isinstance(twin(torch.from_numpy(x)), torch.Tensor)
        expected, gx, grads = ce_gradients(ours, x, y)
        got, tgx, tgrads = torch_ce_gradients(twin, x, y)
        close(got, expected)
        close(tgx, gx)
        for key, g in grads.items():
            close(tgrads[key], g)
    back = from_torch(build(name, seed=1).eval(), to_torch(model).state_dict())
    for a, b in zip(ce_gradients(model.eval(), x, y), ce_gradients(back, x, y)):
        for key in (a if isinstance(a, dict) else [None]):
            close(b if key is None else b[key], a if key is None else a[key], rtol=1e-12)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "preact_resnet18", "wide_resnet"])
def test_float32_twin(name, rng):
    model = build(name, np.float32).eval()
    x = rng.random((2, 3, 16, 16)).astype(np.float32)
    twin = to_torch(model)
    assert all(p.dtype == torch.float32 for p in twin.parameters())
    close(twin(torch.from_numpy(x)).detach().numpy(), model(ref.Tensor(x)).data, rtol=1e-6)


@pytest.mark.parametrize("name, kw", [
    ("small_cnn", dict(width=4)), ("resnet18", dict(width=4)),
    ("resnet50", dict(width=2, num_blocks=(1, 2, 1, 1))), ("preact_resnet18", dict(width=4)),
    ("resnet18", dict(width=4, affine_bn=False, classifier="conv", last_bn=True)),
    ("wide_resnet", dict(depth=10, widen=1)), ("vgg16_bn", dict(classifier="hydra"))])
def test_torch_checkpoint_loads(name, kw, rng, tmp_path):
    """A DataParallel state dict of the PyTorch definition, random weights and statistics,
    wrapped as {"state_dict": ...} in a .pt file, gives PyTorch's logits."""
    net = torch_reference(name, **kw).double()
    with torch.no_grad():
        for key, t in [*net.named_parameters(), *net.named_buffers()]:
            if t.is_floating_point():
                t.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, t.shape) if "var" in key
                                         else t.numpy() + 0.1 * rng.standard_normal(t.shape)))
    path = tmp_path / "model.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in
                                           net.state_dict().items()}}, path)
    model = from_torch(models.get(name, rng=0, **kw).astype(np.float64), path).eval()
    x = rng.random((3, 3, 32, 32))
    close(model(ref.Tensor(x)).data, net.eval()(torch.from_numpy(x)).detach().numpy())


def test_reference_layouts(rng):
    """torchvision's downsample / fc, HYDRA's popup_scores, torch.nn.utils.prune's weight_orig and
    RobustBench's normalize_model wrapper load under our names."""
    model = build("resnet18")
    state = {k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}
    renamed = {k.replace("shortcut.", "downsample.").replace("linear.", "fc."): v
               for k, v in state.items()}
    close(from_torch(build("resnet18", seed=1), {"model": renamed}).state_dict()
          ["layer2.0.shortcut.0.weight"], model.state_dict()["layer2.0.shortcut.0.weight"], 0)

    subnet = ref.nn.subnet_form(build("small_cnn"), ["features.0"], keep=0.5)
    hydra = {k.replace(".scores", ".popup_scores"): torch.from_numpy(v.copy())
             for k, v in subnet.state_dict().items()}
    loaded = from_torch(ref.nn.subnet_form(build("small_cnn", seed=1), ["features.0"]), hydra)
    close(loaded.features[0].scores.data, subnet.features[0].scores.data, 0)

    pruned = build("small_cnn")
    apply_masks(pruned, gup_masks(weights(pruned), 0.3))
    torch_prune = {k.replace(".weight", ".weight_orig") if k + "_mask" in pruned.state_dict()
                   else k: torch.from_numpy(v.copy()) for k, v in pruned.state_dict().items()}
    target = build("small_cnn", seed=1)
    apply_masks(target, gup_masks(weights(target), 0.5))
    x = rng.random((2, 3, 8, 8))
    close(from_torch(target, torch_prune).eval()(ref.Tensor(x)).data,
          pruned.eval()(ref.Tensor(x)).data, 0)

    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    robustbench = {"normalize.mean": torch.tensor(mean).reshape(1, 3, 1, 1),
                   "normalize.std": torch.tensor(std).reshape(1, 3, 1, 1),
                   **{f"model.{k}": v for k, v in state.items()}}
    normalized = from_torch(build("resnet18", seed=1, normalize=(mean, std)), robustbench).eval()
    close(normalized(ref.Tensor(x)).data, model.eval()(ref.Tensor(
        (x - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1)))).data, 1e-12)
    close(to_torch(normalized)(torch.from_numpy(x)).detach().numpy(),
          normalized(ref.Tensor(x)).data)
    with pytest.raises(ValueError, match=r"normalises its inputs .*build the model with "
                                         r"normalize=\(mean, std\)"):
        from_torch(build("resnet18"), robustbench)


def torch_pgd(net, x, y, eps, alpha, steps):
    """L-inf PGD from x (no random start), written in torch: x <- P(x + alpha sign(grad CE))."""
    x0 = torch.from_numpy(x)
    xa = x0.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(xa), torch.from_numpy(y), reduction="sum")
        g, = torch.autograd.grad(loss, xa)
        with torch.no_grad():
            xa = xa + alpha * g.sign()
            xa = (x0 + (xa - x0).clamp(-eps, eps)).clamp(0, 1)
    return xa.detach().numpy()


@pytest.mark.parametrize("form", ["masks", "subnet"])
def test_pruned_export(form, rng):
    """A pruned model's twin has exactly the same zeros and the same PGD adversarial examples."""
    model = build("resnet18").eval()
    if form == "masks":
        apply_masks(model, lup_masks(weights(model), 0.1))
    else:
        ref.nn.subnet_form(model, [k[:-len(".weight")] for k in weights(model)], keep=0.1,
                           rng=0)
    twin = to_torch(model)
    effective = ref.prune.masks.effective_weights(model)
    for key, W in effective.items():
        exported = twin.get_parameter(key).detach().numpy()
        assert np.array_equal(exported == 0, W == 0) and np.array_equal(exported, W), key
    assert np.mean([np.mean(W == 0) for W in effective.values()]) > 0.8
    x, y = rng.random((4, 3, 16, 16)), rng.integers(0, 10, 4)
    ours = ref.attacks.pgd(model, x, y, eps=8 / 255, alpha=2 / 255, steps=10, random_start="none")
    close(torch_pgd(twin, x, y, 8 / 255, 2 / 255, 10), ours, 1e-12)
    assert np.abs(ours - x).max() > 7 / 255


@pytest.mark.parametrize("make_source, match", [
    (lambda path: to_torch(build("small_cnn")).state_dict(),
     r"cannot load the state dict into ResNet: missing \(102\): bn1\.bias, .*conv1\.weight, "
     r".*; unexpected \(24\): classifier\.0\.bias, .*features\.0\.weight"),
    (lambda path: to_torch(models.resnet18(width=8)).state_dict(),
     r"shape mismatch \(\d+\): conv1\.weight: checkpoint \(8, 3, 3, 3\) vs model \(4, 3, 3, 3\)"),
    (lambda path: {**to_torch(build("resnet18")).state_dict(), "step": 3},
     r"not tensors: step"),
    (lambda path: path.write_bytes(path.read_bytes()[:2000]) and path,
     r"not a readable PyTorch checkpoint"),
    (lambda path: path.write_text("epoch,accuracy\n1,0.5\n") and path,
     r"not a readable PyTorch checkpoint")],
    ids=["other-architecture", "other-width", "not-a-tensor", "truncated", "text-file"])
def test_bad_input_leaves_model_unchanged(make_source, match, tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": to_torch(build("resnet18")).state_dict()}, path)
    model = build("resnet18", seed=1)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=match):
        from_torch(model, make_source(path))
    for key, value in model.state_dict().items():
        assert np.array_equal(value, before[key]), key
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_torch(model, tmp_path / "missing.pt")


def test_without_torch_says_how_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[torch\]"'):
        from_torch(build("small_cnn"), {})


def test_normalize_option_on_both_backends(rng):
    """normalize=(mean, std) is (x - mean) / std before the network, on numpy and gpu."""
    mean, std = (0.5, 0.25, 0.75), (0.2, 0.4, 0.1)
    model = build("small_cnn", normalize=(mean, std)).eval()
    plain = copy.deepcopy(model)
    plain.normalize = None
    x = rng.random((2, 3, 8, 8))
    want = plain(ref.Tensor((x - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))))
    close(model(ref.Tensor(x)).data, want.data, 1e-12)
    gpu = pytest.importorskip("gpu")
    close(ref.asarray(model.to("gpu")(gpu.Tensor(gpu.asarray(x))).data), want.data)
    assert "normalize.mean" not in model.state_dict()
    with pytest.raises(ValueError, match="as many means as stds"):
        models.small_cnn(normalize=((0.5,), (0.1, 0.2)))


def test_gpu_model_both_ways(rng):
    """to_torch of a model on the gpu backend, and from_torch into one, give numpy's logits."""
    gpu = pytest.importorskip("gpu")
    model = build("small_cnn").eval()
    x = rng.random((2, 3, 8, 8))
    want = model(ref.Tensor(x)).data
    twin = to_torch(copy.deepcopy(model).to("gpu"))
    close(twin(torch.from_numpy(x)).detach().numpy(), want)
    back = from_torch(build("small_cnn", seed=1).to("gpu").eval(), twin)
    close(ref.asarray(back(gpu.Tensor(gpu.asarray(x))).data), want)
