"""The NumPy-backed stand-in for cupy (gpu.emulator.fakecupy) and the gpu package on top of it.

It must expose only names real CuPy has, with CuPy's parameter names; refuse implicit conversion
to numpy and mixing with numpy arrays, as CuPy does; and compute what numpy computes.
"""
import inspect
import re
import types

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ref
from gpu.emulator import fakecupy as cp
from ref.nn.module import Module

KINDS = {inspect.Parameter.POSITIONAL_ONLY: "positional",
         inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
         inspect.Parameter.KEYWORD_ONLY: "keyword", inspect.Parameter.VAR_POSITIONAL: "*",
         inspect.Parameter.VAR_KEYWORD: "**"}


def parameters(f):
    """[(name, kind)] of a callable without `self`: from inspect, else from the signature line a
    Cython docstring starts with ("_ndarray_base.sum(self, axis=None, ...)"); None when unknown."""
    try:
        return [(p.name, KINDS[p.kind]) for p in inspect.signature(f).parameters.values()
                if p.name != "self"]
    except (TypeError, ValueError):
        pass
    first = (getattr(f, "__doc__", None) or "").strip().split("\n")[0].replace("\\*", "*")
    match = re.match(r"[\w.]+\((.*)\)", first)
    if match is None:
        return None
    found, kind = [], "positional"
    for part in re.split(r",\s*(?![^()]*\))", match.group(1)):
        name = part.split("=")[0].split()[-1] if part.strip() else ""
        if name in ("*", "/"):
            kind = "keyword" if name == "*" else kind
        elif name.startswith("**"):
            found.append((name[2:], "**"))
        elif name.startswith("*"):
            found.append((name[1:], "*"))
            kind = "keyword"
        elif name and name != "self":
            found.append((name, kind))
    return found


def public(namespace):
    return sorted(n for n in dir(namespace) if not n.startswith("_"))


def fake_and_real_namespaces(cupy):
    yield cp, cupy
    yield cp.random, cupy.random
    yield cp.random.RandomState, cupy.random.RandomState
    yield cp.random._Generator, cupy.random._generator_api.Generator   # what default_rng returns
    yield cp.cuda, cupy.cuda
    yield cp.cuda.runtime, cupy.cuda.runtime
    yield cp.cuda.Device, cupy.cuda.Device
    yield cp.ndarray, cupy.ndarray
    yield cp.ufunc, cupy.ufunc
    yield cp.RawModule, cupy.RawModule
    yield cp.RawKernel, cupy.RawKernel


# ---- names and signatures against the installed cupy -----------------------------------------
def test_every_name_exists_in_real_cupy_with_the_same_parameters():
    cupy = pytest.importorskip("cupy", reason="real cupy is not installed: pip install -e .[test]")
    checked = 0
    for fake, real in fake_and_real_namespaces(cupy):
        missing = [n for n in public(fake) if not hasattr(real, n)]
        assert not missing, f"{fake.__name__} exports names real {real.__name__} lacks: {missing}"
        for name in public(fake):
            ours, theirs = getattr(fake, name), getattr(real, name)
            assert isinstance(ours, types.ModuleType) == isinstance(theirs, types.ModuleType), name
            assert isinstance(ours, type) == isinstance(theirs, type), name
            if isinstance(ours, cp.ufunc):
                assert isinstance(theirs, cupy.ufunc), f"cupy.{name} is not a ufunc"
            elif callable(ours) and not isinstance(ours, type) and parameters(theirs) is not None:
                assert parameters(ours) == parameters(theirs), f"{fake.__name__}.{name}"
                checked += 1
    for cls in (cp.RawModule, cp.RawKernel):   # constructors, from the class docstring of CuPy's
        assert parameters(cls) == parameters(getattr(cupy, cls.__name__)), cls.__name__
    assert checked > 150


def test_docstring_signatures_are_read():
    assert parameters(cp.RawKernel.__call__) == [("grid", "positional"), ("block", "positional"),
                                                 ("args", "positional"), ("shared_mem", "keyword")]
    documented = types.SimpleNamespace(
        __doc__="Thing.f(self, int axis=-1, *shape, str order='C', tuple options=(), **kwargs)\n")
    assert parameters(documented) == [
        ("axis", "positional"), ("shape", "*"), ("order", "keyword"), ("options", "keyword"),
        ("kwargs", "**")]


