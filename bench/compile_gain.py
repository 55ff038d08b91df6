"""What compiling the chains' gradient buys per chain-step, against eager, the bare
forward+backward floor and devinterp 1.3.2 (not run by make test).

    .venv/bin/python bench/compile_gain.py                   # the vs_devinterp suite + speed-864, 2 threads
    .venv/bin/python bench/compile_gain.py --cases L2-small --no-devinterp --steps 300   # a quick look

Settings as bench/vs_devinterp.py's: 4 chains, batch 500, ε = 5e-7, γ = 1, nβ = n / log n, seed 0,
one forward+backward per chain-step (accept_every = 0). For each case, side by side in one
process, alternating, median of ``--reps``:

- eager: ``run_sgld`` as an audit shorter than ~10 s of sampling runs it;
- compiled: ``run_sgld`` with a compiler that compiled before the timed run (what an audit runs
  at once its eager sampling passed lambdascope.llc.compiled.COMPILE_AFTER_SECONDS); the compile's
  own seconds are listed apart (a one-time cost per estimate);
- floor: the bare ``mse(model(x)).backward()`` of one batch through the nn.Module, × chains;
- devinterp: its sampling call at the same settings (bench/devinterp_worker.py, plain DataLoader),
  one run per case, its wall time per chain-step.

λ̂ (over the second half of each run, same seed) is printed for eager, compiled and devinterp. The
compiled move draws the chains' noise from Philox (lambdascope.llc.noise) where eager draws it from
each chain's Mersenne Twister, so the two are different chains of one sampler: their λ̂ must agree
within the chains' spread ("agree": the difference within 2 standard errors of the two means), and
both devinterp's (bench/vs_devinterp.py checks that spread case by case). That the compiled
gradient and move compute the eager ones' numbers is tested (tests/unit/test_compiled_gradient.py,
with the same noise on both sides).

Writes bench/results/compile_gain.json.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import common  # sets sys.path for dln and the product
import dln
import torch
import vs_devinterp

from lambdascope.llc.compiled import GradientCompiler
from lambdascope.llc.sgld import run_sgld

CHAINS = 4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=None, help="comma-separated case names (default: speed-864 and the suite)")
    p.add_argument("--steps", type=int, default=2000, help="steps per chain per timed run (default 2000)")
    p.add_argument("--reps", type=int, default=3, help="alternating repetitions (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--no-devinterp", action="store_true")
    p.add_argument("--out", default=str(common.RESULTS / "compile_gain.json"))
    return p.parse_args(argv)


def sample(case_problem, steps: int, compiler: GradientCompiler | None,
           chains: int = CHAINS) -> tuple[float, torch.Tensor]:
    """(seconds of one sampling run at the benchmark's settings, each chain's λ̂ over the second half)."""
    model, x, y = case_problem
    with torch.no_grad():
        init_loss = float(dln.mse(model(x), y))
    trace = run_sgld(model, x, y, dln.mse, chains=chains, steps=steps, step_size=dln.PUBLISHED_STEP_SIZE,
                     localization=dln.LOCALIZATION, nbeta=dln.default_nbeta(), batch_size=dln.BATCH_SIZE, seed=0,
                     accept_every=0, compiler=compiler)
    kept = trace.losses[:, steps // 2:].double()
    return trace.seconds, dln.default_nbeta() * (kept.mean(dim=1) - init_loss)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.cases or ",".join([dln.SPEED_CASE.name, *(c.name for c in dln.CASES)])
    cases = [dln.case_by_name(n.strip()) for n in names.split(",") if n.strip()]
    if not args.no_devinterp:
        vs_devinterp.ensure_venv()
    rows = []
    print(f"{CHAINS} chains × {args.steps} steps, batch {dln.BATCH_SIZE}, ε {dln.PUBLISHED_STEP_SIZE:g}, "
          f"{args.threads} threads; ms per chain-step, median of {args.reps}")
    print(f"{'case':14s} {'d':>6s} {'floor':>7s} {'eager':>7s} {'compiled':>8s} {'gain':>6s} {'compile s':>9s} "
          f"{'λ̂ eager':>9s} {'compiled':>9s} {'agree':>5s} {'devinterp':>9s} "
          f"{'compiled/floor':>14s} {'devinterp':>9s} {'vs eager':>8s} {'vs compiled':>11s}")
    for case in cases:
        problem = dln.make_problem(case)
        compiler = GradientCompiler(after_seconds=0.0)
        sample(problem, 20, compiler)  # compiles (or fails) here, outside the timings
        sample(problem, 20, None)  # eager warm-up
        eager, compiled, floor = [], [], []
        for _ in range(args.reps):
            eager_s, eager_llc = sample(problem, args.steps, None)
            compiled_s, compiled_llc = sample(problem, args.steps, compiler)
            se = ((eager_llc.var() + compiled_llc.var()) / CHAINS).sqrt().item()
            agree = abs(eager_llc.mean().item() - compiled_llc.mean().item()) <= 2 * se
            eager_llc, compiled_llc = eager_llc.mean().item(), compiled_llc.mean().item()
            eager.append(eager_s)
            compiled.append(compiled_s)
            floor.append(vs_devinterp.floor_ms(case, problem, args.threads, passes=args.steps))
        per = 1e3 / (CHAINS * args.steps)
        row = {"case": case.name, "d": case.num_parameters, "widths": list(case.widths),
               "eager_ms": statistics.median(eager) * per, "compiled_ms": statistics.median(compiled) * per,
               "floor_ms": statistics.median(floor), "compile_state": compiler.state,
               "compile_seconds": compiler.compile_seconds, "compile_summary": compiler.summary(),
               "eager_llc": eager_llc, "compiled_llc": compiled_llc, "llc_difference_se": se, "llc_agree": agree,
               "runs": {"eager_s": eager, "compiled_s": compiled, "floor_ms": floor}}
        row["gain"] = row["eager_ms"] / row["compiled_ms"]
        row["compiled_vs_floor"] = row["compiled_ms"] / row["floor_ms"]
        if not args.no_devinterp:
            burnin = args.steps // 2
            dev = vs_devinterp.run_devinterp(case, chains=CHAINS, burnin=burnin, draws=args.steps - burnin,
                                             step_size=dln.PUBLISHED_STEP_SIZE, nbeta=dln.default_nbeta(), seed=0,
                                             threads=args.threads, loader="plain")
            row["devinterp"] = dev
            if "error" not in dev:
                row["devinterp_ms"] = dev["ms_per_chain_step"]
                row["speedup_eager"] = dev["ms_per_chain_step"] / row["eager_ms"]
                row["speedup_compiled"] = dev["ms_per_chain_step"] / row["compiled_ms"]
        rows.append(row)
        dv = row.get("devinterp_ms")
        print(f"{case.name:14s} {case.num_parameters:6d} {row['floor_ms']:7.3f} {row['eager_ms']:7.3f} "
              f"{row['compiled_ms']:8.3f} {row['gain']:5.2f}× {row['compile_seconds']:9.1f} "
              f"{eager_llc:9.1f} {compiled_llc:9.1f} {'yes' if agree else 'NO':>5s} {vs_devinterp.fmt((row.get('devinterp') or {}).get('lambda_hat'), '9.1f')} "
              f"{row['compiled_vs_floor']:13.2f}× "
              f"{vs_devinterp.fmt(dv, '9.3f')} {vs_devinterp.fmt(row.get('speedup_eager'), '7.1f')}× "
              f"{vs_devinterp.fmt(row.get('speedup_compiled'), '10.1f')}×", flush=True)
        common.write_json(Path(args.out), {"benchmark": "compile_gain", "machine": common.machine(),
                                           "argv": vars(args), "rows": rows}, final=False)
    common.write_json(Path(args.out), {"benchmark": "compile_gain", "machine": common.machine(),
                                       "argv": vars(args), "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
