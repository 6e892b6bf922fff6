"""DNR: a robust sparse network trained from scratch in one run, rewired every epoch by magnitude
pruning and momentum-guided regrowth (Kundu et al., ASP-DAC 2021; ref.prune.dnr).

    python examples/cifar_dnr.py --preset quick                        # digits, density 0.1
    python examples/cifar_dnr.py --preset quick --variant channel \\
        --dense-from runs/digits_small_cnn_dnr_irregular_d0.1/dense/best.h5
    python examples/cifar_dnr.py --arch vgg16_bn --density 0.05 --backend gpu      # CIFAR-10

Phases (train.fit run directories under --out, default
runs/<dataset>_<arch>_dnr_<variant>_d<density>):
    dense/   the baseline: the dense --arch trained with the same hybrid objective, optimizer and
             epochs (skipped with --dense-from, a checkpoint of such a network)
    dnr/     the sparse network: --density of the weights of every conv and linear layer active
             (--variant irregular; --layers conv for the convs only), or of the output channels
             of every conv (--variant channel), the masks drawn at random (--init), the loss
             beta CE(x) + (1 - beta) CE(x') + rho / 2 sum ||W - z||^2 (--beta, --rho, the
             attack --eps --alpha --steps), the clean loss in the --warmup epochs; at the start
             of every later epoch a rewiring prunes the --prune-rate (decayed per iteration,
             --decay) smallest active units of each layer and regrows as many by momentum
Optimizer: SGD with Nesterov momentum (sparse_learning's), --lr with --schedule, --weight-decay.
Each phase keeps its best epoch by validation PGD accuracy.

The run directory then holds final.h5 (the sparse network as a plain dense --arch, zeros where
pruned: ref.checkpoint.load(path, ref.models.<arch>(...)) with the report's arguments),
report.json (the table, the evaluation of final.h5, its sparsity, per epoch the density of every
layer and the units pruned and regrown), training.png (validation accuracy per epoch),
sparsity.png (kept fraction per layer) and rewiring.png (density per layer over the epochs, units
pruned and regrown per rewiring, and for the channel variant the output channels present per
layer). The table compares the dense baseline and DNR at --table-attack. --resume continues
whichever phase was interrupted, bit for bit.
"""
import time
from pathlib import Path

import common
import matplotlib.pyplot as plt

from ref import checkpoint, objectives, optim, prune, train
from ref.prune import dnr, sensitivity

# the quick preset is HYDRA's (digits, eps 0.1, alpha 0.025, 5 steps) at width 32 and
# sparse_learning's rewiring defaults: at width 16 (1,898 active weights at density 0.1) DNR ended
# 14 to 19 PGD-20 points below the dense network over seeds 0-3, at width 32 (7,430) 4 to 6
PRESETS = {"quick": dict(dataset="digits", arch="small_cnn", width=32, epochs=10, batch_size=64,
                         lr=0.05, schedule="cosine", eps=0.1, alpha=0.025, steps=5, val_size=0.1,
                         density=0.1, eval_attacks="fgsm,pgd10,pgd50,apgd")}


def options():
    p = common.parser(__doc__.splitlines()[0], PRESETS)
    common.add_pruning_options(p)
    p.add_argument("--density", type=float, default=0.05,
                   help="active fraction of the weights (irregular) or output channels (channel)")
    p.add_argument("--variant", default="irregular", choices=dnr.VARIANTS,
                   help="irregular: single weights; channel: whole output channels of the convs")
    p.add_argument("--beta", type=float, default=0.5,
                   help="weight of the clean cross-entropy in the hybrid loss")
    p.add_argument("--rho", type=float, default=1e-4, help="the dynamic L2 term's weight")
    p.add_argument("--prune-rate", type=float, default=0.5,
                   help="fraction of each layer's active units the first rewiring prunes")
    p.add_argument("--decay", default="cosine", choices=dnr.DECAYS,
                   help="the prune rate's decay per iteration (cosine to 0.005, or linear to 0)")
    p.add_argument("--warmup", type=int, default=0,
                   help="epochs of clean sparse training before the hybrid loss and rewiring")
    p.add_argument("--init", default="exact", choices=dnr.INITS,
                   help="initial masks: exact per-layer counts, or a Bernoulli draw per unit")
    p.add_argument("--distribution", default="uniform", choices=dnr.DISTRIBUTIONS,
                   help="initial layer densities: --density everywhere, or Erdos-Renyi")
    p.add_argument("--dense-from", default=None,
                   help="a checkpoint of the dense --arch as the baseline (no dense/ phase)")
    p.set_defaults(arch="vgg16_bn", epochs=200, batch_size=100, lr=0.1, weight_decay=5e-4)
    return p


