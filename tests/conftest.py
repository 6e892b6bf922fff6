"""Test settings: hypothesis profiles, a seeded rng, BLAS pinned for parallel workers, and the GPU
emulator switched on when no CUDA device is present (so the gpu backend is tested on every run)."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings


def _has_cuda_device():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:   # no cupy, no driver, or no device
        return False


if "GPU_EMULATOR" not in os.environ and not _has_cuda_device():
    os.environ["GPU_EMULATOR"] = "1"

settings.register_profile("dev", max_examples=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
# deep: random draws, several hundred per test; run before adding or changing a property test
settings.register_profile("deep", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
