"""ref.nn: initialisers against PyTorch's formulas, layers against their ops, Module bookkeeping
(names, modes, state dicts, dtype and backend moves) and BatchNorm buffers."""
import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import ref
from ref import nn
from ref.gradcheck import check_vjp
from ref.nn import init


def empty(*shape, dtype=np.float32):
    return ref.Tensor(np.zeros(shape, dtype=dtype))


# ---- init -------------------------------------------------------------------------------------

@pytest.mark.parametrize("nonlinearity, param, gain", [
    ("linear", None, 1.0), ("conv2d", None, 1.0), ("sigmoid", None, 1.0), ("tanh", None, 5 / 3),
    ("relu", None, math.sqrt(2)), ("leaky_relu", None, math.sqrt(2 / (1 + 0.01 ** 2))),
    ("leaky_relu", 0.2, math.sqrt(2 / 1.04)), ("leaky_relu", math.sqrt(5), math.sqrt(1 / 3)),
    ("selu", None, 0.75)])
def test_calculate_gain(nonlinearity, param, gain):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(gain, rel=1e-15)


def test_calculate_gain_rejects_bad_input():
    with pytest.raises(ValueError, match="softplus"):
        init.calculate_gain("softplus")
    with pytest.raises(ValueError, match="True"):
        init.calculate_gain("leaky_relu", True)


@pytest.mark.parametrize("shape, fans", [((5, 3), (3, 5)), ((8, 4, 3, 3), (36, 72)),
                                         ((6, 2, 1, 5), (10, 30)), ((2, 7, 4), (28, 8))])
def test_fan_in_and_fan_out(shape, fans):
    assert init.fan_in_and_fan_out(empty(*shape)) == fans


def test_fan_needs_two_dimensions():
    with pytest.raises(ValueError, match=r"\(7,\)"):
        init.fan_in_and_fan_out(empty(7))
    with pytest.raises(ValueError, match="fan_avg"):
        init.kaiming_uniform_(empty(3, 3), mode="fan_avg")


def _check_uniform(t, bound):
    """max |t| <= bound, the extremes come close to +-bound, and var ~ bound^2 / 3."""
    w = t.data.astype(np.float64)
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert w.max() > 0.99 * bound and w.min() < -0.99 * bound
    assert w.var() == pytest.approx(bound ** 2 / 3, rel=0.05)
    assert abs(w.mean()) < 0.05 * bound


def _check_normal(t, std):
    w = t.data.astype(np.float64)
    assert w.std() == pytest.approx(std, rel=0.05)
    assert abs(w.mean()) < 0.05 * std


@pytest.mark.parametrize("a, mode, nonlinearity", [
    (0, "fan_in", "leaky_relu"), (math.sqrt(5), "fan_in", "leaky_relu"), (0, "fan_out", "relu"),
    (0.1, "fan_out", "tanh")])
def test_kaiming(a, mode, nonlinearity, rng):
    shape = (64, 32, 3, 3)    # fan_in 288, fan_out 576
    fan = 288 if mode == "fan_in" else 576
    gain = init.calculate_gain(nonlinearity, a)
    t = init.kaiming_uniform_(empty(*shape), a, mode, nonlinearity, rng=rng)
    _check_uniform(t, gain * math.sqrt(3 / fan))
    t = init.kaiming_normal_(empty(*shape), a, mode, nonlinearity, rng=rng)
    _check_normal(t, gain / math.sqrt(fan))


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_xavier(gain, rng):
    shape = (48, 40, 5, 5)    # fan_in 1000, fan_out 1200
    _check_uniform(init.xavier_uniform_(empty(*shape), gain, rng=rng),
                   gain * math.sqrt(6 / 2200))
    _check_normal(init.xavier_normal_(empty(*shape), gain, rng=rng), gain * math.sqrt(2 / 2200))


def test_uniform_normal_constant(rng):
    t = init.uniform_(empty(100, 100), -2.0, 3.0, rng=rng)
    assert t.data.min() >= -2 and t.data.max() < 3
    assert t.data.mean() == pytest.approx(0.5, abs=0.05)
    t = init.normal_(empty(100, 100), 1.5, 0.5, rng=rng)
    assert t.data.mean() == pytest.approx(1.5, abs=0.02)
    assert t.data.std() == pytest.approx(0.5, rel=0.03)
    assert (init.constant_(t, 0.25).data == 0.25).all()
    assert (init.zeros_(t).data == 0).all() and (init.ones_(t).data == 1).all()


