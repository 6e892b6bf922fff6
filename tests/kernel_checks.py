"""What the kernel tests of conv.cu, pool.cu and norm.cu share: dtypes and block sizes to draw,
a launch under the emulator's re-run checks, and a tolerance per dtype."""
import numpy as np
from hypothesis import strategies as st

import gpu
from gpu.emulator import options
from gpu.kernels import launch

cp = gpu.cupy
DTYPES = st.sampled_from([np.float32, np.float64])
BLOCKS = st.sampled_from([32, 64, 256])
RTOL = {np.float32: 1e-4, np.float64: 1e-10}


def assert_close(got, want, dtype):
    np.testing.assert_allclose(cp.asnumpy(got), want, rtol=RTOL[dtype], atol=RTOL[dtype])


def checked():
    """Every re-run check of the emulator: reversed and shuffled block and thread order, one
    block (ignored on a real GPU)."""
    return options.checks("order", "one_block")


def run(file, name, dtype, total, args, block=256):
    """launch() under checked()."""
    with checked():
        launch(file, name, dtype, total, args, block=block)
