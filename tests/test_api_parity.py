"""The gpu ops have the ref ops' API: the same files (modules), in each the same Op classes and
functional wrappers with identical signatures, and the same names exported by the two packages.

The API of module X: its Op classes and the functions of ref.ops.__all__ defined in ref.ops.X (for
the gpu side: in gpu.ops.X, or shared ones imported from ref.ops.X). How each backend builds the
computation below the API is its own: helper functions (im2col on padded numpy arrays in ref, the
kernels' strided im2col and index tables on the gpu) are not compared.
"""
import importlib
import inspect
from pathlib import Path

import pytest

import gpu.ops
import ref.ops
from ref.tensor import Op

ROOT = Path(__file__).parent.parent
MODULES = sorted(p.stem for p in (ROOT / "ref" / "ops").glob("*.py") if p.stem != "__init__")


def public(namespace, owners):
    """{name: function or class} of `namespace` whose defining module is one of `owners`."""
    return {name: value for name, value in vars(namespace).items()
            if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
            and value.__module__ in owners}


def api(namespace, owners):
    """The Op classes and ref.ops.__all__ functions among public(namespace, owners)."""
    return {name: value for name, value in public(namespace, owners).items()
            if name in ref.ops.__all__ or (inspect.isclass(value) and issubclass(value, Op))}


def ops_modules(package):
    return {f"{package}.ops.{m}" for m in MODULES}


def signatures(value):
    """The signature of a function; of an Op class, those of forward and backward."""
    if inspect.isclass(value):
        return {m: inspect.signature(getattr(value, m)) for m in ("forward", "backward")}
    return inspect.signature(value)


def test_the_two_packages_have_the_same_files():
    assert MODULES == sorted(p.stem for p in (ROOT / "gpu" / "ops").glob("*.py")
                             if p.stem != "__init__")


@pytest.mark.parametrize("module", MODULES)
def test_each_gpu_module_has_the_ref_ops_with_the_same_signatures(module):
    ours = api(importlib.import_module(f"ref.ops.{module}"), {f"ref.ops.{module}"})
    theirs = api(importlib.import_module(f"gpu.ops.{module}"),
                 {f"gpu.ops.{module}", f"ref.ops.{module}"})
    assert sorted(theirs) == sorted(ours), f"gpu.ops.{module} differs from ref.ops.{module}"
    for name, value in ours.items():
        assert inspect.isclass(value) == inspect.isclass(theirs[name]), name
        assert signatures(theirs[name]) == signatures(value), f"{module}.{name}"


def test_the_packages_export_the_same_ops_with_the_same_signatures():
    ours, theirs = public(ref.ops, ops_modules("ref")), public(gpu.ops, ops_modules("gpu"))
    assert sorted(theirs) == sorted(ours)
    assert public(gpu.ops, ops_modules("ref")) == {}, "gpu.ops exports ref ops"
    for name, value in ours.items():
        assert signatures(theirs[name]) == signatures(value), name
