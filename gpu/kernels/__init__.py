"""Loading and launching the CUDA kernels in gpu/kernels/*.cu: the only kernel plumbing.

    launch(file, name, dtype, total, args, block=256)

compiles kernels/<file> once with the cupy module in use (real CuPy: NVRTC; emulated: g++), checks
`args` against the kernel's parameter list as written in the .cu file, and runs
grid = min(ceil(total / block), MAX_BLOCKS) blocks of `block` threads; kernels cover all `total`
elements with a grid-stride loop, so any grid >= 1 is correct. A 2-D launch gives total and block
as pairs (x, y), e.g. total = (channels, rows) and block = (32, 8): the grid is computed per axis
and the kernel has a grid-stride loop along each (index arithmetic per row, not per element).

The declarations this file reads (parameters may span lines; T is float for float32 and double
for float64; each template kernel is compiled for both):

    // block: 256                  fixed block size (`// block: 32 8` for a 2-D block), required
    template <typename T>          when the kernel body uses __syncthreads, __syncwarp or warp
                                   shuffles
    __global__ void name(const T* x, T* y, const int n, const long long m, const float lr,
                         const T alpha)
    extern "C" __global__ void name(const unsigned char* mask, float* y, const int n)

Checks on every launch (CuPy itself passes raw bytes and checks nothing): argument count; arrays
for pointers, of the parameter's element type (T -> dtype), C-contiguous; scalars of the exact
numpy type (int -> numpy.int32, long long -> numpy.int64, float -> numpy.float32,
double -> numpy.float64, T -> dtype's type). A mismatch raises TypeError naming kernel, parameter
and what was passed.
"""
import functools
import re
from pathlib import Path

import numpy as np

from gpu import cupy

KERNEL_DIR = Path(__file__).parent
MAX_BLOCKS = 65535
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
SCALARS = {"bool": np.bool_, "unsigned char": np.uint8, "signed char": np.int8, "int": np.int32,
           "unsigned int": np.uint32, "long long": np.int64, "unsigned long long": np.uint64,
           "float": np.float32, "double": np.float64}
DECLARATION = re.compile(
    r'(?P<comments>(?:[ \t]*//[^\n]*\n)*)[ \t]*'
    r'(?P<template>template\s*<\s*(?:typename|class)\s+T\s*>\s*)?'
    r'(?P<extern>extern\s+"C"\s+)?__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?'
    r'(?P<name>\w+)\s*\((?P<params>[^)]*)\)')
BLOCK_COMMENT = re.compile(r"//\s*block:\s*(\d+(?:\s+\d+)?)\s*$", re.M)
BARRIERS = re.compile(r"__syncthreads|__syncwarp|__shfl_")


class Param:
    """One parameter: `const T* x` -> name "x", ctype "T", pointer True."""

    def __init__(self, text, kernel):
        tokens = text.replace("*", " * ").replace("__restrict__", " ").split()
        if len(tokens) < 2:
            raise ValueError(f"{kernel}: cannot read the parameter {text.strip()!r}")
        self.name, self.pointer = tokens[-1], "*" in tokens
        self.ctype = " ".join(t for t in tokens[:-1] if t not in ("const", "*"))
        spelled = " ".join(t for t in tokens[:-1] if t != "*") + "*" * self.pointer
        self.declaration = f"{spelled} {self.name}"                   # "const T* x"
        if self.ctype not in SCALARS and self.ctype != "T":
            raise ValueError(f"{kernel}: parameter {self.declaration!r} has type {self.ctype!r}; "
                             f"use T or one of {sorted(SCALARS)}")

    def dtype(self, dtype):
        """The numpy dtype of an element (pointer) or of the value (scalar) for this T."""
        return dtype if self.ctype == "T" else np.dtype(SCALARS[self.ctype])


class Kernel:
    """A kernel declared in a .cu file: name, template or extern "C", parameters, fixed block."""

    def __init__(self, file, match, body):
        self.file, self.name = file, match["name"]
        self.template = match["template"] is not None
        if not self.template and match["extern"] is None:
            raise ValueError(f"{self}: a kernel must be `template <typename T>` or `extern \"C\"`")
        self.params = [Param(p, self) for p in match["params"].split(",") if p.strip()]
        block = BLOCK_COMMENT.search(match["comments"])
        self.block = _dims(tuple(int(v) for v in block.group(1).split())) if block else None
        if self.block is None and BARRIERS.search(body):
            raise ValueError(f"{self}: uses barriers or warp shuffles, so it needs a fixed block "
                             f"size: add a `// block: 256` comment line right above it")

    def __str__(self):
        return f"{self.file}::{self.name}"

    def expression(self, dtype):
        """The name to compile and fetch: "name<float>" for templates, "name" for extern "C"."""
        if not self.template:
            return self.name
        if dtype not in CTYPES:
            raise TypeError(f"{self}: dtype must be float32 or float64, got {dtype}")
        return f"{self.name}<{CTYPES[dtype]}>"

    def expressions(self):
        return [self.expression(d) for d in CTYPES] if self.template else [self.name]


