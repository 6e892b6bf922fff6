"""Optimizers against scalar loops written from their documented formulas (and against
torch.optim when torch imports); schedules against hand-computed values; state round trips."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ref
from ref.optim import SGD, SGDW, Adam, Cosine, LinearWarmup, MultiStep, Piecewise

SHAPES = [(3, 4), (5,), (2, 1, 3)]


# ---- scalar references: one float at a time, formulas as documented -----------------------------
def sgd_reference(p0, grads, lrs, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    """torch.optim.SGD's documented algorithm; grads[t] is None when p has no gradient at step t."""
    p, buf = [float(v) for v in p0.ravel()], [None] * p0.size
    for g_t, lr in zip(grads, lrs):
        if g_t is None:
            continue
        for j, g in enumerate(g_t.ravel().tolist()):
            g = g + weight_decay * p[j]
            if momentum:
                buf[j] = g if buf[j] is None else momentum * buf[j] + (1 - dampening) * g
                g = g + momentum * buf[j] if nesterov else buf[j]
            p[j] -= lr * g
    return np.array(p).reshape(p0.shape)


def sgdw_reference(p0, grads, lrs, momentum=0.9, weight_decay=5e-4, nesterov=False):
    """tfa SGDW (ALGORITHMS.md 7.4): theta -= wd_t theta; v = m v - lr g; theta += v, with the
    decay scheduled like the lr: wd_t = wd lr_t / lr_0."""
    p, v = [float(x) for x in p0.ravel()], [0.0] * p0.size
    for g_t, lr in zip(grads, lrs):
        if g_t is None:
            continue
        wd_t = weight_decay * lr / lrs[0]
        for j, g in enumerate(g_t.ravel().tolist()):
            p[j] = p[j] - wd_t * p[j]
            v[j] = momentum * v[j] - lr * g
            p[j] += momentum * v[j] - lr * g if nesterov else v[j]
    return np.array(p).reshape(p0.shape)


def adam_reference(p0, grads, lrs, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """Adam (Kingma & Ba, Algorithm 1) with L2 decay in the gradient and a per-parameter t."""
    b1, b2 = betas
    p, m, v, t = [float(x) for x in p0.ravel()], [0.0] * p0.size, [0.0] * p0.size, 0
    for g_t, lr in zip(grads, lrs):
        if g_t is None:
            continue
        t += 1
        for j, g in enumerate(g_t.ravel().tolist()):
            g = g + weight_decay * p[j]
            m[j] = b1 * m[j] + (1 - b1) * g
            v[j] = b2 * v[j] + (1 - b2) * g * g
            m_hat, v_hat = m[j] / (1 - b1 ** t), v[j] / (1 - b2 ** t)
            p[j] -= lr * m_hat / (math.sqrt(v_hat) + eps)
    return np.array(p).reshape(p0.shape)


REFERENCES = {SGD: sgd_reference, SGDW: sgdw_reference, Adam: adam_reference}


def problem(seed, steps, dtype=np.float64, none_rate=0.0):
    """Initial values, per-step gradients (None with probability none_rate) and lrs."""
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[None if rng.random() < none_rate else rng.standard_normal(s).astype(dtype)
              for _ in range(steps)] for s in SHAPES]
    lrs = [float(lr) for lr in rng.uniform(0.01, 0.2, steps)]
    return p0, grads, lrs


def run(cls, kwargs, params, grads, lrs, optimizer=None, first_step=0):
    """Steps first_step .. len(lrs) - 1 with the given gradients, setting the lr before each."""
    optimizer = optimizer or cls(params, lr=lrs[0], **kwargs)
    for t in range(first_step, len(lrs)):
        for p, g in zip(params, grads):
            p.grad = g[t]
        optimizer.lr = lrs[t]
        optimizer.step()
    return optimizer


def tensors(arrays):
    return [ref.Tensor(a.copy(), requires_grad=True) for a in arrays]


