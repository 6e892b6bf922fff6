"""ref.certify's bounds against independent definitions, on hypothesis-drawn small nets (dense
and subnet layers, convs with strides, padding and dilation, an input normalisation) in float64:

- IBP equals naive interval arithmetic (W+ l + W- u + b, convs unrolled to dense matrices by
  loops), logits and fused margins; CROWN-IBP equals a naive dense-matrix implementation;
- soundness: every sampled point of the eps-box (corners included) and the PGD point has logits
  inside the IBP bounds and margins above both margin lower bounds; at eps = 0 the bounds are the
  clean logits and margins;
- the adjoint identity of conv_transpose; the gradients of the bound losses (dot-product check;
  the scores' straight-through gradient); verified accuracy never above PGD accuracy;
- the gpu backend (emulated without a GPU) gives the same bounds and gradients; bad input fails;
- slow, on 8x8 digits: IBP training certifies what natural training does not, and HYDRA's prune
  phase with the IBP objective finds a certifiably robust subnetwork in the natural net.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gpu
import ref
from ref import attacks, certify, objectives
from ref.certify.crown import conv_transpose
from ref.gradcheck import check_vjp
from ref.models.certified import certified_cnn, cifar_model, cifar_model_large
from ref.models.common import Normalize
from ref.nn import (BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Module, ReLU,
                    Sequential, SubnetConv2d, SubnetLinear)

T = ref.Tensor
RTOL, ATOL = 1e-9, 1e-10     # float64, one pass: a miss is a bug, not rounding
SLACK = 1e-9                 # soundness: a sampled value may touch its bound


# ---- hypothesis-drawn nets ----------------------------------------------------------------------
@st.composite
def nets(draw):
    """(model, x, y, eps): a float64 Sequential [Normalize] [conv ReLU]* Flatten [linear ReLU]*
    linear, each conv / linear dense or subnet (keep 0.5), with inputs in [0, 1]."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    c, h, w = draw(st.integers(1, 2)), draw(st.integers(3, 7)), draw(st.integers(3, 7))
    in_shape, layers = (c, h, w), []
    if draw(st.booleans()):
        layers.append(Normalize(rng.uniform(0, 1, c), rng.uniform(0.5, 2, c)))
    for _ in range(draw(st.integers(0, 2))):
        k, s, p, d = (draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 2)),
                      draw(st.integers(1, 2)))
        oh, ow = ((size + 2 * p - d * (k - 1) - 1) // s + 1 for size in (h, w))
        if min(oh, ow) < 1:
            continue
        o, bias = draw(st.integers(1, 3)), draw(st.booleans())
        conv = (SubnetConv2d(c, o, k, s, p, d, bias=bias, keep=0.5, rng=rng)
                if draw(st.booleans()) else Conv2d(c, o, k, s, p, d, bias=bias, rng=rng))
        layers += [conv, ReLU()]
        c, h, w = o, oh, ow
    layers.append(Flatten())
    width = c * h * w
    for o in draw(st.lists(st.integers(1, 6), max_size=2)) + [draw(st.integers(2, 4))]:
        layers += [SubnetLinear(width, o, keep=0.5, rng=rng) if draw(st.booleans())
                   else Linear(width, o, rng=rng), ReLU()]
        width = o
    model = Sequential(*layers[:-1]).astype(np.float64)
    n = draw(st.integers(1, 3))
    x = rng.random((n,) + in_shape)
    y = rng.integers(0, width, n)
    eps = draw(st.sampled_from([0.0, 1e-3, 0.03, 0.1, 0.4]))
    return model, x, y, eps


# ---- naive references: dense matrices and interval arithmetic -----------------------------------
def conv_matrix(layer, in_shape):
    """(M, bias, out_shape): the layer's convolution as a dense matrix by loops over the output
    pixels and kernel taps, M[(o, i, j), (c, r, s)] += W[o, c, p, q] at r = i sy + p dy - ph."""
    W = layer.effective_weight().data
    o, c, kh, kw = W.shape
    _, h, w = in_shape
    (sy, sx), (ph, pw), (dy, dx) = layer.stride, layer.padding, layer.dilation
    oh, ow = (h + 2 * ph - dy * (kh - 1) - 1) // sy + 1, (w + 2 * pw - dx * (kw - 1) - 1) // sx + 1
    M = np.zeros((o, oh, ow, c, h, w))
    for i in range(oh):
        for j in range(ow):
            for p in range(kh):
                for q in range(kw):
                    r, s = i * sy + p * dy - ph, j * sx + q * dx - pw
                    if 0 <= r < h and 0 <= s < w:
                        M[:, i, j, :, r, s] += W[:, :, p, q]
    b = np.zeros(o) if layer.bias is None else layer.bias.data
    return M.reshape(o * oh * ow, -1), np.repeat(b, oh * ow), (o, oh, ow)


def dense_program(model, in_shape):
    """The model as a list of ("affine", M, b) and ("relu",) steps on flat vectors."""
    steps, shape = [], in_shape
    for layer in certify.bound_layers(model):
        if isinstance(layer, Conv2d):
            M, b, shape = conv_matrix(layer, shape)
            steps.append(("affine", M, b))
        elif isinstance(layer, Linear):
            W = layer.effective_weight().data
            b = np.zeros(len(W)) if layer.bias is None else layer.bias.data
            steps.append(("affine", W, b))
        elif isinstance(layer, Normalize):
            scale = np.repeat(1 / np.array(layer.std), np.prod(shape[1:]))
            steps.append(("affine", np.diag(scale), -np.repeat(layer.mean, np.prod(shape[1:]))
                          * scale))
        elif isinstance(layer, ReLU):
            steps.append(("relu",))
    return steps


def naive_ibp(steps, lower, upper, C=None):
    """(l, u, pre): interval arithmetic l' = W+ l + W- u + b, u' = W+ u + W- l + b (C fused into
    the last step), relu on both ends; pre: the (l, u) entering every relu."""
    pre = []
    for i, step in enumerate(steps):
        if step[0] == "relu":
            pre.append((lower, upper))
            lower, upper = np.maximum(lower, 0), np.maximum(upper, 0)
            continue
        _, M, b = step
        if C is not None and i == len(steps) - 1:
            M, b = C @ M, C @ b
        Mp, Mn = np.maximum(M, 0), np.minimum(M, 0)
        lower, upper = Mp @ lower + Mn @ upper + b, Mp @ upper + Mn @ lower + b
    return lower, upper, pre


def naive_crown(steps, lower, upper, C):
    """The CROWN-IBP lower bound of C z on one sample with dense matrices (the definition in
    ref/certify/crown.py's docstring), ReLU bounds from naive_ibp."""
    _, _, pre = naive_ibp(steps, lower, upper)
    A, acc = C, np.zeros(len(C))
    for step in reversed(steps):
        if step[0] == "affine":
            acc, A = acc + A @ step[2], A @ step[1]
            continue
        lo, up = pre.pop()
        l_neg = np.minimum(lo, 0)
        u_pos = np.maximum(np.maximum(up, 0), l_neg + 1e-8)
        d_up = u_pos / (u_pos - l_neg)
        A_neg, A_pos = np.minimum(A, 0), np.maximum(A, 0)
        acc = acc + A_neg @ (-l_neg * d_up)
        A = A_neg * d_up + A_pos * (d_up > 0.5)
    mu, r = (upper + lower) / 2, (upper - lower) / 2
    return A @ mu - np.abs(A) @ r + acc


def spec(y, k):
    return np.eye(k)[y][:, None, :] - np.eye(k)[None]                    # (n, k, k)


def box(x, eps):
    return np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)