def source(file):
    """The text of kernels/<file>, led by a #line directive so that compiler messages (NVRTC and
    the emulator's g++) name the .cu file and its own line numbers."""
    path = KERNEL_DIR / file
    return f'#line 1 "{path}"\n' + path.read_text()


@functools.cache
def kernels(file):
    """{name: Kernel} for every kernel declared in kernels/<file>."""
    text = (KERNEL_DIR / file).read_text()
    found = {}
    for match in DECLARATION.finditer(text):
        kernel = Kernel(file, match, _body(text, match.end()))
        found[kernel.name] = kernel
    return found


def _body(text, start):
    """The braced body that follows position `start` (comments removed)."""
    text = re.sub(r"//[^\n]*|/\*.*?\*/", "", text[start:], flags=re.S)
    opened = text.find("{")
    depth = 0
    for i in range(opened, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[opened:i + 1]
    raise ValueError(f"unbalanced braces after position {start}")


@functools.cache
def _module(file):
    expressions = [e for k in kernels(file).values() if k.template for e in k.expressions()]
    return cupy.RawModule(code=source(file), options=("-std=c++17",),
                          name_expressions=tuple(expressions) or None)


@functools.cache
def _function(file, expression):
    return _module(file).get_function(expression)


def launch(file, name, dtype, total, args, block=256):
    """Run kernel `name` of kernels/<file> for `dtype` over `total` elements (see module docstring).

    dtype: numpy dtype (float32/float64) that instantiates T (ignored by extern "C" kernels);
    total: number of elements the grid-stride loop covers (0 launches nothing), or a pair
    (x, y) for a 2-D launch; args: the kernel's arguments in order (device arrays and numpy
    scalars); block: threads per block, an int or a pair (x, y) like total.
    """
    found = kernels(file)
    if name not in found:
        raise ValueError(f"kernel {name!r} is not declared in {file}; it has {sorted(found)}")
    kernel = found[name]
    dtype = np.dtype(dtype) if dtype is not None else None
    expression = kernel.expression(dtype)
    totals, blocks = _dims(total), _dims(block)
    if len(totals) != len(blocks) or not all(isinstance(v, (int, np.integer)) and v >= 0
                                             for v in totals):
        raise ValueError(f"{kernel}: total must be a non-negative int or a pair like block "
                         f"{block!r}, got {total!r}")
    if kernel.block is not None and blocks != kernel.block:
        raise ValueError(f"{kernel} declares `// block: {' '.join(map(str, kernel.block))}`; "
                         f"launched with block={block}")
    if not all(isinstance(v, int) and v >= 1 for v in blocks) or np.prod(blocks) > 1024:
        raise ValueError(f"{kernel}: block must be positive ints with at most 1024 threads in "
                         f"all, got {block!r}")
    _check_args(kernel, dtype, args)
    if min(totals) == 0:
        return
    grid = tuple(min(-(-int(t) // b), MAX_BLOCKS) for t, b in zip(totals, blocks))
    _function(file, expression)(grid, blocks, tuple(args))


def channel_block(c):
    """The 2-D block (x over channels, y over rows) of 256 threads for kernels that put the
    channels of channels-last memory along x: 32 channels wide (one warp per row of a block,
    coalesced), or fewer for narrow inputs (3 channels: 4 x 64)."""
    width = min(32, 1 << max(c - 1, 0).bit_length())
    return (width, 256 // width)


def _dims(value):
    """An int or a pair as a tuple: 256 -> (256,), (32, 8) -> (32, 8)."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _check_args(kernel, dtype, args):
    if len(args) != len(kernel.params):
        names = ", ".join(p.declaration for p in kernel.params)
        raise TypeError(f"{kernel} takes {len(kernel.params)} arguments ({names}), got {len(args)}")
    for p, a in zip(kernel.params, args):
        if p.ctype == "T" and dtype is None:
            raise TypeError(f"{kernel}: dtype is needed to instantiate T")
        want = p.dtype(dtype)
        where = f"{kernel} parameter `{p.declaration}`"
        if p.pointer:
            if not isinstance(a, cupy.ndarray):
                raise TypeError(f"{where}: expected a cupy array of {want}, got {type(a).__name__}")
            if a.dtype != want:
                raise TypeError(f"{where}: expected a cupy array of {want}, got one of {a.dtype}")
            if not a.flags.c_contiguous:
                raise TypeError(f"{where}: the array (shape {a.shape}) is not C-contiguous; "
                                f"pass cupy.ascontiguousarray(...)")
        elif type(a) is not want.type:
            raise TypeError(f"{where}: expected numpy.{want.type.__name__}, got "
                            f"{type(a).__name__} {a!r}")
