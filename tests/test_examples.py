"""examples/cifar_at.py run as a user runs it: a subprocess from the command line, its outputs
checked on disk. The full quick preset runs from a copy of the project's files (as a fresh
clone would hold them) and is slow; a one-epoch run and its resume stay in the default run."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cifar_at(*args, cwd, root=ROOT, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(root), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(root / "examples" / "cifar_at.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=True)


def check_outputs(out, epochs, stdout):
    names = {f"epoch_{e:03d}.h5" for e in range(1, epochs + 1)}
    names |= {"last.h5", "best.h5", "report.json", "training.png", "accuracy_vs_eps.png"}
    assert names <= set(os.listdir(out))
    for png in ("training.png", "accuracy_vs_eps.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    assert [h["epoch"] for h in report["history"]] == list(range(1, epochs + 1))
    evaluation = report["evaluation"]
    assert "evaluation on" in stdout and "accuracy vs eps" in stdout
    for name, value in evaluation["accuracy"].items():
        assert f"{name:<12}{value:>10.4f}" in stdout
    return report


def test_one_epoch_then_resume(tmp_path):
    out = tmp_path / "run"
    quick = ["--preset", "quick", "--out", str(out), "--eval-n", "60",
             "--eval-attacks", "fgsm,pgd10"]
    first = cifar_at(*quick, "--epochs", "2", "--val-size", "100", cwd=tmp_path)
    report = check_outputs(out, 2, first.stdout)
    assert report["args"]["dataset"] == "digits" and report["args"]["arch"] == "small_cnn"
    assert report["evaluation"]["n"] == 60
    (out / "epoch_002.h5").unlink()
    shutil.copy(out / "epoch_001.h5", out / "last.h5")           # as if killed after epoch 1
    again = cifar_at(*quick, "--epochs", "2", "--val-size", "100", "--resume", cwd=tmp_path)
    assert "resumed from" in again.stderr and "after epoch 1" in again.stderr
    resumed = check_outputs(out, 2, again.stdout)
    assert resumed["history"][1]["train_loss"] == report["history"][1]["train_loss"]
    assert resumed["evaluation"]["accuracy"] == report["evaluation"]["accuracy"]


@pytest.mark.slow
def test_quick_preset_from_a_copy_of_the_project(tmp_path):
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    clone = tmp_path / "clone"
    for name in files:
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, clone / name)
    work = tmp_path / "work"
    work.mkdir()
    result = cifar_at("--preset", "quick", cwd=work, root=clone)
    report = check_outputs(work / "runs" / "digits_small_cnn_at", 8, result.stdout)
    assert report["evaluation"]["sanity_failed"] == []
    assert report["evaluation"]["accuracy"]["clean"] >= 0.85
    assert report["evaluation"]["accuracy"]["pgd10"] >= 0.5
    print(f"quick preset: {report['time_s']:.1f} s, accuracies "
          f"{report['evaluation']['accuracy']}")
