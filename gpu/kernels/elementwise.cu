// Elementwise kernels of gpu/ops/elementwise.py that save launches over CuPy's operators.
//
// relu_backward: gx = gy where y > 0, else 0, with y = max(x, 0) saved by the forward pass
// ([y > 0] = [x > 0]: relu'(0) = 0, and a NaN x gives a NaN y, so gradient 0, as in ref). One
// thread per element of the three arrays, which the host passes in one common memory order.
template <typename T>
__global__ void relu_backward(const T* gy, const T* y, T* gx, const long long total)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        gx[t] = y[t] > T(0) ? gy[t] : T(0);
    }
}
