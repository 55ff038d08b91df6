"""Where an SGLD step's time goes, at d = 4,000 - 100,000 (not run by make test).

    .venv/bin/python bench/profile_step.py                  # the default sizes, 2 threads
    .venv/bin/python bench/profile_step.py --threads 1
    .venv/bin/python bench/profile_step.py --compiled --out bench/results/profile_step_compiled.json

For each bias-free DLN (one hidden width scaled to reach d), in one process, side by side:

- floor: the bare forward+backward of one batch (500 rows) through the nn.Module, per pass;
- ours: ``run_sgld`` with 4 chains, ``accept_every=0`` (one forward+backward per chain-step, as
  the devinterp comparison runs it), per chain-step; with ``--compiled``, its gradient compiled
  before the timed runs (lambdascope.llc.compiled: what an audit runs after ~10 s of sampling);
- the profile of ours by operator group (torch.profiler, CPU self time): matrix products,
  the update (the elementwise drift/noise/step ops), random numbers, minibatch indexing, the
  compiled graph's own kernels and call (``--compiled``), and the rest (autograd and vmap
  bookkeeping, Python).

Writes bench/results/profile_step.json and prints one table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import common  # sets sys.path for dln and the product
import dln
import torch
from torch.profiler import ProfilerActivity, profile

from lambdascope.llc.compiled import GradientCompiler
from lambdascope.llc.sgld import run_sgld

GROUPS = {  # operator name fragments -> group
    "matmul": ("mm", "matmul", "linear", "addmm", "bmm", "baddbmm"),
    "random": ("randn", "normal", "randperm"),
    "indexing": ("index_select", "index", "gather", "cat"),
    "update": ("add", "mul", "sub", "copy_", "div", "fill", "zero", "sum", "mse", "pow", "mean"),
}


def widths_for(d_target: int, depth: int = 2, inner: int = 100) -> tuple[int, ...]:
    """An input/output width of 100 and one hidden width h: d = 100·h·2 for depth 2."""
    h = max(10, round(d_target / (inner * depth)))
    return (inner, h, inner) if depth == 2 else (inner, *([h] * (depth - 1)), inner)


def group_of(name: str) -> str:
    if "CompiledFxGraph" in name:
        return "compiled graph"
    low = name.lower()
    for group, keys in GROUPS.items():
        if any(k in low for k in keys):
            return group
    return "other"


def measure(widths: tuple[int, ...], threads: int, steps: int, compiled: bool, chains: int = 4,
            batch: int = 500) -> dict:
    torch.set_num_threads(threads)
    case = dln.Case(name="p", widths=widths, seed=1, rank=min(widths))
    mats = dln.teacher_matrices(case)
    case = dln.Case(name="p", widths=widths, seed=1, rank=dln.product_rank(mats))
    model, x, y = dln.make_problem(case, n=20_000)
    d = sum(p.numel() for p in model.parameters())
    for _ in range(20):  # floor warm-up
        model.zero_grad()
        dln.mse(model(x[:batch]), y[:batch]).backward()
    began = time.perf_counter()
    for i in range(steps):
        model.zero_grad()
        j = (i * batch) % (x.shape[0] - batch)
        dln.mse(model(x[j:j + batch]), y[j:j + batch]).backward()
    floor = (time.perf_counter() - began) / steps * 1e3
    kwargs = dict(chains=chains, step_size=1e-9, localization=1.0, nbeta=1e4, batch_size=batch, seed=0,
                  accept_every=0, compiler=GradientCompiler(after_seconds=0.0) if compiled else None)
    run_sgld(model, x, y, dln.mse, steps=20, **kwargs)  # warm-up (and the compile)
    trace = run_sgld(model, x, y, dln.mse, steps=steps, **kwargs)
    ours = trace.seconds / (steps * chains) * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_sgld(model, x, y, dln.mse, steps=max(20, steps // 5), **kwargs)
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("aten") or "CompiledFxGraph" in event.key:
            totals[group_of(event.key)] = totals.get(group_of(event.key), 0.0) + event.self_cpu_time_total
    wall = sum(e.self_cpu_time_total for e in prof.key_averages())
    shares = {g: v / wall for g, v in totals.items()}
    shares["other"] = shares.get("other", 0.0) + max(0.0, 1 - sum(totals.values()) / wall)
    return {"widths": list(widths), "d": d, "threads": threads, "compiled": compiled, "floor_ms": floor,
            "ours_ms_per_chain_step": ours,
            "ours_vs_floor": ours / floor, "profile_share": shares}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="4000,15000,50000,100000")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--compiled", action="store_true", help="profile the compiled gradient (what an audit runs after ~10 s)")
    p.add_argument("--out", default=str(common.RESULTS / "profile_step.json"))
    args = p.parse_args(argv)
    rows = []
    print(f"{'d':>7} {'widths':>16} {'floor ms':>9} {'ours ms':>8} {'ours/floor':>10}  profile (share of CPU self time)")
    for size in (int(s) for s in args.sizes.split(",")):
        row = measure(widths_for(size), args.threads, args.steps, args.compiled)
        rows.append(row)
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(row["profile_share"].items(), key=lambda kv: -kv[1]))
        print(f"{row['d']:>7} {str(tuple(row['widths'])):>16} {row['floor_ms']:>9.3f} {row['ours_ms_per_chain_step']:>8.3f} "
              f"{row['ours_vs_floor']:>10.2f}  {shares}", flush=True)
    common.write_json(Path(args.out), {"machine": common.machine(), "argv": sys.argv[1:], "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