# ---- staying on the device -------------------------------------------------------------------
@pytest.mark.parametrize("operation", [
    lambda a, h: np.asarray(a), lambda a, h: np.array(a), lambda a, h: np.exp(a),
    lambda a, h: np.sum(a), lambda a, h: np.concatenate([a, a]), lambda a, h: a + h,
    lambda a, h: h + a, lambda a, h: h * a, lambda a, h: cp.maximum(a, h),
    lambda a, h: cp.concatenate([a, h]), lambda a, h: cp.where(a > 0, a, h),
    lambda a, h: a.__setitem__(slice(None), h), lambda a, h: a.__iadd__(h),
    lambda a, h: a + [1, 2, 3],
], ids=["np.asarray", "np.array", "np.exp", "np.sum", "np.concatenate", "a+h", "h+a", "h*a",
        "cp.maximum", "cp.concatenate", "cp.where", "setitem", "iadd", "a+list"])
def test_implicit_conversion_and_host_arrays_raise(operation):
    with pytest.raises(TypeError):
        operation(cp.ones(3), np.ones(3))


def test_explicit_transfers_copy_and_fresh_memory_is_poisoned():
    host = np.arange(4.0)
    a = cp.asarray(host)
    host[0] = 9
    assert float(a[0]) == 0 and cp.asarray(a) is a
    copy = a.get()
    copy[1] = 9
    assert float(a[1]) == 1 and isinstance(cp.asnumpy(a), np.ndarray)
    assert np.isnan(cp.empty(3).get()).all() and (cp.empty(2, dtype=cp.int32).get() == -1).all()
    assert np.isnan(cp.empty_like(a).get()).all()


def test_views_share_memory_and_inplace_operators_write_through():
    a = cp.zeros((3, 4), dtype=cp.float32)
    flat = a.reshape(12)
    flat[5] = 2
    a += 1
    a[0, :2] *= cp.asarray(np.array([3, 4], np.float32))
    cp.add.at(flat, cp.asarray(np.array([0, 0, 11])), 1)
    expected = np.ones((3, 4), np.float32)
    expected.reshape(12)[5] = 3
    expected[0, :2] *= [3, 4]
    np.add.at(expected.reshape(12), [0, 0, 11], 1)
    np.testing.assert_array_equal(a.get(), expected)
    np.testing.assert_array_equal(flat.get(), expected.reshape(12))


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_operators_methods_and_functions_match_numpy(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape[-1:]).astype(dtype)
    da, db = cp.asarray(a), cp.asarray(b)
    first = a.argmax(axis=-1)[..., None]
    three = np.float32(3)
    cases = {
        "add": (da + db, a + b), "rsub": (2 - da, 2 - a), "mul": (da * three, a * three),
        "div": (da / (db + 10), a / (b + 10)), "pow": (da ** 2, a ** 2), "neg": (-da, -a),
        "abs": (abs(da), abs(a)), "lt": (da < db, a < b), "eq": (da == da, a == a),
        "sum": (da.sum(), a.sum()),
        "sum0": (da.sum(axis=0, keepdims=True), a.sum(axis=0, keepdims=True)),
        "mean": (da.mean(axis=-1), a.mean(axis=-1)), "max": (da.max(), a.max()),
        "min": (cp.min(da, axis=0), np.min(a, axis=0)),
        "argmax": (da.argmax(axis=-1), a.argmax(axis=-1)),
        "T": (da.T, a.T), "reshape": (da.reshape(-1, 1), a.reshape(-1, 1)),
        "transpose": (cp.transpose(da), np.transpose(a)),
        "astype": (da.astype(np.float64), a.astype(np.float64)),
        "ravel": (da.ravel(), a.ravel()), "slice": (da[..., ::2], a[..., ::2]),
        "int index": (da[0], a[0]), "array index": (da[cp.asarray(np.array([0, 0]))], a[[0, 0]]),
        "mask index": (da[da > 0], a[a > 0]), "exp": (cp.exp(da), np.exp(a)),
        "maximum": (cp.maximum(da, db), np.maximum(a, b)),
        "clip": (cp.clip(da, -0.5, 0.5), np.clip(a, -0.5, 0.5)),
        "where": (cp.where(da > 0, da, 0), np.where(a > 0, a, 0)),
        "sign": (cp.sign(da), np.sign(a)), "tanh": (cp.tanh(da), np.tanh(a)),
        "sqrt": (cp.sqrt(cp.abs(da)), np.sqrt(np.abs(a))),
        "isfinite": (cp.isfinite(da), np.isfinite(a)), "matmul": (da @ db[:, None], a @ b[:, None]),
        "tensordot": (cp.tensordot(da, db, axes=([-1], [0])), np.tensordot(a, b, axes=([-1], [0]))),
        "einsum": (cp.einsum("...k,k->...", da, db), np.einsum("...k,k->...", a, b)),
        "concatenate": (cp.concatenate([da, da], axis=0), np.concatenate([a, a], axis=0)),
        "stack": (cp.stack([da, da], axis=-1), np.stack([a, a], axis=-1)),
        "pad": (cp.pad(da, 1, constant_values=2), np.pad(a, 1, constant_values=2)),
        "broadcast_to": (cp.broadcast_to(db, (2,) + b.shape), np.broadcast_to(b, (2,) + b.shape)),
        "take_along_axis": (cp.take_along_axis(da, cp.asarray(first), -1),
                            np.take_along_axis(a, first, -1)),
        "argsort": (cp.argsort(da, axis=-1), np.argsort(a, axis=-1)),
        "any": (cp.any(da > 1), np.any(a > 1)),
    }
    for name, (got, want) in cases.items():
        assert isinstance(got, cp.ndarray), f"{name}: {type(got)} is not a device array"
        np.testing.assert_array_equal(got.get(), want, err_msg=name)
        assert got.dtype == np.asarray(want).dtype, name


