"""Robust subnetworks of never-trained networks (ref.prune.subnet) and the fast trainer: weight
and score inits against their formulas, the allocation against hand-computed greedy values, the
keep schedule against the reference's rule written out, frozen weights through training, the
per-sample perturbation memory of FastFGSM against a loop written here, gpu agreement."""
import math

import numpy as np
import pytest
import gpu
import ref
from backends import to_host
from ref import objectives, optim
from ref.prune import hydra, subnet

T = ref.Tensor


def rbsn_model(seed=0, **kw):
    return ref.models.resnet18(num_classes=3, in_channels=1, width=4, affine_bn=False,
                               last_bn=True, classifier="conv", rng=seed).astype(np.float64)


def test_weight_inits_equal_their_formulas(rng):
    W0 = rng.standard_normal((6, 4, 3, 3))
    W0[0, 0, 0, 0] = 0.0
    fan_in, fan_out = 4 * 9, 6 * 9

    def made(name, keep=0.1, **kw):
        return subnet.init_weight_(T(W0.copy()), name, keep, **kw).data

    np.testing.assert_array_equal(made("binary"), np.sign(W0))
    assert set(np.unique(made("binary")[W0 != 0])) == {-1.0, 1.0}
    np.testing.assert_allclose(made("signed_constant"),
                               np.sign(W0) * math.sqrt(2) / math.sqrt(fan_in * 0.1), rtol=1e-15)
    np.testing.assert_allclose(made("signed_constant_original"),
                               np.sign(W0) * math.sqrt(2) / math.sqrt(fan_in * 0.9), rtol=1e-15)
    np.testing.assert_allclose(made("signed_constant", scale_fan=False),
                               np.sign(W0) * math.sqrt(2) / math.sqrt(fan_in), rtol=1e-15)
    np.testing.assert_allclose(made("signed_constant", mode="fan_out"),
                               np.sign(W0) * math.sqrt(2) / math.sqrt(fan_out * 0.1), rtol=1e-15)
    big = T(np.zeros((64, 64, 3, 3)))
    subnet.init_weight_(big, "kaiming_normal", 0.1, rng=0)
    assert big.data.std() == pytest.approx(math.sqrt(2 / 576), rel=0.02)
    subnet.init_weight_(big, "kaiming_uniform", 0.1, rng=0)
    assert np.abs(big.data).max() <= math.sqrt(2) * math.sqrt(3 / 576)
    with pytest.raises(ValueError, match="init must be one of"):
        made("xavier")
    with pytest.raises(ValueError, match="needs keep < 1"):
        made("signed_constant_original", keep=1.0)


@pytest.mark.parametrize("mode, scaled", [("none", [False, False]), ("all", [True, True]),
                                          ("except_last", [True, False]),
                                          ("only_last", [False, True])])
def test_score_init_respects_its_mode(mode, scaled):
    model = subnet.build(rbsn_model(), 0.5, 1.0, score_scale=0.3, score_mode=mode, rng=1)
    layers = list(hydra.subnet_layers(model).values())
    for layer, fan_scaled in zip((layers[0], layers[-1]), scaled):
        bound = 0.3 / math.sqrt(subnet.fan_of(layer.weight.shape)) if fan_scaled else 0.3
        S = layer.scores.data
        assert np.abs(S).max() <= bound and np.abs(S).max() > 0.8 * bound


def test_build_allocates_freezes_and_initialises_every_layer():
    model = subnet.build(rbsn_model(), 0.2, 0.5, rng=0)
    layers = hydra.subnet_layers(model)
    paths = list(layers)
    assert paths[0] == "conv1" and paths[-1] == "fc" and "layer2.0.shortcut.0" in paths
    sizes = [layer.weight.size for layer in layers.values()]
    assert [layer.keep for layer in layers.values()] == ref.prune.adaptive_keep_ratios(
        sizes, 0.2, 0.5)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == [f"{path}.scores" for path in paths]       # non-affine BN: nothing else
    assert all(set(np.unique(layer.weight.data)) <= {-1.0, 1.0} for layer in layers.values())
    assert all(layer.bias is None for layer in layers.values())


