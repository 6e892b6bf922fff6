"""gpu: the CuPy twin of ref.ops, with custom CUDA kernels (gpu/kernels/*.cu), same API.

    import gpu
    x = gpu.Tensor(gpu.asarray(array), requires_grad=True)      # or model.to("gpu")
    y = gpu.ops.relu(x).sum(); y.backward(); x.grad               # a cupy array

`gpu.cupy` is the array module in use: real CuPy, or with GPU_EMULATOR=1 (set by the test suite
when no CUDA device is present) the NumPy-backed stand-in gpu.emulator.fakecupy, whose RawModule
runs the same .cu files on the CPU emulator. `gpu.EMULATED` says which.
"""
import os

EMULATED = os.environ.get("GPU_EMULATOR", "0") not in ("", "0")

if EMULATED:
    from gpu.emulator import fakecupy as cupy
else:
    try:
        import cupy
    except ImportError as error:
        raise ImportError("the gpu backend needs CuPy: pip install -e .[gpu] (cupy-cuda13x for a "
                          "CUDA 13 driver; for CUDA 12 install cupy-cuda12x instead), or set "
                          "GPU_EMULATOR=1 to run it on the CPU emulator") from error

from gpu import ops  # noqa: E402 (ops import `cupy` from here)
from gpu.tensor import Tensor  # noqa: E402

Tensor.ops = ops


def asarray(a, dtype=None):
    """`a` (host numpy array, device array, list or scalar) as a device array; host data is
    copied to the device, a device array of the right dtype is returned as it is."""
    return cupy.asarray(a, dtype=dtype)


__all__ = ["EMULATED", "Tensor", "asarray", "cupy", "ops"]
