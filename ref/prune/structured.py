"""Structured pruning: L1-norm filter pruning (FP, Li et al. 2017), network slimming (NS, Liu et
al. 2017), and thinning, which rebuilds a pruned network without its removed channels. These are
the channel-level baselines of "Achieving Adversarial Robustness via Sparsity"
(ALGORITHMS.md 5(b), 7.5 items 3-4; rethinking-network-pruning's l1-norm-pruning, network-slimming).

Notation: a channel group is a conv W (o, c, kh, kw) whose filters can go, the BatchNorm right
after it (gamma, beta, running mean and var, each (o,)) and the consumer that reads its o channels:
a conv W' (o', o, kh', kw'), or the head's first Linear W' (o', o p p) whose input features are
channel-major (feature j p p + s for channel j, pooled position s, p = model.head_pool). b is the
consumer's inputs per channel: 1 for a conv, p p for a Linear. A channel mask m in {0, 1}^o (the
conv weight's dtype) says which channels stay; k is a kept fraction in (0, 1].

    groups  small CNN, VGG: every conv of `features`; the last one feeds the head's Linear.
            ResNets, WRN: only the inner convs of each block (Li et al.'s "first conv of each
            block"), so the stem, the shortcuts and every conv before a residual addition keep
            their width and the additions still line up.
    FP      n_j = sum |W[j]| (the L1 norm of filter j);  keep the int(o k) largest n_j.
    NS      sparsity training: loss + s sum_l sum_j |gamma_lj|   (gradient s sign(gamma), s = 1e-4)
            selection: a = the N values |gamma| of all groups sorted ascending,
                       tau = a[int(N (1 - k))],   m_lj = [|gamma_lj| > tau]   (ties at tau go),
                       then each layer keeps at least kept_count(C_l, min_keep) = C_l -
                       int((1 - min_keep) C_l) >= 1 channels, those of largest |gamma|.
    masks   the conv: M = m over axis 0 (its filters); the consumer: M' = repeat(m, b) over axis 1.
    thin    a copy with W[m], bias[m], gamma[m], beta[m], mean[m], var[m], W'[:, repeat(m, b)].

Ties: ranking by a value (FP's n_j, NS's per-layer minimum) follows budgets.topk_mask: a stable
ascending sort dropped in order, so among equal values the lower index goes first. (The
reference's np.argsort is unstable, so it leaves ties unspecified.)
min_keep = 0.05 by default [inferred]: the paper's "highest pruning ratio" that stops a layer
from vanishing has no code; the reference has no floor at all.
BatchNorm and bias are not masked: masks sit on Conv2d / Linear weights only (ref.prune.masks). A
pruned channel then carries a constant (its beta, or a function of the conv bias), which the
consumer's zero input columns ignore, so its BN parameters get exactly zero gradient from the
loss and the masked model computes what the thinned one does.

    channels = prune_channels(model, fp_channel_masks(model, keep=0.5))   # masks attached
    small = thin(model, channels)                                         # channels removed
"""
import copy
from typing import NamedTuple

from ref.models.resnet import BasicBlock, Bottleneck, PreActBlock, ResNet
from ref.models.small_cnn import SmallCNN
from ref.models.vgg import VGG
from ref.models.wrn import WideBasicBlock, WideResNet
from ref.nn.containers import Sequential
from ref.nn.layers import Conv2d, Linear
from ref.nn.module import array_module, to_backend_of
from ref.prune.budgets import keep_largest, check_keep, check_not_empty, topk_mask
from ref.prune.magnitude import threshold_masks
from ref.prune.masks import apply_masks, check_mask, expand_channel_mask, remove_masks

MIN_KEEP = 0.05   # NS: the fraction of its channels every layer keeps at least [inferred]


class ChannelGroup(NamedTuple):
    """Module paths of a conv, its BatchNorm and its consumer; block = b, the consumer's inputs
    per channel (1 for a conv, p p for a Linear)."""
    conv: str
    bn: str
    consumer: str
    block: int


# (conv, the BatchNorm after it, its consumer) inside a residual block: the inner convs only
BLOCK_GROUPS = {BasicBlock: (("conv1", "bn1", "conv2"),),
                Bottleneck: (("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3")),
                PreActBlock: (("conv1", "bn2", "conv2"),),
                WideBasicBlock: (("conv1", "bn2", "conv2"),)}


