"""The cupy functions the project uses, with CuPy's parameter names, computed by numpy.

Every function takes device arrays (and scalars), refuses host numpy arrays where CuPy computes on
them (TypeError), and returns device arrays; `asarray`/`array` copy host data to the device and
`asnumpy` copies it back. `tests/test_fake_cupy.py` checks names and signatures against CuPy.
"""
import builtins

import numpy

from gpu.emulator.fakecupy._core import call, from_numpy, ndarray, poisoned, unwrap, wrap


def _host_to_device(obj, dtype, order, ndmin=0):
    """A fresh device array holding a copy of host data (numpy arrays, lists, scalars; lists may
    hold device arrays too, as CuPy allows)."""
    if isinstance(obj, (list, tuple)):
        obj = [o._array if isinstance(o, ndarray) else o for o in obj]
    return from_numpy(numpy.array(obj, dtype=dtype, order=order, copy=True, ndmin=ndmin))


# ---- moving data --------------------------------------------------------------------------------
def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    """Device arrays pass through (cast when dtype differs); host data is copied to the device."""
    if isinstance(a, ndarray):
        same = (dtype is None or numpy.dtype(dtype) == a.dtype) and order in (None, "K", "A")
        if same and not copy:
            return a
        return call(numpy.asarray, a, dtype=dtype, order=order, copy=copy)
    return _host_to_device(a, dtype, order or "K")


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        return call(numpy.array, obj, dtype=dtype, copy=copy, order=order, ndmin=ndmin)
    return _host_to_device(obj, dtype, order, ndmin)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """A host numpy copy of a device array (host arrays are returned as numpy arrays)."""
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return numpy.asarray(a, order=order)


def ascontiguousarray(a, dtype=None): return call(numpy.ascontiguousarray, a, dtype=dtype)
def copy(a, order="K"): return call(numpy.copy, a, order=order)


def copyto(dst, src, casting="same_kind", where=None):
    where = True if where is None else unwrap(where)
    numpy.copyto(unwrap(dst), unwrap(src), casting=casting, where=where)


# ---- creation (empty memory is filled with 0xFF bytes: NaN for floats) -------------------------
def empty(shape, dtype=float, order="C"):
    return from_numpy(poisoned(numpy.empty(shape, dtype, order)))


def zeros(shape, dtype=float, order="C"): return from_numpy(numpy.zeros(shape, dtype, order))
def ones(shape, dtype=float, order="C"): return from_numpy(numpy.ones(shape, dtype, order))


def full(shape, fill_value, dtype=None, order="C"):
    return call(numpy.full, shape, fill_value, dtype, order)


def empty_like(prototype, dtype=None, order="K", subok=None, shape=None):
    return from_numpy(poisoned(numpy.empty_like(unwrap(prototype), dtype, order, shape=shape)))


def zeros_like(a, dtype=None, order="K", subok=None, shape=None):
    return call(numpy.zeros_like, a, dtype, order, shape=shape)


def ones_like(a, dtype=None, order="K", subok=None, shape=None):
    return call(numpy.ones_like, a, dtype, order, shape=shape)


def full_like(a, fill_value, dtype=None, order="K", subok=None, shape=None):
    return call(numpy.full_like, a, fill_value, dtype, order, shape=shape)


def arange(start, stop=None, step=1, dtype=None):
    if stop is None:
        start, stop = 0, start
    return wrap(numpy.arange(start, stop, step, dtype))


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    return call(numpy.linspace, start, stop, num, endpoint, retstep, dtype, axis)


def eye(N, M=None, k=0, dtype=float, order="C"):  # noqa: N803
    return call(numpy.eye, N, M, k, dtype, order)


def identity(n, dtype=float): return call(numpy.identity, n, dtype)


# ---- shape and indexing -------------------------------------------------------------------------
def reshape(a, newshape, order="C", *, copy=None):
    return call(numpy.reshape, a, newshape, order=order, copy=copy)


def transpose(a, axes=None): return call(numpy.transpose, a, axes)
def swapaxes(a, axis1, axis2): return call(numpy.swapaxes, a, axis1, axis2)
def moveaxis(a, source, destination): return call(numpy.moveaxis, a, source, destination)
def expand_dims(a, axis): return call(numpy.expand_dims, a, axis)
def squeeze(a, axis=None): return call(numpy.squeeze, a, axis)
def ravel(a, order="C"): return call(numpy.ravel, a, order)
def broadcast_to(array, shape): return call(numpy.broadcast_to, array, shape)
def broadcast_arrays(*args): return call(numpy.broadcast_arrays, *args)


