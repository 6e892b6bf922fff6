"""BN-free networks for certified training (IBP / CROWN-IBP bounds, ref.certify): convolutions
with stride instead of pooling, ReLU, Flatten and Linear layers applied in sequence, nothing else,
so interval and linear bounds pass through every layer.

Notation: C classes, c input channels, s input size (s x s), w width. conv(c -> o, k, s, p) is
Conv2d(c, o, kernel k, stride s, padding p) with bias; each conv and hidden linear is followed by
a ReLU.

    cifar_model        conv(c -> 16, 4, 2, 1) conv(16 -> 32, 4, 2, 1) flatten
                       lin(32 (s/4)^2 -> 100) lin(100 -> C)              (HYDRA models/basic.py)
    cifar_model_large  conv(c -> 32, 3, 1, 1) conv(32 -> 32, 4, 2, 1) conv(32 -> 64, 3, 1, 1)
                       conv(64 -> 64, 4, 2, 1) flatten lin(64 (s/4)^2 -> 512) lin(512 -> 512)
                       lin(512 -> C)                                    (HYDRA models/basic.py)
    certified_cnn      conv(c -> w, 3, 1, 1) conv(w -> 2w, 4, 2, 1) flatten
                       lin(2w (s/2)^2 -> 8w) lin(8w -> C)          (small, for 8x8 digits)

At s = 32, c = 3 the first two are the reference's nets (flatten sizes 2048 and 4096). Init as the
reference: conv W ~ N(0, 2 / (kh kw o)) with b = 0; Linear keeps PyTorch's default init.
The layers are the children "0", "1", ... of the network, so the parameter names ("0.weight",
"2.weight", ...) are those of the reference's nn.Sequential; `layer_sequence()` lists the modules
the forward applies, in order (the input normalisation first, when set), which is how
ref.certify walks the network.
"""
import numpy as np

from ref.models.common import Network, kaiming_normal_fan_out
from ref.nn import init
from ref.nn.layers import Conv2d, Flatten, Linear, ReLU


class CertifiedNet(Network):
    """[normalize] -> the layers "0", "1", ... (Conv2d, Linear, ReLU, Flatten) in order."""

    def __init__(self, convs, hidden, num_classes, in_channels, input_size, normalize, rng):
        """convs: (out_channels, kernel, stride, padding) per conv; hidden: hidden linear widths."""
        super().__init__()
        self.set_normalize(normalize)
        rng = np.random.default_rng(rng)
        layers, c, s = [], in_channels, input_size
        for o, k, stride, padding in convs:
            layers += [Conv2d(c, o, k, stride=stride, padding=padding, rng=rng), ReLU()]
            c, s = o, (s + 2 * padding - k) // stride + 1
        layers.append(Flatten())
        width = c * s * s
        for o in hidden:
            layers += [Linear(width, o, rng=rng), ReLU()]
            width = o
        layers.append(Linear(width, num_classes, rng=rng))
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)
            if isinstance(layer, Conv2d):
                kaiming_normal_fan_out(layer.weight, rng)
                init.zeros_(layer.bias)
        self.depth = len(layers)

    def layer_sequence(self):
        """The modules the forward applies, in order."""
        layers = [getattr(self, str(i)) for i in range(self.depth)]
        return layers if self.normalize is None else [self.normalize] + layers

    def forward(self, x):
        for layer in self.layer_sequence():
            x = layer(x)
        return x


def cifar_model(num_classes=10, in_channels=3, input_size=32, normalize=None, rng=None):
    """The reference's small certified-training net; 2.1e5 parameters at 3x32x32, 10 classes."""
    return CertifiedNet([(16, 4, 2, 1), (32, 4, 2, 1)], [100], num_classes, in_channels,
                        input_size, normalize, rng)


def cifar_model_large(num_classes=10, in_channels=3, input_size=32, normalize=None, rng=None):
    """The reference's large certified-training net; 2.5e6 parameters at 3x32x32, 10 classes."""
    return CertifiedNet([(32, 3, 1, 1), (32, 4, 2, 1), (64, 3, 1, 1), (64, 4, 2, 1)], [512, 512],
                        num_classes, in_channels, input_size, normalize, rng)


def certified_cnn(num_classes=10, in_channels=1, width=8, input_size=8, normalize=None, rng=None):
    """A small BN-free CNN for 8x8 digits (module docstring); input_size must be even."""
    if input_size % 2:
        raise ValueError(f"certified_cnn: input_size must be even, got {input_size}")
    return CertifiedNet([(width, 3, 1, 1), (2 * width, 4, 2, 1)], [8 * width], num_classes,
                        in_channels, input_size, normalize, rng)
