// Planted bug: one thread per element but no grid-stride loop, so a grid smaller than
// ceil(n / blockDim) leaves elements unwritten (the loader caps the grid; one-block re-runs show it).
template <typename T>
__global__ void scale(const T* x, T* y, const long long n, const T alpha)
{
    const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) y[i] = alpha * x[i];
}
