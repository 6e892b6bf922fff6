"""Wide ResNet WRN-d-k for CIFAR as in HYDRA's models/wrn_cifar.py (itself the TRADES /
Zagoruyko-Komodakis definition).

Notation: n = (d - 4) / 6 blocks per group, channels 16, 16k, 32k, 64k; group strides 1, 2, 2.
    conv3x3(x, 16) -> block1 -> block2 -> block3 -> relu(bn1(.)) -> head ("fc")
    BasicBlock (pre-activation):  a = relu(bn1(x)),  r = conv2(relu(bn2(conv1(a))))
        y = r + x                 when in == out channels
        y = r + convShortcut(a)   otherwise (1x1 conv, stride s)
All convs are bias-free. Init as the reference: conv W ~ N(0, 2 / (kh kw o)) (kaiming_normal_,
fan_out, relu), BatchNorm weight 1 and bias 0, classifier bias 0 (its weight keeps PyTorch's
default). HYDRA also builds a `sub_block1` (a copy of block1) that forward never calls; it is left
out here, so the parameter count is HYDRA's minus that block's.
"""
import numpy as np

from ref.models.common import (Network, classifier_layer, conv1x1, conv3x3,
                               kaiming_normal_fan_out, reinit)
from ref.nn.containers import Sequential
from ref.nn.module import Module
from ref.nn.norm import BatchNorm2d


class WideBasicBlock(Module):
    def __init__(self, c, o, stride, affine_bn, rng):
        super().__init__()
        self.bn1 = BatchNorm2d(c, affine=affine_bn)
        self.conv1 = conv3x3(c, o, stride, rng=rng)
        self.bn2 = BatchNorm2d(o, affine=affine_bn)
        self.conv2 = conv3x3(o, o, rng=rng)
        # the reference's attribute name, so that state dicts line up
        self.convShortcut = None if c == o else conv1x1(c, o, stride, rng=rng)

    def forward(self, x):                                   # x (n, c, h, w)
        a = self.bn1(x).relu()                              # (n, c, h, w)
        out = self.conv2(self.bn2(self.conv1(a)).relu())    # (n, o, h/s, w/s)
        return out + (x if self.convShortcut is None else self.convShortcut(a))


class NetworkBlock(Module):
    """One group: `layer` = n blocks, the first with stride s and c -> o channels."""

    def __init__(self, n, c, o, stride, affine_bn, rng):
        super().__init__()
        self.layer = Sequential(*[WideBasicBlock(c if i == 0 else o, o, stride if i == 0 else 1,
                                                 affine_bn, rng) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(Network):
    def __init__(self, depth=28, widen=4, num_classes=10, in_channels=3, affine_bn=True,
                 last_bn=False, classifier="linear", normalize=None, rng=None):
        super().__init__()
        self.set_normalize(normalize)
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6 n + 4 with n >= 1 (e.g. 28, 34), got {depth!r}")
        if not isinstance(widen, int) or widen < 1:
            raise ValueError(f"widen must be a positive integer, got {widen!r}")
        rng = np.random.default_rng(rng)
        n, channels = (depth - 4) // 6, (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = conv3x3(in_channels, channels[0], rng=rng)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1, affine_bn, rng)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2, affine_bn, rng)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2, affine_bn, rng)
        self.bn1 = BatchNorm2d(channels[3], affine=affine_bn)
        self.set_head("fc", classifier_layer(classifier, channels[3], num_classes, rng),
                      num_classes, last_bn)
        reinit(self, rng, conv_init=kaiming_normal_fan_out)

    def forward(self, x):                                   # x (n, in_channels, h, w)
        out = self.conv1(self.normalize_input(x))           # (n, 16, h, w)
        out = self.block3(self.block2(self.block1(out)))    # (n, 64 widen, h/4, w/4)
        return self.head(self.bn1(out).relu())              # (n, C)


def wide_resnet(depth=28, widen=4, num_classes=10, **kw):
    """WRN-depth-widen (HYDRA's wrn_28_4 by default)."""
    return WideResNet(depth, widen, num_classes, **kw)


def wrn_28_4(num_classes=10, **kw):
    return WideResNet(28, 4, num_classes, **kw)


def wrn_28_10(num_classes=10, **kw):
    return WideResNet(28, 10, num_classes, **kw)
