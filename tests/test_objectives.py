"""Objectives: values against the papers' formulas written out in NumPy (with the same attack
points), parameter gradients by finite differences, modes and flags, bad settings."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ref
from ref import attacks, objectives
from ref.gradcheck import check_vjp
from ref.nn import BatchNorm1d, Flatten, Linear, ReLU, Sequential

SETTINGS = dict(eps=0.1, alpha=0.04, steps=3)


def mlp(seed, batch_norm=False, k=4):
    rng = np.random.default_rng(seed)
    hidden = [Linear(18, 16, rng=rng)] + ([BatchNorm1d(16)] if batch_norm else []) + [ReLU()]
    return Sequential(Flatten(), *hidden, Linear(16, k, rng=rng)).astype(np.float64)


def batch(seed, n=8, k=4):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 2, 3, 3)), rng.integers(0, k, n)


def logits_of(model, x):
    """Train-mode logits as the objective sees them (no BatchNorm in these models)."""
    with ref.no_grad():
        return model(ref.Tensor(x)).data                                           # (n, k)


def log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def ce(z, y):
    return -log_softmax(z)[np.arange(len(y)), y].mean()


def make(name, **kw):
    return objectives.get(name) if name == "natural" else objectives.get(name, **SETTINGS, **kw)


def attack_point(objective, model, x, y, seed):
    """The attack an objective runs, called directly with the same settings and seed."""
    return attacks.pgd(model, x, y, loss=objective.loss, rng=np.random.default_rng(seed),
                       **objective.attack)


@given(seed=st.integers(0, 2**31))
def test_natural_and_madry_and_dnr_equal_their_formulas(seed):
    x, y = batch(seed)
    model = mlp(seed)
    z = logits_of(model, x)
    natural = make("natural")(model, x, y, np.random.default_rng(seed))
    np.testing.assert_allclose(natural.item(), ce(z, y), rtol=1e-12)
    madry = make("madry")
    z_adv = logits_of(model, attack_point(madry, model, x, y, seed))
    np.testing.assert_allclose(madry(model, x, y, np.random.default_rng(seed)).item(),
                               ce(z_adv, y), rtol=1e-12)
    dnr = make("dnr", beta=0.3)
    z_adv = logits_of(model, attack_point(dnr, model, x, y, seed))
    np.testing.assert_allclose(dnr(model, x, y, np.random.default_rng(seed)).item(),
                               0.3 * ce(z, y) + 0.7 * ce(z_adv, y), rtol=1e-12)


@given(seed=st.integers(0, 2**31), beta=st.floats(0.0, 10.0))
def test_trades_equals_its_formula(seed, beta):
    """CE(f(x), y) + beta / n sum_i KL(p(x_i) || p(x'_i)), x' the KL attack from x + 0.001 N."""
    x, y = batch(seed)
    model = mlp(seed)
    trades = make("trades", beta=beta)
    assert trades.loss == "kl" and trades.attack["random_start"] == "normal"
    z, z_adv = logits_of(model, x), logits_of(model, attack_point(trades, model, x, y, seed))
    log_p, log_q = log_softmax(z), log_softmax(z_adv)
    kl = (np.exp(log_p) * (log_p - log_q)).sum() / len(y)
    np.testing.assert_allclose(trades(model, x, y, np.random.default_rng(seed)).item(),
                               ce(z, y) + beta * kl, rtol=1e-10)


@given(seed=st.integers(0, 2**31), beta=st.floats(0.0, 10.0))
def test_mart_equals_the_reference_formula(seed, beta):
    """As in MART's reference code: the top wrong class from argsort of the adversarial
    probabilities, nll of log(1.0001 - q + 1e-12), KL weighted by (1.0000001 - p_y)."""
    x, y = batch(seed)
    model = mlp(seed)
    mart = make("mart", beta=beta)
    assert mart.loss == "ce" and mart.attack["random_start"] == "normal"
    z, z_adv = logits_of(model, x), logits_of(model, attack_point(mart, model, x, y, seed))
    p, q = np.exp(log_softmax(z)), np.exp(log_softmax(z_adv))
    rows = np.arange(len(y))
    top2 = np.argsort(q, axis=1)[:, -2:]
    other = np.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    loss_adv = ce(z_adv, y) - np.log(1.0001 - q[rows, other] + 1e-12).mean()
    kl = (p * (np.log(p) - np.log(q + 1e-12))).sum(axis=1)
    loss_robust = (kl * (1.0000001 - p[rows, y])).sum() / len(y)
    np.testing.assert_allclose(mart(model, x, y, np.random.default_rng(seed)).item(),
                               loss_adv + beta * loss_robust, rtol=1e-10)


@pytest.mark.parametrize("name", ["natural", "madry", "trades", "mart", "dnr"])
def test_parameter_gradients_match_finite_differences(name, rng):
    """The attack point is piecewise constant in the parameters (sign steps, clips), so a fixed
    seed makes the whole objective differentiable for a small shift of the parameters."""
    x, y = batch(7)
    model = mlp(7)
    objective = make(name)
    check_vjp(lambda *params: objective(model, x, y, np.random.default_rng(3)),
              model.parameters(), rng)


@pytest.mark.parametrize("name", ["natural", "madry", "trades", "mart", "dnr"])
def test_objectives_keep_train_mode_and_flags_and_report_logits(name):
    x, y = batch(8)
    model = mlp(8, batch_norm=True).train()
    model[-1].bias.requires_grad = False
    loss = make(name)(model, x, y, np.random.default_rng(0))
    assert loss.shape == () and loss.requires_grad
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [True] * 5 + [False]
    objective = make(name)
    objective(model, x, y, np.random.default_rng(0))
    assert objective.logits.shape == (8, 4)


def test_zero_eps_makes_adversarial_objectives_natural():
    x, y = batch(9)
    model = mlp(9)
    natural = make("natural")(model, x, y).item()
    for name in ("madry", "dnr"):
        got = objectives.get(name, eps=0.0, alpha=0.1, steps=2)(model, x, y).item()
        np.testing.assert_allclose(got, natural, rtol=1e-12)
    trades = objectives.get("trades", eps=0.0, alpha=0.1, steps=2)(model, x, y).item()
    np.testing.assert_allclose(trades, natural, rtol=1e-12)


def test_defaults_follow_the_papers():
    assert objectives.get("at").attack == dict(eps=8 / 255, alpha=2 / 255, steps=10,
                                               random_start="uniform")
    trades = objectives.get("trades")
    assert trades.beta == 6.0 and trades.attack == dict(eps=0.031, alpha=0.007, steps=10,
                                                        random_start="normal")
    assert objectives.get("mart").beta == 6.0
    assert objectives.get("dnr").beta == 0.5
    assert "TRADES(beta=6.0, eps=0.031" in repr(trades)


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown objective 'madri'"):
        objectives.get("madri")
    with pytest.raises(TypeError, match=r"unknown attack settings \['epsilon'\]"):
        objectives.get("madry", epsilon=0.1)
    with pytest.raises(ValueError, match="beta must lie in"):
        objectives.get("dnr", beta=1.5)
    x, y = batch(10)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        objectives.get("trades", eps=-0.1)(mlp(10), x, y)
