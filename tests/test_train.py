"""fit: bit-exact resume, checkpoints and model selection, NaN stop, progress, schedules, bad
input; evaluate: accuracies against direct computation, sanity checks that fire when they should.
Small MLPs on scikit-learn's digits keep this fast."""
import hashlib
import os

import numpy as np
import pytest

import datasets
import ref
from ref import attacks, checkpoint, objectives, optim, train
from ref.evaluate import batches, parse_attack
from ref.nn import BatchNorm1d, Dropout, Flatten, Linear, Module, ReLU, Sequential


@pytest.fixture(scope="module")
def digits():
    x, y = datasets.load("digits", "train")
    xt, yt = datasets.load("digits", "test")
    return (x[:320], y[:320]), (x[320:480], y[320:480]), (xt[:120], yt[:120])


def mlp(seed=0, dropout=False):
    rng = np.random.default_rng(seed)
    layers = [Flatten(), Linear(64, 32, rng=rng), BatchNorm1d(32), ReLU()]
    layers += [Dropout(0.2, rng=np.random.default_rng(seed + 1))] if dropout else []
    return Sequential(*layers, Linear(32, 10, rng=rng))


def run(out_dir, epochs, train_xy, val_xy, resume=None, objective=None, **kw):
    """A fresh model, optimizer and loader (as a restarted process would build them), then fit."""
    model = mlp(dropout=True)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader = datasets.Loader(*train_xy, 64, shuffle=True, seed=3)
    objective = objective or objectives.get("madry", eps=0.1, alpha=0.03, steps=2)
    history = train.fit(model, objective, opt, optim.Cosine(0.1, 4), loader, epochs,
                        out_dir=out_dir, resume=resume, val_data=val_xy, seed=5, **kw)
    return model, opt, history


def without_times(history):
    return [{k: v for k, v in h.items() if k not in ("time_s", "examples_per_s")}
            for h in history]


def test_resume_after_epoch_k_equals_an_uninterrupted_run(digits, tmp_path):
    train_xy, val_xy, _ = digits
    model_a, opt_a, history_a = run(tmp_path / "a", 3, train_xy, val_xy)
    run(tmp_path / "b", 2, train_xy, val_xy)                    # "killed" after epoch 2
    model_b, opt_b, history_b = run(tmp_path / "b", 3, train_xy, val_xy, resume=True)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    state_a, state_b = opt_a.state_dict(), opt_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)
    assert without_times(history_a) == without_times(history_b)
    extra_a = checkpoint.read(tmp_path / "a" / "last.h5")["extra"]
    extra_b = checkpoint.read(tmp_path / "b" / "last.h5")["extra"]
    assert extra_a["rng_states"] == extra_b["rng_states"] and extra_b["epoch"] == 3
    assert set(extra_a["rng_states"]) == {"fit", "4.rng"}       # fit's and the dropout's


def test_resume_from_an_explicit_path_and_a_finished_run(digits, tmp_path):
    train_xy, val_xy, _ = digits
    model_a, _, _ = run(tmp_path / "a", 2, train_xy, val_xy)
    model_b, _, history = run(tmp_path / "b", 2, train_xy, val_xy,
                              resume=tmp_path / "a" / "epoch_001.h5")
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    model_c, _, history_c = run(tmp_path / "a", 2, train_xy, val_xy, resume=True)
    assert without_times(history_c) == without_times(history)   # nothing left to train
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(tmp_path / "c", 2, train_xy, val_xy, resume=tmp_path / "missing.h5")


class WrongLabelsAfter(objectives.Natural):
    """Natural training that switches to wrong labels after `calls` batches, so validation
    accuracy peaks early."""

    def __init__(self, calls):
        super().__init__()
        self.calls, self.seen = calls, 0

    def __call__(self, model, x, y, rng=None):
        self.seen += 1
        return super().__call__(model, x, (y + 1) % 10 if self.seen > self.calls else y, rng)


