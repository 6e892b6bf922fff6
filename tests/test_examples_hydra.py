"""examples/cifar_hydra.py run as a user runs it: a reduced run whose final.h5 loads into the
plain architecture with the reported sparsity, bit-exact resume from the middle of the prune
phase, refused bad input that leaves the run directory untouched; slow: the quick preset's
claims (robust after pruning, above LUP, 90% zeros), the hidden robust subnetwork of a naturally
trained network, and the emulated gpu backend reproducing the numpy run in float64."""

import numpy as np
import pytest

import ref.models
from ref import checkpoint, prune
from test_examples_prune import example, report_of, resume_after, without_times

REDUCED = ["--preset", "quick", "--epochs", "2", "--prune-epochs", "2", "--finetune-epochs", "1",
           "--train-n", "320", "--val-size", "60", "--eval-n", "60",
           "--eval-attacks", "fgsm,pgd10"]


def hydra(*args, cwd, check=True):
    return example("cifar_hydra.py", *args, cwd=cwd, check=check)


def final_model(report, path):
    """final.h5 loaded into ref.models.<arch> built from the report's arguments."""
    args = report["args"]
    model = ref.models.get(args["arch"], num_classes=10, in_channels=1, width=args["width"])
    checkpoint.load(path, model.astype(np.dtype(args["dtype"])))
    return model


def test_reduced_run_exports_a_plain_pruned_model_and_resumes_bit_for_bit(tmp_path):
    out = tmp_path / "run"
    first = hydra(*REDUCED, "--out", str(out), cwd=tmp_path)
    report = report_of(out)
    assert [row["network"] for row in report["table"]] == [
        "pretrained", "LUP, no fine-tuning", "HYDRA pruned", "HYDRA finetuned"]
    assert "HYDRA finetuned" in first.stdout and "evaluation on 60 samples" in first.stdout
    for name in ("pretrain/best.h5", "prune/last.h5", "finetune/best.h5", "final.h5",
                 "training.png", "sparsity.png"):
        assert (out / name).exists(), name
    assert set(report["evaluation"]) == {"pretrained", "final"}
    assert set(report["evaluation"]["final"]["accuracy"]) == {"clean", "fgsm", "pgd10"}
    model = final_model(report, out / "final.h5")
    weights = prune.weights(model)
    zeros = sum(int((W == 0).sum()) for W in weights.values())
    assert report["sparsity"]["global"] == zeros / sum(W.size for W in weights.values())
    for name, W in weights.items():             # every layer keeps n - int(0.9 n) weights
        assert int((W != 0).sum()) == W.size - int(0.9 * W.size), name
        assert report["sparsity"]["layers"][name] == pytest.approx(1 - (W != 0).mean())
    saved = checkpoint.read(out / "final.h5")
    assert not any(name.endswith("scores") for name in saved["parameters"])

    # killed in the middle of the prune phase: its last.h5 is epoch 1's, nothing after it
    resumed = resume_after("cifar_hydra.py", REDUCED, out, "prune", 1, ("finetune",),
                           cwd=tmp_path)
    assert resumed["table"] == report["table"]
    for phase in ("prune", "finetune"):
        assert without_times(resumed["history"][phase]) == without_times(report["history"][phase])
    resumed_final = checkpoint.read(out / "final.h5")["parameters"]
    for name, value in saved["parameters"].items():
        np.testing.assert_array_equal(resumed_final[name], value, err_msg=name)


