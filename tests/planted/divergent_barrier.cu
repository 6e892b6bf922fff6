// Planted bug: threads past the end return before a barrier the others wait at (undefined
// behaviour in CUDA: it hangs or corrupts shared memory).
// block: 64
template <typename T>
__global__ void shift_left(const T* x, T* y, const int n)
{
    __shared__ T tile[64];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    tile[threadIdx.x] = x[i];
    __syncthreads();
    y[i] = threadIdx.x + 1 < blockDim.x && i + 1 < n ? tile[threadIdx.x + 1] : x[i];
}
