"""A NumPy-backed stand-in for the `cupy` module: what `import gpu` uses when GPU_EMULATOR=1.

Device arrays (`ndarray`) hold numpy memory but behave like CuPy's: no implicit conversion to
numpy, no mixing with numpy arrays, reductions give 0-d arrays (see _core.py). Only names that
real CuPy has are exported, with CuPy's parameter names (tests/test_fake_cupy.py checks both
against the installed cupy). `RawModule`/`RawKernel` compile CUDA C with g++ and run it on the
CPU emulator (gpu.emulator.launcher); `cuda.runtime.getDeviceCount()` is 0 and
`is_available()` False, because there is no CUDA device.
"""
import numpy

# re-exported as cupy's names
from gpu.emulator.fakecupy import cuda, random  # noqa: F401
from gpu.emulator.fakecupy._core import ndarray  # noqa: F401
from gpu.emulator.fakecupy._functions import *  # noqa: F401,F403 (the list is _functions.__all__)
from gpu.emulator.fakecupy._raw import RawKernel, RawModule  # noqa: F401
from gpu.emulator.fakecupy._ufuncs import UFUNCS, abs, ufunc  # noqa: F401,A004

globals().update(UFUNCS)

# numpy's scalar types and dtype helpers are CuPy's too (cupy.float32 is numpy.float32)
bool_, int8, int16, int32, int64 = numpy.bool_, numpy.int8, numpy.int16, numpy.int32, numpy.int64
uint8, uint16, uint32, uint64 = numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64
float16, float32, float64 = numpy.float16, numpy.float32, numpy.float64
complex64, complex128, intp = numpy.complex64, numpy.complex128, numpy.intp
dtype, finfo, iinfo = numpy.dtype, numpy.finfo, numpy.iinfo
inf, nan, pi, e = numpy.inf, numpy.nan, numpy.pi, numpy.e

del numpy, UFUNCS
