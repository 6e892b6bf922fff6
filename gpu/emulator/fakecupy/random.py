"""cupy.random on the emulated device: numpy's generators, results on the device.

Deterministic: the global RandomState starts from seed 0 (real CuPy seeds from the clock). The
streams differ from CuPy's, so compare distributions, not values, across backends. Module-level
names are underscored unless CuPy's random module has them.
"""
import numpy as _numpy

from gpu.emulator.fakecupy._core import from_numpy as _from_numpy
from gpu.emulator.fakecupy._core import ndarray as _ndarray
from gpu.emulator.fakecupy._core import unwrap as _unwrap

_FLOAT = float


def _device(values, dtype=None):
    """Host draws as a device array (cast to dtype when given)."""
    values = _numpy.asarray(values)
    return _from_numpy(values if dtype is None else values.astype(dtype))


class RandomState:
    """cupy.random.RandomState, drawing from numpy.random.RandomState(seed)."""

    def __init__(self, seed=None, method=None):
        self._host = _numpy.random.RandomState(seed)

    def seed(self, seed=None):
        self._host.seed(seed)

    def rand(self, *size, **kwarg):
        return _device(self._host.random_sample(size), _dtype(kwarg))

    def randn(self, *size, **kwarg):
        return _device(self._host.standard_normal(size), _dtype(kwarg))

    def random_sample(self, size=None, dtype=_FLOAT):
        return _device(self._host.random_sample(size), dtype)

    def standard_normal(self, size=None, dtype=_FLOAT):
        return _device(self._host.standard_normal(size), dtype)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=_FLOAT):
        return _device(self._host.uniform(_unwrap(low), _unwrap(high), size), dtype)

    def normal(self, loc=0.0, scale=1.0, size=None, dtype=_FLOAT):
        return _device(self._host.normal(_unwrap(loc), _unwrap(scale), size), dtype)

    def randint(self, low, high=None, size=None, dtype="l"):
        return _device(self._host.randint(low, high, size, dtype))

    def permutation(self, a):
        return _device(self._host.permutation(_unwrap(a)))

    def shuffle(self, a):
        if not isinstance(a, _ndarray):
            raise TypeError(f"shuffle: a must be a cupy array, got {type(a)}")
        self._host.shuffle(a._array)

    def choice(self, a, size=None, replace=True, p=None):
        return _device(self._host.choice(_unwrap(a), size, replace, _unwrap(p)))


class _Generator:
    """What cupy.random.default_rng returns, drawing from numpy.random.default_rng(seed)."""

    def __init__(self, bit_generator):
        self._host = _numpy.random.default_rng(bit_generator)

    def random(self, size=None, dtype=_numpy.float64, out=None):
        return _into(out, self._host.random(size, dtype))

    def standard_normal(self, size=None, dtype=_numpy.float64, out=None):
        return _into(out, self._host.standard_normal(size, dtype))

    def integers(self, low, high=None, size=None, dtype=_numpy.int64, endpoint=False):
        return _device(self._host.integers(low, high, size, dtype, endpoint))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=_numpy.float64):
        return _device(self._host.uniform(_unwrap(low), _unwrap(high), size), dtype)


def _dtype(kwarg):
    """The only keyword rand/randn take (CuPy's signature is (*size, **kwarg))."""
    unknown = sorted(set(kwarg) - {"dtype"})
    if unknown:
        raise TypeError(f"unexpected keyword arguments {unknown}")
    return kwarg.get("dtype", _FLOAT)


def _into(out, values):
    if out is None:
        return _device(values)
    out[...] = _device(values)
    return out


_global = RandomState(0)


def default_rng(seed=None): return _Generator(seed)
def get_random_state(): return _global
def seed(seed=None): _global.seed(seed)
def rand(*size, **kwarg): return _global.rand(*size, **kwarg)
def randn(*size, **kwarg): return _global.randn(*size, **kwarg)
def random(size=None, dtype=_FLOAT): return _global.random_sample(size, dtype)
def random_sample(size=None, dtype=_FLOAT): return _global.random_sample(size, dtype)
def standard_normal(size=None, dtype=_FLOAT): return _global.standard_normal(size, dtype)


def uniform(low=0.0, high=1.0, size=None, dtype=_FLOAT):
    return _global.uniform(low, high, size, dtype)


def normal(loc=0.0, scale=1.0, size=None, dtype=_FLOAT):
    return _global.normal(loc, scale, size, dtype)


def randint(low, high=None, size=None, dtype="l"): return _global.randint(low, high, size, dtype)
def permutation(a): return _global.permutation(a)
def shuffle(a): _global.shuffle(a)
def choice(a, size=None, replace=True, p=None): return _global.choice(a, size, replace, p)
