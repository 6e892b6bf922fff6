"""HDF5 checkpoints: bit-exact round trips of model, optimizer and extras; atomic saves; errors
that name the bad entry or file."""
import os

import h5py
import numpy as np
import pytest

import ref
from ref.checkpoint import load, read, save
from ref.nn.module import Module
from ref.optim import SGD, SGDW, Adam


class Head(Module):
    def __init__(self, rng, c):
        super().__init__()
        self.weight = ref.Tensor(rng.standard_normal((2, c)).astype(np.float32),
                                 requires_grad=True)
        self.register_buffer("count", ref.Tensor(np.array(rng.integers(100), dtype=np.int64)))


class Tiny(Module):
    """float32 and float64 parameters, a float32 buffer, a boolean mask, a 0-d int64 buffer."""

    def __init__(self, rng, c=3, bias=True):
        super().__init__()
        self.weight = ref.Tensor(rng.standard_normal((c, 4)).astype(np.float32),
                                 requires_grad=True)
        self.bias = ref.Tensor(rng.standard_normal(c), requires_grad=True) if bias else None
        self.register_buffer("running_mean", ref.Tensor(rng.standard_normal(c).astype(np.float32)))
        self.register_buffer("mask", ref.Tensor(rng.random((c, 4)) < 0.5))
        self.head = Head(rng, c)


def assert_same_state(a, b):
    """Two state dicts (model or optimizer) hold the same keys, dtypes and bits."""
    assert a.keys() == b.keys()
    for key, value in a.items():
        if hasattr(value, "dtype"):
            assert value.dtype == b[key].dtype and np.array_equal(value, b[key]), key
        else:
            assert value == b[key] and type(value) is type(b[key]), key


def train_steps(model, optimizer, seeds):
    """One optimizer step per seed, with gradients drawn from that seed."""
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for p in model.parameters():
            p.grad = rng.standard_normal(p.shape).astype(p.dtype)
        optimizer.step()


OPTIMIZERS = [lambda params, lr: SGD(params, lr, momentum=0.9, nesterov=True, weight_decay=1e-3),
              lambda params, lr: SGDW(params, lr, weight_decay=1e-3),
              lambda params, lr: Adam(params, lr, weight_decay=1e-3)]


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS, ids=["SGD", "SGDW", "Adam"])
def test_round_trip_is_bit_exact_and_training_continues_identically(tmp_path, rng,
                                                                    make_optimizer):
    model = Tiny(rng)
    optimizer = make_optimizer(model.parameters(), 0.1)
    train_steps(model, optimizer, [1, 2, 3])
    data_rng = np.random.default_rng(5)
    data_rng.random(7)
    extras = dict(epoch=3, note="prune phase", lr=np.float32(0.1), pair=(1, 2.5),
                  history={"clean": [0.25, 0.5], "pgd": [0.125, float("nan")]},
                  rng_state=data_rng.bit_generator.state,
                  mt_state=np.random.Generator(np.random.MT19937(4)).bit_generator.state,
                  scores=rng.standard_normal((2, 3)).astype(np.float32), best=np.array(0.75),
                  order=np.arange(5, dtype=np.int64))
    path = tmp_path / "model.h5"
    save(path, model, optimizer, **extras)

    fresh = Tiny(np.random.default_rng(99))
    fresh_optimizer = make_optimizer(fresh.parameters(), 1.0)
    got = load(path, fresh, fresh_optimizer)
    assert_same_state(model.state_dict(), fresh.state_dict())
    assert_same_state(optimizer.state_dict(), fresh_optimizer.state_dict())

    for key in ("scores", "best", "order"):
        assert got[key].dtype == extras[key].dtype and np.array_equal(got[key], extras[key])
    assert got["epoch"] == 3 and got["note"] == "prune phase" and got["pair"] == [1, 2.5]
    assert got["lr"] == float(np.float32(0.1))
    assert got["history"]["clean"] == [0.25, 0.5] and np.isnan(got["history"]["pgd"][1])
    restored = np.random.default_rng()
    restored.bit_generator.state = got["rng_state"]
    assert np.array_equal(restored.random(4), data_rng.random(4))
    mt = np.random.Generator(np.random.MT19937())
    mt.bit_generator.state = got["mt_state"]
    assert np.array_equal(mt.random(3), np.random.Generator(np.random.MT19937(4)).random(3))

    train_steps(model, optimizer, [4, 5])
    train_steps(fresh, fresh_optimizer, [4, 5])
    assert_same_state(model.state_dict(), fresh.state_dict())


def test_read_gives_plain_dicts_and_class_names(tmp_path, rng):
    model = Tiny(rng)
    optimizer = Adam(model.parameters())
    train_steps(model, optimizer, [1])
    save(tmp_path / "a.h5", model, optimizer, epoch=1)
    saved = read(tmp_path / "a.h5")
    assert saved["attrs"]["format_version"] == 1
    assert saved["attrs"]["model_class"].endswith(".Tiny")
    assert saved["attrs"]["optimizer_class"] == "ref.optim.optimizers.Adam"
    assert sorted(saved["parameters"]) == ["bias", "head.weight", "weight"]
    assert sorted(saved["buffers"]) == ["head.count", "mask", "running_mean"]
    assert saved["optimizer"]["step"] == 1 and saved["optimizer"]["exp_avg.0"].shape == (3, 4)
    assert saved["extra"] == {"epoch": 1}


