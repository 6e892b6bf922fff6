"""HYDRA: prune a robust network by training importance scores with the robust objective, then
fine-tune the surviving weights (Sehwag et al., NeurIPS 2020; ref.prune.hydra).

    python examples/cifar_hydra.py --preset quick           # digits + small CNN, keep 0.1
    python examples/cifar_hydra.py --preset quick-certified # the same, IBP-certified training
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
Each phase keeps its best epoch by validation PGD accuracy (clean accuracy for natural and
smooth training, IBP-verified accuracy for crown_ibp and ibp). The defaults are the reference's
(TRADES beta 6, eps 0.031, alpha 0.0078, 10 steps; SGD 0.9, wd 1e-4, cosine per epoch;
100 / 20 / 100 epochs; lr 0.1 / 0.1 / 0.01).

Certified objectives (ref.certify; ALGORITHMS.md 10): crown_ibp and ibp train through the bounds
of a BN-free --arch (certified_cnn, cifar_model, cifar_model_large; another is refused up front)
at --eps with --kappa; the first phase that runs ramps eps over --eps-ramp-epochs (pretrain, or
prune with --from, as the reference's hidden-subnetwork command), the later ones start at --eps
(the reference's scripts: pure IBP there). smooth is stability training with --sigma. The
same objective serves every phase unless --<phase>-objective says otherwise; --from a naturally
trained checkpoint with one of them finds a certifiably robust subnetwork. When the last phase's
objective is certified, the table adds the accuracy verified at --eps by IBP and
CROWN-IBP (crown_ibp, ibp), the evaluation checks that no verified sample falls to an attack, and
certified.png shows verified accuracy against eps; for smooth, the pretrained and final networks'
smoothed certified accuracy at --radii (CERTIFY with --n0, --n, --smooth-alpha, --sigma) is
printed and plotted against the radius. report.json holds these under "certified".

The run directory then holds final.h5 (the pruned network as a plain dense --arch with W * M
baked in: ref.checkpoint.load(path, ref.models.<arch>(...)) with the report's arguments),
report.json (sparsity of final.h5, the evaluation of the pretrained and the final network as
examples/cifar_at.py writes it, the table), training.png (validation accuracy per epoch across
the phases) and sparsity.png (kept fraction per layer). The table compares the pretrained,
pruned and fine-tuned networks with LUP at the same keep (no fine-tuning). --resume continues
whichever phase was interrupted, bit for bit; finished phases are loaded, not retrained.
"""
import argparse
import copy
import time

import common

from ref import certify, checkpoint, evaluate, prune
from ref.prune import hydra, magnitude

PRESETS = {"quick": dict(dataset="digits", arch="small_cnn", width=16, epochs=10, batch_size=64,
                         lr=0.05, eps=0.1, alpha=0.025, steps=5, val_size=0.1, keep=0.1,
                         prune_epochs=5, finetune_epochs=8, finetune_lr=0.01,
                         eval_attacks="fgsm,pgd10,pgd50,apgd"),
           "quick-certified": dict(dataset="digits", arch="certified_cnn", width=8, epochs=10,
                                   batch_size=32, optimizer="adam", lr=1e-3, weight_decay=0.0,
                                   eps=0.05, alpha=0.0125, steps=10, objective="ibp", kappa=0.5,
                                   eps_ramp_epochs=5, val_size=0.1, keep=0.1, prune_epochs=5,
                                   finetune_epochs=5, finetune_lr=1e-3,
                                   eval_attacks="fgsm,pgd20")}
PHASE_OPTIONS = ("pretrain", "prune", "finetune")
EPS_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)      # certified.png's eps values, as fractions of --eps


