"""Pruning masks: which weights are prunable, a 0/1 mask beside each, sparsity accounting.

Notation: a prunable layer is a Conv2d, W (o, c, kh, kw), or a Linear, W (o, c); its mask M has
W's shape and dtype and values 0 / 1. The forward then uses W_eff = W * M through
ref.ops.masked_weight, so the gradient of W is exactly 0 where M = 0. BatchNorm parameters and
biases are never pruned.

Masks are keyed by the weight's parameter name ("features.0.weight", as in `weights(model)`) and
kept in the layer as the buffer `weight_mask`, so state_dict() and checkpoints hold them beside
the weights ("features.0.weight_mask"). Attaching masks zeroes the masked weights, and
`mask_optimizer` keeps them at exactly zero through every optimizer step.

Structured masks select whole output channels (filters) or input channels:
expand_channel_mask(m, W.shape, axis) repeats a channel mask m over the other axes of W.
"""
import ref
from ref.nn.layers import Conv2d, Linear
from ref.nn.module import array_module, to_backend_of
from ref.tensor import no_grad

KINDS = {"conv": Conv2d, "linear": Linear}
MASK = "weight_mask"   # the buffer name of a layer's mask


def kind_of(layer):
    """"conv" or "linear"."""
    return "conv" if isinstance(layer, Conv2d) else "linear"


def prunable_layers(model, first=True, last=True, kinds=("conv", "linear")):
    """{weight name: layer} of the prunable layers in module order: every Conv2d and Linear of
    the given kinds; first=False leaves out the first of them (the stem), last=False the last
    (the classifier)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"kinds must be among {sorted(KINDS)}, got {sorted(unknown)}")
    layers = layers_by_weight(model, tuple(KINDS[k] for k in kinds))
    names = list(layers)[int(not first):len(layers) - int(not last)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no prunable {' or '.join(kinds)} layer "
                         f"(first={first}, last={last})")
    return {name: layers[name] for name in names}


def weights(model, **selection):
    """{weight name: W array} of prunable_layers(model, **selection)."""
    return {name: layer.weight.data for name, layer in prunable_layers(model, **selection).items()}


def effective_weights(model, **selection):
    """{weight name: W_eff}: the weights the forward computes with (W * M for a masked layer,
    W * M(S) for a subnet layer of ref.nn.subnet, W itself for a dense one)."""
    with no_grad():
        return {name: layer.effective_weight().data
                for name, layer in prunable_layers(model, **selection).items()}


def layers_by_weight(model, types=tuple(KINDS.values())):
    """{weight name: layer} of every layer of the given types, in module order."""
    return {f"{name}.weight" if name else "weight": m for name, m in model.named_modules()
            if isinstance(m, types)}


def check_mask(name, M, W):
    """ValueError naming the layer unless M has W's shape and only the values 0 and 1."""
    if tuple(M.shape) != tuple(W.shape):
        raise ValueError(f"mask of {name}: shape {tuple(M.shape)} does not match the weight's "
                         f"{tuple(W.shape)}")
    xp = array_module(M)
    binary = (M == 0) | (M == 1)
    if not bool(binary.all()):
        bad = M.ravel()[xp.flatnonzero(~binary.ravel())[:3]]
        raise ValueError(f"mask of {name} is not 0/1: it holds {ref.asarray(bad).tolist()}")


def apply_masks(model, masks):
    """Attach {weight name: 0/1 mask} to the model's layers and zero the masked weights.

    Every mask is checked (a known Conv2d / Linear weight, its shape, 0/1 values) before anything
    changes. A layer that already has a mask gets the new one. Masks are stored in the weight's
    dtype on its backend."""
    layers = layers_by_weight(model)
    unknown = sorted(set(masks) - set(layers))
    if unknown:
        raise KeyError(f"no prunable layer has the weight {unknown}; prunable weights: "
                       f"{sorted(layers)}")
    for name, M in masks.items():
        check_mask(name, M, layers[name].weight.data)
    for name, M in masks.items():
        W = layers[name].weight
        M = to_backend_of(W, M).astype(W.dtype)                                    # (W.shape)
        set_mask(layers[name], type(W)(M))
        W.data *= M


def set_mask(layer, mask):
    """Attach the 0/1 Tensor `mask` to `layer` as its `weight_mask` buffer (no checks, the
    weight unchanged), or detach the layer's mask when mask is None."""
    if mask is not None:
        layer.register_buffer(MASK, mask)
    elif layer._buffers.pop(MASK, None) is not None:
        object.__delattr__(layer, MASK)


def get_masks(model):
    """{weight name: M} of every layer that holds a mask."""
    return {name: layer.weight_mask.data for name, layer in layers_by_weight(model).items()
            if layer._buffers.get(MASK) is not None}


def remove_masks(model):
    """Drop every mask, keeping W * M as the layer's dense weight (zeros where pruned)."""
    for layer in layers_by_weight(model).values():
        mask = layer._buffers.get(MASK)
        if mask is not None:
            layer.weight.data *= mask.data
            set_mask(layer, None)


def masks_in_checkpoint(saved):
    """{weight name: M} from a checkpoint as ref.checkpoint.read returns it."""
    suffix = "." + MASK
    return {name[:-len(suffix)] + ".weight": M for name, M in saved["buffers"].items()
            if name.endswith(suffix)}


def mask_optimizer(optimizer, model):
    """Tell the optimizer the masks of the parameters it updates (Optimizer.set_masks), so that
    after each step p *= M and its state *= M: pruned weights stay exactly zero."""
    by_id = {id(layer.weight): layer.weight_mask for layer in layers_by_weight(model).values()
             if layer._buffers.get(MASK) is not None}
    optimizer.set_masks([by_id.get(id(p)) for p in optimizer.params])
    return optimizer


def expand_channel_mask(channel_mask, shape, axis=0):
    """A weight mask of `shape` from a channel mask (shape[axis],): M[.., j, ..] = m[j] along
    `axis` (0: output channels / filters, 1: input channels)."""
    if channel_mask.ndim != 1 or channel_mask.shape[0] != shape[axis]:
        raise ValueError(f"channel mask of shape {tuple(channel_mask.shape)} does not fit axis "
                         f"{axis} of a weight of shape {tuple(shape)}")
    view = [1] * len(shape)
    view[axis] = shape[axis]
    xp = array_module(channel_mask)
    return xp.broadcast_to(channel_mask.reshape(view), tuple(shape)).copy()      # (shape)


# ---- accounting ------------------------------------------------------------------------------
def _counts(size, kept):
    return dict(size=size, kept=kept, zeros=size - kept, sparsity=1 - kept / size if size else 0.0)


def sparsity(model, **selection):
    """Zeros among the effective weights W * M of the prunable layers:

        {"layers": {name: {kind, size, kept, zeros, sparsity}},
         "conv": {size, kept, zeros, sparsity}, "linear": {...}, "global": {...}}

    kept counts the nonzero effective weights (a dense model with baked-in zeros counts as
    pruned), sparsity = zeros / size."""
    layers = prunable_layers(model, **selection)
    return summarise({name: dict(kind=kind_of(layers[name]),
                                 **_counts(W.size, int(W.astype(bool).sum())))
                      for name, W in effective_weights(model, **selection).items()})


def summarise(layers):
    """Add the conv, linear and global totals to per-layer {kind, size, kept} records."""
    report = {"layers": layers}
    for group in ("conv", "linear", "global"):
        members = [r for r in layers.values() if group in ("global", r["kind"])]
        report[group] = _counts(sum(r["size"] for r in members), sum(r["kept"] for r in members))
    return report
