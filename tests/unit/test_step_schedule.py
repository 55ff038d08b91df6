"""Calibration owns the step size: the one bias formula, the mid-run retune and the restart after
a divergence (lambdascope.llc.calibration), each on a trace whose statistics are set by hand so
the expected answer follows from the formulas' definitions."""
from __future__ import annotations

import math

import pytest
import torch

from lambdascope.llc import calibration
from lambdascope.llc.calibration import CalibrationResult
from lambdascope.llc.sgld import SamplerDivergedError, SGLDTrace


def _trace(*, curvature: float, noise: float, acceptance: float, loss: float, steps: int = 40,
           chains: int = 2, scored_from: int = 0) -> SGLDTrace:
    scored = torch.arange(scored_from, steps, 2)
    full = lambda v: torch.full((chains, len(scored)), float(v), dtype=torch.float64)  # noqa: E731
    return SGLDTrace(losses=torch.full((chains, steps), loss, dtype=torch.float64), vectorized=True, seconds=1.0,
                     accept_steps=scored, acceptance=full(acceptance), curvature=full(curvature),
                     grad_noise=full(noise), localization_energy=full(0.0), final=torch.zeros(chains, 3))


def _calibrated(step: float = 1e-3) -> CalibrationResult:
    return CalibrationResult(ran=True, chosen_step_size=step, summary="chosen.", warmup_step_size=4 * step)


def test_the_bias_formula_is_curvature_over_8_plus_step_times_noise_over_16() -> None:
    trace = _trace(curvature=8.0, noise=1600.0, acceptance=0.9, loss=1.0)
    assert calibration.predicted_bias(trace, 0, 1e-2) == pytest.approx(1.0 + 1.0)
    # only the scored steps from `from_step` on count; all of them when none are that late
    late = _trace(curvature=8.0, noise=0.0, acceptance=0.9, loss=1.0)
    late.curvature[:, : late.curvature.shape[1] // 2] = 800.0
    assert calibration.predicted_bias(late, 20, 1e-2) == pytest.approx(1.0)
    assert calibration.predicted_bias(late, 10_000, 1e-2) == pytest.approx((100 + 1) / 2)
    unscored = SGLDTrace(losses=torch.zeros(2, 5), vectorized=True, seconds=0.0, accept_steps=torch.zeros(0),
                         acceptance=torch.zeros(2, 0), curvature=torch.zeros(2, 0), grad_noise=torch.zeros(2, 0),
                         localization_energy=torch.zeros(2, 0), final=torch.zeros(2, 1))
    assert math.isnan(calibration.predicted_bias(unscored, 0, 1e-2))


def test_a_step_whose_bias_grew_is_cut_to_the_target() -> None:
    # λ̂ of the chunk = nβ (E L − L*) = 100 · (1.5 − 1.0) = 50; bias 80/8 = 10: 20% of λ̂
    part = _trace(curvature=80.0, noise=0.0, acceptance=0.95, loss=1.5)
    step, why, share = calibration.retune(_calibrated(), part, 1e-3, nbeta=100.0, init_loss=1.0, retunes_so_far=0)
    assert step == pytest.approx(1e-3 * max(0.25, calibration.DEFAULT_TARGET_BIAS / 0.2))
    assert "predicted bias 20.0% of λ̂" in why and share == pytest.approx(0.2)
    # twice the target (4%) and less is left alone; bias 1.6/8 = 0.2 is 0.4% of λ̂
    fine = _trace(curvature=1.6, noise=0.0, acceptance=0.95, loss=1.5)
    assert calibration.retune(_calibrated(), fine, 1e-3, 100.0, 1.0, 0) is None


def test_low_acceptance_halves_the_step() -> None:
    part = _trace(curvature=1.6, noise=0.0, acceptance=0.3, loss=1.5)
    step, why, share = calibration.retune(_calibrated(), part, 1e-3, 100.0, 1.0, 0)
    assert step == pytest.approx(5e-4) and "acceptance 0.30" in why and math.isnan(share)


def test_a_given_step_or_a_spent_budget_is_never_retuned() -> None:
    part = _trace(curvature=80.0, noise=0.0, acceptance=0.3, loss=1.5)
    assert calibration.retune(calibration.given(1e-3), part, 1e-3, 100.0, 1.0, 0) is None
    assert calibration.retune(_calibrated(), part, 1e-3, 100.0, 1.0, calibration.MAX_RETUNES) is None


def test_a_diverged_calibrated_run_restarts_at_a_quarter_of_the_step_and_says_so() -> None:
    result = _calibrated(1e-3)
    err = SamplerDivergedError("boom", chain=1, step=77, loss=1e9)
    assert calibration.after_divergence(result, err, 0) == pytest.approx(1e-3 / calibration.RETRY_FACTOR)
    assert result.chosen_step_size == pytest.approx(2.5e-4)
    assert "diverged (chain 1, step 77" in result.summary and "restarted from w* at step size 0.00025" in result.summary
    assert calibration.after_divergence(result, err, calibration.MAX_RETRIES) is None


def test_a_given_steps_divergence_is_the_users_to_see() -> None:
    result = calibration.given(1e-3)
    assert not result.ran and result.chosen_step_size == result.warmup_step_size == 1e-3
    assert calibration.after_divergence(result, SamplerDivergedError("boom"), 0) is None
    assert math.isnan(calibration.given(None).chosen_step_size)
