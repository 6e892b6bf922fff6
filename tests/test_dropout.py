"""dropout: reproducible masks, the kept fraction and the mean within binomial bounds, the values
x / (1 - p) or 0, identity in eval, p = 1, backward by check_vjp with a fixed seed, bad input."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ref
from ref.gradcheck import check_vjp

probabilities = st.sampled_from([0.1, 0.25, 0.5, 0.8])


def test_same_seed_gives_same_mask(rng):
    x = ref.Tensor(rng.standard_normal((6, 7)) + 10)                  # never 0: y = 0 iff dropped
    first = ref.ops.dropout(x, 0.5, rng=np.random.default_rng(3)).data
    again = ref.ops.dropout(x, 0.5, rng=np.random.default_rng(3)).data
    other = ref.ops.dropout(x, 0.5, rng=np.random.default_rng(4)).data
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first == 0, other == 0)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_and_mean_within_binomial_bounds(p):
    size = 200_000
    x = ref.Tensor(np.ones(size))
    y = ref.ops.dropout(x, p, rng=np.random.default_rng(11)).data
    kept = np.count_nonzero(y)
    sigma = np.sqrt(size * p * (1 - p))                               # binomial standard deviation
    assert abs(kept - size * (1 - p)) < 5 * sigma
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-15)


@pytest.mark.parametrize("p", [0.2, 0.7])
def test_expectation_is_preserved(p, rng):
    draws = 4000
    x = ref.Tensor(rng.standard_normal(30))                           # (30,)
    mask_rng = np.random.default_rng(5)
    average = sum(ref.ops.dropout(x, p, rng=mask_rng).data for _ in range(draws)) / draws
    sigma = np.abs(x.data) * np.sqrt(p / (1 - p))                      # std of one draw of y
    assert np.all(np.abs(average - x.data) <= 5 * sigma / np.sqrt(draws))


@given(p=probabilities, seed=st.integers(0, 2**32 - 1),
       shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple))
def test_values_and_gradient_follow_the_mask(p, seed, shape):
    rng = np.random.default_rng(seed)
    x = ref.Tensor(rng.standard_normal(shape) + 10, requires_grad=True)   # never 0
    y = ref.ops.dropout(x, p, rng=np.random.default_rng(seed))
    kept = y.data != 0                                                 # (shape)
    np.testing.assert_allclose(y.data, np.where(kept, x.data / (1 - p), 0), rtol=1e-15)
    gy = rng.standard_normal(shape)                                    # (shape)
    y.backward(gy)
    np.testing.assert_allclose(x.grad, np.where(kept, gy / (1 - p), 0), rtol=1e-15)
    check_vjp(lambda t: ref.ops.dropout(t, p, rng=np.random.default_rng(seed)), [x], rng)


def test_eval_and_p_zero_are_identity(rng):
    x = ref.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    assert ref.ops.dropout(x, 0.5, training=False) is x
    assert ref.ops.dropout(x, 0.0, rng=np.random.default_rng(0)) is x


def test_p_one_zeroes_everything(rng):
    x = ref.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    y = ref.ops.dropout(x, 1.0)
    np.testing.assert_array_equal(y.data, np.zeros((3, 4)))
    y.backward(np.ones((3, 4)))
    np.testing.assert_array_equal(x.grad, np.zeros((3, 4)))


def test_float32_and_default_rng():
    x = ref.Tensor(np.ones((100, 100), dtype=np.float32))
    y = ref.ops.dropout(x, 0.5)                                        # fresh default_rng()
    assert y.dtype == np.float32
    assert set(np.unique(y.data)) == {0.0, 2.0}


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_bad_probability_raises(p):
    with pytest.raises(ValueError, match="p must be a probability"):
        ref.ops.dropout(ref.Tensor(np.ones(3)), p)


def test_bad_rng_raises():
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        ref.ops.dropout(ref.Tensor(np.ones(3)), 0.5, rng=7)