def test_random_generators_are_deterministic():
    cp.random.seed(3)
    first = cp.random.rand(4).get()
    cp.random.seed(3)
    np.testing.assert_array_equal(cp.random.rand(4).get(), first)
    draws = [cp.random.default_rng(5).standard_normal(3, dtype=cp.float32) for _ in range(2)]
    assert draws[0].dtype == np.float32 and isinstance(draws[0], cp.ndarray)
    np.testing.assert_array_equal(draws[0].get(), draws[1].get())
    assert cp.get_array_module(draws[0]) is cp and cp.get_array_module(first) is np


def test_no_device_is_reported():
    assert cp.cuda.runtime.getDeviceCount() == 0 and not cp.is_available()
    cp.cuda.Device(0).synchronize()


# ---- the gpu package on the emulator ---------------------------------------------------------
@pytest.fixture
def gpu_package():
    gpu = pytest.importorskip("gpu")
    if not gpu.EMULATED:
        pytest.skip("gpu uses real CuPy here")
    return gpu


def test_gpu_tensors_hold_device_arrays_and_copy_back(gpu_package):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = gpu_package.Tensor(host, requires_grad=True)
    assert gpu_package.cupy is cp and isinstance(t.data, cp.ndarray) and t.xp is cp
    np.testing.assert_array_equal(t.numpy(), host)
    np.testing.assert_array_equal(ref.asarray(gpu_package.asarray(host, dtype=np.float64)), host)
    assert gpu_package.asarray(host, dtype=np.float64).dtype == np.float64


def test_module_moves_between_backends(gpu_package):
    model = Module()
    model.weight = ref.Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    model.to("gpu")
    assert isinstance(model.weight, gpu_package.Tensor)
    assert isinstance(model.weight.data, cp.ndarray)
    assert model.weight.requires_grad
    model.to("numpy")
    assert type(model.weight) is ref.Tensor and isinstance(model.weight.data, np.ndarray)


def tf32(v):
    """v rounded to TF32 by hand: to the nearest multiple of 2^(e - 11) for |v| in
    [2^(e - 1), 2^e), ties to even (numpy.round)."""
    mantissa, exponent = np.frexp(v.astype(np.float64))                  # v = m 2^e, |m| in [.5, 1)
    return np.ldexp(np.round(mantissa * 2 ** 11) / 2 ** 11, exponent).astype(np.float32)


def test_tf32_products_round_the_operands_of_float32_products_only():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal((7, 3)).astype(
        np.float32)
    A, B = cp.asarray(a), cp.asarray(b)
    try:
        cp._core.set_tf32_products(True)
        products = [cp.asnumpy(p) for p in (A @ B, cp.matmul(A, B), cp.dot(A, B))]
        double = cp.asnumpy(A.astype(cp.float64) @ B.astype(cp.float64))
    finally:
        cp._core.set_tf32_products(False)
    want = tf32(a).astype(np.float64) @ tf32(b).astype(np.float64)
    for p in products:
        np.testing.assert_allclose(p, want, rtol=1e-6, atol=1e-6)
        assert np.abs(p - a.astype(np.float64) @ b).max() > 1e-4   # the rounding shows
    np.testing.assert_array_equal(double, a.astype(np.float64) @ b.astype(np.float64))
    np.testing.assert_allclose(cp.asnumpy(A @ B), a @ b, rtol=1e-6, atol=1e-6)   # off again
