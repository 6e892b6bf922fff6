"""Attacks: naive step-by-step references in float64, exact optima of two-class linear models,
the L-inf ball / image-box invariants, rng reproducibility, best/restart bookkeeping, bad input."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ref
from ref import attacks
from ref.nn import BatchNorm1d, Flatten, Linear, Module, ReLU, Sequential


def linear_model(d, k, seed):
    return Sequential(Flatten(), Linear(d, k, rng=np.random.default_rng(seed))).astype(np.float64)


def mlp(d, k, seed, batch_norm=False):
    rng = np.random.default_rng(seed)
    hidden = [Linear(d, 16, rng=rng)] + ([BatchNorm1d(16)] if batch_norm else []) + [ReLU()]
    return Sequential(Flatten(), *hidden, Linear(16, k, rng=rng)).astype(np.float64)


def batch(seed, n=6, shape=(2, 3, 3), k=4, edge=True):
    """Images in [0, 1] with some pixels exactly on the box's faces, and labels."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, *shape))                                             # (n, c, h, w)
    if edge:
        x[rng.uniform(size=x.shape) < 0.2] = 0.0
        x[rng.uniform(size=x.shape) < 0.2] = 1.0
    return x, rng.integers(0, k, n)


def logits_of(model, x):
    with ref.no_grad():
        return model(ref.Tensor(x)).data                                           # (n, k)


def ce_per_sample(z, y):
    """-log softmax(z)[i, y_i], written out."""
    z = z - z.max(axis=1, keepdims=True)                                           # (n, k)
    return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]                 # (n,)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def naive_pgd_linear(W, b, x0, y, eps, alpha, steps, start=None, p_clean=None):
    """x <- clip01(x0 + clip(x + alpha sign(g) - x0, -eps, eps)), one sample at a time, with the
    gradient of a linear model written out: CE: g = W^T (softmax(z) - e_y);
    KL(p_clean || softmax(z)): g = W^T (softmax(z) - p_clean)."""
    x = x0.copy() if start is None else start.copy()
    for _ in range(steps):
        new = np.empty_like(x)
        for i in range(len(x0)):
            q = softmax(W @ x[i].ravel() + b)
            if p_clean is None:
                q[y[i]] -= 1
            else:
                q -= p_clean[i]
            g = (W.T @ q).reshape(x0[i].shape)
            new[i] = np.clip(x0[i] + np.clip(x[i] + alpha * np.sign(g) - x0[i], -eps, eps), 0, 1)
        x = new
    return x


def projected_normal_start(x0, eps, seed):
    delta = 0.001 * np.random.default_rng(seed).standard_normal(x0.shape)
    return np.clip(x0 + np.clip(x0 + delta - x0, -eps, eps), 0, 1)


# ---- exact references ----------------------------------------------------------------------------
@given(seed=st.integers(0, 2**31), eps=st.floats(0.0, 0.5), alpha=st.floats(0.001, 0.3),
       steps=st.integers(1, 6))
def test_pgd_without_random_start_equals_naive_reference(seed, eps, alpha, steps):
    x, y = batch(seed)
    model = linear_model(18, 4, seed)
    W, b = model[1].weight.data, model[1].bias.data
    got = attacks.pgd(model, x, y, eps, alpha, steps, random_start="none")
    np.testing.assert_array_equal(got, naive_pgd_linear(W, b, x, y, eps, alpha, steps))


@given(seed=st.integers(0, 2**31), eps=st.floats(0.0, 0.5))
def test_fgsm_is_one_full_step(seed, eps):
    x, y = batch(seed)
    model = linear_model(18, 4, seed)
    W, b = model[1].weight.data, model[1].bias.data
    np.testing.assert_array_equal(attacks.fgsm(model, x, y, eps),
                                  naive_pgd_linear(W, b, x, y, eps, eps, 1))


