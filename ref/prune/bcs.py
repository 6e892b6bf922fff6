"""BCS, Bayesian connectivity sampling (Özdenizci & Legenstein, ICML 2021): sparse robust
training from scratch in the DeepR style, with a fixed budget of active connections
(ALGORITHMS.md 4 and 7.4, from the authors' TensorFlow code IGITUGraz/SparseAdversarialTraining).

Notation: in every prunable layer l (every Conv2d and Linear: stem, block convs, 1x1 shortcuts,
classifier) theta (the layer's `weight` parameter, W's shape) is the trainable connection
parameter and s in {-1, +1} (the buffer `weight_sign`, W's shape) a fixed random sign; n_l the
layer's size, fan_in = c kh kw, fan_out = o; p the connectivity (the kept fraction of the
network); N* the budget of active connections; A = [theta > 0] the active connections.

    weight         W = s * max(theta, 0)   (= s theta where theta > 0, else 0)             [code]
                   dL/dtheta = s * dL/dW * [theta > 0]: a dormant connection (theta <= 0)
                   adds exactly 0 to the output and gets gradient 0 (relu'(0) = 0)
    init           layer l: exactly int(p_l * fan_in * fan_out) active positions, uniformly
                   chosen (Python floats, left to right); theta = |he_normal| there, 0
                   elsewhere; s = sign(N(0, 1)); biases 0                                   [code]
                   he_normal: N(0, sigma^2) truncated to +-2 sigma (redrawn outside),
                   sigma = sqrt(2 / fan_in) / 0.87962566103423978 (TF's he_normal)      [inferred]
    p_l            (reference_densities) VGG16 conv1-2 0.6, conv3-4 0.2, the rest 0.5 p, the
                   output layer 0.6; ResNet stem 0.6, stage 1 0.2, stages 2-4 0.5 p, output 0.6;
                   WideResNet stem 0.6, block 1 0.1, blocks 2-3 0.5 p, output 0.6           [code]
                   any other network: first and last layer 0.6, the rest 0.5 p         [inferred]
    budget         N* = int(p sum_l n_l)                                                    [code]
    one step       (RewiringSGDW.step, after the objective's backward)                      [code]
                   A_before = [theta > 0];  every parameter (theta, biases, BN):
                       p <- p - wd_t p;  v <- m v - lr_t g;  p <- p + v       (tfa SGDW, m 0.9)
                   theta <- theta + noise_std nu A_before,  nu ~ N(0, 1),
                       noise_std = lr_t sigma (sigma = 1e-6)                                [code]
                       or sqrt(2 lr_t T) with a temperature T (Langevin noise)             [paper]
                   then rewire
    rewire         c_l = #(theta_l > 0);  R = max(0, N* - sum_l c_l);                       [code]
                   R layer indices drawn i.i.d. with P(l) = n_l / sum n;  r_l = how often l was
                   drawn;  in layer l, r_l of its dormant positions (theta <= 0), uniformly
                   without replacement, get theta = 1e-12; s and the momentum stay as they
                   are; nothing is pruned when sum c_l > N*
                   r_l > the layer's dormant count: all of them are reactivated and the rest
                   waits for the next step (the reference would fail there)             [inferred]

The decay: wd_t follows the lr (wd_t = wd lr_t / lr_0: 5e-4, 5e-5, 5e-6 with lr 0.1, 0.01, 0.001)
and multiplies p directly, not lr_t p (ref.optim.SGDW); applied before or after the momentum step
gives the same p, since g is computed before either. There is no L1 prior term in the code (the
paper's -lr alpha); BatchNorm stores the biased batch variance in its running statistics
(reference_batch_norm). The random draws (positions, layers, noise) come from a numpy Generator
on the host, so both backends see the same numbers for the same seed; the counting, gathering and
scattering run on the parameters' backend.

Baselines of the BCS comparison [inferred from the issue; the reference has no code for them],
both plain masked networks (ref.prune.masks) with W = s * |he_normal| from the same draws,
trained with the same optimizer and objective, their masks fixed:
    random fixed    the initial active set, topped up once to N* by rewire
    fixed magnitude in each layer as many connections as the random-fixed one has, at the
                    largest |W| of a trained dense network (a global ranking of |W| empties
                    whole layers of a small network at p = 0.1)
"""
import math
import numbers

import numpy as np

from ref.models.resnet import ResNet
from ref.models.vgg import VGG
from ref.models.wrn import WideResNet
from ref.nn.layers import Conv2d, Linear
from ref.nn.module import array_module, to_backend_of
from ref.nn.norm import BatchNorm1d, BatchNorm2d
from ref.nn.subnet import bake_effective_weights, rebuild_layer, replace_layer
from ref.ops.mask import check_keep
from ref.optim.optimizers import SGDW
from ref.prune.budgets import keep_largest
from ref.prune.masks import layers_by_weight, apply_masks, prunable_layers

