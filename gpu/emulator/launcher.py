"""Launch emulated kernels with CuPy's call shape:  kernel((grid,), (block,), args, shared_mem=0).

Arrays here are numpy arrays (the fake cupy unwraps its device arrays before calling). Every launch
checks its arguments against the parameter types the compiled kernel itself reports: count,
pointer element type, C-contiguity, writability, and exact scalar types (np.int32 for int,
np.float32 for float ...; Python int, float and bool pass as long long, double and bool, which is
what CuPy sends for them). A mismatch raises TypeError.

Modes (options.current["mode"]): simple runs threads one after another; fiber gives each thread of
a block its own stack so barriers and warp shuffles work; auto runs simple and, when a kernel
reaches a barrier, restores the arrays and re-runs it (and later launches of it) with fibers.
Checks (options.current["checks"]) re-run a launch from the same inputs and compare every output:
    order      reversed, then shuffled, block and thread order   (races, missing barriers)
    one_block  grid = (1, 1, 1)                                   (no grid-stride loop)
Floats are compared with a tolerance (1e-4 float32, 1e-10 float64, relative to the largest |value|)
because atomics in another order round differently; everything else must match exactly.
"""
import ctypes
import functools
import math
import re

import numpy as np

from gpu.emulator import build, options

OK, FAILED, NEEDS_FIBERS = 0, 1, 2
SIMPLE, FIBER = 0, 1
SCALARS = {"bool": np.bool_, "char": np.int8, "signed char": np.int8, "unsigned char": np.uint8,
           "short": np.int16, "unsigned short": np.uint16, "int": np.int32,
           "unsigned int": np.uint32, "long": np.int64, "unsigned long": np.uint64,
           "long long": np.int64, "unsigned long long": np.uint64, "float": np.float32,
           "double": np.float64}
PYTHON_SCALARS = {bool: np.bool_, int: np.int64, float: np.float64}   # as CuPy converts them
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
BARRIERS = re.compile(r"__syncthreads|__syncwarp|__shfl_")
EXTERN_C_KERNEL = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(')
HINTS = {"order": "the result depends on the order threads run: a data race (a missing "
                  "__syncthreads, or a non-atomic update of memory other threads write)",
         "one_block": "the kernel does not cover all elements with one block: it needs a "
                      "grid-stride loop (correct for any grid >= 1)"}


class LaunchError(RuntimeError):
    """The emulated kernel failed: barrier divergence, deadlock, __trap(), unsupported feature."""


class CheckError(LaunchError):
    """A re-run of the launch (other thread order, one block) gave different results."""


class Config(ctypes.Structure):
    """cuda_emu::Config of cuda_runtime.hpp."""
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("mode", ctypes.c_int),
                ("block_order", ctypes.c_void_p), ("thread_order", ctypes.c_void_p),
                ("stack_bytes", ctypes.c_longlong), ("error", ctypes.c_char_p),
                ("error_bytes", ctypes.c_longlong)]


class Param:
    """One kernel parameter as the compiler reports it, e.g. "const float*" or "int"."""

    def __init__(self, ctype):
        self.ctype = ctype
        self.pointer = ctype.endswith("*")
        self.const = ctype.startswith("const ")
        base = ctype.removeprefix("const ").removesuffix("*")
        if base not in SCALARS:
            raise TypeError(f"kernel parameter type {ctype!r} is not supported by the emulator")
        self.dtype = np.dtype(SCALARS[base])


class Module:
    """The kernels of one CUDA source: `expressions` ("name<float>", ...) plus its extern "C"
    kernels. Compiled with g++ on the first get_function."""

    def __init__(self, code, expressions=()):
        self.code = code
        found = [name for name in EXTERN_C_KERNEL.findall(code) if name not in expressions]
        self.expressions = tuple(expressions) + tuple(found)
        self.uses_barriers = bool(BARRIERS.search(code))
        self._kernels = {}

    @functools.cached_property
    def library(self):
        sanitize = options.current["sanitize"]
        return build.load(build.compile_library(self.code, self.expressions, sanitize), sanitize)

    def get_function(self, expression):
        if expression not in self.expressions:
            raise ValueError(f"kernel {expression!r} is not in this module, which has "
                             f"{self.expressions}")
        if expression not in self._kernels:
            self._kernels[expression] = Kernel(self, self.expressions.index(expression), expression)
        return self._kernels[expression]


