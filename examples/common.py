"""Command-line pieces shared by the example scripts: options and presets, data, model,
optimizer and schedule, the run directory, the JSON report and the PNG plots; for the pruning
examples, resumable training phases, the summary table and the sparsity and weight plots."""
import argparse
import copy
import json
import os
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)

import datasets  # noqa: E402
import ref.models  # noqa: E402
from ref import checkpoint, objectives, optim, prune, train  # noqa: E402
from ref.evaluate import accuracy, parse_attack, run_attack  # noqa: E402
from ref.nn import dense_form  # noqa: E402

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
    p.add_argument("--schedule", default="multistep", choices=["multistep", "cosine", "hydra"],
                   help="multistep: lr / 10 at 50%% and 75%% of the epochs; cosine: per "
                        "iteration; hydra: HYDRA's cosine, set once per epoch")
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


def load_data(args, indices=False):
    """dict(info, loader, val, test): a shuffled (augmented) training Loader over the first
    train_n images outside the held-out split, on --backend; the held-out (x, y) and the first
    eval_n test images, all uint8 on the host (evaluation moves each batch to the model's
    backend). indices=True: the Loader yields the sample indices too and does not augment (for
    an objective that augments itself, such as the fast trainer)."""
    x, y = datasets.load(args.dataset, "train", root=args.data_root)
    xt, yt = datasets.load(args.dataset, "test", root=args.data_root)
    (x, y), val = datasets.split_validation(x, y, _count(args.val_size), seed=args.seed)
    x, y = x[:args.train_n], y[:args.train_n]           # all of them when train_n is None
    augment = None if indices else datasets.default_augment(args.dataset, "train")
    loader = datasets.Loader(x, y, args.batch_size, shuffle=True, seed=args.seed, augment=augment,
                             backend=args.backend, indices=indices)
    n = len(xt) if args.eval_n is None else args.eval_n
    return dict(info=datasets.info(args.dataset), loader=loader, val=val, test=(xt[:n], yt[:n]))


def _count(value):
    return int(value) if value >= 1 else float(value)


def build_model(args, info, **options):
    """The --arch network in --dtype on --backend (create the optimizer after this move);
    options go to the model's builder (e.g. affine_bn, last_bn, classifier)."""
    width = {} if args.width is None else {WIDTH_ARGUMENT[args.arch]: args.width}
    model = ref.models.get(args.arch, num_classes=info["num_classes"],
                           in_channels=info["shape"][0], rng=args.seed, **width, **options)
    return model.astype(np.dtype(args.dtype)).to(args.backend)


def add_objective_options(p, default="at"):
    p.add_argument("--objective", default=default,
                   choices=["natural", "at", "mat", "trades", "mart"],
                   help="mat: mixed-batch AT (half the batch adversarial)")
    p.add_argument("--beta", type=float, default=None, help="TRADES / MART beta (default 6)")


def make_objective(args, name=None):
    """The objective --objective (or `name`) with the attack --eps, --alpha, --steps."""
    name = name or args.objective
    if name == "natural":
        return objectives.get("natural")
    beta = {} if args.beta is None else dict(beta=args.beta)
    return objectives.get(name, eps=args.eps, alpha=args.alpha, steps=args.steps, **beta)


def make_optimizer(args, model, lr=None):
    """SGD with --momentum and --weight-decay at --lr (or `lr`)."""
    return optim.SGD(model.parameters(), lr=args.lr if lr is None else lr,
                     momentum=args.momentum, weight_decay=args.weight_decay)


def make_schedule(args):
    if args.schedule == "cosine":
        return optim.Cosine(args.lr, args.epochs)
    if args.schedule == "hydra":
        return optim.PerEpoch(optim.Cosine(args.lr, args.epochs, hydra_offset=True))
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


# ---- pruning runs: phases, measurements, tables, plots ------------------------------------------
PRUNE_LAYERS = {"all": ("conv", "linear"), "conv": ("conv",)}
# options that may change between a run and its --resume (they do not change what is trained)
RESUME_FREE = ("resume", "out", "backend", "eval_n", "eval_attacks", "data_root")


