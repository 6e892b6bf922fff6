"""The gpu ops against the ref ops (the oracle) on the same inputs: outputs and every input
gradient, through tests/backends.compare, for every op of gpu/ops/{elementwise, reduce, shape,
matmul, loss, dropout, update}.py on hypothesis-drawn shapes, float64 (tight) and float32.

On a machine without a GPU the gpu side runs on the emulator (fakecupy + the g++-built kernels);
with a GPU, on CuPy. Each CASES entry draws one call: {"arrays": positional inputs, "params":
keyword arguments, and optionally "grad": False for the non-differentiable updates}.
"""
import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gpu
import ref
import reference
from backends import compare, to_host
from ref.optim import SGD, SGDW

DTYPES = st.sampled_from([np.float64, np.float32])
SEEDS = st.integers(0, 2**32 - 1)
SHAPES = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


def normal(rng, shape, zeros=0.1):
    """Standard normal values with about a fraction `zeros` of exact zeros (tie rules at 0)."""
    x = rng.standard_normal(shape)
    x[rng.random(shape) < zeros] = 0
    return x


def positive(rng, shape):
    return 0.1 + np.abs(rng.standard_normal(shape))


def broadcast_partner(draw, shape):
    """A shape that broadcasts against `shape`: some axes set to 1, some leading ones dropped."""
    ones = draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    partner = tuple(1 if one else s for s, one in zip(shape, ones))
    return partner[draw(st.integers(0, len(shape))):]


def axes(draw, ndim):
    """None, one axis (maybe negative) or a tuple of distinct axes."""
    kind = draw(st.sampled_from(["none", "one", "tuple"]))
    if kind == "none":
        return None
    if kind == "one":
        return draw(st.integers(-ndim, ndim - 1))
    return tuple(draw(st.permutations(range(ndim)))[:draw(st.integers(1, ndim))])


# ---- one drawn call per op --------------------------------------------------------------------
def binary(op):
    def case(draw, rng):
        shape = draw(SHAPES)
        a, b = normal(rng, shape), normal(rng, broadcast_partner(draw, shape))
        if draw(st.booleans()):
            a, b = b, a
        if op == "div":
            b = np.sign(b + (b == 0)) * (0.5 + np.abs(b))       # away from 0
        if draw(st.booleans()):                                 # a Python number operand
            b = draw(st.sampled_from([-1.5, 2.0, 0.25]))
        return {"arrays": [a, b]}
    return case


def unary(make):
    def case(draw, rng):
        return {"arrays": [make(rng, draw(SHAPES))]}
    return case


def pow_case(draw, rng):
    return {"arrays": [positive(rng, draw(SHAPES)), draw(st.sampled_from([2, 3, 0.5, -1.5]))]}


def reduction(draw, rng):
    shape = draw(SHAPES)
    x = rng.integers(-2, 3, shape) * 1.0 if draw(st.booleans()) else normal(rng, shape)   # ties
    return {"arrays": [x], "params": {"axis": axes(draw, len(shape)),
                                      "keepdims": draw(st.booleans())}}


def reshape_case(draw, rng):
    shape = draw(SHAPES)
    target = draw(st.sampled_from([(-1,), (shape[0], -1), shape[::-1], (1,) + shape]))
    return {"arrays": [normal(rng, shape), target]}


def transpose_case(draw, rng):
    shape = draw(SHAPES)
    order = draw(st.none() | st.permutations(range(len(shape))).map(tuple))
    return {"arrays": [normal(rng, shape), order]}


def flatten_case(draw, rng):
    shape = draw(SHAPES)
    start = draw(st.integers(0, len(shape) - 1))
    end = draw(st.integers(start, len(shape) - 1)) - draw(st.sampled_from([0, len(shape)]))
    return {"arrays": [normal(rng, shape), start, end]}


def pad_case(draw, rng):
    shape = draw(SHAPES)
    widths = tuple(draw(st.tuples(st.integers(0, 2), st.integers(0, 2))) for _ in shape)
    return {"arrays": [normal(rng, shape), widths, draw(st.sampled_from([0.0, -1.5]))]}


def concatenate_case(draw, rng):
    shape = draw(SHAPES)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        part = list(shape)
        part[axis] = draw(st.integers(1, 3))
        parts.append(normal(rng, tuple(part)))
    return {"arrays": [parts], "params": {"axis": axis}}


def getitem_case(draw, rng):
    shape = draw(SHAPES)
    kind = draw(st.sampled_from(["slices", "repeated rows", "pairs"]))
    if kind == "slices":
        index = tuple(slice(draw(st.integers(0, s - 1)), None, draw(st.integers(1, 2)))
                      for s in shape)
    elif kind == "repeated rows":
        index = rng.integers(0, shape[0], draw(st.integers(1, 6)))            # repeats add up
    else:
        rows = rng.integers(-shape[0], shape[0], 4)
        index = (rows, slice(None)) if len(shape) > 1 else (rows,)
    return {"arrays": [normal(rng, shape), index]}


