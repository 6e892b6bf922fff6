"""In-place parameter initialisers with PyTorch's formulas and defaults (torch.nn.init).

Notation: t a Tensor whose data is overwritten in place; for a weight of shape (o, c, k...) the
receptive field is r = prod(k...), fan_in = c r and fan_out = o r
(torch.nn.init._calculate_fan_in_and_fan_out).

    gain(linear | conv | sigmoid) = 1, gain(tanh) = 5/3, gain(relu) = sqrt(2),
    gain(leaky_relu, a) = sqrt(2 / (1 + a^2)), gain(selu) = 3/4
    kaiming_uniform_:  U(-b, b),  b = gain sqrt(3 / fan)          (fan = fan_in or fan_out by mode)
    kaiming_normal_:   N(0, s^2), s = gain / sqrt(fan)
    xavier_uniform_:   U(-b, b),  b = gain sqrt(6 / (fan_in + fan_out))
    xavier_normal_:    N(0, s^2), s = gain sqrt(2 / (fan_in + fan_out))

Random numbers come from a numpy Generator on the host (`rng`; None draws a fresh one) and are
copied to the tensor's backend with `t.xp.asarray`, so a seed gives the same weights on every
backend.
"""
import math

import numpy as np


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity (torch.nn.init.calculate_gain)."""
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                        "conv_transpose2d", "conv_transpose3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"negative slope {slope!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def fan_in_and_fan_out(t):
    """(fan_in, fan_out) of a weight of shape (o, c, k...): (c r, o r) with r = prod(k...)."""
    if t.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor of 2+ dimensions, got shape {t.shape}")
    receptive_field = math.prod(t.shape[2:])
    return t.shape[1] * receptive_field, t.shape[0] * receptive_field


def _fan(t, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode {mode!r} must be 'fan_in' or 'fan_out'")
    fan_in, fan_out = fan_in_and_fan_out(t)
    return fan_in if mode == "fan_in" else fan_out


def _fill(t, values):
    """Write host values into t.data in place (cast to t's dtype, on t's backend)."""
    t.data[...] = t.xp.asarray(values)
    return t


def uniform_(t, a=0.0, b=1.0, rng=None):
    """t ~ U(a, b)"""
    return _fill(t, np.random.default_rng(rng).uniform(a, b, t.shape))   # (t.shape)


def normal_(t, mean=0.0, std=1.0, rng=None):
    """t ~ N(mean, std^2)"""
    return _fill(t, np.random.default_rng(rng).normal(mean, std, t.shape))   # (t.shape)


def constant_(t, val):
    """t = val everywhere"""
    t.data[...] = val
    return t


def zeros_(t):
    return constant_(t, 0.0)


def ones_(t):
    return constant_(t, 1.0)


def kaiming_uniform_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """t ~ U(-b, b) with b = gain(nonlinearity, a) sqrt(3 / fan)"""
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(_fan(t, mode))
    return uniform_(t, -bound, bound, rng)


def kaiming_normal_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """t ~ N(0, s^2) with s = gain(nonlinearity, a) / sqrt(fan)"""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(t, mode))
    return normal_(t, 0.0, std, rng)


def xavier_uniform_(t, gain=1.0, rng=None):
    """t ~ U(-b, b) with b = gain sqrt(6 / (fan_in + fan_out))"""
    fan_in, fan_out = fan_in_and_fan_out(t)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound, rng)


def xavier_normal_(t, gain=1.0, rng=None):
    """t ~ N(0, s^2) with s = gain sqrt(2 / (fan_in + fan_out))"""
    fan_in, fan_out = fan_in_and_fan_out(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng)
