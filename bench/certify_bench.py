"""Benchmark of the certified-training bound passes against a plain training pass, side by side.

Timed per repeat, alternately, on one BN-free certified net (float32, batch --batch of
3x32x32 in [0, 1], random labels, numpy backend), each a forward and a backward to the weights:
    plain      CE(f(x), y)                                  (natural training)
    ibp        CE(-lb_IBP, y), lb over the eps-box          (IBP training, prune and finetune)
    crown-ibp  CE(-lb_CROWN-IBP, y)                         (beta = 1: the CROWN-IBP part alone)
    mixed      CE(-(lb_CROWN-IBP + lb_IBP) / 2, y)          (the ramp's mixed step, one IBP pass)
The table gives median ms per pass and each one over the plain pass.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/certify_bench.py
        [--model cifar_model|cifar_model_large] [--batch 32] [--repeat 5] [--eps 0.007]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
import ref  # noqa: E402
from ref import certify  # noqa: E402
from ref.models import certified  # noqa: E402


def passes(model, x, y, eps):
    """{name: function running that pass's forward and backward}."""
    ops = ref.ops

    def plain():
        ops.cross_entropy(model(ref.Tensor(x)), y).backward()

    def bound(beta):
        def run():
            lb = certify.mixed_margin_lower_bounds(model, x, y, eps, beta)
            ops.cross_entropy(-lb, y).backward()
        return run
    return {"plain": plain, "ibp": bound(0.0), "crown-ibp": bound(1.0), "mixed": bound(0.5)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cifar_model", choices=["cifar_model", "cifar_model_large"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--eps", type=float, default=0.007)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    model = getattr(certified, args.model)(rng=0).train()
    runs = passes(model, x, y, args.eps)
    times = {name: [] for name in runs}
    for run in runs.values():                     # warm-up
        run()
    for _ in range(args.repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    plain = statistics.median(times["plain"])
    print(f"{args.model}, batch {args.batch}, eps {args.eps}, float32, numpy, "
          f"median of {args.repeat}")
    print(f"{'pass':<10} {'ms':>9} {'x plain':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<10} {1e3 * median:9.1f} {median / plain:8.2f}")


if __name__ == "__main__":
    main()
