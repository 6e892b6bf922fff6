"""Robust subnetworks of never-trained networks: robust binary subnets (RBSN, Liu et al. 2022),
edge-popup (Ramanujan et al. 2020) and robust scratch tickets (RST, Fu et al. 2021). The weights
keep their initial values forever; only scores, hence which weights are kept, are trained
(ALGORITHMS.md 2, 6, 6.8 and 7.2, from the authors' code).

Notation: W_0 a layer's default init (PyTorch's kaiming_uniform(a=sqrt(5))), fan its fan_in
(c kh kw) or fan_out (o kh kw), gain = sqrt(2) (relu), K the network's kept fraction, n_i the
size of layer i, rho_i its kept fraction, a the score scale.

    weight inits                                                          (frozen afterwards)
      binary                 W = sign(W_0), exactly +-1                              [code, RBSN]
      signed_constant        W = sign(W_0) gain / sqrt(fan K)     (RBSN's signed_constant_correct:
                                                                   the fan scaled by the kept K)
      signed_constant_original  W = sign(W_0) gain / sqrt(fan (1 - K))  (edge-popup's scaling,
                             which reads K as the pruned fraction, 6(e).1)       [code, edge-popup]
        with scale_fan=False both are W = sign(W_0) gain / sqrt(fan)
      kaiming_normal         W ~ N(0, gain^2 / fan);  kaiming_uniform  W ~ U(-b, b),
                             b = gain sqrt(3 / fan)                                     [RST]
    score init               S ~ U(-a, a), or U(-a / sqrt(fan), a / sqrt(fan)) in the layers the
                             mode selects: none | all | except_last | only_last     [code, RBSN]
    allocation               rho = adaptive_keep_ratios([n_i], K, p) over every prunable layer
                             (stem, block convs, 1x1 shortcuts, classifier); layer i keeps
                             n_i - int((1 - rho_i) n_i) weights (ref.prune.budgets)
    keep schedule            pr_epoch = (E - warmup) / pr_steps, ratio = K^(1 / pr_steps),
                             current = 1; at the start of epoch e with (e - warmup) % pr_epoch
                             == 0: current *= ratio and the allocation is re-run with current
                             (before the first such epoch the allocation at K holds)

Only the scores train: SGD with weight decay on the scores, as the references do; BatchNorm is
non-affine (build the model with affine_bn=False, and last_bn=True for RBSN's LBN on the logits).
"""
import math
import numbers

import numpy as np

from ref.nn import init
from ref.nn.subnet import subnet_form
from ref.prune.budgets import adaptive_keep_ratios, check_keep
from ref.prune.hydra import subnet_layers
from ref.prune.masks import prunable_layers

WEIGHT_INITS = ("binary", "signed_constant", "signed_constant_original", "kaiming_normal",
                "kaiming_uniform")
SCORE_MODES = ("none", "all", "except_last", "only_last")
GAIN = math.sqrt(2.0)   # calculate_gain("relu")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def fan_of(shape, mode="fan_in"):
    """fan_in = c kh kw or fan_out = o kh kw of a weight of shape (o, c, ...)."""
    _check_choice("mode", mode, ("fan_in", "fan_out"))
    return shape[1 if mode == "fan_in" else 0] * math.prod(shape[2:])


def init_weight_(W, name, keep, mode="fan_in", scale_fan=True, rng=None):
    """Overwrite the weight Tensor W, which holds its default init W_0, with the weight init
    `name` (module docstring); keep = K, the network's kept fraction. Returns W."""
    _check_choice("init", name, WEIGHT_INITS)
    fan = fan_of(W.shape, mode)
    if name == "binary":
        W.data[...] = W.xp.sign(W.data)                                            # (W.shape)
    elif name.startswith("signed_constant"):
        kept = keep if name == "signed_constant" else 1 - keep
        if scale_fan and kept <= 0:
            raise ValueError(f"{name} with scale_fan needs keep < 1, got keep={keep!r}")
        W.data[...] = W.xp.sign(W.data) * (GAIN / math.sqrt(fan * kept if scale_fan else fan))
    elif name == "kaiming_normal":
        init.normal_(W, 0.0, GAIN / math.sqrt(fan), rng)
    else:
        bound = GAIN * math.sqrt(3.0 / fan)
        init.uniform_(W, -bound, bound, rng)
    return W


