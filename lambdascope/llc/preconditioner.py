"""A diagonal preconditioner for SGLD, re-estimated as the chains stiffen.

Why: on singular models the chains drift along flat directions into stiffer regions (on deep
linear networks tr ∇²L grew elevenfold over a 100,000-step run, docs/benchmarks.md §4u), so the
one step size that keeps the stiffest directions' bias small keeps shrinking, and every
direction, the flat ones included, moves ever more slowly. Any fixed positive-definite M samples
the same posterior with ``w ← w − (ε/2)·M∇U + √ε·M^½ξ``; a diagonal M that shrinks the stiff
coordinates' moves lets ε stay large for the rest.

M is estimated from the gradients the chains see: at stationarity E[(∂U/∂w_i)²] = E[∂²U/∂w_i²]
(integration by parts), so the mean squared gradient of U per coordinate, ``h_i``, measures its
stiffness (minibatch noise included, which inflates the bias the same way). Then
``M_i = (max(h_i, γ) / min_j max(h_j, γ))^(−POWER)``: the flattest coordinates (floored at the
localization γ, the stiffness every coordinate has) get exactly 1, so ε keeps its meaning there
and the chains' age Σε stays the flat directions' clock. POWER ½ goes half way to
equalizing the stiffness (a full inverse trusts the noisy estimate too much: measured on deep
linear networks, bench/preconditioned_sgld.py).

M changes only between chunks of a run, each time from the chunks since the last estimate; the
predicted bias of a step (calibration.predicted_bias) keeps its meaning because the sampler's
probes measure the move it made (ε·nβ·tr(M∇²L) along it).
"""
from __future__ import annotations

import torch

POWER = 0.5
MIN_SAMPLES = 400  # scored gradients (steps × chains) an estimate needs


def diagonal(moments: torch.Tensor, samples: int, localization: float) -> torch.Tensor | None:
    """M (D,) float64 from Σ (∂U)² over ``samples`` scored gradients; None when there are too few
    to estimate it or the localization is 0 (no floor to scale by)."""
    if samples < MIN_SAMPLES or localization <= 0 or moments.numel() == 0:
        return None
    stiffness = (moments.double() / samples).clamp(min=localization)
    if not bool(torch.isfinite(stiffness).all()):
        return None
    return (stiffness / stiffness.min()).pow(-POWER)


def bias_ratio(m: torch.Tensor, moments: torch.Tensor) -> float:
    """tr(M·H) / tr(H) with H's diagonal estimated by ``moments``: by how much M scales the
    step's discretization bias (ε/8)·nβ·tr(∇²L) at a given ε."""
    h = moments.double()
    total = float(h.sum())
    return float((m.double() * h).sum()) / total if total > 0 else 1.0