def test_checkpoints_every_epoch_and_best_by_validation_metric(digits, tmp_path):
    train_xy, val_xy, _ = digits
    model, _, history = run(tmp_path, 4, train_xy, val_xy, objective=WrongLabelsAfter(10),
                            val_attack=dict(eps=0.05, alpha=0.02, steps=2))
    assert sorted(os.listdir(tmp_path)) == ["best.h5", "epoch_001.h5", "epoch_002.h5",
                                            "epoch_003.h5", "epoch_004.h5", "last.h5"]
    scores = [h["val_robust_acc"] for h in history]
    best_epoch = int(np.argmax(scores)) + 1                     # the first best epoch
    assert best_epoch < 4, scores                               # the test needs an early peak
    best = checkpoint.read(tmp_path / "best.h5")
    assert best["extra"]["best"] == dict(metric="val_robust_acc", value=max(scores),
                                         epoch=best_epoch)
    same = checkpoint.read(tmp_path / f"epoch_{best_epoch:03d}.h5")
    for name, value in same["parameters"].items():
        np.testing.assert_array_equal(best["parameters"][name], value)
    reloaded = mlp(dropout=True)
    checkpoint.load(tmp_path / "best.h5", reloaded)
    assert train.accuracy(reloaded, val_xy) == history[best_epoch - 1]["val_clean_acc"]


def test_select_by_clean_accuracy_without_an_attack(digits, tmp_path):
    train_xy, val_xy, _ = digits
    _, _, history = run(tmp_path, 2, train_xy, val_xy, objective=objectives.get("natural"))
    assert all("val_robust_acc" not in h for h in history)
    best = checkpoint.read(tmp_path / "best.h5")["extra"]["best"]
    assert best["metric"] == "val_clean_acc"


class NaNAt(objectives.Objective):
    """Natural loss that turns NaN at one call."""

    def __init__(self, call):
        super().__init__()
        self.call, self.calls = call, 0

    def __call__(self, model, x, y, rng=None):
        self.calls += 1
        loss = objectives.Natural.__call__(self, model, x, y, rng)
        return loss * float("nan") if self.calls == self.call else loss


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    train_xy, val_xy, _ = digits
    run(tmp_path, 1, train_xy, val_xy, objective=NaNAt(0))
    digest = hashlib.sha256((tmp_path / "last.h5").read_bytes()).hexdigest()
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 2, batch 3: training "
                       r"stopped; the last good checkpoint .*last.h5 \(epoch 1\) is unchanged"):
        run(tmp_path, 3, train_xy, val_xy, resume=True, objective=NaNAt(3))
    assert hashlib.sha256((tmp_path / "last.h5").read_bytes()).hexdigest() == digest
    assert not (tmp_path / "epoch_002.h5").exists()


def test_progress_lines_and_epoch_summaries(digits, capsys):
    train_xy, val_xy, _ = digits
    run(None, 2, train_xy, val_xy, log_every=2)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert lines[0].startswith("epoch 1/2 batch 2/5 loss ") and lines[0].endswith(" ex/s")
    assert " acc " in lines[0] and lines[-1].startswith("epoch 2/2 batch 5/5 loss")
    assert len(lines) == 6                                      # batches 2, 4, 5 of each epoch
    summaries = out.strip().splitlines()
    assert [s.split()[1] for s in summaries] == ["1/2", "2/2"]
    assert all("clean_acc" in s and "robust_acc" in s and "ex/s" in s for s in summaries)


def test_schedule_sets_the_lr_at_every_batch(digits):
    train_xy, _, _ = digits
    model = mlp()
    opt = optim.SGD(model.parameters(), lr=1.0)
    seen = []

    class Spy(objectives.Natural):
        def __call__(self, model, x, y, rng=None):
            seen.append(opt.lr)
            return super().__call__(model, x, y, rng)

    schedule = optim.Piecewise([(0, 0.1), (2, 0.0)])
    history = train.fit(model, Spy(), opt, schedule, datasets.Loader(*train_xy, 64), 2,
                        progress=False)
    assert seen == [schedule(e + i / 5) for e in range(2) for i in range(5)]
    assert [h["lr"] for h in history] == [schedule(0), schedule(1)]


