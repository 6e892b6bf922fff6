"""examples/cifar_bcs.py run as a user runs it: a reduced run whose final.h5 loads into the plain
architecture with the budget's active count, the per-epoch connectivity in report.json,
bit-exact resume from the middle of the BCS phase, refused bad input that leaves no run
directory; slow: the quick preset's claims (BCS at connectivity 0.1 within 10 PGD-20 points of
dense AT with the same epochs, at the budget, above the random-fixed baseline)."""
from pathlib import Path

import numpy as np
import pytest

import ref.models
from ref import checkpoint, prune
from test_examples_prune import example, report_of, resume_after, without_times

ROOT = Path(__file__).resolve().parents[1]
REDUCED = ["--preset", "quick", "--width", "8", "--epochs", "2", "--dense-epochs", "1",
           "--train-n", "128",
           "--val-size", "32", "--eval-n", "32", "--eval-attacks", "pgd1",
           "--table-attack", "pgd2", "--baseline", "random_fixed"]


def bcs(*args, cwd, check=True):
    return example("cifar_bcs.py", *args, cwd=cwd, check=check)


def test_reduced_run_exports_a_plain_model_at_the_budget_and_resumes_bit_for_bit(tmp_path):
    out = tmp_path / "run"
    first = bcs(*REDUCED, "--out", str(out), cwd=tmp_path)
    report = report_of(out)
    assert [row["network"] for row in report["table"]] == ["dense AT", "BCS", "random fixed"]
    assert "BCS on digits, small_cnn, at, connectivity 0.1" in first.stdout
    for name in ("dense/best.h5", "bcs/epoch_002.h5", "random_fixed/best.h5", "final.h5",
                 "training.png", "sparsity.png", "connectivity.png"):
        assert (out / name).exists(), name
    connectivity = report["connectivity"]
    budget, sizes = connectivity["budget"], connectivity["sizes"]
    assert budget == int(sum(sizes.values()) * 0.1)
    assert [r["epoch"] for r in connectivity["epochs"]] == [0, 1, 2]
    for record in connectivity["epochs"][1:]:
        assert record["total"] == budget and record["rewired"] > 0
    assert connectivity["epochs"][0]["total"] < budget        # the init is below the budget

    model = ref.models.small_cnn(num_classes=10, in_channels=1, width=report["args"]["width"])
    checkpoint.load(out / "final.h5", model)
    weights = prune.weights(model)
    kept = {name: int((W != 0).sum()) for name, W in weights.items()}
    best = checkpoint.read(out / "bcs" / "best.h5")["extra"]["best"]["epoch"]
    assert kept == connectivity["epochs"][best]["active"]       # final.h5 is the best epoch
    assert sum(kept.values()) == budget == report["sparsity"]["counts"]["global"]["kept"]
    assert report["sparsity"]["global"] == 1 - budget / sum(sizes.values())
    rows = {row["network"]: row for row in report["table"]}
    assert rows["BCS"]["active"] == rows["random fixed"]["active"] == budget
    saved = checkpoint.read(out / "final.h5")
    assert not any(name.endswith("weight_sign") for name in saved["buffers"])

    # killed in the middle of the BCS phase: its last.h5 is epoch 1's, nothing after it
    resumed = resume_after("cifar_bcs.py", REDUCED, out, "bcs", 1, ("random_fixed",),
                           cwd=tmp_path)
    assert resumed["table"] == report["table"]
    assert resumed["connectivity"] == connectivity
    for phase in ("bcs", "random_fixed"):
        assert without_times(resumed["history"][phase]) == without_times(report["history"][phase])
    for name, value in checkpoint.read(out / "final.h5")["parameters"].items():
        np.testing.assert_array_equal(value, saved["parameters"][name], err_msg=name)


@pytest.fixture
def cifar_bcs(monkeypatch):
    """examples/cifar_bcs.py imported as the scripts import it (bad options exit in main)."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import cifar_bcs
    return cifar_bcs


@pytest.mark.parametrize("args, message", [
    (["--connectivity", "1.5"], "--connectivity must be a fraction in (0, 1], got 1.5"),
    (["--connectivity", "0"], "--connectivity must be a fraction in (0, 1], got 0.0"),
    (["--noise", "-0.5"], "--noise must be >= 0, got -0.5"),
    (["--temperature", "-1"], "--temperature must be >= 0, got -1.0"),
    (["--baseline", "random,fixed"], "--baseline: unknown ['random']"),
    (["--baseline", "fixed", "--dense-epochs", "0"], "--dense-epochs 0 leaves none"),
], ids=["connectivity-above-1", "connectivity-0", "negative-noise", "negative-temperature",
        "unknown-baseline", "fixed-without-dense"])
def test_bad_input_is_refused_before_anything_is_written(cifar_bcs, tmp_path, capsys, args,
                                                         message):
    with pytest.raises(SystemExit) as exit_:
        cifar_bcs.main(["--preset", "quick", *args, "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_quick_preset_bcs_is_near_dense_at_and_above_random_fixed(tmp_path):
    """The issue's claim on digits: BCS at connectivity 0.1 within 10 PGD-20 points of dense AT
    trained for the same epochs, its active count at the budget, above the random-fixed
    baseline at the same connectivity (measured: 0.8774, 0.8217, 0.7493; ~4 min on 2 cores)."""
    result = bcs("--preset", "quick", "--baseline", "random_fixed", "--out",
                 str(tmp_path / "run"), cwd=tmp_path)
    print(result.stdout[result.stdout.index("BCS on digits"):])
    report = report_of(tmp_path / "run")
    rows = {row["network"]: row for row in report["table"]}
    dense, sparse, fixed = rows["dense AT"], rows["BCS"], rows["random fixed"]
    assert sparse["pgd20"] >= dense["pgd20"] - 0.10
    assert sparse["pgd20"] > fixed["pgd20"]
    budget = report["connectivity"]["budget"]
    assert sparse["active"] == report["connectivity"]["epochs"][-1]["total"] == budget
    assert report["sparsity"]["counts"]["global"]["kept"] == budget
