"""Dot-product (directional finite-difference) gradient check.

For f: inputs -> y and a random upstream gradient gy and random directions d_i,

    <gy, (f(x + eps d) - f(x - eps d)) / (2 eps)>  ==  sum_i <grad_i, d_i>

where grad_i is what backward() returns for input i. Two extra forward calls at any input size;
run it in float64 (eps ~ 1e-6 gives ~1e-9 relative agreement for smooth functions).
"""
import numpy as np

from ref.tensor import no_grad


def check_vjp(f, inputs, rng, eps=1e-6, rtol=1e-6, atol=1e-9):
    """Check the gradients that backward() gives for every Tensor in `inputs` that requires grad.

    f: callable(*inputs) -> Tensor; inputs: list of Tensors (those with requires_grad are checked).
    Returns (analytic, numeric) directional derivatives; raises AssertionError when they differ.
    Every call of f must be deterministic (fix the rng of dropout-like ops inside f).
    """
    xp = inputs[0].xp
    for t in inputs:
        t.grad = None
    y = f(*inputs)
    gy = xp.asarray(rng.standard_normal(y.shape)).astype(y.dtype)          # (y.shape)
    y.backward(gy)
    checked = [t for t in inputs if t.requires_grad]
    directions = [xp.asarray(rng.standard_normal(t.shape)).astype(t.dtype) for t in checked]
    analytic = sum(float((t.grad * d).sum()) for t, d in zip(checked, directions)
                   if t.grad is not None)   # None: f does not depend on t
    originals = [t.data for t in checked]

    def shifted(scale):
        for t, x, d in zip(checked, originals, directions):
            t.data = x + scale * d
        with no_grad():
            return f(*inputs).data

    numeric = float((gy * (shifted(eps) - shifted(-eps))).sum()) / (2 * eps)
    for t, x in zip(checked, originals):
        t.data = x
    if not np.isclose(analytic, numeric, rtol=rtol, atol=atol):
        raise AssertionError(f"gradient check failed: backward gives {analytic!r}, "
                             f"finite differences give {numeric!r}")
    return analytic, numeric
