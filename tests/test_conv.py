"""conv2d: forward against the loops in reference.py, backward by check_vjp (float64), the batch
chunking, the skipped gradients, float32, and the argument errors."""
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ref
import reference
import ref.ops.conv as conv
from ref.gradcheck import check_vjp


@st.composite
def conv_cases(draw, strides=st.integers(1, 3), paddings=st.integers(0, 2)):
    """Small (x shape, W shape, stride, padding, dilation) with an output of at least 1x1."""
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(strides), draw(strides))
    padding = (draw(paddings), draw(paddings))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    low_h = max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0])
    low_w = max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1])
    h, w = draw(st.integers(low_h, low_h + 5)), draw(st.integers(low_w, low_w + 5))
    return (n, c, h, w), (o, c, kh, kw), stride, padding, dilation


def _tensors(rng, x_shape, W_shape, bias, dtype=np.float64, grad=(True, True, True)):
    x = ref.Tensor(rng.standard_normal(x_shape).astype(dtype), requires_grad=grad[0])
    W = ref.Tensor(rng.standard_normal(W_shape).astype(dtype), requires_grad=grad[1])
    if not bias:
        return x, W, None
    return x, W, ref.Tensor(rng.standard_normal(W_shape[0]).astype(dtype), requires_grad=grad[2])


def _chunking(images_per_chunk):
    """Make the op take this many images per chunk (1: every image is its own chunk)."""
    return mock.patch.object(conv, "CHUNK_BYTES", 1 if images_per_chunk == 1 else 2 ** 40)


@given(case=conv_cases(), bias=st.booleans(), one_image_chunks=st.booleans(),
       seed=st.integers(0, 99))
def test_forward_matches_loops(case, bias, one_image_chunks, seed):
    x_shape, W_shape, stride, padding, dilation = case
    x, W, b = _tensors(np.random.default_rng(seed), x_shape, W_shape, bias)
    with _chunking(1 if one_image_chunks else None):
        y = ref.ops.conv2d(x, W, b, stride=stride, padding=padding, dilation=dilation)
    expected = reference.conv2d(x.data, W.data, None if b is None else b.data, stride, padding,
                                dilation)
    assert y.shape == expected.shape and y.dtype == np.float64
    np.testing.assert_allclose(y.data, expected, rtol=1e-10, atol=1e-10)


@given(case=conv_cases(), bias=st.booleans(), one_image_chunks=st.booleans(),
       seed=st.integers(0, 99))
def test_backward_gradcheck(case, bias, one_image_chunks, seed):
    x_shape, W_shape, stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    inputs = [t for t in _tensors(rng, x_shape, W_shape, bias) if t is not None]
    with _chunking(1 if one_image_chunks else None):
        check_vjp(lambda x, W, b=None: ref.ops.conv2d(x, W, b, stride, padding, dilation),
                  inputs, rng)


PATHS = {"correlation": conv_cases(strides=st.just(1), paddings=st.integers(0, 1)),
         "col2im": conv_cases(strides=st.integers(1, 2), paddings=st.integers(0, 5))}


def _takes_correlation_path(case):
    """Stride 1 and padding <= dilation (kernel - 1) on both axes."""
    _, (_, _, kh, kw), stride, (ph, pw), (dy, dx) = case
    return stride == (1, 1) and ph <= dy * (kh - 1) and pw <= dx * (kw - 1)


