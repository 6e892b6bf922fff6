"""The kernels of gpu/kernels/loss.cu and gpu/kernels/update.cu, launched through
gpu.kernels.launch, against NumPy expressions.

On the emulator each launch is re-run with permuted block and thread orders and with a single
block (options.checks), which finds races and kernels without a grid-stride loop; outputs start
as cupy.empty (NaN on the emulator), so an element no thread wrote fails the comparison. On a real
GPU the same tests run each kernel once.
"""
import contextlib

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import gpu
from gpu.emulator import options
from gpu.kernels import launch

cp = gpu.cupy
DTYPES = st.sampled_from([np.float32, np.float64])
BLOCKS = st.sampled_from([32, 64, 256])
SEEDS = st.integers(0, 2**32 - 1)


def checked():
    """The emulator's re-run checks (nothing extra on a real GPU)."""
    return options.checks("order", "one_block") if gpu.EMULATED else contextlib.nullcontext()


def tolerances(dtype):
    """Float64 tight (a miss is an indexing bug); float32 against a float64 reference loosely."""
    return {"rtol": 2e-5, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


def device(*arrays):
    return tuple(cp.asarray(a) for a in arrays)


def logits(rng, n, k, dtype):
    """(n, k) logits spread over a range up to +-30, so that the max shift matters."""
    return (rng.standard_normal((n, k)) * rng.uniform(0.1, 10)).astype(dtype)


def row_statistics(z):
    """m = max_j z, s = log sum_j exp(z - m) per row, in float64."""
    z = z.astype(np.float64)
    m = z.max(axis=1)                                                       # (n,)
    return m, np.log(np.exp(z - m[:, None]).sum(axis=1))                    # (n,) (n,)


# ---- loss.cu ----------------------------------------------------------------------------------
@given(n=st.integers(1, 300), k=st.integers(1, 40), dtype=DTYPES, block=BLOCKS, seed=SEEDS)
def test_softmax_statistics(n, k, dtype, block, seed):
    z = logits(np.random.default_rng(seed), n, k, dtype)
    m, s = cp.empty(n, dtype=dtype), cp.empty(n, dtype=dtype)
    with checked():
        launch("loss.cu", "softmax_statistics", dtype, n,
               (cp.asarray(z), m, s, np.int64(n), np.int32(k)), block=block)
    want_m, want_s = row_statistics(z)
    np.testing.assert_array_equal(m.get(), want_m.astype(dtype))            # a max is exact
    np.testing.assert_allclose(s.get(), want_s, **tolerances(dtype))


@given(n=st.integers(1, 300), k=st.integers(1, 40), dtype=DTYPES, block=BLOCKS, seed=SEEDS)
def test_cross_entropy_forward(n, k, dtype, block, seed):
    rng = np.random.default_rng(seed)
    z, labels = logits(rng, n, k, dtype), rng.integers(0, k, n)
    m, s, loss = (cp.empty(n, dtype=dtype) for _ in range(3))
    with checked():
        launch("loss.cu", "cross_entropy_forward", dtype, n,
               (*device(z, labels), m, s, loss, np.int64(n), np.int32(k)), block=block)
    want_m, want_s = row_statistics(z)
    want_loss = want_m + want_s - z[np.arange(n), labels]                   # (n,)
    np.testing.assert_array_equal(m.get(), want_m.astype(dtype))
    np.testing.assert_allclose(s.get(), want_s, **tolerances(dtype))
    np.testing.assert_allclose(loss.get(), want_loss, **tolerances(dtype))


@given(n=st.integers(1, 60), k=st.integers(1, 40), dtype=DTYPES, block=BLOCKS, seed=SEEDS)
def test_cross_entropy_backward(n, k, dtype, block, seed):
    rng = np.random.default_rng(seed)
    z, labels = logits(rng, n, k, dtype), rng.integers(0, k, n)
    scale = rng.standard_normal(n).astype(dtype)
    m, s = (a.astype(dtype) for a in row_statistics(z))
    gz = cp.empty((n, k), dtype=dtype)
    with checked():
        launch("loss.cu", "cross_entropy_backward", dtype, n * k,
               (*device(z, labels, m, s, scale), gz, np.int64(n * k), np.int32(k)), block=block)
    onehot = np.eye(k)[labels]                                              # (n, k)
    want = (np.exp(z - m[:, None] - s[:, None].astype(np.float64)) - onehot) * scale[:, None]
    np.testing.assert_allclose(gz.get(), want, **tolerances(dtype))


# ---- update.cu --------------------------------------------------------------------------------
SGD_SETTINGS = st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.25]),
                         st.booleans(), st.sampled_from([0.0, 1e-2]), st.booleans())