def test_natural_training_learns_digits(digits):
    train_xy, _, test_xy = digits
    model = mlp()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    history = train.fit(model, objectives.get("natural"), opt, None,
                        datasets.Loader(*train_xy, 32, shuffle=True), 8, progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert train.accuracy(model, test_xy) >= 0.85


def test_fit_rejects_bad_arguments(digits, tmp_path):
    train_xy, val_xy, _ = digits
    with pytest.raises(ValueError, match="epochs must be an integer >= 0"):
        run(tmp_path, -1, train_xy, val_xy)
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        run(None, 1, train_xy, val_xy, resume=True)
    with pytest.raises(ValueError, match="select must be"):
        run(tmp_path, 1, train_xy, val_xy, select="val_loss")
    with pytest.raises(ValueError, match="needs val_attack"):
        run(tmp_path, 1, train_xy, val_xy, objective=objectives.get("natural"),
            select="val_robust_acc")


# ---- evaluate ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(digits):
    train_xy, _, _ = digits
    model = mlp().astype(np.float64)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train.fit(model, objectives.get("madry", eps=0.1, alpha=0.03, steps=3), opt, None,
              datasets.Loader(*train_xy, 32, shuffle=True), 6, progress=False)
    return model


def test_evaluate_matches_direct_computation(trained, digits, capsys):
    _, _, (x, y) = digits
    trained.train()
    result = train.evaluate(trained, (x, y), eps=0.1, attacks=("fgsm", "pgd5", "pgd5x2"),
                            eps_curve=(0, 1, 2), batch_size=50)
    assert trained.training                                     # the mode is restored
    xf = x.astype(np.float64) / 255
    trained.eval()
    with ref.no_grad():
        clean = trained(ref.Tensor(xf)).data.argmax(axis=1) == y
        x_fgsm = attacks.fgsm(trained, xf, y, 0.1)
        fooled = trained(ref.Tensor(x_fgsm)).data.argmax(axis=1) != y
    assert result["n"] == 120
    assert result["accuracy"]["clean"] == clean.mean()
    assert result["accuracy"]["fgsm"] == (clean & ~fooled).mean()
    assert result["eps_curve"]["eps"] == [0.0, 0.1, 0.2, 0.5]
    assert result["eps_curve"]["accuracy"][0] == clean.mean()
    assert result["eps_curve"]["accuracy"][1] == result["accuracy"]["pgd5"]
    assert max(result["accuracy"].values()) == result["accuracy"]["clean"]
    assert result["sanity_failed"] == [], result["checks"]
    out = capsys.readouterr().out
    assert "evaluation on 120 samples" in out and "fgsm" in out and "SANITY" not in out


class Scaled(Module):
    """Logits multiplied by a huge factor: the softmax saturates and input gradients vanish."""

    def __init__(self, model, factor):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


def test_gradient_masking_is_reported_loudly(trained, digits, capsys):
    _, _, test_xy = digits
    result = train.evaluate(Scaled(trained, 1e6), test_xy, eps=0.1, attacks=("fgsm", "pgd5"),
                            eps_curve=(0, 1))
    assert "input_gradients" in result["sanity_failed"]
    assert not result["checks"]["input_gradients"]["passed"]
    assert "SANITY CHECK FAILED: input_gradients" in capsys.readouterr().out


def test_points_outside_the_ball_are_reported(trained, digits, monkeypatch):
    _, _, test_xy = digits
    monkeypatch.setattr("ref.evaluate.fgsm", lambda model, x, y, eps: np.clip(x + 2 * eps, 0, 1))
    result = train.evaluate(trained, test_xy, eps=0.1, attacks=("fgsm",), eps_curve=(1,),
                            verbose=False)
    assert result["sanity_failed"] == ["in_ball"]


def test_attack_names_and_batches():
    assert parse_attack("fgsm") == dict(kind="fgsm", steps=1, restarts=1)
    assert parse_attack("pgd20") == dict(kind="pgd", steps=20, restarts=1)
    assert parse_attack("pgd50x5") == dict(kind="pgd", steps=50, restarts=5)
    assert parse_attack("apgd") == dict(kind="apgd", steps=100, restarts=1)
    assert parse_attack("apgd25") == dict(kind="apgd", steps=25, restarts=1)
    for bad in ("pgd", "cw", "pgdx2", "apgd-ce"):
        with pytest.raises(ValueError, match="unknown attack"):
            parse_attack(bad)
    model = mlp().astype(np.float64)
    x = np.arange(2 * 64, dtype=np.uint8).reshape(2, 1, 8, 8)
    (xb, yb), = batches((x, np.array([1, 2])), 8, model)
    assert xb.dtype == np.float64 and np.array_equal(xb, x / 255)
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        next(batches((x, np.array([1, 2, 3])), 8, model))
