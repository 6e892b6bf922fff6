"""Command-line pieces shared by the example scripts: options and presets, data, model,
optimizer and schedule, the run directory, the JSON report and the PNG plots; for the pruning
examples, resumable training phases, the summary table and the sparsity and weight plots; `cli`,
which runs a script's main with one-line messages for the known errors."""
import argparse
import copy
import json
import os
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)

import datasets  # noqa: E402
import ref.models  # noqa: E402
from ref import checkpoint, objectives, optim, prune, train  # noqa: E402
from datasets.errors import MissingDataError, SourceError  # noqa: E402
from ref.evaluate import accuracy, parse_attack, run_attack, verified_accuracy  # noqa: E402
from ref.nn import dense_form  # noqa: E402

# the keyword argument that --width sets, for the architectures whose width can change
WIDTH_ARGUMENT = {"small_cnn": "width", "resnet18": "width", "resnet34": "width",
                  "resnet50": "width", "preact_resnet18": "width", "wide_resnet": "widen",
                  "certified_cnn": "width"}
# the architectures whose linear layers are sized for the input: built for the dataset's size
SIZED_FOR_INPUT = ("certified_cnn", "cifar_model", "cifar_model_large")


class CommandLineError(Exception):
    """A known error of a command (a bad checkpoint, a bad option value): `cli` prints it."""


# errors that `cli` reports as one message: missing or corrupt dataset files say where to put them
KNOWN_ERRORS = (CommandLineError, MissingDataError, SourceError)


def cli(main):
    """Run main() as a command: a known error (KNOWN_ERRORS, or SystemExit with a message)
    prints "<script>: error: <message>" on one line of stderr and exits with status 2, without a
    traceback; any other error keeps its traceback. Returns main's result."""
    try:
        return main()
    except (*KNOWN_ERRORS, SystemExit) as error:
        message = error.code if isinstance(error, SystemExit) else str(error)
        if not isinstance(message, str):             # sys.exit(0), argparse's exit(2), ...
            raise
        print(f"{Path(sys.argv[0]).name}: error: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2) from None


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
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                   help="with --backend gpu, float32 conv and linear products on TF32 tensor "
                        "cores, as PyTorch's convolutions by default (no effect on numpy or "
                        "float64)")
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
    _check_values(p, args)
    return args


def _check_values(p, args):
    """p.error (exit status 2) for option values that no run can use."""
    for name in ("eps", "alpha"):
        if not getattr(args, name) >= 0:
            p.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    for name in ("batch_size", "steps", "train_n", "eval_n"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in args.eval_attacks.split(","):
        try:
            parse_attack(name)
        except ValueError as error:
            p.error(f"--eval-attacks: {error}")


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
    if args.arch in SIZED_FOR_INPUT:
        options = dict(input_size=info["shape"][-1], **options)
    model = ref.models.get(args.arch, num_classes=info["num_classes"],
                           in_channels=info["shape"][0], rng=args.seed, **width, **options)
    if args.backend == "gpu":
        import gpu
        gpu.set_tf32(args.tf32)
    return model.astype(np.dtype(args.dtype)).to(args.backend)


# objective names: add_objective_options' choices; CERTIFIED with certified=True, BOUNDED among
# them train through ref.certify's bounds (IBP, CROWN-IBP), which need a BN-free network
OBJECTIVES = ("natural", "at", "mat", "trades", "mart")
CERTIFIED = ("crown_ibp", "ibp", "smooth")
BOUNDED = ("crown_ibp", "ibp")


def add_objective_options(p, default="at", certified=False):
    """--objective and its settings; certified=True adds the objectives of ref.certify
    (CERTIFIED) and their settings."""
    p.add_argument("--objective", default=default,
                   choices=OBJECTIVES + (CERTIFIED if certified else ()),
                   help="mat: mixed-batch AT (half the batch adversarial)" + (
                       "; crown_ibp, ibp: certified training through CROWN-IBP / IBP bounds at "
                       "--eps (BN-free --arch); smooth: stability training for randomized "
                       "smoothing" if certified else ""))
    p.add_argument("--beta", type=float, default=None,
                   help="TRADES / MART beta" + (", smooth's KL weight" if certified else "")
                   + " (default 6)")
    if certified:
        p.add_argument("--kappa", type=float, default=0.0,
                       help="crown_ibp, ibp: the clean CE's weight in (1 - kappa) CE(-lb, y) + "
                            "kappa CE(f(x), y)")
        p.add_argument("--eps-ramp-epochs", type=int, default=60,
                       help="crown_ibp, ibp: eps grows linearly, step by step, from 0 to --eps "
                            "over this many epochs (of the first training phase)")
        p.add_argument("--sigma", type=float, default=0.25,
                       help="smooth: the std of the Gaussian noise (training and certification)")


def make_objective(args, name=None, steps_per_epoch=1, ramp_epochs=None):
    """The objective --objective (or `name`) with the attack --eps, --alpha, --steps; a bounded
    one at --eps with --kappa, its eps ramped over ramp_epochs (default --eps-ramp-epochs) of
    steps_per_epoch steps; smooth with --sigma. ValueError for settings it cannot use."""
    name = name or args.objective
    if name == "natural":
        return objectives.get("natural")
    beta = {} if args.beta is None else dict(beta=args.beta)
    if name in BOUNDED:
        return objectives.get(name, eps=args.eps, kappa=args.kappa,
                              ramp_epochs=ramp_epochs or args.eps_ramp_epochs,
                              steps_per_epoch=steps_per_epoch)
    if name == "smooth":
        return objectives.get(name, sigma=args.sigma, **beta)
    return objectives.get(name, eps=args.eps, alpha=args.alpha, steps=args.steps, **beta)


def add_optimizer_option(p):
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"],
                   help="sgd with --momentum, or adam (betas 0.9, 0.999); both with "
                        "--weight-decay")


