"""Run one op on both backends and compare: the harness of the backend tests (tests/test_gpu_*.py).

    result = compare("conv2d", [x, W, b], {"stride": 2, "padding": 1}, np.float64)

runs ref.ops.conv2d and gpu.ops.conv2d on the same inputs and asserts that the outputs and EVERY
input gradient agree (the gradients from one backward with the same random gy on both sides).

Inputs (`arrays`, the op's positional arguments, in order):
    floating numpy array      -> a Tensor of `dtype` that requires grad (see `requires_grad`)
    list of floating arrays   -> a list of such Tensors (concatenate's `xs`); each gets its gradient
    anything else             -> passed as it is: integer arrays (labels, indices) as a numpy array
                                 to ref and a device array to gpu (also inside tuples, as in an
                                 index); numbers, shapes, None, slices unchanged.
`params` (keyword arguments) are deep-copied for each backend, so a numpy Generator (dropout's rng)
draws the same numbers on both.

With grad=False the op is a non-differentiable array op (the fused updates): every input is a
plain array (floating ones cast to `dtype`), and the return value and every input array afterwards
(in-place updates) are compared.

Tolerances: float64 rtol 1e-10 (a miss is an indexing bug, not rounding), float32 rtol 1e-4;
`rtol`/`atol` override them.
"""
import copy
import types

import numpy as np

import gpu
import ref

TOLERANCES = {np.dtype(np.float64): (1e-10, 1e-12), np.dtype(np.float32): (1e-4, 1e-5)}


def tolerances(dtype, rtol=None, atol=None):
    """(rtol, atol) for `dtype` unless given."""
    default_rtol, default_atol = TOLERANCES[np.dtype(dtype)]
    return (default_rtol if rtol is None else rtol), (default_atol if atol is None else atol)


def is_float_array(value):
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def to_device(value):
    """numpy arrays (also inside lists and tuples) as device arrays; everything else unchanged."""
    if isinstance(value, np.ndarray):
        return gpu.asarray(value)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v) for v in value)
    return value


def to_host(value):
    """A device array, Tensor or number as a numpy array."""
    if isinstance(value, ref.Tensor):
        value = value.data
    return gpu.cupy.asnumpy(value) if isinstance(value, gpu.cupy.ndarray) else np.asarray(value)


def _inputs(arrays, dtype, requires_grad, backend):
    """The positional arguments for one backend: (args, [leaf Tensors in order])."""
    tensor, move = (ref.Tensor, lambda a: a) if backend is ref else (gpu.Tensor, to_device)
    args, leaves = [], []
    for value, wants in zip(arrays, requires_grad):
        if is_float_array(value):
            t = tensor(move(value.astype(dtype)), requires_grad=wants)
            args.append(t)
            leaves.append(t)
        elif isinstance(value, list) and value and all(is_float_array(v) for v in value):
            ts = [tensor(move(v.astype(dtype)), requires_grad=wants) for v in value]
            args.append(ts)
            leaves.extend(ts)
        else:
            args.append(move(value))
    return args, leaves


def _assert_close(name, got, want, rtol, atol):
    got, want = to_host(got), to_host(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != ref {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != ref {want.dtype}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)


def compare(op_name, arrays, params=None, dtype=np.float64, *, requires_grad=None, grad=True,
            seed=0, rtol=None, atol=None):
    """Run ref.ops.<op_name> and gpu.ops.<op_name> on the same inputs; assert that outputs and
    every input gradient agree (see the module docstring). Returns a namespace with `ref` and
    `gpu` (the outputs as numpy arrays) and `ref_grads`, `gpu_grads` (lists, None where an input
    got no gradient)."""
    dtype = np.dtype(dtype)
    rtol, atol = tolerances(dtype, rtol, atol)
    params = params or {}
    if not grad:
        return _compare_arrays(op_name, arrays, params, dtype, rtol, atol)
    requires_grad = [True] * len(arrays) if requires_grad is None else list(requires_grad)
    results = {}
    for backend in (ref, gpu):
        args, leaves = _inputs(arrays, dtype, requires_grad, backend)
        y = getattr(backend.ops, op_name)(*args, **copy.deepcopy(params))
        results[backend] = (y, leaves)
    (y_ref, leaves_ref), (y_gpu, leaves_gpu) = results[ref], results[gpu]
    assert isinstance(y_gpu, gpu.Tensor), f"{op_name}: gpu op returned {type(y_gpu).__name__}"
    assert isinstance(y_gpu.data, gpu.cupy.ndarray), f"{op_name}: gpu output is not on the device"
    _assert_close(f"{op_name} output", y_gpu, y_ref, rtol, atol)
    if y_ref.requires_grad:
        gy = np.random.default_rng(seed).standard_normal(y_ref.shape).astype(y_ref.dtype)
        y_ref.backward(gy)
        y_gpu.backward(gpu.asarray(gy))
    for i, (a, b) in enumerate(zip(leaves_ref, leaves_gpu)):
        assert (a.grad is None) == (b.grad is None), f"{op_name}: input {i} gradient presence"
        if a.grad is not None:
            assert isinstance(b.grad, gpu.cupy.ndarray), f"{op_name}: gradient {i} not on device"
            _assert_close(f"{op_name} gradient of input {i}", b.grad, a.grad, rtol, atol)
    return types.SimpleNamespace(
        ref=to_host(y_ref), gpu=to_host(y_gpu),
        ref_grads=[None if t.grad is None else to_host(t.grad) for t in leaves_ref],
        gpu_grads=[None if t.grad is None else to_host(t.grad) for t in leaves_gpu])


def _compare_arrays(op_name, arrays, params, dtype, rtol, atol):
    """grad=False: plain arrays in, return value and every (possibly updated) input compared."""
    host = [a.astype(dtype) if is_float_array(a) else copy.deepcopy(a) for a in arrays]
    device = [to_device(a) for a in host]
    y_ref = getattr(ref.ops, op_name)(*host, **copy.deepcopy(params))
    y_gpu = getattr(gpu.ops, op_name)(*device, **copy.deepcopy(params))
    assert (y_ref is None) == (y_gpu is None), f"{op_name}: return value presence differs"
    if y_ref is not None:
        assert isinstance(y_gpu, gpu.cupy.ndarray), f"{op_name}: gpu result is not on the device"
        _assert_close(f"{op_name} result", y_gpu, y_ref, rtol, atol)
    for i, (a, b) in enumerate(zip(host, device)):
        if isinstance(a, np.ndarray):
            _assert_close(f"{op_name} array {i} after the call", b, a, rtol, atol)
    return types.SimpleNamespace(ref=None if y_ref is None else to_host(y_ref),
                                 gpu=None if y_gpu is None else to_host(y_gpu),
                                 ref_arrays=host, gpu_arrays=[to_host(b) for b in device])
