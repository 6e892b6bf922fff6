"""examples/evaluate.py run as a user runs it, on the checkpoint of a reduced
`examples/cifar_at.py --preset quick` run: the sparsity and evaluation tables, evaluation.json,
the same numbers through a PyTorch export of the model (--arch, from_torch), --backend gpu (under
GPU_EMULATOR=1 without a GPU), AutoAttack against our APGD-CE (slow, when pyautoattack is
installed), and the command-line errors of the examples (status 2, one line, no traceback)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import ref
from datasets import files
from ref import checkpoint
from ref.prune.magnitude import lup_masks
from ref.prune.masks import apply_masks, weights

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ["--eval-attacks", "fgsm,pgd10,apgd20"]
sys.path.insert(0, str(ROOT / "examples"))
import common  # noqa: E402
import evaluate as evaluate_example  # noqa: E402


def example(script, *args, cwd, check=True, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """best.h5 of a reduced quick run (1 epoch on 256 digits)."""
    out = tmp_path_factory.mktemp("at") / "run"
    example("cifar_at.py", "--preset", "quick", "--epochs", "1", "--train-n", "256",
            "--val-size", "50", "--eval-n", "20", "--eval-attacks", "fgsm", "--out", str(out),
            cwd=out.parent)
    return out / "best.h5"


def evaluate(checkpoint_path, *args, cwd):
    run = example("evaluate.py", str(checkpoint_path), "--eval-n", "30", *ATTACKS,
                  "--out", str(cwd / "eval"), *args, cwd=cwd)
    return run.stdout, json.loads((cwd / "eval" / "evaluation.json").read_text())


@pytest.fixture(scope="module")
def evaluated(trained):
    """(stdout, evaluation.json) of evaluate.py on the trained checkpoint."""
    return evaluate(trained, cwd=trained.parent)


def test_table_and_json(evaluated):
    stdout, report = evaluated
    result = report["evaluation"]
    assert report["args"]["arch"] == "small_cnn" and report["args"]["dataset"] == "digits"
    assert result["n"] == 30 and not result["sanity_failed"]
    assert "sparsity per layer" in stdout and "features.0.weight" in stdout
    for name, value in result["accuracy"].items():
        assert f"{name:<12}{value:>10.4f}" in stdout
    assert set(result["accuracy"]) == {"clean", "fgsm", "pgd10", "apgd20"}
    assert report["sparsity"]["global"]["sparsity"] == 0.0


def test_pruned_checkpoint_and_its_pytorch_export(trained, tmp_path):
    """A checkpoint with pruning masks (weight_mask buffers) and the same model exported as a
    PyTorch state dict (DataParallel prefix, {"state_dict": ...}), loaded through --arch, give
    the same table and sparsity."""
    torch = pytest.importorskip("torch")
    model = ref.models.small_cnn(num_classes=10, in_channels=1, width=16)
    metadata = checkpoint.load(trained, model)["metadata"]
    apply_masks(model, lup_masks(weights(model), 0.3))
    checkpoint.save(tmp_path / "pruned.h5", model, metadata=metadata)
    state = ref.interop.to_torch(model).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "m.pt")
    masked = evaluate(tmp_path / "pruned.h5", cwd=tmp_path)[1]
    exported = evaluate(tmp_path / "m.pt", "--dataset", "digits", "--arch", "small_cnn",
                        "--width", "16", "--eps", "0.1", cwd=tmp_path)[1]
    assert exported["evaluation"]["accuracy"] == masked["evaluation"]["accuracy"]
    for report in (masked, exported):
        assert report["sparsity"]["global"]["sparsity"] == pytest.approx(0.7, abs=0.01)


def test_gpu_backend_agrees(trained, tmp_path):
    """--backend gpu (the CPU emulator without a GPU) gives numpy's table in float64."""
    small = ["--dtype", "float64", "--eval-n", "10", "--eval-attacks", "fgsm,pgd10"]
    on_gpu = evaluate(trained, "--backend", "gpu", *small, cwd=tmp_path)[1]
    on_numpy = evaluate(trained, *small, cwd=tmp_path)[1]
    assert on_gpu["evaluation"]["accuracy"] == on_numpy["evaluation"]["accuracy"]