def channel_groups(model):
    """{conv weight name: ChannelGroup} of the model's prunable channel groups, in module order."""
    if isinstance(model, (SmallCNN, VGG)):
        groups = _feature_stack_groups(model)
    elif isinstance(model, (ResNet, WideResNet)):
        groups = [ChannelGroup(f"{path}.{conv}", f"{path}.{bn}", f"{path}.{consumer}", 1)
                  for path, block in model.named_modules() if type(block) in BLOCK_GROUPS
                  for conv, bn, consumer in BLOCK_GROUPS[type(block)]]
    else:
        raise ValueError(f"structured pruning knows small_cnn, vgg16_bn, the ResNets and "
                         f"wide_resnet, not the model {type(model).__name__}")
    return {f"{group.conv}.weight": group for group in groups}


def _feature_stack_groups(model):
    """features = [conv, BN, ReLU, (MaxPool)] * L: conv l feeds conv l + 1, the last conv the
    head's first Linear (block p p)."""
    convs = [i for i, layer in enumerate(model.features) if isinstance(layer, Conv2d)]
    head = model.head_name
    first_linear = f"{head}.0" if isinstance(getattr(model, head), Sequential) else head
    consumers = [(f"features.{i}", 1) for i in convs[1:]] + [(first_linear, model.head_pool ** 2)]
    return [ChannelGroup(f"features.{i}", f"features.{i + 1}", consumer, block)
            for i, (consumer, block) in zip(convs, consumers)]


# ---- FP ---------------------------------------------------------------------------------------
def l1_filter_mask(W, keep, name="the conv"):
    """m (o,): 1 at the int(o keep) filters j of W (o, c, kh, kw) with the largest sum |W[j]|;
    among equal norms the lower index is dropped first. A ValueError when that keeps none."""
    keep = check_keep(keep, f"keep of {name}")
    o = W.shape[0]
    kept = int(o * keep)
    if kept < 1:
        raise ValueError(f"FP: keep={keep!r} keeps int({o} * {keep!r}) = 0 of the {o} filters "
                         f"of {name}")
    norms = array_module(W).abs(W).reshape(o, -1).sum(axis=1)                      # (o,)
    return keep_largest(norms, kept)                                                 # (o,)


def fp_channel_masks(model, keep):
    """{conv weight name: m} by l1_filter_mask for every channel group. keep: one fraction for
    all, or {conv weight name: fraction} where a conv left out stays whole (as Li et al. skip
    sensitive layers). Checks every layer before returning anything."""
    groups = channel_groups(model)
    if isinstance(keep, dict):
        unknown = sorted(set(keep) - set(groups))
        if unknown:
            raise KeyError(f"no channel group has the conv {unknown}; the groups' convs: "
                           f"{list(groups)}")
        keeps = {name: keep.get(name, 1.0) for name in groups}
    else:
        keeps = dict.fromkeys(groups, keep)
    layers = dict(model.named_modules())
    return {name: l1_filter_mask(layers[group.conv].weight.data, keeps[name], name)
            for name, group in groups.items()}


# ---- NS ---------------------------------------------------------------------------------------
def slimming_masks(gammas, keep, min_keep=MIN_KEEP):
    """{name: m} from {name: gamma (C,)}: m = [|gamma| > tau] with tau = a[int(N (1 - keep))]
    over all N values |gamma| sorted ascending (ties at tau pruned), or'd with the
    kept_count(C, min_keep) largest |gamma| of the layer (budgets.topk_mask), so none vanishes."""
    keep, min_keep = check_keep(keep), check_keep(min_keep, "min_keep")
    total = sum(int(gamma.size) for gamma in gammas.values())
    above = threshold_masks(gammas, int(total * (1 - keep)))
    return {name: array_module(gamma).maximum(above[name], topk_mask(gamma, min_keep))  # (C,)
            for name, gamma in gammas.items()}


def bn_weights(model):
    """{conv weight name: gamma Tensor (o,)}: the weights of the channel groups' BatchNorms."""
    layers = dict(model.named_modules())
    found = {}
    for name, group in channel_groups(model).items():
        bn = layers[group.bn]
        if not bn.affine:
            raise ValueError(f"network slimming needs affine BatchNorms: {group.bn} has no gamma")
        found[name] = bn.weight
    return found


def ns_channel_masks(model, keep, min_keep=MIN_KEEP):
    """{conv weight name: m} by slimming_masks on the gammas of the channel groups."""
    return slimming_masks({name: gamma.data for name, gamma in bn_weights(model).items()},
                          keep, min_keep)


