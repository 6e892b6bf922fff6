"""Elementwise ops with NumPy broadcasting.

Notation: x, a, b inputs; y output; gy gradient of the output; every array keeps its own shape and
`unbroadcast` sums a broadcast gradient back to the input's shape.
Tie rules: relu'(0) = 0, abs'(0) = sign(0) = 0, sign' = 0.
"""
from gpu import cupy as cp
from gpu.kernels import launch
from ref.ops.elementwise import _shape
from ref.tensor import Op


def unbroadcast(g, shape):
    """Sum g over the axes that broadcasting added or stretched, so that g.shape == shape."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    stretched = tuple(lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1)
    g = g.sum(axis=tuple(range(lead)) + stretched, keepdims=True)   # (1.., shape with 1s)
    return g.reshape(shape)


class Add(Op):
    """y = a + b"""

    def forward(self, a, b):
        self.a_shape, self.b_shape = _shape(a), _shape(b)
        return a + b

    def backward(self, gy):
        ga = unbroadcast(gy, self.a_shape) if self.needs_grad[0] else None
        gb = unbroadcast(gy, self.b_shape) if self.needs_grad[1] else None
        return ga, gb


class Sub(Op):
    """y = a - b"""

    def forward(self, a, b):
        self.a_shape, self.b_shape = _shape(a), _shape(b)
        return a - b

    def backward(self, gy):
        ga = unbroadcast(gy, self.a_shape) if self.needs_grad[0] else None
        gb = unbroadcast(-gy, self.b_shape) if self.needs_grad[1] else None
        return ga, gb


class Mul(Op):
    """y = a * b;  ga = gy * b,  gb = gy * a"""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        ga = unbroadcast(gy * self.b, _shape(self.a)) if self.needs_grad[0] else None
        gb = unbroadcast(gy * self.a, _shape(self.b)) if self.needs_grad[1] else None
        return ga, gb


class Div(Op):
    """y = a / b;  ga = gy / b,  gb = -gy * a / b^2"""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        ga = unbroadcast(gy / self.b, _shape(self.a)) if self.needs_grad[0] else None
        gb = (unbroadcast(-gy * self.a / (self.b * self.b), _shape(self.b))
              if self.needs_grad[1] else None)
        return ga, gb


class Neg(Op):
    """y = -x"""

    def forward(self, x):
        return -x

    def backward(self, gy):
        return (-gy,)


class Pow(Op):
    """y = x^p for a constant exponent p;  gx = gy * p * x^(p-1)"""

    def forward(self, x, p):
        self.x, self.p = x, p
        return x ** p

    def backward(self, gy):
        return gy * self.p * self.x ** (self.p - 1), None


class Exp(Op):
    """y = exp(x);  gx = gy * y"""

    def forward(self, x):
        self.y = cp.exp(x)
        return self.y

    def backward(self, gy):
        return (gy * self.y,)


class Log(Op):
    """y = log(x);  gx = gy / x"""

    def forward(self, x):
        self.x = x
        return cp.log(x)

    def backward(self, gy):
        return (gy / self.x,)


class Sqrt(Op):
    """y = sqrt(x);  gx = gy / (2 y)"""

    def forward(self, x):
        self.y = cp.sqrt(x)
        return self.y

    def backward(self, gy):
        return (gy / (2 * self.y),)


class Abs(Op):
    """y = |x|;  gx = gy * sign(x), sign(0) = 0"""

    def forward(self, x):
        self.x = x
        return cp.abs(x)

    def backward(self, gy):
        return (gy * cp.sign(self.x),)


class Sign(Op):
    """y = sign(x) in {-1, 0, 1};  gx = 0 (piecewise constant)"""

    def forward(self, x):
        return cp.sign(x)

    def backward(self, gy):
        return (cp.zeros_like(gy),)


class ReLU(Op):
    """y = max(x, 0);  gx = gy * [x > 0] = gy * [y > 0]  (relu'(0) = 0; a NaN x gives 0)

    Forward saves y (no mask array); backward is the relu_backward kernel (one launch) when gy
    and y are stored in one dense memory order, as conv and batch-norm outputs are, else two
    cupy operators; gx is stored in y's order either way."""

    def forward(self, x):
        self.y = cp.maximum(x, 0)            # (same shape, dtype and memory order as x)
        return self.y

    def backward(self, gy):
        order = _dense_order(gy, self.y)
        if order is None or gy.dtype != self.y.dtype:
            gx = cp.empty_like(self.y, dtype=gy.dtype)                 # (y's memory order)
            return (cp.multiply(gy, self.y > 0, out=gx),)
        gx = cp.empty(self.y.transpose(order).shape, dtype=gy.dtype)   # (y's shape in `order`)
        launch("elementwise.cu", "relu_backward", gy.dtype, gx.size,
               (gy.transpose(order), self.y.transpose(order), gx, cp.int64(gx.size)))
        return (gx.transpose(_inverse(order)),)


def _dense_order(*arrays):
    """The axis order in which every array is C-contiguous (the first array's axes by
    decreasing stride), or None when there is none: (0, 2, 3, 1) for NHWC memory viewed as
    (n, c, h, w)."""
    a = arrays[0]
    order = tuple(sorted(range(a.ndim), key=lambda i: -a.strides[i]))
    return order if all(b.transpose(order).flags.c_contiguous for b in arrays) else None


def _inverse(order):
    return tuple(sorted(range(len(order)), key=order.__getitem__))


class Sigmoid(Op):
    """y = 1 / (1 + exp(-x));  gx = gy * y * (1 - y)"""

    def forward(self, x):
        self.y = 0.5 * (cp.tanh(0.5 * x) + 1)   # the tanh form never overflows
        return self.y

    def backward(self, gy):
        return (gy * self.y * (1 - self.y),)


class Tanh(Op):
    """y = tanh(x);  gx = gy * (1 - y^2)"""

    def forward(self, x):
        self.y = cp.tanh(x)
        return self.y

    def backward(self, gy):
        return (gy * (1 - self.y * self.y),)


def add(a, b): return Add.apply(a, b)
def sub(a, b): return Sub.apply(a, b)
def mul(a, b): return Mul.apply(a, b)
def div(a, b): return Div.apply(a, b)
def neg(x): return Neg.apply(x)
def pow(x, p): return Pow.apply(x, p)   # noqa: A001 (the functional name users expect)
def exp(x): return Exp.apply(x)
def log(x): return Log.apply(x)
def sqrt(x): return Sqrt.apply(x)
def abs(x): return Abs.apply(x)   # noqa: A001
def sign(x): return Sign.apply(x)
def relu(x): return ReLU.apply(x)
def sigmoid(x): return Sigmoid.apply(x)
def tanh(x): return Tanh.apply(x)
