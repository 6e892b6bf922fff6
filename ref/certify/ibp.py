"""Interval bound propagation (IBP) through a network applied as a sequence of layers.

Notation: n batch, k classes, eps the l-inf radius; l u the lower and upper bound of a layer's
input, mu = (u + l) / 2 its center and r = (u - l) / 2 its radius. Over the input box
[l0, u0] = [x - eps, x + eps], clipped (to [0, 1] by default), every layer maps a box to a box
that contains the image of its input box:

    affine (Linear, Conv2d with W = the layer's effective weight):
        mu' = W mu + b,   r' = |W| r,   (l', u') = (mu' - r', mu' + r')
    increasing elementwise / reshape (ReLU, Flatten, Identity, Normalize):  (f(l), f(u))

Margins: C[n, j] = e_y - e_j (k x k per sample) is fused into the last layer, which must be a
Linear: mu' = C (W mu + b), r' = |C W| r, so row j bounds z_y - z_j (tighter than subtracting the
bounds of z_y and z_j), and row y is exactly 0.

The bounds are Tensors built from differentiable ops, so a loss on them trains the weights (and,
through the subnet layers' effective weight, recomputed at every pass, the scores).
Accepted models (`bound_layers`): a Sequential, a model with `layer_sequence()` (the list of the
modules its forward applies in order, as ref.models.certified), or a supported layer, nested in
any way; anything else on the path (BatchNorm, pooling, dropout, a residual or custom block) is
a ValueError naming the layer.
"""
import math
import numbers

from ref.attacks import backend_of
from ref.models.common import Normalize
from ref.nn.containers import Sequential
from ref.nn.layers import Conv2d, Flatten, Identity, Linear, ReLU
from ref.tensor import Tensor

AFFINE = (Linear, Conv2d)
MONOTONE = (ReLU, Flatten, Identity, Normalize)     # increasing: the box maps to (f(l), f(u))
CLIPS = (True, False, "batch")


def bound_layers(model):
    """The modules `model` applies, in order, each Linear, Conv2d (subnet forms included), ReLU,
    Flatten, Identity or Normalize; a ValueError names the first layer that is not."""
    paths = {id(m): path for path, m in model.named_modules()}
    return list(_walk(model, paths))


def _walk(module, paths):
    if isinstance(module, AFFINE + MONOTONE):
        yield module
    elif isinstance(module, Sequential) or hasattr(module, "layer_sequence"):
        children = module if isinstance(module, Sequential) else module.layer_sequence()
        for child in children:
            yield from _walk(child, paths)
    else:
        raise ValueError(_unsupported(module, paths))


def _unsupported(module, paths):
    """The message for a module the bounds cannot pass: its first unsupported leaf layer, or the
    module itself (a residual or custom block), named by its path in the model."""
    culprit = next((m for _, m in module.named_modules()
                    if not m._modules and not isinstance(m, AFFINE + MONOTONE)), module)
    where = paths.get(id(culprit), "")
    name = f"layer '{where}'" if where else "the model"
    return (f"ref.certify: cannot bound {name} ({type(culprit).__name__}): bounds pass only "
            f"Linear, Conv2d (and their subnet forms), ReLU, Flatten, Identity and Normalize, "
            f"applied in sequence (a Sequential or a model with layer_sequence()); BatchNorm, "
            f"pooling, dropout and residual blocks are not supported")


def check_eps(eps, name="eps"):
    """eps as a float, finite and >= 0."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 <= eps < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {eps!r}")
    return float(eps)


def model_array(model, x):
    """x (an array or a Tensor) as an array on the model's backend, in its parameters' dtype."""
    _, xp = backend_of(model)
    dtype = next(iter(model.parameters())).dtype
    return xp.asarray(x.data if isinstance(x, Tensor) else x, dtype=dtype)


def input_box(model, x, eps, clip=True):
    """(l0, u0) Tensors (n, ...) on the model's backend and dtype: x -+ eps clipped to [0, 1]
    (clip=True), to the batch's scalar [min x, max x] (clip="batch", the reference's box) or
    not at all (clip=False)."""
    eps = check_eps(eps)
    if clip not in CLIPS:
        raise ValueError(f"clip must be one of {CLIPS}, got {clip!r}")
    T, xp = backend_of(model)
    x = model_array(model, x)                                              # (n, ...)
    lower, upper = x - eps, x + eps                                        # (n, ...)
    if clip is not False:
        lo, hi = (0, 1) if clip is True else (x.min(), x.max())
        lower, upper = xp.maximum(lower, lo), xp.minimum(upper, hi)        # (n, ...)
    return T(lower), T(upper)


def affine(layer, x, W, b):
    """The layer's map x -> W x + b (b may be None) with the weight W given."""
    if isinstance(layer, Linear):
        return x.ops.linear(x, W, b)
    return x.ops.conv2d(x, W, b, stride=layer.stride, padding=layer.padding,
                        dilation=layer.dilation)


