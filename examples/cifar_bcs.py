"""BCS: robust sparse training from scratch by Bayesian connectivity sampling, beside dense
adversarial training and the fixed-connectivity baselines (Özdenizci & Legenstein, ICML 2021;
ref.prune.bcs).

    python examples/cifar_bcs.py --preset quick      # digits, small CNN, connectivity 0.1, ~6 min
    python examples/cifar_bcs.py --backend gpu               # CIFAR-10, VGG16, connectivity 0.01
    python examples/cifar_bcs.py --arch resnet18 --objective trades --connectivity 0.1

Phases (train.fit run directories under --out, default
runs/<dataset>_<arch>_bcs_<objective>_c<connectivity>), each trained with --objective, SGDW
(--momentum, --weight-decay decoupled and scheduled with the lr) and the --schedule from --lr:
    dense/          the dense network, --dense-epochs (0 skips it)
    bcs/            every conv and linear layer in rewiring form (W = s max(theta, 0)) with the
                    reference's initial densities; after every step the noise (--noise, or
                    --temperature) and the rewiring back to int(--connectivity * n) active
                    connections; --epochs
    random_fixed/   (--baseline) the same initial draws, the initial connectivity topped up once
                    to the budget and then fixed, plain signed weights; --epochs
    fixed/          (--baseline) in each layer as many connections as random_fixed, at the
                    largest |W| of the trained dense network, fixed, the same initial weights;
                    --epochs
Each phase keeps its best epoch by validation PGD accuracy (the reference selects by clean test
accuracy). The defaults are the reference's: VGG16 (2048-256-256-C classifier), AT with eps 8/255,
alpha 2/255, 10 steps, 200 epochs of 128, lr 0.1 divided by 10 at 50% and 75%, weight decay
5e-4, momentum 0.9, noise 1e-6 lr, connectivity 0.01, BatchNorm with the biased running variance
(--torch-bn: PyTorch's unbiased one).

The run directory then holds final.h5 (the BCS network as a plain dense --arch, W = s max(theta, 0)
baked in: ref.checkpoint.load(path, ref.models.<arch>(...)) with the report's arguments),
report.json (the table, the histories, per epoch the active connections of every layer and the
connections rewired, "sparsity" of final.h5, the evaluation of the dense and the final network),
training.png, sparsity.png and connectivity.png (density of every layer and rewired connections
per epoch). --resume continues whichever phase was interrupted, bit for bit.
"""
import time

import numpy as np

import common
import matplotlib.pyplot as plt
from ref import checkpoint, optim, prune
from ref.prune import bcs

# quick: width 32, because at width 16 connectivity 0.1 leaves 1,896 connections and BCS stays
# ~12 PGD-20 points under dense AT (measured); weight decay 5e-5, because the decoupled decay
# multiplies the weights by 1 - wd every step (an L2 of wd / lr = 0.01 at 5e-4 and lr 0.05);
# a cosine lr, because the reference's drop by 10 with Keras momentum (v = m v - lr g) makes the
# loss jump for an epoch, which a 10-epoch run cannot afford
PRESETS = {"quick": dict(dataset="digits", arch="small_cnn", width=32, epochs=10, batch_size=64,
                         lr=0.05, weight_decay=5e-5, schedule="cosine", eps=0.1, alpha=0.025,
                         steps=5, val_size=0.1, connectivity=0.1, baseline="random_fixed,fixed",
                         eval_attacks="fgsm,pgd10")}
BASELINES = ("random_fixed", "fixed")
LABELS = {"dense": "dense AT", "bcs": "BCS", "random_fixed": "random fixed",
          "fixed": "fixed magnitude"}


def options():
    p = common.parser(__doc__.splitlines()[0], PRESETS)
    common.add_objective_options(p)
    p.add_argument("--connectivity", type=float, default=0.01,
                   help="the kept fraction of the conv and linear weights (the budget)")
    p.add_argument("--baseline", default="none",
                   help="baselines trained beside BCS: none, or a comma list of "
                        + ", ".join(BASELINES))
    p.add_argument("--noise", type=float, default=1e-6,
                   help="sigma of the noise lr * sigma * N(0, 1) on the active connections")
    p.add_argument("--temperature", type=float, default=None,
                   help="the paper's Langevin noise sqrt(2 lr T) N(0, 1) instead of --noise")
    p.add_argument("--dense-epochs", type=int, default=None,
                   help="epochs of dense adversarial training (default --epochs; 0: none)")
    p.add_argument("--torch-bn", action="store_true",
                   help="BatchNorm stores PyTorch's unbiased running variance")
    p.add_argument("--table-attack", default="pgd20",
                   help="the attack of the summary table (eps = --eps)")
    p.set_defaults(arch="vgg16_bn", epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4,
                   schedule="multistep")
    return p


