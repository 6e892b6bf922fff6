// cuda_runtime.hpp: runs one kernel launch <<<grid, block>>> on the CPU.
//
// Included at the end of the generated wrapper, after the .cu file. The wrapper exports per
// kernel instantiation k:
//     int cuda_emu_run_k(void** args, const cuda_emu::Config* config)   0 ok, 1 failed, 2 needs fibers
//     int cuda_emu_signature_k(char* out, int size)                      "const float*,float*,int"
// args[i] points at the value of parameter i (as cuLaunchKernel's kernelParams).
//
// Simple mode: CUDA threads run one after another, in config->block_order x config->thread_order.
// A barrier or warp shuffle stops the launch with status 2 (the caller re-runs it with fibers).
// Fiber mode: one ucontext fiber per CUDA thread of a block; a cooperative scheduler runs every
// ready fiber (in thread_order) until it finishes or waits at a barrier, then releases a barrier
// once every thread it concerns waits there. Threads waiting at different barriers, or waiting
// while another thread of the block (or warp) has exited, are reported as barrier divergence.
// Both modes run on a fiber stack with a guard page, so a failure can switch straight back.
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
extern "C" void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom,
                                               unsigned long size);
extern "C" void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                                unsigned long* size_old);
#endif

namespace cuda_emu {

enum Status { OK = 0, FAILED = 1, NEEDS_FIBERS = 2 };
enum Mode { SIMPLE = 0, FIBER = 1 };
enum FiberState { READY, AT_BARRIER, AT_WARP, DONE };

struct Config {                       // mirrored by gpu/emulator/launcher.py (ctypes)
    unsigned int grid[3], block[3];
    int mode;
    const long long* block_order;     // linear block ids in run order
    const int* thread_order;          // linear thread ids in run order
    long long stack_bytes;            // per fiber
    char* error;                      // message buffer for status FAILED
    long long error_bytes;
};

struct Fiber {
    ucontext_t context;
    char* stack;
    int state;
    const char* what;                 // the barrier it waits at: name, file, line
    const char* file;
    int line;
};

struct Launch {
    const Config* config;
    void (*invoke)(void* kernel, void** args);
    void* kernel;
    void** args;
    ucontext_t main;
    const void* main_stack_bottom;
    unsigned long main_stack_size;
    Fiber* fibers;                    // one per thread (fiber mode) or one runner (simple mode)
    int nthreads;
    int current;                      // linear thread id running now
    int status;
    unsigned long long slots[1024];   // warp exchange values by linear thread id
    char* stacks;
    unsigned long stacks_bytes;
};

inline thread_local Launch* active = nullptr;

inline long long product(const unsigned int* d) { return (long long)d[0] * d[1] * d[2]; }

inline void set_index(uint3& index, long long linear, const unsigned int* dim) {
    index.x = linear % dim[0];
    index.y = linear / dim[0] % dim[1];
    index.z = linear / ((long long)dim[0] * dim[1]);
}

// ---- switching stacks (with AddressSanitizer's fiber annotations when it is on) ---------------
inline void switch_to_fiber(Launch* L, Fiber* f) {
#if defined(__SANITIZE_ADDRESS__)
    void* fake_stack = nullptr;
    __sanitizer_start_switch_fiber(&fake_stack, f->stack, L->config->stack_bytes);
    swapcontext(&L->main, &f->context);
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
    swapcontext(&L->main, &f->context);
#endif
}

inline void switch_to_main(Launch* L, Fiber* f, bool for_good) {
#if defined(__SANITIZE_ADDRESS__)
    void* fake_stack = nullptr;
    __sanitizer_start_switch_fiber(for_good ? nullptr : &fake_stack, L->main_stack_bottom,
                                   L->main_stack_size);
    swapcontext(&f->context, &L->main);
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
    (void)for_good;
    swapcontext(&f->context, &L->main);
#endif
}

inline void entered_fiber(Launch* L) {
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(nullptr, &L->main_stack_bottom, &L->main_stack_size);
#else
    (void)L;
#endif
}

inline Fiber* running_fiber(Launch* L) {
    return L->config->mode == FIBER ? &L->fibers[L->current] : &L->fibers[0];
}

[[noreturn]] inline void fail(int status, const char* format, const char* what, const char* file,
                              int line) {
    Launch* L = active;
    L->status = status;
    snprintf(L->config->error, L->config->error_bytes, format, what, file, line,
             blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    switch_to_main(L, running_fiber(L), true);
    __builtin_unreachable();
}

// ---- what the prelude calls ------------------------------------------------------------------
inline void wait(int state, const char* what, const char* file, int line) {
    Launch* L = active;
    if (L->config->mode != FIBER)
        fail(NEEDS_FIBERS, "%s at %s:%d needs fiber mode (block (%u,%u,%u) thread (%u,%u,%u))",
             what, file, line);
    Fiber* f = &L->fibers[L->current];
    f->state = state;
    f->what = what;
    f->file = file;
    f->line = line;
    switch_to_main(L, f, false);
}

void block_barrier(const char* file, int line) { wait(AT_BARRIER, "__syncthreads()", file, line); }

unsigned long long warp_exchange(unsigned long long value, int source_lane, const char* what,
                                 unsigned int mask, const char* file, int line) {
    Launch* L = active;
    if (mask != 0xffffffffu)
        fail(FAILED, "%s at %s:%d: only the full mask 0xffffffff is supported "
             "(block (%u,%u,%u) thread (%u,%u,%u))", what, file, line);
    if (L->nthreads % warpSize != 0)
        fail(FAILED, "%s at %s:%d in a block that is not a whole number of 32-thread warps "
             "(block (%u,%u,%u) thread (%u,%u,%u))", what, file, line);
    if (L->config->mode != FIBER)
        wait(AT_WARP, what, file, line);   // fails with NEEDS_FIBERS
    const int warp_start = L->current - L->current % warpSize;
    L->slots[L->current] = value;
    wait(AT_WARP, what, file, line);                 // every lane has written its value
    const unsigned long long result = L->slots[warp_start + source_lane];
    wait(AT_WARP, what, file, line);                 // every lane has read before slots change
    return result;
}

void trap(const char* file, int line) {
    fail(FAILED, "%s at %s:%d (block (%u,%u,%u) thread (%u,%u,%u))", "__trap()", file, line);
}

// ---- the two modes ---------------------------------------------------------------------------
inline void run_simple() {                            // body of the single runner fiber
    Launch* L = active;
    entered_fiber(L);
    const Config* c = L->config;
    const long long nblocks = product(c->grid);
    for (long long b = 0; b < nblocks; ++b) {
        set_index(blockIdx, c->block_order[b], c->grid);
        for (int t = 0; t < L->nthreads; ++t) {
            L->current = c->thread_order[t];
            set_index(threadIdx, L->current, c->block);
            L->invoke(L->kernel, L->args);
        }
    }
    L->fibers[0].state = DONE;
    switch_to_main(L, &L->fibers[0], true);
}

inline void run_thread() {                            // body of one fiber in fiber mode
    Launch* L = active;
    entered_fiber(L);
    L->invoke(L->kernel, L->args);
    L->fibers[L->current].state = DONE;
    switch_to_main(L, &L->fibers[L->current], true);
}

inline void start_fiber(Launch* L, Fiber* f, char* stack, void (*body)()) {
    f->stack = stack;
    f->state = READY;
    getcontext(&f->context);
    f->context.uc_stack.ss_sp = stack;
    f->context.uc_stack.ss_size = L->config->stack_bytes;
    f->context.uc_link = nullptr;
    makecontext(&f->context, body, 0);
}

inline void describe(char* out, long long size, int t, const Fiber& f) {
    if (f.state == DONE)
        snprintf(out, size, "thread %d has exited", t);
    else
        snprintf(out, size, "thread %d waits at %s (%s:%d)", t, f.what, f.file, f.line);
}

// Release the barrier every waiting thread agrees on; false when none can be released.
inline bool release(Launch* L) {
    bool released = false;
    for (int w = 0; w < L->nthreads / warpSize; ++w) {   // a warp whose lanes all wait at one shuffle
        Fiber* lanes = &L->fibers[w * warpSize];
        bool same = true;
        for (int i = 0; i < warpSize && same; ++i)
            same = lanes[i].state == AT_WARP && lanes[i].line == lanes[0].line
                   && strcmp(lanes[i].file, lanes[0].file) == 0;
        if (same) {
            for (int i = 0; i < warpSize; ++i) lanes[i].state = READY;
            released = true;
        }
    }
    if (released) return true;
    const Fiber& first = L->fibers[0];
    for (int t = 0; t < L->nthreads; ++t) {
        const Fiber& f = L->fibers[t];
        if (f.state != AT_BARRIER || f.line != first.line || strcmp(f.file, first.file) != 0)
            return false;
    }
    for (int t = 0; t < L->nthreads; ++t) L->fibers[t].state = READY;
    return true;
}

inline void report_divergence(Launch* L) {
    int a = 0, b = 0;                                 // two threads that disagree
    for (int t = 1; t < L->nthreads; ++t) {
        const Fiber &f = L->fibers[t], &g = L->fibers[a];
        if (f.state != g.state || (f.state != DONE && (f.line != g.line || strcmp(f.file, g.file)))) {
            b = t;
            break;
        }
    }
    if (L->fibers[a].state == DONE) { int s = a; a = b; b = s; }
    char first[300], second[300];
    describe(first, sizeof first, a, L->fibers[a]);
    describe(second, sizeof second, b, L->fibers[b]);
    L->status = FAILED;
    snprintf(L->config->error, L->config->error_bytes,
             "barrier divergence (deadlock) in block (%u,%u,%u): %s, but %s",
             blockIdx.x, blockIdx.y, blockIdx.z, first, second);
}

inline void run_fibers(Launch* L) {
    const Config* c = L->config;
    const long long nblocks = product(c->grid);
    for (long long b = 0; b < nblocks && L->status == OK; ++b) {
        set_index(blockIdx, c->block_order[b], c->grid);
        for (int t = 0; t < L->nthreads; ++t)
            start_fiber(L, &L->fibers[t], L->stacks + t * (c->stack_bytes + 4096) + 4096, run_thread);
        for (;;) {
            bool all_done = true;
            for (int k = 0; k < L->nthreads && L->status == OK; ++k) {
                const int t = c->thread_order[k];
                if (L->fibers[t].state != READY) continue;
                L->current = t;
                set_index(threadIdx, t, c->block);
                switch_to_fiber(L, &L->fibers[t]);
            }
            if (L->status != OK) return;
            for (int t = 0; t < L->nthreads; ++t) all_done = all_done && L->fibers[t].state == DONE;
            if (all_done) break;
            if (!release(L)) return report_divergence(L);
        }
    }
}

// Guarded stacks: [guard page | stack] per fiber, the guard below each stack.
inline bool map_stacks(Launch* L, int count) {
    const long long each = L->config->stack_bytes + 4096;
    L->stacks_bytes = count * each;
    void* p = mmap(nullptr, L->stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    L->stacks = (char*)p;
    for (int i = 0; i < count; ++i) mprotect(L->stacks + i * each, 4096, PROT_NONE);
    return true;
}

inline int run_launch(void (*invoke)(void*, void**), void* kernel, void** args, const Config* c) {
    Launch L = {};
    L.config = c;
    L.invoke = invoke;
    L.kernel = kernel;
    L.args = args;
    L.nthreads = (int)product(c->block);
    gridDim = dim3(c->grid[0], c->grid[1], c->grid[2]);
    blockDim = dim3(c->block[0], c->block[1], c->block[2]);
    const int nfibers = c->mode == FIBER ? L.nthreads : 1;
    if (L.nthreads < 1 || L.nthreads > 1024 || !map_stacks(&L, nfibers)) {
        snprintf(c->error, c->error_bytes, "cannot run %d threads per block", L.nthreads);
        return FAILED;
    }
    Fiber* fibers = new Fiber[nfibers]();
    L.fibers = fibers;
    Launch* outer = active;
    active = &L;
    if (c->mode == FIBER) {
        run_fibers(&L);
    } else {
        start_fiber(&L, &fibers[0], L.stacks + 4096, run_simple);
        switch_to_fiber(&L, &fibers[0]);
    }
    active = outer;
    delete[] fibers;
    munmap(L.stacks, L.stacks_bytes);
    return L.status;
}

// ---- unpacking void** args into the kernel's parameters ---------------------------------------
template <int... I> struct Indices {};
template <int N, int... I> struct MakeIndices : MakeIndices<N - 1, N - 1, I...> {};
template <int... I> struct MakeIndices<0, I...> { using type = Indices<I...>; };

template <typename... P>
struct Invoker {
    template <int... I>
    static void call(void (*kernel)(P...), void** args, Indices<I...>) {
        kernel(*static_cast<P*>(args[I])...);
    }
    static void invoke(void* kernel, void** args) {
        call(reinterpret_cast<void (*)(P...)>(kernel), args, typename MakeIndices<sizeof...(P)>::type{});
    }
};

template <typename... P>
int run(void (*kernel)(P...), void** args, const Config* config) {
    return run_launch(&Invoker<P...>::invoke, reinterpret_cast<void*>(kernel), args, config);
}

// ---- parameter types as C spelling, for the launcher's own argument check ------------------------
template <typename T> struct TypeName { static void write(char* out, int size) { snprintf(out, size, "?"); } };
#define CUDA_EMU_TYPE_NAME(T) \
    template <> struct TypeName<T> { static void write(char* out, int size) { snprintf(out, size, #T); } };
CUDA_EMU_TYPE_NAME(bool)
CUDA_EMU_TYPE_NAME(char)
CUDA_EMU_TYPE_NAME(signed char)
CUDA_EMU_TYPE_NAME(unsigned char)
CUDA_EMU_TYPE_NAME(short)
CUDA_EMU_TYPE_NAME(unsigned short)
CUDA_EMU_TYPE_NAME(int)
CUDA_EMU_TYPE_NAME(unsigned int)
CUDA_EMU_TYPE_NAME(long)
CUDA_EMU_TYPE_NAME(unsigned long)
CUDA_EMU_TYPE_NAME(long long)
CUDA_EMU_TYPE_NAME(unsigned long long)
CUDA_EMU_TYPE_NAME(float)
CUDA_EMU_TYPE_NAME(double)
#undef CUDA_EMU_TYPE_NAME
template <typename T> struct TypeName<const T> {
    static void write(char* out, int size) { int n = snprintf(out, size, "const "); TypeName<T>::write(out + n, size - n); }
};
template <typename T> struct TypeName<T*> {
    static void write(char* out, int size) { TypeName<T>::write(out, size); strncat(out, "*", size - strlen(out) - 1); }
};

template <typename... P>
int signature(void (*)(P...), char* out, int size) {
    out[0] = '\0';
    char one[64];
    using Writer = void (*)(char*, int);
    const Writer writers[] = {nullptr, &TypeName<P>::write...};   // nullptr: no empty array
    for (unsigned i = 1; i < sizeof(writers) / sizeof(writers[0]); ++i) {
        writers[i](one, sizeof one);
        if (i > 1) strncat(out, ",", size - strlen(out) - 1);
        strncat(out, one, size - strlen(out) - 1);
    }
    return (int)sizeof...(P);
}

}  // namespace cuda_emu
