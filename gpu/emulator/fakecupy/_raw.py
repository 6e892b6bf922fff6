"""cupy.RawModule and cupy.RawKernel on the emulated device: CUDA source compiled by g++ and run
by gpu.emulator.launcher (see there for the argument checks, modes and re-run checks)."""
import numpy

from gpu.emulator import launcher
from gpu.emulator.fakecupy._core import ndarray


class RawModule:
    """CUDA source whose kernels are fetched by name expression ("im2col<float>") or by the name
    of an extern "C" kernel."""

    def __init__(self, code=None, *, path=None, options=(), backend="nvrtc",
                 translate_cucomplex=False, enable_cooperative_groups=False, name_expressions=None,
                 jitify=None):
        if code is None:
            raise NotImplementedError("the emulator compiles CUDA source (code=...), "
                                      "not cubin/ptx files (path=...)")
        self._module = launcher.Module(code, tuple(name_expressions or ()))

    def compile(self, log_stream=None):
        self._module.library   # the cached property builds it

    def get_function(self, name):
        return RawKernel._of(self._module.get_function(name))


class RawKernel:
    """One kernel: kernel(grid, block, args, shared_mem=0) runs it on the emulator."""

    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False, *,
                 enable_cooperative_groups=False, jitify=None):
        self._kernel = launcher.Module(code).get_function(name)

    @classmethod
    def _of(cls, kernel):
        raw = cls.__new__(cls)
        raw._kernel = kernel
        return raw

    def __call__(self, grid, block, args, *, shared_mem=0):
        args = tuple(_device_argument(a, i, self._kernel) for i, a in enumerate(args))
        self._kernel(grid, block, args, shared_mem=shared_mem)


def _device_argument(value, i, kernel):
    """A device array as its memory (numpy); host numpy arrays cannot reach a kernel."""
    if isinstance(value, numpy.ndarray):
        raise TypeError(f"{kernel.expression} argument {i}: a numpy (host) array was passed to a "
                        f"kernel; copy it to the device with cupy.asarray() first")
    return value._array if isinstance(value, ndarray) else value
