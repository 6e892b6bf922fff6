// Planted bug: a shared-memory tree reduction without the __syncthreads between its steps, so a
// thread reads partial sums that other threads have not written yet.
// block: 64
template <typename T>
__global__ void block_sum(const T* x, T* total, const long long n)
{
    __shared__ T partial[64];
    T acc = T(0);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        acc += x[i];
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int s = 32; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        // missing: __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(total, partial[0]);
}
