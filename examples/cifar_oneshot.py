"""One-shot pruning of an adversarially trained network: LUP, GUP, FP and NS at a list of keep
ratios, each measured before and after adversarial fine-tuning with the mask fixed.

    python examples/cifar_oneshot.py --preset quick          # digits + small CNN, a few minutes
    python examples/cifar_oneshot.py --arch vgg16_bn --keep 0.5,0.1,0.05 --backend gpu

Phases (each a train.fit run directory under --out, default runs/<dataset>_<arch>_oneshot):
    pretrain/       dense adversarial training (--objective, --epochs, --lr), or --from a
                    checkpoint of the dense --arch (e.g. examples/cifar_at.py's best.h5)
    pretrain_ns/    the same training with network slimming's L1 term s sum |gamma| (--ns-s);
                    NS prunes this network (only when ns is among --methods)
    <method>_keep<k>/  the pruned network fine-tuned adversarially (--finetune-epochs,
                    --finetune-lr); ref.prune.mask_optimizer keeps the pruned weights at zero
Methods (ref.prune): lup / gup (magnitude, per layer / global: keep is the kept fraction of the
prunable weights, --layers), fp / ns (filters by L1 norm / channels by |BN gamma|: keep is the
kept fraction of the prunable channels, so their weight sparsity is lower; thin() gives the
physically smaller network, whose size the table reports).
The run directory also holds report.json (the table, each model's sparsity and kept-weight
statistics), training.png, sparsity.png and weights_<method>_keep<k>.png. --resume continues
whatever was interrupted; finished phases are loaded, not retrained.
"""
import time

import common

from ref import checkpoint, prune
from ref.prune import magnitude, sensitivity, structured

PRESETS = {"quick": dict(dataset="digits", arch="small_cnn", width=16, epochs=10, batch_size=64,
                         lr=0.05, schedule="cosine", eps=0.1, alpha=0.025, steps=5, val_size=0.1,
                         keep="0.5,0.1", finetune_epochs=8, finetune_lr=0.05)}
METHODS = ("lup", "gup", "fp", "ns")


def prune_model(method, model, keep, args):
    """Attach the method's masks; returns the channel masks of fp / ns (for thin), else None."""
    if method in ("lup", "gup"):
        rule = magnitude.lup_masks if method == "lup" else magnitude.gup_masks
        prune.apply_masks(model, rule(prune.weights(model, **common.prunable(args)), keep))
        return None
    select = structured.fp_channel_masks if method == "fp" else structured.ns_channel_masks
    return structured.prune_channels(model, select(model, keep))


def pretrained(args, out, data, objective, name, source):
    """A dense network trained in phase `name` (or loaded from `source`); its history."""
    model = common.build_model(args, data["info"])
    if source:
        checkpoint.load(source, model)
        return model, []
    return model, common.run_phase(args, out, name, model, objective,
                                   common.make_optimizer(args, model), data, args.epochs, args.lr)


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0], PRESETS)
    common.add_objective_options(p)
    common.add_pruning_options(p)
    p.add_argument("--methods", default=",".join(METHODS), help=f"any of {', '.join(METHODS)}")
    p.add_argument("--keep", default="0.5,0.1", help="kept fractions, comma separated")
    p.add_argument("--finetune-epochs", type=int, default=20)
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--ns-s", type=float, default=1e-4, help="network slimming's L1 weight s")
    p.add_argument("--from", dest="source", default=None,
                   help="a dense --arch checkpoint to prune instead of the pretrain phase")
    args = common.parse(p, PRESETS, argv)
    methods = args.methods.split(",")
    if not set(methods) <= set(METHODS):
        p.error(f"--methods: unknown {sorted(set(methods) - set(METHODS))}")
    keeps = [prune.budgets.check_keep(float(k), "--keep") for k in args.keep.split(",")]
    out = common.run_dir(args, f"{args.dataset}_{args.arch}_oneshot")
    start = time.perf_counter()
    data = common.load_data(args)
    objective = common.make_objective(args)
    dense, history = pretrained(args, out, data, objective, "pretrain", args.source)
    histories = {"pretrain": history}
    sources = {"dense": dense}
    if "ns" in methods:
        sources["ns"], histories["pretrain_ns"] = pretrained(
            args, out, data, structured.SlimmingObjective(objective, args.ns_s), "pretrain_ns",
            None)
    rows = [dict(method="dense", keep=None, **common.measure(dense, data, args),
                 sparsity=prune.sparsity(dense, **common.prunable(args))["global"]["sparsity"])]
    reports, statistics = {}, {}
    for method in methods:
        for keep in keeps:
            phase = f"{method}_keep{keep:g}"
            model = common.build_model(args, data["info"])
            model.load_state_dict(sources["ns" if method == "ns" else "dense"].state_dict())
            channels = prune_model(method, model, keep, args)
            before = common.measure(model, data, args)
            optimizer = prune.mask_optimizer(
                common.make_optimizer(args, model, args.finetune_lr), model)
            histories[phase] = common.run_phase(args, out, phase, model, objective, optimizer,
                                                data, args.finetune_epochs, args.finetune_lr)
            reports[phase] = prune.sparsity(model, **common.prunable(args))
            statistics[phase] = sensitivity.layer_statistics(model, **common.prunable(args))
            after = common.measure(model, data, args)
            rows.append(dict(
                method=method, keep=keep, sparsity=reports[phase]["global"]["sparsity"],
                **{f"{k}_pruned": v for k, v in before.items()}, **after,
                parameters=None if channels is None else sum(
                    t.size for t in structured.thin(model, channels).parameters())))
    attack = args.table_attack
    common.print_table(
        f"one-shot pruning of {args.arch} on {args.dataset}: test accuracy at eps {args.eps:.4g} "
        f"after pruning and after {args.finetune_epochs} epochs of fine-tuning", rows,
        [("method", "method", ""), ("keep", "keep", "g"), ("sparsity", "sparsity", ".4f"),
         ("clean_pruned", "clean pruned", ".4f"), (f"{attack}_pruned", f"{attack} pruned",
                                                   ".4f"),
         ("clean", "clean tuned", ".4f"), (attack, f"{attack} tuned", ".4f"),
         ("parameters", "thin params", "d")])
    common.print_sparsity_table(reports)
    report = dict(args=vars(args), table=rows, sparsity=reports, statistics=statistics,
                  history=histories, time_s=time.perf_counter() - start)
    paths = [common.save_report(out, report), common.plot_phases(out, histories),
             common.plot_sparsity(out, reports)]
    paths += [common.plot_weight_statistics(out, statistics[k], k) for k in statistics]
    print("wrote " + ", ".join(str(path) for path in paths))
    return report


if __name__ == "__main__":
    common.cli(main)
