"""How the localization γ moves the default audit's λ̂ where theory gives λ exactly (not run by
make test).

    .venv/bin/python bench/localization_scan.py            # writes bench/results/localization_scan.json
    .venv/bin/python bench/localization_scan.py --quick    # harness check: one DLN, the default γ and 10

λ belongs to the model and the data's distribution, not to the units of the inputs, while the
pull (γ/2)·‖w − w*‖² is measured in the weights' units: a direction of loss curvature h keeps
only nβh/(nβh + γ) of its share of λ̂ on w*'s quadratic part. Where nβh dwarfs γ that is 1; the
DLN benchmark (inputs x ~ U(−10, 10), E[x²] = 33, n = 1e5) lives there. Where it does not, a
γ = 10 takes a visible part off λ̂. Two families of models with exact λ, each audited by
``estimate_llc(..., SGLDConfig(localization=γ))`` (the audit's defaults otherwise) with γ unset
(the default: nβ·h_top/1000 within [3, 10], lambdascope.llc.localization), and at γ = 10 (the
former constant default), 3 and 1:

- the same deep linear networks (bench/dln.py teachers, Aoyagi's λ) on inputs x ~ U(−10, 10)
  and on standardized inputs x ~ N(0, 1): one function class, one λ, curvature 33× apart;
- softmax regressions (a regular model with one class's weights redundant: λ = (K − 1)(p + 1)/2)
  on standardized features, labels drawn from a random teacher, w* the maximum-likelihood fit
  (L-BFGS); each also with Σ½·nβh/(nβh + γ) over ∇²L's eigenvalues (dense Hessian), what the
  localization leaves of λ on the quadratic part.

Each row also gives nβ·h_top, h_top the top eigenvalue of the loss Hessian at w* as the audit's
calibration measured it. Writes bench/results/localization_scan.json and prints one table
(docs/benchmarks.md §4zb, §4zc).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import common  # sets sys.path for dln and the product
import dln
import torch
from softmax_regression import exact_lambda, softmax_problem

from lambdascope.llc.audit import diagnose
from lambdascope.llc.llc import SGLDConfig, default_nbeta, estimate_llc
from lambdascope.llc.losses import cross_entropy

GAMMAS = (None, 10.0, 3.0, 1.0)  # None: the default, set from the curvature (lambdascope.llc.localization)
# widths, seed, n, and the rank the first layer is cut to (None: the protocol's teacher, bench/dln.py)
DLN_CASES = (((10, 20, 20, 10), 1, 50_000, None), ((12, 30, 12), 4, 50_000, None),
             ((8, 12, 8), 0, 20_000, 4), ((10, 20, 20, 10), 0, 50_000, 5))
SOFTMAX_CASES = ((10, 4, 10_000, 0), (30, 10, 20_000, 2), (30, 10, 200_000, 2))  # p, K, n, seed


def dln_problems(widths: tuple[int, ...], seed: int, n: int, cut: int | None
                 ) -> list[tuple[str, torch.nn.Module, torch.Tensor, torch.Tensor, float]]:
    """The teacher on inputs U(−10, 10) and on N(0, 1): (label, model, x, y, λ) each. ``cut``:
    instead of the protocol's teacher, N(0, 1/fan_in) layers with only the first cut, to that
    rank (the stopping-rule tests' teacher)."""
    model, rank = dln.build_teacher(widths, seed) if cut is None else (first_layer_cut(widths, cut, seed), cut)
    gen = torch.Generator().manual_seed(seed)
    problems = []
    for label, x in (("U(-10,10)", (torch.rand(n, widths[0], generator=gen) * 2 - 1) * dln.INPUT_RANGE),
                     ("N(0,1)", torch.randn(n, widths[0], generator=gen))):
        with torch.no_grad():
            y = model(x)
        teacher = "" if cut is None else " (first layer cut)"
        problems.append((f"DLN {','.join(map(str, widths))} r={rank}{teacher}, x ~ {label}", model, x, y,
                         dln.theory_lambda(widths, rank)))
    return problems


def first_layer_cut(widths: tuple[int, ...], rank: int, seed: int) -> torch.nn.Module:
    """N(0, 1/fan_in) layers, the first cut to ``rank`` (tests/unit/dln_teacher.py's teacher)."""
    gen = torch.Generator().manual_seed(seed)
    mats = [torch.randn(o, i, generator=gen, dtype=torch.float64) / math.sqrt(i) for i, o in zip(widths, widths[1:])]
    u, s, vh = torch.linalg.svd(mats[0], full_matrices=False)
    mats[0] = (u[:, :rank] * s[:rank]) @ vh[:rank]
    return dln._module(widths, mats)


def curvatures(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, nbeta: float) -> torch.Tensor:
    """nβh over the eigenvalues h of the cross-entropy's Hessian at w* (dense)."""
    _, hessian = common.dense_hessian(model, x, y, cross_entropy)
    return nbeta * torch.linalg.eigvalsh(hessian).clamp(min=0)


def quadratic_share(a: torch.Tensor, gamma: float) -> float:
    """Σ½·nβh/(nβh + γ): what the localization leaves of λ on the quadratic part."""
    return float((0.5 * a / (a + gamma)).sum())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_run_flags(p, "localization_scan.json", quick="one DLN on both input scales, γ = 10 and 1",
                         check="never (a measurement, not a test)", threads=2)
    p.add_argument("--only", help="run only the cases whose label contains this text")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    gammas = (None, 10.0) if args.quick else GAMMAS
    def wanted(label: str) -> bool:
        return not args.only or args.only in label

    problems = [(*prob, None) for case in DLN_CASES[:1 if args.quick else None] for prob in dln_problems(*case)
                if wanted(prob[0])]
    for pp, k, n, seed in () if args.quick else SOFTMAX_CASES:
        label = f"softmax regression p={pp} K={k} n={n:,}"
        if wanted(label):  # before the fit and the dense Hessian, which take a while at n = 200,000
            model, x, y = softmax_problem(pp, k, n, seed)
            problems.append((label, model, x, y, exact_lambda(pp, k), curvatures(model, x, y, default_nbeta(n))))
    rows = []
    payload = {"machine": common.machine(), "gammas": list(gammas), "rows": rows}
    print(f"{'case':<52} {'λ':>6} {'nβ·h_top':>9} {'γ':>13} {'λ̂':>8} {'err':>7} {'quadratic':>9} {'verdict':<8} "
          f"{'steps':>6} {'s':>4}")
    for label, model, x, y, lam, spectrum in problems:
        loss = cross_entropy if spectrum is not None else dln.mse
        for gamma in gammas:
            began = time.perf_counter()
            result = estimate_llc(model, x, y, loss, SGLDConfig(localization=gamma), device="cpu")
            seconds = time.perf_counter() - began
            verdict = diagnose(result)[1]
            used = result.localization
            quadratic = None if spectrum is None else quadratic_share(spectrum, used)
            row = {"case": label, "n": x.shape[0], "d": result.num_parameters, "lambda": lam,
                   "gamma": "default" if gamma is None else gamma, "gamma_used": used,
                   "nbeta_h_top": result.nbeta * result.calibration.top_eigenvalue,
                   "lambda_hat": result.mean, "std": result.std, "rel_err": result.mean / lam - 1,
                   "quadratic_localized": quadratic,
                   "verdict": verdict.state, "stop": result.stopping.reason, "steps": result.stopping.steps,
                   "seconds": seconds}
            rows.append(row)
            common.write_json(Path(args.out), payload, final=False)
            q = "" if quadratic is None else f"{100 * (quadratic / lam - 1):+.1f}%"
            shown = f"default {used:.3g}" if gamma is None else f"{used:g}"
            print(f"{label:<52} {lam:6.1f} {row['nbeta_h_top']:9.4g} {shown:>13} {result.mean:8.2f} "
                  f"{100 * row['rel_err']:+6.1f}% {q:>9} {verdict.state:<8} {result.stopping.steps:6d} {seconds:4.0f}",
                  flush=True)
    common.write_json(Path(args.out), payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
