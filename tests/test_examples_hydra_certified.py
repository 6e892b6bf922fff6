"""examples/cifar_hydra.py with the certified objectives of ref.certify, run as a user runs it: a
reduced IBP run through the three phases (verified accuracy reported and never above PGD
accuracy, final.h5 a plain certified_cnn, certified.png), its bit-exact resume from the middle of
the eps ramp, a reduced randomized-smoothing run, and bad input refused before anything is
written; slow: the quick-certified preset keeps its verified accuracy at keep 0.1, and pruning a
naturally trained network with the IBP objective finds a certifiably robust subnetwork."""

import numpy as np
import pytest

import ref.models
from ref import checkpoint, prune
from test_examples_hydra import final_model, hydra
from test_examples_prune import report_of, resume_after, without_times

REDUCED = ["--preset", "quick-certified", "--epochs", "2", "--eps-ramp-epochs", "3",
           "--prune-epochs", "1", "--finetune-epochs", "1", "--schedule", "cosine", "--lr", "0.01",
           "--finetune-lr", "0.003", "--train-n", "320", "--val-size", "60", "--eval-n", "60",
           "--eval-attacks", "pgd10"]
METHODS = ("ibp", "crown-ibp")


def test_reduced_ibp_run_verifies_below_pgd_and_resumes_in_the_ramp_bit_for_bit(tmp_path):
    out = tmp_path / "run"
    first = hydra(*REDUCED, "--out", str(out), cwd=tmp_path)
    assert "ibp verified" in first.stdout and "verified test accuracy against eps" in first.stdout
    report = report_of(out)
    for row in report["table"]:                 # every network of the table, at --eps
        assert 0 <= row["ibp"] <= row["pgd20"] and 0 <= row["crown-ibp"] <= row["pgd20"], row
    for name, result in report["evaluation"].items():
        assert set(result["verified"]) == set(METHODS)
        assert max(result["verified"].values()) <= result["accuracy"]["pgd10"], name
        assert result["checks"]["verified_robust"]["passed"], name
    certified = report["certified"]
    assert certified["kind"] == "verified" and certified["radius"][-1] == pytest.approx(0.05)
    assert set(certified["curves"]) == {f"{n} {m}" for n in ("pretrained", "final")
                                        for m in METHODS}
    for method in METHODS:                      # the curve ends at the evaluation's number
        assert certified["curves"][f"final {method}"][-1] == \
            report["evaluation"]["final"]["verified"][method]
    assert (out / "certified.png").stat().st_size > 0
    model = final_model(report, out / "final.h5")
    assert type(model).__name__ == "CertifiedNet"
    for name, W in prune.weights(model).items():
        assert int((W != 0).sum()) == W.size - int(0.9 * W.size), name

    # killed after epoch 1 of 2 of the pretrain phase, eps still ramping (over 3 epochs)
    steps = checkpoint.read(out / "pretrain" / "epoch_001.h5")["extra"]["objective_state"]
    assert steps == {"step": 10}                # 320 images in batches of 32
    saved = checkpoint.read(out / "final.h5")["parameters"]
    resumed = resume_after("cifar_hydra.py", REDUCED, out, "pretrain", 1, ("prune", "finetune"),
                           cwd=tmp_path)
    assert resumed["table"] == report["table"]
    assert resumed["certified"] == certified
    for phase in ("pretrain", "prune", "finetune"):
        assert without_times(resumed["history"][phase]) == without_times(report["history"][phase])
    resumed_final = checkpoint.read(out / "final.h5")["parameters"]
    for name, value in saved.items():
        np.testing.assert_array_equal(resumed_final[name], value, err_msg=name)


def test_the_reference_net_runs_the_crown_ibp_phases(tmp_path):
    """cifar_model (built for 8x8 digits) through the three phases with the CROWN-IBP objective;
    final.h5 loads into the plain architecture."""
    out = tmp_path / "run"
    hydra("--preset", "quick-certified", "--arch", "cifar_model", "--objective", "crown_ibp",
          "--epochs", "1", "--prune-epochs", "1", "--finetune-epochs", "1", "--train-n", "64",
          "--val-size", "30", "--eval-n", "30", "--eval-attacks", "pgd5", "--out", str(out),
          cwd=tmp_path)
    report = report_of(out)
    assert [len(h) for h in report["history"].values()] == [1, 1, 1]
    assert all(row["crown-ibp"] <= row["pgd20"] for row in report["table"])
    model = ref.models.cifar_model(num_classes=10, in_channels=1, input_size=8)
    checkpoint.load(out / "final.h5", model)
    assert 0.89 < prune.sparsity(model)["global"]["sparsity"] < 0.91


