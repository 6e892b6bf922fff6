"""CPU stand-ins for the GPU, so the gpu backend is checked on machines without one.

fakecupy/         NumPy-backed `cupy` (only names real CuPy has); `import gpu` uses it when
                  GPU_EMULATOR=1 (tests/conftest.py sets that when no CUDA device is present).
cuda_prelude.h    CUDA C++ for g++: __global__, threadIdx/blockIdx/blockDim/gridDim, min/max,
                  float intrinsics, atomics, __syncthreads, __shfl_*_sync, __shared__.
cuda_runtime.hpp  runs a launch: simple mode (threads one after another) or fiber mode (one
                  ucontext fiber per CUDA thread of a block; detects barrier divergence).
build.py          g++ -std=c++20 -O1 -g -fPIC -shared of the UNCHANGED .cu, cached by content hash
                  under $XDG_CACHE_HOME/robustprune/emulator; optional -fsanitize=address,undefined.
launcher.py       CuPy's call shape kernel((grid,), (block,), args); checks every argument against
                  the compiled parameter types; re-run checks.
options.py        the switches:
    GPU_EMULATOR_MODE=auto|simple|fiber      or  with gpu.emulator.mode("fiber"): ...
    GPU_EMULATOR_CHECKS=order,one_block|all  or  with gpu.emulator.checks("order", "one_block"): ...
    GPU_EMULATOR_SANITIZE=1                  (needs LD_PRELOAD of libasan: build.sanitizer_env())

What the emulator cannot show (these need a real GPU: pytest -m gpu):
- asynchrony and streams (every emulated launch completes before it returns), the memory pool and
  out-of-memory behaviour;
- cuBLAS numerics (matmul/tensordot run numpy's BLAS; TF32 only as operands rounded to 10 bits),
  FMA contraction and denormal flushing (-ftz): compare floats with tolerances; copies, clamps
  and signs are exact;
- the memory model between blocks and between warps (blocks run one after another, threads only
  interleave at barriers and shuffles, atomics never race), so races the order re-runs do not
  provoke stay hidden; reads of __shared__ memory no thread of the block wrote see values a
  previous block left, not garbage;
- warp-synchronous code without __syncwarp, independent thread scheduling, spin-waits between
  threads (a cooperative scheduler never preempts), dynamic shared memory (shared_mem > 0),
  launch limits beyond block <= 1024 threads, register pressure and speed (see
  gpu/tools/kernel_report.py for registers and spills; never quote an emulated time as a GPU one;
  what the emulator can count, kernel launches and host synchronisations per step, comes from
  gpu/tools/counter.py).
"""
from gpu.emulator.build import CompileError
from gpu.emulator.launcher import CheckError, LaunchError
from gpu.emulator.options import checks, mode

__all__ = ["CheckError", "CompileError", "LaunchError", "checks", "mode"]
