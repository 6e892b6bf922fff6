"""Kernel launches and host synchronisations per training step, counted on the emulator
(gpu/tools/counter.py), kept under ceilings written here; and what the counter counts.

The counts do not depend on the batch size, so the steps run at batch 2. A ceiling is the
measured count (in the comment) with a little room; a change that raises a count above its
ceiling must lower it again or move the ceiling here, in review, with the new measurement.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpu
import ref
from gpu.tools import counter
from ref import attacks, objectives, optim, train
from ref.nn import Flatten, Linear, Sequential

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not gpu.EMULATED, reason="the counter instruments the emulator")
cp = gpu.cupy

# one Madry PGD-10 step (attack, training forward + backward, SGD), batch 2, the first one (later
# steps make the same launches and syncs; only the first allocates the momentum buffers)
SMALL_CNN = dict(launches=860, syncs=2)     # measured: 838 launches, 2 syncs (at first: 2553, 25)
RESNET18 = dict(launches=2920, syncs=2)     # measured: 2892 launches, 2 syncs (at first: 7048, 25)
# one natural step of ResNet-18 (training forward + backward, SGD: 62 of the launches)
RESNET18_NATURAL = dict(launches=480, syncs=1)   # measured: 467, 1 (at first: 1019)


def madry_counts(model):
    return counter.count_step(warmup=0, model=model, objective="madry", batch=2, steps=10)


def counted(function):
    with counter.counting() as counts:
        function()
    return counts


def check_ceilings(counts, ceilings):
    assert counts.launches <= ceilings["launches"], counts.table()
    assert counts.syncs <= ceilings["syncs"], counts.table(by="call")


# ---- ceilings ------------------------------------------------------------------------------------
def test_small_cnn_madry_step_stays_under_its_ceilings():
    check_ceilings(madry_counts("small_cnn"), SMALL_CNN)


def test_resnet18_madry_step_stays_under_its_ceilings():
    check_ceilings(madry_counts("resnet18"), RESNET18)


def test_resnet18_natural_step_stays_under_its_ceilings():
    counts = counter.count_step(warmup=0, model="resnet18", objective="natural", batch=2)
    check_ceilings(counts, RESNET18_NATURAL)


def test_a_per_parameter_sync_in_the_update_breaks_the_sync_ceiling(monkeypatch):
    fused = gpu.ops.sgd_update_

    def reading(p, *args, **kwargs):
        fused(p, *args, **kwargs)
        assert np.isfinite(float(p.sum()))   # the planted read: one sync per parameter
    monkeypatch.setattr(gpu.ops, "sgd_update_", reading)
    counts = madry_counts("small_cnn")
    assert counts.syncs > SMALL_CNN["syncs"]
    parameters = len(ref.models.small_cnn().parameters())
    assert counts.rows()["ref.optim.optimizers SGD._update"]["sync"] == parameters


def test_an_unfused_per_parameter_update_breaks_the_launch_ceiling(monkeypatch):
    monkeypatch.setattr(gpu.ops, "sgd_update_", ref.ops.update.sgd_update_)   # operators on cupy
    counts = madry_counts("small_cnn")
    assert counts.launches > SMALL_CNN["launches"]
    parameters = len(ref.models.small_cnn().parameters())
    assert counts.rows()["ref.ops.update sgd_update_"]["cupy"] >= 5 * parameters


# ---- one read per attack, per loss check, per log_every training steps ---------------------------
def test_the_training_loop_reads_its_losses_once_every_log_every_batches():
    model = Sequential(Flatten(), Linear(12, 3, rng=np.random.default_rng(0))).to("gpu")
    data = np.random.default_rng(1)
    x, y = data.random((16, 3, 2, 2), dtype=np.float32), data.integers(0, 3, 16)
    sgd = optim.SGD(model.parameters(), 0.1)
    with counter.counting() as counts:
        history = train.fit(model, objectives.get("natural"), sgd, None,
                            [(x[i:i + 2], y[i:i + 2]) for i in range(0, 16, 2)], 1, log_every=3,
                            progress=False)
    assert counts.rows()["ref.train _read"]["sync"] == 3          # after batches 3, 6 and 8
    assert counts.syncs == 3 + 8                                  # and each step's label check
    assert 0 <= history[0]["train_acc"] <= 1 and np.isfinite(history[0]["train_loss"])


def test_cross_entropy_reads_once_to_check_its_labels_and_not_at_all_when_told():
    z, y = gpu.Tensor(cp.zeros((2, 3), dtype=cp.float32)), cp.asarray([0, 2])
    assert counted(lambda: gpu.ops.cross_entropy(z, y)).syncs == 1
    assert counted(lambda: gpu.ops.cross_entropy(z, y, check=False)).syncs == 0


@pytest.mark.parametrize("attack", [
    lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.02, 5, rng=np.random.default_rng(0)),
    lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.02, 5, loss="kl", restarts=2, select="best",
                                rng=np.random.default_rng(0)),
    lambda m, x, y: attacks.apgd_ce(m, x, y, 0.1, 10, rng=np.random.default_rng(0))])
def test_an_attack_reads_from_the_device_once(attack):
    model = Sequential(Flatten(), Linear(12, 3, rng=np.random.default_rng(0))).to("gpu")
    data = np.random.default_rng(1)
    x, y = cp.asarray(data.random((4, 3, 2, 2))), cp.asarray(data.integers(0, 3, 4))
    assert counted(lambda: attack(model, x, y)).syncs == 1


def test_pgd_uploads_only_its_random_start():
    """A host -> device copy from pageable memory waits for the device's queue, so none per
    step: the step size and radius are filled on the device; one upload per random start."""
    model = Sequential(Flatten(), Linear(12, 3, rng=np.random.default_rng(0))).to("gpu")
    data = np.random.default_rng(1)
    x, y = cp.asarray(data.random((4, 3, 2, 2))), cp.asarray(data.integers(0, 3, 4))
    for restarts in (1, 3):
        counts = counted(lambda: attacks.pgd(model, x, y, 0.1, 0.02, 7, restarts=restarts,
                                             rng=np.random.default_rng(0)))
        assert counts.total("upload") == restarts, counts.table(by="call")


# ---- what counts as what -------------------------------------------------------------------------
def test_views_launch_nothing_and_results_launch_one_kernel_each():
    a = cp.ones((4, 6), dtype=cp.float32)
    views = counted(lambda: (a.reshape(6, 4), a.T, a[1:3], cp.broadcast_to(a, (2, 4, 6)),
                             cp.asarray(a), a.astype(cp.float32, copy=False)))
    assert views.summary() == dict(launches=0, kernel=0, cupy=0, alloc=0, sync=0, upload=0,
                                   bytes=0)
    arithmetic = counted(lambda: (a + 1) * a)
    assert arithmetic.summary()["cupy"] == 2 and arithmetic.bytes == 2 * a.nbytes
    in_place = counted(lambda: a.__iadd__(1))
    assert in_place.summary()["cupy"] == 1 and in_place.bytes == 0
    memory = counted(lambda: cp.empty_like(a))
    assert memory.launches == 0 and memory.summary()["alloc"] == 1 and memory.bytes == a.nbytes


def test_reads_from_the_device_are_syncs_and_host_data_is_an_upload():
    a = cp.arange(6)
    reads = counted(lambda: (float(a.sum()), int(a[0]), a.get(), cp.asnumpy(a), a.tolist(),
                             bool(a[1] > 0), a.max().item()))
    assert reads.syncs == 7 and reads.summary()["cupy"] == 3   # sum, >, max
    sized = counted(lambda: (a[a > 2], cp.nonzero(a)))
    assert sized.syncs == 2 and sized.summary()["cupy"] == 3
    assert counted(lambda: cp.asarray(np.zeros(3))).summary()["upload"] == 1


def test_own_kernels_are_counted_by_name_and_events_by_op():
    x = cp.full((2, 3), 0.5, dtype=cp.float32)
    counts = counted(lambda: gpu.ops.pgd_step(x, x - 0.25, x, 0.1, 0.2))
    assert counts.rows("call")["kernel pgd_step<float>"]["kernel"] == 1
    assert set(counts.rows()) == {"gpu.ops.update pgd_step", "gpu.ops.update _per_sample",
                                  "other"}
    assert counts.rows()["gpu.ops.update pgd_step"]["kernel"] == 1


def test_nested_calls_count_once_and_the_patches_go_away():
    a = cp.arange(6.0)
    assert counted(lambda: cp.argmax(a)).summary()["cupy"] == 1
    add = cp.ndarray.__add__
    with counter.counting() as counts:
        assert cp.ndarray.__add__ is not add
    assert cp.ndarray.__add__ is add
    a + a
    assert counts.launches == 0


def test_the_command_line_counts_on_the_emulator_even_when_started_without_it():
    env = {k: v for k, v in os.environ.items() if k != "GPU_EMULATOR"}
    result = subprocess.run([sys.executable, "-m", "gpu.tools.counter", "--model", "small_cnn",
                             "--objective", "natural", "--warmup", "0", "--json"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    totals = json.loads(result.stdout)
    assert totals["launches"] == totals["kernel"] + totals["cupy"] > 0
    assert totals["sync"] == 1                                   # the label check of the loss


@pytest.mark.slow
def test_the_gpu_benchmark_counts_both_resnet18_steps_without_a_gpu():
    result = subprocess.run([sys.executable, "bench/gpu_bench.py", "--count-only"], cwd=ROOT,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr
    totals = [line for line in result.stdout.splitlines() if line.startswith("| **total** |")]
    assert len(totals) == 2
    assert int(totals[1].split("|")[2]) <= RESNET18["launches"]           # the Madry step