def test_reduced_smoothing_run_reports_certified_accuracy_at_the_radii(tmp_path):
    """Stability training through the phases of a BatchNorm network (smoothing needs no bounds),
    then CERTIFY of the pretrained and the final network."""
    out = tmp_path / "run"
    result = hydra("--preset", "quick-certified", "--arch", "small_cnn", "--width", "4",
                   "--objective", "smooth", "--sigma", "0.25", "--radii", "0,0.1,0.25",
                   "--n0", "10", "--n", "100", "--epochs", "1", "--prune-epochs", "1",
                   "--finetune-epochs", "1", "--train-n", "320", "--val-size", "60",
                   "--eval-n", "30", "--eval-attacks", "pgd5", "--out", str(out), cwd=tmp_path)
    assert "smoothed certified test accuracy" in result.stdout
    report = report_of(out)
    certified = report["certified"]
    assert certified["kind"] == "smoothed" and certified["radius"] == [0.0, 0.1, 0.25]
    assert (certified["sigma"], certified["n0"], certified["n"]) == (0.25, 10, 100)
    assert set(certified["curves"]) == set(certified["clean"]) == {"pretrained", "final"}
    for curve in certified["curves"].values():  # fewer samples certified as the radius grows
        assert all(0 <= b <= a <= 1 for a, b in zip(curve, curve[1:]))
    assert "ibp" not in report["table"][0] and (out / "certified.png").exists()


@pytest.mark.parametrize("options, message", [
    (["--arch", "small_cnn", "--objective", "trades", "--finetune-objective", "crown_ibp"],
     "ref.certify: cannot bound layer"),
    (["--objective", "smooth", "--sigma", "0"], "sigma must be a finite number > 0, got 0.0"),
    (["--eps", "-0.1"], "--eps must be >= 0, got -0.1"),
    (["--radii", "0,-1"], "radii must be numbers >= 0"),
    (["--kappa", "2"], "kappa must lie in [0, 1], got 2.0"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, options, message):
    out = tmp_path / "run"
    refused = hydra("--preset", "quick-certified", *options, "--out", str(out), cwd=tmp_path,
                    check=False)
    assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and not out.exists()


# ---- the claims on digits (slow) ----------------------------------------------------------------
def table(result, report):
    print(result.stdout[result.stdout.index("HYDRA on digits"):])
    return {row["network"]: row for row in report["table"]}


@pytest.mark.slow
def test_quick_certified_preset_keeps_verified_accuracy_at_keep_0_1(tmp_path):
    """IBP training (kappa 0.5, eps 0.05 ramped over 5 of 10 epochs, Adam 1e-3), HYDRA at keep
    0.1: the pruned and fine-tuned net's IBP-verified accuracy within 10 points of the dense
    pretrain's. Measured, IBP-verified (CROWN-IBP-verified, PGD-20, clean) at eps 0.05, dense ->
    HYDRA finetuned: seed 0 0.49 (0.69, 0.75, 0.87) -> 0.61 (0.72, 0.74, 0.88); seed 1
    0.57 -> 0.69; seed 2 0.52 -> 0.65. About 75-110 s on 2 cores."""
    result = hydra("--preset", "quick-certified", "--out", str(tmp_path / "run"), cwd=tmp_path)
    report = report_of(tmp_path / "run")
    rows = table(result, report)
    pretrained, final = rows["pretrained"], rows["HYDRA finetuned"]
    assert pretrained["ibp"] > 0.4
    assert final["ibp"] >= pretrained["ibp"] - 0.10
    assert report["evaluation"]["final"]["sanity_failed"] == []


@pytest.mark.slow
def test_pruning_a_natural_network_with_ibp_finds_a_certified_subnetwork(tmp_path):
    """A naturally trained certified_cnn (the preset's pretrain with --objective natural), then
    --from it: only the scores trained with the IBP objective at keep 0.5 for 8 epochs (weights
    frozen; eps 0.05 ramped over the first 4, the first phase that runs; kappa 0, Adam 3e-3), no
    fine-tuning. Measured, IBP-verified (CROWN-IBP-verified) at eps 0.05 before -> after:
    seed 0 0.00 (0.03) -> 0.19 (0.35), PGD-20 0.81 -> 0.40, clean 0.95 -> 0.44; seed 1
    0.00 (0.03) -> 0.17 (0.35); seed 2 0.00 (0.01) -> 0.16 (0.17)."""
    natural = hydra("--preset", "quick-certified", "--objective", "natural", "--prune-epochs",
                    "0", "--finetune-epochs", "0", "--out", str(tmp_path / "natural"),
                    cwd=tmp_path)
    assert "HYDRA on digits" in natural.stdout
    result = hydra("--preset", "quick-certified", "--from",
                   str(tmp_path / "natural" / "pretrain" / "best.h5"), "--keep", "0.5",
                   "--prune-epochs", "8", "--eps-ramp-epochs", "4", "--kappa", "0", "--lr",
                   "0.003", "--finetune-epochs", "0", "--eval-attacks", "pgd20", "--out",
                   str(tmp_path / "run"), cwd=tmp_path)
    report = report_of(tmp_path / "run")
    rows = table(result, report)
    assert "pretrain" not in report["history"]
    assert rows["pretrained"]["ibp"] < 0.02 and rows["HYDRA pruned"]["ibp"] > 0.1
    dense = ref.models.certified_cnn(width=8)
    checkpoint.load(tmp_path / "natural" / "pretrain" / "best.h5", dense)
    final = final_model(report, tmp_path / "run" / "final.h5")
    for (name, W), W0 in zip(prune.weights(final).items(), prune.weights(dense).values()):
        kept = W != 0                           # the kept weights are the natural net's
        np.testing.assert_array_equal(W[kept], W0[kept], err_msg=name)