def options():
    p = common.parser(__doc__.splitlines()[0], PRESETS)
    common.add_objective_options(p, default="trades", certified=True)
    common.add_optimizer_option(p)
    common.add_pruning_options(p)
    for phase in PHASE_OPTIONS:
        p.add_argument(f"--{phase}-objective", default=None,
                       choices=["natural", "at", "trades", "mart", *common.CERTIFIED],
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
    p.add_argument("--radii", type=radii, default=[0.0, 0.25, 0.5, 0.75],
                   help="smooth: the l2 radii of the certified accuracy (comma-separated)")
    p.add_argument("--n0", type=int, default=100, help="smooth: CERTIFY's selection draws")
    p.add_argument("--n", type=int, default=10000, help="smooth: CERTIFY's estimation draws")
    p.add_argument("--smooth-alpha", type=float, default=0.001,
                   help="smooth: CERTIFY's failure probability")
    p.set_defaults(epochs=100, lr=0.1, weight_decay=1e-4, schedule="hydra", eps=0.031,
                   alpha=0.0078, steps=10)
    return p


def radii(text):
    """--radii: comma-separated numbers >= 0."""
    try:
        values = [float(r) for r in text.split(",")]
        if all(r >= 0 for r in values):
            return values
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"radii must be numbers >= 0, got {text!r}")


