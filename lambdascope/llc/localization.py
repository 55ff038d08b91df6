"""The default localization γ: set from the loss's curvature at w*, not a constant.

Why. The pull (γ/2)·‖w − w*‖² is measured in the weights' units, the loss's curvature in the
data's: on w*'s quadratic part a direction of curvature h keeps only nβh/(nβh + γ) of its share
of λ̂. One γ cannot suit every model. On the DLN benchmark (inputs U(−10, 10), n = 1e5) nβ·h_top
is 5.6e4-3.6e6 and λ̂ reads alike at γ = 1, 3 and 10, while γ = 3 there doubles the deep
networks' time (a mixing cost, not an accuracy gain). On weakly curved models γ = 10 takes a
visible part off λ̂: softmax regressions on standardized features (λ = (K − 1)(p + 1)/2 exactly,
nβ·h_top 180-230) read 10-13% low at γ = 10 and 2.5-3.8% low at γ = 3; a DLN on N(0, 1) inputs
(nβ·h_top 3,500) 6.7% low at 10, 3.7% at 3 (docs/benchmarks.md §4zb).

The rule. ``γ = nβ·h_top / 1000``, kept within [3, 10], with h_top the top eigenvalue of the
loss Hessian at w* (calibration measures it anyway). h_top serves as the scale of the model's
curvature, the rest of the spectrum lying below it: stiff models keep γ = 10 (every benchmark
DLN), weakly curved ones get 3. Not lower: at γ = 1 the softmax regressions read 1.6-5.1% HIGH
(the chains reach where the cross-entropy is no longer quadratic) and an MLP's chains stop
being local. Without an eigenvalue the old constant 10 stands.

A γ chosen per model means two models' λ̂ may come from different γ; the report states it and
compares say so. Give the localization to hold it fixed, e.g. along a training run.
"""
from __future__ import annotations

import math

__all__ = ["CURVATURE_SHARE", "GAMMA_MAX", "GAMMA_MIN", "default_localization", "describe"]

GAMMA_MIN, GAMMA_MAX = 3.0, 10.0
CURVATURE_SHARE = 1e-3  # γ = this fraction of nβ·h_top, within [GAMMA_MIN, GAMMA_MAX]


def default_localization(nbeta: float, top_eigenvalue: float) -> float:
    """γ for a run that left it unset; ``top_eigenvalue`` h of the loss Hessian at w* (nan if
    it could not be measured: then :data:`GAMMA_MAX`, the earlier constant)."""
    if not math.isfinite(top_eigenvalue):
        return GAMMA_MAX
    return min(GAMMA_MAX, max(GAMMA_MIN, CURVATURE_SHARE * nbeta * max(top_eigenvalue, 0.0)))


def describe(gamma: float, nbeta: float, top_eigenvalue: float) -> str:
    """One sentence for the calibration summary: the γ chosen and from what."""
    if not math.isfinite(top_eigenvalue):
        return (f"localization γ = {gamma:g} (no Hessian eigenvalue to set it from: the fixed default); "
                "give the localization to choose it")
    return (f"localization γ = {gamma:.3g} set from the curvature (nβ·h = {nbeta * top_eigenvalue:.4g}; "
            f"γ = nβ·h/{1 / CURVATURE_SHARE:g} within [{GAMMA_MIN:g}, {GAMMA_MAX:g}]); give the localization "
            "to hold it fixed when comparing models")