class SlimmingObjective:
    """Network slimming's sparsity training around an objective of ref.objectives:

        loss = objective(model, x, y, rng) + s sum_l sum_j |gamma_lj|    (gammas: bn_weights)

    whose added gradient is s sign(gamma) with sign(0) = 0, what the reference adds to
    gamma.grad after backward. `logits` and `attack` are the wrapped objective's (ref.train.fit
    reads them)."""

    def __init__(self, objective, s=1e-4):
        if isinstance(s, bool) or not s >= 0:
            raise ValueError(f"the sparsity weight s must be >= 0, got {s!r}")
        self.objective, self.s = objective, s

    @property
    def logits(self):
        return self.objective.logits

    @property
    def attack(self):
        return self.objective.attack

    def __call__(self, model, x, y, rng=None):
        gammas = bn_weights(model).values()
        loss = self.objective(model, x, y, rng)
        return loss + self.s * sum(gamma.ops.abs(gamma).sum() for gamma in gammas)

    def __repr__(self):
        return f"SlimmingObjective({self.objective!r}, s={self.s!r})"


# ---- masks and thinning -----------------------------------------------------------------------
def _checked_groups(model, channel_masks):
    """channel_groups(model) after checking channel_masks: known convs, (o,) 0/1, none empty."""
    groups = channel_groups(model)
    unknown = sorted(set(channel_masks) - set(groups))
    if unknown:
        raise KeyError(f"no channel group has the conv {unknown}; the groups' convs: "
                       f"{list(groups)}")
    layers = dict(model.named_modules())
    for name, m in channel_masks.items():
        check_mask(name, m, layers[groups[name].conv].weight.data[:, 0, 0, 0])   # (o,) filters
    check_not_empty(channel_masks, "these channel masks")
    return groups


def channel_weight_masks(model, channel_masks):
    """{weight name: M} from {conv weight name: m}: the conv gets m over axis 0, its consumer
    repeat(m, b) over axis 1; a conv that is both (VGG, Bottleneck) gets the product."""
    groups = _checked_groups(model, channel_masks)
    layers = dict(model.named_modules())
    masks = {}
    for name, m in channel_masks.items():
        group = groups[name]
        inputs = array_module(m).repeat(m, group.block)                            # (o b,)
        for path, channel_mask, axis in ((group.conv, m, 0), (group.consumer, inputs, 1)):
            W = layers[path].weight.data
            M = expand_channel_mask(channel_mask.astype(W.dtype), W.shape, axis)   # (W.shape)
            key = f"{path}.weight"
            masks[key] = masks[key] * M if key in masks else M
    return masks


def prune_channels(model, channel_masks):
    """Attach channel_weight_masks(model, channel_masks) (nothing changes on bad input); returns
    channel_masks, for thin()."""
    apply_masks(model, channel_weight_masks(model, channel_masks))
    return channel_masks


def _keep_entries(t, index, axis):
    """Tensor t with only the entries `index` along `axis` (its gradient dropped)."""
    t.data, t.grad = t.xp.take(t.data, index, axis=axis), None


def thin(model, channel_masks):
    """A new model (a deep copy; `model` is untouched) without the channels that channel_masks
    drop: conv W[m] and bias[m], the BatchNorm's parameters and running statistics [m], the
    consumer's W'[:, repeat(m, b)], with out_channels, num_features, in_channels / in_features
    updated. Those layers' masks are baked in (W * M) and dropped first, so the thin model
    computes what the masked one does, in eval and in train mode."""
    groups = _checked_groups(model, channel_masks)
    thinned = copy.deepcopy(model)
    layers = dict(thinned.named_modules())
    for name in channel_masks:
        remove_masks(layers[groups[name].conv])
        remove_masks(layers[groups[name].consumer])
    for name, m in channel_masks.items():
        group = groups[name]
        conv, bn, consumer = layers[group.conv], layers[group.bn], layers[group.consumer]
        xp = conv.weight.xp
        kept = xp.flatnonzero(to_backend_of(conv.weight, m))                       # (o',)
        for t in [conv.weight, conv.bias] + bn.parameters() + bn.buffers():
            if t is not None:
                _keep_entries(t, kept, axis=0)
        inputs = (kept[:, None] * group.block + xp.arange(group.block)).ravel()    # (o' b,)
        _keep_entries(consumer.weight, inputs, axis=1)
        conv.out_channels = bn.num_features = int(kept.size)
        if isinstance(consumer, Linear):
            consumer.in_features = int(inputs.size)
        else:
            consumer.in_channels = int(inputs.size)
    return thinned
