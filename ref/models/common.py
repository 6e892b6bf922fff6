"""Pieces shared by the CIFAR models: conv shorthands, the classifier head, reference re-inits.

Every model is [normalize] -> features(x) -> head, where the optional input normalisation
    normalize(x)[n, c] = (x[n, c] - mean[c]) / std[c]
(the model option normalize=(mean, std), as RobustBench and the reference repos put it inside the
model) keeps attacks in [0, 1] pixel space; mean and std are constants of the architecture, not
state: they are not in state_dict() (a RobustBench checkpoint's `normalize.mean` / `.std` are
checked against them by ref.interop.from_torch). The head is
    adaptive_avg_pool2d(out, p) -> [flatten] -> classifier layer -> [LBN] -> flatten    (n, C)
A Linear classifier sees the flattened (n, c p p) features; a 1x1-conv classifier (edge-popup,
RBSN) sees (n, c, 1, 1) and its (n, C, 1, 1) output is flattened at the end. LBN (RBSN's
"last BatchNorm") is a non-affine BatchNorm on the logits, registered as `last`.
The reference models pool with a fixed avg_pool2d(4) (ResNets) or avg_pool2d(8) (WRN), which is
the same global pool for 32x32 inputs; the adaptive pool also serves other input sizes.
"""
import numpy as np

from ref.nn import init
from ref.nn.layers import Conv2d, Linear, ReLU
from ref.nn.module import Module
from ref.nn.norm import BatchNorm1d, BatchNorm2d


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def conv3x3(c, o, stride=1, bias=False, rng=None):
    """3x3 convolution with padding 1 (size kept at stride 1)."""
    return Conv2d(c, o, 3, stride=stride, padding=1, bias=bias, rng=rng)


def conv1x1(c, o, stride=1, bias=False, rng=None):
    """1x1 convolution without padding."""
    return Conv2d(c, o, 1, stride=stride, padding=0, bias=bias, rng=rng)


def conv_bn_relu(c, o, bias, affine_bn, rng):
    """[conv3x3, BatchNorm2d, ReLU], the unit of VGG-style feature stacks."""
    return [conv3x3(c, o, bias=bias, rng=rng), BatchNorm2d(o, affine=affine_bn), ReLU()]


def classifier_layer(kind, c, num_classes, rng):
    """"linear": Linear(c, C) with bias; "conv": 1x1 Conv2d(c, C) without bias (RBSN's builder)."""
    check_choice(kind, "classifier", ("linear", "conv"))
    if kind == "linear":
        return Linear(c, num_classes, rng=rng)
    return conv1x1(c, num_classes, rng=rng)


class Normalize(Module):
    """y[n, c] = (x[n, c] - mean[c]) / std[c] for x (n, c, h, w); mean and std are tuples of c
    floats (constants, not parameters or buffers), cast to x's backend and dtype per call."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
        if len(self.mean) != len(self.std) or min(self.std, default=0) <= 0:
            raise ValueError(f"normalize needs as many means as stds, all stds > 0; got mean "
                             f"{self.mean}, std {self.std}")

    def forward(self, x):                                   # x (n, c, h, w)
        mean = x.xp.asarray(self.mean, dtype=x.dtype).reshape(1, -1, 1, 1)   # (1, c, 1, 1)
        std = x.xp.asarray(self.std, dtype=x.dtype).reshape(1, -1, 1, 1)     # (1, c, 1, 1)
        return (x - mean) / std                             # (n, c, h, w)

    def extra_repr(self):
        return f"mean={self.mean}, std={self.std}"


class Network(Module):
    """A model whose forward starts with `self.normalize_input(x)` and ends with
    `self.head(features)` (see the module docstring)."""

    def set_normalize(self, normalize):
        """normalize: None or (mean, std), one value per input channel (module docstring)."""
        self.normalize = None if normalize is None else Normalize(*normalize)

    def normalize_input(self, x):
        return x if self.normalize is None else self.normalize(x)

    def set_head(self, name, layer, num_classes, last_bn=False, pool=1):
        """Register the classifier `layer` as attribute `name` (the reference's name, so state
        dicts line up) and, when last_bn, the non-affine LBN `last` after it."""
        setattr(self, name, layer)
        self.head_name, self.head_pool, self.last_bn = name, pool, last_bn
        self.head_is_conv = isinstance(layer, Conv2d)
        if last_bn:
            self.last = (BatchNorm2d if self.head_is_conv else BatchNorm1d)(num_classes,
                                                                            affine=False)

    def head(self, out):
        out = out.ops.adaptive_avg_pool2d(out, self.head_pool)   # (n, c, p, p)
        if not self.head_is_conv:
            out = out.flatten(1)                                 # (n, c p p)
        out = getattr(self, self.head_name)(out)                 # (n, C) or (n, C, 1, 1)
        if self.last_bn:
            out = self.last(out)
        return out.flatten(1)                                    # (n, C)


def kaiming_normal_fan_out(W, rng):
    """W ~ N(0, 2 / fan_out), fan_out = o kh kw: the conv init of HYDRA's VGG and WRN."""
    return init.kaiming_normal_(W, mode="fan_out", nonlinearity="relu", rng=rng)


def reinit(model, rng, conv_init, linear_init=None, bn_weight=1.0):
    """Re-initialise after construction, as the reference repos do: conv_init(W, rng) on every
    Conv2d weight, linear_init(W, rng) on every Linear weight (kept when None), all conv and
    linear biases = 0, affine BatchNorm weight = bn_weight and bias = 0."""
    rng = np.random.default_rng(rng)
    for m in model.modules():
        if isinstance(m, (Conv2d, Linear)):
            init_weight = conv_init if isinstance(m, Conv2d) else linear_init
            if init_weight is not None:
                init_weight(m.weight, rng)
            if m.bias is not None:
                init.zeros_(m.bias)
        elif isinstance(m, (BatchNorm1d, BatchNorm2d)) and m.affine:
            init.constant_(m.weight, bn_weight)
            init.zeros_(m.bias)