def add_pruning_options(p):
    p.add_argument("--layers", default="all", choices=sorted(PRUNE_LAYERS),
                   help="prunable weights: conv and linear, or conv only (the scope of "
                        "rethinking-network-pruning)")
    p.add_argument("--table-attack", default="pgd20",
                   help="the attack of the summary table (eps = --eps)")


def prunable(args):
    """Keyword arguments of ref.prune.weights / prunable_layers for --layers."""
    return dict(kinds=PRUNE_LAYERS[args.layers])


def check_resumable(path, args):
    """With --resume, refuse a checkpoint written with other options (another run's phase): exit
    with a message naming the options that differ, before anything is overwritten."""
    if not args.resume or not Path(path).exists():
        return
    saved = checkpoint.read(path)["extra"].get("metadata", {})
    ours = {k: v for k, v in vars(args).items() if k not in RESUME_FREE}
    differ = {k: (saved.get(k), v) for k, v in ours.items() if saved.get(k) != v}
    if differ:
        raise SystemExit(f"{path} belongs to another run: " + "; ".join(
            f"--{k.replace('_', '-')} {old!r} there, {new!r} now" for k, (old, new) in
            differ.items()) + ". Use another --out, or run without --resume to start over.")


def run_phase(args, out, name, model, objective, optimizer, data, epochs, lr, schedule=None):
    """Train one phase in out/<name> with train.fit (--resume continues it, or skips it when it
    is complete) and load its best.h5 (by validation PGD accuracy; clean accuracy for natural
    training) into the model. schedule: the lr schedule (default: --schedule at lr over epochs).
    Returns the phase's history."""
    directory = Path(out) / name
    check_resumable(directory / "last.h5", args)
    if schedule is None:
        schedule = make_schedule(argparse.Namespace(**{**vars(args), "lr": lr, "epochs": epochs}))
    natural = getattr(objective, "name", None) == "natural"
    history = train.fit(model, objective, optimizer, schedule, data["loader"], epochs,
                        out_dir=directory, resume=args.resume or None, val_data=data["val"],
                        val_attack=dict(eps=args.eps, alpha=args.alpha, steps=args.steps),
                        select="val_clean_acc" if natural else "val_robust_acc",
                        seed=args.seed, metadata=vars(args))
    checkpoint.load(directory / "best.h5", model)
    return history


def measure(model, data, args):
    """{"clean", <table attack>}: test accuracies, the attack at --eps (ref.evaluate's step)."""
    spec = parse_attack(args.table_attack)

    def attack(m, x, y, rng):
        return run_attack(spec, m, x, y, args.eps, rng)

    return {"clean": accuracy(model, data["test"], seed=args.seed),
            args.table_attack: accuracy(model, data["test"], attack, seed=args.seed)}


def save_final(out, model, args, to_dense=dense_form):
    """final.h5: the pruned model as a plain dense --arch (a copy turned back by to_dense: subnet
    layers by default, W * M baked in). Returns (that model, its report.json "sparsity": global
    and per-layer fractions of zero weights and the counts of ref.prune.sparsity)."""
    final = to_dense(copy.deepcopy(model))
    checkpoint.save(Path(out) / "final.h5", final, metadata=vars(args))
    counts = prune.sparsity(final)
    return final, {"global": counts["global"]["sparsity"],
                   "layers": {k: v["sparsity"] for k, v in counts["layers"].items()},
                   "counts": counts}


def evaluate_networks(networks, data, args):
    """{name: ref.evaluate.evaluate result} of each network on the test images at --eps with
    --eval-attacks (printed as it goes)."""
    results = {}
    for name, network in networks.items():
        print(f"evaluating the {name} network")
        results[name] = train.evaluate(network, data["test"], eps=args.eps,
                                       attacks=args.eval_attacks.split(","), seed=args.seed)
    return results


def print_table(title, rows, columns):
    """rows: dicts; columns: (key, header, format) triples; "-" where a row has no value."""
    cells = [[format(row[k], f) if row.get(k) is not None else "-" for k, _, f in columns]
             for row in rows]
    widths = [max([len(header)] + [len(line[i]) for line in cells])
              for i, (_, header, _) in enumerate(columns)]
    lines = [title, "  ".join(f"{h:>{w}}" for (_, h, _), w in zip(columns, widths))]
    lines += ["  ".join(f"{c:>{w}}" for c, w in zip(line, widths)) for line in cells]
    print("\n".join(lines), flush=True)


