"""Benchmark of HYDRA's subnet_weight (the per-forward top-k mask and its straight-through
backward) as a fraction of a ResNet-18 training step, timed side by side in one run.

Timed per repeat, alternately (float32, batch --batch of 3x32x32, train mode, SGD momentum 0.9):
    dense      one natural training step of ref.models.resnet18 (as step_bench.py's)
    prune      the same step of its subnet form at keep --keep with the scores trained (HYDRA's
               prune phase: weights frozen, scores and BatchNorm trained)
    finetune   the same step with the scores frozen and the weights trained
    subnet_weight  ref.ops.subnet_weight forward and backward (gW and gS) of all 21 prunable
               layers, alone, on the same weights and scores
The table gives median ms per step and each one over the dense step.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/subnet_bench.py [--batch 128]
        [--repeat 5] [--keep 0.1] [--backend numpy|gpu]

--backend gpu times the gpu backend between device synchronisations; it needs a CUDA device and
refuses to run (exit status 2) where there is none or under GPU_EMULATOR=1 (gpu_bench.refusal).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import ref  # noqa: E402
import ref.models  # noqa: E402
from gpu_bench import refusal  # noqa: E402
from ref import optim  # noqa: E402
from ref.prune import hydra  # noqa: E402


def training_step(model, x, y):
    """A function doing one SGD step of `model` on (x, y) on the model's backend."""
    T = type(model.parameters()[0])
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def step():
        sgd.zero_grad()
        T.ops.cross_entropy(model(T(x)), y).backward()
        sgd.step()
    return step


def subnet_weight_pass(model, seed=0):
    """A function running subnet_weight forward and backward on every subnet layer."""
    layers = list(hydra.subnet_layers(model).values())
    rng = np.random.default_rng(seed)
    upstream = [layer.weight.xp.asarray(rng.standard_normal(layer.weight.shape),
                                        dtype=layer.weight.dtype) for layer in layers]

    def run():
        for layer, gy in zip(layers, upstream):
            W = type(layer.weight)(layer.weight.data, requires_grad=True)
            S = type(layer.scores)(layer.scores.data, requires_grad=True)
            layer.weight.ops.subnet_weight(W, S, layer.keep).backward(gy)
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--keep", type=float, default=0.1)
    p.add_argument("--backend", default="numpy", choices=["numpy", "gpu"])
    args = p.parse_args()
    if args.backend == "gpu" and refusal() is not None:
        print(refusal(), file=sys.stderr)
        sys.exit(2)
    backend = ref.nn.backend(args.backend)
    sync = (lambda: backend.cupy.cuda.Device().synchronize()) if args.backend == "gpu" else (
        lambda: None)
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.random((args.batch, 3, 32, 32), dtype=np.float32))
    y = backend.asarray(rng.integers(0, 10, args.batch))
    dense = ref.models.resnet18(num_classes=10, rng=0).to(args.backend).train()
    pruned = hydra.to_subnet(ref.models.resnet18(num_classes=10, rng=0), args.keep)
    pruned = pruned.to(args.backend).train()
    finetuned = hydra.to_subnet(ref.models.resnet18(num_classes=10, rng=0), args.keep)
    finetuned = finetuned.to(args.backend).train()
    hydra.set_phase(pruned, "prune")
    hydra.set_phase(finetuned, "finetune")
    steps = {"dense": training_step(dense, x, y), "prune": training_step(pruned, x, y),
             "finetune": training_step(finetuned, x, y),
             "subnet_weight": subnet_weight_pass(pruned)}
    for step in steps.values():   # warm-up
        step()
    times = {name: [] for name in steps}
    for _ in range(args.repeat):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"resnet18, batch {args.batch}, float32, keep {args.keep}, backend {args.backend}, "
          f"median of {args.repeat}")
    for name, t in median.items():
        print(f"  {name:<14}{t * 1e3:10.1f} ms  {t / median['dense']:6.3f} x dense step")


if __name__ == "__main__":
    main()
