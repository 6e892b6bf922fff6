"""cupy's ufuncs: numpy's ufunc of the same name applied to device arrays and scalars."""
import numpy

from gpu.emulator.fakecupy._core import ndarray, unwrap, wrap
from gpu.emulator.fakecupy._core import _index, _operand

NAMES = """add subtract multiply divide true_divide floor_divide negative positive power remainder
mod fmod absolute fabs sign exp exp2 expm1 log log2 log10 log1p logaddexp sqrt square cbrt
reciprocal sin cos tan arcsin arccos arctan arctan2 sinh cosh tanh hypot maximum minimum fmax fmin
floor ceil trunc rint isfinite isnan isinf signbit copysign heaviside logical_and logical_or
logical_xor logical_not equal not_equal less less_equal greater greater_equal bitwise_and
bitwise_or bitwise_xor invert left_shift right_shift""".split()


def _device_operand(value):
    operand = _operand(value)
    if operand is NotImplemented:
        raise TypeError(f"Unsupported type {type(value)}")
    return operand


class ufunc:
    """A cupy ufunc (elementwise function with broadcasting, `out=`, `.at`, `.reduce`, `.outer`)."""

    def __init__(self, name):
        self._ufunc = getattr(numpy, name)
        self.name = self.__name__ = name
        self.nin, self.nout, self.nargs = self._ufunc.nin, self._ufunc.nout, self._ufunc.nargs

    def __repr__(self):
        return f"<ufunc '{self.name}'>"

    def __call__(self, *args, out=None, dtype=None, casting="same_kind"):
        operands = map(_device_operand, args)
        result = self._ufunc(*operands, out=unwrap(out), dtype=dtype, casting=casting)
        return out if out is not None else wrap(result)

    def at(self, a, indices, b=None):
        """In place: a[indices] op= b, repeated indices applied once each (unbuffered)."""
        if not isinstance(a, ndarray):
            raise TypeError(f"{self.name}.at: a must be a cupy array, got {type(a)}")
        args = () if b is None else (_device_operand(b),)
        self._ufunc.at(a._array, _index(indices), *args)

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        result = self._ufunc.reduce(unwrap(array), axis, dtype, unwrap(out), keepdims)
        return out if out is not None else wrap(result)

    def accumulate(self, array, axis=0, dtype=None, out=None):
        result = self._ufunc.accumulate(unwrap(array), axis, dtype, unwrap(out))
        return out if out is not None else wrap(result)

    def outer(self, A, B, **kwargs):  # noqa: N803
        return wrap(self._ufunc.outer(_device_operand(A), _device_operand(B), **kwargs))


UFUNCS = {name: ufunc(name) for name in NAMES}
abs = UFUNCS["absolute"]   # noqa: A001 (cupy.abs is cupy.absolute)