OPTIMIZER_CASES = st.one_of(
    st.builds(lambda m, d, n, wd: (SGD, dict(momentum=m, dampening=0.0 if n else d,
                                             nesterov=n and m > 0, weight_decay=wd)),
              st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.3]), st.booleans(),
              st.sampled_from([0.0, 1e-2])),
    st.builds(lambda m, n, wd: (SGDW, dict(momentum=m, nesterov=n, weight_decay=wd)),
              st.sampled_from([0.0, 0.9]), st.booleans(), st.sampled_from([0.0, 5e-4, 0.05])),
    st.builds(lambda b1, wd: (Adam, dict(betas=(b1, 0.99), eps=1e-8, weight_decay=wd)),
              st.sampled_from([0.0, 0.9]), st.sampled_from([0.0, 1e-2])))


@given(case=OPTIMIZER_CASES, steps=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_optimizers_match_scalar_reference(case, steps, seed):
    cls, kwargs = case
    p0, grads, lrs = problem(seed, steps, none_rate=0.3)
    params = tensors(p0)
    run(cls, kwargs, params, grads, lrs)
    for p, a, g in zip(params, p0, grads):
        expected = REFERENCES[cls](a, g, lrs, **kwargs)
        np.testing.assert_allclose(p.data, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls, kwargs", [
    (SGD, dict(momentum=0.9, weight_decay=1e-2)), (SGDW, dict(weight_decay=1e-2)),
    (Adam, dict(weight_decay=1e-2))])
def test_parameters_without_grad_untouched_and_updated_in_place(cls, kwargs, rng):
    W, b = tensors([rng.standard_normal((3, 2)), rng.standard_normal(2)])
    W_data, b_data, b_before = W.data, b.data, b.data.copy()
    optimizer = cls([W, b], lr=0.1, **kwargs)
    W.grad = rng.standard_normal((3, 2))
    optimizer.step()
    assert optimizer.state[1] == {} and np.array_equal(b.data, b_before)
    assert W.data is W_data and b.data is b_data and optimizer.params[0] is W
    optimizer.zero_grad()
    assert W.grad is None and b.grad is None and optimizer.step_count == 1


@pytest.mark.parametrize("cls", [SGD, SGDW, Adam])
def test_float32_stays_float32(cls):
    p0, grads, lrs = problem(1, 3, dtype=np.float32)
    params = tensors(p0)
    optimizer = run(cls, dict(momentum=0.9) if cls is not Adam else {}, params, grads, lrs)
    assert all(p.dtype == np.float32 for p in params)
    arrays = [v for v in optimizer.state_dict().values() if hasattr(v, "dtype")]
    assert arrays and all(a.dtype == np.float32 for a in arrays)


def test_sgdw_equals_sgd_momentum_only_while_lr_is_constant():
    """Keras' v = m v - lr g is -lr times torch's buf while lr is fixed, and not after a change."""
    p0, grads, _ = problem(7, 4)
    results = {}
    for lrs in ([0.1] * 4, [0.1, 0.1, 0.01, 0.01]):
        for cls, kwargs in ((SGD, dict(momentum=0.9)), (SGDW, dict(momentum=0.9, weight_decay=0))):
            params = tensors(p0)
            run(cls, kwargs, params, grads, lrs)
            results[cls, lrs[-1]] = params[0].data
    np.testing.assert_allclose(results[SGDW, 0.1], results[SGD, 0.1], rtol=1e-12)
    assert not np.allclose(results[SGDW, 0.01], results[SGD, 0.01], rtol=1e-6)


def test_sgdw_one_step_by_hand():
    """theta = 2, g = 0.5, lr 0.1, wd 0.01, v = 0: theta1 = 1.98, v = -0.05, theta = 1.93;
    after the lr drops to 0.01 the decay drops to 0.001 with it."""
    theta = ref.Tensor(np.array([2.0]), requires_grad=True)
    optimizer = SGDW([theta], lr=0.1, momentum=0.9, weight_decay=0.01)
    theta.grad = np.array([0.5])
    optimizer.step()
    assert theta.data[0] == pytest.approx(1.93, abs=1e-15)
    optimizer.lr = 0.01
    assert optimizer.decay == pytest.approx(0.001, rel=1e-15)
    optimizer.step()   # v = 0.9 (-0.05) - 0.005 = -0.05; theta = 1.93 (1 - 0.001) - 0.05
    assert theta.data[0] == pytest.approx(1.93 * 0.999 - 0.05, abs=1e-15)