def check_options(p, args):
    """Refuse bad values with the value named, before anything is written."""
    if not 0 < args.connectivity <= 1:
        p.error(f"--connectivity must be a fraction in (0, 1], got {args.connectivity}")
    if not args.noise >= 0:
        p.error(f"--noise must be >= 0, got {args.noise}")
    if args.temperature is not None and not args.temperature >= 0:
        p.error(f"--temperature must be >= 0, got {args.temperature}")
    baselines = [] if args.baseline == "none" else args.baseline.split(",")
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        p.error(f"--baseline: unknown {unknown}; use none or a comma list of {BASELINES}")
    if args.dense_epochs is None:
        args.dense_epochs = args.epochs
    if "fixed" in baselines and args.dense_epochs == 0:
        p.error("--baseline fixed takes its mask from the dense network: --dense-epochs 0 "
                "leaves none")
    return baselines


def build_model(args, info):
    """The --arch network (vgg16_bn with the reference's 2048-256-256-C classifier) in --dtype
    on --backend, with the reference's BatchNorm unless --torch-bn."""
    model = common.build_model(args, info,
                               **(dict(classifier="hydra") if args.arch == "vgg16_bn" else {}))
    return model if args.torch_bn else bcs.reference_batch_norm(model)


def sgdw(args, model):
    return optim.SGDW(model.parameters(), lr=args.lr, momentum=args.momentum,
                      weight_decay=args.weight_decay)


def row(label, model, data, args):
    """The table row of a trained network: its connectivity, active count and accuracies."""
    counts = prune.sparsity(model)["global"]
    return dict(network=label, connectivity=counts["kept"] / counts["size"],
                active=counts["kept"], **common.measure(model, data, args))


def connectivity_history(directory, epochs, initial):
    """Per epoch (from the epoch checkpoints of the BCS phase): the active connections of every
    layer, their total and the connections rewired during the epoch; epoch 0 is the init."""
    records = [dict(epoch=0, active={name: int(drawn["active"].sum())
                                     for name, drawn in initial.items()}, rewired=0)]
    for epoch in range(1, epochs + 1):
        saved = checkpoint.read(directory / f"epoch_{epoch:03d}.h5")
        active = {name: int((saved["parameters"][name] > 0).sum()) for name in initial}
        rewired = int(saved["optimizer"]["rewired"])
        records.append(dict(epoch=epoch, active=active,
                            rewired=rewired - sum(r["rewired"] for r in records)))
    for record in records:
        record["total"] = sum(record["active"].values())
    return records


def plot_connectivity(out, records, sizes, budget):
    """connectivity.png: the density (active / size) of every layer per epoch, and the
    connections rewired per epoch."""
    epochs = [r["epoch"] for r in records]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, size in sizes.items():
        left.plot(epochs, [r["active"][name] / size for r in records], marker=".", label=name)
    left.plot(epochs, [r["total"] / sum(sizes.values()) for r in records], "k--", label="all")
    left.axhline(budget / sum(sizes.values()), color="gray", linestyle=":", label="budget")
    left.set(xlabel="epoch (0: init)", ylabel="active / size", yscale="log",
             title="density per layer")
    left.legend(fontsize="x-small")
    right.bar(epochs[1:], [r["rewired"] for r in records[1:]])
    right.set(xlabel="epoch", ylabel="connections", title="rewired connections per epoch")
    fig.tight_layout()
    path = out / "connectivity.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def rewiring_network(args, data):
    """The --arch network in rewiring form with the reference's initial draws (seed --seed):
    (model, the draws of ref.prune.bcs.initial_parameters, the budget)."""
    model = build_model(args, data["info"])
    initial = bcs.initial_parameters(model, bcs.reference_densities(model, args.connectivity),
                                     rng=args.seed)
    bcs.to_rewiring(model, initial)
    budget = bcs.global_budget([theta.size for theta in bcs.thetas(model).values()],
                               args.connectivity)
    return model, initial, budget


