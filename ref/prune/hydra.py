"""HYDRA (Sehwag et al., NeurIPS 2020): importance scores trained with the robust objective choose
which weights of a robustly pretrained network survive (ALGORITHMS.md 1, from the authors' code).

Notation: W a prunable layer's weight (o, c, ...), fan_in = c kh kw (c for a Linear), S its
scores, k the keep fraction of the layer (the same in every layer by default).

    pretrain   the dense network, trained with the robust objective (W, biases, BN)
    prune      every prunable layer in subnet form (ref.nn.subnet): W_eff = W * M(S), M = top
               n - int((1 - k) n) of |S|, recomputed at every forward; scores initialised by
               scaled_score_init AFTER the pretrained weights are loaded,
                   S = sqrt(6 / fan_in) * W / max|W|       (per layer: the first mask is LWM)
               then only S (and, as the reference does, the BatchNorm affine parameters) trained
               with the robust objective; W and biases frozen; SGD with weight decay on S.
    finetune   the scores frozen (M fixed), W, biases and BN trained from the pretrained values.
    export     the dense network with W * M baked in (ref.nn.subnet.dense_form).

Which layers: every Conv2d and Linear (stem, block convs, 1x1 shortcuts, classifier), as the
reference; BatchNorm and biases are never pruned. Other budgets (ref.prune.budgets): "adaptive"
gives layer i the keep adaptive_keep_ratios(sizes, k, p)[i].
Reference defaults (CIFAR-10): TRADES beta 6, eps 0.031, alpha 0.0078, 10 steps; SGD momentum
0.9, wd 1e-4, cosine lr per epoch (optim.Cosine hydra_offset); epochs 100 / 20 / 100, lr 0.1 /
0.1 / 0.01 (examples/cifar_hydra.py).
"""
import math

from ref import checkpoint
from ref.nn.norm import BatchNorm1d, BatchNorm2d
from ref.nn.subnet import SubnetLayer, subnet_form
from ref.prune.budgets import check_keep, layer_keep_ratios
from ref.prune.masks import prunable_layers

PHASES = ("pretrain", "prune", "finetune")


def scaled_score_init(W):
    """S = sqrt(6 / fan_in) * W / max|W| (an array of W's shape, dtype and backend)."""
    fan_in = math.prod(W.shape[1:])
    return math.sqrt(6 / fan_in) * W / abs(W).max()                              # (W.shape)


def subnet_layers(model):
    """{module path: subnet layer} in module order."""
    return {path: m for path, m in model.named_modules() if isinstance(m, SubnetLayer)}


def to_subnet(model, keep, budget="uniform", p=1.0, rng=None, **selection):
    """Turn the prunable layers (ref.prune.prunable_layers(model, **selection): every Conv2d and
    Linear by default) into subnet layers in place, each with its keep from the budget:
    "uniform" (keep everywhere) or "adaptive" (adaptive_keep_ratios(sizes, keep, p)).
    The scores are then scaled_score_init of the weights. Returns the model."""
    layers = prunable_layers(model, **selection)
    paths = [name[:-len(".weight")] for name in layers]
    ratios = layer_keep_ratios([layer.weight.size for layer in layers.values()], keep, budget, p)
    subnet_form(model, paths, dict(zip(paths, ratios)), rng=rng)
    init_scores(model)
    return model


def load_dense(path, model):
    """Load a dense checkpoint (of the same architecture) into the subnet form `model`: every
    entry must match, and only the scores may be missing (they keep their values; call
    init_scores to start the prune phase). Returns the names of the missing scores."""
    saved = checkpoint.read(path)
    state = {**saved["parameters"], **saved["buffers"]}
    own = {name for name, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    missing = sorted(own - set(state))
    unexpected = sorted(set(state) - own)
    if unexpected or any(not name.endswith(".scores") for name in missing):
        raise KeyError(f"checkpoint {path!r} does not match the model: missing "
                       f"{[n for n in missing if not n.endswith('.scores')]}, unexpected "
                       f"{unexpected}")
    model.load_state_dict(state, strict=False)
    return missing


def init_scores(model):
    """Overwrite every subnet layer's scores with scaled_score_init(W) (ALGORITHMS.md 1(e).5:
    after the pretrained weights are loaded)."""
    for layer in subnet_layers(model).values():
        layer.scores.data[...] = scaled_score_init(layer.weight.data)


def set_keep(model, keep):
    """Give every subnet layer the keep fraction `keep` (HYDRA's set_prune_rate)."""
    keep = check_keep(keep)
    for layer in subnet_layers(model).values():
        layer.keep = keep


def set_phase(model, phase, freeze_bn=False):
    """Which tensors train (requires_grad) in each phase:

        pretrain   weights, biases, BN; scores frozen
        prune      scores and BN affine parameters (BN frozen too when freeze_bn); weights and
                   biases of the prunable layers frozen (all other layers too)
        finetune   weights, biases, BN; scores frozen (the mask is fixed)
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    for module in model.modules():
        is_bn = isinstance(module, (BatchNorm1d, BatchNorm2d))
        for name, t in module._parameters.items():
            if t is None:
                continue
            if name == "scores":
                t.requires_grad = phase == "prune"
            elif is_bn:
                t.requires_grad = not (phase == "prune" and freeze_bn)
            else:
                t.requires_grad = phase != "prune"
    return model