def test_allocation_on_equal_sizes_follows_module_order_and_clips():
    """Sizes (50, 10, 50, 10), keep 0.5, p 0: ascending with the module order kept among equals:
    10 (layer 1): c = 60 / 4 = 15 -> rho 1.5 clipped to 1, budget 60 - 10 = 50, c = 50 / 3;
    10 (layer 3): rho = 5/3 clipped, budget 40, c = 20; 50 (layer 0): rho 0.4, budget 20, c = 20;
    50 (layer 2): rho 0.4."""
    ratios = ref.prune.adaptive_keep_ratios([50, 10, 50, 10], 0.5, 0.0)
    assert ratios == pytest.approx([0.4, 1.0, 0.4, 1.0], rel=1e-15)


def reference_keep_schedule(keep, epochs, pr_steps, warmup):
    """RBSN's pr_scheduler written out: the kept fraction in force during each epoch."""
    pr_epoch, ratio = (epochs - warmup) / pr_steps, keep ** (1 / pr_steps)
    current, in_force, out = 1.0, keep, []
    for epoch in range(epochs):
        if (epoch - warmup) % pr_epoch == 0:
            current *= ratio
            in_force = current
        out.append(in_force)
    return out


@pytest.mark.parametrize("pr_steps, warmup", [(1, 0), (2, 0), (3, 1), (4, 2)])
def test_keep_schedule_equals_the_reference_rule(pr_steps, warmup):
    epochs = 10
    want = reference_keep_schedule(0.01, epochs, pr_steps, warmup)
    assert [subnet.keep_at(e, 0.01, epochs, pr_steps, warmup) for e in range(epochs)] == want
    if pr_steps == 2 and warmup == 0:   # epoch 0: sqrt(0.01), epoch 5: 0.01
        assert want[0] == pytest.approx(0.1) and want[5] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="pr_steps must be an integer >= 1"):
        subnet.keep_at(0, 0.01, epochs, 0)


def test_allocation_schedule_reallocates_at_its_epochs():
    model = subnet.build(rbsn_model(), 0.01, 0.1, rng=0)
    schedule = subnet.AllocationSchedule(optim.Cosine(0.1, 10), model, 0.01, 0.1, 10, pr_steps=2)
    layers = list(hydra.subnet_layers(model).values())
    sizes = [layer.weight.size for layer in layers]
    for epoch, keep in ((0.0, 0.01 ** 0.5), (4.5, 0.01 ** 0.5), (5.0, 0.01), (7.2, 0.01)):
        assert schedule(epoch) == optim.Cosine(0.1, 10)(epoch)
        want = ref.prune.adaptive_keep_ratios(sizes, keep, 0.1)
        assert [layer.keep for layer in layers] == pytest.approx(want, rel=1e-12)


def test_weights_never_change_while_the_scores_train(rng):
    model = subnet.build(rbsn_model(), 0.3, 0.1, rng=0)
    initial = {name: p.data.copy() for name, p in model.named_parameters()}
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    trainer = objectives.get("madry", eps=0.1, alpha=0.05, steps=2, model_mode="train",
                             select="best_evaluated")
    x, y = rng.random((8, 1, 8, 8)), rng.integers(0, 3, 8)
    for _ in range(3):
        opt.zero_grad()
        trainer(model, x, y, rng).backward()
        opt.step()
    for name, p in model.named_parameters():
        if name.endswith(".scores"):
            assert not np.array_equal(p.data, initial[name]), name
        else:
            np.testing.assert_array_equal(p.data, initial[name], err_msg=name)


@pytest.mark.parametrize("bad, message", [
    (dict(keep=1.5), "keep must be a fraction"), (dict(p=-0.1), "p must be in"),
    (dict(init_name="gaussian"), "init must be one of"),
    (dict(score_mode="first"), "score_mode must be one of")])
def test_build_refuses_bad_input_and_leaves_the_model_alone(bad, message):
    model = rbsn_model()
    with pytest.raises(ValueError, match=message):
        subnet.build(model, **{"keep": 0.5, "p": 0.1, **bad})
    assert hydra.subnet_layers(model) == {}


