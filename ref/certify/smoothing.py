"""Randomized smoothing certification (Cohen et al. 2019, CERTIFY; HYDRA's eval_smoothing.py).

Notation: f the base classifier (argmax of the model's logits), g the smoothed classifier
g(x) = argmax_c P(f(x + d) = c), d ~ N(0, sigma^2 I). Per sample x:

    cA       = the most frequent class of f over n0 noisy copies (selection; ties: lowest class)
    nA       = the count of cA over n fresh noisy copies (estimation)
    pA_lower = the one-sided (1 - alpha) Clopper-Pearson lower bound of P(f(x + d) = cA):
               Beta quantile B^-1(alpha; nA, n - nA + 1), 0 when nA = 0
               (= statsmodels' proportion_confint(nA, n, 2 alpha, "beta")[0], as the reference)
    pA_lower < 1/2:  abstain, prediction -1 and radius 0
    otherwise:       prediction cA, l2 radius R = sigma Phi^-1(pA_lower)

With probability >= 1 - alpha over the draws, g(x') = cA for every ||x' - x||_2 < R. The noise is
added without clipping to [0, 1] (as the reference). Certified accuracy at radius r is the
fraction of samples predicted correctly with R >= r (an abstention is never correct).
"""
import numbers

import numpy as np
from scipy.stats import beta as beta_distribution
from scipy.stats import norm

from ref import asarray
from ref.attacks import attack_mode, backend_of
from ref.certify.ibp import model_array
from ref.tensor import no_grad


def check_sigma(sigma):
    """sigma as a float > 0 (finite)."""
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 < sigma < np.inf:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    return float(sigma)


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_alpha(alpha):
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")


def clopper_pearson_lower(k, n, alpha):
    """The one-sided (1 - alpha) Clopper-Pearson lower bound of a binomial proportion from k
    successes in n trials: B^-1(alpha; k, n - k + 1), 0 where k = 0 (arrays broadcast)."""
    _check_alpha(alpha)
    k = np.asarray(k)
    bound = beta_distribution.ppf(alpha, np.maximum(k, 1), n - k + 1)
    return np.where(k > 0, bound, 0.0)


def class_counts(model, x, num, sigma, rng, batch_size):
    """counts (k,) of f(x + d) over `num` draws d ~ N(0, sigma^2 I) of one sample x (c, h, w),
    in batches of at most batch_size copies; the noise comes from `rng` on the host."""
    T, xp = backend_of(model)
    counts = None
    for a in range(0, num, batch_size):
        m = min(batch_size, num - a)
        noise = xp.asarray(rng.standard_normal((m,) + x.shape) * sigma, dtype=x.dtype)
        logits = model(T(x[None] + noise)).data                              # (m, k)
        votes = xp.bincount(logits.argmax(axis=1), minlength=logits.shape[1])  # (k,)
        counts = votes if counts is None else counts + votes
    return asarray(counts)


def smoothed_certify(model, x, sigma, n0, n, alpha, rng, batch_size=1000):
    """(predictions, radii): numpy arrays (N,) of the smoothed classifier's class per sample of
    x (N, c, h, w) (arrays in [0, 1] on the model's backend), -1 where it abstains, and the
    certified l2 radius (0 where it abstains); see the module docstring. The model runs in eval
    mode and no graph is built. rng: numpy Generator (or seed) for the noise."""
    sigma = check_sigma(sigma)
    n0, n = _check_count(n0, "n0"), _check_count(n, "n")
    batch_size = _check_count(batch_size, "batch_size")
    _check_alpha(alpha)
    rng = np.random.default_rng(rng)
    x = model_array(model, x)                                              # (N, c, h, w)
    predictions = np.full(len(x), -1)
    radii = np.zeros(len(x))
    with attack_mode(model, "eval"), no_grad():
        for i in range(len(x)):
            top = int(class_counts(model, x[i], n0, sigma, rng, batch_size).argmax())
            nA = class_counts(model, x[i], n, sigma, rng, batch_size)[top]
            p_lower = float(clopper_pearson_lower(nA, n, alpha))
            if p_lower >= 0.5:
                predictions[i], radii[i] = top, sigma * norm.ppf(p_lower)
    return predictions, radii


def certified_accuracy(predictions, radii, y, radii_list):
    """Array (len(radii_list),): the fraction of samples with predictions == y and radii >= r,
    for each r of radii_list."""
    correct = asarray(predictions) == asarray(y)                             # (N,)
    radii = asarray(radii)
    return np.array([float(np.mean(correct & (radii >= r))) for r in radii_list])
