"""Benchmark of ref.ops.conv2d against PyTorch CPU (timed by hand, never in the test suite).

1. Speed: forward + backward (input gradient and weight gradient, no bias) of the ResNet-18 CIFAR
   conv layers at batch 128, float32. Ours and torch (NCHW, --torch-threads threads) run
   alternately in each repeat, so both see the same machine load; the table gives the median ms,
   GFLOP/s (3 x forward FLOPs / median) and ours / torch per layer.
   Required: the median of ours / torch over the layers <= 1.5.
2. Peak memory of one 64 -> 64, 32x32 conv forward + backward, each in a fresh subprocess: the
   growth of peak RSS (VmHWM) over the inputs, and for ours also the tracemalloc peak (numpy
   reports its allocations to tracemalloc). Required: <= 2 x the im2col buffer of the whole batch
   (n oh ow x kh kw c floats: 288 MiB at batch 128).

    python bench/conv_bench.py [--batch 128] [--repeat 7] [--torch-threads 2] [--quick]

--quick: batch 32, 3 repeats. NumPy's BLAS uses all cores unless OPENBLAS_NUM_THREADS says
otherwise. Some machines set OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (older OpenBLAS builds need them);
they slow a current numpy's GEMMs about 2x, so benchmark with both unset in that command alone:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/conv_bench.py
The header prints the BLAS kernel in use (threadpoolctl). Timings on a shared machine drift: trust
ratios taken within one run.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ref  # noqa: E402

# (name, c, o, h, kernel, stride): padding is kernel // 2, as in ResNet-18 for CIFAR
LAYERS = [("conv1 3->64 32x32", 3, 64, 32, 3, 1),
          ("64->64 32x32", 64, 64, 32, 3, 1),
          ("64->128 s2 32->16", 64, 128, 32, 3, 2),
          ("128->128 16x16", 128, 128, 16, 3, 1),
          ("128->256 s2 16->8", 128, 256, 16, 3, 2),
          ("256->256 8x8", 256, 256, 8, 3, 1),
          ("256->512 s2 8->4", 256, 512, 8, 3, 2),
          ("512->512 4x4", 512, 512, 4, 3, 1),
          ("1x1 64->128 s2", 64, 128, 32, 1, 2),
          ("1x1 128->256 s2", 128, 256, 16, 1, 2),
          ("1x1 256->512 s2", 256, 512, 8, 1, 2)]
MEMORY_LAYER = LAYERS[1]
MiB = 2 ** 20


def layer_arrays(batch, c, o, h, k, s, seed=0):
    """x (n, c, h, h), W (o, c, k, k), gy (n, o, oh, oh) float32, and the forward GFLOP."""
    rng = np.random.default_rng(seed)
    oh = (h + 2 * (k // 2) - k) // s + 1
    x = rng.standard_normal((batch, c, h, h), dtype=np.float32)          # (n, c, h, w)
    W = rng.standard_normal((o, c, k, k), dtype=np.float32) * 0.1        # (o, c, kh, kw)
    gy = rng.standard_normal((batch, o, oh, oh), dtype=np.float32)       # (n, o, oh, ow)
    return x, W, gy, 2 * batch * oh * oh * o * c * k * k / 1e9


def ours_step(x, W, gy, s, k):
    """One forward + backward of ref conv2d; returns the function to time."""
    def step():
        xt, Wt = ref.Tensor(x, requires_grad=True), ref.Tensor(W, requires_grad=True)
        ref.ops.conv2d(xt, Wt, stride=s, padding=k // 2).backward(gy)
    return step


def torch_step(x, W, gy, s, k):
    import torch
    tx, tW, tgy = torch.from_numpy(x), torch.from_numpy(W), torch.from_numpy(gy)

    def step():
        xt, Wt = tx.detach().requires_grad_(), tW.detach().requires_grad_()
        torch.nn.functional.conv2d(xt, Wt, stride=s, padding=k // 2).backward(tgy)
    return step


def time_alternately(steps, repeat):
    """Median seconds of each step; one warm-up call each, then `repeat` rounds in turn."""
    times = [[] for _ in steps]
    for step in steps:
        step()
    for _ in range(repeat):
        for step, t in zip(steps, times):
            start = time.perf_counter()
            step()
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def resident_mib(field):
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(which, batch):
    """Run in a fresh process: inputs first, then one forward + backward; peak growth in MiB.

    Writing 5 to /proc/self/clear_refs resets the peak (VmHWM) to the current RSS (Linux >= 4.0),
    so earlier peaks (imports, building the inputs) do not hide the step's own.
    """
    import tracemalloc
    _, c, o, h, k, s = MEMORY_LAYER
    x, W, gy, _ = layer_arrays(batch, c, o, h, k, s)
    if which == "torch":
        import torch
        torch.set_num_threads(2)
        step = torch_step(x, W, gy, s, k)
    else:
        step = ours_step(x, W, gy, s, k)
    Path("/proc/self/clear_refs").write_text("5")
    before = resident_mib("VmRSS")
    tracemalloc.start()
    step()
    traced = tracemalloc.get_traced_memory()[1] / MiB
    rss = resident_mib("VmHWM") - before
    return {"rss": rss, "traced": traced if which == "ours" else None}


def blas_description():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return "; ".join(f"{i['internal_api']} {i.get('version')} {i.get('architecture')} "
                     f"{i['num_threads']} threads" for i in threadpool_info()
                     if i["user_api"] == "blas")


def speed_table(batch, repeat, torch):
    """Print the per-layer table; returns the median of ours / torch (None without torch)."""
    print(f"\nconv2d forward + backward (gx, gW), float32, batch {batch}, median of {repeat}: "
          f"ms (GFLOP/s)\n")
    print("| layer | fwd GFLOP | ours | torch NCHW | ours / torch |\n|---|---|---|---|---|")
    ratios = []
    for name, c, o, h, k, s in LAYERS:
        x, W, gy, gflop = layer_arrays(batch, c, o, h, k, s)
        steps = [ours_step(x, W, gy, s, k)] + ([torch_step(x, W, gy, s, k)] if torch else [])
        times = time_alternately(steps, repeat)
        cells = [f"{t * 1e3:.1f} ({3 * gflop / t:.0f})" for t in times] + ["-", "-"]
        if torch:
            ratios.append(times[0] / times[1])
            cells[2] = f"{ratios[-1]:.2f}"
        print(f"| {name} | {gflop:.2f} | {' | '.join(cells[:3])} |", flush=True)
    if not torch:
        return None
    print(f"\nmedian ours / torch over the layers: {statistics.median(ratios):.2f} "
          f"(required <= 1.5)")
    return statistics.median(ratios)


def memory_report(batch, torch):
    _, c, o, h, k, s = MEMORY_LAYER
    oh = (h + 2 * (k // 2) - k) // s + 1
    cols = batch * oh * oh * k * k * c * 4 / MiB
    print(f"\npeak memory of one {MEMORY_LAYER[0]} forward + backward, batch {batch} (inputs x, "
          f"W, gy excluded; whole-batch im2col buffer {cols:.0f} MiB, required <= 2x):")
    for which in ["ours"] + (["torch"] if torch else []):
        result = subprocess.run([sys.executable, __file__, "--peak-memory", which,
                                 "--batch", str(batch)], capture_output=True, text=True, check=True)
        peak = json.loads(result.stdout)
        traced = "" if peak["traced"] is None else f", tracemalloc peak {peak['traced']:.0f} MiB"
        print(f"  {which}: peak RSS growth {peak['rss']:.0f} MiB ({peak['rss'] / cols:.2f}x the "
              f"im2col buffer){traced}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="batch 32, 3 repeats")
    parser.add_argument("--peak-memory", choices=["ours", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.repeat = 32, 3
    if args.peak_memory:
        print(json.dumps(peak_memory(args.peak_memory, args.batch)))
        return
    try:
        import torch
        torch.set_num_threads(args.torch_threads)
    except ImportError:
        torch = None
    print(f"numpy {np.__version__}, BLAS: {blas_description()}; "
          + (f"torch {torch.__version__}, {args.torch_threads} threads" if torch else "no torch"))
    coretype = {v: os.environ[v] for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                if v in os.environ}
    if coretype:
        print(f"WARNING: {coretype} set: numpy's GEMMs run slower (see the docstring)")
    speed_table(args.batch, args.repeat, torch)
    memory_report(args.batch, torch)


if __name__ == "__main__":
    main()
