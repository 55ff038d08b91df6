"""Known learning coefficients, used as ground truth when testing the estimator.

Deep linear networks are singular models whose true λ is known in closed form (Aoyagi 2024),
which makes them the standard check that an LLC estimator sees singularity rather than just
counting parameters (a regular model would give d/2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction


def dln_learning_coefficient(widths: Sequence[int], rank: int) -> float:
    """λ of a bias-free deep linear network with layer widths H_0 (input) … H_L (output).

    ``rank`` is the rank r of the true end-to-end matrix. Follows Aoyagi's formula: Δ_j = H_j − r;
    Σ is the smallest prefix (ℓ + 1 ≥ 2 entries) of the sorted Δ with max Δ_Σ < min Δ outside,
    S ≥ ℓ·max Δ_Σ and S < ℓ·min Δ outside, where S = ΣΔ over Σ.
    """
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths must list at least two positive sizes (got {tuple(widths)})")
    if not 0 <= rank <= min(widths):
        raise ValueError(f"rank must be in [0, min(widths)={min(widths)}] (got {rank})")
    deltas = sorted(h - rank for h in widths)
    for size in range(2, len(deltas) + 1):
        inside, outside = deltas[:size], deltas[size:]
        ell, total = size - 1, sum(inside)
        if outside and not max(inside) < min(outside):
            continue
        if total < ell * max(inside) or (outside and not total < ell * min(outside)):
            continue
        a = total - (math.ceil(total / ell) - 1) * ell
        pairs = sum(inside[i] * inside[j] for i in range(size) for j in range(i + 1, size))
        value = (
            Fraction(-rank * rank + rank * (widths[0] + widths[-1]), 2)
            + Fraction(a * (ell - a), 4 * ell)
            - Fraction((ell - 1) * total * total, 4 * ell)
            + Fraction(pairs, 2)
        )
        return float(value)
    raise ValueError(f"no index set satisfies Aoyagi's conditions for {tuple(widths)}, r={rank}")
