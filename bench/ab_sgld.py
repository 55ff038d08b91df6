"""The sampler at a git revision against the working tree's, side by side in one process (not run
by make test): ms per chain-step on DLNs of several sizes, rounds alternating between the two.

    .venv/bin/python bench/ab_sgld.py --base HEAD~1      # sizes 4000,15000,100000, 2 threads
    .venv/bin/python bench/ab_sgld.py --base HEAD~1 --audit-step --widths 51,41,67,31,64,23,10

``--audit-step`` times the step a default audit takes instead of the plain one: a Kronecker
preconditioner (estimated once from a scored run of the working tree's sampler, the same M given
to both), every 10th move scored, the gradient compiled before the timed rounds (each side its
own compiler). ``--compiled`` times the plain step with each side's gradient compiled (as
bench/compile_gain.py does). The revision's preconditioner, noise and compiler modules are loaded
beside its sampler.
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

from lambdascope.llc import preconditioner
from lambdascope.llc import sgld as current
from lambdascope.llc.compiled import GradientCompiler
from profile_step import widths_for


def load_at(revision: str, name: str):
    """lambdascope/llc/<name>.py as it was at ``revision``, imported as <name>_base."""
    text = subprocess.run(["git", "show", f"{revision}:lambdascope/llc/{name}.py"], cwd=common.ROOT,
                          capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / f"{name}_base.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"{name}_base", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"{name}_base"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="HEAD~1")
    p.add_argument("--sizes", default="4000,15000,100000", help="2-layer DLNs 100 → h → 100 of about these d")
    p.add_argument("--widths", action="append", default=[],
                   help="a DLN's widths, e.g. 51,41,67,31,64,23,10 (repeatable; replaces --sizes)")
    p.add_argument("--audit-step", action="store_true", help="the default audit's step (see above)")
    p.add_argument("--compiled", action="store_true",
                   help="the plain step with each side's gradient (and move) compiled before the timed rounds")
    p.add_argument("--n", type=int, default=20_000, help="examples in the data set (minibatches are drawn from it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=400)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = load_at(args.base, "sgld")
    base_pre = load_at(args.base, "preconditioner")
    base.preconditioner_lib = base_pre
    base.noise_lib = load_at(args.base, "noise")
    base_compiler = load_at(args.base, "compiled").GradientCompiler
    shapes = ([tuple(int(v) for v in w.split(",")) for w in args.widths] if args.widths
              else [widths_for(int(s)) for s in args.sizes.split(",")])
    for widths in shapes:
        case = dln.Case(name="ab", widths=widths, seed=1, rank=min(widths))
        case = dln.Case(name="ab", widths=widths, seed=1, rank=dln.product_rank(dln.teacher_matrices(case)))
        model, x, y = dln.make_problem(case, n=args.n)
        kw = dict(chains=4, step_size=1e-9, localization=1.0, nbeta=1e4, batch_size=500, seed=0, accept_every=0)
        extra = {"base": {}, "current": {}}
        if args.compiled:
            extra = {side: dict(compiler=(base_compiler if side == "base" else GradientCompiler)(after_seconds=0.0))
                     for side in extra}
        if args.audit_step:
            kw.update(step_size=1e-6, localization=10.0, batch_size=256, accept_every=10)
            gathered = current.run_sgld(model, x, y, dln.mse, steps=1200, moments="kronecker", **kw).moments
            m = preconditioner.estimate(gathered, 10.0, "kronecker")
            extra = {"base": dict(precondition=base_pre.Preconditioner.from_state(m.state()), moments="kronecker",
                                  compiler=base_compiler(after_seconds=0.0)),
                     "current": dict(precondition=m, moments="kronecker", compiler=GradientCompiler(after_seconds=0.0))}
        times: dict[str, list[float]] = {"base": [], "current": []}
        for name, module in (("base", base), ("current", current)):
            module.run_sgld(model, x, y, dln.mse, steps=30, **kw, **extra[name])
        for _ in range(args.rounds):
            for name, module in (("base", base), ("current", current)):
                trace = module.run_sgld(model, x, y, dln.mse, steps=args.steps, **kw, **extra[name])
                times[name].append(trace.seconds / (args.steps * kw["chains"]) * 1e3)
        b, c = statistics.median(times["base"]), statistics.median(times["current"])
        d = sum(q.numel() for q in model.parameters())
        print(f"d = {d:>6} {widths}: {args.base} {b:.3f} ms per chain-step, working tree {c:.3f}, "
              f"ratio {c / b:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