def check_options(p, args):
    """Exit with a message naming the option before anything is written."""
    for flag, check, value in (("--density", dnr.check_density, args.density),
                               ("--prune-rate", dnr.check_prune_rate, args.prune_rate),
                               ("--rho", dnr.check_rho, args.rho)):
        try:
            check(value)
        except ValueError as error:
            p.error(f"{flag}: {error}")
    if not 0 <= args.beta <= 1:
        p.error(f"--beta must lie in [0, 1], got {args.beta}")
    if not 0 <= args.warmup < args.epochs:
        p.error(f"--warmup must be in [0, --epochs) = [0, {args.epochs}), got {args.warmup}")


def selection(args):
    """The prunable layers: the convs for the channel variant, --layers otherwise."""
    return dict(kinds=("conv",)) if args.variant == "channel" else common.prunable(args)


def make_optimizer(args, model):
    return optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True,
                     weight_decay=args.weight_decay)


def hybrid(args):
    return objectives.get("dnr", beta=args.beta, eps=args.eps, alpha=args.alpha,
                          steps=args.steps)


def dense_baseline(args, out, data):
    """The dense network: --dense-from, or trained in out/dense. Returns (model, history)."""
    model = common.build_model(args, data["info"])
    if args.dense_from is None:
        history = common.run_phase(args, out, "dense", model, hybrid(args),
                                   make_optimizer(args, model), data, args.epochs, args.lr)
        return model, history
    try:
        checkpoint.load(args.dense_from, model)
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise SystemExit(f"--dense-from {args.dense_from}: it does not hold a dense {args.arch} "
                         f"for {args.dataset} (--width {args.width}): {error}") from error
    return model, []


def train_dnr(args, out, data):
    """The DNR phase in out/dnr (resumable); its best.h5 loaded. Returns (model, history)."""
    directory = Path(out) / "dnr"
    common.check_resumable(directory / "last.h5", args)
    model = common.build_model(args, data["info"])
    rewiring = dnr.DNR(model, make_optimizer(args, model), args.density, args.epochs,
                       len(data["loader"]), variant=args.variant, prune_rate=args.prune_rate,
                       decay=args.decay, warmup=args.warmup, rho=args.rho, init=args.init,
                       distribution=args.distribution, lr_schedule=common.make_schedule(args),
                       rng=args.seed, **selection(args))
    print(rewiring, flush=True)
    history = train.fit(model, rewiring.objective(hybrid(args)), rewiring.optimizer, rewiring,
                        data["loader"], args.epochs, out_dir=directory,
                        resume=args.resume or None, val_data=data["val"],
                        val_attack=dict(eps=args.eps, alpha=args.alpha, steps=args.steps),
                        select="val_robust_acc", seed=args.seed, metadata=vars(args))
    checkpoint.load(directory / "best.h5", model)
    return model, history


