"""Evaluate a checkpoint: clean, FGSM, PGD-k and APGD-CE accuracy with the sanity checks, the
sparsity per layer and, with --autoattack, AutoAttack on the model's PyTorch twin.

    python examples/evaluate.py runs/digits_small_cnn_at/best.h5 --eval-n 200
    python examples/evaluate.py model.pt --dataset cifar10 --arch preact_resnet18 \\
        --normalize cifar10 --autoattack standard           # a PyTorch / RobustBench checkpoint
    GPU_EMULATOR=1 python examples/evaluate.py runs/digits_small_cnn_at/best.h5 --backend gpu

A checkpoint of ours (.h5) loads with ref.checkpoint; its run's --dataset, --arch, --width,
--eps and --dtype are the defaults (options given explicitly win), and pruning masks stored in it
are attached. Any other file is a PyTorch state dict, loaded by ref.interop.from_torch into --arch
(--model-options for builder options, --normalize for the input normalisation inside the model,
so attacks stay in [0, 1] pixels). --autoattack needs `pip install -e ".[autoattack]"`. The
table is printed and written to <out>/evaluation.json (--out, default: next to the checkpoint).
"""
import json
import time
from pathlib import Path

import numpy as np

import common
import datasets
from ref import checkpoint, prune
from ref.interop import from_torch, to_torch

# --normalize names: the per-channel mean and std of the RobustBench / reference-repo models
NORMALIZE = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
             "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
FROM_RUN = ("dataset", "arch", "width", "eps", "dtype")   # defaults taken from our checkpoints


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0], {})
    p.add_argument("checkpoint", help="our .h5 checkpoint, or a PyTorch .pt / .pth state dict")
    p.add_argument("--model-options", type=json.loads, default={},
                   help='builder options as JSON, e.g. \'{"classifier": "hydra"}\'')
    p.add_argument("--normalize", default=None,
                   help=f"input normalisation inside the model: {' or '.join(NORMALIZE)}, or "
                        f"'m1,m2,m3/s1,s2,s3' (mean / std per channel)")
    p.add_argument("--autoattack", default=None, choices=["standard", "plus", "rand"],
                   help="also run AutoAttack (pyautoattack) of this version on the torch twin")
    path = Path(p.parse_known_args(argv)[0].checkpoint)
    ours = path.suffix == ".h5"
    if ours:
        p.set_defaults(**_run_options(path))
    args = common.parse(p, {}, argv)
    normalize = _normalize(p, args.normalize)
    out = common.run_dir(args, "") if args.out else path.parent
    start = time.perf_counter()
    x, y = datasets.load(args.dataset, "test", root=args.data_root)
    data = {"test": (x[:args.eval_n], y[:args.eval_n])}
    model = common.build_model(args, datasets.info(args.dataset), **args.model_options,
                               normalize=normalize)
    _load(model, path, ours)
    sparsity = prune.sparsity(model)
    common.print_sparsity_table({"model": sparsity})
    result = common.evaluate_networks({"checkpoint": model}, data, args)["checkpoint"]
    if args.autoattack:
        result["autoattack"] = autoattack(model, data["test"], args)
    report = dict(args=vars(args), evaluation=result, sparsity=sparsity,
                  time_s=time.perf_counter() - start)
    print(f"wrote {common.save_report(out, report, 'evaluation.json')}")
    return report


def _run_options(path):
    """The options of the run that wrote our checkpoint `path` (FROM_RUN), from its metadata."""
    try:
        metadata = checkpoint.read(path)["extra"].get("metadata", {})
    except (OSError, ValueError) as error:
        raise common.CommandLineError(f"bad checkpoint: {error}") from error
    return {k: metadata[k] for k in FROM_RUN if k in metadata}


def _normalize(p, value):
    """None, a NORMALIZE name or 'mean/std' with comma-separated channels -> (mean, std)."""
    if value is None or value in NORMALIZE:
        return NORMALIZE.get(value)
    try:
        mean, std = ([float(v) for v in part.split(",")] for part in value.split("/"))
        return mean, std
    except ValueError:
        p.error(f"--normalize must be one of {sorted(NORMALIZE)} or 'm1,m2,m3/s1,s2,s3', "
                f"got {value!r}")


def _load(model, path, ours):
    """Load our checkpoint (attaching its masks first) or a PyTorch state dict into model."""
    try:
        if ours:
            masks = prune.masks.masks_in_checkpoint(checkpoint.read(path))
            if masks:
                prune.masks.apply_masks(model, masks)
            checkpoint.load(path, model)
        else:
            from_torch(model, path)
    except (OSError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) else error
        raise common.CommandLineError(f"bad checkpoint: {message}") from error


def autoattack(model, data, args):
    """{"version", "accuracy", "time_s"}: AutoAttack's robust accuracy at --eps on the PyTorch
    twin of the model (CPU, the model's dtype), the images of `data` in [0, 1]."""
    try:
        from pyautoattack import AutoAttack
    except ImportError as error:
        raise common.CommandLineError('--autoattack needs the pyautoattack package: '
                                      'pip install -e ".[autoattack]"') from error
    import torch
    start = time.perf_counter()
    twin = to_torch(model).eval()
    x = torch.from_numpy(data[0].astype(model.parameters()[0].dtype) / 255)        # (n, c, h, w)
    y = torch.from_numpy(np.asarray(data[1], dtype=np.int64))                      # (n,)
    attack = AutoAttack(twin, eps=args.eps, version=args.autoattack, seed=args.seed)
    x_adv, _ = attack.run_standard_evaluation(x, y, batch_size=args.batch_size)
    with torch.no_grad():
        robust = (twin(x_adv).argmax(1) == y) & (twin(x).argmax(1) == y)            # (n,)
    accuracy = float(robust.double().mean())
    print(f"  autoattack ({args.autoattack}) accuracy {accuracy:.4f}", flush=True)
    return dict(version=args.autoattack, accuracy=accuracy, time_s=time.perf_counter() - start)


if __name__ == "__main__":
    common.cli(main)