def matmul_case(draw, rng):
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    lead = draw(st.sampled_from([(), (2,), (3, 1)]))
    a, b = normal(rng, lead + (n, k)), normal(rng, lead[-1:] + (k, m))
    if draw(st.booleans()):   # (b^T, a^T): transposed, non-contiguous operands
        a, b = np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2)
    return {"arrays": [a, b]}


def linear_case(draw, rng):
    n, i, o = (draw(st.integers(1, 5)) for _ in range(3))
    b = normal(rng, (o,)) if draw(st.booleans()) else None
    return {"arrays": [normal(rng, (n, i)), normal(rng, (o, i)), b]}


def softmax_case(draw, rng):
    shape = draw(SHAPES)
    z = rng.standard_normal(shape) * draw(st.sampled_from([0.1, 3.0, 30.0]))
    return {"arrays": [z], "params": {"axis": draw(st.integers(-len(shape), len(shape) - 1))}}


def cross_entropy_case(draw, rng):
    n, k = draw(st.integers(1, 8)), draw(st.integers(1, 6))
    labels = rng.integers(0, k, n).astype(draw(st.sampled_from([np.int64, np.int32])))
    z = rng.standard_normal((n, k)) * draw(st.sampled_from([0.1, 3.0, 30.0]))
    return {"arrays": [z, labels],
            "params": {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))}}


def kl_div_case(draw, rng):
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    log_q = reference.log_softmax(rng.standard_normal(shape))
    p = rng.random(shape) * (rng.random(shape) > 0.2)                        # 0 log 0 = 0
    reduction = draw(st.sampled_from(["mean", "sum", "none", "batchmean"]))
    return {"arrays": [log_q, p], "params": {"reduction": reduction}}


def dropout_case(draw, rng):
    return {"arrays": [normal(rng, draw(SHAPES))],
            "params": {"p": draw(st.sampled_from([0.0, 0.3, 0.9, 1.0])),
                       "training": draw(st.booleans()),
                       "rng": np.random.default_rng(draw(SEEDS))}}


def sgd_case(draw, rng):
    shape = draw(SHAPES)
    momentum = draw(st.sampled_from([0.0, 0.9]))
    dampening = 0.0 if draw(st.booleans()) else 0.25
    first = draw(st.booleans())
    buf = (np.full(shape, np.nan) if first else normal(rng, shape)) if momentum else None
    params = {"momentum": momentum, "dampening": dampening,
              "nesterov": momentum > 0 and dampening == 0 and draw(st.booleans()),
              "weight_decay": draw(st.sampled_from([0.0, 5e-4])), "first": first}
    return {"arrays": [normal(rng, shape), normal(rng, shape), buf, 0.1], "params": params,
            "grad": False}


def sgdw_case(draw, rng):
    shape = draw(SHAPES)
    momentum = draw(st.sampled_from([0.0, 0.9]))
    v = normal(rng, shape) if momentum else None
    return {"arrays": [normal(rng, shape), normal(rng, shape), v, 0.05, 5e-4],
            "params": {"momentum": momentum, "nesterov": draw(st.booleans())}, "grad": False}


def sgdw_noise_case(draw, rng):
    shape = draw(SHAPES)
    momentum = draw(st.sampled_from([0.0, 0.9]))
    v = normal(rng, shape) if momentum else None
    theta = normal(rng, shape, zeros=0.3)                    # active (> 0), 0 and negative
    return {"arrays": [theta, normal(rng, shape), v, rng.standard_normal(shape), 0.05, 5e-4,
                       0.1], "params": {"momentum": momentum}, "grad": False}


def pgd_step_case(draw, rng):
    shape = (draw(st.integers(1, 4)),) + draw(SHAPES)
    x0 = rng.random(shape)
    x = np.clip(x0 + rng.uniform(-0.1, 0.1, shape), 0, 1)
    per_sample = (shape[0],) + (1,) * (len(shape) - 1)
    alpha, eps = (draw(st.sampled_from([0.01, 8 / 255])) if draw(st.booleans())
                  else rng.uniform(0, 0.05, per_sample) for _ in range(2))
    return {"arrays": [x, normal(rng, shape), x0, alpha, eps], "grad": False}