@pytest.mark.slow
def test_autoattack_not_above_apgd(tmp_path):
    """On the full quick preset's model, AutoAttack (standard) is at least as strong as our
    APGD-CE, up to one point."""
    pytest.importorskip("pyautoattack")
    out = tmp_path / "run"
    example("cifar_at.py", "--preset", "quick", "--eval-n", "20", "--eval-attacks", "fgsm",
            "--out", str(out), cwd=tmp_path)
    stdout, report = evaluate(out / "best.h5", "--autoattack", "standard", "--eval-n", "100",
                              cwd=tmp_path)
    result = report["evaluation"]
    assert f"autoattack (standard) accuracy {result['autoattack']['accuracy']:.4f}" in stdout
    assert result["autoattack"]["accuracy"] <= result["accuracy"]["apgd20"] + 0.01


@pytest.fixture
def bad_files(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    (tmp_path / "not_a_checkpoint.h5").write_text("hello")
    torch.save(ref.interop.to_torch(ref.models.small_cnn(in_channels=1, width=4)).state_dict(),
               tmp_path / "model.pt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_bad_checkpoint_is_one_line_without_traceback(bad_files):
    run = example("evaluate.py", "model.pt", "--dataset", "digits", "--arch", "resnet18",
                  "--width", "4", cwd=bad_files, check=False)
    assert run.returncode == 2 and "Traceback" not in run.stderr and run.stdout == ""
    assert run.stderr.startswith("evaluate.py: error: bad checkpoint: cannot load 'model.pt' "
                                 "into ResNet: missing") and run.stderr.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["missing.h5"], "bad checkpoint: checkpoint 'missing.h5' does not exist"),
    (["not_a_checkpoint.h5"], "bad checkpoint: 'not_a_checkpoint.h5' is not a valid checkpoint"),
    (["model.pt", "--dataset", "digits", "--arch", "small_cnn", "--normalize", "bad"],
     "--normalize must be one of"),
    (["model.pt", "--dataset", "digits", "--eps", "-1"], "--eps must be >= 0, got -1.0"),
    (["model.pt", "--dataset", "digits", "--eval-attacks", "pgd"], "--eval-attacks: unknown"),
], ids=["missing", "not-a-checkpoint", "normalize", "eps", "attack"])
def test_command_line_errors(args, message, bad_files, capsys):
    """common.cli around the example's main, in this process: status 2, one error line."""
    with pytest.raises(SystemExit) as stop:
        common.cli(lambda: evaluate_example.main(args))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and ": error: " in last and message in last


def test_unexpected_errors_keep_their_traceback(tmp_path):
    """A failure that is not a known error is not hidden: here a model option the builder does
    not take."""
    run = example("evaluate.py", "x.pt", "--dataset", "digits", "--model-options",
                  '{"no_such_option": 1}', cwd=tmp_path, check=False)
    assert run.returncode == 1 and "Traceback" in run.stderr and "no_such_option" in run.stderr


def test_a_missing_dataset_says_where_to_put_it(tmp_path, monkeypatch, capsys):
    """The download fails (a loopback port nobody listens on): one line naming the file, its
    folder and its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/cifar-10-python.tar.gz"
    monkeypatch.setitem(files.URLS, "cifar-10-python.tar.gz", url)
    with pytest.raises(SystemExit) as stop:
        common.cli(lambda: evaluate_example.main(["x.pt", "--dataset", "cifar10",
                                                  "--data-root", str(tmp_path)]))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and url in err
    assert f"Put cifar-10-python.tar.gz (md5 {files.MD5['cifar-10-python.tar.gz']}) into " \
           f"{tmp_path / 'cifar10'}/ by hand" in err
