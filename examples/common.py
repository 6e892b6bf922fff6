"""Command-line pieces shared by the example scripts: options and presets, data, model,
optimizer and schedule, the run directory, the JSON report and the PNG plots."""
import argparse
import json
import os
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)

import datasets  # noqa: E402
import ref.models  # noqa: E402
from ref import optim  # noqa: E402

# the keyword argument that --width sets, for the architectures whose width can change
WIDTH_ARGUMENT = {"small_cnn": "width", "resnet18": "width", "resnet34": "width",
                  "resnet50": "width", "preact_resnet18": "width", "wide_resnet": "widen"}


def parser(description, presets):
    """Options every example takes; `presets` maps a name to option defaults."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(presets),
                   help="a named set of defaults; options given explicitly still win")
    p.add_argument("--dataset", default="cifar10", choices=datasets.NAMES)
    p.add_argument("--data-root", default=None, help="dataset folder (default: the cache)")
    p.add_argument("--arch", default="resnet18", choices=sorted(ref.models.MODELS))
    p.add_argument("--width", type=int, default=None,
                   help="network width: channels of small_cnn and the resnets, the widening factor "
                        "k of wide_resnet (vgg16_bn and wrn_28_k have a fixed width)")
    p.add_argument("--backend", default="numpy", choices=["numpy", "gpu"],
                   help="numpy (ref) or gpu (CuPy; GPU_EMULATOR=1 runs it on the CPU emulator)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="parameters and computation (float64 makes backends comparable)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", default="multistep", choices=["multistep", "cosine"],
                   help="multistep: lr / 10 at 50%% and 75%% of the epochs")
    p.add_argument("--eps", type=float, default=8 / 255, help="L-inf radius in [0, 1] units")
    p.add_argument("--alpha", type=float, default=2 / 255, help="PGD step of the training attack")
    p.add_argument("--steps", type=int, default=10, help="PGD steps of the training attack")
    p.add_argument("--val-size", type=float, default=1000,
                   help="held-out training images for model selection (count or fraction)")
    p.add_argument("--train-n", type=int, default=None,
                   help="training images to use, taken after the held-out split (all)")
    p.add_argument("--eval-n", type=int, default=None, help="test images to evaluate (all)")
    p.add_argument("--eval-attacks", default="fgsm,pgd10,pgd50,apgd")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.h5")
    return p


def parse(p, presets, argv=None):
    """Parse with the chosen preset's values as defaults. A preset's width belongs to the preset's
    architecture: it is dropped for an --arch of fixed width, while an explicit --width there is an
    error."""
    given = p.parse_known_args(argv)[0]                 # the options as typed, without the preset
    if given.preset is not None:
        p.set_defaults(**presets[given.preset])
    args = p.parse_args(argv)
    if args.width is not None and args.arch not in WIDTH_ARGUMENT:
        if given.width is not None:
            p.error(f"--width: {args.arch} has a fixed width; --width applies to "
                    f"{', '.join(sorted(WIDTH_ARGUMENT))}")
        args.width = None
    return args


def run_dir(args, name):
    out = Path(args.out or os.path.join("runs", name))
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_data(args):
    """dict(info, loader, val, test): a shuffled (augmented) training Loader over the first
    train_n images outside the held-out split, on --backend; the held-out (x, y) and the first
    eval_n test images, all uint8 on the host (evaluation moves each batch to the model's
    backend)."""
    x, y = datasets.load(args.dataset, "train", root=args.data_root)
    xt, yt = datasets.load(args.dataset, "test", root=args.data_root)
    (x, y), val = datasets.split_validation(x, y, _count(args.val_size), seed=args.seed)
    x, y = x[:args.train_n], y[:args.train_n]           # all of them when train_n is None
    loader = datasets.Loader(x, y, args.batch_size, shuffle=True, seed=args.seed,
                             augment=datasets.default_augment(args.dataset, "train"),
                             backend=args.backend)
    n = len(xt) if args.eval_n is None else args.eval_n
    return dict(info=datasets.info(args.dataset), loader=loader, val=val, test=(xt[:n], yt[:n]))


def _count(value):
    return int(value) if value >= 1 else float(value)


def build_model(args, info):
    """The --arch network in --dtype on --backend (create the optimizer after this move)."""
    width = {} if args.width is None else {WIDTH_ARGUMENT[args.arch]: args.width}
    model = ref.models.get(args.arch, num_classes=info["num_classes"],
                           in_channels=info["shape"][0], rng=args.seed, **width)
    return model.astype(np.dtype(args.dtype)).to(args.backend)


def make_optimizer(args, model):
    return optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                     weight_decay=args.weight_decay)


def make_schedule(args):
    if args.schedule == "cosine":
        return optim.Cosine(args.lr, args.epochs)
    return optim.MultiStep(args.lr, [args.epochs // 2, (3 * args.epochs) // 4])


def save_report(out, report):
    path = Path(out) / "report.json"
    path.write_text(json.dumps(report, indent=2, default=_plain))
    return path


def _plain(value):
    """numpy scalars in a report become Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def plot_history(out, history):
    """training.png: loss per epoch, and train / validation (clean, robust) accuracy."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    for key, label in (("train_acc", "train (objective's points)"),
                       ("val_clean_acc", "validation clean"),
                       ("val_robust_acc", "validation PGD")):
        if key in history[0]:
            right.plot(epochs, [h[key] for h in history], marker="o", label=label)
    right.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    right.legend()
    return _save(fig, Path(out) / "training.png")


def plot_eps_curve(out, result):
    """accuracy_vs_eps.png: accuracy under the curve attack as eps grows."""
    curve = result["eps_curve"]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(curve["eps"], curve["accuracy"], marker="o")
    ax.axvline(result["eps"], color="gray", linestyle="--", label=f"eps = {result['eps']:.4g}")
    ax.set(xlabel="eps (L-inf, [0, 1] units)", ylabel="accuracy", ylim=(0, 1),
           title=f"accuracy vs eps ({curve['attack']})")
    ax.legend()
    return _save(fig, Path(out) / "accuracy_vs_eps.png")


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