TORCH_SGD_CASES = [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
                   dict(momentum=0.5, dampening=0.3, weight_decay=5e-4), dict(weight_decay=1e-2)]


@pytest.mark.parametrize("cls, kwargs", [(SGD, k) for k in TORCH_SGD_CASES]
                         + [(Adam, dict(weight_decay=1e-2)), (Adam, dict(betas=(0.5, 0.9)))])
def test_matches_torch_optim(cls, kwargs):
    torch = pytest.importorskip("torch")
    p0, grads, lrs = problem(3, 5, none_rate=0.2)
    params = tensors(p0)
    run(cls, kwargs, params, grads, lrs)
    torch_params = [torch.tensor(a, requires_grad=True) for a in p0]
    torch_cls = torch.optim.SGD if cls is SGD else torch.optim.Adam
    optimizer = torch_cls(torch_params, lr=lrs[0], foreach=False, **kwargs)
    for t, lr in enumerate(lrs):
        for p, g in zip(torch_params, grads):
            p.grad = None if g[t] is None else torch.tensor(g[t])
        optimizer.param_groups[0]["lr"] = lr
        optimizer.step()
    for p, q in zip(params, torch_params):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls, kwargs", [
    (SGD, dict(momentum=0.9, nesterov=True, weight_decay=1e-2)),
    (SGD, dict(momentum=0.9, dampening=0.1)),
    (SGDW, dict(momentum=0.9, weight_decay=5e-3)), (Adam, dict(weight_decay=1e-3))])
def test_state_dict_resume_is_bit_exact(cls, kwargs):
    """3 steps, state_dict into a fresh optimizer, 2 more steps == 5 uninterrupted steps."""
    p0, grads, lrs = problem(11, 5, dtype=np.float32, none_rate=0.2)
    params = tensors(p0)
    optimizer = run(cls, kwargs, params, grads, lrs[:3])
    resumed_params = tensors([p.data for p in params])
    resumed = cls(resumed_params, lr=0.5, **kwargs)
    resumed.load_state_dict(optimizer.state_dict())
    assert resumed.lr == lrs[2] and resumed.step_count == 3
    run(cls, kwargs, params, grads, lrs, optimizer=optimizer, first_step=3)
    run(cls, kwargs, resumed_params, grads, lrs, optimizer=resumed, first_step=3)
    for p, q in zip(params, resumed_params):
        assert np.array_equal(p.data, q.data) and p.dtype == q.dtype
    state, resumed_state = optimizer.state_dict(), resumed.state_dict()
    assert state.keys() == resumed_state.keys()
    for key, value in state.items():
        assert np.array_equal(value, resumed_state[key]), key


def test_load_state_dict_errors_name_the_entry(rng):
    params = tensors([rng.standard_normal(s) for s in SHAPES])
    optimizer = run(SGD, dict(momentum=0.9), params, [[rng.standard_normal(s)] for s in SHAPES],
                    [0.1])
    state = optimizer.state_dict()
    fresh = SGD(tensors([rng.standard_normal(s) for s in SHAPES]), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="num_params=3"):
        SGD(tensors([rng.standard_normal(3)]), lr=0.1).load_state_dict(state)
    wrong_shape = SGD(tensors([rng.standard_normal((4, 3)), *(p.data for p in params[1:])]),
                      lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"momentum_buffer\.0: saved \(3, 4\)"):
        wrong_shape.load_state_dict(state)
    with pytest.raises(KeyError, match=r"unexpected \['momentum_buffer\.0'"):
        Adam(fresh.params, lr=0.1).load_state_dict(state)
    with pytest.raises(KeyError, match=r"missing \['lr'\]"):
        fresh.load_state_dict({k: v for k, v in state.items() if k != "lr"})
    with pytest.raises(KeyError, match="initial_lr"):
        SGDW(fresh.params, lr=0.1).load_state_dict(state)
    assert fresh.state == [{}, {}, {}] and wrong_shape.step_count == 0


