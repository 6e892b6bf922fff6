"""examples/cifar_rbsn.py run as a user runs it: the weights never change and final.h5 holds
+-1 at exactly the allocated counts; the fast trainer resumes bit for bit (its memory is in the
checkpoints); bad input is refused; slow: the quick preset's claims (robust above chance, LBN
helps) and the emulated gpu backend reproducing numpy in float64."""

import numpy as np
import pytest

import ref.models
from ref import checkpoint, prune
from ref.prune import subnet
from test_examples_prune import example, report_of, resume_after

REDUCED = ["--preset", "quick", "--epochs", "2", "--train-n", "256", "--val-size", "60",
           "--eval-n", "60", "--eval-attacks", "fgsm,pgd10"]


def rbsn(*args, cwd, check=True):
    return example("cifar_rbsn.py", *args, cwd=cwd, check=check)


def initial_model(args):
    """The subnet model as the example builds it, before any training."""
    model = ref.models.get(args["arch"], num_classes=10, in_channels=1, width=args["width"],
                           affine_bn=False, last_bn=args["lbn"], classifier="conv",
                           rng=args["seed"])
    return subnet.build(model.astype(np.dtype(args["dtype"])), args["keep"], args["p"],
                        args["init"], args["score_scale"], args["score_mode"],
                        scale_fan=args["scale_fan"], rng=args["seed"])


def test_weights_stay_at_their_init_and_final_h5_is_binary(tmp_path):
    out = tmp_path / "run"
    rbsn(*REDUCED, "--out", str(out), cwd=tmp_path)
    report = report_of(out)
    trained = checkpoint.read(out / "train" / "last.h5")["parameters"]
    initial = initial_model(report["args"])
    for name, p in initial.named_parameters():
        if name.endswith(".scores"):
            assert not np.array_equal(trained[name], p.data), name
        else:
            np.testing.assert_array_equal(trained[name], p.data, err_msg=name)
    final = checkpoint.read(out / "final.h5")["parameters"]
    assert not any(name.endswith(".scores") for name in final)
    for path, rho in report["allocation"].items():
        W = final[f"{path}.weight"]
        assert set(np.unique(W)) <= {-1.0, 0.0, 1.0}, path
        assert int((W != 0).sum()) == W.size - int((1 - rho) * W.size), path
    model = ref.models.get("resnet18", num_classes=10, in_channels=1, width=8, affine_bn=False,
                           last_bn=True, classifier="conv")
    checkpoint.load(out / "final.h5", model)          # a plain dense ResNet-18 in RBSN's form
    assert prune.sparsity(model)["global"]["sparsity"] == report["sparsity"]["global"]


def test_the_fast_trainer_resumes_bit_for_bit(tmp_path):
    out = tmp_path / "run"
    fast = [*REDUCED, "--trainer", "fast"]
    rbsn(*fast, "--out", str(out), cwd=tmp_path)
    first = report_of(out)
    saved = checkpoint.read(out / "train" / "last.h5")["extra"]["objective_state"]
    assert saved["seen"].all() and np.abs(saved["memory"]).max() <= 0.1 + 1e-6
    resumed = resume_after("cifar_rbsn.py", fast, out, "train", 1, cwd=tmp_path)
    assert resumed["table"] == first["table"]
    assert [h["train_loss"] for h in resumed["history"]["train"]] == \
        [h["train_loss"] for h in first["history"]["train"]]


@pytest.mark.parametrize("args, message", [
    (["--keep", "1.5"], "--keep must be a fraction in (0, 1], got 1.5"),
    (["--p", "2"], "--p must be in [0, 1], got 2.0"),
    (["--init", "gaussian"], "argument --init: invalid choice: 'gaussian'"),
    (["--arch", "small_cnn"], "--arch small_cnn: RBSN's subnet form needs a ResNet")])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, args, message):
    result = rbsn("--preset", "quick", *args, "--out", str(tmp_path / "run"), cwd=tmp_path,
                  check=False)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_quick_preset_trains_a_robust_binary_subnet_and_lbn_helps(tmp_path):
    """Digits, ResNet-18 (width 8) with +-1 weights that never change, keep 0.5: PGD-20 at eps
    0.1 well above chance (0.1), and the last BatchNorm helps (same seed without it)."""
    accuracies = {}
    for lbn in ("--lbn", "--no-lbn"):
        result = rbsn("--preset", "quick", lbn, "--out", str(tmp_path / lbn), cwd=tmp_path)
        print(result.stdout[result.stdout.index("RBSN on digits"):])
        accuracies[lbn] = report_of(tmp_path / lbn)["table"][0]["pgd20"]
    assert accuracies["--lbn"] >= 0.3
    assert accuracies["--lbn"] > accuracies["--no-lbn"]


@pytest.mark.slow
def test_the_emulated_gpu_backend_gives_the_numpy_run_in_float64(tmp_path):
    args = ["--preset", "quick", "--dtype", "float64", "--epochs", "1", "--train-n", "128",
            "--batch-size", "32", "--val-size", "32", "--eval-n", "32", "--eval-attacks",
            "fgsm,pgd5", "--width", "4"]
    reports = {}
    for backend in ("numpy", "gpu"):
        rbsn(*args, "--backend", backend, "--out", str(tmp_path / backend), cwd=tmp_path)
        reports[backend] = report_of(tmp_path / backend)
    assert reports["gpu"]["table"] == reports["numpy"]["table"]
    finals = {b: checkpoint.read(tmp_path / b / "final.h5")["parameters"] for b in reports}
    for name, value in finals["numpy"].items():
        np.testing.assert_array_equal(finals["gpu"][name], value, err_msg=name)
