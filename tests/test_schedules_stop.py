"""The training lengths of "Achieving Adversarial Robustness via Sparsity": StopE against
hand-computed lrs; StopC's rule on a scripted sequence of validation losses (decays, the relative
threshold's edge, the stop), its state round trip and bad input; fit with StopC on a tiny CNN:
early stop, bit-exact resume, val_loss against a direct computation, on both backends."""
import json

import numpy as np
import pytest

import datasets
import gpu
import ref
import ref.models
from ref import checkpoint, objectives, optim, train
from ref.evaluate import clean_accuracy_and_loss
from ref.optim import StopC, StopE


# ---- StopE ---------------------------------------------------------------------------------------
def test_stop_e_divides_the_lr_by_10_at_half_and_three_quarters_of_training():
    schedule = StopE(0.1, 10)                       # milestones int(0.5 * 10) = 5, int(7.5) = 7
    want = [0.1] * 5 + [0.01] * 2 + [0.001] * 3
    assert [schedule(e) for e in range(10)] == pytest.approx(want, rel=1e-12)
    assert schedule(4.9) == 0.1 and schedule(5.0) == pytest.approx(0.01, rel=1e-12)
    assert schedule.milestones == (5, 7)


def test_stop_e_with_other_fractions_and_factor():
    schedule = StopE(0.2, 7, fractions=(0.3, 0.9), factor=0.5)   # int(2.1) = 2, int(6.3) = 6
    want = [0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05]
    assert [schedule(e) for e in range(7)] == pytest.approx(want, rel=1e-12)


# ---- StopC's rule --------------------------------------------------------------------------------
# patience 2, threshold 0.25, max_decays 2: an epoch improves iff loss < 0.75 * best, the third
# epoch in a row without improvement is a plateau. Values are exact in binary, so the edge is exact.
SCRIPT = [  # (validation loss after the epoch, lr during the epoch, the rule's state after it)
    (8.0, 1.0, "first value: best 8"),
    (5.0, 1.0, "5 < 6: best 5"),
    (4.0, 1.0, "4 >= 3.75 (20% better, under the threshold): bad 1"),
    (3.75, 1.0, "3.75 = 0.75 * 5, not strictly below: bad 2"),
    (3.8, 1.0, "bad 3 > patience: decay 1, bad 0"),
    (3.0, 0.1, "3 < 3.75: best 3"),
    (2.9, 0.1, "bad 1"),
    (2.8, 0.1, "bad 2"),
    (2.0, 0.1, "2 < 2.25: best 2, the count restarts"),
    (1.9, 0.1, "bad 1"),
    (1.8, 0.1, "bad 2"),
    (1.7, 0.1, "bad 3: decay 2, bad 0"),
    (1.6, 0.01, "best 2 survives the decay, 1.6 >= 1.5: bad 1"),
    (1.55, 0.01, "bad 2"),
    (1.52, 0.01, "bad 3 after max_decays decays: stop"),
]
STOP_EPOCH = 15


def scripted_stop_c():
    return StopC(1.0, patience=2, threshold=0.25, max_decays=2)


def feed(schedule, script, first_epoch=0):
    """end_epoch on each scripted loss; returns [(lr during the epoch, stop?)]."""
    seen = []
    for epoch, (loss, _, _) in enumerate(script, first_epoch):
        lr = schedule(epoch)
        seen.append((lr, schedule.end_epoch(dict(epoch=epoch + 1, lr=lr, val_loss=loss))))
    return seen


def test_stop_c_decays_and_stops_exactly_when_the_rule_says():
    schedule = scripted_stop_c()
    seen = feed(schedule, SCRIPT)
    assert [lr for lr, _ in seen] == pytest.approx([lr for _, lr, _ in SCRIPT], rel=1e-12)
    assert [stop for _, stop in seen] == [epoch == STOP_EPOCH for epoch in range(1, 16)]
    assert schedule.state_dict() == dict(best=2.0, bad_epochs=3, decays=2, stopped=True)
    assert schedule.stop_reason == ("val_loss did not improve on its best 2 by a relative 0.25 "
                                    "(mode 'min') for 3 epochs after 2 lr decays")
    with pytest.raises(RuntimeError, match="after the schedule stopped"):
        schedule.end_epoch(dict(val_loss=1.0))


