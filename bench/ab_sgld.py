"""The sampler at a git revision against the working tree's, side by side in one process (not run
by make test): ms per chain-step on DLNs of several sizes, rounds alternating between the two.

    .venv/bin/python bench/ab_sgld.py --base HEAD~1      # sizes 4000,15000,100000, 2 threads
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import common  # sets sys.path for dln and the product
import dln
import torch

from lambdascope.llc import sgld as current
from profile_step import widths_for


def load_at(revision: str):
    """lambdascope/llc/sgld.py as it was at ``revision``, imported under another name."""
    text = subprocess.run(["git", "show", f"{revision}:lambdascope/llc/sgld.py"], cwd=common.ROOT,
                          capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "sgld_base.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("sgld_base", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sgld_base"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="HEAD~1")
    p.add_argument("--sizes", default="4000,15000,100000")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=400)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = load_at(args.base)
    for size in (int(s) for s in args.sizes.split(",")):
        widths = widths_for(size)
        case = dln.Case(name="ab", widths=widths, seed=1, rank=min(widths))
        case = dln.Case(name="ab", widths=widths, seed=1, rank=dln.product_rank(dln.teacher_matrices(case)))
        model, x, y = dln.make_problem(case, n=20_000)
        kw = dict(chains=4, step_size=1e-9, localization=1.0, nbeta=1e4, batch_size=500, seed=0, accept_every=0)
        times: dict[str, list[float]] = {"base": [], "current": []}
        for module in (base, current):
            module.run_sgld(model, x, y, dln.mse, steps=30, **kw)
        for _ in range(args.rounds):
            for name, module in (("base", base), ("current", current)):
                trace = module.run_sgld(model, x, y, dln.mse, steps=args.steps, **kw)
                times[name].append(trace.seconds / (args.steps * kw["chains"]) * 1e3)
        b, c = statistics.median(times["base"]), statistics.median(times["current"])
        d = sum(q.numel() for q in model.parameters())
        print(f"d = {d:>6}: {args.base} {b:.3f} ms per chain-step, working tree {c:.3f}, ratio {c / b:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
