"""cupy.cuda.runtime on the emulated device."""


def getDeviceCount():  # noqa: N802 (CuPy's name)
    """0: there is no CUDA device, so code that looks for one does not mistake the emulator."""
    return 0


def deviceSynchronize():  # noqa: N802 (CuPy's name)
    """Nothing to wait for: emulated launches are synchronous."""