def make_optimizer(args, model, lr=None):
    """SGD with --momentum and --weight-decay at --lr (or `lr`); Adam instead where the script
    has add_optimizer_option and --optimizer adam is chosen."""
    lr = args.lr if lr is None else lr
    if getattr(args, "optimizer", "sgd") == "adam":
        return optim.Adam(model.parameters(), lr=lr, weight_decay=args.weight_decay)
    return optim.SGD(model.parameters(), lr=lr, momentum=args.momentum,
                     weight_decay=args.weight_decay)


def make_schedule(args):
    if args.schedule == "cosine":
        return optim.Cosine(args.lr, args.epochs)
    if args.schedule == "hydra":
        return optim.PerEpoch(optim.Cosine(args.lr, args.epochs, hydra_offset=True))
    return optim.MultiStep(args.lr, [args.epochs // 2, (3 * args.epochs) // 4])


def save_report(out, report, filename="report.json"):
    """out/filename: the report as JSON (numpy scalars as numbers); returns the path."""
    path = Path(out) / filename
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
RESUME_FREE = ("resume", "out", "backend", "tf32", "eval_n", "eval_attacks", "data_root")


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
    and smooth training, IBP-verified accuracy at --eps for the BOUNDED objectives, as the
    reference selects) into the model. schedule: the lr schedule (default: --schedule at lr over
    epochs). Returns the phase's history."""
    directory = Path(out) / name
    check_resumable(directory / "last.h5", args)
    if schedule is None:
        schedule = make_schedule(argparse.Namespace(**{**vars(args), "lr": lr, "epochs": epochs}))
    kind = getattr(objective, "name", None)
    bounded = kind in BOUNDED
    history = train.fit(model, objective, optimizer, schedule, data["loader"], epochs,
                        out_dir=directory, resume=args.resume or None, val_data=data["val"],
                        val_attack=dict(eps=args.eps, alpha=args.alpha, steps=args.steps),
                        val_verify=dict(eps=args.eps, method="ibp") if bounded else None,
                        select="val_verified_acc" if bounded else "val_clean_acc" if kind in (
                            "natural", "smooth") else "val_robust_acc",
                        seed=args.seed, metadata=vars(args))
    checkpoint.load(directory / "best.h5", model)
    return history


def measure(model, data, args, verify=()):
    """{"clean", <table attack>, *verify}: test accuracies, the attack at --eps (ref.evaluate's
    step), and the accuracy verified at --eps by each bound method of `verify` ("ibp",
    "crown-ibp")."""
    spec = parse_attack(args.table_attack)

    def attack(m, x, y, rng):
        return run_attack(spec, m, x, y, args.eps, rng)

    return {"clean": accuracy(model, data["test"], seed=args.seed),
            args.table_attack: accuracy(model, data["test"], attack, seed=args.seed),
            **{method: verified_accuracy(model, data["test"], args.eps, method)
               for method in verify}}


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


def evaluate_networks(networks, data, args, verify=()):
    """{name: ref.evaluate.evaluate result} of each network on the test images at --eps with
    --eval-attacks and the bound methods of `verify` (printed as it goes)."""
    results = {}
    for name, network in networks.items():
        print(f"evaluating the {name} network")
        results[name] = train.evaluate(network, data["test"], eps=args.eps,
                                       attacks=args.eval_attacks.split(","), seed=args.seed,
                                       verify=verify)
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


def plot_curves(out, curves, xlabel, ylabel, filename):
    """out/filename: accuracy curves {label: (x values, accuracies)}, one line each."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, accuracies) in curves.items():
        ax.plot(xs, accuracies, marker="o", label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, ylim=(0, 1))
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
