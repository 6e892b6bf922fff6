"""Dense robust training (natural, Madry AT, TRADES, MART) and its evaluation.

    python examples/cifar_at.py --preset quick          # digits + small CNN, ~1-2 min on 2 cores
    python examples/cifar_at.py --objective trades --arch resnet18 --backend gpu
    GPU_EMULATOR=1 python examples/cifar_at.py --preset quick --backend gpu  # CPU emulator: slow

On the same seed and dtype, --backend numpy and --backend gpu give the same run (float64: up to
rounding; float32: within float tolerance); metrics, report.json and checkpoints are host values,
and a checkpoint of either backend loads on the other.

The run directory (--out, default runs/<dataset>_<arch>_<objective>) receives a checkpoint per
epoch (epoch_<e>.h5, last.h5, and best.h5 by validation PGD accuracy, or clean accuracy for
natural training), report.json, training.png and accuracy_vs_eps.png. The final evaluation of
best.h5 on the test images (clean, FGSM, PGD-k, APGD-CE and the sanity checks) is printed.
--resume continues an interrupted run from <out>/last.h5 bit for bit.
"""
import time

import common
from ref import checkpoint, train

PRESETS = {"quick": dict(dataset="digits", arch="small_cnn", width=16, epochs=8, batch_size=64,
                         lr=0.05, schedule="cosine", eps=0.1, alpha=0.025, steps=5, val_size=0.1,
                         eval_attacks="fgsm,pgd10,pgd50,apgd")}


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0], PRESETS)
    common.add_objective_options(p)
    args = common.parse(p, PRESETS, argv)
    out = common.run_dir(args, f"{args.dataset}_{args.arch}_{args.objective}")
    start = time.perf_counter()
    data = common.load_data(args)
    model = common.build_model(args, data["info"])
    history = train.fit(
        model, common.make_objective(args), common.make_optimizer(args, model),
        common.make_schedule(args), data["loader"], args.epochs, out_dir=out,
        resume=args.resume or None, val_data=data["val"],
        val_attack=dict(eps=args.eps, alpha=args.alpha, steps=args.steps),
        select="val_clean_acc" if args.objective == "natural" else "val_robust_acc",
        seed=args.seed, metadata=vars(args))
    best = checkpoint.load(out / "best.h5", model)["best"]
    print(f"evaluating best.h5: epoch {best['epoch']}, {best['metric']} {best['value']:.4f}")
    result = train.evaluate(model, data["test"], eps=args.eps,
                            attacks=args.eval_attacks.split(","), seed=args.seed)
    report = dict(args=vars(args), history=history, best=best, evaluation=result,
                  time_s=time.perf_counter() - start)
    paths = [common.save_report(out, report), common.plot_history(out, history),
             common.plot_eps_curve(out, result)]
    print("wrote " + ", ".join(str(path) for path in paths))
    return report


if __name__ == "__main__":
    common.cli(main)
