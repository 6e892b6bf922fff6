"""Tensor, Op and reverse-mode differentiation: the only autograd code in the project.

A Tensor wraps one array (`data`). An Op turns input arrays into an output array (`forward`) and
turns the output gradient into input gradients (`backward`). `Op.apply` runs `forward` and, when
any input requires a gradient, records the op on the output so that `Tensor.backward()` can walk
the graph in reverse topological order and accumulate

    grad[input] += op.backward(grad[output])[i]     for every op, outputs before inputs.

Only leaf tensors (made by the user, `requires_grad=True`) keep `.grad`; intermediate gradients
are dropped as soon as they have been propagated, and each op is released after its backward runs
(like PyTorch without `retain_graph`), so saved buffers are freed as early as possible.

Backend: `Tensor.xp` is the array module (numpy here, cupy in `gpu.Tensor`) and `Tensor.ops` the op
package of the same backend. Code above the ops uses only these two attributes, never `numpy` or
`cupy` directly, so it runs unchanged on both backends.
"""
import contextlib

import numpy as np

_grad_enabled = True


@contextlib.contextmanager
def set_grad_enabled(mode):
    """Within this block ops record (mode True) or not (mode False); the previous state returns."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, bool(mode)
    try:
        yield
    finally:
        _grad_enabled = previous


def no_grad():
    """Within this block ops record nothing, so no graph is built and nothing is saved."""
    return set_grad_enabled(False)


def enable_grad():
    """Within this block ops record even inside no_grad() (attacks need input gradients while
    the caller evaluates without a graph)."""
    return set_grad_enabled(True)


def is_grad_enabled():
    return _grad_enabled


class Op:
    """One differentiable function. Subclasses define

        forward(self, *arrays, **params) -> array     (saves what backward needs on self)
        backward(self, gy) -> tuple                    (one gradient or None per positional input)

    Positional inputs may be Tensors, arrays, Python numbers or None; only Tensors that require a
    gradient receive one. `self.needs_grad[i]` says whether input i wants its gradient, so forward
    can skip saving and backward can skip computing (returning None) what nobody needs.
    """

    inputs = ()
    needs_grad = ()

    @classmethod
    def apply(cls, *inputs, **params):
        tensor_type = next((type(t) for t in inputs if isinstance(t, Tensor)), None)
        if tensor_type is None:
            raise TypeError(f"{cls.__name__}: at least one input must be a Tensor")
        op = cls()
        op.needs_grad = tuple(_grad_enabled and isinstance(t, Tensor) and t.requires_grad
                              for t in inputs)
        arrays = [t.data if isinstance(t, Tensor) else t for t in inputs]
        y = op.forward(*arrays, **params)
        if not any(op.needs_grad):
            return tensor_type(y)
        op.inputs = inputs
        return tensor_type(y, requires_grad=True, op=op)

    def forward(self, *arrays, **params):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError

    def __repr__(self):
        return type(self).__name__


class Tensor:
    """An array with an optional gradient and the op that produced it.

    data: the array (numpy.ndarray here); grad: same shape, set on leaves by backward();
    requires_grad: whether gradients flow to this tensor; op: the Op that made it (None for leaves,
    and after backward() released it); is_leaf: whether it was made without an op.
    """

    xp = np      # array module of this backend
    ops = None   # op package of this backend, set in ref/__init__.py

    def __init__(self, data, requires_grad=False, op=None):
        if isinstance(data, Tensor):
            raise TypeError("Tensor(data): data is already a Tensor; use .data or .detach()")
        if not isinstance(data, self.xp.ndarray):
            data = self.xp.asarray(data)
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating tensors can require grad, got {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self.op = op
        self.is_leaf = op is None   # made by the user, not by an op

    # ---- array facts --------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        made_by = f", op={self.op!r}" if self.op is not None else ""
        needs = ", requires_grad=True" if self.requires_grad else ""
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}{needs}{made_by})"

    def item(self):
        return self.data.item()

    def numpy(self):
        """The data as a host numpy array (a copy on the GPU backend)."""
        return np.asarray(self.data)

    def detach(self):
        """The same data, cut from the graph."""
        return type(self)(self.data)

    def zero_grad(self):
        self.grad = None

    # ---- reverse mode -------------------------------------------------------------------------
    def backward(self, gy=None):
        """Accumulate d(self)/d(leaf) into leaf.grad for every leaf that requires grad.

        gy: gradient of some scalar with respect to self; defaults to 1 for a one-element tensor.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        if gy is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without gy needs a one-element tensor, "
                                   f"got shape {self.shape}")
            gy = self.xp.ones_like(self.data)
        elif gy.shape != self.shape:
            raise ValueError(f"gy shape {gy.shape} != tensor shape {self.shape}")
        grads = {id(self): gy}
        for t in self._reverse_topological_order():
            g = grads.pop(id(t), None)
            if g is None:   # every path from self to t returned None
                continue
            if t.op is None:
                if not t.is_leaf:   # its op was released by an earlier backward()
                    raise RuntimeError("backward() through a graph that an earlier backward() "
                                       "already freed; run the forward again")
                # a copy: g may be shared with other tensors or be the caller's gy
                t.grad = g.copy(order="K") if t.grad is None else t.grad + g
                continue
            input_grads = t.op.backward(g)
            for x, gx in zip(t.op.inputs, input_grads):
                if isinstance(x, Tensor) and x.requires_grad and gx is not None:
                    assert gx.shape == x.shape, (t.op, gx.shape, x.shape)
                    grads[id(x)] = gx if id(x) not in grads else grads[id(x)] + gx
            t.op = None   # release the op and what it saved

    def _reverse_topological_order(self):
        """Tensors that lead to self and require grad, each after every tensor that uses it."""
        order, visited, stack = [], set(), [(self, False)]
        while stack:   # iterative depth-first search: deep graphs would overflow recursion
            t, children_done = stack.pop()
            if children_done:
                order.append(t)
                continue
            if id(t) in visited:
                continue
            visited.add(id(t))
            stack.append((t, True))
            if t.op is not None:
                stack.extend((x, False) for x in t.op.inputs
                             if isinstance(x, Tensor) and x.requires_grad and id(x) not in visited)
        return reversed(order)

    # ---- operators (each one line, so "go to definition" lands on the op) ---------------------
    def __add__(self, other): return self.ops.add(self, other)
    def __radd__(self, other): return self.ops.add(other, self)
    def __sub__(self, other): return self.ops.sub(self, other)
    def __rsub__(self, other): return self.ops.sub(other, self)
    def __mul__(self, other): return self.ops.mul(self, other)
    def __rmul__(self, other): return self.ops.mul(other, self)
    def __truediv__(self, other): return self.ops.div(self, other)
    def __rtruediv__(self, other): return self.ops.div(other, self)
    def __neg__(self): return self.ops.neg(self)
    def __pow__(self, exponent): return self.ops.pow(self, exponent)
    def __matmul__(self, other): return self.ops.matmul(self, other)
    def __getitem__(self, index): return self.ops.getitem(self, index)

    def sum(self, axis=None, keepdims=False): return self.ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return self.ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return self.ops.max(self, axis, keepdims)
    def reshape(self, *shape): return self.ops.reshape(self, shape[0] if len(shape) == 1 else shape)
    def transpose(self, *axes): return self.ops.transpose(self, axes or None)
    def flatten(self, start_dim=0, end_dim=-1): return self.ops.flatten(self, start_dim, end_dim)
    def exp(self): return self.ops.exp(self)
    def log(self): return self.ops.log(self)
    def relu(self): return self.ops.relu(self)

    # comparisons give plain boolean arrays: they are not differentiable
    def __lt__(self, other): return self.data < _data(other)
    def __le__(self, other): return self.data <= _data(other)
    def __gt__(self, other): return self.data > _data(other)
    def __ge__(self, other): return self.data >= _data(other)


def _data(value):
    return value.data if isinstance(value, Tensor) else value
