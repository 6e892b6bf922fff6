"""gpu: the CuPy twin of ref.ops, with custom CUDA kernels (gpu/kernels/*.cu), same API.

    import gpu
    x = gpu.Tensor(gpu.asarray(array), requires_grad=True)      # or model.to("gpu")
    y = gpu.ops.relu(x).sum(); y.backward(); x.grad               # a cupy array

    gpu.set_tf32(True)      # float32 products in TF32, as PyTorch's cuDNN convolutions by default

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


def set_tf32(enabled):
    """Run float32 matrix products (the convolutions' and linear layers') on TF32 tensor cores
    (operands rounded to a 10-bit mantissa, float32 accumulation) when `enabled`, in full float32
    otherwise (the default, as CuPy's). PyTorch's cuDNN convolutions use TF32 by default
    (torch.backends.cudnn.allow_tf32); examples turn it on for --backend gpu training. float64 is
    never affected. On the emulator the float32 operands of the products are rounded the same way,
    so results change as they would on a GPU (approximately: cuBLAS picks its own kernels)."""
    if EMULATED:
        cupy._core.set_tf32_products(bool(enabled))
        return
    from cupy._core import _routines_linalg as linalg   # CuPy's per-dtype cuBLAS compute type
    linalg.set_compute_type(cupy.float32, linalg.COMPUTE_TYPE_TF32 if enabled
                            else linalg.COMPUTE_TYPE_DEFAULT)


__all__ = ["EMULATED", "Tensor", "asarray", "cupy", "ops", "set_tf32"]
