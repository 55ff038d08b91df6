"""Does an audit's standard error cover what a rerun gives? (not run by make test)

Pairs of default audits of one network, differing only in the chains' seed (and in whether the
gradient was compiled, which the run's timing decides), against each audit's standard error
(lambdascope.llc.uncertainty): for a standard error that means what it says, the difference of a
pair over √(se₁² + se₂²) is about a standard normal, so about 95% of pairs lie within 1.96 and the
median |z| is about 0.67. The chains' spread (the "±" devinterp reports) is scored the same way.

    # the reruns (each line one audit in process; seed 0 is the CLI run in the results file):
    .venv/bin/python bench/audit_trace.py bench/results/default_audit_run27.json R7-L6 --seed 1 \\
        --json bench/results/rerun_spread.jsonl
    .venv/bin/python bench/rerun_spread.py bench/results/rerun_spread.jsonl

The other rows are other readings of the same numbers, for comparison: the Monte Carlo part alone,
and the drift part taken as |drift| whole (its noise included) or as the larger of |drift| and its
standard error (what the product first used).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from pathlib import Path

import common  # noqa: F401  (sys.path for the product)

from lambdascope.llc.uncertainty import combine

ROOT = Path(__file__).resolve().parent.parent


def _records(path: str) -> dict[tuple[str, str], list[dict]]:
    """Audits by (results file, case): the reruns, plus each results file's own (CLI) row as seed 0."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        groups.setdefault((Path(r["results"]).name, r["case"]), []).append(r)
    for (name, case), runs in groups.items():
        file = ROOT / "bench" / "results" / name
        row = next(x for x in json.loads(file.read_text())["rows"] if x["case"]["name"] == case)
        o = row["ours"]
        runs.insert(0, {"seed": "cli", "lambda": row["lambda"], "lambda_hat": o["lambda_hat"], "std": o["std"],
                        "per_chain": [math.nan] * 4, "uncorrected": o["uncorrected"], "mcse": o["mcse"],
                        "drift": o["drift"], "drift_error": o["drift_error"], "steps": o["steps"]})
    return groups


def _chains(r: dict) -> int:
    return len(r["per_chain"]) or 4


def _monte_carlo(r: dict) -> float:
    return combine(r["lambda_hat"], r["std"], _chains(r), r["mcse"], math.nan, math.nan, r["uncorrected"]).monte_carlo


PRODUCT = "standard error (the product's)"
READINGS = {
    "chains' spread (devinterp's ±)": lambda r: r["std"],
    "chains' spread / √chains": lambda r: r["std"] / math.sqrt(_chains(r)),
    "Monte Carlo part alone": _monte_carlo,
    PRODUCT: lambda r: combine(r["lambda_hat"], r["std"], _chains(r), r["mcse"], r["drift"], r["drift_error"],
                               r["uncorrected"]).total,
    "MC + |drift|": lambda r: math.hypot(_monte_carlo(r), abs(r["drift"] * r["lambda_hat"])),
    "MC + the larger of |drift| and its error": lambda r: math.hypot(
        _monte_carlo(r), max(abs(r["drift"]), r["drift_error"]) * abs(r["lambda_hat"])),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("reruns", help="JSON lines written by bench/audit_trace.py --json")
    args = p.parse_args(argv)
    groups = _records(args.reruns)
    print("| network | λ | runs: error of λ̂ (steps) | standard errors (% of λ) |")
    print("|---|---|---|---|")
    for (name, case), runs in sorted(groups.items()):
        lam = runs[0]["lambda"]
        errors = ", ".join(f"{100 * (r['lambda_hat'] / lam - 1):+.2f}% ({r['steps']:,})" for r in runs)
        ses = ", ".join(f"{100 * READINGS[PRODUCT](r) / lam:.2f}%" for r in runs)
        print(f"| {name.removeprefix('default_audit_').removesuffix('.json')} {case} | {lam:g} | {errors} | {ses} |")
    pairs = [(a, b) for runs in groups.values() for a, b in itertools.combinations(runs, 2)]
    print(f"\n{len(pairs)} pairs of {sum(len(r) for r in groups.values())} audits of {len(groups)} networks")
    print("| error used | pairs within 1.96 | median z | largest z |")
    print("|---|---|---|---|")
    for label, error in READINGS.items():
        z = [abs(a["lambda_hat"] - b["lambda_hat"]) / math.hypot(error(a), error(b)) for a, b in pairs]
        inside = sum(v <= 1.96 for v in z)
        print(f"| {label} | {inside}/{len(z)} ({100 * inside / len(z):.0f}%) | {statistics.median(z):.2f} | "
              f"{max(z):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