def init_scores_(S, scale, fan=None, rng=None):
    """S ~ U(-b, b) with b = scale, or scale / sqrt(fan) when a fan is given. Returns S."""
    bound = scale if fan is None else scale / math.sqrt(fan)
    return init.uniform_(S, -bound, bound, rng)


def fan_scaled(score_mode, is_last):
    """Whether a layer's score bound is divided by sqrt(fan) under score_mode."""
    _check_choice("score_mode", score_mode, SCORE_MODES)
    return {"none": False, "all": True, "except_last": not is_last,
            "only_last": is_last}[score_mode]


def _check_p(p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p!r}")


def build(model, keep, p=1.0, init_name="binary", score_scale=0.01, score_mode="none",
          mode="fan_in", scale_fan=True, rng=None):
    """Turn every Conv2d and Linear of `model` into a subnet layer (in place), allocate the keep
    ratios adaptive_keep_ratios(sizes, keep, p), initialise the weights (init_name) and the
    scores (score_scale, score_mode), and freeze everything but the scores. Everything is
    checked before the model changes. Returns the model."""
    keep = check_keep(keep)
    _check_p(p)
    _check_choice("init", init_name, WEIGHT_INITS)
    _check_choice("score_mode", score_mode, SCORE_MODES)
    rng = np.random.default_rng(rng)
    layers = prunable_layers(model)
    paths = [name[:-len(".weight")] for name in layers]
    ratios = adaptive_keep_ratios([layer.weight.size for layer in layers.values()], keep, p)
    subnet_form(model, paths, dict(zip(paths, ratios)), rng=rng)
    for path, layer in subnet_layers(model).items():
        init_weight_(layer.weight, init_name, keep, mode, scale_fan, rng)
        fan = fan_of(layer.weight.shape, mode)
        init_scores_(layer.scores, score_scale, fan if fan_scaled(score_mode, path == paths[-1])
                     else None, rng)
    for name, t in model.named_parameters():
        t.requires_grad = name.endswith(".scores")
    return model


def allocate(model, keep, p=1.0):
    """Give the subnet layers the ratios adaptive_keep_ratios(sizes, keep, p) (RBSN's
    set_model_prune_rate). Returns {layer path: ratio}."""
    layers = subnet_layers(model)
    ratios = adaptive_keep_ratios([layer.weight.size for layer in layers.values()], keep, p)
    for layer, rho in zip(layers.values(), ratios):
        layer.keep = rho
    return dict(zip(layers, ratios))


def keep_at(epoch, keep, epochs, pr_steps=1, warmup=0):
    """The network's kept fraction during epoch `epoch` under the keep schedule (module doc)."""
    if isinstance(pr_steps, bool) or not isinstance(pr_steps, numbers.Integral) or pr_steps < 1:
        raise ValueError(f"pr_steps must be an integer >= 1, got {pr_steps!r}")
    if not 0 <= warmup < epochs:
        raise ValueError(f"warmup must be in [0, epochs = {epochs}), got {warmup!r}")
    pr_epoch = (epochs - warmup) / pr_steps
    ratio = keep ** (1 / pr_steps)
    current, fired = 1.0, False
    for e in range(epoch + 1):
        if (e - warmup) % pr_epoch == 0:
            current, fired = current * ratio, True
    return current if fired else keep


class AllocationSchedule:
    """An lr schedule that also runs the keep schedule: at the first call of each epoch e it
    re-allocates the model's keep ratios for keep_at(e, ...) (only when that value changed), then
    returns lr_schedule(epoch). It holds no state of its own, so a resumed run re-allocates for
    its epoch on the first call."""

    def __init__(self, lr_schedule, model, keep, p, epochs, pr_steps=1, warmup=0):
        keep_at(0, keep, epochs, pr_steps, warmup)   # checks the arguments
        self.lr_schedule, self.model, self.p = lr_schedule, model, p
        self.keep, self.epochs, self.pr_steps, self.warmup = keep, epochs, pr_steps, warmup
        self.epoch, self.current = None, None

    def __call__(self, epoch):
        e = math.floor(epoch)
        if e != self.epoch:
            current = keep_at(e, self.keep, self.epochs, self.pr_steps, self.warmup)
            if current != self.current:
                allocate(self.model, current, self.p)
            self.epoch, self.current = e, current
        return self.lr_schedule(epoch)

    def __repr__(self):
        return (f"AllocationSchedule({self.lr_schedule!r}, keep={self.keep}, p={self.p}, "
                f"epochs={self.epochs}, pr_steps={self.pr_steps}, warmup={self.warmup})")
