"""ref.models: parameter counts of the reference PyTorch definitions, output shapes, end-to-end
gradient checks, options (non-affine BN, LBN, 1x1-conv classifier), reference inits, and, when
torch is installed, parameter names/shapes and outputs against the PyTorch definitions."""
import math

import numpy as np
import pytest

import ref
import ref.models as models
from ref.gradcheck import check_vjp
from ref.nn import BatchNorm1d, BatchNorm2d, Conv2d

# Parameter counts (10 classes, 3 input channels unless given). Each was computed with the PyTorch
# definition in `torch_reference` below (the same numbers come out of the authors' code):
COUNTS = [
    # the spec of ref/models/small_cnn.py, width 32
    ("small_cnn", {}, 75_370),
    ("small_cnn", dict(in_channels=1), 74_794),
    # DNR VGG16 (ksouvik52/DNR_ASP_DAC2021 models.py): convs with bias, Linear 512 -> 10
    ("vgg16_bn", {}, 14_728_266),
    # HYDRA VGG16-bn (inspire-group/hydra models/vgg_cifar.py): bias-free convs, 2048-256-256-10
    ("vgg16_bn", dict(classifier="hydra"), 15_311_818),
    # kuangliu/pytorch-cifar ResNet-18 / 34 / 50 (= HYDRA's models/resnet_cifar.py)
    ("resnet18", {}, 11_173_962),
    ("resnet34", {}, 21_282_122),
    ("resnet50", {}, 23_520_842),
    # RBSN cResNet18 / cResNet34 (IVRL/RobustBinarySubNet code/arch/resnet_cifar.py) with
    # NonAffineBatchNorm, bias-free 1x1-conv classifier "fc" and the LBN "last" (--end-with-bn)
    ("resnet18", dict(affine_bn=False, classifier="conv", last_bn=True), 11_164_352),
    ("resnet34", dict(affine_bn=False, classifier="conv", last_bn=True), 21_265_088),
    # PreActResNet-18 of locuslab/robust_overfitting (kuangliu's 11,171,146 plus the final BN's
    # 1,024 weights and biases)
    ("preact_resnet18", {}, 11_172_170),
    # WRN-28-4 / WRN-28-10 of HYDRA's models/wrn_cifar.py WITHOUT its unused sub_block1 (a copy of
    # block1 that forward never calls); with it HYDRA's models count 5,849,050 + 269,216 =
    # 6,118,266 (28-4) and 36,479,194 + 1,640,672 = 38,119,866 (28-10)
    ("wide_resnet", {}, 5_849_050),
    ("wrn_28_10", {}, 36_479_194),
]


def count(model):
    return sum(p.size for p in model.parameters())


@pytest.mark.parametrize("name, kw, expected", COUNTS)
def test_parameter_count(name, kw, expected):
    model = models.get(name, rng=0, **kw)
    assert count(model) == expected
    assert all(p.dtype == np.float32 and p.requires_grad for p in model.parameters())


# ---- forward shapes ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, kw", [
    ("small_cnn", {}), ("vgg16_bn", {}), ("vgg16_bn", dict(classifier="hydra", last_bn=True)),
    ("resnet18", {}), ("resnet34", dict(affine_bn=False, classifier="conv", last_bn=True)),
    ("resnet50", dict(num_classes=100)), ("preact_resnet18", dict(classifier="conv")),
    ("wide_resnet", dict(last_bn=True))])
def test_forward_shape(name, kw):
    """Full-size models on a 2x3x32x32 batch (eval mode; train mode is covered by the gradient
    checks and the torch comparison on narrow versions)."""
    model = models.get(name, rng=0, **kw).eval()
    x = ref.Tensor(np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32))
    with ref.no_grad():
        y = model(x)
    assert y.shape == (2, kw.get("num_classes", 10)) and y.dtype == np.float32
    assert np.isfinite(y.data).all()


@pytest.mark.parametrize("size", [8, 13])
def test_small_cnn_digits(size):
    """One-channel 8x8 inputs (scikit-learn digits) and odd sizes work."""
    model = models.small_cnn(in_channels=1, width=4, rng=0)
    x = ref.Tensor(np.random.default_rng(1).random((3, 1, size, size), dtype=np.float32))
    assert model(x).shape == (3, 10)