def sgd_reference(p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first):
    """torch.optim.SGD's step written out; returns the new (p, buf)."""
    d = g + weight_decay * p
    if momentum:
        buf = d if first else momentum * buf + (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    return p - lr * d, buf


@given(size=st.integers(1, 3000), settings=SGD_SETTINGS, dtype=DTYPES, block=BLOCKS, seed=SEEDS)
def test_sgd_update(size, settings, dtype, block, seed):
    momentum, dampening, nesterov, weight_decay, first = settings
    nesterov = nesterov and momentum > 0 and dampening == 0
    rng = np.random.default_rng(seed)
    p, g, buf = (rng.standard_normal(size).astype(dtype) for _ in range(3))
    if first:
        buf[:] = np.nan          # the first update must not read the buffer
    dp, dg, dbuf = device(p, g, buf)
    T = np.dtype(dtype).type
    with checked():
        launch("update.cu", "sgd_update", dtype, size,
               (dp, dg, dbuf, T(0.1), T(momentum), T(1 - dampening), T(weight_decay),
                np.int32(nesterov), np.int32(first), np.int64(size)), block=block)
    want_p, want_buf = sgd_reference(p, g, buf, T(0.1), T(momentum), T(dampening), nesterov,
                                     T(weight_decay), first)
    np.testing.assert_allclose(dp.get(), want_p, **tolerances(dtype))
    if momentum:
        np.testing.assert_allclose(dbuf.get(), want_buf, **tolerances(dtype))
    else:
        np.testing.assert_array_equal(dbuf.get(), buf)   # untouched without momentum


@given(size=st.integers(1, 3000), momentum=st.sampled_from([0.0, 0.9]), nesterov=st.booleans(),
       dtype=DTYPES, block=BLOCKS, seed=SEEDS)
def test_sgdw_update(size, momentum, nesterov, dtype, block, seed):
    rng = np.random.default_rng(seed)
    p, g, v = (rng.standard_normal(size).astype(dtype) for _ in range(3))
    dp, dg, dv = device(p, g, v)
    T = np.dtype(dtype).type
    lr, decay, m = T(0.05), T(5e-4), T(momentum)
    with checked():
        launch("update.cu", "sgdw_update", dtype, size,
               (dp, dg, dv, lr, decay, m, np.int32(nesterov), np.int64(size)), block=block)
    q = p - decay * p
    want_v = m * v - lr * g
    step = (m * want_v - lr * g if nesterov else want_v) if momentum else -lr * g
    np.testing.assert_allclose(dp.get(), q + step, **tolerances(dtype))
    np.testing.assert_allclose(dv.get(), want_v if momentum else v, **tolerances(dtype))


@given(size=st.integers(1, 3000), momentum=st.sampled_from([0.0, 0.9]), dtype=DTYPES,
       block=BLOCKS, seed=SEEDS)
def test_sgdw_noise_update(size, momentum, dtype, block, seed):
    """The SGDW step, then noise only where p was > 0 before it (p has zeros and negatives)."""
    rng = np.random.default_rng(seed)
    p, g, v, noise = (rng.standard_normal(size).astype(dtype) for _ in range(4))
    p[rng.random(size) < 0.2] = 0                                        # 0 is dormant
    dp, dg, dv, dnoise = device(p, g, v, noise)
    T = np.dtype(dtype).type
    lr, decay, noise_std, m = T(0.05), T(5e-4), T(0.3), T(momentum)
    with checked():
        launch("update.cu", "sgdw_noise_update", dtype, size,
               (dp, dg, dv, dnoise, lr, decay, noise_std, m, np.int64(size)), block=block)
    want_v = m * v - lr * g
    step = want_v if momentum else -lr * g
    want_p = p - decay * p + step + noise_std * noise * (p > 0)
    np.testing.assert_allclose(dp.get(), want_p, **tolerances(dtype))
    np.testing.assert_allclose(dv.get(), want_v if momentum else v, **tolerances(dtype))


@given(n=st.integers(1, 12), per_sample=st.integers(1, 200), dtype=DTYPES, block=BLOCKS,
       seed=SEEDS)
def test_pgd_step(n, per_sample, dtype, block, seed):
    rng = np.random.default_rng(seed)
    x0 = rng.random((n, per_sample)).astype(dtype)
    x = np.clip(x0 + rng.uniform(-0.1, 0.1, x0.shape), 0, 1).astype(dtype)
    g = rng.standard_normal(x0.shape).astype(dtype)
    g[rng.random(g.shape) < 0.1] = 0                                     # sign(0) = 0
    alpha, eps = (rng.uniform(0, 0.1, (n, 1)).astype(dtype) for _ in range(2))
    y = cp.empty_like(cp.asarray(x))
    with checked():
        launch("update.cu", "pgd_step", dtype, x.size,
               (*device(x, g, x0, alpha.ravel(), eps.ravel()), y, np.int64(x.size),
                np.int64(per_sample)), block=block)
    want = np.clip(x0 + np.clip(x + alpha * np.sign(g) - x0, -eps, eps), 0, 1)
    np.testing.assert_array_equal(y.get(), want)    # one rounding per operation: exact


def test_pgd_step_keeps_nan_gradients_as_numpy_sign_does():
    x0 = np.full((1, 4), 0.5)
    g = np.array([[np.nan, 0.0, -0.0, 1.0]])
    y = cp.empty((1, 4))
    launch("update.cu", "pgd_step", np.float64, 4,
           (*device(x0, g, x0, np.array([0.1]), np.array([0.05])), y, np.int64(4), np.int64(4)))
    want = np.clip(x0 + np.clip(x0 + 0.1 * np.sign(g) - x0, -0.05, 0.05), 0, 1)
    np.testing.assert_array_equal(y.get(), want)