def test_init_is_in_place_and_seeded():
    t = empty(4, 5)
    array = t.data
    init.kaiming_uniform_(t, rng=np.random.default_rng(3))
    assert t.data is array and t.dtype == np.float32
    again = init.kaiming_uniform_(empty(4, 5), rng=np.random.default_rng(3))
    other = init.kaiming_uniform_(empty(4, 5), rng=np.random.default_rng(4))
    np.testing.assert_array_equal(t.data, again.data)
    assert not np.array_equal(t.data, other.data)


@pytest.mark.parametrize("make, fan_in", [
    (lambda rng: nn.Linear(300, 200, rng=rng), 300),
    (lambda rng: nn.Conv2d(40, 50, 3, rng=rng), 360),
    (lambda rng: nn.Conv2d(30, 64, (1, 5), rng=rng), 150)])
def test_default_layer_init(make, fan_in, rng):
    """PyTorch's Linear / Conv2d default: W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    layer = make(rng)
    _check_uniform(layer.weight, 1 / math.sqrt(fan_in))
    b = layer.bias.data
    assert np.abs(b).max() <= 1 / math.sqrt(fan_in) and b.std() > 0
    assert layer.weight.dtype == np.float32 and layer.weight.requires_grad


def test_layer_seed_reproducible():
    a, b = nn.Linear(6, 3, rng=7), nn.Linear(6, 3, rng=np.random.default_rng(7))
    c = nn.Linear(6, 3, rng=8)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    assert not np.array_equal(a.weight.data, c.weight.data)


# ---- layers equal their ops -------------------------------------------------------------------

def _x(rng, *shape):
    return ref.Tensor(rng.standard_normal(shape))   # float64


@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward(bias, rng):
    layer = nn.Linear(5, 3, bias=bias, rng=rng).astype(np.float64)
    x = _x(rng, 4, 5)
    expected = x.data @ layer.weight.data.T + (layer.bias.data if bias else 0)
    np.testing.assert_allclose(layer(x).data, expected, rtol=1e-14)
    assert (layer.bias is None) != bias and len(layer.parameters()) == 1 + bias


@pytest.mark.parametrize("stride, padding, dilation, bias", [(1, 0, 1, True), (2, 1, 1, False),
                                                             ((1, 2), (0, 1), (2, 1), True)])
def test_conv2d_forward(stride, padding, dilation, bias, rng):
    layer = nn.Conv2d(3, 4, (3, 2), stride, padding, dilation, bias, rng=rng).astype(np.float64)
    x = _x(rng, 2, 3, 9, 8)
    expected = ref.ops.conv2d(x, layer.weight, layer.bias, stride=stride, padding=padding,
                              dilation=dilation)
    np.testing.assert_array_equal(layer(x).data, expected.data)
    assert layer.weight.shape == (4, 3, 3, 2)


def test_effective_weight_is_the_forward_hook(rng):
    """Overriding effective_weight() (as pruning does with W * mask) changes the forward."""
    for layer, x in ((nn.Linear(5, 4, rng=rng), _x(rng, 3, 5)),
                     (nn.Conv2d(5, 4, 3, rng=rng), _x(rng, 2, 5, 6, 6))):
        layer.astype(np.float64)
        mask = rng.random(layer.weight.shape) < 0.5
        dense = layer.weight.data
        layer.weight.data = dense * mask
        expected = layer(x).data
        layer.weight.data = dense
        assert not np.allclose(layer(x).data, expected)
        layer.effective_weight = lambda layer=layer, mask=mask: layer.weight * mask
        np.testing.assert_array_equal(layer(x).data, expected)


@pytest.mark.parametrize("make, op", [
    (lambda: nn.ReLU(), lambda x: ref.ops.relu(x)),
    (lambda: nn.Identity(), lambda x: x),
    (lambda: nn.Flatten(), lambda x: ref.ops.flatten(x, 1)),
    (lambda: nn.Flatten(2, 3), lambda x: ref.ops.flatten(x, 2, 3)),
    (lambda: nn.MaxPool2d(2), lambda x: ref.ops.max_pool2d(x, 2, 2)),
    (lambda: nn.MaxPool2d(3, 2, 1), lambda x: ref.ops.max_pool2d(x, 3, 2, 1)),
    (lambda: nn.AvgPool2d(2, 1), lambda x: ref.ops.avg_pool2d(x, 2, 1)),
    (lambda: nn.AdaptiveAvgPool2d(3), lambda x: ref.ops.adaptive_avg_pool2d(x, 3))])
def test_parameter_free_layers(make, op, rng):
    x = _x(rng, 2, 3, 7, 6)
    layer = make()
    assert layer.parameters() == [] and layer.buffers() == []
    np.testing.assert_array_equal(layer(x).data, op(x).data)


def test_dropout_layer(rng):
    x = _x(rng, 50, 40)
    layer = nn.Dropout(0.3, rng=5)
    y = layer(x).data
    np.testing.assert_array_equal(y, ref.ops.dropout(x, 0.3, rng=np.random.default_rng(5)).data)
    assert not np.array_equal(layer(x).data, y)          # the layer's generator moves on
    assert layer.eval()(x) is x
    with pytest.raises(ValueError, match="1.5"):
        nn.Dropout(1.5)


def test_sequential_gradcheck(rng):
    model = nn.Sequential(nn.Linear(4, 6, rng=rng), nn.ReLU(), nn.Linear(6, 3, rng=rng))
    model.astype(np.float64)
    x = ref.Tensor(rng.standard_normal((5, 4)), requires_grad=True)
    check_vjp(lambda x, *params: model(x), [x] + model.parameters(), rng)


@pytest.mark.parametrize("kwargs, error", [
    (dict(in_channels=0), ValueError), (dict(out_channels=2.5), ValueError),
    (dict(kernel_size=(3, 3, 3)), TypeError), (dict(stride=0), ValueError),
    (dict(padding=-1), ValueError), (dict(dilation=(1, 0)), ValueError)])
def test_conv2d_rejects_bad_arguments(kwargs, error):
    args = dict(in_channels=3, out_channels=4, kernel_size=3) | kwargs
    with pytest.raises(error, match=next(iter(kwargs))):
        nn.Conv2d(**args)


# ---- Sequential, modes, state dicts -----------------------------------------------------------

def _net(rng=0):
    return nn.Sequential(nn.Linear(3, 4, rng=rng), nn.BatchNorm1d(4), nn.ReLU(),
                         nn.Sequential(nn.Linear(4, 2, rng=rng), nn.Dropout(0.5)))


def test_sequential_naming_and_indexing():
    model = _net()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "3.0.weight", "3.0.bias"]
    assert [name for name, _ in model.named_buffers()] == ["1.running_mean", "1.running_var"]
    assert len(model) == 4 and isinstance(model[2], nn.ReLU) and model[-1] is model[3]
    assert [type(m) for m in model] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Sequential]
    head = model[1:3]
    assert isinstance(head, nn.Sequential) and head[0] is model[1] and len(head) == 2
    with pytest.raises(IndexError, match="4"):
        model[4]
    with pytest.raises(TypeError, match="int"):
        nn.Sequential(nn.ReLU(), 3)


def test_train_eval_propagate():
    model = _net()
    assert all(m.training for m in model.modules())
    assert model.eval() is model and not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_state_dict_round_trip(rng):
    a, b = _net(1), _net(2)
    x = _x(rng, 6, 3)
    a.eval()
    b.eval()
    assert not np.allclose(a(x).data, b(x).data)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(x).data, b(x).data)
    assert all(pa.data is not pb.data for pa, pb in zip(a.parameters(), b.parameters()))


def test_load_state_dict_errors():
    model = _net()
    state = dict(model.state_dict())
    missing = {k: v for k, v in state.items() if k != "1.running_var"}
    with pytest.raises(KeyError, match=r"missing \['1.running_var'\]"):
        model.load_state_dict(missing)
    with pytest.raises(KeyError, match=r"unexpected \['extra.weight'\]"):
        model.load_state_dict(state | {"extra.weight": np.zeros(3)})
    with pytest.raises(ValueError, match=r"3.0.weight: saved \(2, 5\)"):
        model.load_state_dict(state | {"3.0.weight": np.zeros((2, 5))})
    assert model.load_state_dict(missing, strict=False) == (["1.running_var"], [])


def test_astype_float64_keeps_tensors(rng):
    model = _net()
    tensors = model.parameters() + model.buffers()
    before = [t.data.copy() for t in tensors]
    assert model.astype(np.float64) is model
    assert [id(t) for t in model.parameters() + model.buffers()] == [id(t) for t in tensors]
    for t, old in zip(tensors, before):
        assert t.dtype == np.float64
        np.testing.assert_array_equal(t.data, old)
    assert model.eval()(_x(rng, 2, 3)).dtype == np.float64


def test_to_numpy_keeps_data():
    model = _net()
    state = {k: v.copy() for k, v in model.state_dict().items()}
    model.to("numpy")
    assert all(type(t) is ref.Tensor for t in model.parameters())
    assert all(t.requires_grad for t in model.parameters())
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[name])


# ---- BatchNorm --------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [nn.BatchNorm1d, nn.BatchNorm2d])
def test_batchnorm_parameters(cls):
    bn = cls(5)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var"]
    assert (bn.weight.data == 1).all() and (bn.bias.data == 0).all()
    assert (bn.running_mean.data == 0).all() and (bn.running_var.data == 1).all()
    plain = cls(5, affine=False)
    assert plain.parameters() == [] and len(plain.buffers()) == 2


@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(2, 4), momentum=st.floats(0.05, 0.9),
       affine=st.booleans(), biased=st.booleans())
@example(seed=197, n=2, momentum=0.5, affine=False, biased=False)   # a channel mean of -4.7e-6
def test_batchnorm2d_running_stats(seed, n, momentum, affine, biased):
    """Train mode: batch statistics normalise and blend into the buffers (unbiased variance as
    PyTorch unless biased_running_var); eval mode: buffers normalise and stay unchanged."""
    rng = np.random.default_rng(seed)
    bn = nn.BatchNorm2d(3, momentum=momentum, affine=affine, biased_running_var=biased)
    bn.astype(np.float64)
    if affine:
        bn.weight.data[...] = rng.standard_normal(3)
        bn.bias.data[...] = rng.standard_normal(3)
    x = ref.Tensor(rng.standard_normal((n, 3, 2, 3)) * 2 + 1)
    scale = bn.weight.data if affine else np.ones(3)
    shift = bn.bias.data if affine else np.zeros(3)
    mean, var = x.data.mean(axis=(0, 2, 3)), x.data.var(axis=(0, 2, 3))
    m = n * 6
    y = bn(x).data
    expected = ((x.data - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
                * scale[:, None, None] + shift[:, None, None])
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    running_mean = momentum * mean
    running_var = (1 - momentum) + momentum * var * (1 if biased else m / (m - 1))
    # atol: a channel mean near zero (e.g. -4.7e-6) differs in its last bits between summation
    # orders, so a relative tolerance alone fails on it
    np.testing.assert_allclose(bn.running_mean.data, running_mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(bn.running_var.data, running_var, rtol=1e-12, atol=1e-14)
    bn.eval()
    buffers = bn.running_mean.data.copy(), bn.running_var.data.copy()
    y = bn(x).data
    expected = ((x.data - running_mean[:, None, None]) / np.sqrt(running_var[:, None, None] + 1e-5)
                * scale[:, None, None] + shift[:, None, None])
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(bn.running_mean.data, buffers[0])
    np.testing.assert_array_equal(bn.running_var.data, buffers[1])


def test_batchnorm_checks_input_rank(rng):
    with pytest.raises(ValueError, match=r"4-d input, got shape \(2, 3\)"):
        nn.BatchNorm2d(3)(_x(rng, 2, 3))
    with pytest.raises(ValueError, match=r"2-d input, got shape \(2, 3, 4, 4\)"):
        nn.BatchNorm1d(3)(_x(rng, 2, 3, 4, 4))
