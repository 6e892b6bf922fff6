"""Benchmark of the datasets package (timed by hand, never in the test suite).

1. HDF5 cache vs parsing the archive, on a synthetic CIFAR-10-sized archive in the official
   format (5 x 10000 train + 10000 test random images, built with tests/archives.py) in a
   temporary directory:
     first load   file:// download + md5 + safe extraction + member md5s + unpickling + cache write
     parse        gunzip + untar + unpickle of the five train batches in memory, nothing else
     cache load   load() of the train split once the cache exists (best of --repeat)
   Required: parse / cache load >= 10.
2. Loader overhead: one epoch of Loader(shuffle=True, the dataset's training augmentation)
   against the time of a ref.models.small_cnn training step (forward, cross-entropy, backward,
   SGD) per batch, for the CIFAR-sized data above and for scikit-learn's digits; also against
   the same network in PyTorch, a faster step, so a bound on the loader's share.
   Required: loader time per batch < 10% of a training step.

    python bench/data_bench.py [--n 10000] [--batch-size 128] [--steps 5] [--repeat 5]
                               [--torch-threads 1]

PyTorch runs single-threaded by default: on a 2-core machine shared with other work, its
2-thread OpenMP runtime slows down many times over (see PERF_ANCHORS.md, oversubscription).
"""
import argparse
import io
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import datasets                                        # noqa: E402
from archives import cifar10_archive                   # noqa: E402
from datasets import files                             # noqa: E402
from datasets.cifar import BatchUnpickler              # noqa: E402


def seconds(f, repeat=1):
    """(best wall time of `repeat` calls of f, its last result)."""
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        result = f()
        best = min(best, time.perf_counter() - start)
    return best, result


def build_archive(folder, n, rng):
    """A synthetic cifar-10-python.tar.gz with 5 train batches of n images and a test batch."""
    def batch():
        return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)
    archive = folder / "cifar-10-python.tar.gz"
    checksums = cifar10_archive(archive, [batch() for _ in range(5)], batch())
    files.MD5.update(checksums)
    files.URLS[archive.name] = archive.as_uri()
    return archive


def parse_archive(archive):
    """x (n, 3, 32, 32), y (n,) of the train batches, read straight from the tar.gz."""
    with tarfile.open(archive) as tar:
        batches = [BatchUnpickler(io.BytesIO(tar.extractfile(m).read()), encoding="latin1").load()
                   for m in tar.getmembers() if "data_batch" in m.name]
    x = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)    # (n, c, h, w)
    return x, np.concatenate([b["labels"] for b in batches])                    # (n,)


def cache_vs_archive(n, repeat):
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "server").mkdir()
        t_build, archive = seconds(lambda: build_archive(tmp / "server", n, rng))
        print(f"built {archive.name}: {archive.stat().st_size / 2**20:.0f} MiB in {t_build:.1f} s")
        root = tmp / "root"
        t_first, (x, y) = seconds(lambda: datasets.load("cifar10", "train", root=root,
                                                        download=True))
        t_parse, (xp, yp) = seconds(lambda: parse_archive(archive), repeat)
        t_cache, (xc, yc) = seconds(lambda: datasets.load("cifar10", "train", root=root), repeat)
        assert np.array_equal(xc, xp) and np.array_equal(yc, yp) and np.array_equal(xc, x)
        print(f"train split {xc.shape} uint8 = {xc.nbytes / 2**20:.0f} MiB")
        print(f"  first load (download, md5s, extract, unpickle, write cache) {t_first:7.3f} s")
        print(f"  parse the archive (gunzip, untar, unpickle)                 {t_parse:7.3f} s")
        print(f"  load from the HDF5 cache                                    {t_cache:7.3f} s")
        print(f"  cache speed-up: {t_parse / t_cache:.1f}x over parsing the archive, "
              f"{t_first / t_cache:.1f}x over the first load (required >= 10x)")
        return xc, yc


def loader_seconds_per_batch(x, y, batch_size, augment):
    loader = datasets.Loader(x, y, batch_size, shuffle=True, augment=augment, seed=0)
    t_epoch, count = seconds(lambda: sum(1 for _ in loader))
    return t_epoch / count, t_epoch, loader


def step_seconds(loader, steps, num_classes, in_channels):
    """Median seconds of a small_cnn training step on the loader's batches."""
    import ref
    from ref.models import small_cnn
    from ref.optim import SGD
    model = small_cnn(num_classes=num_classes, in_channels=in_channels, rng=0)
    model.train()
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
    times = []
    for i, (xb, yb) in zip(range(steps + 1), loader):
        start = time.perf_counter()
        loss = ref.ops.cross_entropy(model(ref.Tensor(xb)), yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))                 # the first step warms up


def torch_step_seconds(loader, steps, num_classes, in_channels, width=32, threads=1):
    """Median seconds of a training step of small_cnn's architecture in PyTorch (CPU), which
    is faster than ref: the loader's share of its step bounds the share of a ref step."""
    import torch
    from torch import nn
    torch.set_num_threads(threads)

    def unit(c, o):
        return [nn.Conv2d(c, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
    w = width
    torch.manual_seed(0)
    model = nn.Sequential(*unit(in_channels, w), *unit(w, w), nn.MaxPool2d(2),
                          *unit(w, 2 * w), *unit(2 * w, 2 * w), nn.MaxPool2d(2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, 4 * w),
                          nn.ReLU(), nn.Linear(4 * w, num_classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    times = []
    for i, (xb, yb) in zip(range(steps + 1), loader):
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(model(torch.from_numpy(xb)), torch.from_numpy(yb))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def loader_overhead(name, x, y, batch_size, steps, torch_threads):
    augment = datasets.default_augment(name, "train")
    per_batch, t_epoch, loader = loader_seconds_per_batch(x, y, batch_size, augment)
    print(f"{name}: Loader epoch of {len(x)} images, batch {batch_size}, augment {augment}: "
          f"{t_epoch * 1e3:.1f} ms = {per_batch * 1e3:.3f} ms per batch")
    shape = (datasets.info(name)["num_classes"], x.shape[1])
    for label, step_of in (("ref small_cnn", step_seconds),
                           (f"torch small_cnn ({torch_threads} thread)",
                            lambda *a: torch_step_seconds(*a, threads=torch_threads))):
        try:
            step = step_of(loader, steps, *shape)
        except (ImportError, AttributeError, NotImplementedError, TypeError) as e:
            print(f"  {label} training step not measurable: {type(e).__name__}: {e}")
            continue
        print(f"  {label} training step {step * 1e3:.1f} ms per batch; the loader adds "
              f"{100 * per_batch / step:.2f}% (required < 10%)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="images per CIFAR batch file")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed small_cnn steps")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    x, y = cache_vs_archive(args.n, args.repeat)
    loader_overhead("cifar10", x, y, args.batch_size, args.steps, args.torch_threads)
    loader_overhead("digits", *datasets.load("digits"), 64, args.steps, args.torch_threads)


if __name__ == "__main__":
    main()