def check_options(p, args):
    """p.error (exit status 2) for the values no run can use."""
    if not 0 < args.keep <= 1:
        p.error(f"--keep must be a fraction in (0, 1], got {args.keep}")
    for name in ("n0", "n"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.smooth_alpha < 1:
        p.error(f"--smooth-alpha must lie in (0, 1), got {args.smooth_alpha}")


def objective_name(args, phase):
    return getattr(args, f"{phase}_objective") or args.objective


def make_objectives(p, args, phases, steps_per_epoch):
    """{phase: objective} for the phases that run; the eps ramp only in the first. Settings an
    objective cannot use (--sigma, --kappa, --eps-ramp-epochs) are p.error."""
    try:
        return {phase: common.make_objective(args, objective_name(args, phase), steps_per_epoch,
                                             None if phase == phases[0] else 1)
                for phase in phases}
    except ValueError as error:
        p.error(str(error))


def check_bounds(model, objectives):
    """Refuse (SystemExit with ref.certify's message) a model the bounds of a bounded objective
    cannot pass, e.g. one with BatchNorm."""
    bounded = [o.name for o in objectives.values() if o.name in common.BOUNDED]
    if bounded:
        try:
            certify.bound_layers(model)
        except ValueError as error:
            raise SystemExit(f"--objective {bounded[0]}: {error}") from error


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
    check_options(p, args)
    start = time.perf_counter()
    data = common.load_data(args)
    dense = from_checkpoint(args, data)
    pretrain = dense is None
    if pretrain:
        dense = common.build_model(args, data["info"])
    plan = [phase for phase, epochs in (("pretrain", args.epochs if pretrain else 0),
                                        ("prune", args.prune_epochs),
                                        ("finetune", args.finetune_epochs)) if epochs > 0]
    objectives = make_objectives(p, args, plan, len(data["loader"]))
    check_bounds(dense, objectives)
    last = objective_name(args, plan[-1]) if plan else None
    verify = certify.crown.METHODS if last in common.BOUNDED else ()
    out = common.run_dir(args, f"{args.dataset}_{args.arch}_hydra_keep{args.keep:g}")
    histories = {}
    if "pretrain" in plan:
        histories["pretrain"] = common.run_phase(
            args, out, "pretrain", dense, objectives["pretrain"],
            common.make_optimizer(args, dense), data, args.epochs, args.lr)
    rows = [dict(network="pretrained", sparsity=0.0, **common.measure(dense, data, args, verify))]
    lup = copy.deepcopy(dense)
    prune.apply_masks(lup, magnitude.lup_masks(prune.weights(lup), args.keep))
    rows.append(dict(network="LUP, no fine-tuning", sparsity=prune.sparsity(lup)["global"][
        "sparsity"], **common.measure(lup, data, args, verify)))

    model = hydra.to_subnet(copy.deepcopy(dense), args.keep, args.budget, args.p)
    for phase, epochs, lr in (("prune", args.prune_epochs, args.lr),
                              ("finetune", args.finetune_epochs, args.finetune_lr)):
        if epochs == 0:
            continue
        hydra.set_phase(model, phase, freeze_bn=args.freeze_bn)
        histories[phase] = common.run_phase(args, out, phase, model, objectives[phase],
                                            common.make_optimizer(args, model, lr), data, epochs,
                                            lr)
        rows.append(dict(network=f"HYDRA {phase}d", sparsity=prune.sparsity(model)["global"][
            "sparsity"], **common.measure(model, data, args, verify)))

    final, sparsity = common.save_final(out, model, args)
    networks = {"pretrained": dense, "final": final}
    evaluation = common.evaluate_networks(networks, data, args, verify)
    common.print_sparsity_table({"final.h5": sparsity["counts"]})
    common.print_table(
        f"HYDRA on {args.dataset}, {args.arch}, keep {args.keep}: test accuracy at eps "
        f"{args.eps:.4g}", rows,
        [("network", "network", ""), ("sparsity", "sparsity", ".4f"), ("clean", "clean", ".4f"),
         (args.table_attack, args.table_attack, ".4f")]
        + [(method, f"{method} verified", ".4f") for method in verify])
    certified = (verified_curves(networks, data, args) if verify else
                 smoothed_accuracies(networks, data, args) if last == "smooth" else None)
    report = dict(args=vars(args), table=rows, history=histories, evaluation=evaluation,
                  sparsity=sparsity, **({} if certified is None else dict(certified=certified)),
                  time_s=time.perf_counter() - start)
    paths = [common.save_report(out, report), common.plot_phases(out, histories),
             common.plot_sparsity(out, {"final": sparsity["counts"]})]
    if certified is not None:
        paths.append(plot_certified(out, certified))
    print(f"wrote {out / 'final.h5'} (sparsity {sparsity['global']:.4f}), "
          + ", ".join(str(path) for path in paths))
    return report


def verified_curves(networks, data, args):
    """report["certified"] of a bounded objective: the test accuracy verified by IBP and
    CROWN-IBP at EPS_FRACTIONS of --eps, per network (printed)."""
    eps = [f * args.eps for f in EPS_FRACTIONS]
    result = dict(kind="verified", radius=eps, curves={})
    for name, network in networks.items():
        for method in certify.crown.METHODS:
            result["curves"][f"{name} {method}"] = [
                evaluate.verified_accuracy(network, data["test"], e, method) for e in eps]
    common.print_table("verified test accuracy against eps", [
        dict(network=label, **{f"{e:.4g}": acc for e, acc in zip(eps, values)})
        for label, values in result["curves"].items()],
        [("network", "network", "")] + [(f"{e:.4g}", f"eps {e:.4g}", ".4f") for e in eps])
    return result


def smoothed_accuracies(networks, data, args):
    """report["certified"] of smooth: per network, the clean test accuracy and the smoothed
    classifier's certified accuracy at --radii (CERTIFY, ref.certify.smoothed_certify; printed)."""
    x, y = data["test"]
    x = x.astype(args.dtype) / 255                                       # (N, c, h, w)
    result = dict(kind="smoothed", radius=args.radii, sigma=args.sigma, n0=args.n0, n=args.n,
                  alpha=args.smooth_alpha, clean={}, curves={})
    for name, network in networks.items():
        print(f"certifying the smoothed {name} network")
        predictions, radius = certify.smoothed_certify(network, x, args.sigma, args.n0, args.n,
                                                       args.smooth_alpha, args.seed)
        result["clean"][name] = evaluate.accuracy(network, data["test"])
        result["curves"][name] = certify.certified_accuracy(predictions, radius, y,
                                                            args.radii).tolist()
    common.print_table(
        f"smoothed certified test accuracy (sigma {args.sigma:g}, n {args.n}) against the l2 "
        f"radius", [dict(network=name, clean=result["clean"][name], **dict(zip(
            [f"{r:g}" for r in args.radii], values)))
            for name, values in result["curves"].items()],
        [("network", "network", ""), ("clean", "clean", ".4f")]
        + [(f"{r:g}", f"r {r:g}", ".4f") for r in args.radii])
    return result


def plot_certified(out, certified):
    """certified.png: each curve of report["certified"] against eps or the l2 radius."""
    xlabel = ("eps (L-inf, [0, 1] units)" if certified["kind"] == "verified" else
              f"l2 radius (sigma {certified['sigma']:g})")
    return common.plot_curves(out, {label: (certified["radius"], values) for label, values in
                                    certified["curves"].items()}, xlabel,
                              f"{certified['kind']} accuracy", "certified.png")


if __name__ == "__main__":
    common.cli(main)
