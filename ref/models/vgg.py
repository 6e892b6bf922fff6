"""VGG16 with BatchNorm for CIFAR, in the two forms the robust-pruning repos use.

Notation: cfg lists conv3x3 widths (each conv -> BN -> ReLU) and "M" (2x2 max-pool, stride 2);
C classes. Parameter names equal the reference PyTorch models' ("features.0.weight", ...).
    classifier="linear" (DNR, ksouvik52/DNR_ASP_DAC2021 models.py): cfg 64,64,M,128,128,M,
        256x3,M,512x3,M,512x3,M; convs with bias; logits = Linear(512, C) on the 1x1 features.
        Init: conv W ~ xavier_uniform_(gain 0.5), BN weight 0.5, Linear W ~ N(0, 0.01^2),
        all biases 0.
    classifier="hydra" (HYDRA / BCS, inspire-group/hydra models/vgg_cifar.py): the same cfg
        without the last "M", bias-free convs, adaptive average pool to 2x2, so 512 * 2 * 2 = 2048
        features, then Linear(2048, 256) -> ReLU -> Linear(256, 256) -> ReLU -> Linear(256, C).
        Init: conv W ~ kaiming_normal_(fan_out, relu), BN weight 1, Linear W ~ N(0, 0.01^2),
        all biases 0.
"""
import numpy as np

from ref.models.common import (Network, check_choice, conv_bn_relu, kaiming_normal_fan_out,
                               reinit)
from ref.nn import init
from ref.nn.containers import Sequential
from ref.nn.layers import Linear, MaxPool2d, ReLU

CFG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _linear_init(W, rng):
    return init.normal_(W, 0.0, 0.01, rng=rng)


def _xavier_half(W, rng):
    return init.xavier_uniform_(W, gain=0.5, rng=rng)


class VGG(Network):
    def __init__(self, num_classes=10, in_channels=3, classifier="linear", conv_bias=None,
                 affine_bn=True, last_bn=False, normalize=None, rng=None):
        super().__init__()
        self.set_normalize(normalize)
        hydra = check_choice(classifier, "classifier", ("linear", "hydra")) == "hydra"
        rng = np.random.default_rng(rng)
        bias = not hydra if conv_bias is None else conv_bias
        layers, c = [], in_channels
        for v in CFG16[:-1] if hydra else CFG16:
            if v == "M":
                layers.append(MaxPool2d(2, 2))
            else:
                layers += conv_bn_relu(c, v, bias, affine_bn, rng)
                c = v
        self.features = Sequential(*layers)
        if hydra:
            head = Sequential(Linear(c * 2 * 2, 256, rng=rng), ReLU(), Linear(256, 256, rng=rng),
                              ReLU(), Linear(256, num_classes, rng=rng))
        else:
            head = Linear(c, num_classes, rng=rng)
        self.set_head("classifier", head, num_classes, last_bn, pool=2 if hydra else 1)
        reinit(self, rng, conv_init=kaiming_normal_fan_out if hydra else _xavier_half,
               linear_init=_linear_init, bn_weight=1.0 if hydra else 0.5)

    def forward(self, x):
        return self.head(self.features(self.normalize_input(x)))


def vgg16_bn(num_classes=10, classifier="linear", **kw):
    """VGG16-bn: classifier "linear" (DNR, 512 -> C) or "hydra" (HYDRA, 2048 -> 256 -> 256 -> C).
    conv_bias=None follows the reference (bias for "linear", none for "hydra")."""
    return VGG(num_classes, classifier=classifier, **kw)