# ---- the fast trainer ------------------------------------------------------------------------
def naive_fast_step(memory, x, idx, dy, dx, flip, p, fill, eps):
    """The crops of x's padded images and of the memories, one sample at a time."""
    n, c, h, w = x.shape
    x_aug, d = np.empty_like(x), np.empty_like(x)
    for i in range(n):
        padded = np.full((c, h + 2 * p, w + 2 * p), fill)
        padded[:, p:p + h, p:p + w] = x[i]
        crop = padded[:, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        delta = memory[idx[i], :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        x_aug[i] = crop[:, :, ::-1] if flip[i] else crop
        d[i] = delta[:, :, ::-1] if flip[i] else delta
    return x_aug, d


class Recorder(ref.nn.Module):
    """Wraps a model, remembering the inputs of every forward."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.data.copy())
        return self.model(x)


def test_fast_trainer_memory_geometry_and_reuse(rng):
    """Two epochs over 6 samples in batches of 3: every sample's memory is drawn once, used
    through the crop and flip the trainer drew, updated by one signed step, clipped to eps and
    to the image box, and found again the next epoch; no two samples share one."""
    model = Recorder(ref.models.small_cnn(num_classes=3, in_channels=1, width=4,
                                          rng=0).astype(np.float64))
    eps, alpha = 0.1, 0.04
    trainer = objectives.FastFGSM(6, (1, 8, 8), eps=eps, alpha=alpha)
    x_all, y_all = rng.random((6, 1, 8, 8)), rng.integers(0, 3, 6)
    previous = None
    for epoch in range(2):
        for idx in (np.array([4, 0, 2]), np.array([5, 1, 3])):
            before = np.array(trainer.memory) if trainer.seen[idx].all() else None
            draw = np.random.default_rng((epoch, int(idx[0])))
            state = np.random.default_rng((epoch, int(idx[0])))
            model.seen.clear()
            trainer(model, x_all[idx], y_all[idx], draw, idx)
            fresh = (state.uniform(-eps, eps, (3, 1, 16, 16)) if before is None else None)
            dy, dx = state.integers(0, 8, 3), state.integers(0, 8, 3)
            flip = state.random(3) < 0.5
            start = np.array(trainer.memory) if before is None else before
            if fresh is not None:
                start[idx] = fresh
            x_aug, d = naive_fast_step(start, x_all[idx], idx, dy, dx, flip, 4, 0.5, eps)
            np.testing.assert_allclose(model.seen[0], x_aug + d, rtol=1e-12, atol=1e-12)
            final = model.seen[1] - x_aug                    # d' of the training forward
            assert np.abs(final).max() <= eps + 1e-12
            assert (x_aug + final).min() >= -1e-12 and (x_aug + final).max() <= 1 + 1e-12
            assert np.all((np.abs(final - d) <= alpha + 1e-12) | (np.abs(final) >= eps - 1e-12)
                          | np.isclose(x_aug + final, 0) | np.isclose(x_aug + final, 1))
            _, stored = naive_fast_step(np.array(trainer.memory), x_all[idx], idx, dy, dx, flip,
                                        4, 0.5, eps)
            np.testing.assert_allclose(stored, final, rtol=1e-12, atol=1e-12)
        if previous is not None:    # a second visit starts from what the first one stored
            assert trainer.seen.all()
        previous = np.array(trainer.memory)
    assert len({previous[i].tobytes() for i in range(6)}) == 6
    with pytest.raises(ValueError, match="needs the sample indices"):
        trainer(model, x_all[:3], y_all[:3], rng)


@pytest.mark.parametrize("seed", [0, 1])   # each case runs the conv kernels on the emulator
def test_fast_trainer_is_the_same_on_the_gpu_backend(seed):
    rng = np.random.default_rng(seed)
    x, y, idx = rng.random((4, 1, 8, 8)), rng.integers(0, 3, 4), rng.permutation(10)[:4]
    losses, memories = [], []
    for backend in ("numpy", "gpu"):
        model = ref.models.small_cnn(num_classes=3, in_channels=1, width=4, rng=0)
        model = model.astype(np.float64).to(backend)
        trainer = objectives.FastFGSM(10, (1, 8, 8), eps=0.1, alpha=0.04)
        xb = x if backend == "numpy" else gpu.asarray(x)
        yb = y if backend == "numpy" else gpu.asarray(y)
        loss = trainer(model, xb, yb, np.random.default_rng(seed), idx)
        losses.append(float(to_host(loss.data)))
        memories.append(to_host(trainer.memory))
    assert losses[1] == pytest.approx(losses[0], rel=1e-10)
    np.testing.assert_allclose(memories[1], memories[0], rtol=1e-10, atol=1e-12)
