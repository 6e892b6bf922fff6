"""The pruning examples run as a user runs them (subprocesses, outputs checked on disk): a reduced
lottery run and its resume after an interruption, a refused resume into another run's directory,
a reduced one-shot run, and (slow) the one-shot quick preset's robustness claim on digits."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ref import checkpoint
from ref.prune import lottery
from ref.prune.masks import masks_in_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def example(script, *args, cwd, check=True, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout, check=check)


def report_of(out):
    """A run directory's report.json."""
    return json.loads((out / "report.json").read_text())


def resume_after(script, args, out, phase, epoch, later=(), *, cwd):
    """Rerun `script` with `args` --out out --resume as if killed in `phase` after `epoch`: the
    phase's last.h5 replaced by its epoch_<epoch>.h5, the later phases' directories and final.h5
    removed; asserts the run says it resumed after that epoch. Returns the new report.json."""
    shutil.copy(out / phase / f"epoch_{epoch:03d}.h5", out / phase / "last.h5")
    for name in later:
        shutil.rmtree(out / name)
    (out / "final.h5").unlink(missing_ok=True)
    again = example(script, *args, "--out", str(out), "--resume", cwd=cwd)
    assert f"after epoch {epoch}" in again.stderr
    return report_of(out)


def without_times(history):
    """Training records without their timings (which differ between runs)."""
    return [{k: v for k, v in h.items() if k not in ("time_s", "examples_per_s")}
            for h in history]


LOTTERY = ["--preset", "quick", "--epochs", "2", "--rounds", "2", "--iwi-epochs", "1",
           "--eval-n", "60", "--val-size", "60", "--train-n", "320"]


def test_lottery_rounds_follow_the_schedule_and_resume(tmp_path):
    out = tmp_path / "run"
    first = example("cifar_lottery.py", *LOTTERY, "--out", str(out), cwd=tmp_path)
    report = report_of(out)
    assert [row["phase"] for row in report["table"]] == ["round_0", "round_1", "round_2", "iwi"]
    nominal = lottery.round_sparsities(0.5, 2)
    for row, want in zip(report["table"], nominal):
        assert row["nominal"] == want
        assert abs(row["sparsity"] - want) < 0.01      # the strict > drops a weight or two more
    assert report["table"][-1]["sparsity"] < 0.05      # IWI trains every weight again
    for name in ("init.h5", "report.json", "training.png", "sparsity.png", "weights_iwi.png",
                 "round_2/best.h5", "iwi/last.h5"):
        assert (out / name).exists(), name
    assert "round_2" in first.stdout and "pgd20" in first.stdout
    # the ticket: round 2's masks with theta_0 at the kept positions before its training
    init = checkpoint.read(out / "init.h5")["parameters"]
    masks = masks_in_checkpoint(checkpoint.read(out / "round_2" / "last.h5"))
    assert len(masks) == 6 and all(0 < M.mean() < 1 for M in masks.values())
    for name, M in masks.items():
        assert init[name].shape == M.shape
    # interrupted inside round 1: its last.h5 is epoch 1's, round 2 and IWI never started
    resumed = resume_after("cifar_lottery.py", LOTTERY, out, "round_1", 1, ("round_2", "iwi"),
                           cwd=tmp_path)
    assert resumed["table"] == report["table"]
    for phase in ("round_1", "round_2", "iwi"):
        assert [h["train_loss"] for h in resumed["history"][phase]] == \
            [h["train_loss"] for h in report["history"][phase]]


def test_resume_into_another_runs_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    args = ["--preset", "quick", "--epochs", "1", "--rounds", "1", "--iwi-epochs", "1",
            "--eval-n", "30", "--val-size", "30", "--train-n", "128", "--out", str(out)]
    example("cifar_lottery.py", *args, cwd=tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    refused = example("cifar_lottery.py", *args, "--rate", "0.3", "--resume", cwd=tmp_path,
                      check=False)
    assert refused.returncode != 0
    assert "belongs to another run" in refused.stderr and "--rate 0.5 there, 0.3 now" in \
        refused.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_one_shot_methods_on_a_reduced_run(tmp_path):
    out = tmp_path / "run"
    example("cifar_oneshot.py", "--preset", "quick", "--epochs", "2", "--finetune-epochs", "1",
            "--keep", "0.5", "--eval-n", "60", "--val-size", "60", "--train-n", "320",
            "--out", str(out), cwd=tmp_path)
    report = report_of(out)
    rows = report["table"]
    assert [(row["method"], row["keep"]) for row in rows] == [
        ("dense", None), ("lup", 0.5), ("gup", 0.5), ("fp", 0.5), ("ns", 0.5)]
    by_method = {row["method"]: row for row in rows}
    for method in ("lup", "gup"):            # the strict > rule prunes a weight more per layer
        assert 0.5 <= by_method[method]["sparsity"] < 0.52
    assert by_method["fp"]["sparsity"] > 0.2 and by_method["ns"]["sparsity"] > 0.2
    for method in ("lup", "gup", "fp", "ns"):
        phase = f"{method}_keep0.5"
        saved = checkpoint.read(out / phase / "best.h5")
        for name, M in masks_in_checkpoint(saved).items():   # fine-tuning kept the zeros
            assert np.all(saved["parameters"][name][M == 0] == 0)
        layers = report["sparsity"][phase]["layers"]
        zeros = sum(int((saved["parameters"][name] == 0).sum()) for name in layers)
        size = sum(saved["parameters"][name].size for name in layers)
        assert by_method[method]["sparsity"] == pytest.approx(zeros / size, abs=1e-12)


@pytest.mark.slow
def test_one_shot_quick_preset_keeps_robustness_at_90_percent_sparsity(tmp_path):
    """Digits, small_cnn: adversarially fine-tuned GUP at keep 0.1 stays within 10 points of the
    dense adversarially trained model under PGD-20 (eps 0.1); LUP, FP and NS are measured."""
    result = example("cifar_oneshot.py", "--preset", "quick", "--out", str(tmp_path / "run"),
                     cwd=tmp_path, timeout=3600)
    print(result.stdout[result.stdout.index("one-shot pruning"):])
    rows = report_of(tmp_path / "run")["table"]
    dense = next(row for row in rows if row["method"] == "dense")
    gup = next(row for row in rows if row["method"] == "gup" and row["keep"] == 0.1)
    assert gup["sparsity"] >= 0.9
    assert gup["pgd20"] >= dense["pgd20"] - 0.10