class Kernel:
    """One kernel instantiation, callable as kernel(grid, block, args, shared_mem=0)."""

    def __init__(self, module, index, expression):
        self.expression = expression
        self.uses_barriers = module.uses_barriers
        self.needs_fibers = False
        self._run = getattr(module.library, f"cuda_emu_run_{index}")
        self._run.argtypes = [ctypes.c_void_p, ctypes.POINTER(Config)]
        self._run.restype = ctypes.c_int
        names = ctypes.create_string_buffer(4096)
        getattr(module.library, f"cuda_emu_signature_{index}")(names, len(names))
        self.params = [Param(t) for t in names.value.decode().split(",") if t]

    def __repr__(self):
        return f"{self.expression}({', '.join(p.ctype for p in self.params)})"

    def __call__(self, grid, block, args, shared_mem=0):
        grid, block = _dims(grid, "grid", 2**31 - 1), _dims(block, "block", 1024)
        if math.prod(block) > 1024:
            raise LaunchError(f"{self.expression}: block {block} has more than 1024 threads")
        if shared_mem:
            raise LaunchError(f"{self.expression}: dynamic shared memory (shared_mem={shared_mem}) "
                              f"is not emulated; use a fixed-size __shared__ array")
        argv, values = self._pack(args)   # argv points into values, alive until the end
        outputs = [a for a, p in zip(args, self.params) if p.pointer and not p.const]
        checks = options.current["checks"]
        may_restart = (options.current["mode"] == "auto" and self.uses_barriers
                       and not self.needs_fibers)
        before = [a.copy() for a in outputs] if checks or may_restart else None   # (each a.shape)
        self._launch(argv, grid, block, _natural(grid), _natural(block, np.int32), outputs, before)
        if checks:
            self._check(argv, grid, block, outputs, before, checks)

    def _pack(self, args):
        """void* array of pointers to each argument's value (cuLaunchKernel's kernelParams)."""
        if len(args) != len(self.params):
            raise TypeError(f"{self!r} takes {len(self.params)} arguments, got {len(args)}")
        values = []
        for i, (p, a) in enumerate(zip(self.params, args)):
            where = f"{self.expression} argument {i} ({p.ctype})"
            if p.pointer:
                _check_array(a, p, where)
                values.append(ctypes.c_void_p(a.ctypes.data))
            else:
                scalar = _scalar(a, p, where)
                values.append(ctypes.create_string_buffer(scalar.tobytes(), scalar.nbytes))
        argv = (ctypes.c_void_p * max(1, len(values)))(*map(ctypes.addressof, values))
        return argv, values

    def _execute(self, argv, grid, block, block_order, thread_order, fibers):
        error = ctypes.create_string_buffer(2048)
        stack = (64 << 10 if fibers else 1 << 20) * (4 if options.current["sanitize"] else 1)
        config = Config(grid, block, FIBER if fibers else SIMPLE, block_order.ctypes.data,
                        thread_order.ctypes.data, stack, ctypes.cast(error, ctypes.c_char_p),
                        len(error))
        return self._run(argv, ctypes.byref(config)), error.value.decode(errors="replace")

    def _launch(self, argv, grid, block, block_order, thread_order, outputs, before):
        mode = options.current["mode"]
        fibers = mode == "fiber" or (mode == "auto" and self.needs_fibers)
        status, message = self._execute(argv, grid, block, block_order, thread_order, fibers)
        if status == NEEDS_FIBERS and mode == "auto" and before is not None:
            self.needs_fibers = True
            _restore(outputs, before)
            status, message = self._execute(argv, grid, block, block_order, thread_order, True)
        if status == NEEDS_FIBERS:
            raise LaunchError(f"{self.expression}: {message}; run it in fiber mode "
                              f"(GPU_EMULATOR_MODE=fiber or auto)")
        if status != OK:
            raise LaunchError(f"{self.expression}: {message}")

    def _check(self, argv, grid, block, outputs, before, checks):
        reference = [a.copy() for a in outputs]   # (each a.shape)
        variants = _variants(grid, block, checks, np.random.default_rng(0))
        for check, description, run_grid, block_order, thread_order in variants:
            _restore(outputs, before)
            self._launch(argv, run_grid, block, block_order, thread_order, outputs, before)
            for a, r in zip(outputs, reference):
                differs = _differs(a, r)
                if differs.any():
                    k = int(np.flatnonzero(differs)[0])
                    raise CheckError(
                        f"{self.expression}: re-run with {description} changed "
                        f"{int(differs.sum())} of {a.size} elements of an output "
                        f"({a.dtype} array {a.shape}); first at flat index {k}: "
                        f"{a.reshape(-1)[k]!r} instead of {r.reshape(-1)[k]!r}. {HINTS[check]}")
        _restore(outputs, reference)