@given(seed=st.integers(0, 2**31), eps=st.floats(0.0005, 0.3), steps=st.integers(1, 5))
def test_kl_pgd_from_normal_start_equals_naive_reference(seed, eps, steps):
    """The TRADES inner maximisation: start x + 0.001 N (projected), ascend sum KL(p(x) || p(x'))
    with p(x) fixed."""
    x, y = batch(seed)
    model = linear_model(18, 4, seed)
    W, b = model[1].weight.data, model[1].bias.data
    p_clean = softmax(logits_of(model, x))
    got = attacks.pgd(model, x, y, eps, 0.01, steps, random_start="normal", loss="kl",
                      rng=np.random.default_rng(seed))
    want = naive_pgd_linear(W, b, x, y, eps, 0.01, steps,
                            start=projected_normal_start(x, eps, seed), p_clean=p_clean)
    np.testing.assert_array_equal(got, want)


def two_class_optimum(W, b, x, y, eps):
    """Exact worst case of a two-class linear model over the L-inf ball within [0, 1]: each pixel
    moves to the end of its interval that lowers the margin (z_y - z_other) most."""
    d = (W[1] - W[0]) * np.where(y == 1, 1, -1)[:, None]                           # (n, D)
    flat = x.reshape(len(x), -1)                                                   # (n, D)
    worst = np.where(d > 0, np.maximum(flat - eps, 0), np.minimum(flat + eps, 1))  # (n, D)
    margin = (d * worst).sum(axis=1) + (b[1] - b[0]) * np.where(y == 1, 1, -1)     # (n,)
    return margin > 0                                                              # robust?


@given(seed=st.integers(0, 2**31), eps=st.floats(0.01, 0.3))
def test_every_attack_finds_the_two_class_linear_optimum(seed, eps):
    """For two classes the CE gradient sign of a linear model is constant, so FGSM, PGD (with
    enough travel) and APGD all reach the exact worst case."""
    x, y = batch(seed, n=12, k=2)
    model = linear_model(18, 2, seed)
    W, b = model[1].weight.data, model[1].bias.data
    robust = two_class_optimum(W, b, x, y, eps)
    rng = np.random.default_rng(seed)
    for x_adv in (attacks.fgsm(model, x, y, eps),
                  attacks.pgd(model, x, y, eps, eps / 2, 5, rng=rng),
                  attacks.apgd_ce(model, x, y, eps, steps=10, rng=rng)):
        np.testing.assert_array_equal(logits_of(model, x_adv).argmax(axis=1) == y, robust)


def mlp_loss_grad(model):
    """(v (n, ...), y) -> per-sample CE, its input gradient and misclassified flags for
    mlp(..., batch_norm=False), written out with batched products (so that losses carry the
    same rounding as the model's):  z1 = v W1^T + b1,  z = relu(z1) W2^T + b2,
    g = ([z1 > 0] * ((softmax(z) - e_y) W2)) W1."""
    W1, b1, W2, b2 = (t.data for t in model.parameters())

    def loss_grad(v, y):
        z1 = v.reshape(len(v), -1) @ W1.T + b1                                     # (n, 16)
        z = np.where(z1 > 0, z1, 0) @ W2.T + b2                                    # (n, k)
        shifted = z - z.max(axis=1, keepdims=True)                                 # (n, k)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))       # (n, k)
        q, rows = np.exp(log_p), np.arange(len(v))                                 # (n, k) (n,)
        q[rows, y] -= 1
        g = np.where(z1 > 0, q @ W2, 0) @ W1                                       # (n, D)
        return -log_p[rows, y], g.reshape(v.shape), z.argmax(axis=1) != y

    return loss_grad