def print_sparsity_table(reports):
    """Per-layer sparsity of each model ({label: ref.prune.sparsity report}), one row a layer."""
    names = list(next(iter(reports.values()))["layers"])
    rows = [dict(layer=name, size=next(iter(reports.values()))["layers"][name]["size"],
                 **{label: report["layers"][name]["sparsity"] for label, report in
                    reports.items()}) for name in names]
    rows.append(dict(layer="all", size=next(iter(reports.values()))["global"]["size"],
                     **{label: report["global"]["sparsity"] for label, report in
                        reports.items()}))
    print_table("sparsity per layer (fraction of zero weights)", rows,
                [("layer", "layer", ""), ("size", "weights", "d")]
                + [(label, label, ".4f") for label in reports])


def plot_phases(out, histories, filename="training.png"):
    """Validation clean and PGD accuracy per epoch, the phases one after another."""
    fig, ax = plt.subplots(figsize=(max(6, len(histories) * 2), 4))
    start = 0
    for name, history in histories.items():
        epochs = [start + h["epoch"] for h in history]
        for key, style in (("val_clean_acc", "-"), ("val_robust_acc", "--")):
            if history and key in history[0]:
                ax.plot(epochs, [h[key] for h in history], style, marker=".",
                        label=f"{name} {key[4:-4]}")
        ax.axvline(start + 0.5, color="lightgray")
        start += len(history)
    ax.set(xlabel="epoch (phases in order)", ylabel="validation accuracy", ylim=(0, 1))
    ax.legend(fontsize="small", ncol=2)
    return _save(fig, Path(out) / filename)


def plot_sparsity(out, reports, filename="sparsity.png"):
    """Kept fraction per prunable layer, one bar group per layer and one bar per model."""
    names = list(next(iter(reports.values()))["layers"])
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.6), 4))
    width = 0.8 / len(reports)
    for i, (label, report) in enumerate(reports.items()):
        kept = [1 - report["layers"][n]["sparsity"] for n in names]
        ax.bar(np.arange(len(names)) + i * width, kept, width, label=label)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=60, ha="right",
                  fontsize="small")
    ax.set(ylabel="kept fraction", ylim=(0, 1.05), title="kept weights per layer")
    ax.legend(fontsize="small")
    return _save(fig, Path(out) / filename)


def plot_weight_statistics(out, stats, label):
    """weights_<label>.png: per layer, the histogram of log10 |w| over the kept weights, the
    number of kernels with v = 0 .. kh kw kept weights (convs) and the kept weights per output
    channel (solid) and per input channel (dotted), sorted."""
    fig, (hist, kernels, channels) = plt.subplots(1, 3, figsize=(15, 4))
    edges = np.array(stats["histogram_edges"])
    for name, layer in stats["layers"].items():
        hist.step(edges[:-1], layer["magnitude_histogram"], where="post", label=name)
        if "kernel_kept_counts" in layer:
            counts = np.array(layer["kernel_kept_counts"])
            kernels.plot(np.arange(len(counts)), counts / counts.sum(), marker="o", label=name)
        for key, style in (("kept_per_output", "-"), ("kept_per_input", ":")):
            kept = np.sort(layer[key])[::-1]
            channels.plot(np.linspace(0, 1, len(kept)), kept / max(kept.max(), 1), style,
                          color=hist.lines[-1].get_color())
    hist.set(xlabel="log10 |w| (kept weights)", ylabel="count", title="weight magnitudes")
    kernels.set(xlabel="kept weights in a kernel", ylabel="fraction of kernels",
                title="kept weights per kernel (convs)")
    channels.set(xlabel="channels (sorted, fraction)", ylabel="kept / layer max",
                 title="kept weights per output (-) and input (:) channel")
    hist.legend(fontsize="x-small")
    return _save(fig, Path(out) / f"weights_{label}.png")
