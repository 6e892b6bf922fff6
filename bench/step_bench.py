"""Benchmark of one whole training step of ResNet-18 (CIFAR) against PyTorch CPU.

One step = forward, cross-entropy, backward and an SGD update (momentum 0.9, weight decay 5e-4)
on a batch of 3x32x32 float32 images in train mode, with ref.models.resnet18 and the same network
written in PyTorch (kuangliu/pytorch-cifar, whose parameter names ref's model shares). Both start
from ref's initial weights, so the first step's losses must agree (printed as a cross-check); then
ours and torch run alternately in each repeat, so both see the same machine load.
Required: median ours / torch <= 2.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/step_bench.py [--batch 128]
        [--repeat 5] [--torch-threads 2]

Peak memory (growth of VmHWM during our first step) is printed too. Needs torch (the `bench`
extra); without it only our step is timed.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ref  # noqa: E402
import ref.models  # noqa: E402
from ref import optim  # noqa: E402

MiB = 2 ** 20


def peak_rss_mib():
    """VmHWM (peak resident memory) of this process in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ours(model, x, y):
    """A function doing one SGD step of `model` on (x, y); returns the loss."""
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def step():
        sgd.zero_grad()
        loss = ref.ops.cross_entropy(model(ref.Tensor(x)), y)
        loss.backward()
        sgd.step()
        return float(loss.data)
    return step


def torch_resnet18(num_classes):
    """kuangliu/pytorch-cifar ResNet-18: 3x3 stem, BasicBlocks [2, 2, 2, 2], no max-pool."""
    import torch.nn as nn
    import torch.nn.functional as F

    class BasicBlock(nn.Module):
        def __init__(self, c, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or c != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(c, planes, 1, stride, bias=False),
                                              nn.BatchNorm2d(planes))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            c, stages = 64, []
            for planes, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
                stages.append(nn.Sequential(BasicBlock(c, planes, stride),
                                            BasicBlock(planes, planes, 1)))
                c = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.linear = nn.Linear(512, num_classes)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
            return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))

    return ResNet()


def theirs(model, x, y):
    import torch
    net = torch_resnet18(10)
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), \
        (missing, unexpected)
    net.train()
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        sgd.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(tx), ty)
        loss.backward()
        sgd.step()
        return loss.item()
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--torch-threads", type=int, default=2)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 3, 32, 32), dtype=np.float32)                  # (n, 3, 32, 32)
    y = rng.integers(0, 10, args.batch)                                        # (n,)
    model = ref.models.resnet18(num_classes=10, rng=0).train()
    steps = {"ours": None, "torch": None}
    try:
        import torch
        torch.set_num_threads(args.torch_threads)
        steps["torch"] = theirs(model, x, y)          # copies the initial weights first
    except ImportError:
        print("torch is not installed (pip install -e .[bench]): timing ours only")
        del steps["torch"]
    steps["ours"] = ours(model, x, y)

    before = peak_rss_mib()
    first = {name: step() for name, step in steps.items()}
    print(f"resnet18, batch {args.batch}, float32; first-step losses: "
          + ", ".join(f"{k} {v:.6f}" for k, v in first.items())
          + f"; peak RSS growth during the first steps {peak_rss_mib() - before:.0f} MiB")
    times = {name: [] for name in steps}
    for _ in range(args.repeat):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, t in median.items():
        print(f"{name:>6}: median {t * 1e3:8.1f} ms/step, best {min(times[name]) * 1e3:8.1f} ms, "
              f"over {args.repeat} steps ({args.batch / t:6.1f} images/s)")
    if "torch" in median:
        paired = [a / b for a, b in zip(times["ours"], times["torch"])]
        ratio = median["ours"] / median["torch"]
        print(f"ours / torch = {ratio:.2f} (required <= 2): {'ok' if ratio <= 2 else 'MISSED'}; "
              f"best / best {min(times['ours']) / min(times['torch']):.2f}; "
              f"step by step {min(paired):.2f} to {max(paired):.2f}, "
              f"median {statistics.median(paired):.2f}")


if __name__ == "__main__":
    main()
