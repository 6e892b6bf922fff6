"""HYDRA: prune a robust network by training importance scores with the robust objective, then
fine-tune the surviving weights (Sehwag et al., NeurIPS 2020; ref.prune.hydra).

    python examples/cifar_hydra.py --preset quick           # digits + small CNN, keep 0.1
    python examples/cifar_hydra.py --backend gpu            # CIFAR-10, ResNet-18, keep 0.1

Phases (train.fit run directories under --out, default runs/<dataset>_<arch>_hydra_keep<k>):
    pretrain/   the dense network trained with --pretrain-objective for --epochs at --lr, or
                --from a checkpoint of the dense --arch (e.g. a naturally trained one: pruning it
                robustly finds a robust subnetwork hidden in a non-robust network)
    prune/      every conv and linear layer in subnet form with keep --keep (--budget), scores
                = sqrt(6 / fan_in) W / max|W|; only the scores and the BatchNorm affine
                parameters (frozen too with --freeze-bn) trained with --prune-objective for
                --prune-epochs at --lr
    finetune/   the mask fixed, the weights trained with --finetune-objective for
                --finetune-epochs at --finetune-lr, from the pretrained values
Each phase keeps its best epoch by validation PGD accuracy (clean accuracy for natural training).
The defaults are the reference's (TRADES beta 6, eps 0.031, alpha 0.0078, 10 steps; SGD 0.9,
wd 1e-4, cosine per epoch; 100 / 20 / 100 epochs; lr 0.1 / 0.1 / 0.01).

The run directory then holds final.h5 (the pruned network as a plain dense --arch with W * M
baked in: ref.checkpoint.load(path, ref.models.<arch>(...)) with the report's arguments),
report.json (sparsity of final.h5, the evaluation of the pretrained and the final network as
examples/cifar_at.py writes it, the table), training.png (validation accuracy per epoch across
the phases) and sparsity.png (kept fraction per layer). The table compares the pretrained,
pruned and fine-tuned networks with LUP at the same keep (no fine-tuning). --resume continues
whichever phase was interrupted, bit for bit; finished phases are loaded, not retrained.
"""
import copy
import time

import common

from ref import checkpoint, prune
from ref.prune import hydra, magnitude

PRESETS = {"quick": dict(dataset="digits", arch="small_cnn", width=16, epochs=10, batch_size=64,
                         lr=0.05, eps=0.1, alpha=0.025, steps=5, val_size=0.1, keep=0.1,
                         prune_epochs=5, finetune_epochs=8, finetune_lr=0.01,
                         eval_attacks="fgsm,pgd10,pgd50,apgd")}
PHASE_OPTIONS = ("pretrain", "prune", "finetune")


def options():
    p = common.parser(__doc__.splitlines()[0], PRESETS)
    common.add_objective_options(p, default="trades")
    common.add_pruning_options(p)
    for phase in PHASE_OPTIONS:
        p.add_argument(f"--{phase}-objective", default=None,
                       choices=["natural", "at", "trades", "mart"],
                       help=f"the {phase} phase's objective (default --objective)")
    p.add_argument("--keep", type=float, default=0.1, help="kept fraction of the weights")
    p.add_argument("--budget", default="uniform", choices=["uniform", "adaptive"],
                   help="uniform: --keep in every layer; adaptive: RBSN's ratios with --p")
    p.add_argument("--p", type=float, default=1.0, help="the adaptive budget's exponent")
    p.add_argument("--prune-epochs", type=int, default=20)
    p.add_argument("--finetune-epochs", type=int, default=100)
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--freeze-bn", action="store_true",
                   help="freeze the BatchNorm affine parameters in the prune phase")
    p.add_argument("--from", dest="source", default=None,
                   help="a checkpoint of the dense --arch to prune instead of the pretrain phase")
    p.set_defaults(epochs=100, lr=0.1, weight_decay=1e-4, schedule="hydra", eps=0.031,
                   alpha=0.0078, steps=10)
    return p


def objective_of(args, phase):
    return common.make_objective(args, getattr(args, f"{phase}_objective") or args.objective)


def from_checkpoint(args, data):
    """The dense network of --from, or None; refuses a checkpoint of another architecture before
    anything is written."""
    if args.source is None:
        return None
    model = common.build_model(args, data["info"])
    try:
        checkpoint.load(args.source, model)
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise SystemExit(f"--from {args.source}: it does not hold a dense {args.arch} for "
                         f"{args.dataset} (--width {args.width}): {error}") from error
    return model


def main(argv=None):
    p = options()
    args = common.parse(p, PRESETS, argv)
    if not 0 < args.keep <= 1:
        p.error(f"--keep must be a fraction in (0, 1], got {args.keep}")
    start = time.perf_counter()
    data = common.load_data(args)
    dense = from_checkpoint(args, data)
    out = common.run_dir(args, f"{args.dataset}_{args.arch}_hydra_keep{args.keep:g}")
    histories = {}
    if dense is None:
        dense = common.build_model(args, data["info"])
        histories["pretrain"] = common.run_phase(
            args, out, "pretrain", dense, objective_of(args, "pretrain"),
            common.make_optimizer(args, dense), data, args.epochs, args.lr)
    rows = [dict(network="pretrained", sparsity=0.0, **common.measure(dense, data, args))]
    lup = copy.deepcopy(dense)
    prune.apply_masks(lup, magnitude.lup_masks(prune.weights(lup), args.keep))
    rows.append(dict(network="LUP, no fine-tuning", sparsity=prune.sparsity(lup)["global"][
        "sparsity"], **common.measure(lup, data, args)))

    model = hydra.to_subnet(copy.deepcopy(dense), args.keep, args.budget, args.p)
    for phase, epochs, lr in (("prune", args.prune_epochs, args.lr),
                              ("finetune", args.finetune_epochs, args.finetune_lr)):
        if epochs == 0:
            continue
        hydra.set_phase(model, phase, freeze_bn=args.freeze_bn)
        histories[phase] = common.run_phase(args, out, phase, model, objective_of(args, phase),
                                            common.make_optimizer(args, model, lr), data, epochs,
                                            lr)
        rows.append(dict(network=f"HYDRA {phase}d", sparsity=prune.sparsity(model)["global"][
            "sparsity"], **common.measure(model, data, args)))

    final, sparsity = common.save_final(out, model, args)
    evaluation = common.evaluate_networks({"pretrained": dense, "final": final}, data, args)
    common.print_sparsity_table({"final.h5": sparsity["counts"]})
    common.print_table(
        f"HYDRA on {args.dataset}, {args.arch}, keep {args.keep}: test accuracy at eps "
        f"{args.eps:.4g}", rows,
        [("network", "network", ""), ("sparsity", "sparsity", ".4f"), ("clean", "clean", ".4f"),
         (args.table_attack, args.table_attack, ".4f")])
    report = dict(args=vars(args), table=rows, history=histories, evaluation=evaluation,
                  sparsity=sparsity, time_s=time.perf_counter() - start)
    paths = [common.save_report(out, report), common.plot_phases(out, histories),
             common.plot_sparsity(out, {"final": sparsity["counts"]})]
    print(f"wrote {out / 'final.h5'} (sparsity {sparsity['global']:.4f}), "
          + ", ".join(str(path) for path in paths))
    return report


if __name__ == "__main__":
    main()
