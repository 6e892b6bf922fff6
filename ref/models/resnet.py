"""CIFAR ResNets (kuangliu/pytorch-cifar, as used by HYDRA, RBSN and edge-popup) and the
pre-activation ResNet-18 of robust training (Rice et al., locuslab/robust_overfitting).

Notation: x (n, c, h, w); `width` the base width (64); stage i in 1..4 has planes width 2^(i-1)
and stride s = 1, 2, 2, 2 on its first block; e the block expansion (1 basic, 4 bottleneck);
C classes. All convs are bias-free.
    ResNet:  relu(bn1(conv3x3(x))) -> layer1..layer4 -> head          (no max-pool: 32x32 input)
    BasicBlock:     y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
    Bottleneck:     y = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))
    shortcut = 1x1 conv (stride s) + BN when the shape changes, else the identity
    PreActResNet: conv3x3(x) -> layer1..layer4 -> relu(bn(.)) -> head
    PreActBlock:    a = relu(bn1(x)),  y = conv2(relu(bn2(conv1(a)))) + (conv1x1(a) or x)
Head (see common.py): global average pool, then Linear "linear" or 1x1 conv "fc" (RBSN's name),
then the optional LBN "last". Parameter names equal the reference PyTorch models'.
"""
import numpy as np

from ref.models.common import Network, check_choice, classifier_layer, conv1x1, conv3x3
from ref.nn.containers import Sequential
from ref.nn.module import Module
from ref.nn.norm import BatchNorm2d


class BasicBlock(Module):
    expansion = 1

    def __init__(self, c, planes, stride, affine_bn, rng):
        super().__init__()
        self.conv1 = conv3x3(c, planes, stride, rng=rng)
        self.bn1 = BatchNorm2d(planes, affine=affine_bn)
        self.conv2 = conv3x3(planes, planes, rng=rng)
        self.bn2 = BatchNorm2d(planes, affine=affine_bn)
        self.shortcut = _shortcut(c, planes * self.expansion, stride, affine_bn, rng)

    def forward(self, x):                                   # x (n, c, h, w)
        out = self.bn1(self.conv1(x)).relu()                # (n, planes, h/s, w/s)
        out = self.bn2(self.conv2(out))                     # (n, planes, h/s, w/s)
        return (out + self.shortcut(x)).relu()              # (n, planes, h/s, w/s)


class Bottleneck(Module):
    expansion = 4

    def __init__(self, c, planes, stride, affine_bn, rng):
        super().__init__()
        self.conv1 = conv1x1(c, planes, rng=rng)
        self.bn1 = BatchNorm2d(planes, affine=affine_bn)
        self.conv2 = conv3x3(planes, planes, stride, rng=rng)
        self.bn2 = BatchNorm2d(planes, affine=affine_bn)
        self.conv3 = conv1x1(planes, planes * self.expansion, rng=rng)
        self.bn3 = BatchNorm2d(planes * self.expansion, affine=affine_bn)
        self.shortcut = _shortcut(c, planes * self.expansion, stride, affine_bn, rng)

    def forward(self, x):                                   # x (n, c, h, w)
        out = self.bn1(self.conv1(x)).relu()                # (n, planes, h, w)
        out = self.bn2(self.conv2(out)).relu()              # (n, planes, h/s, w/s)
        out = self.bn3(self.conv3(out))                     # (n, 4 planes, h/s, w/s)
        return (out + self.shortcut(x)).relu()              # (n, 4 planes, h/s, w/s)


class PreActBlock(Module):
    expansion = 1

    def __init__(self, c, planes, stride, affine_bn, rng):
        super().__init__()
        self.bn1 = BatchNorm2d(c, affine=affine_bn)
        self.conv1 = conv3x3(c, planes, stride, rng=rng)
        self.bn2 = BatchNorm2d(planes, affine=affine_bn)
        self.conv2 = conv3x3(planes, planes, rng=rng)
        self.shortcut = (Sequential(conv1x1(c, planes, stride, rng=rng))
                         if stride != 1 or c != planes else None)

    def forward(self, x):                                   # x (n, c, h, w)
        out = self.bn1(x).relu()                            # (n, c, h, w)
        shortcut = x if self.shortcut is None else self.shortcut(out)   # (n, planes, h/s, w/s)
        out = self.conv2(self.bn2(self.conv1(out)).relu())  # (n, planes, h/s, w/s)
        return out + shortcut


