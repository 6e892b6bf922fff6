// cuda_prelude.h: the CUDA C++ that gpu/kernels/*.cu use, defined for g++ on the CPU.
//
// Force-included (g++ -include) before an unchanged .cu file. The emulated device runs the
// threads of one launch on one OS thread: blockIdx/threadIdx are set by the launcher
// (cuda_runtime.hpp) before each CUDA thread runs, so
//     blockIdx.x * blockDim.x + threadIdx.x
// means what it means on the GPU. __shared__ variables are function statics: one copy that the
// threads of the block being run share (blocks run one after another). Atomics are plain
// read-modify-write (threads never interleave inside one). Barriers and warp shuffles need the
// fiber mode of the runtime; in simple mode they stop the launch so that it is re-run with fibers.
#pragma once
#include <math.h>   // the float/double overloads of expf, fmaxf, exp, isnan ... that CUDA has

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __shared__ static
#define __constant__
#define __launch_bounds__(...)

extern "C" int printf(const char* format, ...);

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;
constexpr int warpSize = 32;

// ---- runtime entry points (defined in cuda_runtime.hpp) ----------------------------------------
namespace cuda_emu {
void block_barrier(const char* file, int line);
unsigned long long warp_exchange(unsigned long long value, int source_lane, const char* what,
                                 unsigned int mask, const char* file, int line);
[[noreturn]] void trap(const char* file, int line);

inline int lane_id() {
    const unsigned int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    return tid % warpSize;
}

template <typename T>
T shuffle(unsigned int mask, T var, int source_lane, const char* what, const char* file, int line) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "warp shuffle of a type wider than 8 bytes");
    unsigned long long bits = 0;
    __builtin_memcpy(&bits, &var, sizeof(T));
    bits = warp_exchange(bits, source_lane, what, mask, file, line);
    T out;
    __builtin_memcpy(&out, &bits, sizeof(T));
    return out;
}
}  // namespace cuda_emu

// ---- barriers and warp shuffles (full mask, full 32-lane warps) --------------------------------
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    cuda_emu::block_barrier(file, line);
}
inline void __syncwarp(unsigned int mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
    cuda_emu::warp_exchange(0, cuda_emu::lane_id(), "__syncwarp", mask, file, line);
}
template <typename T>
T __shfl_sync(unsigned int mask, T var, int src_lane, int width = warpSize,
              const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    const int lane = cuda_emu::lane_id();
    const int source = (lane & ~(width - 1)) + (src_lane & (width - 1));
    return cuda_emu::shuffle(mask, var, source, "__shfl_sync", file, line);
}
template <typename T>
T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize,
                 const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    const int lane = cuda_emu::lane_id();
    const int source = (lane & (width - 1)) >= (int)delta ? lane - (int)delta : lane;
    return cuda_emu::shuffle(mask, var, source, "__shfl_up_sync", file, line);
}
template <typename T>
T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize,
                   const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    const int lane = cuda_emu::lane_id();
    const int source = (lane & (width - 1)) + (int)delta < width ? lane + (int)delta : lane;
    return cuda_emu::shuffle(mask, var, source, "__shfl_down_sync", file, line);
}
template <typename T>
T __shfl_xor_sync(unsigned int mask, T var, int lane_mask, int width = warpSize,
                  const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    const int lane = cuda_emu::lane_id();
    const int other = lane ^ lane_mask;   // a later group of `width` lanes gives back the own value
    const int source = (other & ~(width - 1)) > (lane & ~(width - 1)) ? lane : other;
    return cuda_emu::shuffle(mask, var, source, "__shfl_xor_sync", file, line);
}

inline void __threadfence() {}
inline void __threadfence_block() {}
[[noreturn]] inline void __trap(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    cuda_emu::trap(file, line);
}

// ---- CUDA's min/max: integer overloads compare, float overloads are fminf/fmaxf ----------------
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double min(double a, float b) { return fmin(a, b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double max(double a, float b) { return fmax(a, b); }

// ---- intrinsics that math.h lacks ---------------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __fmaf_rn(float x, float y, float z) { return fmaf(x, y, z); }
inline int __float_as_int(float x) { int i; __builtin_memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; __builtin_memcpy(&x, &i, 4); return x; }
inline long long __double_as_longlong(double x) { long long i; __builtin_memcpy(&i, &x, 8); return i; }
inline double __longlong_as_double(long long i) { double x; __builtin_memcpy(&x, &i, 8); return x; }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned int)x); }
template <typename T> inline T __ldg(const T* p) { return *p; }

// ---- atomics: the overloads CUDA has; each returns the old value ------------------------------
#define CUDA_EMU_ATOMIC(name, T, expression) \
    inline T name(T* address, T val) { const T old = *address; *address = (expression); return old; }
#define CUDA_EMU_ATOMIC_INTEGERS(name, expression)                 \
    CUDA_EMU_ATOMIC(name, int, expression)                         \
    CUDA_EMU_ATOMIC(name, unsigned int, expression)                \
    CUDA_EMU_ATOMIC(name, unsigned long long, expression)
CUDA_EMU_ATOMIC_INTEGERS(atomicAdd, old + val)
CUDA_EMU_ATOMIC(atomicAdd, float, old + val)
CUDA_EMU_ATOMIC(atomicAdd, double, old + val)
CUDA_EMU_ATOMIC(atomicSub, int, old - val)
CUDA_EMU_ATOMIC(atomicSub, unsigned int, old - val)
CUDA_EMU_ATOMIC_INTEGERS(atomicExch, val)
CUDA_EMU_ATOMIC(atomicExch, float, val)
CUDA_EMU_ATOMIC_INTEGERS(atomicMax, old > val ? old : val)
CUDA_EMU_ATOMIC(atomicMax, long long, old > val ? old : val)
CUDA_EMU_ATOMIC_INTEGERS(atomicMin, old < val ? old : val)
CUDA_EMU_ATOMIC(atomicMin, long long, old < val ? old : val)
CUDA_EMU_ATOMIC_INTEGERS(atomicAnd, old & val)
CUDA_EMU_ATOMIC_INTEGERS(atomicOr, old | val)
CUDA_EMU_ATOMIC_INTEGERS(atomicXor, old ^ val)
#undef CUDA_EMU_ATOMIC_INTEGERS
#undef CUDA_EMU_ATOMIC
template <typename T>
inline T atomicCAS(T* address, T compare, T val) {
    const T old = *address;
    *address = old == compare ? val : old;
    return old;
}