# ---- gradients --------------------------------------------------------------------------------

def _gradcheck(model, x_shape, rng, train):
    """check_vjp in float64 on the input and every parameter. In train mode BN normalises with
    batch statistics, so the output is a deterministic function of (x, parameters) even though
    every call also moves the running statistics."""
    model.astype(np.float64).train(train)
    if not train:   # non-trivial eval statistics
        for bn in model.modules():
            if isinstance(bn, (BatchNorm1d, BatchNorm2d)):
                bn.running_mean.data[...] = rng.standard_normal(bn.num_features) * 0.1
                bn.running_var.data[...] = rng.uniform(0.5, 1.5, bn.num_features)
    x = ref.Tensor(rng.standard_normal(x_shape), requires_grad=True)
    params = model.parameters()
    check_vjp(lambda x, *params: model(x), [x] + params, rng)
    assert all(p.grad is not None for p in params)


@pytest.mark.parametrize("train", [True, False])
def test_small_cnn_gradcheck(train, rng):
    _gradcheck(models.small_cnn(width=3, rng=rng), (3, 3, 8, 8), rng, train)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name, kw", [
    ("resnet18", dict(width=2, num_blocks=(1, 1, 0, 0))),
    ("resnet50", dict(width=2, num_blocks=(1, 1, 0, 0), affine_bn=False, classifier="conv",
                      last_bn=True)),
    ("preact_resnet18", dict(width=2, num_blocks=(1, 1, 0, 0))),
    ("wide_resnet", dict(depth=10, widen=1, last_bn=True))])
def test_resnet_gradcheck(name, kw, train, rng):
    """A 2-block network of each residual family, on the input and every parameter."""
    _gradcheck(models.get(name, num_classes=3, rng=rng, **kw), (3, 3, 8, 8), rng, train)


def test_train_output_ignores_running_stats(rng):
    model = models.resnet18(num_blocks=(1, 1, 0, 0), width=4, rng=rng).astype(np.float64)
    x = ref.Tensor(rng.standard_normal((4, 3, 8, 8)))
    y = model(x).data
    for bn in model.modules():
        if isinstance(bn, BatchNorm2d):
            bn.running_mean.data += 5
            bn.running_var.data *= 3
    np.testing.assert_array_equal(model(x).data, y)
    assert not np.allclose(model.eval()(x).data, y)


# ---- options, names, init ---------------------------------------------------------------------

def test_options_change_layers():
    model = models.resnet18(affine_bn=False, classifier="conv", last_bn=True, width=4, rng=0)
    names = dict(model.named_parameters())
    assert not any(isinstance(m, (BatchNorm1d, BatchNorm2d)) and m.parameters()
                   for m in model.modules())
    assert all(name.endswith("weight") for name in names)    # bias-free convs only
    assert names["fc.weight"].shape == (10, 32, 1, 1) and "linear.weight" not in names
    assert isinstance(model.last, BatchNorm2d) and not model.last.affine
    plain = models.resnet18(width=4, rng=0)
    assert dict(plain.named_parameters())["linear.bias"].shape == (10,)
    assert not hasattr(plain, "last")
    lbn = models.vgg16_bn(classifier="hydra", last_bn=True, rng=0)
    assert isinstance(lbn.last, BatchNorm1d) and lbn.last.parameters() == []


def test_seed_reproducible():
    a, b = (models.resnet18(width=4, rng=np.random.default_rng(3)) for _ in range(2))
    c = models.resnet18(width=4, rng=4)
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[name])
    assert not np.array_equal(a.conv1.weight.data, c.conv1.weight.data)


def test_registry_and_bad_arguments():
    assert models.get("resnet18", width=4).layer4[1].conv2.weight.shape == (32, 32, 3, 3)
    with pytest.raises(ValueError, match="resnet19"):
        models.get("resnet19")
    with pytest.raises(ValueError, match="classifier"):
        models.resnet18(classifier="mlp")
    with pytest.raises(ValueError, match="classifier"):
        models.vgg16_bn(classifier="conv")
    with pytest.raises(ValueError, match="num_blocks"):
        models.resnet18(num_blocks=(2, 2, 2))
    with pytest.raises(ValueError, match="depth"):
        models.wide_resnet(depth=27)