CASES = {
    **{op: binary(op) for op in ("add", "sub", "mul", "div")},
    **{op: unary(normal) for op in ("neg", "exp", "abs", "sign", "relu", "sigmoid", "tanh")},
    "log": unary(positive), "sqrt": unary(positive), "pow": pow_case,
    "sum": reduction, "mean": reduction, "max": reduction,
    "reshape": reshape_case, "transpose": transpose_case, "flatten": flatten_case,
    "pad": pad_case, "concatenate": concatenate_case, "getitem": getitem_case,
    "matmul": matmul_case, "linear": linear_case,
    "log_softmax": softmax_case, "softmax": softmax_case, "cross_entropy": cross_entropy_case,
    "kl_div": kl_div_case, "dropout": dropout_case,
    "sgd_update_": sgd_case, "sgdw_update_": sgdw_case,
    "sgdw_noise_update_": sgdw_noise_case, "pgd_step": pgd_step_case,
}
MODULES = ("elementwise", "reduce", "shape", "matmul", "loss", "dropout", "update")


def test_every_op_of_these_modules_has_a_case():
    ops = {name for m in MODULES for name in vars(importlib.import_module(f"ref.ops.{m}"))
           if name in vars(ref.ops) and callable(vars(ref.ops)[name]) and name[0].islower()}
    assert ops == set(CASES)


@pytest.mark.parametrize("op", sorted(CASES))
@given(data=st.data(), dtype=DTYPES, seed=SEEDS)
def test_gpu_op_matches_ref_op(op, data, dtype, seed):
    case = CASES[op](data.draw, np.random.default_rng(seed))
    if case.get("grad", True):   # some inputs without gradient exercise the needs_grad paths
        case["requires_grad"] = data.draw(st.lists(st.booleans(), min_size=len(case["arrays"]),
                                                   max_size=len(case["arrays"])))
    compare(op, case["arrays"], case.get("params"), dtype, requires_grad=case.get("requires_grad"),
            grad=case.get("grad", True), seed=seed)


# ---- errors the gpu ops raise like the ref ops ------------------------------------------------
@pytest.mark.parametrize("backend", [ref, gpu], ids=["ref", "gpu"])
def test_errors_are_raised_on_both_backends(backend):
    move = gpu.asarray if backend is gpu else np.asarray
    z = backend.Tensor(move(np.zeros((2, 3))), requires_grad=True)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        backend.ops.cross_entropy(z, move(np.array([0, 3])))
    with pytest.raises(ValueError, match="reduction"):
        backend.ops.cross_entropy(z, move(np.array([0, 2])), reduction="avg")
    with pytest.raises(ValueError):
        backend.ops.log_softmax(backend.Tensor(move(np.zeros((2, 0)))))
    with pytest.raises(ValueError, match="needs a buffer"):
        backend.ops.sgd_update_(move(np.zeros(3)), move(np.zeros(3)), None, 0.1, momentum=0.9)
    with pytest.raises(ValueError, match="needs a buffer"):
        backend.ops.sgdw_update_(move(np.zeros(3)), move(np.zeros(3)), None, 0.1, 0.0, 0.9)
    with pytest.raises(ValueError, match="sgdw_noise_update_: momentum=0.9 needs a buffer"):
        backend.ops.sgdw_noise_update_(move(np.zeros(3)), move(np.zeros(3)), None,
                                       move(np.zeros(3)), 0.1, 0.0, 0.1, 0.9)


def test_pgd_step_on_gpu_takes_one_alpha_and_eps_per_sample_only():
    x = gpu.asarray(np.full((2, 3, 1, 1), 0.5))
    with pytest.raises(ValueError, match="per-sample"):
        gpu.ops.pgd_step(x, x, x, 0.1, gpu.asarray(np.full((1, 3, 1, 1), 0.1)))


# ---- the optimizers on both backends (they call the fused updates through p.ops) --------------
@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    lambda ps: SGD(ps, lr=0.1, momentum=0.5, dampening=0.25),
    lambda ps: SGD(ps, lr=0.1, weight_decay=1e-2),
    lambda ps: SGDW(ps, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
    lambda ps: SGDW(ps, lr=0.1, momentum=0.0),
], ids=["sgd-nesterov", "sgd-dampening", "sgd-plain", "sgdw-nesterov", "sgdw-plain"])
def test_optimizer_steps_agree_across_backends(make, rng):
    shapes = [(3, 4), (5,)]
    start = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]
    results = []
    for backend, move in ((ref, np.asarray), (gpu, gpu.asarray)):
        params = [backend.Tensor(move(p.copy()), requires_grad=True) for p in start]
        optimizer = make(params)
        for step, gs in enumerate(grads):
            optimizer.lr = 0.1 / (step + 1)
            for p, g in zip(params, gs):
                p.grad = move(g)
            optimizer.step()
        results.append([to_host(p) for p in params])
    for got, want in zip(*results[::-1]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