def rewiring_log(history):
    """Per epoch: the density of every layer, the channels present and, after a rewiring, the
    units pruned and regrown per layer (from the records ref.prune.dnr.DNR.end_epoch wrote)."""
    log = []
    for record in history:
        entry, rewired = record["dnr"], record["dnr"]["rewiring"]
        log.append(dict(epoch=record["epoch"], density=entry["density"],
                        prune_rate=entry["prune_rate"],
                        layers={name: layer["density"] for name, layer in entry["layers"].items()},
                        channels={name: layer["channels"]
                                  for name, layer in entry["layers"].items()},
                        pruned=rewired and rewired["pruned"],
                        regrown=rewired and rewired["regrown"]))
    return log


def plot_rewiring(out, log, variant):
    """rewiring.png: density per layer over the epochs; units pruned and regrown per rewiring;
    for the channel variant the output channels present per layer."""
    panels = 3 if variant == "channel" else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    epochs = [entry["epoch"] for entry in log]
    for name in log[0]["layers"]:
        axes[0].plot(epochs, [entry["layers"][name] for entry in log], marker=".", label=name)
        if variant == "channel":
            axes[2].plot(epochs, [100 * entry["channels"][name] for entry in log], marker=".",
                         label=name)
    axes[0].set(xlabel="epoch", ylabel="active weights / weights", yscale="log",
                title="density per layer")
    axes[0].legend(fontsize="x-small")
    rewired = [entry for entry in log if entry["pruned"]]
    unit = "channels" if variant == "channel" else "weights"
    for key, marker in (("pruned", "v"), ("regrown", "^")):
        axes[1].plot([entry["epoch"] for entry in rewired],
                     [sum(entry[key].values()) for entry in rewired], marker=marker, label=key)
    axes[1].set(xlabel="epoch (rewired at its start)", ylabel=unit, title=f"{unit} rewired")
    axes[1].legend()
    if variant == "channel":
        axes[2].set(xlabel="epoch", ylabel="% output channels present", ylim=(0, 105),
                    title="channels present per layer")
    fig.tight_layout()
    path = Path(out) / "rewiring.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None):
    p = options()
    args = common.parse(p, PRESETS, argv)
    check_options(p, args)
    start = time.perf_counter()
    data = common.load_data(args)
    out = common.run_dir(args, f"{args.dataset}_{args.arch}_dnr_{args.variant}_d{args.density:g}")
    dense, dense_history = dense_baseline(args, out, data)
    model, history = train_dnr(args, out, data)
    final, sparsity = common.save_final(out, model, args, to_dense=dnr.remove_rewiring_masks)
    rewired = prune.sparsity(final, **selection(args))["global"]     # the DNR layers only
    channels = sensitivity.channels_present(final, **selection(args))
    rows = [dict(network="dense", density=1.0, channels=1.0,
                 **common.measure(dense, data, args)),
            dict(network=f"DNR {args.variant}", density=rewired["kept"] / rewired["size"],
                 channels=channels["global"], **common.measure(final, data, args))]
    evaluation = common.evaluate_networks({"final": final}, data, args)
    common.print_sparsity_table({"final.h5": sparsity["counts"]})
    common.print_table(
        f"DNR on {args.dataset}, {args.arch}, {args.variant}, density {args.density}, "
        f"{args.epochs} epochs: test accuracy at eps {args.eps:.4g}", rows,
        [("network", "network", ""), ("density", "density", ".4f"),
         ("channels", "channels", ".4f"), ("clean", "clean", ".4f"),
         (args.table_attack, args.table_attack, ".4f")])
    log = rewiring_log(history)
    histories = {"dense": dense_history, "dnr": history} if dense_history else {"dnr": history}
    report = dict(args=vars(args), table=rows, history=histories, rewiring=log,
                  evaluation=evaluation, channels=channels, sparsity=sparsity,
                  time_s=time.perf_counter() - start)
    paths = [common.save_report(out, report), common.plot_phases(out, histories),
             common.plot_sparsity(out, {"final": sparsity["counts"]}),
             plot_rewiring(out, log, args.variant)]
    print(f"wrote {out / 'final.h5'} (density {rows[1]['density']:.4f}), "
          + ", ".join(str(path) for path in paths))
    return report


if __name__ == "__main__":
    common.cli(main)