def _std(t):
    return float(t.data.astype(np.float64).std())


def test_reference_inits():
    """DNR VGG: conv W ~ xavier_uniform_(0.5), BN weight 0.5; HYDRA VGG and WRN: conv W ~
    N(0, 2 / fan_out); VGG Linear W ~ N(0, 0.01^2); all conv/linear biases 0 (not the WRN fc W)."""
    dnr = models.vgg16_bn(rng=0)
    conv = dnr.features[14]                              # 128 -> 256
    assert isinstance(conv, Conv2d) and conv.weight.shape == (256, 128, 3, 3)
    assert _std(conv.weight) == pytest.approx(0.5 * math.sqrt(2 / (9 * 384)), rel=0.02)
    assert (conv.bias.data == 0).all() and (dnr.features[15].weight.data == 0.5).all()
    assert _std(dnr.classifier.weight) == pytest.approx(0.01, rel=0.1)
    hydra = models.vgg16_bn(classifier="hydra", rng=0)
    assert hydra.features[14].bias is None
    assert _std(hydra.features[14].weight) == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.02)
    assert _std(hydra.classifier[0].weight) == pytest.approx(0.01, rel=0.02)
    assert (hydra.features[15].weight.data == 1).all()
    assert (hydra.classifier[4].bias.data == 0).all()
    wrn = models.wide_resnet(rng=0)
    conv = wrn.block2.layer[1].conv1                     # 128 -> 128
    assert _std(conv.weight) == pytest.approx(math.sqrt(2 / (9 * 128)), rel=0.02)
    assert (wrn.fc.bias.data == 0).all()
    assert np.abs(wrn.fc.weight.data).max() <= 1 / 16 and _std(wrn.fc.weight) > 0.01


# ---- against the PyTorch definitions ----------------------------------------------------------

