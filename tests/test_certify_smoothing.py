"""Randomized smoothing (ref.certify.smoothing, the stability-training objective) against closed
forms: the Clopper-Pearson bound is scipy's Beta quantile and solves the binomial tail equation;
a constant classifier certifies with pA_lower = alpha^(1/n); a classifier of pure noise abstains;
a linear classifier's certified radius approaches, never exceeds, its true l2 distance to the
decision boundary; the stability loss equals its formula; the gpu backend (emulated without a GPU)
certifies the same; bad input fails clearly."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import gpu
import ref
from ref import certify, objectives
from ref.models.certified import certified_cnn
from ref.nn import Flatten, Linear, Sequential


def linear_classifier(W, b):
    """Flatten -> Linear with the given weight (k, d) and bias (k,), float64."""
    model = Sequential(Flatten(), Linear(W.shape[1], W.shape[0])).astype(np.float64)
    model[1].weight.data[...], model[1].bias.data[...] = W, b
    return model


@given(st.integers(1, 10 ** 5), st.floats(0, 1), st.sampled_from([1e-3, 0.01, 0.05, 0.3]))
def test_clopper_pearson_is_the_beta_quantile_and_solves_the_tail_equation(n, fraction, alpha):
    k = int(round(fraction * n))
    p = float(certify.clopper_pearson_lower(k, n, alpha))
    if k == 0:
        assert p == 0
        return
    assert p == pytest.approx(stats.beta.ppf(alpha, k, n - k + 1), rel=1e-12, abs=1e-15)
    assert stats.binom.sf(k - 1, n, p) == pytest.approx(alpha, rel=1e-6, abs=1e-12)   # P(X >= k)


@pytest.mark.parametrize("n, alpha", [(100, 1e-3), (10 ** 4, 1e-3), (500, 0.05)])
def test_a_constant_classifier_certifies_with_the_closed_form_radius(n, alpha):
    model = linear_classifier(np.zeros((4, 12)), np.array([0.0, 0.0, 1.0, 0.0]))
    x = np.random.default_rng(0).random((3, 3, 2, 2))
    predictions, radii = certify.smoothed_certify(model, x, 0.5, 10, n, alpha,
                                                  np.random.default_rng(1), batch_size=300)
    np.testing.assert_array_equal(predictions, [2, 2, 2])
    np.testing.assert_allclose(radii, 0.5 * stats.norm.ppf(alpha ** (1 / n)), rtol=1e-9)


def test_a_classifier_of_pure_noise_abstains():
    """f(x + d) = argmax of d's first 10 pixels at x = 0: uniform over 10 classes."""
    model = linear_classifier(np.eye(10, 16), np.zeros(10))
    predictions, radii = certify.smoothed_certify(model, np.zeros((4, 1, 4, 4)), 0.25, 100, 1000,
                                                  1e-3, np.random.default_rng(2))
    np.testing.assert_array_equal(predictions, -1)
    np.testing.assert_array_equal(radii, 0)


def test_a_linear_classifier_certifies_just_inside_its_true_radius():
    """f = 1[x_0 > 0]: at x_0 = a every point within l2 distance a keeps the class, and
    P(f(x + d) = 1) = Phi(a / sigma), so R = sigma Phi^-1(pA_lower) is a bit below a."""
    model = linear_classifier(np.array([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]]), np.zeros(2))
    a = np.array([0.3, 0.5, -0.2])
    x = np.zeros((3, 1, 2, 2))
    x[:, 0, 0, 0] = a
    predictions, radii = certify.smoothed_certify(model, x, 0.25, 100, 10 ** 4, 1e-3,
                                                  np.random.default_rng(3))
    np.testing.assert_array_equal(predictions, [1, 1, 0])
    assert np.all(radii <= np.abs(a)) and np.all(radii >= np.abs(a) - 0.05)


def test_certified_accuracy_counts_correct_predictions_with_the_radius():
    predictions = np.array([1, 2, -1, 0, 3])
    radii = np.array([0.5, 0.1, 0.0, 0.3, 1.0])
    y = np.array([1, 2, 2, 1, 3])
    got = certify.certified_accuracy(predictions, radii, y, [0.0, 0.1, 0.25, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(got, [0.6, 0.6, 0.4, 0.4, 0.2, 0.0])


def test_stability_training_loss_is_ce_plus_beta_kl_to_the_noisy_prediction():
    model = certified_cnn(width=2, rng=7).astype(np.float64)
    rng = np.random.default_rng(7)
    x, y = rng.random((5, 1, 8, 8)), rng.integers(0, 10, 5)
    objective = objectives.get("smooth", beta=6.0, sigma=0.25)
    loss = objective(model, x, y, np.random.default_rng(8))
    noisy = x + 0.25 * np.random.default_rng(8).standard_normal(x.shape)
    z, zn = (model(ref.Tensor(v)).data for v in (x, noisy))
    log_p, log_q = (v - np.log(np.exp(v).sum(axis=1, keepdims=True)) for v in (z, zn))
    ce = -log_p[np.arange(5), y].mean()
    kl = (np.exp(log_p) * (log_p - log_q)).sum() / 5
    np.testing.assert_allclose(loss.data, ce + 6.0 * kl, rtol=1e-10)
    np.testing.assert_array_equal(objective.logits, z)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_gpu_backend_certifies_the_same():
    """The noise is drawn on the host, so both backends see the same draws."""
    x = np.random.default_rng(9).random((3, 1, 8, 8))
    got = []
    for backend, xb in (("numpy", x), ("gpu", gpu.asarray(x))):
        model = certified_cnn(width=2, rng=9).astype(np.float64).to(backend)
        got.append(certify.smoothed_certify(model, xb, 0.25, 20, 300, 1e-3,
                                            np.random.default_rng(10), batch_size=64))
    np.testing.assert_array_equal(got[1][0], got[0][0])
    np.testing.assert_allclose(got[1][1], got[0][1], rtol=1e-12)
    assert (got[0][0] >= 0).any()


def test_bad_arguments_are_clear_errors():
    model = linear_classifier(np.eye(2, 4), np.zeros(2))
    x, rng = np.zeros((1, 1, 2, 2)), np.random.default_rng(0)
    good = dict(sigma=0.25, n0=10, n=100, alpha=1e-3)
    for name, bad in [("sigma", 0), ("sigma", -0.1), ("sigma", float("nan")), ("n0", 0),
                      ("n", 0), ("n", 1.5), ("alpha", 0), ("alpha", 1), ("alpha", 1.5),
                      ("batch_size", 0)]:
        with pytest.raises(ValueError, match=rf"^{name} must"):
            certify.smoothed_certify(model, x, rng=rng, **{**good, name: bad})
    with pytest.raises(ValueError, match="sigma"):
        objectives.get("smooth", sigma=0.0)
    with pytest.raises(ValueError, match="alpha"):
        certify.clopper_pearson_lower(3, 10, 0.0)
