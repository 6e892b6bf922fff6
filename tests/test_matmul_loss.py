"""matmul, linear, softmax family and losses: forward against the loops in reference.py, backward
by check_vjp, stability for large logits, reductions, bad input; an optional PyTorch cross-check."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ref
import reference
from ref.gradcheck import check_vjp

seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 4)
LOSS_REDUCTIONS = ["mean", "sum", "none"]
KL_REDUCTIONS = ["mean", "sum", "none", "batchmean"]


@given(batch=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3),
       m=sizes, k=sizes, n=sizes, seed=seeds)
def test_matmul_broadcast_forward_and_vjp(batch, m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = ref.Tensor(rng.standard_normal(batch.input_shapes[0] + (m, k)), requires_grad=True)
    b = ref.Tensor(rng.standard_normal(batch.input_shapes[1] + (k, n)), requires_grad=True)
    np.testing.assert_allclose((a @ b).data, reference.matmul(a.data, b.data), rtol=1e-12,
                               atol=1e-13)
    check_vjp(ref.ops.matmul, [a, b], rng)
    b.requires_grad = False
    check_vjp(ref.ops.matmul, [a, b], rng)


@given(n=sizes, i=sizes, o=sizes, with_bias=st.booleans(), seed=seeds)
def test_linear_forward_and_vjp(n, i, o, with_bias, seed):
    rng = np.random.default_rng(seed)
    x = ref.Tensor(rng.standard_normal((n, i)), requires_grad=True)
    W = ref.Tensor(rng.standard_normal((o, i)), requires_grad=True)
    b = ref.Tensor(rng.standard_normal(o), requires_grad=True) if with_bias else None
    y = ref.ops.linear(x, W, b)
    expected = reference.linear(x.data, W.data, None if b is None else b.data)
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-13)
    check_vjp(lambda *ts: ref.ops.linear(*ts), [x, W] + ([b] if with_bias else []), rng)


@pytest.mark.parametrize("call, message", [
    (lambda r: ref.ops.matmul(r((3,)), r((3, 2))), "2\\+ dimensions"),
    (lambda r: ref.ops.linear(r((2, 3, 4)), r((5, 4))), "must be \\(n, i\\) and \\(o, i\\)"),
    (lambda r: ref.ops.linear(r((2, 3)), r((5, 4))), "must be \\(n, i\\) and \\(o, i\\)"),
    (lambda r: ref.ops.linear(r((2, 4)), r((5, 4)), r((4,))), "bias shape"),
])
def test_matmul_and_linear_reject_bad_shapes(call, message, rng):
    with pytest.raises(ValueError, match=message):
        call(lambda shape: ref.Tensor(rng.standard_normal(shape)))


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), seed=seeds, data=st.data())
def test_log_softmax_and_softmax(shape, seed, data):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    z = ref.Tensor(3 * rng.standard_normal(shape), requires_grad=True)
    expected = reference.log_softmax(z.data, axis)
    np.testing.assert_allclose(ref.ops.log_softmax(z, axis).data, expected, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ref.ops.softmax(z, axis).data, np.exp(expected), rtol=1e-12,
                               atol=1e-15)
    check_vjp(lambda u: ref.ops.log_softmax(u, axis), [z], rng)
    check_vjp(lambda u: ref.ops.softmax(u, axis), [z], rng)


def test_softmax_family_is_stable_for_large_logits(rng):
    z = ref.Tensor(1e4 * rng.standard_normal((4, 6)), requires_grad=True)   # exp would overflow
    log_p = ref.ops.log_softmax(z)
    np.testing.assert_allclose(log_p.data, reference.log_softmax(z.data), rtol=1e-12, atol=1e-9)
    p = ref.ops.softmax(z)
    np.testing.assert_allclose(p.data.sum(axis=1), np.ones(4), rtol=1e-15)
    (log_p.sum() + p.sum()).backward()
    assert np.all(np.isfinite(z.grad))


@pytest.mark.parametrize("reduction", LOSS_REDUCTIONS)
@given(n=st.integers(1, 6), k=st.integers(1, 6), scale=st.sampled_from([1.0, 10.0, 1e4]),
       seed=seeds)
def test_cross_entropy_against_loop(reduction, n, k, scale, seed):
    rng = np.random.default_rng(seed)
    z = ref.Tensor(scale * rng.standard_normal((n, k)), requires_grad=True)
    labels = rng.integers(0, k, n)                                    # (n,)
    loss = ref.ops.cross_entropy(z, labels, reduction)
    expected = reference.cross_entropy(z.data, labels, reduction)
    np.testing.assert_allclose(loss.data, expected, rtol=1e-12, atol=1e-12 * scale)
    if scale < 1e4:   # finite differences of a loss ~1e4 are meaningless at eps=1e-6
        check_vjp(lambda u: ref.ops.cross_entropy(u, labels, reduction), [z], rng)
    else:
        loss.backward(np.ones(loss.shape))
        assert np.all(np.isfinite(z.grad))
        np.testing.assert_allclose(z.grad.sum(axis=1), np.zeros(n), atol=1e-12)


def test_cross_entropy_float32(rng):
    z = rng.standard_normal((8, 10)).astype(np.float32)              # (8, 10)
    labels = rng.integers(0, 10, 8).astype(np.int32)                  # (8,)
    loss = ref.ops.cross_entropy(ref.Tensor(z, requires_grad=True), labels)
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.data, reference.cross_entropy(z, labels), rtol=1e-6)


def positive_probabilities(rng, shape, zeros):
    """Rows of probabilities; with `zeros`, about a third of the entries are exactly 0."""
    p = rng.random(shape) + 0.05                                      # (shape)
    if zeros:
        p[rng.random(shape) < 0.35] = 0
    return p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300)


@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), seed=seeds)
def test_kl_div_against_loop(reduction, shape, seed):
    rng = np.random.default_rng(seed)
    log_q = ref.Tensor(reference.log_softmax(rng.standard_normal(shape)), requires_grad=True)
    p = ref.Tensor(positive_probabilities(rng, shape, zeros=True))
    value = ref.ops.kl_div(log_q, p, reduction)
    np.testing.assert_allclose(value.data, reference.kl_div(log_q.data, p.data, reduction),
                               rtol=1e-12, atol=1e-14)
    check_vjp(lambda u, v: ref.ops.kl_div(u, v, reduction), [log_q, p], rng)   # p: no grad
    p = ref.Tensor(positive_probabilities(rng, shape, zeros=False), requires_grad=True)
    check_vjp(lambda u, v: ref.ops.kl_div(u, v, reduction), [log_q, p], rng)


def test_kl_div_zero_target_contributes_nothing():
    log_q = ref.Tensor(np.array([[-50.0, np.log(0.5), np.log(0.5)]]), requires_grad=True)
    p = ref.Tensor(np.array([[0.0, 0.5, 0.5]]), requires_grad=True)
    value = ref.ops.kl_div(log_q, p, "sum")
    assert value.item() == 0.0
    value.backward()
    np.testing.assert_array_equal(log_q.grad, [[0, -0.5, -0.5]])
    np.testing.assert_array_equal(p.grad, [[0, 1, 1]])                # log p + 1 - log q, 0 at p=0


@pytest.mark.parametrize("call, error, message", [
    (lambda z: ref.ops.cross_entropy(z, np.array([0, 3])), ValueError, "lie in \\[0, 3\\)"),
    (lambda z: ref.ops.cross_entropy(z, np.array([-1, 0])), ValueError, "lie in \\[0, 3\\)"),
    (lambda z: ref.ops.cross_entropy(z, np.array([0.0, 1.0])), ValueError, "integers"),
    (lambda z: ref.ops.cross_entropy(z, np.array([0, 1, 2])), ValueError, "shape \\(2,\\)"),
    (lambda z: ref.ops.cross_entropy(z[0], np.array([0])), ValueError, "logits must be"),
    (lambda z: ref.ops.cross_entropy(z.reshape(1, 2, 3), np.array([0])), ValueError,
     "logits must be"),
    (lambda z: ref.ops.cross_entropy(z, np.array([0, 1]), "avg"), ValueError, "reduction"),
    (lambda z: ref.ops.cross_entropy(ref.Tensor(np.ones((2, 3), dtype=int)), np.array([0, 1])),
     TypeError, "floating"),
    (lambda z: ref.ops.kl_div(z, z.data[:, :2]), ValueError, "differ in shape"),
    (lambda z: ref.ops.kl_div(z, z.data, "avg"), ValueError, "reduction"),
])
def test_losses_reject_bad_input(call, error, message, rng):
    with pytest.raises(error, match=message):
        call(ref.Tensor(rng.standard_normal((2, 3)), requires_grad=True))


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")
@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
def test_losses_match_torch(reduction, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    labels = rng.integers(0, 4, 5)                                    # (5,)
    p = positive_probabilities(rng, (5, 4), zeros=True)               # (5, 4)
    pairs = [(lambda z: ref.ops.kl_div(ref.ops.log_softmax(z), p, reduction),
              lambda z: F.kl_div(torch.log_softmax(z, dim=1), torch.tensor(p),
                                 reduction=reduction))]
    if reduction != "batchmean":
        pairs.append((lambda z: ref.ops.cross_entropy(z, labels, reduction),
                      lambda z: F.cross_entropy(z, torch.tensor(labels), reduction=reduction)))
    for ours, theirs in pairs:
        z = ref.Tensor(rng.standard_normal((5, 4)), requires_grad=True)
        tz = torch.tensor(z.data, requires_grad=True)
        value, expected = ours(z), theirs(tz)
        gy = rng.standard_normal(value.shape)                         # (value.shape)
        value.backward(gy)
        expected.backward(torch.tensor(gy))
        np.testing.assert_allclose(value.data, expected.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(z.grad, tz.grad.numpy(), rtol=1e-12, atol=1e-14)
