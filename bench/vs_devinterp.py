"""lambdascope vs devinterp 1.3.2, side by side in one run, on the DLN suite (not run by make test).

    .venv/bin/python bench/vs_devinterp.py --setup-only   # create bench/.venv-devinterp only
    .venv/bin/python bench/vs_devinterp.py --quick        # harness check
    .venv/bin/python bench/vs_devinterp.py                # full comparison (threads 1 and 2)

devinterp runs in its own virtual environment, bench/.venv-devinterp (devinterp==1.3.2 and the
same torch==2.13.0 CPU wheel; created on first use, gitignored, never a dependency of the
product), through bench/devinterp_worker.py in a subprocess. Our estimator runs in this process.
Both get the same DLN (checked by a hash of x, y and w*), the same ε, γ, nβ, chains, steps,
burn-in, batch size and torch thread count; everything devinterp would default is set:

- nβ = n / log n with n = 100,000 (devinterp's default would use the batch size);
- burn-in discarded, then every step kept (num_steps_bw_draws=1; devinterp's default burn-in is 0);
- init_loss = L_n(w*) on the full data set (0 here; passed as 1e-30, since devinterp re-measures a
  falsy init_loss on a few minibatches);
- one chain after another in one process (cores=1), no progress bar (verbose=False);
- our MALA acceptance scoring is switched off (accept_every=0) so both do one forward+backward
  per chain-step; the speed section also times our default (accept_every=10).

For each case and thread count it reports λ̂ ± std (std over chains) of each, whether they agree
(|Δ| ≤ sqrt(std_ours² + std_devinterp²), the combined chain spread), wall times, the speedup
(devinterp wall / ours wall) and ours relative to the bare forward+backward floor: chains × steps
plain forward+backward passes of one batch of 500 through the same nn.Module (timed over up to
--floor-passes passes and scaled), measured in the same run with the same threads.
Writes bench/results/vs_devinterp.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # sets sys.path for dln and services
import dln
import torch

VENV = common.BENCH / ".venv-devinterp"
VENV_PY = VENV / "bin" / "python"
WORKER = common.BENCH / "devinterp_worker.py"
DEVINTERP_PIN = "devinterp==1.3.2"


def ensure_venv() -> None:
    """Create bench/.venv-devinterp with devinterp 1.3.2 and our exact torch (CPU) if missing."""
    torch_pin = "torch==" + torch.__version__.split("+")[0]
    if not VENV_PY.exists():
        print(f"creating {VENV} ({DEVINTERP_PIN}, {torch_pin}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        # The CPU torch wheel lies in /opt/wheels on these machines (as for the product's venv);
        # the same torch pin keeps pip from reaching for another build. Elsewhere pip resolves
        # torch from its index, and the check below refuses a CUDA build.
        links = ["--find-links", "/opt/wheels"] if Path("/opt/wheels").is_dir() else []
        subprocess.run([str(VENV_PY), "-m", "pip", "install", "-q", *links, torch_pin, DEVINTERP_PIN], check=True)
    probe = subprocess.run(
        [str(VENV_PY), "-c", "import importlib.metadata as m, torch; "
         "print(m.version('devinterp'), torch.__version__, torch.cuda.is_available(), "
         "any(d.metadata['Name'].startswith('nvidia') for d in m.distributions()))"],
        check=True, capture_output=True, text=True)
    dv, tv, cuda, nvidia = probe.stdout.split()
    if dv != DEVINTERP_PIN.split("==")[1] or tv != torch.__version__ or nvidia == "True":
        raise SystemExit(f"{VENV}: devinterp {dv}, torch {tv}, nvidia packages {nvidia}; expected "
                         f"{DEVINTERP_PIN}, torch {torch.__version__} and no CUDA packages. Remove it and rerun.")


def floor_ms(case: dln.Case, problem, threads: int, passes: int) -> float:
    """ms per bare forward+backward of one batch (nn.Module, MSE, .backward()) at ``threads``."""
    torch.set_num_threads(threads)
    model, x, y = problem
    xb, yb = x[: dln.BATCH_SIZE], y[: dln.BATCH_SIZE]
    for _ in range(min(50, passes)):
        model.zero_grad(set_to_none=True)
        dln.mse(model(xb), yb).backward()
    t0 = time.perf_counter()
    for _ in range(passes):
        model.zero_grad(set_to_none=True)
        dln.mse(model(xb), yb).backward()
    ms = 1e3 * (time.perf_counter() - t0) / passes
    model.zero_grad(set_to_none=True)
    return ms


def run_devinterp(case: dln.Case, *, chains, burnin, draws, step_size, nbeta, seed, threads, loader) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "devinterp.json"
        cmd = [str(VENV_PY), str(WORKER), "--case", json.dumps(dln.case_to_dict(case)), "--chains", str(chains), "--burnin", str(burnin),
               "--draws", str(draws), "--step-size", repr(step_size), "--localization", repr(dln.LOCALIZATION),
               "--nbeta", repr(nbeta), "--batch-size", str(dln.BATCH_SIZE), "--seed", str(seed),
               "--threads", str(threads), "--loader", loader, "--out", str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1] if (proc.stderr or proc.stdout)
                    else f"exit {proc.returncode}"}
        return json.loads(out.read_text())


def run_ours(case: dln.Case, problem, *, chains, steps, burnin, step_size, nbeta, seed, threads,
             accept_every=0) -> dict:
    torch.set_num_threads(threads)
    config = common.make_config(chains=chains, steps=steps, burnin=burnin, step_size=step_size, seed=seed,
                                nbeta=nbeta, accept_every=accept_every)
    try:
        return common.run_ours(case, config, problem=problem)
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}


def compare(ours: dict, dev: dict, floor: float, chains: int, steps: int) -> dict:
    row = {}
    if "error" not in ours and "error" not in dev:
        delta = ours["lambda_hat"] - dev["lambda_hat"]
        spread = math.hypot(ours["std"], dev["std"])
        row.update(delta=delta, combined_spread=spread, agree=abs(delta) <= spread,
                   z_stderr=abs(delta) / (spread / math.sqrt(chains)) if spread > 0 else math.inf)
    if "error" not in ours:
        row["ours_vs_floor"] = ours["wall_seconds"] / (floor * 1e-3 * chains * steps)
        row["ours_sampling_vs_floor"] = ours["ms_per_chain_step"] / floor
    if "error" not in ours and "error" not in dev:
        row["speedup"] = dev["wall_seconds"] / ours["wall_seconds"]
    if "error" not in dev:
        row["devinterp_vs_floor"] = dev["ms_per_chain_step"] / floor
    return row


def fmt(x, spec):
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=None, help="comma-separated case names or indices (default: all)")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="steps per chain (default 2000; --quick 300)")
    p.add_argument("--burnin-frac", type=float, default=0.5, help="burn-in fraction (default 0.5)")
    p.add_argument("--step-size", default="published",
                   help="ε for both: a number, 'published' (5e-7, the default) or 'calibrated' (ours "
                        "calibrates per case, devinterp gets the ε ours chose)")
    p.add_argument("--threads", default="1,2", help="torch thread counts to run (default '1,2')")
    p.add_argument("--loader", choices=["plain", "batched"], default="plain",
                   help="devinterp's DataLoader in the suite (the speed section runs both)")
    p.add_argument("--speed-steps", type=int, default=None, help="steps per chain for the 864-parameter speed "
                   "case (default 1000; --quick 200)")
    p.add_argument("--floor-passes", type=int, default=2000)
    p.add_argument("--reps", type=int, default=None, help="repetitions in the speed section (default 3; --quick 1)")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-suite", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="harness check: 300 steps, 3 small cases")
    p.add_argument("--setup-only", action="store_true", help="create/check bench/.venv-devinterp and exit")
    p.add_argument("--out", default=str(common.RESULTS / "vs_devinterp.json"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    ensure_venv()
    if args.setup_only:
        print(f"{VENV} ready")
        return 0
    steps = args.steps or (300 if args.quick else 2000)
    speed_steps = args.speed_steps or (200 if args.quick else 1000)
    burnin = min(steps - 1, int(round(args.burnin_frac * steps)))
    speed_burnin = min(speed_steps - 1, int(round(args.burnin_frac * speed_steps)))
    threads_list = [int(t) for t in args.threads.split(",") if t.strip()]
    cases = dln.select_cases(args.cases if args.cases or not args.quick else "L2-small,L3-narrow,L4-mixed")
    nbeta = dln.default_nbeta(dln.N_EXAMPLES)
    chains = args.chains
    calibrated = args.step_size == "calibrated"
    fixed_eps = None if calibrated else (dln.PUBLISHED_STEP_SIZE if args.step_size == "published"
                                         else float(args.step_size))
    out = Path(args.out)
    settings = {
        "n": dln.N_EXAMPLES, "batch_size": dln.BATCH_SIZE, "localization": dln.LOCALIZATION, "nbeta": nbeta,
        "chains": chains, "steps": steps, "burnin": burnin, "draws": steps - burnin, "steps_between_draws": 1,
        "speed_steps": speed_steps, "speed_burnin": speed_burnin,
        "step_size": "calibrated by ours, same ε given to devinterp" if calibrated else fixed_eps,
        "threads": threads_list, "devinterp_loader_suite": args.loader, "seed": args.seed,
        "ours_accept_every": 0, "devinterp_cores": 1, "devinterp_init_loss": "full-data L_n(w*) (0 → 1e-30)",
        "agreement": "|Δ| ≤ sqrt(std_ours² + std_devinterp²), std = sample std over chains",
        "speedup": "devinterp wall / ours wall, whole estimator call each",
        "floor": f"bare nn.Module forward+backward of one batch, timed over ≤{args.floor_passes} passes, × chains × steps",
    }
    payload = {"benchmark": "vs_devinterp", "machine": common.machine(), "settings": settings,
               "speed": [], "suite": []}
    print("lambdascope vs devinterp 1.3.2 — set for both: " + ", ".join(
        f"{k}={v}" for k, v in settings.items() if k in
        ("n", "batch_size", "localization", "chains", "steps", "burnin", "step_size", "threads")) +
        f", nbeta=n/log n={nbeta:.1f}, one forward+backward per chain-step (ours accept_every=0), "
        f"devinterp init_loss = full-data L_n(w*), cores=1", flush=True)
    # warm-up: one-time import/tracing costs of this process stay out of the timings (the worker
    # warms devinterp up the same way)
    for threads in threads_list:
        run_ours(dln.SPEED_CASE, dln.make_problem(dln.SPEED_CASE), chains=2, steps=20, burnin=10,
                 step_size=fixed_eps or dln.PUBLISHED_STEP_SIZE, nbeta=nbeta, seed=args.seed, threads=threads)
    began = time.perf_counter()

    if not args.skip_speed:
        case = dln.SPEED_CASE
        problem = dln.make_problem(case)
        reps = args.reps or (1 if args.quick else 3)
        print(f"\n## ms per chain-step (median of {reps} alternating runs), {case.name}: widths {case.widths}, "
              f"d={case.num_parameters}, {chains} chains × {speed_steps} steps, batch {dln.BATCH_SIZE}, "
              f"ε {fixed_eps or 'calibrated'}")
        print(f"{'threads':>7s} {'floor':>7s} {'ours':>7s} {'ours+MALA':>9s} {'devinterp':>9s} {'devinterp':>9s} "
              f"{'speedup':>8s} {'speedup':>8s} {'ours/floor':>10s}")
        print(f"{'':>7s} {'fwd+bwd':>7s} {'':>7s} {'(default)':>9s} {'(plain)':>9s} {'(batched)':>9s} "
              f"{'(plain)':>8s} {'(batched)':>8s} {'':>10s}")
        for threads in threads_list:
            kw = dict(chains=chains, steps=speed_steps, burnin=speed_burnin, nbeta=nbeta, seed=args.seed,
                      threads=threads)
            eps = fixed_eps
            if eps is None:  # calibrate once, then time everything at that ε
                eps = run_ours(case, problem, step_size=None, **kw).get("step_size") or dln.PUBLISHED_STEP_SIZE
            kw["step_size"] = eps
            dev_kw = dict(chains=chains, burnin=speed_burnin, draws=speed_steps - speed_burnin, step_size=eps,
                          nbeta=nbeta, seed=args.seed, threads=threads)
            runs = {"ours": [], "ours_default_mala": [], "devinterp_plain": [], "devinterp_batched": [], "floor_ms": []}
            for _ in range(reps):
                runs["ours"].append(run_ours(case, problem, **kw))
                runs["devinterp_batched"].append(run_devinterp(case, loader="batched", **dev_kw))
                runs["ours_default_mala"].append(run_ours(case, problem, accept_every=10, **kw))
                runs["devinterp_plain"].append(run_devinterp(case, loader="plain", **dev_kw))
                runs["floor_ms"].append(floor_ms(case, problem, threads, args.floor_passes))

            def med(key):
                vals = sorted(1e3 * r["wall_seconds"] / (chains * speed_steps) for r in runs[key] if "error" not in r)
                return vals[len(vals) // 2] if vals else None

            floor = sorted(runs["floor_ms"])[reps // 2]
            ms = {k: med(k) for k in ("ours", "ours_default_mala", "devinterp_plain", "devinterp_batched")}
            rec = {"threads": threads, "case": case.name, "d": case.num_parameters, "step_size": eps,
                   "floor_ms": floor, "ms_per_chain_step": ms, "runs": runs,
                   "speedup_plain": ms["devinterp_plain"] / ms["ours"] if ms["devinterp_plain"] and ms["ours"] else None,
                   "speedup_batched": (ms["devinterp_batched"] / ms["ours"]
                                       if ms["devinterp_batched"] and ms["ours"] else None),
                   "ours_vs_floor": ms["ours"] / floor if ms["ours"] else None,
                   "devinterp_plain_vs_floor": ms["devinterp_plain"] / floor if ms["devinterp_plain"] else None}
            payload["speed"].append(rec)
            print(f"{threads:7d} {floor:7.3f} {fmt(ms['ours'], '7.3f')} {fmt(ms['ours_default_mala'], '9.3f')} "
                  f"{fmt(ms['devinterp_plain'], '9.3f')} {fmt(ms['devinterp_batched'], '9.3f')} "
                  f"{fmt(rec['speedup_plain'], '7.1f')}× {fmt(rec['speedup_batched'], '7.1f')}× "
                  f"{fmt(rec['ours_vs_floor'], '9.2f')}×", flush=True)
            for name, rs in runs.items():
                for r in rs:
                    if isinstance(r, dict) and "error" in r:
                        print(f"        {name} failed: {r['error']}")
            common.write_json(out, payload, final=False)
        print("(ms per chain-step = wall time of the whole estimator call / (chains × steps); ours+MALA = our "
              "default accept_every=10; plain/batched = devinterp's DataLoader, see --help)")

    if not args.skip_suite:
        header = (f"{'case':14s} {'thr':>3s} {'d':>6s} {'λ theory':>9s} {'ours λ̂ ± std':>16s} "
                  f"{'devinterp λ̂ ± std':>18s} {'agree':>5s} {'ours s':>7s} {'dev s':>7s} {'speedup':>8s} "
                  f"{'ours/floor':>10s}")
        print(f"\n## DLN suite: {chains} chains × {steps} steps (burn-in {burnin}), devinterp loader {args.loader}")
        print(header)
        print("-" * len(header))
        for threads in threads_list:
            for i, case in enumerate(cases):
                problem = dln.make_problem(case)
                digest = dln.digest(problem[1], problem[2], *problem[0].parameters())
                kw = dict(chains=chains, steps=steps, burnin=burnin, nbeta=nbeta, seed=args.seed, threads=threads)

                def ours_run():
                    return run_ours(case, problem, step_size=fixed_eps, **kw)

                def dev_run(eps):
                    return run_devinterp(case, chains=chains, burnin=burnin, draws=steps - burnin, step_size=eps,
                                         nbeta=nbeta, seed=args.seed, threads=threads, loader=args.loader)

                # alternate who goes first, so slow drifts in the machine's load hit both alike
                if calibrated or i % 2 == 0:
                    ours = ours_run()
                    dev = dev_run(ours.get("step_size") or dln.PUBLISHED_STEP_SIZE)
                else:
                    dev = dev_run(fixed_eps)
                    ours = ours_run()
                floor = floor_ms(case, problem, threads, args.floor_passes)
                if "error" not in dev and dev.get("data_digest") != digest:
                    dev = {"error": f"devinterp built a different problem (hash {dev.get('data_digest')} vs {digest})"}
                rec = {"case": case.name, "threads": threads, "widths": list(case.widths), "rank": case.rank,
                       "d": case.num_parameters, "lambda_theory": case.theory_lambda(), "data_digest": digest,
                       "floor_ms": floor, "ours": ours, "devinterp": dev, "loadavg_1min": os.getloadavg()[0],
                       **compare(ours, dev, floor, chains, steps)}
                payload["suite"].append(rec)
                common.write_json(out, payload, final=False)
                o = f"{ours['lambda_hat']:.1f} ± {ours['std']:.1f}" if "error" not in ours else "FAILED"
                dv = f"{dev['lambda_hat']:.1f} ± {dev['std']:.1f}" if "error" not in dev else "FAILED"
                agree = {True: "yes", False: "NO", None: "—"}[rec.get("agree")]
                print(f"{case.name:14s} {threads:3d} {case.num_parameters:6d} {rec['lambda_theory']:9.1f} {o:>16s} "
                      f"{dv:>18s} {agree:>5s} {fmt(ours.get('wall_seconds'), '7.1f')} "
                      f"{fmt(dev.get('wall_seconds'), '7.1f')} {fmt(rec.get('speedup'), '7.1f')}× "
                      f"{fmt(rec.get('ours_vs_floor'), '9.2f')}×", flush=True)
                for name, r in (("ours", ours), ("devinterp", dev)):
                    if "error" in r:
                        print(f"    {name} failed: {r['error']}")

        summary = {}
        for threads in threads_list:
            rows = [r for r in payload["suite"] if r["threads"] == threads and "speedup" in r]
            if not rows:
                continue
            sp = [r["speedup"] for r in rows]
            tot_dev = sum(r["devinterp"]["wall_seconds"] for r in rows)
            tot_ours = sum(r["ours"]["wall_seconds"] for r in rows)
            summary[str(threads)] = {
                "cases": len(rows),
                "agree": sum(bool(r["agree"]) for r in rows),
                "speedup_min": min(sp), "speedup_median": sorted(sp)[len(sp) // 2], "speedup_max": max(sp),
                "speedup_total": tot_dev / tot_ours,
                "ours_vs_floor_median": sorted(r["ours_vs_floor"] for r in rows)[len(rows) // 2],
                "ours_wall_total": tot_ours, "devinterp_wall_total": tot_dev,
            }
        # Each estimator at its own best thread count, case by case (devinterp is often fastest at
        # 1 thread, ours at 2): the comparison least kind to us.
        best = []
        for case in cases:
            rows = [r for r in payload["suite"] if r["case"] == case.name and "speedup" in r]
            if len(rows) < 2:
                continue
            ours_r = min(rows, key=lambda r: r["ours"]["wall_seconds"])
            dev_r = min(rows, key=lambda r: r["devinterp"]["wall_seconds"])
            best.append({"case": case.name, "ours_threads": ours_r["threads"], "ours_s": ours_r["ours"]["wall_seconds"],
                         "devinterp_threads": dev_r["threads"], "devinterp_s": dev_r["devinterp"]["wall_seconds"],
                         "speedup": dev_r["devinterp"]["wall_seconds"] / ours_r["ours"]["wall_seconds"]})
        print("-" * len(header))
        for threads, s in summary.items():
            print(f"threads {threads}: agree {s['agree']}/{s['cases']}; speedup min {s['speedup_min']:.1f}× "
                  f"median {s['speedup_median']:.1f}× max {s['speedup_max']:.1f}× (total time "
                  f"{s['devinterp_wall_total']:.0f} s vs {s['ours_wall_total']:.0f} s = {s['speedup_total']:.1f}×); "
                  f"ours / fwd+bwd floor median {s['ours_vs_floor_median']:.2f}×")
        if best:
            sp = [b["speedup"] for b in best]
            summary["best_vs_best"] = {
                "cases": best, "speedup_min": min(sp), "speedup_median": sorted(sp)[len(sp) // 2],
                "speedup_total": sum(b["devinterp_s"] for b in best) / sum(b["ours_s"] for b in best)}
            print("each at its best thread count: " + ", ".join(
                f"{b['case']} {b['speedup']:.1f}× ({b['devinterp_s']:.1f} s @{b['devinterp_threads']} vs "
                f"{b['ours_s']:.1f} s @{b['ours_threads']})" for b in best) +
                f"; min {min(sp):.1f}×, median {summary['best_vs_best']['speedup_median']:.1f}×, "
                f"total {summary['best_vs_best']['speedup_total']:.1f}×")
        payload["suite_summary"] = summary
        print("agree: |λ̂_ours − λ̂_devinterp| ≤ sqrt(std_ours² + std_devinterp²) (std over chains); "
              "speedup: devinterp wall / ours wall; ours/floor: ours wall / (chains × steps × bare fwd+bwd)")

    payload["total_wall_seconds"] = time.perf_counter() - began
    common.write_json(out, payload)
    print(f"\ntotal wall time {payload['total_wall_seconds']:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