def naive_apgd(loss_grad, x0, y, eps, steps, t, rho=0.75):
    """APGD-CE following AutoAttack's loop, with every decision taken one sample at a time:
    counter-based checkpoints, step 2 eps halved (and a jump back to the best point) on
    oscillation or stagnation. All samples advance in lockstep so losses come from one batched
    call. t: the U(-1, 1) draws of the start, scaled per sample onto the ball's surface."""
    n = len(x0)

    def project(i, v):
        return np.clip(x0[i] + np.clip(v - x0[i], -eps, eps), 0, 1)

    x = np.stack([project(i, x0[i] + eps * (t[i] / (np.abs(t[i]).max() + 1e-12)))
                  for i in range(n)])                                              # (n, c, h, w)
    loss, g, fooled = loss_grad(x, y)
    best = [[x[i].copy(), loss[i], g[i].copy()] for i in range(n)]
    adv = [[x[i].copy(), fooled[i]] for i in range(n)]
    history, step, x_prev = [loss], [2 * eps] * n, x
    k, shrink, shortest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(
        int(0.06 * steps), 1)
    counter, best_at_check, halved_at_check = 0, list(loss), [True] * n
    for it in range(steps):
        a = 0.75 if it > 0 else 1.0
        new = np.empty_like(x)
        for i in range(n):
            z = project(i, x[i] + step[i] * np.sign(g[i]))
            new[i] = project(i, x[i] + a * (z - x[i]) + (1 - a) * (x[i] - x_prev[i]))
        x_prev, x = x, new
        loss, g, fooled = loss_grad(x, y)
        history.append(loss)
        counter += 1
        for i in range(n):
            if fooled[i]:
                adv[i] = [x[i].copy(), True]
            if loss[i] > best[i][1]:
                best[i] = [x[i].copy(), loss[i], g[i].copy()]
            if counter == k:
                rises = sum(history[-j][i] > history[-j - 1][i] for j in range(1, k + 1))
                stalled = not halved_at_check[i] and best_at_check[i] >= best[i][1]
                halve = rises <= rho * k or stalled
                halved_at_check[i], best_at_check[i] = halve, best[i][1]
                if halve:
                    step[i], x[i], g[i] = step[i] / 2, best[i][0], best[i][2]
        if counter == k:
            k, counter = max(k - shrink, shortest), 0
    return np.stack([adv[i][0] if adv[i][1] else best[i][0] for i in range(n)])


@given(seed=st.integers(0, 2**31), eps=st.floats(0.05, 0.5), steps=st.integers(1, 40))
def test_apgd_equals_naive_reference(seed, eps, steps):
    x, y = batch(seed, n=8)
    model = mlp(18, 4, seed)
    got = attacks.apgd_ce(model, x, y, eps, steps, rng=np.random.default_rng(seed))
    t = np.random.default_rng(seed).uniform(-1.0, 1.0, size=x.shape)
    np.testing.assert_array_equal(got, naive_apgd(mlp_loss_grad(model), x, y, eps, steps, t))


def test_apgd_checkpoints_match_autoattack_schedule():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = p_j * N
    assert attacks.apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert attacks.apgd_checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert attacks.apgd_checkpoints(1) == [1]


