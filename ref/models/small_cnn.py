"""A small CNN that trains in seconds on CPU (scikit-learn digits 1x8x8, CIFAR 3x32x32).

Notation: w width, C classes; each conv is conv3x3 (padding 1, no bias) -> BN -> ReLU.
    conv(w) -> conv(w) -> maxpool 2 -> conv(2w) -> conv(2w) -> maxpool 2
    -> adaptive_avg_pool2d(1) -> flatten -> Linear(2w, 4w) -> ReLU -> Linear(4w, C)
Any input of height and width >= 4 works (8x8 becomes 2x2 before the global pool). Weights get
PyTorch's default layer init.
"""
import numpy as np

from ref.models.common import Network, conv_bn_relu
from ref.nn.containers import Sequential
from ref.nn.layers import Linear, MaxPool2d, ReLU


class SmallCNN(Network):
    def __init__(self, num_classes=10, in_channels=3, width=32, affine_bn=True, last_bn=False,
                 normalize=None, rng=None):
        super().__init__()
        self.set_normalize(normalize)
        rng = np.random.default_rng(rng)
        w = width
        self.features = Sequential(
            *conv_bn_relu(in_channels, w, False, affine_bn, rng),
            *conv_bn_relu(w, w, False, affine_bn, rng), MaxPool2d(2),
            *conv_bn_relu(w, 2 * w, False, affine_bn, rng),
            *conv_bn_relu(2 * w, 2 * w, False, affine_bn, rng), MaxPool2d(2))
        head = Sequential(Linear(2 * w, 4 * w, rng=rng), ReLU(),
                          Linear(4 * w, num_classes, rng=rng))
        self.set_head("classifier", head, num_classes, last_bn)

    def forward(self, x):
        return self.head(self.features(self.normalize_input(x)))


def small_cnn(num_classes=10, in_channels=3, width=32, **kw):
    """The small CNN above; 75,370 parameters at width 32, 3 channels, 10 classes."""
    return SmallCNN(num_classes, in_channels, width, **kw)
