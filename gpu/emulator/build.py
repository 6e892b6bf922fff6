"""Build a CUDA source, unchanged, into a shared library with g++ (cached by content hash).

The generated wrapper (one pair of C entry points per kernel name expression k):

    #include "<hash>.cu"                   the source (a leading #line keeps its own file name)
    #include ".../cuda_runtime.hpp"
    extern "C" int cuda_emu_run_k(void** args, const cuda_emu::Config* config)
        { return cuda_emu::run(&im2col<float>, args, config); }
    extern "C" int cuda_emu_signature_k(char* out, int size)
        { return cuda_emu::signature(&im2col<float>, out, size); }

compiled with  g++ -std=c++20 -O1 -g -fPIC -shared -include cuda_prelude.h  to
$XDG_CACHE_HOME/robustprune/emulator/<sha256>.so (XDG_CACHE_HOME defaults to ~/.cache); the hash
covers the source, the expressions, prelude, runtime, flags and the g++ version. A sanitized build
(GPU_EMULATOR_SANITIZE=1) adds -fsanitize=address,undefined and loads only into a process started
with the environment `sanitizer_env()` gives (libasan preloaded).
"""
import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
PRELUDE = HERE / "cuda_prelude.h"
RUNTIME = HERE / "cuda_runtime.hpp"
FLAGS = ("-std=c++20", "-O1", "-g", "-fPIC", "-shared")
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                  "-fno-omit-frame-pointer")


class CompileError(RuntimeError):
    """g++ rejected the source; the message holds its diagnostics (file:line of the .cu)."""


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "robustprune" / "emulator"


@functools.cache
def _compiler_version():
    return subprocess.run(["g++", "--version"], capture_output=True, text=True, check=True).stdout


def wrapper_source(source_name, expressions):
    """The C++ that includes the source and exports entry points for each expression."""
    lines = [f'#include "{source_name}"', f'#include "{RUNTIME}"']
    for k, expression in enumerate(expressions):
        lines += [f'extern "C" int cuda_emu_run_{k}(void** args, const cuda_emu::Config* config) '
                  f'{{ return cuda_emu::run(&{expression}, args, config); }}',
                  f'extern "C" int cuda_emu_signature_{k}(char* out, int size) '
                  f'{{ return cuda_emu::signature(&{expression}, out, size); }}']
    return "\n".join(lines) + "\n"


def compile_library(code, expressions, sanitize=False):
    """Path of the shared library for `code` exporting `expressions` (built unless cached)."""
    flags = FLAGS + (SANITIZE_FLAGS if sanitize else ())
    key = hashlib.sha256("\0".join([code, *expressions, PRELUDE.read_text(), RUNTIME.read_text(),
                                    *flags, _compiler_version()]).encode()).hexdigest()[:32]
    directory = cache_dir()
    library = directory / f"{key}.so"
    if library.exists():
        return library
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / f"{key}.cu", code)
    wrapper = _write(directory / f"{key}.cpp", wrapper_source(f"{key}.cu", expressions))
    partial = _temporary(directory, ".so")
    result = subprocess.run(["g++", *flags, "-include", str(PRELUDE), str(wrapper), "-o", partial],
                            capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(partial)
        raise CompileError(f"g++ could not build the emulated kernels:\n{result.stderr}")
    os.replace(partial, library)
    return library


def _temporary(directory, suffix):
    with tempfile.NamedTemporaryFile(dir=directory, suffix=suffix, delete=False) as file:
        return file.name


def _write(path, text):
    """Write through a temporary file and rename, so that parallel test workers building the same
    kernels never read a half-written file."""
    partial = _temporary(path.parent, path.suffix)
    Path(partial).write_text(text)
    os.replace(partial, path)
    return path


def sanitizer_env():
    """Environment for a subprocess that runs sanitized kernels (libasan must load first)."""
    libasan = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True,
                             check=True).stdout.strip()
    return {"LD_PRELOAD": libasan, "GPU_EMULATOR_SANITIZE": "1",
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}


@functools.cache
def load(path, sanitize=False):
    """The loaded library (ctypes); a sanitized one only when libasan is already in the process."""
    if sanitize and not hasattr(ctypes.CDLL(None), "__asan_init"):
        raise RuntimeError("GPU_EMULATOR_SANITIZE=1 needs AddressSanitizer loaded first: start "
                           "python with LD_PRELOAD=$(g++ -print-file-name=libasan.so) "
                           "ASAN_OPTIONS=detect_leaks=0 (see gpu.emulator.build.sanitizer_env)")
    return ctypes.CDLL(str(path))
