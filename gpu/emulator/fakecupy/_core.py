"""ndarray of the emulated device, and the conversions between it and numpy.

A device array wraps one numpy array (`_array`, the "device memory"). Operators and methods run
numpy on it and wrap the result: reductions and scalar indexing give 0-d arrays, as CuPy does.
Like CuPy, and unlike a numpy subclass, it refuses to leave the device implicitly:
    numpy.asarray(a), numpy.exp(a), numpy.sum(a)  -> TypeError   (use a.get() or cupy.asnumpy(a))
    a + numpy_array, cupy.maximum(a, numpy_array) -> TypeError   (use cupy.asarray(numpy_array))
Python and numpy scalars mix freely; numpy arrays and lists are accepted as indices.
"""
import numpy

_HOST_ARRAY = ("Unsupported type {}: a numpy (host) array cannot be mixed with cupy (device) "
               "arrays; copy it to the device with cupy.asarray() first")


def from_numpy(a):
    """Wrap a numpy array (not copied: the result shares its memory)."""
    out = ndarray.__new__(ndarray)
    out._array = a
    return out


def wrap(value):
    """A numpy result as a device result: arrays and numpy scalars become ndarrays."""
    if isinstance(value, numpy.ndarray):
        return from_numpy(value)
    if isinstance(value, numpy.generic):
        return from_numpy(numpy.asarray(value))
    if isinstance(value, (tuple, list)):
        return type(value)(wrap(v) for v in value)
    return value


def unwrap(value):
    """A device operand as numpy: ndarrays give their array; numpy arrays raise TypeError."""
    if isinstance(value, ndarray):
        return value._array
    if isinstance(value, numpy.ndarray):
        raise TypeError(_HOST_ARRAY.format(type(value)))
    if isinstance(value, (tuple, list)):
        return type(value)(unwrap(v) for v in value)
    return value


def call(function, *args, **kwargs):
    """function(*args, **kwargs) on the numpy arrays behind the arguments, result wrapped.

    An `out=` ndarray is written in place and returned itself (as CuPy does). The operands of a
    matrix product are rounded to TF32 first when set_tf32_products(True) is in force."""
    out = kwargs.get("out")
    args = unwrap(args)
    if function in _PRODUCTS:
        args = tuple(_product_operand(a) for a in args)
    result = function(*args, **{k: unwrap(v) for k, v in kwargs.items()})
    return out if out is not None else wrap(result)


_PRODUCTS = (numpy.matmul, numpy.dot, numpy.tensordot)
_TF32 = {"products": False}


def set_tf32_products(enabled):
    """Round the float32 operands of matrix products to TF32 (what cuBLAS does with the TF32
    compute type; gpu.set_tf32 calls this on the emulator)."""
    _TF32["products"] = enabled


def _product_operand(a):
    """a, or a float32 array rounded to TF32 (10 mantissa bits, to nearest, ties to even) when
    TF32 products are on."""
    if not (_TF32["products"] and isinstance(a, numpy.ndarray) and a.dtype == numpy.float32):
        return a
    bits = numpy.ascontiguousarray(a).view(numpy.uint32)
    rounded = (bits + numpy.uint32(0x0FFF) + ((bits >> 13) & numpy.uint32(1))) & numpy.uint32(
        0xFFFFE000)
    return rounded.view(numpy.float32).reshape(a.shape)


_SCALARS = (bool, int, float, complex, numpy.generic)


def _operand(value):
    """An operand of an operator: a device array or a scalar (NotImplemented for other objects,
    so that their reflected operator runs); host arrays and lists raise TypeError."""
    if isinstance(value, ndarray):
        return value._array
    if isinstance(value, (numpy.ndarray, list, tuple)):
        raise TypeError(_HOST_ARRAY.format(type(value)))
    return value if value is None or isinstance(value, _SCALARS) else NotImplemented


def _index(slices):
    """An index with device arrays replaced by their numpy arrays (host index arrays are fine)."""
    if isinstance(slices, tuple):
        return tuple(_index(s) for s in slices)
    return slices._array if isinstance(slices, ndarray) else slices


