"""Robust training works: a small CNN adversarially trained on scikit-learn's digits (eps 0.1)
keeps clean accuracy and resists PGD far better than a naturally trained one, and on both the
attacks order as they must (accuracy falls with eps, PGD-50 <= PGD-10 <= FGSM, APGD-CE <= PGD-50
+ 0.01). The full claim is slow; the default run keeps a short variant.

On these 8x8 images (grey levels 1/16 apart) a naturally trained small CNN keeps about 0.5-0.65
PGD-20 accuracy at eps 0.1 (an independent PyTorch PGD on the same weights agrees); it falls
below 0.25 only from eps ~0.15, so that is where the natural model's collapse is asserted.
"""
import numpy as np
import pytest

import datasets
import ref.models
from ref import objectives, optim, train

EPS = 0.1


def train_digits(objective, epochs, width, n_train=None, seed=0):
    x, y = datasets.load("digits", "train")
    model = ref.models.small_cnn(num_classes=10, in_channels=1, width=width, rng=seed)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = datasets.Loader(x[:n_train], y[:n_train], 64, shuffle=True, seed=seed)
    train.fit(model, objective, opt, optim.Cosine(0.05, epochs), loader, epochs, seed=seed,
              progress=False)
    return model


def madry(steps):
    return objectives.get("madry", eps=EPS, alpha=2.5 * EPS / steps, steps=steps)


def check_ordering(result):
    acc = result["accuracy"]
    curve = result["eps_curve"]["accuracy"]
    assert all(b <= a for a, b in zip(curve, curve[1:])), result["eps_curve"]
    assert acc["pgd10"] <= acc["fgsm"], acc
    if "pgd50" in acc:
        assert acc["pgd50"] <= acc["pgd10"] and acc["apgd"] <= acc["pgd50"] + 0.01, acc
    assert result["sanity_failed"] == [], result["checks"]


@pytest.mark.slow
def test_adversarial_training_on_digits_is_robust_and_natural_training_is_not():
    test = datasets.load("digits", "test")
    attacks = ("fgsm", "pgd10", "pgd20", "pgd50", "apgd")
    robust_model = train_digits(madry(7), 15, 32)
    natural_model = train_digits(objectives.get("natural"), 15, 32)
    robust = train.evaluate(robust_model, test, EPS, attacks)
    natural = train.evaluate(natural_model, test, EPS, attacks)
    assert robust["accuracy"]["clean"] >= 0.90
    assert robust["accuracy"]["pgd20"] >= 0.60
    assert natural["accuracy"]["pgd20"] <= robust["accuracy"]["pgd20"] - 0.25
    check_ordering(robust)
    check_ordering(natural)
    wider = train.evaluate(natural_model, test, 1.5 * EPS, ("pgd20",), eps_curve=(1,))
    assert wider["accuracy"]["pgd20"] < 0.25


def test_short_adversarial_training_beats_natural_training_under_pgd():
    test = datasets.load("digits", "test")
    test = (test[0][:200], test[1][:200])
    results = [train.evaluate(train_digits(objective, 5, 16, n_train=768), test, EPS,
                              ("fgsm", "pgd10"), eps_curve=(0, 1, 2), verbose=False)
               for objective in (madry(3), objectives.get("natural"))]
    robust, natural = (r["accuracy"] for r in results)
    assert robust["clean"] >= 0.90 and robust["pgd10"] >= 0.5
    assert robust["pgd10"] >= natural["pgd10"] + 0.2
    for result in results:
        check_ordering(result)
    assert np.all(np.diff(results[0]["eps_curve"]["accuracy"]) <= 0)