@given(seed=st.integers(0, 2**31), eps_max=st.floats(0.05, 0.2), search_steps=st.integers(4, 10))
def test_minimal_eps_brackets_the_exact_two_class_distance(seed, eps_max, search_steps):
    """Away from the box faces, a two-class linear model is fooled exactly when
    eps > margin / ||W_1 - W_0||_1; the bisection returns an upper end within eps_max / 2^k."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.3, 0.7, (10, 2, 3, 3))                                       # (n, c, h, w)
    model = linear_model(18, 2, seed)
    W = model[1].weight.data
    y = rng.integers(0, 2, 10)
    margin = (logits_of(model, x) * np.where(y == 1, 1, -1)[:, None]) @ [-1, 1]    # (n,)
    exact = margin / np.abs(W[1] - W[0]).sum()                                     # (n,)
    got = attacks.minimal_eps(model, x, y, eps_max=eps_max, search_steps=search_steps)
    assert np.all(got[exact < 0] == 0)
    assert np.all(np.isinf(got[exact > eps_max]))
    inside = (exact > 0) & (exact < eps_max * (1 - 1e-6))
    assert np.all(got[inside] >= exact[inside] - 1e-12)
    assert np.all(got[inside] <= exact[inside] + eps_max / 2 ** search_steps + 1e-12)


# ---- invariants ----------------------------------------------------------------------------------
attack_settings = st.fixed_dictionaries({
    "random_start": st.sampled_from(["none", "uniform", "normal", True, False]),
    "loss": st.sampled_from(["ce", "kl"]), "select": st.sampled_from(["last", "best"]),
    "restarts": st.integers(1, 3), "model_mode": st.sampled_from(["eval", "train"])})


@given(seed=st.integers(0, 2**31), eps=st.floats(0.0, 1.0), alpha=st.floats(0.0, 0.5),
       steps=st.integers(1, 5), settings=attack_settings)
def test_pgd_stays_in_the_ball_and_the_box_and_is_reproducible(seed, eps, alpha, steps, settings):
    x, y = batch(seed)
    model = mlp(18, 4, seed, batch_norm=True)
    run = [attacks.pgd(model, x, y, eps, alpha, steps, rng=np.random.default_rng(seed), **settings)
           for _ in range(2)]
    assert run[0].shape == x.shape and run[0].dtype == x.dtype
    assert np.abs(run[0] - x).max() <= eps + 1e-7
    assert run[0].min() >= 0 and run[0].max() <= 1
    np.testing.assert_array_equal(run[0], run[1])


@given(seed=st.integers(0, 2**31), eps=st.floats(0.0, 1.0), steps=st.integers(1, 30),
       restarts=st.integers(1, 2))
def test_fgsm_and_apgd_stay_in_the_ball_and_the_box(seed, eps, steps, restarts):
    x, y = batch(seed)
    model = mlp(18, 4, seed)
    outputs = [attacks.fgsm(model, x, y, eps)] + [
        attacks.apgd_ce(model, x, y, eps, steps, restarts, rng=np.random.default_rng(seed))
        for _ in range(2)]
    for x_adv in outputs:
        assert np.abs(x_adv - x).max() <= eps + 1e-7
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    np.testing.assert_array_equal(outputs[1], outputs[2])


def test_zero_eps_returns_the_clean_images(rng):
    x, y = batch(1)
    model = mlp(18, 4, 1)
    for x_adv in (attacks.pgd(model, x, y, 0.0, 0.1, 3, rng=rng), attacks.fgsm(model, x, y, 0.0),
                  attacks.apgd_ce(model, x, y, 0.0, 5, rng=rng)):
        np.testing.assert_array_equal(x_adv, x)


@given(seed=st.integers(0, 2**31), steps=st.integers(1, 8), loss=st.sampled_from(["ce", "kl"]))
def test_best_iterate_has_the_highest_loss_of_all_iterates(seed, steps, loss):
    """Runs of t <= steps steps from the same start are prefixes of one path, so the loss of
    select="best" must equal the largest last-iterate loss over t = 0 .. steps (t = 0 is the
    start, i.e. zero steps, computed with alpha = 0)."""
    x, y = batch(seed, n=10)
    model = mlp(18, 4, seed)
    p_clean = softmax(logits_of(model, x))

    def losses(x_adv):
        z = logits_of(model, x_adv)
        if loss == "ce":
            return ce_per_sample(z, y)
        return (p_clean * (np.log(p_clean) - np.log(softmax(z)))).sum(axis=1)

    def run(t, select="last", alpha=0.15):
        return attacks.pgd(model, x, y, 0.2, alpha, max(t, 1), loss=loss, select=select,
                           rng=np.random.default_rng(seed))

    path = [losses(run(1, alpha=0.0))] + [losses(run(t)) for t in range(1, steps + 1)]
    best = losses(run(steps, "best"))
    assert np.all(best >= path[-1])
    np.testing.assert_allclose(best, np.max(path, axis=0), rtol=1e-12)


@given(seed=st.integers(0, 2**31), steps=st.integers(1, 8))
def test_best_evaluated_is_the_highest_loss_among_the_first_t_points(seed, steps):
    """RBSN's PGD: the highest-loss point among x_0 .. x_{steps-1} (the points whose loss the
    steps computed), never the final iterate; the earliest on ties."""
    x, y = batch(seed, n=10)
    model = mlp(18, 4, seed)

    def run(t, select="last", alpha=0.15):
        return attacks.pgd(model, x, y, 0.2, alpha, max(t, 1), select=select,
                           rng=np.random.default_rng(seed))

    points = [run(1, alpha=0.0)] + [run(t) for t in range(1, steps)]      # x_0 .. x_{steps-1}
    losses = np.array([ce_per_sample(logits_of(model, p), y) for p in points])  # (steps, n)
    chosen = run(steps, "best_evaluated")
    for i, t in enumerate(losses.argmax(axis=0)):       # argmax: the earliest on ties
        np.testing.assert_array_equal(chosen[i], points[t][i])


def test_best_evaluated_never_returns_the_final_iterate():
    """Hand-built: one pixel, f(x) = (4 x, 0), label 1, so every step raises the loss and the
    final iterate x_3 is the worst point; "best" returns it, "best_evaluated" x_2, the worst of
    the evaluated points x_0, x_1, x_2 (alpha 0.05 from x = 0.5, no random start)."""
    model = Sequential(Flatten(), Linear(1, 2)).astype(np.float64)
    model.get_submodule("1").weight.data[...] = [[4.0], [0.0]]
    model.get_submodule("1").bias.data[...] = 0.0
    x, y = np.full((1, 1, 1, 1), 0.5), np.array([1])
    kw = dict(eps=0.3, alpha=0.05, steps=3, random_start="none")
    assert attacks.pgd(model, x, y, select="last", **kw).item() == pytest.approx(0.65)
    assert attacks.pgd(model, x, y, select="best", **kw).item() == pytest.approx(0.65)
    assert attacks.pgd(model, x, y, select="best_evaluated", **kw).item() == pytest.approx(0.60)


@given(seed=st.integers(0, 2**31), eps=st.floats(0.02, 0.3), steps=st.integers(1, 5))
def test_restarts_never_raise_robust_accuracy(seed, eps, steps):
    x, y = batch(seed, n=24)
    model = mlp(18, 4, seed)

    def correct(restarts, attack):
        x_adv = attack(model, x, y, eps, steps=steps, restarts=restarts,
                       rng=np.random.default_rng(seed))
        return logits_of(model, x_adv).argmax(axis=1) == y

    pgd = lambda *a, **kw: attacks.pgd(*a, alpha=eps / 3, **kw)   # noqa: E731
    for attack in (pgd, attacks.apgd_ce):
        one, two, three = correct(1, attack), correct(2, attack), correct(3, attack)
        assert np.all(two <= one) and np.all(three <= two)


# ---- model state ---------------------------------------------------------------------------------
class ModeSpy(Module):
    """Records the mode of every forward."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_attacks_use_the_requested_mode_and_restore_modes_and_flags(mode, rng):
    spy = ModeSpy()
    model = Sequential(spy, *mlp(18, 4, 0, batch_norm=True))
    model.train()
    model[3].eval()                            # a frozen BatchNorm inside a training model
    model[2].bias.requires_grad = False        # a frozen parameter
    flags = [p.requires_grad for p in model.parameters()]
    x, y = batch(0)
    attacks.pgd(model, x, y, 0.1, 0.05, 3, model_mode=mode, rng=rng)
    attacks.apgd_ce(model, x, y, 0.1, 4, model_mode=mode, rng=rng)
    attacks.fgsm(model, x, y, 0.1, model_mode=mode)
    assert spy.seen and set(spy.seen) == {mode == "train"}
    assert [m.training for m in model.modules()] == [True, True, True, True, False, True, True]
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())   # input gradients only