def _binary(name):
    numpy_method = getattr(numpy.ndarray, name)

    def method(self, other):
        other = _operand(other)
        if other is NotImplemented:
            return other
        if name in ("__matmul__", "__rmatmul__"):
            return wrap(numpy_method(_product_operand(self._array), _product_operand(other)))
        return wrap(numpy_method(self._array, other))
    method.__name__ = name
    return method


def _inplace(name):
    numpy_method = getattr(numpy.ndarray, name)

    def method(self, other):
        other = _operand(other)
        if other is NotImplemented:
            return other
        numpy_method(self._array, other)
        return self
    method.__name__ = name
    return method


def _unary(name):
    numpy_method = getattr(numpy.ndarray, name)

    def method(self):
        return wrap(numpy_method(self._array))
    method.__name__ = name
    return method


class _Flags:
    """The flags CuPy reports: c_contiguous, f_contiguous, owndata."""

    def __init__(self, a):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.flags.owndata

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]

    def __repr__(self):
        return (f"  C_CONTIGUOUS : {self.c_contiguous}\n  F_CONTIGUOUS : {self.f_contiguous}\n"
                f"  OWNDATA : {self.owndata}")


class _MemoryPointer:
    """`a.data`: the address of the first element (`ptr`), as cupy.cuda.MemoryPointer."""

    def __init__(self, a):
        self.ptr = a.ctypes.data


