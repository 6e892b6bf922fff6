"""What only a real CUDA device can show (marker `gpu`; run with `pytest -m gpu` on a GPU machine).

The rest of the suite already runs the gpu backend on real CuPy when a device is present (and on
the emulator otherwise); these tests add what the emulator cannot reproduce: cuBLAS float32
numerics (no TF32 unless gpu.set_tf32 asks for it), grids capped at the loader's MAX_BLOCKS on
large arrays, a whole ResNet-18 training step at full size against ref, and the GPU benchmark
script running end to end.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpu
import ref
import ref.models
from gpu import kernels
from ref import optim

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(gpu.EMULATED, reason="needs a CUDA device (GPU_EMULATOR is on)")]
ROOT = Path(__file__).parent.parent


def test_float32_matmul_is_not_tf32():
    """cuBLAS float32 products keep float32 accuracy (TF32 would err ~1e-3 relative)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 512, 512)).astype(np.float32)
    got = gpu.cupy.asnumpy(gpu.cupy.asarray(a) @ gpu.cupy.asarray(b))
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want))


def test_set_tf32_switches_float32_products_to_tf32_and_back():
    """gpu.set_tf32(True): TF32's ~1e-3 relative error shows (on Ampere and later); off: gone."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 512, 512)).astype(np.float32)
    want = a.astype(np.float64) @ b.astype(np.float64)
    errors = []
    for enabled in (True, False):
        gpu.set_tf32(enabled)
        got = gpu.cupy.asnumpy(gpu.cupy.asarray(a) @ gpu.cupy.asarray(b))
        errors.append(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    assert errors[0] > 1e-4 > errors[1], errors


def test_pgd_step_covers_arrays_larger_than_the_grid():
    """More elements than MAX_BLOCKS * block threads: the grid-stride loop does the rest."""
    n = kernels.MAX_BLOCKS * 256 * 2 + 12345
    rng = np.random.default_rng(1)
    x0 = rng.random(n).astype(np.float32)                                  # (n,)
    x = np.clip(x0 + rng.uniform(-0.05, 0.05, n).astype(np.float32), 0, 1)  # (n,)
    g = rng.standard_normal(n).astype(np.float32)                          # (n,)
    want = ref.ops.pgd_step(x, g, x0, 0.01, 0.03)
    got = gpu.ops.pgd_step(*(gpu.asarray(a) for a in (x, g, x0)), 0.01, 0.03)
    np.testing.assert_allclose(gpu.cupy.asnumpy(got), want, rtol=0, atol=1e-7)


def test_resnet18_training_step_matches_ref():
    """One SGD step of ResNet-18 (batch 16, float32) on the device and on ref from the same
    weights: same loss, and the updated weights agree to float32 accuracy."""
    rng = np.random.default_rng(2)
    x = rng.random((16, 3, 32, 32), dtype=np.float32)                      # (n, 3, 32, 32)
    y = rng.integers(0, 10, 16)                                            # (n,)
    models = {name: ref.models.resnet18(num_classes=10, rng=0).to(name).train()
              for name in ("numpy", "gpu")}
    losses, states = {}, {}
    for name, model in models.items():
        backend = gpu if name == "gpu" else ref
        sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        logits = model(backend.Tensor(backend.asarray(x)))
        loss = logits.ops.cross_entropy(logits, backend.asarray(y))
        loss.backward()
        sgd.step()
        losses[name] = float(loss.data)
        states[name] = {k: ref.asarray(v) for k, v in model.state_dict().items()}
    assert losses["gpu"] == pytest.approx(losses["numpy"], rel=1e-5)
    for key, want in states["numpy"].items():
        np.testing.assert_allclose(states["gpu"][key], want, rtol=1e-3, atol=1e-5, err_msg=key)


def test_gpu_bench_runs():
    result = subprocess.run([sys.executable, "bench/gpu_bench.py", "--batch", "8", "--repeat", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
