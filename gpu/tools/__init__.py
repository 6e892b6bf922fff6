"""Developer tools for the GPU backend: kernel_report (registers and spills of the CUDA kernels,
through nvcc) and counter (kernel launches, host synchronisations and device bytes per training
step, counted on the emulator)."""
