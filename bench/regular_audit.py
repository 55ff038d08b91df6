"""The default audit on ill-conditioned linear regressions, against their exact λ̂ (not run by make test).

    .venv/bin/python bench/regular_audit.py
    .venv/bin/python bench/regular_audit.py --cases 99:1e4:20000 --threads 2

A linear regression at its least-squares minimum is a regular model (λ = d/2), and its MSE loss is
exactly quadratic, so the localized, tempered posterior the estimator samples is Gaussian and
λ̂'s expectation at the audit's own nβ and γ is known in closed form::

    E[nβ·(L(w) − L(w*))] = ½ Σᵢ nβ·hᵢ / (nβ·hᵢ + γ),   hᵢ the eigenvalues of ∇²L = 2·XᵀX/n

(X with its column of ones for the intercept). Each case draws x with per-direction scales
spanning √κ in a random basis (the covariance's condition number κ: unstandardized features),
y = x·w + noise, and audits the fitted ``nn.Linear`` with ``run_audit`` at the CLI's defaults
(``SGLDConfig()``), in process, as the worker does. The table gives λ̂ against that exact value
and the audit's verdict; a verdict ``ok`` more than 10% off is a wrong ``ok``.
Writes bench/results/regular_audit.json.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import common  # sets sys.path for the product
import torch
import torch.nn.functional as F

from lambdascope.llc.audit import AuditSettings, run_audit
from lambdascope.llc.llc import SGLDConfig

DEFAULT_CASES = "4:1:10000,4:1e4:10000,19:1e2:10000,19:1e4:10000,99:1e2:20000,99:1e4:20000,399:1e3:50000"


def problem(inputs: int, kappa: float, n: int) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the fitted model, x, y, the eigenvalues of ∇²L at its weights, float64)."""
    g = torch.Generator().manual_seed(inputs + int(kappa))
    basis, _ = torch.linalg.qr(torch.randn(inputs, inputs, generator=g))
    scales = torch.logspace(0, math.log10(kappa) / 2, inputs)
    x = (torch.randn(n, inputs, generator=g) * scales) @ basis.T
    y = x @ torch.randn(inputs, 1, generator=g) + 0.5 * torch.randn(n, 1, generator=g)
    design = torch.cat([x, torch.ones(n, 1)], 1).double()
    solution = torch.linalg.lstsq(design, y.double()).solution.float()
    model = torch.nn.Linear(inputs, 1)
    with torch.no_grad():
        model.weight.copy_(solution[:inputs].T)
        model.bias.copy_(solution[inputs])
    return model, x, y, torch.linalg.eigvalsh(2 * design.T @ design / n)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default=DEFAULT_CASES, help="inputs:kappa:n, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(common.RESULTS / "regular_audit.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print("| inputs | κ | n | d/2 | exact E at (nβ, γ) | γ | λ̂ (default audit) | rel err | verdict | stopped | steps | s |")
    print("|---:|---:|---:|---:|---:|---:|---|---:|---|---|---:|---:|")
    for spec in args.cases.split(","):
        inputs, kappa, n = (t(v) for t, v in zip((int, float, int), spec.split(":")))
        model, x, y, h = problem(inputs, kappa, n)
        began = time.perf_counter()
        audit = run_audit(model, x, y, F.mse_loss, AuditSettings(sgld=SGLDConfig()), device="cpu")
        seconds = time.perf_counter() - began
        llc = audit.llc
        exact = float((llc.nbeta * h / (2 * (llc.nbeta * h + llc.localization))).sum())
        row = {"inputs": inputs, "kappa": kappa, "n": n, "half_d": (inputs + 1) / 2, "exact": exact,
               "gamma": llc.localization, "nbeta": llc.nbeta, "lambda_hat": llc.mean, "std": llc.std,
               "rel_err": llc.mean / exact - 1, "verdict": audit.verdict.state, "stop": llc.stopping.reason,
               "steps": llc.stopping.steps, "seconds": seconds, "summary": llc.stopping.summary}
        rows.append(row)
        print(f"| {inputs} | {kappa:g} | {n} | {row['half_d']:g} | {exact:.2f} | {llc.localization:g} | "
              f"{llc.mean:.2f} ± {llc.std:.2f} | {100 * row['rel_err']:+.1f}% | {row['verdict']} | {row['stop']} | "
              f"{row['steps']} | {seconds:.0f} |", flush=True)
    wrong = [r for r in rows if r["verdict"] == "ok" and abs(r["rel_err"]) > 0.10]
    print(f"wrong `ok` (more than 10% off): {len(wrong)} of {len(rows)}")
    common.write_json(Path(args.out), {"machine": common.machine(), "argv": argv, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
