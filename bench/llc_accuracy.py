"""Accuracy of our LLC estimator on the DLN suite against Aoyagi's closed-form λ (not run by make test).

    .venv/bin/python bench/llc_accuracy.py                 # full suite, automatic calibration
    .venv/bin/python bench/llc_accuracy.py --quick         # harness check: 2,000 steps, 2 chains
    .venv/bin/python bench/llc_accuracy.py --step-size 5e-7   # a fixed ε instead (the published one)

Every case runs with the same settings (no per-case tuning): the published DLN protocol's n = 100,000,
batch 500, γ = 1, nβ = n / log n, and by default 4 chains × 50,000 steps averaging the last 10%
(burn-in 90%), with the step size chosen by the estimator's automatic calibration
(``SGLDConfig.step_size=None``). Prints a table and mean/max |relative error|, writes
bench/results/llc_accuracy.json. Targets (the issue): mean ≤ 3%, max ≤ 6%.
"""

from __future__ import annotations

import argparse
import sys
import time

import common  # sets sys.path for dln and services
import dln
import torch

TARGET_MEAN, TARGET_MAX = 0.03, 0.06


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=None, help="comma-separated case names or indices (default: all)")
    p.add_argument("--chains", type=int, default=None, help="chains per case (default 4; --quick 2)")
    p.add_argument("--steps", type=int, default=None, help="SGLD steps per chain (default 50000; --quick 2000)")
    p.add_argument("--burnin-frac", type=float, default=0.9,
                   help="fraction of steps discarded before averaging (default 0.9: average the last 10%%)")
    p.add_argument("--step-size", default=None,
                   help="fixed ε for every case ('published' = 5e-7); default: automatic calibration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precondition", choices=("kronecker", "diagonal", "none"), default=None,
                   help="the sampler's preconditioner (default: the estimator's own, kronecker)")
    common.add_run_flags(p, "llc_accuracy.json", quick="2,000 steps, 2 chains",
                         check="the accuracy targets are missed", threads=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    chains = args.chains or (2 if args.quick else 4)
    # 50,000: the deepest case (L5-deep) mixes slowly and needs ~30,000 steps to reach its
    # plateau (measured: 4 chains x 100,000 steps level off from 20% of the run on).
    steps = args.steps or (2000 if args.quick else 50_000)
    burnin = min(steps - 1, int(round(args.burnin_frac * steps)))
    if args.step_size is None:
        step_size = None
    else:
        step_size = dln.PUBLISHED_STEP_SIZE if args.step_size == "published" else float(args.step_size)
    nbeta = dln.default_nbeta(dln.N_EXAMPLES)
    cases = dln.select_cases(args.cases)
    settings = {
        "n": dln.N_EXAMPLES, "batch_size": dln.BATCH_SIZE, "localization": dln.LOCALIZATION, "nbeta": nbeta,
        "chains": chains, "steps": steps, "burnin": burnin, "draws": steps - burnin, "thin": 1,
        "step_size": "calibrated" if step_size is None else step_size, "seed": args.seed,
        "precondition": args.precondition or "the estimator's default",
        "loss": "MSE (mean over batch and outputs)", "inputs": "U(-10, 10)", "targets": "teacher(x), noise-free",
    }
    out = common.Path(args.out)
    payload = {"benchmark": "llc_accuracy", "machine": common.machine(), "settings": settings, "cases": []}
    eps_txt = "calibrated" if step_size is None else f"{step_size:g}"
    print(f"LLC accuracy on {len(cases)} DLNs: n={dln.N_EXAMPLES}, batch {dln.BATCH_SIZE}, γ={dln.LOCALIZATION:g}, "
          f"nβ=n/log n={nbeta:.1f}, {chains} chains × {steps} steps (average of the last {steps - burnin}), "
          f"ε {eps_txt}, torch threads {torch.get_num_threads()}")
    header = (f"{'case':14s} {'L':>1s} {'d':>6s} {'r':>3s} {'λ theory':>9s} {'λ̂ ± std':>17s} {'rel err':>8s} "
              f"{'drift':>6s} {'accept':>6s} {'ε':>8s} {'time s':>7s}")
    print(header)
    print("-" * len(header))
    began = time.perf_counter()
    for case in cases:
        config = common.make_config(chains=chains, steps=steps, burnin=burnin, step_size=step_size,
                                    seed=args.seed, nbeta=nbeta,
                                    **({"precondition": args.precondition} if args.precondition else {}))
        try:
            rec = common.run_ours(case, config)
        except NotImplementedError:
            print("automatic calibration is not implemented yet on this branch; pass --step-size EPS",
                  file=sys.stderr)
            return 2
        except Exception as err:  # a diverged or failed case is a result too
            rec = {"case": case.name, "widths": list(case.widths), "layers": case.layers, "rank": case.rank,
                   "d": case.num_parameters, "lambda_theory": case.theory_lambda(),
                   "error": f"{type(err).__name__}: {err}"}
            print(f"{case.name:14s} {case.layers:1d} {case.num_parameters:6d} {case.rank:3d} "
                  f"{rec['lambda_theory']:9.1f}  FAILED: {rec['error']}", flush=True)
        else:
            seg = rec["segment_llc"]
            rec["drift"] = (seg[-1] - seg[len(seg) // 2]) / abs(seg[-1]) if seg and seg[-1] else None
            est = f"{rec['lambda_hat']:.1f} ± {rec['std']:.1f}"
            eps = f"{rec['step_size']:.2e}" if rec["step_size"] else "?"
            acc = rec.get("acceptance")
            acc = f"{acc:.2f}" if isinstance(acc, float) and acc == acc else "—"
            print(f"{case.name:14s} {case.layers:1d} {case.num_parameters:6d} {case.rank:3d} "
                  f"{rec['lambda_theory']:9.1f} {est:>17s} {100 * rec['rel_err']:+7.1f}% "
                  f"{100 * rec['drift']:+5.1f}% {acc:>6s} {eps:>8s} {rec['wall_seconds']:7.1f}", flush=True)
        payload["cases"].append(rec)
        common.write_json(out, payload, final=False)
    total = time.perf_counter() - began
    errs = [abs(r["rel_err"]) for r in payload["cases"] if "rel_err" in r]
    failed = [r["case"] for r in payload["cases"] if "error" in r]
    summary = {
        "total_wall_seconds": total,
        "cases_run": len(payload["cases"]),
        "cases_failed": failed,
        "mean_abs_rel_err": sum(errs) / len(errs) if errs else None,
        "max_abs_rel_err": max(errs) if errs else None,
        "target_mean_abs_rel_err": TARGET_MEAN,
        "target_max_abs_rel_err": TARGET_MAX,
    }
    met = bool(errs) and not failed and summary["mean_abs_rel_err"] <= TARGET_MEAN and summary["max_abs_rel_err"] <= TARGET_MAX
    summary["targets_met"] = met
    payload["summary"] = summary
    common.write_json(out, payload)
    print("-" * len(header))
    if errs:
        print(f"mean |rel err| {100 * summary['mean_abs_rel_err']:.2f}% (target ≤ {100 * TARGET_MEAN:.0f}%), "
              f"max |rel err| {100 * summary['max_abs_rel_err']:.2f}% (target ≤ {100 * TARGET_MAX:.0f}%): "
              f"{'targets met' if met else 'targets NOT met'}")
    if failed:
        print(f"failed cases: {', '.join(failed)}")
    print("drift = (λ̂ over the last 10% of steps − λ̂ over steps 50-60%) / λ̂(last 10%): a trace still "
          "climbing shows a large positive drift; accept = mean MALA acceptance of the SGLD step after burn-in")
    print(f"total wall time {total:.0f} s; results in {out}")
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