def affine_interval(layer, lower, upper, C=None):
    """(l', u') of an affine layer: mu' = W mu + b, r' = |W| r; with C (n, m, o), the rows
    mu' = C (W mu + b), r' = |C W| r (n, m) instead (a Linear layer only)."""
    ops = lower.ops
    mu, r = (upper + lower) * 0.5, (upper - lower) * 0.5                  # (n, ...)
    W = layer.effective_weight()
    mu = affine(layer, mu, W, layer.bias)                                 # (n, o, ...)
    if C is None:
        r = affine(layer, r, ops.abs(W), None)                            # (n, o, ...)
    else:
        n, d = r.shape
        mu = ops.matmul(C, mu.reshape(n, -1, 1)).reshape(n, -1)           # (n, m)
        CW = ops.matmul(C, W)                                             # (n, m, d)
        r = ops.matmul(ops.abs(CW), r.reshape(n, d, 1)).reshape(n, -1)    # (n, m)
    return mu - r, mu + r


def interval_pass(layers, lower, upper, C=None):
    """Propagate the box (lower, upper) through `layers`; C (n, m, k), if given, is fused into
    the last layer (a Linear). Returns (l, u) of the output and the list of every layer's input
    (l, u) (CROWN-IBP reads the ReLUs' pre-activation bounds and the shapes from it)."""
    trace = []
    for i, layer in enumerate(layers):
        trace.append((lower, upper))
        if isinstance(layer, AFFINE):
            last = i == len(layers) - 1
            lower, upper = affine_interval(layer, lower, upper, C if last else None)
        else:
            lower, upper = layer(lower), layer(upper)
    return lower, upper, trace


def margin_spec(xp, y, k, dtype):
    """C (n, k, k) with C[n, j] = e_{y_n} - e_j: row j maps logits z to z_y - z_j (row y is 0)."""
    y = xp.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu" or (y.size and not 0 <= y.min() <= y.max() < k):
        raise ValueError(f"labels y must be integers in [0, {k}) of shape (n,), got "
                         f"{y.dtype} {y.shape}")
    eye = xp.eye(k, dtype=dtype)                                          # (k, k)
    return eye[y][:, None, :] - eye[None, :, :]                           # (n, k, k)


def ibp_bounds(model, x, eps, clip=True):
    """(lower, upper) Tensors (n, k): IBP bounds of the logits over the eps-box around x
    (arrays in [0, 1]), the box clipped as `input_box` says."""
    lower, upper = input_box(model, x, eps, clip)
    lower, upper, _ = interval_pass(bound_layers(model), lower, upper)
    return lower, upper


def ibp_margins(model, x, y, eps, clip=True):
    """(lb, layers, trace, C): the IBP lower bounds lb (n, k) of z_y - z_j (0 at j = y) with C
    fused into the last layer, and what CROWN-IBP reuses: the layers, every layer's input box
    (interval_pass) and C (n, k, k)."""
    layers = bound_layers(model)
    if not isinstance(layers[-1], Linear):
        raise ValueError(f"ref.certify: margins fuse the specification into the last layer, "
                         f"which must be a Linear, not a {type(layers[-1]).__name__}")
    lower, upper = input_box(model, x, eps, clip)
    C = margin_spec(lower.xp, y, layers[-1].out_features, lower.dtype)    # (n, k, k)
    lb, _, trace = interval_pass(layers, lower, upper, C)
    return lb, layers, trace, C