REACTIVATED = 1e-12          # theta of a reactivated connection
HE_TRUNCATION = 2.0          # he_normal's truncation, in standard deviations
HE_STD_CORRECTION = 0.87962566103423978   # std of N(0, 1) truncated to +-2
SIGN = "weight_sign"         # the buffer name of a layer's signs


# ---- the parameterisation --------------------------------------------------------------------
class RewiringLayer:
    """The forward hook of RewiringConv2d and RewiringLinear (a mixin): `weight` holds theta,
    the buffer `weight_sign` holds s."""

    def set_sign(self, sign):
        """Store the signs s (an array of W's shape) on the weight's backend and dtype."""
        W = self.weight
        self.register_buffer(SIGN, type(W)(to_backend_of(W, sign).astype(W.dtype)))   # (W.shape)

    def effective_weight(self):
        """W = s * max(theta, 0) through relu and mul: dL/dtheta = s dL/dW [theta > 0]."""
        return self.weight.relu() * self.weight_sign


class RewiringConv2d(RewiringLayer, Conv2d):
    """Conv2d whose forward uses s * max(theta, 0); `weight` is theta, s starts at +1."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, rng=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         bias, rng)
        self.set_sign(np.ones(self.weight.shape))


class RewiringLinear(RewiringLayer, Linear):
    """Linear whose forward uses s * max(theta, 0); `weight` is theta, s starts at +1."""

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__(in_features, out_features, bias, rng)
        self.set_sign(np.ones(self.weight.shape))


REWIRING_OF = {Conv2d: RewiringConv2d, Linear: RewiringLinear}


def rewiring_layers(model):
    """{weight name: layer} of the rewiring layers, in module order."""
    return layers_by_weight(model, (RewiringLayer,))


def thetas(model):
    """{weight name: theta array} of the rewiring layers (the arrays themselves)."""
    return {name: layer.weight.data for name, layer in rewiring_layers(model).items()}


# ---- initial connectivity --------------------------------------------------------------------
def check_connectivity(connectivity):
    """connectivity as a float in (0, 1], else a ValueError naming the value."""
    return check_keep(connectivity, "connectivity")


def reference_densities(model, connectivity):
    """{weight name: p_l}, the initial density of each prunable layer (every Conv2d and Linear):
    VGG, ResNet and WideResNet as the reference, any other network by the inferred rule (module
    docstring)."""
    p = check_connectivity(connectivity)
    names = list(prunable_layers(model))

    def inner(i, name):
        if isinstance(model, VGG):
            return (0.6, 0.6, 0.2, 0.2)[i] if i < 4 else 0.5 * p
        if isinstance(model, ResNet) and name.startswith("layer1."):
            return 0.2
        if isinstance(model, WideResNet) and name.startswith("block1."):
            return 0.1
        return 0.5 * p

    return {name: 0.6 if i in (0, len(names) - 1) else inner(i, name)
            for i, name in enumerate(names)}


def active_count(fan_in, fan_out, density):
    """int(density * fan_in * fan_out): the initial active connections of a layer, computed as
    the reference does (Python floats, left to right)."""
    return int(density * fan_in * fan_out)


def he_normal_magnitudes(shape, fan_in, rng):
    """|x| with x ~ N(0, sigma^2) truncated to +-2 sigma (out-of-range draws redrawn),
    sigma = sqrt(2 / fan_in) / 0.8796...: the magnitudes of TF's he_normal, in float64."""
    z = rng.standard_normal(shape)                                                 # (shape)
    outside = np.abs(z) > HE_TRUNCATION                                            # (shape)
    while outside.any():
        z[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(z) > HE_TRUNCATION
    return math.sqrt(2 / fan_in) / HE_STD_CORRECTION * np.abs(z)                   # (shape)


def initial_parameters(model, densities, rng=None):
    """{weight name: {"magnitude", "sign", "active"}} for the layers in `densities` ({weight
    name: p_l}), host float64 arrays of W's shape drawn in this order per layer: the exactly
    active_count(fan_in, fan_out, p_l) active positions (0/1), the |he_normal| magnitudes of
    every position, the signs sign(N(0, 1)) (0 drawn as +1)."""
    rng = np.random.default_rng(rng)
    layers = prunable_layers(model)
    unknown = sorted(set(densities) - set(layers))
    if unknown:
        raise KeyError(f"no prunable layer has the weight {unknown}; prunable: {sorted(layers)}")
    drawn = {}
    for name, density in densities.items():
        if isinstance(density, bool) or not 0 <= density <= 1:
            raise ValueError(f"the initial density of {name} must lie in [0, 1], got "
                             f"{density!r}")
        shape = layers[name].weight.shape
        fan_out, fan_in = shape[0], math.prod(shape[1:])
        active = np.zeros(math.prod(shape))                                        # (n,)
        active[rng.choice(active.size, active_count(fan_in, fan_out, density),
                          replace=False)] = 1
        drawn[name] = dict(active=active.reshape(shape),                           # (W.shape)
                           magnitude=he_normal_magnitudes(shape, fan_in, rng),     # (W.shape)
                           sign=np.where(rng.standard_normal(shape) < 0, -1.0, 1.0))  # (W.shape)
    return drawn


def _zero_bias(layer):
    if layer.bias is not None:
        layer.bias.data[...] = 0


def to_rewiring(model, initial):
    """Turn the layers of `initial` (from initial_parameters) into RewiringConv2d /
    RewiringLinear in place, keeping their weight and bias Tensors: theta = magnitude * active,
    s = sign, biases 0. Returns the model (create its optimizer afterwards)."""
    layers = prunable_layers(model)
    for name in initial:
        if type(layers[name]) not in REWIRING_OF:
            raise TypeError(f"{name} belongs to a {type(layers[name]).__name__}; only Conv2d "
                            f"and Linear layers have a rewiring form")
    for name, drawn in initial.items():
        def make(old, drawn=drawn):
            new = rebuild_layer(REWIRING_OF[type(old)], old)
            new.weight.data[...] = to_backend_of(new.weight, drawn["magnitude"] * drawn["active"])
            new.set_sign(drawn["sign"])
            _zero_bias(new)
            return new
        replace_layer(model, name[:-len(".weight")], make)
    return model


def dense_form(model):
    """Turn every rewiring layer back into a plain Conv2d / Linear in place, holding
    W = s * max(theta, 0) (zeros at the dormant connections) and no signs. Returns the model."""
    return bake_effective_weights(
        model, [name[:-len(".weight")] for name in rewiring_layers(model)])


def reference_batch_norm(model):
    """Every BatchNorm of the model stores the biased batch variance in running_var, as the
    reference's BatchNorm does (PyTorch stores the unbiased one). Returns the model."""
    for module in model.modules():
        if isinstance(module, (BatchNorm1d, BatchNorm2d)):
            module.biased_running_var = True
    return model


# ---- budget and rewiring ---------------------------------------------------------------------
def global_budget(sizes, connectivity):
    """N* = int(sum(sizes) * p): the number of active connections BCS keeps."""
    return int(sum(sizes) * check_connectivity(connectivity))


def check_budget(budget, total):
    """budget as an int in [0, total], else a ValueError naming the value."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 0:
        raise ValueError(f"budget must be a non-negative integer, got {budget!r}")
    if budget > total:
        raise ValueError(f"budget {budget} is larger than the {total} prunable weights")
    return int(budget)


def active_counts(thetas):
    """{name: c_l = #(theta_l > 0)} (a host read of one number per layer)."""
    return {name: int(array_module(theta).count_nonzero(theta > 0))
            for name, theta in thetas.items()}


def rewire(thetas, budget, rng):
    """Reactivate dormant connections until sum_l #(theta_l > 0) = budget (module docstring),
    in place. thetas: {name: theta array} (numpy or cupy); rng: numpy Generator, called as
    rng.choice(L, R, p=n_l / sum n) for the layers, then per drawn layer in the dict's order
    rng.choice(dormant count, r_l, replace=False) for the ranks of the chosen positions among
    the layer's dormant ones in C order. Returns {name: connections reactivated}."""
    names = list(thetas)
    sizes = np.array([thetas[name].size for name in names])                       # (L,)
    budget = check_budget(budget, int(sizes.sum()))
    missing = budget - sum(active_counts(thetas).values())
    reactivated = dict.fromkeys(names, 0)
    if missing <= 0:
        return reactivated
    drawn = np.bincount(rng.choice(len(names), missing, p=sizes / sizes.sum()),
                        minlength=len(names))                                      # (L,)
    for name, r in zip(names, drawn):
        if r == 0:
            continue
        theta = thetas[name]
        xp = array_module(theta)
        dormant = xp.flatnonzero(theta <= 0)                                       # (d,)
        r = min(int(r), dormant.size)
        ranks = xp.asarray(rng.choice(dormant.size, r, replace=False))             # (r,)
        theta[xp.unravel_index(dormant[ranks], theta.shape)] = REACTIVATED
        reactivated[name] = r
    return reactivated


# ---- the optimizer: SGDW, noise on the active connections, rewiring ---------------------------
class RewiringSGDW(SGDW):
    """One BCS step per call of step() (module docstring):

        A_before = [theta > 0];  SGDW on every parameter with a gradient;
        theta += noise_std nu A_before   (nu ~ N(0, 1) from `rng`, drawn on the host);
        rewire(thetas, budget, rng)

    noise_std = lr * noise (the reference's noise_scaling, default 1e-6), or sqrt(2 lr T) with
    temperature=T (the paper's Langevin noise); noise 0 and no temperature skip the draws.
    `rewired` counts the connections reactivated since the start, `last_rewired` those of the
    last step ({name: count}); the rng state and `rewired` are part of state_dict, so a resumed
    run draws what the uninterrupted one would have. Create it after model.to(...).
    """

    def __init__(self, model, lr, budget, momentum=0.9, weight_decay=5e-4, noise=1e-6,
                 temperature=None, rng=None):
        super().__init__(model.parameters(), lr, momentum, weight_decay)
        self.layers = rewiring_layers(model)
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no rewiring layer: call "
                             f"ref.prune.bcs.to_rewiring first")
        if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
            raise ValueError(f"noise must be a number >= 0, got {noise!r}")
        if temperature is not None and not temperature >= 0:
            raise ValueError(f"temperature must be None or a number >= 0, got {temperature!r}")
        self.budget = check_budget(budget, sum(layer.weight.size
                                               for layer in self.layers.values()))
        self.noise, self.temperature = float(noise), temperature
        self.rng = np.random.default_rng(rng)
        self.rewired, self.last_rewired = 0, {}
        self._theta_ids = {id(layer.weight) for layer in self.layers.values()}

    @property
    def noise_std(self):
        """The standard deviation of this step's noise on theta."""
        if self.temperature is not None:
            return math.sqrt(2 * self.lr * self.temperature)
        return self.lr * self.noise

    def thetas(self):
        """{name: theta array} of the model's rewiring layers, read at call time."""
        return {name: layer.weight.data for name, layer in self.layers.items()}

    def step(self):
        super().step()
        self.last_rewired = rewire(self.thetas(), self.budget, self.rng)
        self.rewired += sum(self.last_rewired.values())

    def _update(self, p, g, state):
        std = self.noise_std
        if id(p) not in self._theta_ids or std == 0:
            return super()._update(p, g, state)
        v = state.get("velocity")
        if self.momentum and v is None:
            v = state["velocity"] = p.xp.zeros_like(p.data)                       # (p.shape)
        noise = to_backend_of(p, self.rng.standard_normal(p.shape, dtype=p.dtype))  # (p.shape)
        p.ops.sgdw_noise_update_(p.data, g, v, noise, self.lr, self.decay, std, self.momentum)

    def _scalars(self):
        return {**super()._scalars(), "rewired": self.rewired,
                "rng": self.rng.bit_generator.state}

    def _set_scalars(self, state):
        super()._set_scalars(state)
        self.rewired = int(state["rewired"])
        self.rng.bit_generator.state = state["rng"]


# ---- the fixed-connectivity baselines --------------------------------------------------------
def random_fixed_masks(initial, budget, rng):
    """{name: M}: the initial active sets of `initial` topped up to `budget` by one rewire
    (the random-fixed baseline's connectivity), host arrays of W's shape."""
    thetas = {name: drawn["magnitude"] * drawn["active"] for name, drawn in initial.items()}
    rewire(thetas, budget, rng)
    return {name: (theta > 0).astype(theta.dtype) for name, theta in thetas.items()}


def magnitude_fixed_masks(weights, counts):
    """{name: M}: in each layer the counts[name] largest |W| of `weights` (a trained dense
    network's), ties kept at the higher flat index (ref.prune.budgets.keep_largest)."""
    masks = {}
    for name, W in weights.items():
        xp = array_module(W)
        a = xp.abs(W)                                                              # (W.shape)
        masks[name] = keep_largest(a, counts[name]) if counts[name] else xp.zeros_like(a)
    return masks


def to_fixed(model, initial, masks):
    """The baselines' network, in place: W = sign * magnitude from `initial` in the prunable
    layers it names, biases 0, then `masks` attached (ref.prune.apply_masks zeroes the rest;
    train with ref.prune.mask_optimizer). Returns the model."""
    layers = prunable_layers(model)
    for name, drawn in initial.items():
        W = layers[name].weight
        W.data[...] = to_backend_of(W, drawn["sign"] * drawn["magnitude"])
        _zero_bias(layers[name])
    apply_masks(model, masks)
    return model
