"""Developer tools for the CUDA kernels (kernel_report: registers and spills through nvcc)."""