def test_stop_c_on_robust_accuracy_in_max_mode_with_patience_0():
    schedule = StopC(0.5, patience=0, threshold=0.5, max_decays=1, monitor="val_robust_acc",
                     mode="max")
    accuracies = [0.25, 0.5, 0.75, 0.625]   # 0.5 > 1.5 * 0.25; 0.75 = 1.5 * 0.5 is no improvement
    stops = [schedule.end_epoch(dict(val_robust_acc=a, val_loss=9.0)) for a in accuracies]
    assert stops == [False, False, False, True]     # decay after epoch 3, stop after epoch 4
    assert schedule(4) == pytest.approx(0.05, rel=1e-12)
    assert schedule.state_dict() == dict(best=0.5, bad_epochs=1, decays=1, stopped=True)


def test_stop_c_state_round_trip_continues_identically():
    uninterrupted = scripted_stop_c()
    want = feed(uninterrupted, SCRIPT)
    for cut in (4, 7, 12):
        first = scripted_stop_c()
        seen = feed(first, SCRIPT[:cut])
        resumed = scripted_stop_c()
        resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))   # as in a checkpoint
        seen += feed(resumed, SCRIPT[cut:], first_epoch=cut)
        assert seen == want, cut
        assert resumed.state_dict() == uninterrupted.state_dict()


def test_stop_c_needs_its_monitored_value():
    with pytest.raises(KeyError, match="'val_loss', which the epoch's record lacks"):
        StopC(0.1).end_epoch(dict(epoch=1, train_loss=1.0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(patience=-1), "patience must be an integer >= 0, got -1"),
    (dict(patience=1.5), "patience must be an integer >= 0, got 1.5"),
    (dict(threshold=-0.01), r"threshold must be in \[0.0, inf\], got -0.01"),
    (dict(factor=0.0), r"factor must be in \(0, 1\), got 0.0"),
    (dict(factor=1.0), r"factor must be in \(0, 1\), got 1.0"),
    (dict(factor=10), r"factor must be in \(0, 1\), got 10"),
    (dict(max_decays=-2), "max_decays must be an integer >= 0, got -2"),
    (dict(mode="mean"), r"mode must be one of \('min', 'max'\), got 'mean'"),
    (dict(base_lr=-0.1), r"base_lr must be in \[0.0, inf\], got -0.1"),
])
def test_stop_c_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StopC(**{"base_lr": 0.1, **kwargs})


@pytest.mark.parametrize("args, kwargs, message", [
    ((0.1, 0), {}, "epochs must be an integer > 0, got 0"),
    ((0.1, 2.5), {}, "epochs must be an integer > 0, got 2.5"),
    ((0.1, 10), dict(fractions=(0.5, 1.5)), r"each of fractions must be in \[0.0, 1.0\], got 1.5"),
    ((0.1, 10), dict(factor=1.0), r"factor must be in \(0, 1\), got 1.0"),
])
def test_stop_e_rejects_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        StopE(*args, **kwargs)


