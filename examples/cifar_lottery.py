"""The adversarial lottery ticket (iterative magnitude pruning with rewinding) and inverse weights
inheritance (IWI), as in "Achieving Adversarial Robustness via Sparsity".

    python examples/cifar_lottery.py --preset quick         # digits + small CNN, a few minutes
    python examples/cifar_lottery.py --arch resnet18 --rate 0.2 --rounds 10 --backend gpu

Round r = 0 .. R (R = --rounds) rewinds the network to its initial weights theta_0, attaches the
masks of round r and trains adversarially (--objective, --epochs, --lr) with the masks fixed;
between rounds ref.prune.lottery.prune_remaining removes --rate of the remaining weights with one
global ranking of |W|. Round R trains the ticket. IWI then gives the dense network the trained
ticket's weights (pruned positions: --iwi-fill zero or theta_0) and trains all of them
adversarially (--iwi-epochs).

The run directory (--out, default runs/<dataset>_<arch>_lottery) holds init.h5 (theta_0),
round_<r>/ and iwi/ (train.fit run directories: checkpoints per epoch, best.h5), report.json,
training.png, sparsity.png and weights_<phase>.png. --resume continues whatever was interrupted
(finished phases are loaded, not retrained). The table at the end gives each phase's nominal and
measured sparsity with clean and PGD test accuracy.
"""
import time

import common
from ref import checkpoint, prune
from ref.prune import lottery, sensitivity

PRESETS = {"quick": dict(dataset="digits", arch="small_cnn", width=16, epochs=6, batch_size=64,
                         lr=0.05, schedule="cosine", eps=0.1, alpha=0.025, steps=5, val_size=0.1,
                         rounds=3, rate=0.5, iwi_epochs=6)}


def initial_state(args, out, model):
    """theta_0: the model's initial state, written to init.h5 (read back on --resume)."""
    path = out / "init.h5"
    if args.resume and path.exists():
        common.check_resumable(path, args)
        checkpoint.load(path, model)
    else:
        checkpoint.save(path, model, metadata=vars(args))
    return {name: value.copy() for name, value in model.state_dict().items()}


def record(phase, model, data, args, nominal):
    """The table row, sparsity report and kept-weight statistics of a trained phase."""
    report = prune.sparsity(model, **common.prunable(args))
    row = dict(phase=phase, nominal=nominal, sparsity=report["global"]["sparsity"],
               **common.measure(model, data, args))
    return row, report, sensitivity.layer_statistics(model, **common.prunable(args))


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0], PRESETS)
    common.add_objective_options(p)
    common.add_pruning_options(p)
    p.add_argument("--rate", type=float, default=0.2,
                   help="fraction of the remaining weights each round prunes")
    p.add_argument("--rounds", type=int, default=5, help="pruning rounds (R)")
    p.add_argument("--iwi-fill", default="zero", choices=["zero", "init"],
                   help="what the dense network holds at the ticket's pruned positions")
    p.add_argument("--iwi-epochs", type=int, default=None, help="IWI training (--epochs)")
    args = common.parse(p, PRESETS, argv)
    nominal = lottery.round_sparsities(args.rate, args.rounds)
    out = common.run_dir(args, f"{args.dataset}_{args.arch}_lottery")
    start = time.perf_counter()
    data = common.load_data(args)
    objective = common.make_objective(args)
    model = common.build_model(args, data["info"])
    theta_0 = initial_state(args, out, model)
    masks = {name: model.parameters()[0].xp.ones_like(W)
             for name, W in prune.weights(model, **common.prunable(args)).items()}
    rows, reports, statistics, histories = [], {}, {}, {}
    for r in range(args.rounds + 1):
        phase = f"round_{r}"
        lottery.rewind(model, theta_0, masks)
        optimizer = prune.mask_optimizer(common.make_optimizer(args, model), model)
        histories[phase] = common.run_phase(args, out, phase, model, objective, optimizer, data,
                                            args.epochs, args.lr)
        row, reports[phase], statistics[phase] = record(phase, model, data, args, nominal[r])
        rows.append(row)
        if r < args.rounds:
            masks = lottery.prune_remaining(prune.effective_weights(model,
                                                                    **common.prunable(args)),
                                            args.rate)
    dense = common.build_model(args, data["info"])
    dense.load_state_dict(lottery.inherited_state(model.state_dict(), masks, theta_0,
                                                  args.iwi_fill))
    histories["iwi"] = common.run_phase(args, out, "iwi", dense, objective,
                                        common.make_optimizer(args, dense), data,
                                        args.iwi_epochs or args.epochs, args.lr)
    row, reports["iwi"], statistics["iwi"] = record("iwi", dense, data, args, 0.0)
    rows.append(row)
    common.print_table(
        f"lottery ticket: rate {args.rate} x {args.rounds} rounds, IWI fill {args.iwi_fill}; "
        f"test accuracy at eps {args.eps:.4g}", rows,
        [("phase", "phase", ""), ("nominal", "nominal", ".4f"), ("sparsity", "sparsity", ".4f"),
         ("clean", "clean", ".4f"), (args.table_attack, args.table_attack, ".4f")])
    common.print_sparsity_table(reports)
    report = dict(args=vars(args), table=rows, sparsity=reports, statistics=statistics,
                  history=histories, time_s=time.perf_counter() - start)
    paths = [common.save_report(out, report), common.plot_phases(out, histories),
             common.plot_sparsity(out, {k: v for k, v in reports.items() if k != "iwi"})]
    ticket = f"round_{args.rounds}"
    paths += [common.plot_weight_statistics(out, statistics[k], k)
              for k in ("round_0", ticket, "iwi")]
    print("wrote " + ", ".join(str(path) for path in paths))
    return report


if __name__ == "__main__":
    common.cli(main)
