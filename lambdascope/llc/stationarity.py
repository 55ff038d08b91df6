"""Is w* a stationary point of L_n? The full-data gradient there, and the share of λ̂ it makes.

Why. λ̂ = nβ·(E[L_n(w)] − L_n(w*)) is the LLC only at a local minimum. Where g = ∇L_n(w*) is not
zero the chains slide down it until the localization holds them, and each draw's excess loss
has a first-order part nβ·g·(w − w*) that belongs to the slope, not to the geometry of the
minimum. In the quadratic model (curvature h, localization γ) a direction holding gradient g_i
moves λ̂ by −(nβ·g_i)²·(nβh/2 + γ)/(nβh + γ)²: between −(nβ·g_i)²/(2nβh) where the loss is stiff
and −(nβ·g_i)²/γ where it is flat, so on a singular model's flat directions even a small
gradient can take a large part off λ̂, and how much depends on γ and on how far the chains have
slid, not on the model alone. A checkpoint taken mid-training is such a point.

So the sampler measures the term rather than predicting it: every scored step records
nβ·g·(w − w*) per chain (:func:`lambdascope.llc.sgld.run_sgld`'s ``slope``), and the estimate
reports its mean over the kept draws, in λ̂'s units (``LLCResult.slope_term``). At a minimum
it is zero up to noise of order √(nβ²·gᵀΣg) per draw (Σ the chains' covariance), which a
trained network's small residual gradient keeps far below λ̂; the verdict warns when it
exceeds :data:`lambdascope.llc.diagnostics.SLOPE_WARN` of |λ̂| and fails above
:data:`lambdascope.llc.diagnostics.SLOPE_FAIL` (w* is then no minimum of the loss audited).

Asked for (``SGLDConfig.remove_slope``), the chains sample the loss less its tangent plane,
L_n(w) − g·(w − w*) (its Bregman divergence from w*), for which w* is a stationary point:
the move's pull then points at w* + (nβ/γ)·g instead of w*, which adds nβ·g to every step's
drift at no cost, and each recorded loss has g·(w − w*) taken off. On a quadratic loss that
gives the minimum's λ̂ from any point (tests/unit/test_stationarity.py checks both readings
against their closed forms); it is not the default (``SGLDConfig``'s docstring says why).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch.func import grad

from lambdascope.llc.sgld import _chain_loss, _sampled_layout

__all__ = ["loss_gradient"]

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def loss_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                  names: Sequence[str], batch_size: int) -> torch.Tensor | None:
    """∇L_n(w*) over the parameters ``names``, flattened in the sampler's layout, summed over
    batches as Σ_b (|b|/n)·∇L_b (exact for a loss that is a mean over its batch). None, with a
    logged warning, when the model cannot be differentiated this way: the slope is a diagnostic,
    and the sampler reports its own failure on such a model."""
    layout, fixed, center = _sampled_layout(model, names)
    n = x.shape[0]

    def summed(vectorized: bool) -> torch.Tensor:
        gradient = grad(_chain_loss(model, layout, loss_fn, vectorized))
        total = torch.zeros_like(center)
        for i in range(0, n, max(1, batch_size)):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            total.add_(gradient(center, fixed, xb, yb), alpha=xb.shape[0] / n)
        return total

    try:
        try:
            total = summed(vectorized=True)
        except Exception:  # noqa: BLE001 - a fixed-batch program's chunks may not vmap under grad
            total = summed(vectorized=False)
    except Exception as err:  # noqa: BLE001 - a diagnostic must not stop the audit
        log.warning("no gradient at w* (%s: %s): the audit reports no slope term", type(err).__name__, err)
        return None
    return total if bool(torch.isfinite(total).all()) else None