def logits(model, x):
    return model(T(x)).data


def margins(z, y):
    return z[np.arange(len(y)), y][:, None] - z                           # (n, k)


def lbs(model, x, y, eps):
    return {method: certify.margin_lower_bounds(model, x, y, eps, method).data
            for method in certify.crown.METHODS}


# ---- against the definitions --------------------------------------------------------------------
@given(nets())
def test_ibp_and_crown_ibp_equal_naive_dense_implementations(case):
    model, x, y, eps = case
    steps = dense_program(model, x.shape[1:])
    lower, upper = certify.ibp_bounds(model, x, eps)
    bounds = lbs(model, x, y, eps)
    k = lower.shape[1]
    for i, (lo, up) in enumerate(zip(*box(x, eps))):
        C = spec(y[i:i + 1], k)[0]
        want_lower, want_upper, _ = naive_ibp(steps, lo.ravel(), up.ravel())
        np.testing.assert_allclose(lower.data[i], want_lower, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(upper.data[i], want_upper, rtol=RTOL, atol=ATOL)
        want_ibp, _, _ = naive_ibp(steps, lo.ravel(), up.ravel(), C)
        np.testing.assert_allclose(bounds["ibp"][i], want_ibp, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(bounds["crown-ibp"][i],
                                   naive_crown(steps, lo.ravel(), up.ravel(), C),
                                   rtol=RTOL, atol=ATOL)


@given(nets())
def test_bounds_are_sound_for_sampled_and_pgd_points(case):
    model, x, y, eps = case
    rng = np.random.default_rng(0)
    lower, upper = (b.data for b in certify.ibp_bounds(model, x, eps))
    bounds = lbs(model, x, y, eps)
    for lb in bounds.values():
        assert np.all(lb[np.arange(len(y)), y] == 0)
    corners = [np.clip(x + eps * rng.choice([-1.0, 1.0], x.shape), 0, 1) for _ in range(8)]
    inside = [np.clip(x + rng.uniform(-eps, eps, x.shape), 0, 1) for _ in range(8)]
    points = [x] + corners + inside
    if eps > 0:
        points.append(attacks.pgd(model, x, y, eps, eps / 4, 10, rng=rng))
    for point in points:
        assert np.all(np.abs(point - x) <= eps + 1e-12)
        z = logits(model, point)
        assert np.all(z >= lower - SLACK) and np.all(z <= upper + SLACK)
        for lb in bounds.values():
            assert np.all(margins(z, y) >= lb - SLACK)


@given(nets())
def test_bounds_at_eps_zero_are_the_clean_logits_and_margins(case):
    model, x, y, _ = case
    z = logits(model, x)
    for bound in certify.ibp_bounds(model, x, 0.0):
        np.testing.assert_allclose(bound.data, z, rtol=RTOL, atol=ATOL)
    for lb in lbs(model, x, y, 0.0).values():
        np.testing.assert_allclose(lb, margins(z, y), rtol=RTOL, atol=ATOL)


def test_input_box_is_clipped_as_asked():
    model = certified_cnn(width=2, rng=0).astype(np.float64)
    x = np.random.default_rng(0).uniform(0.2, 0.9, (2, 1, 8, 8))
    for clip, (lo, hi) in ((True, (0, 1)), ("batch", (x.min(), x.max())), (False, (-9, 9))):
        lower, upper = certify.ibp.input_box(model, x, 0.3, clip)
        np.testing.assert_array_equal(lower.data, np.maximum(x - 0.3, lo))
        np.testing.assert_array_equal(upper.data, np.minimum(x + 0.3, hi))


def test_crown_ibp_is_tighter_than_ibp_on_a_certified_net():
    """Not a theorem, but the reason CROWN-IBP exists: on average over a batch it is tighter."""
    model = certified_cnn(width=4, rng=0).astype(np.float64)
    rng = np.random.default_rng(1)
    x, y = rng.random((16, 1, 8, 8)), rng.integers(0, 10, 16)
    bounds = lbs(model, x, y, 0.05)
    assert bounds["crown-ibp"].mean() > bounds["ibp"].mean()


@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 3), st.integers(1, 2), st.integers(0, 3),
       st.integers(1, 2))