def _shortcut(c, o, stride, affine_bn, rng):
    """Identity (an empty Sequential) or 1x1 conv + BN when the shape changes."""
    if stride == 1 and c == o:
        return Sequential()
    return Sequential(conv1x1(c, o, stride, rng=rng), BatchNorm2d(o, affine=affine_bn))


def _check_num_blocks(num_blocks):
    if len(num_blocks) != 4 or any(not isinstance(n, int) or n < 0 for n in num_blocks):
        raise ValueError(f"num_blocks must be 4 non-negative ints, got {num_blocks!r}")


class ResNet(Network):
    """Post-activation (block="basic" | "bottleneck") or pre-activation (block="preact") ResNet
    with four stages of num_blocks[i] blocks each (a stage may have 0 blocks)."""

    BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck, "preact": PreActBlock}

    def __init__(self, block, num_blocks, num_classes=10, in_channels=3, width=64,
                 affine_bn=True, last_bn=False, classifier="linear", normalize=None, rng=None):
        super().__init__()
        self.set_normalize(normalize)
        check_choice(block, "block", tuple(self.BLOCKS))
        _check_num_blocks(num_blocks)
        rng = np.random.default_rng(rng)
        self.preact = block == "preact"
        self.conv1 = conv3x3(in_channels, width, rng=rng)
        if not self.preact:
            self.bn1 = BatchNorm2d(width, affine=affine_bn)
        c = width
        for i, n in enumerate(num_blocks):
            planes, blocks = width * 2 ** i, []
            for stride in ([1 if i == 0 else 2] + [1] * (n - 1))[:n]:
                blocks.append(self.BLOCKS[block](c, planes, stride, affine_bn, rng))
                c = planes * self.BLOCKS[block].expansion
            setattr(self, f"layer{i + 1}", Sequential(*blocks))
        if self.preact:
            self.bn = BatchNorm2d(c, affine=affine_bn)
        self.set_head("linear" if classifier == "linear" else "fc",
                      classifier_layer(classifier, c, num_classes, rng), num_classes, last_bn)

    def forward(self, x):                                   # x (n, in_channels, h, w)
        out = self.conv1(self.normalize_input(x))           # (n, width, h, w)
        if not self.preact:
            out = self.bn1(out).relu()
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))   # (n, 8 width e, h/8, w/8)
        if self.preact:
            out = self.bn(out).relu()
        return self.head(out)                               # (n, C)


def resnet18(num_classes=10, **kw):
    """CIFAR ResNet-18: BasicBlock [2, 2, 2, 2]; 11,173,962 parameters for 10 classes."""
    return ResNet("basic", kw.pop("num_blocks", (2, 2, 2, 2)), num_classes, **kw)


def resnet34(num_classes=10, **kw):
    """CIFAR ResNet-34: BasicBlock [3, 4, 6, 3]."""
    return ResNet("basic", kw.pop("num_blocks", (3, 4, 6, 3)), num_classes, **kw)


def resnet50(num_classes=10, **kw):
    """CIFAR ResNet-50: Bottleneck [3, 4, 6, 3]."""
    return ResNet("bottleneck", kw.pop("num_blocks", (3, 4, 6, 3)), num_classes, **kw)


def preact_resnet18(num_classes=10, **kw):
    """Pre-activation ResNet-18: PreActBlock [2, 2, 2, 2] and a final BN + ReLU."""
    return ResNet("preact", kw.pop("num_blocks", (2, 2, 2, 2)), num_classes, **kw)
