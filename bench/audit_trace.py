"""One default audit of a benchmark DLN in process, each change of what it waits for printed
(not run by make test): how its window's λ̂ moved and which criterion held it back.

    .venv/bin/python bench/audit_trace.py bench/results/default_audit_run20.json R17-L6
    .venv/bin/python bench/audit_trace.py bench/results/default_audit_run19.json R5-L6 --threads 1

The network is rebuilt from a default_audit results file (its row's case); the estimate is
`estimate_llc(..., SGLDConfig())`, the defaults the CLI's audit runs with; the other flags change
one setting each (nβ, γ, M, the target bias, how long it samples) for a study of what the
estimator tends to (docs/benchmarks.md §4za, §4zj). Each line: seconds,
steps per chain, the window's λ̂ as sampled (before the bias correction) over λ, the status.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import common  # sets sys.path for dln and the product
import dln
import torch
import torch.nn.functional as F

from lambdascope.llc import audit, calibration
from lambdascope.llc.llc import SGLDConfig, estimate_llc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", help="a bench/results/default_audit_run*.json")
    p.add_argument("case", help="a row's case name, e.g. R5-L6")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nbeta-scale", type=float, default=1.0,
                   help="sample at this multiple of the default nβ = n/log n (a finite-nβ study)")
    p.add_argument("--localization", type=float, default=None, help="γ (default: set from the curvature)")
    p.add_argument("--until-ess", type=float, default=SGLDConfig.until_ess, help="a larger one samples on")
    p.add_argument("--max-steps", type=int, default=SGLDConfig.max_steps)
    p.add_argument("--precondition", default=SGLDConfig.precondition, choices=("kronecker", "diagonal", "none"))
    p.add_argument("--target-bias", type=float, default=calibration.DEFAULT_TARGET_BIAS,
                   help="the step's predicted bias calibration aims at, as a fraction of λ̂ (a study of the "
                        "bias correction: a smaller one samples at smaller steps; the step is lowered "
                        "during the run above twice it, as the default's 2%% and 4%%)")
    p.add_argument("--seed", type=int, default=SGLDConfig.seed, help="the chains' seed (a rerun study)")
    p.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Not an SGLDConfig field (no user sets it): the two module constants are set for this process.
    calibration.calibrate.__kwdefaults__["target_bias"] = args.target_bias
    calibration.RETUNE_BIAS = 2 * args.target_bias
    row = common.audited_case(args.results, args.case)
    model, x, y = dln.make_problem(dln.case_from_dict(row["case"]))
    lam, began, last = row["lambda"], time.perf_counter(), [None]

    def progress(step: int, total: int, llc: float, status: str) -> None:
        if status != last[0]:
            print(f"{time.perf_counter() - began:6.0f} s  step {step:6d}  λ̂/λ {llc / lam:.3f}  {status}", flush=True)
            last[0] = status

    n = x.shape[0]
    config = SGLDConfig(nbeta=args.nbeta_scale * n / math.log(n), localization=args.localization,
                        precondition=args.precondition, until_ess=args.until_ess, max_steps=args.max_steps,
                         seed=args.seed)
    result = estimate_llc(model, x, y, F.mse_loss, config, device="cpu", progress=progress)
    print(f"λ̂ {result.mean:.2f} against λ {lam} ({100 * (result.mean / lam - 1):+.2f}%; as sampled, before the "
          f"bias correction, {100 * (result.uncorrected_mean / lam - 1):+.2f}%), {result.stopping.reason} at "
          f"{result.stopping.steps} steps, {time.perf_counter() - began:.0f} s")
    print(result.stopping.summary)
    print(result.compile_summary)
    if args.json:
        diag, verdict = audit.diagnose(result)
        record = {"results": args.results, "case": args.case, "lambda": lam, "seed": args.seed,
                  "argv": sys.argv[1:], "lambda_hat": result.mean, "std": result.std,
                  "per_chain": result.per_chain, "uncorrected": result.uncorrected_mean,
                  "predicted_bias": result.bias_estimate, "mcse": diag.mcse_relative, "rhat": diag.rhat,
                  "ess": diag.ess, "verdict": verdict.state, "reasons": verdict.reasons, "drift": result.drift,
                  "drift_error": result.drift_error, "stop": result.stopping.reason,
                  "steps": result.stopping.steps, "seconds": time.perf_counter() - began}
        with open(args.json, "a") as f:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