def torch_reference(name, num_classes=10, in_channels=3, width=None, num_blocks=None,
                    affine_bn=True, last_bn=False, classifier="linear", depth=28, widen=4,
                    sub_block1=False):
    """The reference PyTorch model, written as in the authors' repositories (see COUNTS)."""
    torch = pytest.importorskip("torch")
    tnn, F = torch.nn, torch.nn.functional
    width = width or (32 if name == "small_cnn" else 64)
    if name == "wrn_28_10":
        name, widen = "wide_resnet", 10

    def bn(c):
        return tnn.BatchNorm2d(c, affine=affine_bn)

    class BasicBlock(tnn.Module):   # kuangliu / HYDRA / RBSN
        expansion = 1

        def __init__(self, c, planes, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(c, planes, 3, stride, 1, bias=False)
            self.bn1 = bn(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = bn(planes)
            self.shortcut = tnn.Sequential()
            if stride != 1 or c != planes:
                self.shortcut = tnn.Sequential(tnn.Conv2d(c, planes, 1, stride, bias=False),
                                               bn(planes))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class Bottleneck(tnn.Module):
        expansion = 4

        def __init__(self, c, planes, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(c, planes, 1, bias=False)
            self.bn1 = bn(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = bn(planes)
            self.conv3 = tnn.Conv2d(planes, 4 * planes, 1, bias=False)
            self.bn3 = bn(4 * planes)
            self.shortcut = tnn.Sequential()
            if stride != 1 or c != 4 * planes:
                self.shortcut = tnn.Sequential(tnn.Conv2d(c, 4 * planes, 1, stride, bias=False),
                                               bn(4 * planes))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = F.relu(self.bn2(self.conv2(out)))
            return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))

    class PreActBlock(tnn.Module):   # kuangliu / locuslab
        expansion = 1

        def __init__(self, c, planes, stride):
            super().__init__()
            self.bn1 = bn(c)
            self.conv1 = tnn.Conv2d(c, planes, 3, stride, 1, bias=False)
            self.bn2 = bn(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            if stride != 1 or c != planes:
                self.shortcut = tnn.Sequential(tnn.Conv2d(c, planes, 1, stride, bias=False))

        def forward(self, x):
            out = F.relu(self.bn1(x))
            shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
            out = self.conv1(out)
            return self.conv2(F.relu(self.bn2(out))) + shortcut

    class ResNet(tnn.Module):
        def __init__(self, block, num_blocks):
            super().__init__()
            self.preact = block is PreActBlock
            self.conv1 = tnn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            if not self.preact:
                self.bn1 = bn(width)
            c = width
            for i, n in enumerate(num_blocks):
                layers = []
                for stride in ([1 if i == 0 else 2] + [1] * (n - 1))[:n]:
                    layers.append(block(c, width * 2 ** i, stride))
                    c = width * 2 ** i * block.expansion
                setattr(self, f"layer{i + 1}", tnn.Sequential(*layers))
            if self.preact:
                self.bn = bn(c)
            if classifier == "conv":
                self.fc = tnn.Conv2d(c, num_classes, 1, bias=False)
            else:
                self.linear = tnn.Linear(c, num_classes)
            if last_bn:   # RBSN's LBN (2-d after the 1x1-conv classifier)
                self.last = (tnn.BatchNorm2d if classifier == "conv" else tnn.BatchNorm1d)(
                    num_classes, affine=False)

        def forward(self, x):
            out = self.conv1(x) if self.preact else F.relu(self.bn1(self.conv1(x)))
            out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
            if self.preact:
                out = F.relu(self.bn(out))
            out = F.avg_pool2d(out, 4)
            if classifier == "conv":
                out = self.fc(out)
                return (self.last(out) if last_bn else out).flatten(1)
            out = self.linear(out.view(out.size(0), -1))
            return self.last(out) if last_bn else out

    class WideBlock(tnn.Module):   # HYDRA models/wrn_cifar.py
        def __init__(self, c, o, stride):
            super().__init__()
            self.bn1, self.relu1 = bn(c), tnn.ReLU()
            self.conv1 = tnn.Conv2d(c, o, 3, stride, 1, bias=False)
            self.bn2, self.relu2 = bn(o), tnn.ReLU()
            self.conv2 = tnn.Conv2d(o, o, 3, 1, 1, bias=False)
            self.equalInOut = c == o
            self.convShortcut = (not self.equalInOut) and tnn.Conv2d(c, o, 1, stride, 0,
                                                                     bias=False) or None

        def forward(self, x):
            if not self.equalInOut:
                x = self.relu1(self.bn1(x))
            else:
                out = self.relu1(self.bn1(x))
            out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
            out = self.conv2(out)
            return torch.add(x if self.equalInOut else self.convShortcut(x), out)

    class NetworkBlock(tnn.Module):
        def __init__(self, n, c, o, stride):
            super().__init__()
            self.layer = tnn.Sequential(*[WideBlock(i == 0 and c or o, o, i == 0 and stride or 1)
                                          for i in range(n)])

        def forward(self, x):
            return self.layer(x)

    class WideResNet(tnn.Module):
        def __init__(self):
            super().__init__()
            ch, n = [16, 16 * widen, 32 * widen, 64 * widen], (depth - 4) // 6
            self.conv1 = tnn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
            self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
            if sub_block1:
                self.sub_block1 = NetworkBlock(n, ch[0], ch[1], 1)
            self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
            self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
            self.bn1, self.relu = bn(ch[3]), tnn.ReLU()
            self.fc = tnn.Linear(ch[3], num_classes)
            if last_bn:   # not in HYDRA: the LBN option
                self.last = tnn.BatchNorm1d(num_classes, affine=False)
            self.nChannels = ch[3]

        def forward(self, x):
            out = self.block3(self.block2(self.block1(self.conv1(x))))
            out = F.avg_pool2d(self.relu(self.bn1(out)), 8).view(-1, self.nChannels)
            return self.last(self.fc(out)) if last_bn else self.fc(out)

    class VGG(tnn.Module):   # HYDRA (classifier "hydra") / DNR (classifier "linear")
        def __init__(self):
            super().__init__()
            hydra, layers, c = classifier == "hydra", [], in_channels
            cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                   512, 512, 512] + ([] if hydra else ["M"])
            for v in cfg:
                if v == "M":
                    layers += [tnn.MaxPool2d(kernel_size=2, stride=2)]
                else:
                    layers += [tnn.Conv2d(c, v, 3, padding=1, bias=not hydra), bn(v), tnn.ReLU()]
                    c = v
            self.features = tnn.Sequential(*layers)
            if hydra:
                self.avgpool = tnn.AdaptiveAvgPool2d((2, 2))
                self.classifier = tnn.Sequential(
                    tnn.Linear(2048, 256), tnn.ReLU(True), tnn.Linear(256, 256), tnn.ReLU(True),
                    tnn.Linear(256, num_classes))
            else:
                self.avgpool = tnn.AvgPool2d(kernel_size=1, stride=1)
                self.classifier = tnn.Linear(512, num_classes)

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    class SmallCNN(tnn.Module):   # the spec in ref/models/small_cnn.py
        def __init__(self):
            super().__init__()
            w, c, layers = width, in_channels, []
            for v in (w, w, "M", 2 * w, 2 * w, "M"):
                if v == "M":
                    layers.append(tnn.MaxPool2d(2))
                else:
                    layers += [tnn.Conv2d(c, v, 3, padding=1, bias=False), bn(v), tnn.ReLU()]
                    c = v
            self.features = tnn.Sequential(*layers)
            self.classifier = tnn.Sequential(tnn.Linear(2 * w, 4 * w), tnn.ReLU(),
                                             tnn.Linear(4 * w, num_classes))

        def forward(self, x):
            return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))

    blocks = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3)),
              "resnet50": (Bottleneck, (3, 4, 6, 3)),
              "preact_resnet18": (PreActBlock, (2, 2, 2, 2))}
    if name in blocks:
        return ResNet(blocks[name][0], num_blocks or blocks[name][1])
    return {"wide_resnet": WideResNet, "vgg16_bn": VGG, "small_cnn": SmallCNN}[name]()


