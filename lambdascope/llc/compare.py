"""Whether two LLC estimates differ by more than the estimator's noise.

Each audit's chains are independent estimates of λ; the question is whether the chain means of
two audits come from the same λ. The test is a permutation test on the pooled chain estimates
(every split of the chains into two groups of the audits' sizes, exactly when there are at most
20,000 splits, else 20,000 drawn ones): it assumes nothing about their distribution, and with
4 chains a side its smallest possible p-value is 2/70 ≈ 0.029. The difference also gets a Welch
interval (± t·SE with the chain spreads, t from Welch–Satterthwaite degrees of freedom).

The chains of one audit are not the whole of its noise: they share where the run stopped, and on
deep networks λ̂ still drifts then (lambdascope.llc.uncertainty), so two audits of one network can
differ by far more than their chains' spread (a six-layer DLN: 25 λ-units apart, chains spread
1.6). Given each audit's standard error, the interval is the wider of the Welch one and
± 1.96·√(se_a² + se_b²), and a difference counts as beyond the noise only when the permutation
test says so and that interval excludes zero.
"""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Difference", "compare_chains"]

MAX_SPLITS = 20_000
ALPHA = 0.05
Z95 = 1.96
# Two-sided 95% quantiles of Student's t by degrees of freedom (1..30); beyond 30 the normal's.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


@dataclass(frozen=True)
class Difference:
    """b − a with its 95% interval, the permutation p-value, and whether it exceeds the noise."""

    difference: float
    low: float
    high: float
    p_value: float
    significant: bool  # p < ALPHA and, given the audits' standard errors, the interval excludes 0
    smallest_p: float  # the smallest p-value these chain counts can give
    within_errors: bool = False  # the chains alone say significant; the audits' standard errors do not


def compare_chains(a: Sequence[float], b: Sequence[float], *, errors: tuple[float, float] | None = None,
                   seed: int = 0) -> Difference:
    """Compare the per-chain estimates of two audits (at least two chains each); ``errors``: the
    two audits' standard errors (lambdascope.llc.uncertainty), which widen the interval."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each audit needs at least two chains to compare against its noise")
    if not all(math.isfinite(v) for v in a + b):
        raise ValueError("per-chain estimates must be finite")
    diff = _mean(b) - _mean(a)
    va, vb = _var(a) / len(a), _var(b) / len(b)
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / ((va**2 / (len(a) - 1)) + (vb**2 / (len(b) - 1))) if va + vb > 0 else math.inf
    t = _T95[min(len(_T95), max(1, int(dof))) - 1] if dof < 30.5 else Z95
    pooled, k = a + b, len(a)
    total = math.comb(len(pooled), k)
    if total <= MAX_SPLITS:
        splits = itertools.combinations(range(len(pooled)), k)
        count = total
    else:
        rng = random.Random(seed)
        splits = (rng.sample(range(len(pooled)), k) for _ in range(MAX_SPLITS))
        count = MAX_SPLITS
    whole = sum(pooled)
    at_least = 0
    for chosen in splits:
        first = sum(pooled[i] for i in chosen)
        if abs((whole - first) / len(b) - first / k) >= abs(diff) - 1e-12 * (1 + abs(diff)):
            at_least += 1
    p = at_least / count
    smallest = (2 if len(a) == len(b) else 1) / total  # the observed split (and its mirror)
    half = t * se
    if errors is not None:
        if not all(math.isfinite(e) and e >= 0 for e in errors):
            raise ValueError("standard errors must be finite and non-negative")
        half = max(half, Z95 * math.hypot(*errors))
    chains_say = p < ALPHA
    beyond = chains_say and (errors is None or abs(diff) > half)
    return Difference(diff, diff - half, diff + half, p, beyond, smallest, within_errors=chains_say and not beyond)


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def _var(v: list[float]) -> float:
    m = _mean(v)
    return sum((x - m) ** 2 for x in v) / (len(v) - 1)