def concatenate(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
    return call(numpy.concatenate, tup, axis, out=out, dtype=dtype, casting=casting)


def stack(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
    return call(numpy.stack, tup, axis, out=out, dtype=dtype, casting=casting)


def vstack(tup, *, dtype=None, casting="same_kind"):
    return call(numpy.vstack, tup, dtype=dtype, casting=casting)


def hstack(tup, *, dtype=None, casting="same_kind"):
    return call(numpy.hstack, tup, dtype=dtype, casting=casting)


def split(ary, indices_or_sections, axis=0):
    return call(numpy.split, ary, indices_or_sections, axis)


def array_split(ary, indices_or_sections, axis=0):
    return call(numpy.array_split, ary, indices_or_sections, axis)


def pad(array, pad_width, mode="constant", **kwargs):
    return call(numpy.pad, array, pad_width, mode, **kwargs)


def flip(a, axis=None): return call(numpy.flip, a, axis)
def roll(a, shift, axis=None): return call(numpy.roll, a, shift, axis)
def tile(A, reps): return call(numpy.tile, A, reps)  # noqa: N803
def repeat(a, repeats, axis=None): return call(numpy.repeat, a, repeats, axis)
def atleast_1d(*arys): return call(numpy.atleast_1d, *arys)
def atleast_2d(*arys): return call(numpy.atleast_2d, *arys)
def take(a, indices, axis=None, out=None): return call(numpy.take, a, indices, axis, out=out)
def take_along_axis(a, indices, axis): return call(numpy.take_along_axis, a, indices, axis)


def put_along_axis(arr, indices, values, axis):
    """In place: arr[..., indices[...], ...] = values along `axis` (as numpy.put_along_axis)."""
    if not isinstance(arr, ndarray):
        raise TypeError(f"put_along_axis: arr must be a cupy array, got {type(arr)}")
    numpy.put_along_axis(arr._array, unwrap(indices), unwrap(values), axis)


def where(condition, x=None, y=None):
    if x is None and y is None:
        return call(numpy.where, condition)
    return call(numpy.where, condition, x, y)


def nonzero(a): return call(numpy.nonzero, a)
def flatnonzero(a): return call(numpy.flatnonzero, a)
def diag(v, k=0): return call(numpy.diag, v, k)
def triu(m, k=0): return call(numpy.triu, m, k)
def tril(m, k=0): return call(numpy.tril, m, k)
def unravel_index(indices, dims, order="C"): return call(numpy.unravel_index, indices, dims, order)


# ---- reductions ---------------------------------------------------------------------------------
def sum(a, axis=None, dtype=None, out=None, keepdims=False):  # noqa: A001
    return call(numpy.sum, a, axis, dtype, out=out, keepdims=keepdims)


def mean(a, axis=None, dtype=None, out=None, keepdims=False):
    return call(numpy.mean, a, axis, dtype, out=out, keepdims=keepdims)


def prod(a, axis=None, dtype=None, out=None, keepdims=False):
    return call(numpy.prod, a, axis, dtype, out=out, keepdims=keepdims)


def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    return call(numpy.var, a, axis, dtype, out=out, ddof=ddof, keepdims=keepdims)


def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    return call(numpy.std, a, axis, dtype, out=out, ddof=ddof, keepdims=keepdims)


def max(a, axis=None, out=None, keepdims=False):  # noqa: A001
    return call(numpy.max, a, axis, out=out, keepdims=keepdims)


def min(a, axis=None, out=None, keepdims=False):  # noqa: A001
    return call(numpy.min, a, axis, out=out, keepdims=keepdims)


def amax(a, axis=None, out=None, keepdims=False):
    return call(numpy.max, a, axis, out=out, keepdims=keepdims)


def amin(a, axis=None, out=None, keepdims=False):
    return call(numpy.min, a, axis, out=out, keepdims=keepdims)


def nanmax(a, axis=None, out=None, keepdims=False):
    return call(numpy.nanmax, a, axis, out=out, keepdims=keepdims)


def nanmin(a, axis=None, out=None, keepdims=False):
    return call(numpy.nanmin, a, axis, out=out, keepdims=keepdims)


def ptp(a, axis=None, out=None, keepdims=False):
    return call(numpy.ptp, a, axis, out=out, keepdims=keepdims)


def any(a, axis=None, out=None, keepdims=False):  # noqa: A001
    return call(numpy.any, a, axis, out=out, keepdims=keepdims)


def all(a, axis=None, out=None, keepdims=False):  # noqa: A001
    return call(numpy.all, a, axis, out=out, keepdims=keepdims)


def argmax(a, axis=None, dtype=None, out=None, keepdims=False):
    return a.argmax(axis, out, dtype, keepdims)


def argmin(a, axis=None, dtype=None, out=None, keepdims=False):
    return a.argmin(axis, out, dtype, keepdims)


def cumsum(a, axis=None, dtype=None, out=None):
    return call(numpy.cumsum, a, axis, dtype, out=out)


def cumprod(a, axis=None, dtype=None, out=None):
    return call(numpy.cumprod, a, axis, dtype, out=out)


def count_nonzero(a, axis=None): return call(numpy.count_nonzero, a, axis)


def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    return call(numpy.median, a, axis, out=out, overwrite_input=overwrite_input,
                keepdims=keepdims)


def quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False, *,
             interpolation=None):
    return call(numpy.quantile, a, q, axis, out=out, overwrite_input=overwrite_input,
                method=interpolation or method, keepdims=keepdims)


def bincount(x, weights=None, minlength=None):
    return call(numpy.bincount, x, weights, minlength or 0)


def diff(a, n=1, axis=-1, prepend=None, append=None):
    ends = {k: v for k, v in (("prepend", prepend), ("append", append)) if v is not None}
    return call(numpy.diff, a, n, axis, **ends)


# ---- products, comparisons, sorting --------------------------------------------------------------
def clip(a, a_min, a_max, out=None): return call(numpy.clip, a, a_min, a_max, out=out)
def dot(a, b, out=None): return call(numpy.dot, a, b, out=out)
def tensordot(a, b, axes=2): return call(numpy.tensordot, a, b, axes)
def einsum(*operands, **kwargs): return call(numpy.einsum, *operands, **kwargs)
def outer(a, b, out=None): return call(numpy.outer, a, b, out=out)


def matmul(*args, axes=None, axis=None, keepdims=False, casting="same_kind", dtype=None,
           signature=None, order="K", out=None):
    options = {k: v for k, v in (("axes", axes), ("axis", axis), ("signature", signature),
                                 ("keepdims", keepdims or None)) if v is not None}
    return call(numpy.matmul, *args, casting=casting, dtype=dtype, order=order, out=out, **options)


def round(a, decimals=0, out=None): return call(numpy.round, a, decimals, out=out)  # noqa: A001
def around(a, decimals=0, out=None): return call(numpy.round, a, decimals, out=out)


def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    return call(numpy.nan_to_num, x, copy, nan, posinf, neginf)


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    return wrap(numpy.bool_(numpy.allclose(unwrap(a), unwrap(b), rtol, atol, equal_nan)))


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    return call(numpy.isclose, a, b, rtol, atol, equal_nan)


def array_equal(a1, a2, equal_nan=False):
    return wrap(numpy.bool_(numpy.array_equal(unwrap(a1), unwrap(a2), equal_nan)))


def argsort(a, axis=-1, kind=None): return call(numpy.argsort, a, axis, kind)
def sort(a, axis=-1, kind=None): return call(numpy.sort, a, axis, kind)
def partition(a, kth, axis=-1): return call(numpy.partition, a, kth, axis)
def argpartition(a, kth, axis=-1): return call(numpy.argpartition, a, kth, axis)


def searchsorted(a, v, side="left", sorter=None):
    return call(numpy.searchsorted, a, v, side, sorter)


def unique(ar, return_index=False, return_inverse=False, return_counts=False, axis=None, *,
           equal_nan=True):
    return call(numpy.unique, ar, return_index, return_inverse, return_counts, axis,
                equal_nan=equal_nan)


# ---- type and module queries -------------------------------------------------------------------
def get_array_module(*args):
    """This module when any argument is a device array, else numpy (as cupy.get_array_module)."""
    from gpu.emulator import fakecupy
    return fakecupy if builtins.any(isinstance(a, ndarray) for a in args) else numpy


def is_available():
    """False: there is no CUDA device, only the emulator."""
    return False


def result_type(*arrays_and_dtypes):
    return numpy.result_type(*(getattr(a, "dtype", a) for a in arrays_and_dtypes))


def can_cast(from_, to, casting="safe"):
    return numpy.can_cast(from_.dtype if isinstance(from_, ndarray) else from_, to, casting)


def isscalar(element): return numpy.isscalar(element)
def shape(a): return a.shape if isinstance(a, ndarray) else numpy.shape(a)
def ndim(a): return a.ndim if isinstance(a, ndarray) else numpy.ndim(a)


__all__ = [name for name, value in list(globals().items())
           if getattr(value, "__module__", None) == __name__ and not name.startswith("_")]
