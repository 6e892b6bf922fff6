"""The autograd engine: graph building, gradient accumulation, graph release, needs_grad, errors."""
import numpy as np
import pytest

import ref
from ref.tensor import Op


def leaf(rng, shape, requires_grad=True):
    return ref.Tensor(rng.standard_normal(shape), requires_grad=requires_grad)


def test_leaf_used_twice_gets_summed_gradient(rng):
    x = leaf(rng, (3, 4))
    (x * x + x).sum().backward()              # d/dx (x^2 + x) = 2x + 1
    np.testing.assert_allclose(x.grad, 2 * x.data + 1, rtol=1e-15)


def test_diamond_graph(rng):
    a = leaf(rng, (5,))
    b, c = a * 2.0, a * 3.0                   # two paths from a to d
    d = (b * c + b).sum()                     # 6 a^2 + 2 a
    d.backward()
    np.testing.assert_allclose(a.grad, 12 * a.data + 2, rtol=1e-14)


def test_unused_leaf_keeps_no_gradient(rng):
    x, z = leaf(rng, (3,)), leaf(rng, (3,))
    (x * 2.0 + z.detach()).sum().backward()
    assert z.grad is None
    np.testing.assert_array_equal(x.grad, np.full(3, 2.0))


def test_no_grad_builds_no_graph(rng):
    x = leaf(rng, (2, 3))
    with ref.no_grad():
        assert not ref.is_grad_enabled()
        y = (x * x).sum()
    assert ref.is_grad_enabled()
    assert y.op is None and not y.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_restores_state_after_an_exception():
    with pytest.raises(KeyError):
        with ref.no_grad():
            raise KeyError("inside")
    assert ref.is_grad_enabled()


def test_backward_needs_gy_for_non_scalar_and_checks_its_shape(rng):
    y = leaf(rng, (2, 3)) * 2.0
    with pytest.raises(RuntimeError, match="one-element"):
        y.backward()
    with pytest.raises(ValueError, match="gy shape"):
        y.backward(np.ones((3, 2)))
    x = leaf(rng, (2, 3))
    gy = rng.standard_normal((2, 3))
    (x * 3.0).backward(gy)
    np.testing.assert_allclose(x.grad, 3 * gy, rtol=1e-15)


def test_backward_twice_accumulates_when_graph_is_rebuilt(rng):
    x, w = leaf(rng, (4,)), leaf(rng, (4,))
    for _ in range(2):
        (x * w).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * w.data, rtol=1e-15)
    np.testing.assert_allclose(w.grad, 2 * x.data, rtol=1e-15)


def test_backward_through_a_freed_graph_raises(rng):
    x = leaf(rng, (4,))
    h = x * 2.0
    (h * h).sum().backward()
    first = x.grad.copy()
    with pytest.raises(RuntimeError, match="already freed"):
        h.sum().backward()                    # h's op was released by the first backward
    np.testing.assert_array_equal(x.grad, first)


def test_leaf_gradients_are_fresh_arrays(rng):
    a, b = leaf(rng, (3,)), leaf(rng, (3,))
    gy = rng.standard_normal(3)
    (a + b).backward(gy)                      # add passes gy through unchanged to both inputs
    assert not np.shares_memory(a.grad, b.grad)
    assert not np.shares_memory(a.grad, gy)
    a.grad *= 0                               # in-place use of one gradient leaves the others
    np.testing.assert_array_equal(b.grad, gy)


def test_deep_chain_does_not_hit_recursion_limit():
    x = ref.Tensor(np.zeros(2), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_array_equal(y.data, np.full(2, 5000.0))
    np.testing.assert_array_equal(x.grad, np.ones(2))
    for _ in range(5000):                     # an unreleased deep graph must also free cleanly
        y = y + 1.0
    del y


class Probe(Op):
    """y = a + b + c with gradients only for the inputs that want one, recording needs_grad."""

    seen = []

    def forward(self, a, b, c):
        Probe.seen.append(self.needs_grad)
        return a + b + c

    def backward(self, gy):
        return tuple(gy if need else None for need in self.needs_grad)


def test_needs_grad_tells_which_inputs_want_a_gradient(rng):
    Probe.seen.clear()
    x, const = leaf(rng, (3,)), leaf(rng, (3,), requires_grad=False)
    y = Probe.apply(x, const, 2.0)
    with ref.no_grad():
        z = Probe.apply(x, const, 2.0)
    assert Probe.seen == [(True, False, False), (False, False, False)]
    assert y.op is not None and z.op is None
    y.backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, np.ones(3))


@pytest.mark.parametrize("op", [ref.ops.add, ref.ops.sub, ref.ops.mul, ref.ops.div,
                                ref.ops.matmul])
@pytest.mark.parametrize("first_needs", [True, False])
def test_builtin_ops_compute_no_unneeded_gradient(rng, op, first_needs):
    a = ref.Tensor(rng.standard_normal((3, 3)) + 3, requires_grad=first_needs)
    b = ref.Tensor(rng.standard_normal((3, 3)) + 3, requires_grad=not first_needs)
    y = op(a, b)
    ga, gb = y.op.backward(np.ones((3, 3)))
    assert (ga is None) != first_needs and (gb is None) == first_needs


def test_op_without_tensor_input_raises():
    with pytest.raises(TypeError, match="at least one input must be a Tensor"):
        ref.ops.add(np.ones(2), np.ones(2))


def test_repr_shows_shape_dtype_and_op(rng):
    x = ref.Tensor(np.zeros((2, 3), dtype=np.float32), requires_grad=True)
    y = x * 2.0
    assert repr(x) == "Tensor(shape=(2, 3), dtype=float32, requires_grad=True)"
    assert repr(y) == "Tensor(shape=(2, 3), dtype=float32, requires_grad=True, op=Mul)"
    assert repr(ref.Tensor([1, 2])) == "Tensor(shape=(2,), dtype=int64)"


def test_detach_shares_data_and_cuts_the_graph(rng):
    x = leaf(rng, (3,))
    h = x * 2.0
    d = h.detach()
    assert d.data is h.data and d.op is None and not d.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        (d * 3.0).sum().backward()


def test_only_floating_tensors_require_grad():
    with pytest.raises(TypeError, match="only floating"):
        ref.Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(TypeError, match="already a Tensor"):
        ref.Tensor(ref.Tensor(np.ones(2)))


def test_array_facts_and_comparisons(rng):
    x = ref.Tensor(np.array([[-1.0, 0.0, 2.0]]))
    assert (x.shape, x.ndim, x.size, len(x), x.dtype) == ((1, 3), 2, 3, 1, np.float64)
    np.testing.assert_array_equal(x > 0, [[False, False, True]])
    np.testing.assert_array_equal(x <= ref.Tensor(np.zeros((1, 3))), [[True, True, False]])
    assert ref.Tensor(np.array([2.5])).item() == 2.5
