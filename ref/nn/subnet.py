"""Layers whose kept weights are chosen by scores (HYDRA, edge-popup, robust binary subnets), and
the conversions between a dense model and its subnet form.

Notation: W the weight, S the scores (W's shape), keep the kept fraction k of the layer, n = W's
size. The forward uses (ref.ops.subnet_weight, recomputed at every forward)

    W_eff = W * M,   M = 1 at the n - int((1 - k) n) largest |S|,
    dL/dS = sign(S) * W * dL/dW_eff   (straight-through, at every position),   dL/dW = M dL/dW_eff

Parameters: weight and bias exactly as the dense layer (so a dense state dict loads into the
subnet form, and the subnet form exports to the dense one), then `scores` (HYDRA calls them
`popup_scores`, edge-popup and RBSN `scores`). Freezing the weights or the scores is setting
requires_grad False on them: they then get no gradient and no optimizer update.
"""
import math

from ref.nn import init
from ref.nn.layers import Conv2d, Linear
from ref.ops.mask import check_keep, kept_count
from ref.tensor import no_grad


class SubnetLayer:
    """The scores and the forward hook shared by SubnetConv2d and SubnetLinear (a mixin)."""

    def _add_scores(self, keep, rng):
        """scores ~ kaiming_uniform(a=sqrt(5)) on the weight's backend (HYDRA's default)."""
        W = self.weight
        self.keep = check_keep(keep)
        self.scores = type(W)(W.xp.zeros_like(W.data), requires_grad=True)        # (W.shape)
        init.kaiming_uniform_(self.scores, a=math.sqrt(5), rng=rng)

    def effective_weight(self):
        """W * M with M from the scores (ref.ops.subnet_weight)."""
        return self.weight.ops.subnet_weight(self.weight, self.scores, self.keep)

    def mask(self):
        """The current 0/1 mask M (an array of W's shape and dtype)."""
        return self.weight.ops.keep_largest(abs(self.scores.data),
                                            kept_count(self.scores.size, self.keep))

    def extra_repr(self):
        return f"{super().extra_repr()}, keep={self.keep}"


class SubnetConv2d(SubnetLayer, Conv2d):
    """Conv2d whose forward uses W * M(scores); keep: the kept fraction."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, keep=1.0, rng=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         bias, rng)
        self._add_scores(keep, rng)


class SubnetLinear(SubnetLayer, Linear):
    """Linear whose forward uses W * M(scores); keep: the kept fraction."""

    def __init__(self, in_features, out_features, bias=True, keep=1.0, rng=None):
        super().__init__(in_features, out_features, bias, rng)
        self._add_scores(keep, rng)


SUBNET_OF = {Conv2d: SubnetConv2d, Linear: SubnetLinear}


def replace_layer(model, path, make):
    """Put make(old layer) in place of the layer at dotted `path` (its name and order kept)."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, make(getattr(parent, name)))


def rebuild_layer(cls, layer, **kw):
    """A new `cls` layer with `layer`'s hyper-parameters holding `layer`'s weight and bias
    Tensors (the same objects, so optimizers and references stay valid)."""
    if isinstance(layer, Conv2d):
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                  layer.padding, layer.dilation, bias=layer.bias is not None, **kw)
    else:
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, **kw)
    new.weight, new.bias = layer.weight, layer.bias
    new.training = layer.training
    return new


def subnet_form(model, layer_paths, keep=1.0, rng=None):
    """Turn the Conv2d / Linear layers at `layer_paths` (dotted module paths) into SubnetConv2d /
    SubnetLinear in place, keeping their weights and biases; scores ~ kaiming_uniform(a=sqrt(5))
    on the weights' backend (initialise them afterwards, e.g. ref.prune.hydra.scaled_score_init).
    keep: one fraction, or {path: fraction}. Returns the model."""
    keeps = keep if isinstance(keep, dict) else dict.fromkeys(layer_paths, keep)
    for path in layer_paths:
        layer = model.get_submodule(path)
        if type(layer) not in SUBNET_OF:
            raise TypeError(f"{path} is a {type(layer).__name__}; only Conv2d and Linear layers "
                            f"have a subnet form")
    for path in layer_paths:
        def make(old, path=path):
            new = rebuild_layer(SUBNET_OF[type(old)], old, keep=keeps[path])
            new._add_scores(keeps[path], rng)          # again, now on the weight's backend
            return new
        replace_layer(model, path, make)
    return model


def bake_effective_weights(model, paths):
    """Replace the layers at `paths` (module paths) in place by plain Conv2d / Linear layers whose
    weight is the old layer's effective_weight() (the bias and options kept, no scores, masks or
    signs). Returns the model."""
    for path in paths:
        def make(old):
            with no_grad():
                W_eff = old.effective_weight().data                                # (W.shape)
            dense = rebuild_layer(Conv2d if isinstance(old, Conv2d) else Linear, old)
            dense.weight = type(old.weight)(W_eff, requires_grad=old.weight.requires_grad)
            return dense
        replace_layer(model, path, make)
    return model


def dense_form(model):
    """Turn every subnet layer back into a plain Conv2d / Linear in place, with W * M baked into
    its weight (zeros where pruned) and no scores. Returns the model."""
    return bake_effective_weights(
        model, [path for path, m in model.named_modules() if isinstance(m, SubnetLayer)])