@pytest.mark.parametrize("path", sorted(PATHS))
@given(data=st.data(), one_image_chunks=st.booleans(), seed=st.integers(0, 99))
def test_gradients_match_the_loops(path, data, one_image_chunks, seed):
    """gx and gW by both backward paths: stride 1 with padding <= dilated kernel extent - 1 (the
    correlation of the padded gy with the flipped kernel) and every other case (col2im), with and
    without the input gradient."""
    correlation = path == "correlation"
    case = data.draw(PATHS[path].filter(lambda c: _takes_correlation_path(c) == correlation))
    x_shape, W_shape, stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    for grad in ((True, True, False), (False, True, False)):
        x, W, _ = _tensors(rng, x_shape, W_shape, False, grad=grad)
        with _chunking(1 if one_image_chunks else None):
            y = ref.ops.conv2d(x, W, stride=stride, padding=padding, dilation=dilation)
            gy = rng.standard_normal(y.shape)
            y.backward(gy)
        args = (stride, padding, dilation)
        gW = reference.conv2d_weight_grad(gy, x.data, W_shape, *args)
        np.testing.assert_allclose(W.grad, gW, rtol=1e-10, atol=1e-12)
        if grad[0]:
            gx = reference.conv2d_input_grad(gy, W.data, x_shape, *args)
            np.testing.assert_allclose(x.grad, gx, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("grad", [(True, False, False), (False, True, True), (True, True, False)])
def test_only_requested_gradients_are_computed(grad, rng):
    """An attack needs only gx: W is then neither differentiated nor x kept for gW, and back."""
    x, W, b = _tensors(rng, (2, 3, 6, 5), (4, 3, 3, 3), True, grad=grad)
    y = ref.ops.conv2d(x, W, b, padding=1)
    op = y.op
    assert (op.x is not None) == grad[1] and (op.W is not None) == grad[0]
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    full = [ref.Tensor(t.data, requires_grad=True) for t in (x, W, b)]
    ref.ops.conv2d(*full, padding=1).backward(gy)
    for t, f, wanted in zip((x, W, b), full, grad):
        if wanted:
            np.testing.assert_allclose(t.grad, f.grad, rtol=1e-12)
        else:
            assert t.grad is None


def test_chunking_gives_the_same_result(rng):
    x, W, b = _tensors(rng, (5, 4, 7, 7), (3, 4, 3, 3), True)
    results = []
    for images in (1, None):
        for t in (x, W, b):
            t.grad = None
        with _chunking(images):
            y = ref.ops.conv2d(x, W, b, stride=2, padding=1)
            assert (y.op.step == 1) == (images == 1)
            y.backward(np.ones(y.shape))
        results.append([y.data, x.grad, W.grad, b.grad])
    for one, whole in zip(*results):
        np.testing.assert_allclose(one, whole, rtol=1e-12, atol=1e-12)


def test_float32(rng):
    x, W, b = _tensors(rng, (2, 3, 8, 7), (4, 3, 3, 2), True, dtype=np.float32)
    y = ref.ops.conv2d(x, W, b, stride=(2, 1), padding=1, dilation=(1, 2))
    assert y.dtype == np.float32
    expected = reference.conv2d(x.data.astype(np.float64), W.data.astype(np.float64),
                                b.data.astype(np.float64), (2, 1), 1, (1, 2))
    np.testing.assert_allclose(y.data, expected, rtol=1e-4, atol=1e-5)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(gy)
    assert x.grad.dtype == W.grad.dtype == b.grad.dtype == np.float32
    x64, W64, b64 = (ref.Tensor(t.data.astype(np.float64), requires_grad=True) for t in (x, W, b))
    ref.ops.conv2d(x64, W64, b64, stride=(2, 1), padding=1, dilation=(1, 2)).backward(
        gy.astype(np.float64))
    for t, t64 in ((x, x64), (W, W64), (b, b64)):
        np.testing.assert_allclose(t.grad, t64.grad, rtol=1e-4, atol=1e-4)


def test_hand_computed_case():
    """A 2x2 all-ones kernel sums each 2x2 block; padding 1 puts single corners at the border."""
    x = ref.Tensor(np.arange(9.0).reshape(1, 1, 3, 3))
    W = ref.Tensor(np.ones((1, 1, 2, 2)))
    y = ref.ops.conv2d(x, W, padding=1, stride=2)
    np.testing.assert_array_equal(y.data[0, 0], [[0, 1 + 2], [3 + 6, 4 + 5 + 7 + 8]])


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x, W, b = _tensors(rng, (2, 5, 9, 8), (6, 5, 3, 2), True)
    y = ref.ops.conv2d(x, W, b, stride=(2, 1), padding=(1, 2), dilation=(2, 1))
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    tx, tW, tb = (torch.tensor(t.data, requires_grad=True) for t in (x, W, b))
    ty = torch.nn.functional.conv2d(tx, tW, tb, stride=(2, 1), padding=(1, 2), dilation=(2, 1))
    ty.backward(torch.tensor(gy))
    for ours, theirs in ((y.data, ty), (x.grad, tx.grad), (W.grad, tW.grad), (b.grad, tb.grad)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def _zeros(shape, dtype=np.float64):
    return ref.Tensor(np.zeros(shape, dtype=dtype))


F64, F32, I64 = np.float64, np.float32, np.int64


@pytest.mark.parametrize("x, W, b, kwargs, error, match", [
    ((1, 2, 5, 5, I64), (3, 2, 3, 3, F64), None, {}, TypeError, "x must be a floating.*int64"),
    ((1, 2, 5, 5, F64), (3, 2, 3, 3, np.int32), None, {}, TypeError, "W must be a floating"),
    ((2, 5, 5, F64), (3, 2, 3, 3, F64), None, {}, ValueError, r"x must have 4 dim.*\(2, 5, 5\)"),
    ((1, 2, 5, 5, F64), (3, 2, 3, F64), None, {}, ValueError, "W must have 4 dimensions"),
    ((1, 2, 5, 5, F64), (3, 4, 3, 3, F64), None, {}, ValueError, "x has 2 channels but W .* 4"),
    ((1, 2, 5, 5, F32), (3, 2, 3, 3, F64), None, {}, TypeError, "x float32, W float64"),
    ((1, 2, 5, 5, F64), (3, 2, 3, 3, F64), (3, F32), {}, TypeError, "b float32"),
    ((1, 2, 5, 5, F64), (3, 2, 3, 3, F64), (2, F64), {}, ValueError, r"b must have shape \(3,\)"),
    ((1, 2, 2, 5, F64), (3, 2, 3, 3, F64), None, {}, ValueError, r"output size \(0, 3\) < 1"),
    ((1, 2, 5, 5, F64), (3, 2, 3, 3, F64), None, dict(dilation=3), ValueError, "output size"),
    ((1, 2, 5, 5, F64), (3, 2, 3, 3, F64), None, dict(stride=0), ValueError, "stride must be >= 1"),
    ((1, 2, 5, 5, F64), (3, 2, 3, 3, F64), None, dict(padding=(1, -1)), ValueError, "padding"),
    ((1, 2, 5, 5, F64), (3, 2, 3, 3, F64), None, dict(stride=1.5), TypeError, "stride must be"),
    ((1, 2, 5, 5, F64), (3, 2, 3, 3, F64), None, dict(dilation=(1, 2, 3)), TypeError, "dilation"),
])
def test_bad_arguments_raise(x, W, b, kwargs, error, match):
    """Shapes are given with the dtype last."""
    x, W = _zeros(x[:-1], x[-1]), _zeros(W[:-1], W[-1])
    b = None if b is None else _zeros(b[:-1], b[-1])
    with pytest.raises(error, match=match):
        ref.ops.conv2d(x, W, b, **kwargs)