def test_long_json_attribute_round_trips(tmp_path, rng):
    history = {"loss": [float(v) for v in rng.standard_normal(20000)]}   # ~400 KB of JSON
    save(tmp_path / "h.h5", Tiny(rng), history=history)
    assert load(tmp_path / "h.h5", Tiny(rng))["history"] == history


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_save_keeps_previous_file(tmp_path, rng, monkeypatch, error):
    model, path = Tiny(rng), tmp_path / "ckpt.h5"
    save(path, model, epoch=1)
    before = {key: value.copy() for key, value in model.state_dict().items()}
    for p in model.parameters():
        p.data = p.data + 1
    create_dataset, calls = h5py.Group.create_dataset, []

    def fail_after_first(group, *args, **kwargs):
        calls.append(args[0])
        if len(calls) > 1:
            raise error("disk full")
        return create_dataset(group, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", fail_after_first)
    with pytest.raises(error, match="disk full"):
        save(path, model, epoch=2)
    monkeypatch.undo()
    assert len(calls) == 2 and os.listdir(tmp_path) == ["ckpt.h5"]
    fresh = Tiny(np.random.default_rng(1))
    assert load(path, fresh) == {"epoch": 1}
    assert_same_state(before, fresh.state_dict())


def test_missing_unexpected_and_misshaped_entries_are_named(tmp_path, rng):
    save(tmp_path / "no_bias.h5", Tiny(rng, bias=False))
    with pytest.raises(KeyError, match=r"no_bias\.h5.*missing \['bias'\], unexpected \[\]"):
        load(tmp_path / "no_bias.h5", Tiny(rng))
    save(tmp_path / "bias.h5", Tiny(rng))
    with pytest.raises(KeyError, match=r"missing \[\], unexpected \['bias'\]"):
        load(tmp_path / "bias.h5", Tiny(rng, bias=False))
    save(tmp_path / "wide.h5", Tiny(rng, c=5))
    with pytest.raises(ValueError, match=r"head\.weight: saved \(2, 5\) vs model \(2, 3\)"):
        load(tmp_path / "wide.h5", Tiny(rng))


def test_optimizer_state_mismatch_is_named(tmp_path, rng):
    model = Tiny(rng)
    save(tmp_path / "plain.h5", model)
    with pytest.raises(KeyError, match="no optimizer state"):
        load(tmp_path / "plain.h5", model, SGD(model.parameters(), lr=0.1))
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_steps(model, optimizer, [1])
    save(tmp_path / "sgd.h5", model, optimizer)
    with pytest.raises(KeyError, match=r"unexpected \['momentum_buffer\.0'"):
        load(tmp_path / "sgd.h5", model, Adam(model.parameters()))
    with pytest.raises(ValueError, match="num_params=3"):
        load(tmp_path / "sgd.h5", model, SGD(model.parameters()[:2], lr=0.1))


def test_bad_files_give_clear_errors(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        load(tmp_path / "missing.h5", Tiny(rng))
    (tmp_path / "noise.h5").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (tmp_path / "empty.h5").write_bytes(b"")
    save(tmp_path / "good.h5", Tiny(rng))
    good = (tmp_path / "good.h5").read_bytes()
    (tmp_path / "truncated.h5").write_bytes(good[:len(good) // 2])
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    for name in ("noise.h5", "empty.h5", "truncated.h5", "other.h5"):
        with pytest.raises(ValueError, match=f"{name}' is not a valid checkpoint"):
            load(tmp_path / name, Tiny(rng))


def test_unsaveable_extras_are_named_and_leave_nothing_behind(tmp_path, rng):
    model = Tiny(rng)
    with pytest.raises(TypeError, match="'callback' is neither an array nor JSON"):
        save(tmp_path / "a.h5", model, callback=print)
    with pytest.raises(TypeError, match="'mask' is neither an array nor JSON"):
        save(tmp_path / "a.h5", model, mask=model.mask)
    with pytest.raises(ValueError, match="'a/b'"):
        save(tmp_path / "a.h5", model, **{"a/b": 1})
    assert os.listdir(tmp_path) == []


def test_round_trip_with_nn_layers(tmp_path):
    """A forward/backward/step of a small ref.nn network, saved, loaded into a differently
    initialised copy, continues identically."""
    nn = pytest.importorskip("ref.nn")

    def build(seed):
        rng = np.random.default_rng(seed)
        return nn.Sequential(nn.Linear(4, 6, rng=rng), nn.BatchNorm1d(6), nn.ReLU(),
                             nn.Linear(6, 3, rng=rng))

    def step(model, optimizer, seed):
        rng = np.random.default_rng(seed)
        x, y = ref.Tensor(rng.standard_normal((8, 4)).astype(np.float32)), rng.integers(3, size=8)
        optimizer.zero_grad()
        ref.ops.cross_entropy(model(x), y).backward()
        optimizer.step()

    model = build(0)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    step(model, optimizer, 1)
    save(tmp_path / "net.h5", model, optimizer)
    fresh = build(1)
    fresh_optimizer = SGD(fresh.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    load(tmp_path / "net.h5", fresh, fresh_optimizer)
    step(model, optimizer, 2)
    step(fresh, fresh_optimizer, 2)
    assert_same_state(model.state_dict(), fresh.state_dict())
