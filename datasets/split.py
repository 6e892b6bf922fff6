"""Stratified hold-out split.

With n items, k classes of sizes n_j and a hold-out of m items, class j gives
m_j = floor(n_j m / n) items, plus one more for the m - sum_j floor(n_j m / n) classes with the
largest remainders (n_j m mod n; ties: smaller class label first), so every class is held out in
proportion to within one item. Which items of a class are held out is drawn from the seed.
"""
import numbers

import numpy as np


def split_validation(x, y, n_or_fraction, seed=0):
    """((x_train, y_train), (x_val, y_val)): a stratified random hold-out of `n_or_fraction`
    items (an int count, or a float fraction of len(y), rounded). Both parts keep the original
    order of the items."""
    y = np.asarray(y)
    if len(x) != len(y) or y.ndim != 1:
        raise ValueError(f"x ({len(x)} items) and y (shape {y.shape}) must hold as many items "
                         f"and y must be 1-D")
    val = np.sort(stratified_indices(y, _count(n_or_fraction, len(y)), seed))    # (m,)
    train = np.setdiff1d(np.arange(len(y)), val, assume_unique=True)            # (n - m,)
    return (x[train], y[train]), (x[val], y[val])


def stratified_indices(y, m, seed):
    """Indices of m items of y drawn class by class in proportion to the class sizes."""
    _, label, sizes = np.unique(y, return_inverse=True, return_counts=True)     # (n,), (k,)
    take = sizes * m // len(y)                                                  # (k,)
    remainder = sizes * m % len(y)                                              # (k,)
    take[np.argsort(-remainder, kind="stable")[:m - take.sum()]] += 1
    order = np.random.default_rng(seed).permutation(len(y))                     # (n,)
    order = order[np.argsort(label[order], kind="stable")]                      # (n,) by class
    first = np.cumsum(sizes) - sizes                                            # (k,)
    rank = np.arange(len(y)) - np.repeat(first, sizes)                          # (n,)
    return order[rank < np.repeat(take, sizes)]                                 # (m,)


def _count(n_or_fraction, n):
    """The hold-out size: an int in [0, n], or round(fraction * n) for a float in [0, 1]."""
    if isinstance(n_or_fraction, bool) or not isinstance(n_or_fraction, numbers.Real):
        raise TypeError(f"n_or_fraction must be an int count or a float fraction, got "
                        f"{n_or_fraction!r}")
    if isinstance(n_or_fraction, numbers.Integral) and 0 <= n_or_fraction <= n:
        return int(n_or_fraction)
    if not isinstance(n_or_fraction, numbers.Integral) and 0 <= n_or_fraction <= 1:
        return round(float(n_or_fraction) * n)
    raise ValueError(f"n_or_fraction={n_or_fraction!r} is out of range for {n} items "
                     f"(an int in [0, {n}] or a float in [0, 1])")