def _named_shapes(pairs):
    return [(name, tuple(t.shape)) for name, t in pairs if not name.endswith("num_batches_tracked")]


@pytest.mark.parametrize("name, kw", [spec[:2] for spec in COUNTS])
def test_names_and_shapes_match_torch(name, kw):
    """Same parameters and buffers, same names, same order: a torch state_dict loads as is."""
    torch_model = torch_reference(name, **kw)
    model = models.get(name, rng=0, **kw)
    assert _named_shapes(model.named_parameters()) == _named_shapes(torch_model.named_parameters())
    assert _named_shapes(model.named_buffers()) == _named_shapes(torch_model.named_buffers())


def test_torch_sub_block1_count():
    """The COUNTS comment: HYDRA's unused sub_block1 adds 269,216 parameters to WRN-28-4."""
    with_sub = torch_reference("wide_resnet", sub_block1=True)
    assert sum(p.numel() for p in with_sub.parameters()) == 5_849_050 + 269_216


@pytest.mark.parametrize("name, kw", [
    ("small_cnn", dict(width=4)),
    ("resnet18", dict(width=4)),
    ("resnet50", dict(width=2, num_blocks=(1, 2, 1, 1))),
    ("resnet18", dict(width=4, affine_bn=False, classifier="conv", last_bn=True)),
    ("preact_resnet18", dict(width=4)),
    ("wide_resnet", dict(depth=16, widen=1, last_bn=True)),
    ("vgg16_bn", {}), ("vgg16_bn", dict(classifier="hydra"))])
def test_outputs_match_torch(name, kw, rng):
    """Load the torch model's state (with random BN statistics and affine parameters) and compare
    float64 logits in train mode (batch statistics) and eval mode (running statistics)."""
    torch = pytest.importorskip("torch")
    torch_model = torch_reference(name, **kw).double()
    with torch.no_grad():
        for t_name, t in list(torch_model.named_parameters()) + list(torch_model.named_buffers()):
            if t.is_floating_point():
                t.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, t.shape) if "var" in t_name
                                         else t.numpy() + 0.1 * rng.standard_normal(t.shape)))
    model = models.get(name, rng=0, **kw).astype(np.float64)
    model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()
                           if not k.endswith("num_batches_tracked")})
    x = rng.random((3, 3, 32, 32))
    for train in (False, True):
        expected = torch_model.train(train)(torch.from_numpy(x)).detach().numpy()
        y = model.train(train)(ref.Tensor(x)).data
        np.testing.assert_allclose(y, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    torch_buffers = dict(torch_model.named_buffers())
    for buffer_name, b in model.named_buffers():   # both updated once, by the train-mode call
        want = torch_buffers[buffer_name].numpy()
        np.testing.assert_allclose(b.data, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