# ---- fit with StopC ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_data():
    """(train, validation) pairs of random uint8 8x8 images with random labels in {0, 1, 2}: the
    validation loss cannot fall much."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(72, 1, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 3, size=72)
    return (x[:48], y[:48]), (x[48:], y[48:])


def run(out_dir, epochs, data, schedule, resume=None):
    """A fresh float64 model, optimizer and loader (as a restarted process builds them), then
    fit with the natural objective."""
    (x, y), val = data
    model = ref.models.small_cnn(num_classes=3, in_channels=1, width=4, rng=0).astype(np.float64)
    optimizer = optim.SGD(model.parameters(), lr=schedule.base_lr, momentum=0.9)
    loader = datasets.Loader(x, y, 16, shuffle=True, seed=1)
    history = train.fit(model, objectives.get("natural"), optimizer, schedule, loader, epochs,
                        out_dir=out_dir, resume=resume, val_data=val, seed=2, progress=False)
    return model, history


def without_times(history):
    return [{k: v for k, v in h.items() if k not in ("time_s", "examples_per_s")}
            for h in history]


def test_fit_stops_when_the_validation_loss_plateaus(random_data, tmp_path, capsys):
    # threshold 0.5: only halving the loss counts; patience 0: every other epoch is a plateau
    schedule = StopC(0.05, patience=0, threshold=0.5, max_decays=1)
    _, history = run(tmp_path, 10, random_data, schedule)
    losses = [h["val_loss"] for h in history]
    assert losses[1] >= 0.5 * losses[0] and losses[2] >= 0.5 * losses[0]   # the premise
    assert len(history) == 3                # epoch 1 the best, 2 a plateau: decay, 3 one: stop
    assert [h["lr"] for h in history] == pytest.approx([0.05, 0.05, 0.005], rel=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.h5", "epoch_001.h5", "epoch_002.h5", "epoch_003.h5", "last.h5"]
    extra = checkpoint.read(tmp_path / "last.h5")["extra"]
    assert extra["schedule_state"] == dict(best=losses[0], bad_epochs=1, decays=1, stopped=True)
    assert extra["stopped"].startswith("after epoch 3: val_loss did not improve on its best")
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"stopping {extra['stopped']}" and out[-1].endswith("after 1 lr decay")
    assert all(" val_loss " in line for line in out[:-1])

    again = StopC(0.05, patience=0, threshold=0.5, max_decays=1)
    _, resumed = run(tmp_path, 10, random_data, again, resume=True)
    assert without_times(resumed) == without_times(history)           # nothing more trained
    assert again.state_dict() == extra["schedule_state"]
    assert not (tmp_path / "epoch_004.h5").exists()
    assert "nothing to train: the run stopped after epoch 3" in capsys.readouterr().err


def resume_stop_c():
    # patience 2 with the halving threshold: epoch 1 is the best, the plateau after epoch 4
    # decays the lr, and the one after epoch 7 would stop
    return StopC(0.05, patience=2, threshold=0.5, max_decays=1)


def test_resumed_run_repeats_an_uninterrupted_one_bit_for_bit(random_data, tmp_path):
    schedule_a, schedule_b = resume_stop_c(), resume_stop_c()
    model_a, history_a = run(tmp_path / "a", 6, random_data, schedule_a)
    run(tmp_path / "b", 3, random_data, resume_stop_c())          # "killed" after epoch 3
    mid_run = checkpoint.read(tmp_path / "b" / "last.h5")["extra"]["schedule_state"]
    assert mid_run["bad_epochs"] == 2 and mid_run["decays"] == 0   # a state that matters
    model_b, history_b = run(tmp_path / "b", 6, random_data, schedule_b, resume=True)
    assert without_times(history_b) == without_times(history_a)
    assert [h["lr"] for h in history_a] == pytest.approx([0.05] * 4 + [0.005] * 2, rel=1e-12)
    assert schedule_b.state_dict() == schedule_a.state_dict()
    assert schedule_a.state_dict() == dict(best=history_a[0]["val_loss"], bad_epochs=2,
                                           decays=1, stopped=False)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    extra_a = checkpoint.read(tmp_path / "a" / "last.h5")["extra"]
    extra_b = checkpoint.read(tmp_path / "b" / "last.h5")["extra"]
    assert extra_a["schedule_state"] == extra_b["schedule_state"]
    assert extra_a["stopped"] is None and extra_b["stopped"] is None


def test_resume_without_schedule_state_is_an_error(random_data, tmp_path):
    run(tmp_path, 1, random_data, StopE(0.05, 4))
    with pytest.raises(ValueError, match="holds no state for the schedule StopC"):
        run(tmp_path, 2, random_data, StopC(0.05), resume=True)


# ---- val_loss ------------------------------------------------------------------------------------
def direct_loss_and_accuracy(model, x, y):
    """Mean cross-entropy and accuracy from a plain loop: one image at a time, numpy
    log-softmax."""
    model.eval()
    losses, correct = [], 0
    with ref.no_grad():
        for image, label in zip(x, y):
            z = model(ref.Tensor(image[None] / 255.0)).data[0]
            log_p = z - z.max() - np.log(np.sum(np.exp(z - z.max())))
            losses.append(-log_p[label])
            correct += int(np.argmax(z) == label)
    return float(np.mean(losses)), correct / len(y)


def test_val_loss_equals_a_direct_computation(random_data):
    model, history = run(None, 2, random_data, StopE(0.05, 2))
    loss, acc = direct_loss_and_accuracy(model, *random_data[1])
    assert history[-1]["val_loss"] == pytest.approx(loss, rel=1e-12)
    assert history[-1]["val_clean_acc"] == acc


def test_clean_accuracy_and_loss_on_both_backends(random_data):
    model, _ = run(None, 1, random_data, StopE(0.05, 1))
    want_acc, want_loss = clean_accuracy_and_loss(model, random_data[1], batch_size=10)
    assert want_acc == train.accuracy(model, random_data[1])
    model = model.to("gpu")
    assert isinstance(model.parameters()[0].data, gpu.cupy.ndarray)
    acc, loss = clean_accuracy_and_loss(model, random_data[1], batch_size=10)
    assert acc == want_acc and type(loss) is float
    assert loss == pytest.approx(want_loss, rel=1e-10)