def test_bad_arguments_raise_clear_errors(rng):
    p = ref.Tensor(rng.standard_normal(3), requires_grad=True)
    with pytest.raises(ValueError, match="params is empty"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"params\[1\]"):
        SGD([p, np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr must be"):
        SGD([p], lr=-0.1)
    with pytest.raises(ValueError, match="lr must be"):
        SGD([p], lr=0.1).lr = float("nan")
    with pytest.raises(ValueError, match="lr must be > 0"):
        SGDW([p], lr=0.0)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="momentum"):
        SGD([p], lr=0.1, momentum=-0.5)


# ---- schedules -----------------------------------------------------------------------------------
def test_cosine_by_hand():
    cosine = Cosine(0.1, 100)
    assert cosine(0) == 0.1 and cosine(50) == pytest.approx(0.05, rel=1e-15)
    assert cosine(100) == pytest.approx(0.0, abs=1e-17)
    assert cosine(25) == pytest.approx(0.05 * (1 + math.sqrt(0.5)), rel=1e-15)
    hydra = Cosine(0.1, 100, hydra_offset=True)   # HYDRA: epoch 1 runs at exactly base_lr
    assert hydra(1) == 0.1 and hydra(51) == pytest.approx(0.05, rel=1e-15)
    assert hydra(0) == pytest.approx(0.05 * (1 + math.cos(math.pi / 100)), rel=1e-15)
    assert hydra(0) < 0.1
    assert repr(hydra) == "Cosine(base_lr=0.1, epochs=100, hydra_offset=True)"


def test_multistep_by_hand():
    step = MultiStep(0.1, [75, 50])
    assert [step(e) for e in (0, 49.99, 50, 74.5, 75, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rel=1e-15)
    # BCS: 10 iterations per epoch, 4 epochs, boundaries int(40 * 0.5) = 20 and 30 iterations;
    # Keras keeps the old value at iteration == boundary
    keras = MultiStep(0.1, [20 / 10, 30 / 10], strict=True)
    assert [keras(i / 10) for i in (20, 21, 30, 31)] == pytest.approx(
        [0.1, 0.01, 0.01, 0.001], rel=1e-15)
    assert repr(step) == "MultiStep(base_lr=0.1, milestones=[50, 75], gamma=0.1, strict=False)"


def test_piecewise_by_hand():
    schedule = Piecewise([(0, 0.0), (40, 0.2), (100, 0.0)])
    assert [schedule(e) for e in (-1, 0, 10, 40, 70, 100, 150)] == pytest.approx(
        [0.0, 0.0, 0.05, 0.2, 0.1, 0.0, 0.0], rel=1e-15, abs=1e-17)
    assert repr(schedule) == "Piecewise([(0.0, 0.0), (40.0, 0.2), (100.0, 0.0)])"
    with pytest.raises(ValueError, match="strictly increasing"):
        Piecewise([(0, 0.1), (0, 0.2)])


def test_linear_warmup_by_hand():
    warm = LinearWarmup(Cosine(0.1, 10), warmup_epochs=2)
    assert warm(0) == 0.0 and warm(1) == pytest.approx(0.5 * Cosine(0.1, 10)(1), rel=1e-15)
    assert warm(2) == Cosine(0.1, 10)(2) and warm(7.5) == Cosine(0.1, 10)(7.5)
    start = LinearWarmup(lambda e: 0.2, warmup_epochs=4, start_factor=0.1)
    assert [start(e) for e in (0, 2, 4, 8)] == pytest.approx([0.02, 0.11, 0.2, 0.2], rel=1e-15)
    assert repr(warm).startswith("LinearWarmup(Cosine(base_lr=0.1, epochs=10")
    with pytest.raises(TypeError, match="callable"):
        LinearWarmup(0.1, 5)
    with pytest.raises(ValueError, match="epochs"):
        Cosine(0.1, 0)