def test_attack_inside_no_grad_still_gets_input_gradients(rng):
    x, y = batch(2)
    model = linear_model(18, 4, 2)
    with ref.no_grad():
        x_adv = attacks.pgd(model, x, y, 0.1, 0.05, 2, random_start="none")
        assert not ref.is_grad_enabled()
    W, b = model[1].weight.data, model[1].bias.data
    np.testing.assert_array_equal(x_adv, naive_pgd_linear(W, b, x, y, 0.1, 0.05, 2))


def test_float32_in_float32_out(rng):
    x, y = batch(3)
    model = mlp(18, 4, 3).astype(np.float32)
    x32 = x.astype(np.float32)
    for x_adv in (attacks.pgd(model, x32, y, 0.1, 0.05, 2, rng=rng),
                  attacks.apgd_ce(model, x32, y, 0.1, 3, rng=rng)):
        assert x_adv.dtype == np.float32 and np.abs(x_adv - x32).max() <= 0.1 + 1e-7


# ---- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda m, x, y: attacks.pgd(m, x, y, -0.1, 0.1, 3), "eps must be >= 0"),
    (lambda m, x, y: attacks.fgsm(m, x, y, -1e-3), "eps must be >= 0"),
    (lambda m, x, y: attacks.apgd_ce(m, x, y, float("nan")), "eps must be >= 0"),
    (lambda m, x, y: attacks.pgd(m, x, y, 0.1, -0.1, 3), "alpha must be >= 0"),
    (lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.1, 0), "steps must be an integer >= 1"),
    (lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.1, 2.5), "steps must be an integer >= 1"),
    (lambda m, x, y: attacks.apgd_ce(m, x, y, 0.1, steps=0), "steps must be an integer >= 1"),
    (lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.1, 3, restarts=0), "restarts must be"),
    (lambda m, x, y: attacks.minimal_eps(m, x, y, search_steps=-1), "search_steps must be"),
    (lambda m, x, y: attacks.minimal_eps(m, x, y, eps_max=-1.0), "eps_max must be >= 0"),
    (lambda m, x, y: attacks.pgd(m, x * 1.5, y, 0.1, 0.1, 3), r"x must lie in \[0, 1\]"),
    (lambda m, x, y: attacks.fgsm(m, x - 0.5, y, 0.1), r"x must lie in \[0, 1\]"),
    (lambda m, x, y: attacks.pgd(m, np.full_like(x, np.nan), y, 0.1, 0.1, 3), r"x must lie in"),
    (lambda m, x, y: attacks.pgd(m, x, y + 4, 0.1, 0.1, 3), r"labels must lie in \[0, 4\)"),
    (lambda m, x, y: attacks.pgd(m, x, y + 4, 0.1, 0.1, 3, loss="kl"), r"labels must lie in"),
    (lambda m, x, y: attacks.apgd_ce(m, x, y + 4, 0.1), r"labels must lie in \[0, 4\)"),
    (lambda m, x, y: attacks.fgsm(m, x, y - 1, 0.1), "labels must be >= 0"),
    (lambda m, x, y: attacks.pgd(m, x, y[:-1], 0.1, 0.1, 3), r"y must be integer labels of shape"),
    (lambda m, x, y: attacks.fgsm(m, x, y.astype(float), 0.1), r"y must be integer labels"),
    (lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.1, 3, random_start="gauss"), "random_start"),
    (lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.1, 3, loss="mse"), "loss must be one of"),
    (lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.1, 3, select="first"), "select must be one of"),
    (lambda m, x, y: attacks.fgsm(m, x, y, 0.1, model_mode="test"), "model_mode must be one of"),
    (lambda m, x, y: attacks.fgsm(m, x[:0], y[:0], 0.1), "non-empty floating batch"),
])
def test_bad_input_raises_a_clear_value_error(call, match):
    x, y = batch(4)
    model = mlp(18, 4, 4)
    with pytest.raises(ValueError, match=match):
        call(model, x, y)


def test_arrays_of_another_type_raise_type_error():
    x, y = batch(5)
    with pytest.raises(TypeError, match="must be numpy arrays"):
        attacks.fgsm(mlp(18, 4, 5), x.tolist(), y, 0.1)