def test_bad_input_is_refused_and_the_run_directory_is_untouched(tmp_path):
    bad_keep = hydra("--preset", "quick", "--keep", "1.5", "--out", str(tmp_path / "k"),
                     cwd=tmp_path, check=False)
    assert bad_keep.returncode == 2 and "--keep must be a fraction in (0, 1], got 1.5" in \
        bad_keep.stderr
    assert not (tmp_path / "k").exists()

    other = tmp_path / "other.h5"
    checkpoint.save(other, ref.models.small_cnn(num_classes=10, in_channels=1, width=8))
    wrong_arch = hydra("--preset", "quick", "--from", str(other), "--out", str(tmp_path / "f"),
                       cwd=tmp_path, check=False)
    assert wrong_arch.returncode != 0 and "does not hold a dense small_cnn" in wrong_arch.stderr
    assert "shape mismatch" in wrong_arch.stderr and not (tmp_path / "f").exists()

    out = tmp_path / "run"
    quick = ["--preset", "quick", "--epochs", "1", "--prune-epochs", "1", "--finetune-epochs",
             "1", "--train-n", "128", "--val-size", "30", "--eval-n", "30", "--eval-attacks",
             "pgd5", "--out", str(out)]
    hydra(*quick, cwd=tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    refused = hydra(*quick, "--keep", "0.2", "--resume", cwd=tmp_path, check=False)
    assert refused.returncode != 0 and "belongs to another run" in refused.stderr
    assert "--keep 0.1 there, 0.2 now" in refused.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


@pytest.mark.slow
def test_quick_preset_prunes_to_90_percent_and_stays_robust(tmp_path):
    """The README's demo: final PGD-20 (eps 0.1) within 10 points of the dense robust pretrain,
    far above LUP at the same keep without fine-tuning; final.h5 90% zeros up to the count
    rule (each layer keeps n - int(0.9 n) >= 0.1 n weights)."""
    result = hydra("--preset", "quick", "--out", str(tmp_path / "run"), cwd=tmp_path)
    print(result.stdout[result.stdout.index("HYDRA on digits"):])
    report = report_of(tmp_path / "run")
    rows = {row["network"]: row for row in report["table"]}
    pretrained, final = rows["pretrained"], rows["HYDRA finetuned"]
    assert final["pgd20"] >= pretrained["pgd20"] - 0.10
    assert final["pgd20"] >= rows["LUP, no fine-tuning"]["pgd20"] + 0.3
    counts = report["sparsity"]["counts"]["global"]
    assert report["sparsity"]["global"] >= 0.9 - len(report["sparsity"]["layers"]) / counts[
        "size"]
    assert report["evaluation"]["final"]["sanity_failed"] == []


@pytest.mark.slow
@pytest.mark.parametrize("freeze_bn", [False, True])
def test_pruning_alone_finds_a_robust_subnetwork_in_a_natural_network(tmp_path, freeze_bn):
    """Natural pretraining, then only the scores (and BN, unless frozen) trained with TRADES at
    keep 0.5, no fine-tuning: the subnetwork is far more robust than the network it came from."""
    result = hydra("--preset", "quick", "--pretrain-objective", "natural", "--keep", "0.5",
                   "--finetune-epochs", "0", "--eval-attacks", "pgd20",
                   *(["--freeze-bn"] if freeze_bn else []), "--out", str(tmp_path / "run"),
                   cwd=tmp_path)
    print(result.stdout[result.stdout.index("HYDRA on digits"):])
    rows = {row["network"]: row for row in report_of(tmp_path / "run")["table"]}
    assert rows["HYDRA pruned"]["pgd20"] >= rows["pretrained"]["pgd20"] + 0.15


@pytest.mark.slow
def test_the_emulated_gpu_backend_gives_the_numpy_table_in_float64(tmp_path):
    args = ["--preset", "quick", "--dtype", "float64", "--epochs", "1", "--prune-epochs", "1",
            "--finetune-epochs", "1", "--train-n", "128", "--batch-size", "32", "--val-size",
            "32", "--eval-n", "32", "--eval-attacks", "fgsm,pgd5", "--width", "4"]
    reports = {}
    for backend in ("numpy", "gpu"):
        hydra(*args, "--backend", backend, "--out", str(tmp_path / backend), cwd=tmp_path)
        reports[backend] = report_of(tmp_path / backend)
    assert reports["gpu"]["table"] == reports["numpy"]["table"]
    assert reports["gpu"]["sparsity"] == reports["numpy"]["sparsity"]
    finals = {b: checkpoint.read(tmp_path / b / "final.h5")["parameters"] for b in reports}
    for name, value in finals["numpy"].items():
        np.testing.assert_allclose(finals["gpu"][name], value, rtol=1e-9, atol=1e-12)
