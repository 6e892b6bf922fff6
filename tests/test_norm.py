"""batch_norm: forward and running statistics against the per-channel loop in reference.py,
backward by check_vjp in training and eval mode, hand-computed cases, errors, and a PyTorch
cross-check."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ref
import reference
from ref.gradcheck import check_vjp


@st.composite
def bn_cases(draw):
    """Keyword arguments of batch_norm (float64 arrays) plus the seed of the rng that made them."""
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    spatial = draw(st.sampled_from([(), (1, 1), (1, 3), (2, 3), (4, 1)]))
    training = draw(st.booleans())
    if training and n * int(np.prod(spatial)) == 1:
        n = 2                                         # one value per channel: no batch statistics
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    with_running = not training or draw(st.booleans())
    offset = rng.standard_normal(c).reshape((c,) + (1,) * len(spatial))   # per-channel mean
    case = dict(
        x=2 * rng.standard_normal((n, c) + spatial) + offset,
        running_mean=rng.standard_normal(c) if with_running else None,
        running_var=rng.random(c) + 0.5 if with_running else None,
        weight=rng.standard_normal(c) if draw(st.booleans()) else None,
        bias=rng.standard_normal(c) if draw(st.booleans()) else None,
        training=training, momentum=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        eps=draw(st.sampled_from([1e-5, 1e-3])), biased_running_var=draw(st.booleans()))
    return case, seed


def as_tensors(case, requires_grad):
    """The case with x, weight, bias as Tensors (requires_grad[i] for each) and copies of the
    running statistics."""
    out = dict(case)
    for name, needs in zip(["x", "weight", "bias"], requires_grad):
        if case[name] is not None:
            out[name] = ref.Tensor(case[name], requires_grad=needs)
    for name in ["running_mean", "running_var"]:
        out[name] = None if case[name] is None else case[name].copy()
    return out


@given(bn=bn_cases())
def test_forward_and_running_stats_match_loop(bn):
    case, _ = bn
    args = as_tensors(case, (False, False, False))
    running = args["running_mean"], args["running_var"]
    y = ref.ops.batch_norm(**args)
    expected, new_mean, new_var = reference.batch_norm(**case)
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)
    assert y.shape == case["x"].shape and y.dtype == np.float64
    if new_mean is not None:   # updated in place, in the arrays that were passed
        assert args["running_mean"] is running[0] and args["running_var"] is running[1]
        np.testing.assert_allclose(args["running_mean"], new_mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(args["running_var"], new_var, rtol=1e-12, atol=1e-14)


@given(bn=bn_cases(), needs=st.tuples(st.booleans(), st.booleans(), st.booleans())
       .filter(any))
def test_vjp_in_training_and_eval_mode(bn, needs):
    case, seed = bn
    args = as_tensors(case, needs)
    names = [name for name in ["x", "weight", "bias"] if isinstance(args[name], ref.Tensor)]
    if not any(args[name].requires_grad for name in names):
        args["x"].requires_grad = True

    def f(*tensors):   # running stats change on each training call; the output does not use them
        return ref.ops.batch_norm(**{**args, **dict(zip(names, tensors))})

    check_vjp(f, [args[name] for name in names], np.random.default_rng(seed))


def test_hand_computed_running_statistics():
    x = np.array([[1.0], [3.0]])                      # n = 2, c = 1: mean 2, biased var 1
    for biased, expected_var in [(False, 0.9 * 1 + 0.1 * 2), (True, 0.9 * 1 + 0.1 * 1)]:
        running_mean, running_var = np.zeros(1), np.ones(1)
        y = ref.ops.batch_norm(ref.Tensor(x), running_mean, running_var, training=True,
                               biased_running_var=biased)
        np.testing.assert_allclose(y.data, [[-1 / np.sqrt(1 + 1e-5)], [1 / np.sqrt(1 + 1e-5)]],
                                   rtol=1e-15)
        np.testing.assert_allclose(running_mean, [0.2], rtol=1e-15)
        np.testing.assert_allclose(running_var, [expected_var], rtol=1e-15)


def test_running_stats_passed_as_buffer_tensors_are_updated(rng):
    mean, var = ref.Tensor(np.zeros(3)), ref.Tensor(np.ones(3))
    x = ref.Tensor(rng.standard_normal((5, 3, 2, 2)) + 4, requires_grad=True)
    ref.ops.batch_norm(x, mean, var, training=True, momentum=1.0).sum().backward()
    np.testing.assert_allclose(mean.data, x.data.mean(axis=(0, 2, 3)), rtol=1e-14)
    np.testing.assert_allclose(var.data, x.data.var(axis=(0, 2, 3), ddof=1), rtol=1e-13)


def test_training_output_is_normalised_and_eval_uses_running_stats(rng):
    x = 3 * rng.standard_normal((6, 2, 3, 3)) + 5                    # (6, 2, 3, 3)
    y = ref.ops.batch_norm(ref.Tensor(x), None, None, training=True, eps=0.0).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-14)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-13)
    mean, var, weight, bias = np.array([1.0, -2.0]), np.array([4.0, 0.25]), np.ones(2), np.zeros(2)
    for batch in (x, x[:1]):                          # eval output does not depend on the batch
        y = ref.ops.batch_norm(ref.Tensor(batch), mean, var, weight, bias, eps=0.0).data
        np.testing.assert_allclose(y[0], (x[0] - mean[:, None, None]) / np.sqrt(var)[:, None, None],
                                   rtol=1e-14)
    np.testing.assert_array_equal(mean, [1.0, -2.0])  # eval leaves the running stats alone
    np.testing.assert_array_equal(var, [4.0, 0.25])


def test_eval_gradient_ignores_later_running_stat_updates(rng):
    x = ref.Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    weight = ref.Tensor(rng.standard_normal(3), requires_grad=True)
    mean, var = rng.standard_normal(3), rng.random(3) + 0.5
    y = ref.ops.batch_norm(x, mean, var, weight)
    expected_gw = ((x.data - mean) / np.sqrt(var + 1e-5)).sum(axis=0)   # (3,) for gy = 1
    ref.ops.batch_norm(ref.Tensor(rng.standard_normal((4, 3))), mean, var, training=True)
    y.backward(np.ones((4, 3)))
    np.testing.assert_allclose(weight.grad, expected_gw, rtol=1e-13)


def test_float32(rng):
    x = (rng.standard_normal((8, 4, 5, 5)) * 3 + 2).astype(np.float32)   # (8, 4, 5, 5)
    weight, bias = rng.standard_normal((2, 4)).astype(np.float32)          # (4,) each
    for training in (True, False):
        mean, var = np.zeros(4, np.float32), np.ones(4, np.float32)
        y = ref.ops.batch_norm(ref.Tensor(x, requires_grad=True), mean, var, ref.Tensor(weight),
                               ref.Tensor(bias), training=training)
        expected, new_mean, new_var = reference.batch_norm(
            x.astype(np.float64), np.zeros(4), np.ones(4), weight, bias, training)
        assert y.dtype == mean.dtype == var.dtype == np.float32
        np.testing.assert_allclose(y.data, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mean, new_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, new_var, rtol=1e-5)
        y.backward(np.ones(x.shape, np.float32))


@pytest.mark.parametrize("shape, kwargs, message", [
    ((2, 3, 4), {}, "must be \\(n, c, h, w\\) or \\(n, c\\)"),
    ((6,), {}, "must be \\(n, c, h, w\\) or \\(n, c\\)"),
    ((2, 3), dict(weight=np.ones(4)), "weight has shape \\(4,\\)"),
    ((2, 3, 2, 2), dict(bias=np.ones((3, 1))), "bias has shape \\(3, 1\\)"),
    ((2, 3), dict(running_mean=np.zeros(2), running_var=np.ones(2)), "running_mean has shape"),
    ((2, 3), dict(running_mean=np.zeros(3), running_var=None, training=True), "both"),
    ((2, 3), dict(running_mean=None, running_var=None), "eval\\) needs running"),
    ((1, 3), dict(training=True), "more than 1 value per channel"),
    ((1, 3, 1, 1), dict(training=True), "more than 1 value per channel"),
    ((0, 3), dict(training=True), "more than 1 value per channel"),
    ((2, 3), dict(training=True, momentum=None), "momentum"),
    ((2, 3), dict(training=True, momentum=1.5), "momentum"),
])
def test_bad_arguments_raise(shape, kwargs, message, rng):
    args = dict(running_mean=np.zeros(shape[1] if len(shape) > 1 else 1),
                running_var=np.ones(shape[1] if len(shape) > 1 else 1))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ref.ops.batch_norm(ref.Tensor(rng.standard_normal(shape)), **args)


def test_integer_input_raises():
    with pytest.raises(TypeError, match="floating"):
        ref.ops.batch_norm(ref.Tensor(np.ones((2, 3), dtype=int)), None, None, training=True)


@pytest.mark.parametrize("shape", [(4, 3, 5, 2), (6, 3)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_torch(shape, training, affine, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape) * 2 + 1                            # (shape)
    weight, bias = (rng.standard_normal(3), rng.standard_normal(3)) if affine else (None, None)
    mean, var = rng.standard_normal(3), rng.random(3) + 0.5
    gy = rng.standard_normal(shape)                                   # (shape)
    ours = [ref.Tensor(a, requires_grad=True) if a is not None else None for a in (x, weight, bias)]
    theirs = [torch.tensor(a, requires_grad=True) if a is not None else None
              for a in (x, weight, bias)]
    torch_mean, torch_var = torch.tensor(mean), torch.tensor(var)
    y = ref.ops.batch_norm(ours[0], mean, var, ours[1], ours[2], training, momentum=0.3)
    torch_y = torch.nn.functional.batch_norm(theirs[0], torch_mean, torch_var, theirs[1],
                                             theirs[2], training, momentum=0.3)
    y.backward(gy)
    torch_y.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.data, torch_y.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(mean, torch_mean.numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(var, torch_var.numpy(), rtol=1e-13)
    for t, torch_t in zip(ours, theirs):
        if t is not None:
            np.testing.assert_allclose(t.grad, torch_t.grad.numpy(), rtol=1e-11, atol=1e-12)
