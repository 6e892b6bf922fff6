// Planted bug: reads one element past the end of x (only the sanitizer build sees it).
template <typename T>
__global__ void next_difference(const T* x, T* y, const long long n)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        y[i] = x[i + 1] - x[i];
    }
}
