"""End to end on both backends: with the same seeds, the gpu backend (CuPy on a GPU, otherwise the
NumPy-backed stand-in and the kernel emulator) gives ref's adversarial examples, Madry-AT training
steps and evaluation, and a checkpoint written on either backend loads on the other.

A small CNN (width 4) on scikit-learn's 8x8 digits keeps every emulated kernel launch small.
float64 is compared tightly (a miss is a bug, not rounding): PGD moves each pixel by the sign of
its gradient, and in float32 a gradient near zero may change sign between backends, so the one
float32 comparison trains without an attack and uses loose tolerances.
"""
import numpy as np
import pytest

import datasets
import gpu
import ref
import ref.models
from ref import attacks, checkpoint, objectives, optim, train

RTOL, ATOL = 1e-10, 1e-12          # float64, one forward / backward or attack
TRAINED_RTOL = 1e-9                # float64 after a few training steps
BACKENDS = ("numpy", "gpu")
EPS, ALPHA = 0.1, 0.03


@pytest.fixture(scope="module")
def digits():
    """(train, validation, test) pairs of uint8 images (n, 1, 8, 8) and labels."""
    x, y = datasets.load("digits", "train")
    xt, yt = datasets.load("digits", "test")
    return (x[:48], y[:48]), (x[48:72], y[48:72]), (xt[:24], yt[:24])


def small_cnn(backend, dtype=np.float64):
    """The same initial network (seed 0) on `backend`."""
    model = ref.models.small_cnn(num_classes=10, in_channels=1, width=4, rng=0)
    return model.astype(dtype).to(backend)


@pytest.fixture(scope="module")
def classifier():
    """{backend: model}: one float64 network trained on ref (3 epochs of plain SGD on 640 digits,
    75% clean test accuracy), and a copy of its state on the gpu backend."""
    x, y = datasets.load("digits", "train")
    model = small_cnn("numpy")
    loader = datasets.Loader(x[:640], y[:640], 32, shuffle=True, seed=1)
    train.fit(model, objectives.get("natural"), optim.SGD(model.parameters(), 0.1, momentum=0.9),
              None, loader, 3, progress=False)
    copy = small_cnn("gpu")
    copy.load_state_dict(model.state_dict())
    return {"numpy": model, "gpu": copy}


def on(backend, *arrays):
    """Host arrays as arrays of `backend`."""
    xp = np if backend == "numpy" else gpu.cupy
    return tuple(xp.asarray(a) for a in arrays)


def assert_same_arrays(got, want, rtol=RTOL, atol=ATOL):
    """Two {name: array} dicts (either backend) hold the same names and close values."""
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(ref.asarray(got[name]), ref.asarray(want[name]), rtol=rtol,
                                   atol=atol, err_msg=name)


def optimizer_arrays(optimizer):
    return {k: v for k, v in optimizer.state_dict().items() if hasattr(v, "shape")}


# ---- attacks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss, restarts, select", [("ce", 1, "last"), ("kl", 2, "best")])
def test_pgd_gives_the_same_adversarial_examples(classifier, digits, loss, restarts, select):
    x, y = digits[2]
    x = x / 255.0                                                                  # (n, 1, 8, 8)
    x_adv = {}
    for backend in BACKENDS:
        xb, yb = on(backend, x, y)
        x_adv[backend] = attacks.pgd(classifier[backend], xb, yb, EPS, ALPHA, 4, "uniform",
                                     loss=loss, restarts=restarts, select=select,
                                     rng=np.random.default_rng(7))
    assert isinstance(x_adv["gpu"], gpu.cupy.ndarray)
    got, want = ref.asarray(x_adv["gpu"]), x_adv["numpy"]
    assert np.abs(want - x).max() > EPS / 2                  # the attack moved the images
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# ---- training and evaluation --------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(digits):
    """{backend: (model, optimizer, history)} after one epoch (3 steps) of Madry AT with PGD-3,
    from the same initial weights, batches and attack starts."""
    (x, y), val, _ = digits
    runs = {}
    for backend in BACKENDS:
        model = small_cnn(backend)
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)
        loader = datasets.Loader(x, y, 16, shuffle=True, augment="crop_flip", seed=1,
                                 backend=backend)
        objective = objectives.get("madry", eps=EPS, alpha=ALPHA, steps=3)
        history = train.fit(model, objective, optimizer, optim.Cosine(0.1, 2), loader, 1,
                            val_data=val, seed=2, progress=False)
        runs[backend] = model, optimizer, history
    return runs


