// Correct kernels in the project's style: the emulator must run them like a GPU and every
// re-run check (thread order, one block) must pass.

// y[i] = alpha * x[i] + b[i % m]; one thread per element, grid-stride loop.
template <typename T>
__global__ void axpb(const T* x, const T* b, T* y, const long long n, const int m, const T alpha)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        y[i] = alpha * x[i] + b[i % m];
    }
}

// total[0] += sum_i x[i]: grid-stride partial sums, a shared-memory tree with barriers, the last
// warp reduced with shuffles, one atomicAdd per block.
// block: 128
template <typename T>
__global__ void block_sum(const T* x, T* total, const long long n)
{
    __shared__ T partial[128];
    T acc = T(0);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        acc += x[i];
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int s = 64; s >= 32; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x < 32) {
        T v = partial[threadIdx.x];
        for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
        if (threadIdx.x == 0) atomicAdd(total, v);
    }
}

// y[i] = labels[i] < k ? max(x[i], 0) : -1 (mixed pointer types and an extern "C" entry point).
extern "C" __global__ void relu_where(const float* x, const int* labels, float* y, const int n,
                                      const int k)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        y[i] = labels[i] < k ? fmaxf(x[i], 0.0f) : -1.0f;
    }
}
