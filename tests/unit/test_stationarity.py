"""w*'s slope against theory: a linear regression audited off its least-squares minimum.

The MSE loss of a linear regression is exactly quadratic, L(w) = L(w_ls) + ½(w − w_ls)ᵀH(w − w_ls),
so at a point w0 = w_ls + δ, where ∇L(w0) = g = Hδ, the localized tempered posterior is Gaussian
with mean w0 + μ, μ = −A⁻¹·nβ·g, A = nβH + γI, and everything the estimator reads has a closed form:

    λ̂ (the loss as it is)    = ½ tr(nβH·A⁻¹) + nβ·gᵀμ + ½ nβ·μᵀHμ
    slope term nβ·g·(w − w0)  = nβ·gᵀμ
    λ̂ (tangent plane removed) = ½ tr(nβH·A⁻¹)          (the same as at the minimum itself)
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from lambdascope.llc import diagnostics
from lambdascope.llc.audit import AuditSettings, run_audit
from lambdascope.llc.llc import SGLDConfig, default_nbeta
from lambdascope.llc.stationarity import loss_gradient

mse = torch.nn.functional.mse_loss
N, P = 2000, 10
# a fixed length at a small given step: the closed forms hold for the exact posterior
CONFIG = SGLDConfig(step_size=2e-4, burnin=1000, draws=3000, localization=3.0, seed=1)


def _regression(shift: float) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor, dict[str, float]]:
    """The fitted regression moved ``shift`` off its minimum, with the closed forms above."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, P, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(P, 1, generator=gen, dtype=torch.float64) + 0.5 * torch.randn(N, 1, generator=gen, dtype=torch.float64)
    design = torch.cat([x, torch.ones(N, 1, dtype=torch.float64)], dim=1)
    least = torch.linalg.lstsq(design, y).solution
    delta = torch.randn(P + 1, 1, generator=gen, dtype=torch.float64)
    delta *= shift / delta.norm()
    w0 = least + delta
    model = torch.nn.Linear(P, 1).double()
    with torch.no_grad():
        model.weight.copy_(w0[:P].T)
        model.bias.copy_(w0[P])
    nbeta, gamma = default_nbeta(N), CONFIG.localization
    hessian = 2 * design.T @ design / N
    a = nbeta * hessian + gamma * torch.eye(P + 1, dtype=torch.float64)
    g = hessian @ delta
    mu = -torch.linalg.solve(a, nbeta * g)
    curvature = 0.5 * torch.trace(nbeta * hessian @ torch.linalg.inv(a)).item()
    slope = (nbeta * g.T @ mu).item()
    raw = curvature + slope + (0.5 * nbeta * mu.T @ hessian @ mu).item()
    return model, x, y, {"removed": curvature, "raw": raw, "slope": slope, "gradient": g.norm().item()}


def test_the_gradient_at_w_star_is_the_full_data_gradient() -> None:
    model, x, y, theory = _regression(0.3)
    names = [n for n, _ in model.named_parameters()]
    g = loss_gradient(model, x, y, mse, names, batch_size=256)  # batches of unequal size
    assert g is not None and g.shape == (P + 1,)
    assert g.norm().item() == pytest.approx(theory["gradient"], rel=1e-9)


def test_off_its_minimum_the_slope_s_part_of_lambda_matches_theory_and_fails_the_audit() -> None:
    model, x, y, theory = _regression(0.3)  # the slope's part is -47 against a λ of 5.5
    audit = run_audit(model, x, y, mse, AuditSettings(CONFIG), device="cpu")
    llc = audit.llc
    assert llc.slope_term == pytest.approx(theory["slope"], rel=0.05)
    assert llc.mean == pytest.approx(theory["raw"], rel=0.05)
    assert llc.gradient_norm == pytest.approx(theory["gradient"], rel=1e-6)
    assert audit.verdict.state == "failed" and audit.verdict.not_at_minimum
    assert any("not a stationary point" in r for r in audit.verdict.reasons)


def test_with_the_tangent_plane_removed_the_minimum_s_lambda_comes_back() -> None:
    model, x, y, theory = _regression(0.3)
    audit = run_audit(model, x, y, mse, AuditSettings(dataclasses.replace(CONFIG, remove_slope=True)), device="cpu")
    assert audit.llc.slope_removed
    assert audit.llc.mean == pytest.approx(theory["removed"], rel=0.05)  # 5.5, where the loss as it is reads -18
    assert not any("stationary" in r or "minimum" in r for r in audit.verdict.reasons)


def test_a_small_slope_warns_and_none_at_the_minimum() -> None:
    model, x, y, theory = _regression(0.05)  # the slope's part: about a quarter of λ̂
    share = abs(theory["slope"] / theory["raw"])
    assert diagnostics.SLOPE_WARN < share < diagnostics.SLOPE_FAIL
    audit = run_audit(model, x, y, mse, AuditSettings(CONFIG), device="cpu")
    assert abs(audit.diagnostics.slope_relative) == pytest.approx(share, rel=0.1)
    assert audit.verdict.state == "warning"
    assert any("not a stationary point" in r for r in audit.verdict.reasons)

    model, x, y, theory = _regression(0.0)
    audit = run_audit(model, x, y, mse, AuditSettings(CONFIG), device="cpu")
    assert audit.llc.gradient_norm < 1e-9
    assert abs(audit.llc.slope_term) < 1e-6
    assert not any("stationary" in r for r in audit.verdict.reasons)


@pytest.mark.parametrize(("share", "state"), [(0.05, "ok"), (-0.2, "warning"), (0.2, "warning"), (-0.6, "failed")])
def test_the_verdict_s_lines_for_the_slope(share: float, state: str) -> None:
    diag = diagnostics.Diagnostics(rhat=1.0, ess=400.0, acceptance=0.95, below_init_fraction=0.0,
                                   slope_relative=share)
    verdict = diagnostics.judge(diag, [10.0, 10.2, 9.9, 10.1], 10.05, 0.13)
    assert verdict.state == state
    assert verdict.not_at_minimum == (state == "failed")
    assert any("not a stationary point" in r for r in verdict.reasons) == (state != "ok")


def test_a_run_that_chooses_its_length_stops_when_the_slope_makes_most_of_lambda() -> None:
    model, x, y, theory = _regression(0.1)  # the slope's part: -5.2 of a λ̂ of +2.9 (about 180%)
    assert theory["raw"] > 0 and abs(theory["slope"] / theory["raw"]) > diagnostics.SLOPE_FAIL
    audit = run_audit(model, x, y, mse, AuditSettings(SGLDConfig(seed=1)), device="cpu")  # the defaults
    stop = audit.llc.stopping
    assert stop.reason == "not_a_minimum", stop.summary
    assert "slope" in stop.summary
    assert audit.verdict.state == "failed" and audit.verdict.not_at_minimum

    model, x, y, _ = _regression(0.0)
    assert run_audit(model, x, y, mse, AuditSettings(SGLDConfig(seed=1)), device="cpu").llc.stopping.reason == "converged"