def test_conv_transpose_is_the_adjoint_of_the_convolution(seed, k, s, p, d):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(max(1, d * (k - 1) + 1 - 2 * p), 8, size=2)
    layer = Conv2d(2, 3, k, stride=s, padding=p, dilation=d, rng=rng).astype(np.float64)
    x = rng.standard_normal((2, 2, h, w))
    z = ref.ops.conv2d(T(x), layer.weight, None, stride=s, padding=p, dilation=d).data
    A = rng.standard_normal(z.shape)
    At = conv_transpose(T(A), layer, layer.weight, (h, w)).data
    assert At.shape == x.shape
    np.testing.assert_allclose((At * x).sum(), (A * z).sum(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("builder, convs, linears", [
    (cifar_model, [(16, 3, 4, 2, 1), (32, 16, 4, 2, 1)], [(100, 2048), (10, 100)]),
    (cifar_model_large, [(32, 3, 3, 1, 1), (32, 32, 4, 2, 1), (64, 32, 3, 1, 1), (64, 64, 4, 2, 1)],
     [(512, 4096), (512, 512), (10, 512)]),
])
def test_certified_models_are_the_reference_sequentials(builder, convs, linears):
    """HYDRA models/basic.py: conv-ReLU pairs, Flatten, linear-ReLU pairs, the last linear; its
    nn.Sequential's parameter names; conv W ~ N(0, 2 / (kh kw o)), b = 0."""
    model = builder(rng=0)
    layers = certify.bound_layers(model)
    assert [type(m) for m in layers] == ([Conv2d, ReLU] * len(convs) + [Flatten]
                                         + [Linear, ReLU] * (len(linears) - 1) + [Linear])
    for i, (o, c, k, s, p) in enumerate(convs):
        conv = getattr(model, str(2 * i))
        assert conv.weight.shape == (o, c, k, k) and conv.stride == (s, s)
        assert conv.padding == (p, p) and not conv.bias.data.any()
        assert conv.weight.data.std() == pytest.approx(np.sqrt(2 / (k * k * o)), rel=0.1)
    first = 2 * len(convs) + 1
    for i, shape in enumerate(linears):
        assert getattr(model, str(first + 2 * i)).weight.shape == shape
    assert model(T(np.zeros((2, 3, 32, 32), np.float32))).shape == (2, 10)


# ---- gradients ----------------------------------------------------------------------------------
def bound_loss(model, x, y, eps, beta):
    lb = certify.mixed_margin_lower_bounds(model, x, y, eps, beta)
    return lb.ops.cross_entropy(-lb, y)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_bound_loss_gradients_pass_the_dot_product_check(beta):
    rng = np.random.default_rng(2)
    model = Sequential(Normalize((0.5,), (0.3,)), Conv2d(1, 3, 3, stride=2, padding=1, rng=rng),
                       ReLU(), Conv2d(3, 4, 2, rng=rng), ReLU(), Flatten(),
                       Linear(16, 6, rng=rng), ReLU(), Linear(6, 4, rng=rng)).astype(np.float64)
    x, y = rng.random((3, 1, 6, 6)), rng.integers(0, 4, 3)
    params = model.parameters()
    check_vjp(lambda *p: bound_loss(model, x, y, 0.05, beta), params, rng)


def test_score_gradients_flow_through_the_bounds():
    """The subnet layers' scores get the straight-through gradient sign(S) W dL/dW_eff, with
    dL/dW_eff read from the kept weights' gradient (dL/dW = M dL/dW_eff)."""
    rng = np.random.default_rng(3)
    model = Sequential(SubnetConv2d(1, 3, 3, padding=1, keep=0.5, rng=rng), ReLU(), Flatten(),
                       SubnetLinear(48, 5, keep=0.5, rng=rng)).astype(np.float64)
    x, y = rng.random((4, 1, 4, 4)), rng.integers(0, 5, 4)
    bound_loss(model, x, y, 0.1, 0.5).backward()
    for layer in (model[0], model[3]):
        kept = layer.mask() > 0
        S, W = layer.scores.data, layer.weight.data
        assert np.abs(layer.scores.grad).max() > 0
        np.testing.assert_allclose(layer.scores.grad[kept],
                                   (np.sign(S) * W * layer.weight.grad)[kept], rtol=1e-10)


# ---- verified accuracy --------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.002, 0.02])
def test_verified_accuracy_is_never_above_pgd_accuracy(eps):
    """Labels = the model's own predictions, so clean accuracy is 1 and a small eps verifies
    some samples; every verified sample must survive PGD."""
    model = certified_cnn(width=4, rng=4).astype(np.float64)
    rng = np.random.default_rng(4)
    x = rng.random((32, 1, 8, 8))
    y = logits(model, x).argmax(axis=1)
    x_adv = attacks.pgd(model, x, y, eps, eps / 4, 20, rng=rng)
    robust = logits(model, x_adv).argmax(axis=1) == y
    for method in certify.crown.METHODS:
        lb = certify.margin_lower_bounds(model, x, y, eps, method)
        verified = certify.crown.certified_rows(lb, y)
        assert np.all(robust[verified])
        acc = certify.verified_accuracy(model, x, y, eps, method, batch_size=5)
        assert acc == verified.mean() <= robust.mean()
    assert certify.verified_accuracy(model, x, y, 0.002, "crown-ibp") > 0.5


# ---- backends -----------------------------------------------------------------------------------
def test_gpu_backend_gives_the_same_bounds_and_gradients():
    rng = np.random.default_rng(5)
    x, y = rng.random((3, 3, 32, 32)), rng.integers(0, 10, 3)
    models = {b: cifar_model(rng=5).astype(np.float64).to(b) for b in ("numpy", "gpu")}
    on_gpu = (gpu.asarray(x), gpu.asarray(y))
    for beta in (0.0, 0.5):
        got = {}
        for backend, model in models.items():
            for p in model.parameters():
                p.grad = None
            loss = bound_loss(model, *((x, y) if backend == "numpy" else on_gpu), 0.01, beta)
            loss.backward()
            grads = [ref.asarray(p.grad) for p in model.parameters()]
            got[backend] = [ref.asarray(loss.data)] + grads
        for want, have in zip(got["numpy"], got["gpu"]):
            np.testing.assert_allclose(have, want, rtol=1e-10, atol=1e-12)
    lower = [ref.asarray(certify.ibp_bounds(models[b], xb, 0.01)[0].data)
             for b, xb in (("numpy", x), ("gpu", on_gpu[0]))]
    np.testing.assert_allclose(lower[1], lower[0], rtol=1e-10, atol=1e-12)


def test_gpu_backend_gives_the_same_objective_losses():
    rng = np.random.default_rng(8)
    x, y = rng.random((4, 1, 8, 8)), rng.integers(0, 10, 4)
    losses = []
    for backend, (xb, yb) in (("numpy", (x, y)), ("gpu", (gpu.asarray(x), gpu.asarray(y)))):
        model = certified_cnn(width=2, rng=8).astype(np.float64).to(backend)
        crown_ibp = objectives.get("crown_ibp", eps=0.04, ramp_epochs=3, steps_per_epoch=1)
        crown_ibp.step = 1                                       # eps_t = 0.02, beta = 0.5
        smooth = objectives.get("smooth")
        losses.append([float(crown_ibp(model, xb, yb).item()),
                       float(smooth(model, xb, yb, np.random.default_rng(9)).item())])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-10)


# ---- the objectives -----------------------------------------------------------------------------
def test_eps_ramp_is_the_reference_linear_schedule():
    ramp = certify.EpsRamp(0.1, eps0=0.02, ramp_epochs=3, steps_per_epoch=4)
    t = np.arange(12)
    want = np.clip(0.02 + t / 8 * 0.08, 0.02, 0.1)          # final step (0 + 3 - 1) * 4 = 8
    np.testing.assert_allclose([ramp(s) for s in t], want, rtol=1e-12)
    assert certify.EpsRamp(0.1, ramp_epochs=1, steps_per_epoch=9)(0) == 0.1


def test_certified_objective_mixes_crown_ibp_and_ibp_along_the_ramp():
    model = certified_cnn(width=2, rng=6).astype(np.float64)
    rng = np.random.default_rng(6)
    x, y = rng.random((4, 1, 8, 8)), rng.integers(0, 10, 4)
    objective = objectives.get("crown_ibp", eps=0.04, ramp_epochs=2, steps_per_epoch=2)
    ibp_only = objectives.get("ibp", eps=0.04, ramp_epochs=2, steps_per_epoch=2)
    for step, beta in enumerate([1.0, 0.5, 0.0]):           # eps_t = 0, 0.02, 0.04
        loss = objective(model, x, y, rng)
        eps_t = 0.04 * (1 - beta)
        assert objective.eps_t == pytest.approx(eps_t)
        want = bound_loss(model, x, y, eps_t, beta).data
        np.testing.assert_allclose(loss.data, want, rtol=1e-12)
        np.testing.assert_allclose(ibp_only(model, x, y, rng).data,
                                   bound_loss(model, x, y, eps_t, 0.0).data, rtol=1e-12)
        np.testing.assert_array_equal(objective.logits, logits(model, x))
    assert objective.state_dict() == dict(step=3)
    mixed = objectives.get("crown_ibp", eps=0.04, kappa=0.25)
    clean = ref.ops.cross_entropy(model(T(x)), y).data
    np.testing.assert_allclose(mixed(model, x, y).data, 0.75 * bound_loss(model, x, y, 0.04, 0).data
                               + 0.25 * clean, rtol=1e-12)


# ---- bad input ----------------------------------------------------------------------------------
class Residual(Module):
    def __init__(self):
        super().__init__()
        self.conv = Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


@pytest.mark.parametrize("model, named", [
    (ref.models.small_cnn(in_channels=1, width=2), r"'features\.1' \(BatchNorm2d\)"),
    (Sequential(Conv2d(1, 2, 3), BatchNorm2d(2), Flatten(), Linear(72, 3)), r"'1' \(BatchNorm2d"),
    (Sequential(Conv2d(1, 2, 3), MaxPool2d(2), Flatten(), Linear(18, 3)), r"'1' \(MaxPool2d"),
    (Sequential(Dropout(0.5), Flatten(), Linear(64, 3)), r"'0' \(Dropout"),
    (Sequential(Residual(), Flatten(), Linear(64, 3)), r"'0' \(Residual"),
])
def test_unsupported_layers_are_refused_by_name(model, named):
    x, y = np.zeros((1, 1, 8, 8), np.float32), np.zeros(1, int)
    for call in (lambda: certify.ibp_bounds(model, x, 0.1),
                 lambda: certify.margin_lower_bounds(model, x, y, 0.1, "crown-ibp")):
        with pytest.raises(ValueError, match=named):
            call()


def test_bad_arguments_are_clear_errors():
    model = certified_cnn(width=2, rng=0)
    x, y = np.zeros((2, 1, 8, 8), np.float32), np.zeros(2, int)
    for eps in (-0.1, float("nan"), float("inf"), "0.1"):
        with pytest.raises(ValueError, match="eps"):
            certify.margin_lower_bounds(model, x, y, eps)
    with pytest.raises(ValueError, match="method"):
        certify.margin_lower_bounds(model, x, y, 0.1, "crown")
    with pytest.raises(ValueError, match="clip"):
        certify.ibp_bounds(model, x, 0.1, clip="yes")
    with pytest.raises(ValueError, match="labels"):
        certify.margin_lower_bounds(model, x, np.array([0, 10]), 0.1)
    with pytest.raises(ValueError, match="must be a Linear"):
        certify.margin_lower_bounds(Sequential(Conv2d(1, 2, 8), Flatten()), x, y, 0.1)
    with pytest.raises(ValueError, match="ramp_epochs"):
        objectives.get("crown_ibp", ramp_epochs=0)
    with pytest.raises(ValueError, match="eps0"):
        objectives.get("ibp", eps=0.1, eps0=0.2)


# ---- training on digits (slow) ------------------------------------------------------------------
DIGITS_EPS = 0.05   # in [0, 1] pixels (the digits have 17 grey levels: 0.05 is 0.8 of a level)


@pytest.fixture(scope="module")
def digits():
    """(train loader, test images as float32 in [0, 1], test labels)."""
    import datasets
    x, y = datasets.load("digits", "train")
    xt, yt = datasets.load("digits", "test")
    return datasets.Loader(x, y, 32, shuffle=True, seed=1), xt.astype(np.float32) / 255, yt


def fit_digits(model, objective, params, loader, epochs):
    from ref import optim, train
    train.fit(model, objective, optim.Adam(params, 1e-3), None, loader, epochs, progress=False)
    return model


@pytest.fixture(scope="module")
def natural(digits):
    """certified_cnn (width 8) after 10 epochs of natural training (Adam 1e-3)."""
    model = certified_cnn(width=8, rng=0)
    return fit_digits(model, objectives.get("natural"), model.parameters(), digits[0], 10)


def verified_and_pgd(model, xt, yt):
    """([IBP-verified, CROWN-IBP-verified accuracy], PGD-20 accuracy) at DIGITS_EPS."""
    x_adv = attacks.pgd(model, xt, yt, DIGITS_EPS, DIGITS_EPS / 4, 20,
                        rng=np.random.default_rng(0))
    verified = [certify.verified_accuracy(model, xt, yt, DIGITS_EPS, method)
                for method in certify.crown.METHODS]
    return verified, np.mean(logits(model, x_adv).argmax(axis=1) == yt)


@pytest.mark.slow
def test_ibp_training_on_digits_verifies_what_natural_training_does_not(digits, natural):
    """10 epochs of IBP training (eps ramped over 5 epochs, kappa 0.5) certify a large part of
    the test set (measured: IBP 0.60, CROWN-IBP 0.75, PGD 0.80, clean 0.91); natural training
    nothing (0, 0; PGD 0.81, clean 0.96). Verified <= PGD accuracy."""
    loader, xt, yt = digits
    model = certified_cnn(width=8, rng=0)
    objective = objectives.get("ibp", eps=DIGITS_EPS, ramp_epochs=5,
                               steps_per_epoch=len(loader), kappa=0.5)
    fit_digits(model, objective, model.parameters(), loader, 10)
    for net, check in ((natural, lambda v: max(v) < 0.02), (model, lambda v: min(v) > 0.4)):
        verified, pgd = verified_and_pgd(net, xt, yt)
        assert check(verified) and max(verified) <= pgd


@pytest.mark.slow
def test_a_certifiably_robust_subnetwork_hides_in_a_naturally_trained_net(digits, natural):
    """HYDRA's prune phase on the natural net (keep 0.5, weights frozen, scores trained with the
    IBP objective, eps ramped over 4 of 8 epochs) raises IBP-verified accuracy from 0 to clearly
    above 0 (measured: IBP 0.18, CROWN-IBP 0.23, PGD 0.36, clean 0.40)."""
    from ref.prune import hydra
    loader, xt, yt = digits
    model = certified_cnn(width=8, rng=0)
    model.load_state_dict(natural.state_dict())
    hydra.to_subnet(model, 0.5)
    hydra.set_phase(model, "prune")
    objective = objectives.get("ibp", eps=DIGITS_EPS, ramp_epochs=4,
                               steps_per_epoch=len(loader))
    fit_digits(model, objective, [p for p in model.parameters() if p.requires_grad], loader, 8)
    verified, pgd = verified_and_pgd(model, xt, yt)
    assert min(verified) > 0.1 and max(verified) <= pgd
