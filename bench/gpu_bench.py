"""Benchmark of the gpu backend against PyTorch CUDA on one GPU (timed by hand, never in tests).

1. Ops, float32, forward + backward where the op is differentiable, on ResNet-18 CIFAR shapes at
   batch n = --batch: conv2d on each ResNet-18 conv layer (conv_bench.py's LAYERS), batch_norm in
   train mode, max_pool2d 2x2 and relu on (n, 64, 32, 32) stored NCHW and NHWC (channels-last,
   as a conv hands it on), the global average pool on (n, 512, 4, 4), cross_entropy on (n, 10)
   logits, one PGD step (pgd_step) on (n, 3, 32, 32) and one SGD update (momentum 0.9, weight
   decay 5e-4) of all ResNet-18 parameters.
2. Whole steps of ResNet-18 at batch n: a natural training step (forward, cross-entropy, backward,
   SGD) and a Madry-AT step (PGD-10 from a uniform start in eval mode, eps 8/255, alpha 2/255,
   then the training step on the adversarial batch). Both networks start from ref's initial
   weights (step_bench.py's PyTorch ResNet-18 shares its parameter names), so the first natural
   losses must agree; they are printed as a cross-check.

Ours (gpu.ops through gpu.Tensor, ref.optim, ref.objectives on CuPy) and torch run alternately in
each repeat, after one warm-up call each (kernel compilation, cuDNN algorithm search). Every call
is timed between two device synchronisations (cupy.cuda.Device().synchronize() and
torch.cuda.synchronize()), so queued kernels are counted. Both parts run twice: with TF32 off on
both sides (full float32 products: gpu.set_tf32(False), torch's allow_tf32 flags False) and on on
both sides (gpu.set_tf32(True), torch.backends.cuda.matmul.allow_tf32 and cudnn.allow_tf32 True,
cuDNN's default); cudnn.benchmark is on. The tables give median ms and ours / torch. Without
torch, or torch without CUDA, only ours is timed.

3. Counts per whole step (gpu/tools/counter.py, on the CPU emulator in a subprocess, batch 2:
   the counts do not depend on the batch): kernel launches (own kernels and cupy calls), host
   synchronisations, uploads, printed after the timings; --count-only prints each step's table
   per op instead, without timing anything (this works without a GPU).

    python bench/gpu_bench.py [--batch 128] [--repeat 20] [--skip-ops] [--skip-steps]
                              [--skip-counts | --count-only]

Refuses to time (exit status 2) under GPU_EMULATOR=1, where the gpu backend runs on the CPU
emulator and times mean nothing, and when CuPy finds no CUDA device.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

EPS, ALPHA, PGD_STEPS = 8 / 255, 2 / 255, 10
TORCH_DEVICE = "cuda"


def refusal():
    """Why this machine cannot run the benchmark, or None when it can."""
    if os.environ.get("GPU_EMULATOR", "0") not in ("", "0"):
        return ("GPU_EMULATOR is set, so the gpu backend would run on the CPU emulator, whose "
                "times mean nothing: run it without GPU_EMULATOR on a machine with a CUDA GPU")
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:   # no cupy, no driver, or no device
        return f"no CUDA device: CuPy could not reach one ({type(error).__name__}: {error})"
    return None if count > 0 else "no CUDA device: CuPy sees none"


class Timer:
    """Median seconds of functions called alternately, each between device synchronisations."""

    def __init__(self, cupy, torch, repeat):
        self.cupy, self.torch, self.repeat = cupy, torch, repeat

    def synchronize(self):
        self.cupy.cuda.Device().synchronize()
        if self.torch is not None:
            self.torch.cuda.synchronize()

    def medians(self, functions):
        times = [[] for _ in functions]
        for function in functions:   # warm-up
            function()
        for _ in range(self.repeat):
            for function, t in zip(functions, times):
                self.synchronize()
                start = time.perf_counter()
                function()
                self.synchronize()
                t.append(time.perf_counter() - start)
        return [statistics.median(t) for t in times]


def print_table(title, rows, timer):
    """rows: (name, ours, theirs or None); prints median ms and ours / torch per row."""
    print(f"\n{title}, median of {timer.repeat}\n")
    print("| case | ours ms | torch ms | ours / torch |\n|---|---|---|---|")
    for name, ours, theirs in rows:
        times = timer.medians([ours] + ([theirs] if theirs is not None else []))
        cells = [f"{t * 1e3:.3f}" for t in times] + ["-", "-"]
        if theirs is not None:
            cells[2] = f"{times[0] / times[1]:.2f}"
        print(f"| {name} | {' | '.join(cells[:3])} |", flush=True)


# ---- ops ----------------------------------------------------------------------------------------
class Backends:
    """Host arrays to each side's device arrays, and forward + backward closures per side."""

    def __init__(self, gpu, torch):
        self.gpu, self.torch = gpu, torch

    def ours(self, a):
        return self.gpu.asarray(a)

    def theirs(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(TORCH_DEVICE)

    def ours_channels_last(self, a):
        """A 4-D array in NHWC memory viewed as (n, c, h, w), as conv2d hands it on."""
        a = self.gpu.cupy.asarray(a)
        return self.gpu.cupy.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

    def theirs_channels_last(self, a):
        return self.theirs(a).contiguous(memory_format=self.torch.channels_last)

    def differentiable(self, name, ours_op, torch_op, arrays, rng, channels_last=False):
        """(name, ours, theirs): one forward of op(*leaves) (each array a leaf requiring grad)
        and its backward from a random output gradient (none for a scalar); with
        channels_last, 4-D inputs and the output gradient are stored NHWC on both sides."""
        def ours_array(a):
            return self.ours_channels_last(a) if channels_last and a.ndim == 4 else self.ours(a)

        def theirs_array(a):
            return (self.theirs_channels_last(a) if channels_last and a.ndim == 4
                    else self.theirs(a))
        ours_in = [ours_array(a) for a in arrays]
        shape = ours_op(*[self.gpu.Tensor(a) for a in ours_in]).shape
        gy = rng.standard_normal(shape).astype(np.float32) if shape else None     # (y.shape)
        ours_gy = None if gy is None else ours_array(gy)

        def ours():
            leaves = [self.gpu.Tensor(a, requires_grad=True) for a in ours_in]
            ours_op(*leaves).backward(ours_gy)

        if self.torch is None:
            return name, ours, None
        torch_in = [theirs_array(a) for a in arrays]
        torch_gy = None if gy is None else theirs_array(gy)

        def theirs():
            leaves = [a.detach().requires_grad_() for a in torch_in]
            torch_op(*leaves).backward(torch_gy)
        return name, ours, theirs


def op_rows(backends, batch, rng):
    from conv_bench import LAYERS

    gpu, torch = backends.gpu, backends.torch
    F = None if torch is None else torch.nn.functional
    n = batch
    for name, c, o, h, k, s in LAYERS:
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)                   # (n, c, h, w)
        W = rng.standard_normal((o, c, k, k), dtype=np.float32) * 0.1             # (o, c, kh, kw)
        yield backends.differentiable(
            f"conv2d {name}", lambda x, W, s=s, k=k: gpu.ops.conv2d(x, W, stride=s, padding=k // 2),
            lambda x, W, s=s, k=k: F.conv2d(x, W, stride=s, padding=k // 2), [x, W], rng)
    x = rng.standard_normal((n, 64, 32, 32), dtype=np.float32)                    # (n, c, h, w)
    weight, bias = rng.random(64, dtype=np.float32) + 0.5, rng.random(64, dtype=np.float32)
    stats = [np.zeros(64, np.float32), np.ones(64, np.float32)]                   # (c,) (c,)
    ours_stats = [backends.ours(a) for a in stats]
    torch_stats = None if torch is None else [backends.theirs(a) for a in stats]
    for memory in ("NCHW", "NHWC"):
        last = memory == "NHWC"
        yield backends.differentiable(
            f"batch_norm train (n, 64, 32, 32) {memory}",
            lambda x, w, b: gpu.ops.batch_norm(x, *ours_stats, w, b, training=True),
            lambda x, w, b: F.batch_norm(x, *torch_stats, w, b, training=True), [x, weight, bias],
            rng, channels_last=last)
        yield backends.differentiable(f"max_pool2d 2x2 (n, 64, 32, 32) {memory}",
                                      lambda x: gpu.ops.max_pool2d(x, 2),
                                      lambda x: F.max_pool2d(x, 2), [x], rng, channels_last=last)
        yield backends.differentiable(f"relu (n, 64, 32, 32) {memory}", gpu.ops.relu,
                                      lambda x: F.relu(x), [x], rng, channels_last=last)
    features = rng.standard_normal((n, 512, 4, 4), dtype=np.float32)               # (n, c, h, w)
    yield backends.differentiable(
        "adaptive_avg_pool2d 1 (n, 512, 4, 4) NHWC", lambda x: gpu.ops.adaptive_avg_pool2d(x, 1),
        lambda x: F.adaptive_avg_pool2d(x, 1), [features], rng, channels_last=True)
    labels = rng.integers(0, 10, n)                                               # (n,)
    ours_labels = backends.ours(labels)
    torch_labels = None if torch is None else backends.theirs(labels)
    yield backends.differentiable(
        "cross_entropy (n, 10)", lambda z: gpu.ops.cross_entropy(z, ours_labels),
        lambda z: F.cross_entropy(z, torch_labels),
        [rng.standard_normal((n, 10), dtype=np.float32)], rng)
    yield pgd_step_row(backends, n, rng)
    yield sgd_row(backends, rng)


def pgd_step_row(backends, n, rng):
    x0 = rng.random((n, 3, 32, 32), dtype=np.float32)                             # (n, 3, 32, 32)
    x = np.clip(x0 + rng.uniform(-EPS, EPS, x0.shape).astype(np.float32), 0, 1)  # (n, 3, 32, 32)
    g = rng.standard_normal(x0.shape, dtype=np.float32)                           # (n, 3, 32, 32)
    ours_in = [backends.ours(a) for a in (x, g, x0)]

    def ours():
        backends.gpu.ops.pgd_step(*ours_in, ALPHA, EPS)

    if backends.torch is None:
        return "pgd_step (n, 3, 32, 32)", ours, None
    tx, tg, tx0 = [backends.theirs(a) for a in (x, g, x0)]
    torch = backends.torch

    def theirs():
        torch.clamp(tx0 + torch.clamp(tx + ALPHA * torch.sign(tg) - tx0, -EPS, EPS), 0, 1)
    return "pgd_step (n, 3, 32, 32)", ours, theirs


def sgd_row(backends, rng):
    """One SGD update of every ResNet-18 parameter, gradients fixed."""
    from ref import optim

    model, net = resnet18_pair(backends)
    for p in model.parameters():
        p.grad = backends.ours(rng.standard_normal(p.shape, dtype=np.float32))
    ours = optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=5e-4).step
    if net is None:
        return "SGD update, ResNet-18 parameters", ours, None
    for p in net.parameters():
        p.grad = backends.theirs(rng.standard_normal(tuple(p.shape), dtype=np.float32))
    theirs = backends.torch.optim.SGD(net.parameters(), 0.1, momentum=0.9,
                                      weight_decay=5e-4).step
    return "SGD update, ResNet-18 parameters", ours, theirs


# ---- whole steps --------------------------------------------------------------------------------
def resnet18_pair(backends):
    """(ours on the gpu backend, torch's on CUDA or None) with the same initial weights."""
    import ref.models
    from step_bench import torch_resnet18

    model = ref.models.resnet18(num_classes=10, rng=0).train()
    net = None
    if backends.torch is not None:
        net = torch_resnet18(10)
        state = {k: backends.torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
        missing, unexpected = net.load_state_dict(state, strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), \
            (missing, unexpected)
        net = net.to(TORCH_DEVICE).train()
    return model.to("gpu"), net


def torch_pgd(torch, net, x, y):
    """PGD-10 as ref.attacks.pgd: uniform start, eval mode, only the input gradient."""
    F = torch.nn.functional
    net.eval()
    x_adv = torch.clamp(x + EPS * (2 * torch.rand_like(x) - 1), 0, 1)
    for _ in range(PGD_STEPS):
        x_adv.requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(net(x_adv), y, reduction="sum"), x_adv)
        x_adv = torch.clamp(x + torch.clamp(x_adv.detach() + ALPHA * g.sign() - x, -EPS, EPS),
                            0, 1)
    net.train()
    return x_adv


def torch_step(torch, net, x, y, adversarial):
    sgd = torch.optim.SGD(net.parameters(), 0.1, momentum=0.9, weight_decay=5e-4)

    def step():
        inputs = torch_pgd(torch, net, x, y) if adversarial else x
        loss = torch.nn.functional.cross_entropy(net(inputs), y)
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        return loss
    return step


def step_rows(backends, batch, rng):
    from gpu.tools.counter import sgd_step
    from ref import objectives

    x = rng.random((batch, 3, 32, 32), dtype=np.float32)                         # (n, 3, 32, 32)
    y = rng.integers(0, 10, batch)                                               # (n,)
    rows = []
    for name, objective in (("natural", objectives.get("natural")),
                            (f"Madry AT, PGD-{PGD_STEPS}", objectives.get(
                                "madry", eps=EPS, alpha=ALPHA, steps=PGD_STEPS))):
        model, net = resnet18_pair(backends)
        ours = sgd_step(model, objective, backends.ours(x), backends.ours(y))
        theirs = None if net is None else torch_step(backends.torch, net, backends.theirs(x),
                                                     backends.theirs(y), name != "natural")
        if name == "natural":
            first = [float(ours().item())] + ([] if theirs is None else [theirs().item()])
            print("first natural-step losses (same initial weights): "
                  + ", ".join(f"{side} {loss:.6f}" for side, loss in zip(("ours", "torch"), first)))
        rows.append((f"ResNet-18 step, batch {batch}: {name}", ours, theirs))
    return rows


# ---- counts --------------------------------------------------------------------------------------
COUNTED_STEPS = ("natural", "madry")


def counter_output(objective, *options):
    """stdout of `python -m gpu.tools.counter` for one ResNet-18 step under `objective`, run on
    the emulator (GPU_EMULATOR=1) in a subprocess, so it also works beside a real GPU."""
    command = [sys.executable, "-m", "gpu.tools.counter", "--model", "resnet18", "--objective",
               objective, "--batch", "2", "--steps", str(PGD_STEPS), *options]
    return subprocess.run(command, cwd=ROOT, env={**os.environ, "GPU_EMULATOR": "1"},
                          check=True, capture_output=True, text=True).stdout


def print_counts():
    """The counts of each whole ResNet-18 step, one line per step."""
    print("\nper whole ResNet-18 step, counted on the emulator (independent of the batch)\n")
    print("| step | launches | own kernels | cupy | syncs | uploads |\n|---|---|---|---|---|---|")
    for objective in COUNTED_STEPS:
        c = json.loads(counter_output(objective, "--json"))
        print(f"| {objective} | {c['launches']} | {c['kernel']} | {c['cupy']} | {c['sync']} | "
              f"{c['upload']} |", flush=True)


def cuda_torch():
    """torch with CUDA set up for a float32 comparison, or None (with a note)."""
    try:
        import torch
    except ImportError:
        print("torch is not installed (pip install -e .[bench]): timing ours only")
        return None
    if not torch.cuda.is_available():
        print(f"torch {torch.__version__} has no CUDA device: timing ours only")
        return None
    torch.backends.cudnn.benchmark = True
    return torch


def set_tf32(gpu, torch, enabled):
    """TF32 products on or off on both sides."""
    gpu.set_tf32(enabled)
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--skip-ops", action="store_true", help="time the whole steps only")
    p.add_argument("--skip-steps", action="store_true", help="time the ops only")
    p.add_argument("--skip-counts", action="store_true", help="do not count launches and syncs")
    p.add_argument("--count-only", action="store_true",
                   help="only count launches and syncs per step (on the emulator; no GPU needed)")
    args = p.parse_args(argv)
    if args.count_only:   # each step's table per op, its totals in the last line
        for objective in COUNTED_STEPS:
            print(counter_output(objective), flush=True)
        return 0
    reason = refusal()
    if reason is not None:
        print(f"gpu_bench: {reason}", file=sys.stderr)
        return 2
    import cupy

    import gpu
    torch = cuda_torch()
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"{name}; cupy {cupy.__version__}"
          + ("" if torch is None else f", torch {torch.__version__} (CUDA {torch.version.cuda})"))
    backends, timer = Backends(gpu, torch), Timer(cupy, torch, args.repeat)
    for tf32 in (False, True):
        set_tf32(gpu, torch, tf32)
        mode, rng = f"float32, TF32 {'on' if tf32 else 'off'}", np.random.default_rng(0)
        if not args.skip_ops:
            print_table(f"ops, {mode}, batch {args.batch}, forward + backward",
                        list(op_rows(backends, args.batch, rng)), timer)
        if not args.skip_steps:
            print_table(f"whole training steps, {mode}", step_rows(backends, args.batch, rng),
                        timer)
    if not args.skip_counts:
        print_counts()
    return 0


if __name__ == "__main__":
    sys.exit(main())