class ndarray:
    """cupy.ndarray on the emulated device (see the module docstring)."""

    __array_ufunc__ = None     # numpy ufuncs refuse it: no silent computation on the host

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the emulated cupy.ndarray has no memptr/strides constructor")
        self._array = poisoned(numpy.empty(shape, dtype, order=order))

    # ---- leaving the device: explicit only ---------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_function__(self, func, types, args, kwargs):
        return NotImplemented   # numpy functions raise TypeError on device arrays

    def get(self, stream=None, order="C", out=None, blocking=True):
        """A numpy copy on the host (into `out` when given)."""
        if out is None:
            return numpy.array(self._array, order=order, copy=True)
        out[...] = self._array
        return out

    def set(self, arr, stream=None):
        """Copy a host numpy array of the same shape into this array."""
        if arr.shape != self.shape:
            raise ValueError(f"set: shape mismatch: {arr.shape} vs {self.shape}")
        self._array[...] = arr

    def item(self):
        return self._array.item()

    def tolist(self):
        return self._array.tolist()

    def tobytes(self, order="C"):
        return self._array.tobytes(order)

    def __float__(self): return float(self._array)
    def __int__(self): return int(self._array)
    def __complex__(self): return complex(self._array)
    def __bool__(self): return bool(self._array)
    def __len__(self): return len(self._array)
    def __iter__(self): return (wrap(row) for row in self._array)
    def __repr__(self): return repr(self._array)
    def __str__(self): return str(self._array)

    def __format__(self, spec):
        return format(self._array[()] if self.ndim == 0 else self._array, spec)

    # ---- attributes ----------------------------------------------------------------------------
    shape = property(lambda self: self._array.shape)
    dtype = property(lambda self: self._array.dtype)
    ndim = property(lambda self: self._array.ndim)
    size = property(lambda self: self._array.size)
    itemsize = property(lambda self: self._array.itemsize)
    nbytes = property(lambda self: self._array.nbytes)
    strides = property(lambda self: self._array.strides)
    T = property(lambda self: from_numpy(self._array.T))
    mT = property(lambda self: from_numpy(self._array.mT))
    real = property(lambda self: from_numpy(self._array.real))
    imag = property(lambda self: from_numpy(self._array.imag))
    flags = property(lambda self: _Flags(self._array))
    data = property(lambda self: _MemoryPointer(self._array))
    base = property(lambda self: None if self._array.base is None else wrap(self._array.base))

    # ---- indexing --------------------------------------------------------------------------------
    def __getitem__(self, slices):
        index = _index(slices)
        result = self._array[index]
        if isinstance(result, numpy.generic):   # a 0-d view, as CuPy gives, not a scalar copy
            result = self._array[(index if isinstance(index, tuple) else (index,)) + (Ellipsis,)]
        return wrap(result)

    def __setitem__(self, slices, value):
        operand = _operand(value)
        if operand is NotImplemented:
            raise TypeError(f"cannot assign {type(value).__name__} into a cupy array")
        self._array[_index(slices)] = operand

    # ---- methods (CuPy's names and parameters) ------------------------------------------------
    def all(self, axis=None, out=None, keepdims=False):
        return call(numpy.all, self, axis=axis, out=out, keepdims=keepdims)

    def any(self, axis=None, out=None, keepdims=False):
        return call(numpy.any, self, axis=axis, out=out, keepdims=keepdims)

    def argmax(self, axis=None, out=None, dtype=None, keepdims=False):
        return _arg_reduction(numpy.argmax, self, axis, out, dtype, keepdims)

    def argmin(self, axis=None, out=None, dtype=None, keepdims=False):
        return _arg_reduction(numpy.argmin, self, axis, out, dtype, keepdims)

    def argsort(self, axis=-1, kind=None):
        return call(numpy.argsort, self, axis=axis, kind=kind)

    def argpartition(self, kth, axis=-1):
        return call(numpy.argpartition, self, kth, axis=axis)

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        return wrap(self._array.astype(dtype, order=order, casting=casting or "unsafe", copy=copy))

    def clip(self, min=None, max=None, out=None):  # noqa: A002 (CuPy's parameter names)
        return call(numpy.clip, self, min, max, out=out)

    def copy(self, order="C"):
        return wrap(self._array.copy(order))

    def cumsum(self, axis=None, dtype=None, out=None):
        return call(numpy.cumsum, self, axis=axis, dtype=dtype, out=out)

    def cumprod(self, axis=None, dtype=None, out=None):
        return call(numpy.cumprod, self, axis=axis, dtype=dtype, out=out)

    def diagonal(self, offset=0, axis1=0, axis2=1):
        return wrap(self._array.diagonal(offset, axis1, axis2))

    def dot(self, b, out=None):
        return call(numpy.dot, self, b, out=out)

    def fill(self, value):
        self._array.fill(_operand(value))

    def flatten(self, order="C"):
        return wrap(self._array.flatten(order))

    def max(self, axis=None, out=None, keepdims=False):
        return call(numpy.max, self, axis=axis, out=out, keepdims=keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return call(numpy.mean, self, axis=axis, dtype=dtype, out=out, keepdims=keepdims)

    def min(self, axis=None, out=None, keepdims=False):
        return call(numpy.min, self, axis=axis, out=out, keepdims=keepdims)

    def nonzero(self):
        return wrap(self._array.nonzero())

    def partition(self, kth, axis=-1):
        self._array.partition(kth, axis)

    def prod(self, axis=None, dtype=None, out=None, keepdims=None):
        return call(numpy.prod, self, axis=axis, dtype=dtype, out=out, keepdims=bool(keepdims))

    def ptp(self, axis=None, out=None, keepdims=False):
        return call(numpy.ptp, self, axis=axis, out=out, keepdims=keepdims)

    def put(self, indices, values, mode="wrap"):
        self._array.put(_index(indices), _operand(values), mode)

    def ravel(self, order="C"):
        return wrap(self._array.ravel(order))

    def repeat(self, repeats, axis=None):
        return call(numpy.repeat, self, repeats, axis=axis)

    def reshape(self, *shape, order="C", copy=None):
        shape = shape[0] if len(shape) == 1 else shape
        return wrap(self._array.reshape(shape, order=order, copy=copy))

    def round(self, decimals=0, out=None):
        return call(numpy.round, self, decimals, out=out)

    def searchsorted(self, v, side="left", sorter=None):
        return call(numpy.searchsorted, self, v, side=side, sorter=sorter)

    def sort(self, axis=-1, kind=None):
        self._array.sort(axis, kind)

    def squeeze(self, axis=None):
        return wrap(self._array.squeeze(axis))

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return call(numpy.std, self, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return call(numpy.sum, self, axis=axis, dtype=dtype, out=out, keepdims=keepdims)

    def swapaxes(self, axis1, axis2):
        return wrap(self._array.swapaxes(axis1, axis2))

    def take(self, indices, axis=None, out=None):
        return call(numpy.take, self, _index(indices), axis=axis, out=out)

    def trace(self, offset=0, axis1=0, axis2=1, dtype=None, out=None):
        return call(numpy.trace, self, offset, axis1, axis2, dtype=dtype, out=out)

    def transpose(self, *axes):
        return wrap(self._array.transpose(*axes))

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return call(numpy.var, self, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims)

    def view(self, dtype=None, type=None):  # noqa: A002 (CuPy's parameter names)
        if type is not None:
            raise NotImplementedError("view(type=...) is not supported on the emulated device")
        return wrap(self._array.view() if dtype is None else self._array.view(dtype))

    def conj(self):
        return wrap(self._array.conj())

    # ---- operators ---------------------------------------------------------------------------
    __add__, __radd__, __iadd__ = _binary("__add__"), _binary("__radd__"), _inplace("__iadd__")
    __sub__, __rsub__, __isub__ = _binary("__sub__"), _binary("__rsub__"), _inplace("__isub__")
    __mul__, __rmul__, __imul__ = _binary("__mul__"), _binary("__rmul__"), _inplace("__imul__")
    __truediv__, __rtruediv__ = _binary("__truediv__"), _binary("__rtruediv__")
    __itruediv__ = _inplace("__itruediv__")
    __floordiv__, __rfloordiv__ = _binary("__floordiv__"), _binary("__rfloordiv__")
    __ifloordiv__ = _inplace("__ifloordiv__")
    __mod__, __rmod__, __imod__ = _binary("__mod__"), _binary("__rmod__"), _inplace("__imod__")
    __pow__, __rpow__, __ipow__ = _binary("__pow__"), _binary("__rpow__"), _inplace("__ipow__")
    __matmul__, __rmatmul__ = _binary("__matmul__"), _binary("__rmatmul__")
    __and__, __rand__, __iand__ = _binary("__and__"), _binary("__rand__"), _inplace("__iand__")
    __or__, __ror__, __ior__ = _binary("__or__"), _binary("__ror__"), _inplace("__ior__")
    __xor__, __rxor__, __ixor__ = _binary("__xor__"), _binary("__rxor__"), _inplace("__ixor__")
    __lshift__, __rlshift__ = _binary("__lshift__"), _binary("__rlshift__")
    __rshift__, __rrshift__ = _binary("__rshift__"), _binary("__rrshift__")
    __divmod__, __rdivmod__ = _binary("__divmod__"), _binary("__rdivmod__")
    __eq__, __ne__ = _binary("__eq__"), _binary("__ne__")
    __lt__, __le__ = _binary("__lt__"), _binary("__le__")
    __gt__, __ge__ = _binary("__gt__"), _binary("__ge__")
    __neg__, __pos__, __abs__, __invert__ = (_unary("__neg__"), _unary("__pos__"),
                                             _unary("__abs__"), _unary("__invert__"))
    __hash__ = None

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()


def _arg_reduction(function, a, axis, out, dtype, keepdims):
    result = call(function, a, axis, out=out, keepdims=keepdims)
    return result if dtype is None or out is not None else result.astype(dtype)


def poisoned(a):
    """Fill fresh "device memory" with 0xFF bytes (NaN for floats, -1 for signed integers) so
    that reading an element nobody wrote shows up; booleans become True."""
    if a.dtype == numpy.bool_:
        a.fill(True)
    elif a.size:
        a.reshape(-1, order="A").view(numpy.uint8).fill(0xFF)   # a view: a is fresh, contiguous
    return a
