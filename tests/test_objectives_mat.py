"""MAT, BCS's mixed-batch adversarial training (ALGORITHMS.md 4(b)): the loss against its formula
with the same attack points, BatchNorm seeing the mixed batch, the one-sample batch, the
defaults, and both backends."""
import copy

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import gpu
import ref
from ref import attacks, objectives
from ref.nn import BatchNorm1d, Flatten, Linear, ReLU, Sequential

SETTINGS = dict(eps=0.1, alpha=0.04, steps=3)


def mlp(seed, k=4, batch_norm=True):
    rng = np.random.default_rng(seed)
    hidden = [Linear(18, 16, rng=rng)] + ([BatchNorm1d(16)] if batch_norm else []) + [ReLU()]
    return Sequential(Flatten(), *hidden, Linear(16, k, rng=rng)).astype(np.float64)


def batch(seed, n, k=4):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 2, 3, 3)), rng.integers(0, k, n)


def log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


@given(seed=st.integers(0, 2**31), n=st.integers(1, 9))
def test_mat_is_the_cross_entropy_of_the_half_adversarial_batch(seed, n):
    """CE(f([x'_1 .. x'_h, x_h+1 .. x_n]), y), h = n // 2, x' = PGD-CE (uniform start) of the
    first half alone; one train-mode forward of the whole batch (BatchNorm statistics of the
    mixed batch; a batch of one, all clean, without BatchNorm)."""
    x, y = batch(seed, n)
    model = mlp(seed, batch_norm=n > 1)
    reference_model = copy.deepcopy(model)
    mat = objectives.get("mat", **SETTINGS)
    loss = mat(model, x, y, np.random.default_rng(seed))
    half = n // 2
    mixed = x.copy()
    if half:
        mixed[:half] = attacks.pgd(reference_model, x[:half], y[:half], loss="ce",
                                   rng=np.random.default_rng(seed), **mat.attack)
    z = reference_model(ref.Tensor(mixed)).data                                   # (n, k)
    np.testing.assert_allclose(mat.logits, z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loss.item(), -log_softmax(z)[np.arange(n), y].mean(), rtol=1e-12)
    for bn, want in zip(model.modules(), reference_model.modules()):   # same running statistics
        if isinstance(bn, BatchNorm1d):
            np.testing.assert_allclose(bn.running_mean.data, want.running_mean.data, rtol=1e-12)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mat_defaults_and_names():
    mat = objectives.get("mat")
    assert mat.attack == objectives.get("at").attack
    assert mat.attack["random_start"] == "uniform" and mat.loss == "ce"
    assert objectives.OBJECTIVES["mat"] is objectives.MixedAT


def test_mat_on_the_gpu_backend_equals_numpy():
    x, y = batch(3, 6)
    losses = []
    for move, backend in ((np.asarray, "numpy"), (gpu.asarray, "gpu")):
        model = mlp(3).to(backend)
        mat = objectives.get("mat", **SETTINGS)
        losses.append(mat(model, move(x), move(y), np.random.default_rng(0)).item())
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-10)
