"""cupy.cuda on the emulated device: a Device that does nothing to synchronize (the emulator runs
every launch to completion before returning) and a runtime that reports no CUDA device."""
from gpu.emulator.fakecupy.cuda import runtime


class Device:
    """cupy.cuda.Device: device 0, the emulator."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def synchronize(self):
        """Nothing to wait for: emulated launches are synchronous."""

    def use(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __repr__(self):
        return f"<CUDA Device {self.id} (emulated)>"


def is_available():
    """False: no CUDA device (the emulator is not one)."""
    return False


def get_device_id():
    return 0


__all__ = ["Device", "get_device_id", "is_available", "runtime"]