def test_madry_at_steps_give_the_same_weights_and_history(trained):
    (model, optimizer, history), (want_model, want_optimizer, want_history) = (
        trained["gpu"], trained["numpy"])
    assert all(isinstance(a, gpu.cupy.ndarray) for a in model.state_dict().values())
    assert_same_arrays(model.state_dict(), want_model.state_dict(), rtol=TRAINED_RTOL)
    assert_same_arrays(optimizer_arrays(optimizer), optimizer_arrays(want_optimizer),
                       rtol=TRAINED_RTOL)
    for record, want in zip(history, want_history, strict=True):
        assert all(type(value) in (int, float) for value in record.values())   # host numbers
        assert record["train_loss"] == pytest.approx(want["train_loss"], rel=TRAINED_RTOL)
        for key in ("epoch", "lr", "train_acc", "val_clean_acc", "val_robust_acc"):
            assert record[key] == want[key], key


def test_evaluation_gives_the_same_accuracies(classifier, digits):
    results = {backend: train.evaluate(classifier[backend], digits[2], eps=EPS / 2,
                                       attacks=("fgsm", "pgd3", "pgd3x2", "apgd10"),
                                       eps_curve=(0.0, 0.5, 1.0, 2.0), batch_size=12, seed=3,
                                       verbose=False)
               for backend in BACKENDS}
    got, want = results["gpu"], results["numpy"]
    assert 0.5 < want["accuracy"]["clean"] and 0 < want["accuracy"]["pgd3"] < 0.5   # not trivial
    assert all(type(value) is float for value in got["accuracy"].values())
    assert got["accuracy"] == want["accuracy"]
    assert got["eps_curve"] == want["eps_curve"]
    assert got["gradients"] == want["gradients"]
    assert {k: v["passed"] for k, v in got["checks"].items()} == {
        k: v["passed"] for k, v in want["checks"].items()}


def test_float32_natural_training_agrees_loosely(digits):
    """The training dtype: three plain SGD steps (no attack, so no gradient sign to flip)."""
    (x, y), _, _ = digits
    models = {}
    for backend in BACKENDS:
        model = small_cnn(backend, np.float32)
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loader = datasets.Loader(x, y, 16, shuffle=True, seed=1, backend=backend)
        train.fit(model, objectives.get("natural"), optimizer, None, loader, 1, progress=False)
        models[backend] = model
    assert models["gpu"].parameters()[0].dtype == np.float32
    assert_same_arrays(models["gpu"].state_dict(), models["numpy"].state_dict(), rtol=1e-4,
                       atol=1e-5)


# ---- checkpoints across backends ----------------------------------------------------------------
OPTIMIZERS = {"sgd": lambda params: optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4),
              "adam": lambda params: optim.Adam(params, lr=0.01, weight_decay=5e-4)}


def step_with_gradients(model, optimizer, seed):
    """One optimizer step with gradients drawn on the host from `seed`."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.grad = p.xp.asarray(rng.standard_normal(p.shape).astype(p.dtype))
    optimizer.step()


def with_mask(model, parity):
    """model with a boolean buffer (a pruning mask's dtype): True at the entries of `parity`."""
    tensor, xp = attacks.backend_of(model)
    model.register_buffer("mask", tensor(xp.asarray(np.arange(6) % 2 == parity)))
    return model


def bits(state):
    """{name: host array} of a state dict, compared bit for bit with assert_same_bits."""
    return {k: ref.asarray(v) if hasattr(v, "shape") else v for k, v in state.items()}


def assert_same_bits(got, want):
    assert got.keys() == want.keys()
    for key, value in want.items():
        if hasattr(value, "shape"):
            assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key
        else:
            assert got[key] == value, key


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
@pytest.mark.parametrize("source, target", [("gpu", "numpy"), ("numpy", "gpu")])
def test_checkpoint_written_on_one_backend_loads_on_the_other(tmp_path, kind, source, target):
    """Model and optimizer state saved on `source` load bit for bit on `target`, as arrays of
    `target`, and the next update on both backends gives the same weights."""
    make = OPTIMIZERS[kind]
    model = with_mask(small_cnn(source, np.float32), 0)
    optimizer = make(model.parameters())
    for seed in (1, 2):
        step_with_gradients(model, optimizer, seed)
    checkpoint.save(tmp_path / "a.h5", model, optimizer, epoch=2)

    loaded = with_mask(small_cnn(target, np.float32), 1)
    loaded_optimizer = make(loaded.parameters())
    assert checkpoint.load(tmp_path / "a.h5", loaded, loaded_optimizer) == {"epoch": 2}
    assert_same_bits(bits(loaded.state_dict()), bits(model.state_dict()))
    assert_same_bits(bits(loaded_optimizer.state_dict()), bits(optimizer.state_dict()))
    arrays = list(loaded.state_dict().values()) + list(optimizer_arrays(loaded_optimizer).values())
    assert all(isinstance(a, attacks.backend_of(loaded)[1].ndarray) for a in arrays)

    step_with_gradients(model, optimizer, 3)
    step_with_gradients(loaded, loaded_optimizer, 3)
    assert_same_arrays(loaded.state_dict(), model.state_dict(), rtol=1e-6, atol=1e-7)
