"""Euler-Maruyama SGLD against the Leimkuhler-Matthews noise average, at a frozen Kronecker M
(not run by make test; an experiment, not a product path).

    .venv/bin/python bench/noise_average.py bench/results/default_audit_run19.json R9-L3 \\
        --base 8.68e-7 --steps 8000 --runs euler:13,lm:13

The average replaces the step's noise √ε·M^½ξ_t by √ε·M^½(ξ_t + ξ_{t−1})/2, which makes the
stationary law exact on Gaussian directions at any stable step. Here it is applied by wrapping
the sampler's normal draws (each block of draws is averaged with the one before, per chain), so
the product's sampler runs unchanged otherwise. M is estimated once from a 1,000-step warm-up at
``--base`` (the audit's calibrated plain step) and then frozen; each run starts from the warm-up's
end and prints λ̂ as sampled over λ, for quarters 2-4 of its steps.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import common  # sets sys.path for dln and the product
import dln
import torch
import torch.nn.functional as F

from lambdascope.llc import sgld

class AveragedNoise:
    """Stands in for ``torch.randn`` inside the sampler: when on, a block of normals (steps, D)
    drawn into ``out`` becomes (ξ_t + ξ_{t−1})/2, carrying ξ_{t−1} across blocks per generator."""

    def __init__(self):
        self.on, self.last, self.randn = False, {}, torch.randn

    def __call__(self, *size, generator=None, out=None, **kwargs):
        drawn = self.randn(*size, generator=generator, out=out, **kwargs)
        if not self.on or out is None:
            return drawn
        previous = self.last.get(id(generator))
        if previous is None:
            previous = self.randn(out.shape[1:], generator=generator, dtype=out.dtype)
        self.last[id(generator)] = out[-1].clone()
        out.add_(torch.cat([previous.unsqueeze(0), out[:-1]])).mul_(0.5)
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results")
    p.add_argument("case")
    p.add_argument("--base", type=float, required=True, help="the warm-up's (calibrated plain) step")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--runs", default="euler:2,lm:2", help="integrator:multiple of --base, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    row = common.audited_case(args.results, args.case)
    model, x, y = dln.make_problem(dln.case_from_dict(row["case"]))
    lam, nbeta = row["lambda"], x.shape[0] / math.log(x.shape[0])
    noise = AveragedNoise()
    sgld.torch.randn = noise  # the sampler module's torch: its normal draws go through the wrapper
    kwargs, warm, m = common.kronecker_warmup(model, x, y, nbeta, args.base)
    with torch.no_grad():
        init = float(F.mse_loss(model(x), y))
    print(f"{args.case}: λ {lam}, base step {args.base:g}, M from the warm-up (K-FAC raise ×{1 / m.bias_ratio:.1f})")
    for run in args.runs.split(","):
        kind, multiple = run.split(":")
        noise.on, noise.last = kind == "lm", {}
        began = time.perf_counter()
        trace = sgld.run_sgld(model, x, y, F.mse_loss, steps=args.steps, step_size=args.base * float(multiple),
                              seed=7, accept_every=0, init=warm.final, precondition=m, moments="kronecker",
                              **kwargs)
        losses, q = trace.losses.double(), args.steps // 4
        quarters = [nbeta * (losses[:, a:a + q].mean().item() - init) / lam for a in (q, 2 * q, 3 * q)]
        print(f"  {kind:5s} ×{multiple:>4s}: λ̂/λ over quarters 2-4: {' '.join(f'{v:.3f}' for v in quarters)}"
              f"  ({time.perf_counter() - began:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