def baseline_masks(args, baselines, initial, budget, dense):
    """{baseline: masks}: random_fixed the initial connectivity topped up to the budget; fixed
    as many connections per layer at the largest |W| of the trained dense network."""
    random_fixed = bcs.random_fixed_masks(initial, budget, np.random.default_rng(args.seed))
    masks = {"random_fixed": random_fixed}
    if "fixed" in baselines:
        counts = {name: int(M.sum()) for name, M in random_fixed.items()}
        masks["fixed"] = bcs.magnitude_fixed_masks(prune.weights(dense), counts)
    return {name: masks[name] for name in baselines}


def main(argv=None):
    p = options()
    args = common.parse(p, PRESETS, argv)
    baselines = check_options(p, args)
    start = time.perf_counter()
    data = common.load_data(args)
    objective = common.make_objective(args)
    out = common.run_dir(args, f"{args.dataset}_{args.arch}_bcs_{args.objective}_c"
                               f"{args.connectivity:g}")
    networks, histories = {}, {}
    if args.dense_epochs:
        dense = networks["dense"] = build_model(args, data["info"])
        histories["dense"] = common.run_phase(args, out, "dense", dense, objective,
                                              sgdw(args, dense), data, args.dense_epochs,
                                              args.lr)
    model, initial, budget = rewiring_network(args, data)
    networks["bcs"] = model
    optimizer = bcs.RewiringSGDW(model, args.lr, budget, args.momentum, args.weight_decay,
                                 args.noise, args.temperature, rng=args.seed)
    histories["bcs"] = common.run_phase(args, out, "bcs", model, objective, optimizer, data,
                                        args.epochs, args.lr)
    for name, masks in baseline_masks(args, baselines, initial, budget,
                                      networks.get("dense")).items():
        net = networks[name] = bcs.to_fixed(build_model(args, data["info"]), initial, masks)
        histories[name] = common.run_phase(args, out, name, net, objective,
                                           prune.mask_optimizer(sgdw(args, net), net), data,
                                           args.epochs, args.lr)
    return summarise(args, out, data, networks, histories, initial, budget, start)


def summarise(args, out, data, networks, histories, initial, budget, start):
    """The table of the trained networks, final.h5, the evaluation of the dense and the final
    network, report.json and the plots; returns the report."""
    rows = [row(LABELS[name], net, data, args) for name, net in networks.items()]
    final, sparsity = common.save_final(out, networks["bcs"], args, to_dense=bcs.dense_form)
    sizes = {name: layer["size"] for name, layer in sparsity["counts"]["layers"].items()}
    records = connectivity_history(out / "bcs", len(histories["bcs"]), initial)
    evaluation = common.evaluate_networks(
        {**({"dense": networks["dense"]} if "dense" in networks else {}), "final": final},
        data, args)
    common.print_sparsity_table({"final.h5": sparsity["counts"]})
    common.print_table(
        f"BCS on {args.dataset}, {args.arch}, {args.objective}, connectivity "
        f"{args.connectivity:g} (budget {budget} of {sum(sizes.values())}): test accuracy at eps "
        f"{args.eps:.4g}", rows,
        [("network", "network", ""), ("connectivity", "connectivity", ".4f"),
         ("active", "active", "d"), ("clean", "clean", ".4f"),
         (args.table_attack, args.table_attack, ".4f")])
    report = dict(args=vars(args), table=rows, history=histories, evaluation=evaluation,
                  connectivity=dict(budget=budget, sizes=sizes, epochs=records),
                  sparsity=sparsity, time_s=time.perf_counter() - start)
    paths = [common.save_report(out, report), common.plot_phases(out, histories),
             common.plot_sparsity(out, {"final": sparsity["counts"]}),
             plot_connectivity(out, records, sizes, budget)]
    print(f"wrote {out / 'final.h5'} (connectivity {1 - sparsity['global']:.4f}), "
          + ", ".join(str(path) for path in paths))
    return report


if __name__ == "__main__":
    common.cli(main)