def _dims(dims, what, limit):
    dims = tuple(int(d) for d in (dims if isinstance(dims, tuple) else (dims,)))
    if not 1 <= len(dims) <= 3 or min(dims) < 1 or max(dims) > limit:
        raise LaunchError(f"{what} must be 1 to 3 positive sizes (at most {limit}), got {dims}")
    return dims + (1,) * (3 - len(dims))


def _natural(dims, dtype=np.int64):
    return np.arange(math.prod(dims), dtype=dtype)


def _variants(grid, block, checks, rng):
    """(check, description, grid, block order, thread order) of each re-run."""
    nblocks, nthreads = math.prod(grid), math.prod(block)
    if "order" in checks:
        yield ("order", "reversed block and thread order", grid,
               _natural(grid)[::-1].copy(), _natural(block, np.int32)[::-1].copy())
        yield ("order", "shuffled block and thread order", grid,
               rng.permutation(nblocks).astype(np.int64),
               rng.permutation(nthreads).astype(np.int32))
    if "one_block" in checks and nblocks > 1:
        yield "one_block", "grid=(1,)", (1, 1, 1), _natural((1,)), _natural(block, np.int32)


def _check_array(a, p, where):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{where}: expected an array of {p.dtype}, got {type(a).__name__} {a!r}")
    if a.dtype != p.dtype:
        raise TypeError(f"{where}: expected an array of {p.dtype}, got an array of {a.dtype}")
    if not a.flags.c_contiguous:
        raise TypeError(f"{where}: the array (shape {a.shape}, strides {a.strides}) is not "
                        f"C-contiguous; pass ascontiguousarray(...)")
    if not p.const and not a.flags.writeable:
        raise TypeError(f"{where}: the array is read-only but the parameter is not const")


def _scalar(value, p, where):
    """`value` as the numpy scalar the parameter needs, or TypeError when its type is not exact."""
    if PYTHON_SCALARS.get(type(value), type(value)) is not p.dtype.type:
        raise TypeError(f"{where}: expected numpy.{p.dtype.type.__name__}, got "
                        f"{type(value).__name__} {value!r} (CuPy passes raw bytes: a Python int "
                        f"arrives as long long, a float as double)")
    return np.asarray(value, dtype=p.dtype)


def _restore(outputs, saved):
    for a, s in zip(outputs, saved):
        a[...] = s


def _differs(a, r):
    """Boolean mask of elements of `a` that differ from `r` (floats: within TOLERANCE)."""
    if a.dtype not in TOLERANCE:
        return a != r
    finite = np.abs(r[np.isfinite(r)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return ~np.isclose(a, r, rtol=0, atol=TOLERANCE[a.dtype] * scale, equal_nan=True)
