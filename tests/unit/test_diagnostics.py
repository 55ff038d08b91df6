"""Convergence diagnostics (R-hat, ESS, below-init fraction) and the verdict's reasons."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lambdascope.llc import diagnostics as dg
from lambdascope.llc.diagnostics import (
    Diagnostics,
    below_init_fraction,
    diagnose,
    effective_sample_size,
    judge,
    split_rhat,
)


def ar1(rho: float, chains: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(chains, n))
    x = np.empty((chains, n))
    x[:, 0] = e[:, 0] / math.sqrt(1 - rho**2)  # start in the stationary distribution
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + e[:, t]
    return x


# ------------------------------------------------------------------------------ R-hat


@pytest.mark.parametrize("rank_normalize", [True, False])
def test_rhat_is_one_for_iid_chains(rank_normalize):
    draws = np.random.default_rng(0).normal(size=(4, 1000))
    assert abs(split_rhat(draws, rank_normalize=rank_normalize) - 1) < 0.01


@pytest.mark.parametrize("rank_normalize", [True, False])
def test_rhat_is_large_for_chains_with_shifted_means(rank_normalize):
    draws = np.random.default_rng(1).normal(size=(4, 500)) + np.array([0, 0, 0, 3.0])[:, None]
    assert split_rhat(draws, rank_normalize=rank_normalize) > 1.3  # ranks saturate: 1.49 vs 1.69


def test_split_rhat_sees_a_trend_shared_by_every_chain():
    rng = np.random.default_rng(2)
    draws = rng.normal(size=(4, 400)) + np.linspace(0, 3, 400)[None, :]
    assert split_rhat(draws) > 1.1


def test_tail_rhat_sees_chains_that_differ_only_in_spread():
    rng = np.random.default_rng(3)
    draws = rng.normal(size=(4, 1000)) * np.array([1, 1, 1, 5.0])[:, None]
    assert split_rhat(draws, rank_normalize=False) < 1.05  # classic R-hat: same means, blind
    assert split_rhat(draws) > 1.1  # the folded (tail) R-hat catches it


def test_rhat_is_nan_when_it_cannot_be_computed():
    rng = np.random.default_rng(4)
    assert math.isnan(split_rhat(rng.normal(size=(1, 100))))  # one chain
    assert math.isnan(split_rhat(rng.normal(size=(4, 3))))  # too few draws
    assert math.isnan(split_rhat(np.ones((4, 100))))  # constant draws
    bad = rng.normal(size=(4, 100))
    bad[2, 5] = np.nan
    assert math.isnan(split_rhat(bad))


def test_rhat_is_invariant_to_monotone_transforms_when_rank_normalized():
    draws = np.random.default_rng(5).normal(size=(4, 300)) + np.array([0, 0, 0, 0.5])[:, None]
    assert split_rhat(draws) == pytest.approx(split_rhat(np.exp(3 * draws)), rel=1e-12)


# ------------------------------------------------------------------------------ ESS


def test_ess_is_about_n_for_iid_draws():
    draws = np.random.default_rng(6).normal(size=(4, 1000))
    assert effective_sample_size(draws) == pytest.approx(4000, rel=0.15)
    assert effective_sample_size(draws, rank_normalize=False) == pytest.approx(4000, rel=0.15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ess_matches_ar1_theory(seed):
    rho, chains, n = 0.95, 4, 4000
    theory = chains * n * (1 - rho) / (1 + rho)  # ≈ 410
    draws = ar1(rho, chains, n, seed)
    assert effective_sample_size(draws) == pytest.approx(theory, rel=0.25)
    assert effective_sample_size(draws, rank_normalize=False) == pytest.approx(theory, rel=0.25)
    assert effective_sample_size(draws) < 0.2 * chains * n


def test_ess_of_one_chain_and_of_too_few_draws():
    assert effective_sample_size(np.random.default_rng(7).normal(size=1000)) == pytest.approx(1000, rel=0.2)
    assert math.isnan(effective_sample_size(np.random.default_rng(7).normal(size=(4, 3))))
    assert math.isnan(effective_sample_size(np.zeros((4, 100))))


def test_ess_drops_when_chains_sit_in_different_places():
    draws = np.random.default_rng(8).normal(size=(4, 500)) + np.arange(4)[:, None] * 2.0
    assert effective_sample_size(draws) < 100


def test_draws_must_be_two_dimensional():
    with pytest.raises(ValueError, match="chains, draws"):
        split_rhat(np.zeros((2, 3, 4)))


# ------------------------------------------------------------------------------ below init, diagnose


def test_below_init_fraction_counts_finite_draws_strictly_below():
    draws = np.array([[0.0, 1.0, 2.0, 3.0], [0.5, 1.0, np.nan, 4.0]])
    assert below_init_fraction(draws, 1.0) == pytest.approx(2 / 7)
    assert math.isnan(below_init_fraction(np.full((2, 3), np.nan), 0.0))


@pytest.mark.parametrize("ratio", [0.4, 0.25])
def test_below_init_segments_average_out_minibatch_noise(ratio):
    """At a minimum with a small gap and loud minibatch noise (the large-n regime): many single
    draws fall below L_n(w*), few stretch means do; a downhill walk is below either way."""
    rng = np.random.default_rng(12)
    init, gap = 0.05, 0.0055
    noise = gap / ratio
    slow = ar1(0.9, 4, 200, 13) * 0.3 * gap * math.sqrt(1 - 0.81)
    draws = init + gap + slow + noise * rng.normal(size=(4, 200))
    assert below_init_fraction(draws, init) > 0.25
    assert dg.below_init_segments(draws, init) < dg.BELOW_INIT_WARN
    downhill = init - 0.2 * (1 - np.exp(-np.arange(200) / 60))[None, :] + noise * rng.normal(size=(4, 200))
    assert dg.below_init_segments(downhill, init) == 1.0
    d = diagnose(draws, init)
    assert d.below_init_fraction > 0.25 and d.below_init_segments < dg.BELOW_INIT_WARN
    per = (240 * (draws.mean(axis=1) - init)).tolist()
    v = judge(d, per, float(np.mean(per)), float(np.std(per, ddof=1)))
    assert all("local minimum" not in r for r in v.reasons), v.reasons


def test_below_init_segments_layout():
    chain = [9.0] + [0.0] * 10 + [2.0] * 10 + [0.0] * 10  # the oldest leftover draw is dropped
    assert dg.below_init_segments(np.array([chain]), 1.0, segments=3) == pytest.approx(2 / 3)
    assert dg.below_init_segments(np.array([[0.0, 0.0]]), 1.0, segments=3) == 1.0  # fewer draws than segments
    assert math.isnan(dg.below_init_segments(np.full((2, 4), np.nan), 1.0))


def test_one_chain_in_a_lower_basin_fails():
    rng = np.random.default_rng(15)
    init = 0.5
    draws = init + 0.05 + 0.01 * rng.normal(size=(4, 200))
    draws[2] -= 0.2  # this chain found lower loss than w*
    d = diagnose(draws, init)
    assert d.below_init_fraction == pytest.approx(0.25) and d.below_init_segments == pytest.approx(0.25)
    per = (240 * (draws.mean(axis=1) - init)).tolist()
    v = judge(d, per, float(np.mean(per)), float(np.std(per, ddof=1)))
    assert v.state == "failed" and v.reasons[0].startswith("w* is not a local minimum") and v.not_at_minimum


def test_mcse_relative_matches_the_spread_of_independent_runs():
    rng = np.random.default_rng(14)
    init, gap = 1.0, 0.05
    runs = [init + gap + ar1(0.8, 4, 200, s) * 0.1 for s in range(200)]
    gaps = np.array([r.mean() - init for r in runs])
    observed = gaps.std() / gap  # the real run-to-run relative error of λ̂
    predicted = np.median([dg.mcse_relative(r, init) for r in runs])
    assert predicted == pytest.approx(observed, rel=0.25)
    assert math.isinf(dg.mcse_relative(np.array([[0.0, 2.0, 0.0, 2.0, 1.0, 1.0]]), 1.0))
    assert math.isnan(dg.mcse_relative(np.ones((2, 10)), 0.0))


def test_diagnose_marks_non_finite_chains_diverged_and_excludes_them():
    rng = np.random.default_rng(9)
    draws = 1.0 + 0.1 * rng.normal(size=(4, 400))
    draws[1, 300:] = np.inf
    d = diagnose(draws, init_loss=0.5, acceptance=0.93, diverged_chains=[3])
    assert d.diverged_chains == [1, 3]
    assert abs(d.rhat - 1) < 0.02  # chains 0 and 2 only
    assert d.ess == pytest.approx(800, rel=0.2)
    assert d.acceptance == 0.93
    assert d.below_init_fraction == 0.0


def test_diagnose_healthy_draws():
    rng = np.random.default_rng(10)
    d = diagnose(2.0 + 0.1 * rng.normal(size=(4, 200)), init_loss=1.5)
    assert abs(d.rhat - 1) < 0.03 and d.ess > 500 and d.below_init_fraction == 0
    assert d.diverged_chains == [] and math.isnan(d.acceptance)


# ------------------------------------------------------------------------------ verdict


def healthy(**changes) -> Diagnostics:
    d = Diagnostics(rhat=1.01, ess=600.0, acceptance=0.93, below_init_fraction=0.0, diverged_chains=[])
    for k, v in changes.items():
        setattr(d, k, v)
    return d


PER_CHAIN = [14.0, 15.0, 15.5, 14.5]
MEAN, STD = float(np.mean(PER_CHAIN)), float(np.std(PER_CHAIN, ddof=1))


def test_healthy_run_is_ok():
    v = judge(healthy(), PER_CHAIN, MEAN, STD, num_parameters=4810)
    assert v.state == "ok" and v.reasons == []
    assert judge(healthy(acceptance=math.nan), PER_CHAIN, MEAN, STD).state == "ok"  # unknown acceptance


def test_diverged_chain_fails():
    v = judge(healthy(diverged_chains=[2]), PER_CHAIN, MEAN, STD)
    assert v.state == "failed"
    assert "chain 2 of 4 diverged" in v.reasons[0] and "lower the step size" in v.reasons[0]


def test_w_star_not_a_minimum_fails():
    v = judge(healthy(below_init_fraction=0.4), PER_CHAIN, MEAN, STD)
    assert v.state == "failed"
    assert v.reasons[0].startswith("w* is not a local minimum")
    assert "below the initial loss" in v.reasons[0] and "40% of draws" in v.reasons[0]
    assert "train longer" in v.reasons[0]


def test_minibatch_noise_below_init_is_not_blamed_on_w_star():
    """Single draws below L_n(w*) that vanish once stretches of draws are averaged: noise, not w*."""
    v = judge(healthy(below_init_fraction=0.35, below_init_segments=0.0), PER_CHAIN, MEAN, STD)
    assert v.state == "ok"
    v = judge(healthy(below_init_fraction=0.35, below_init_segments=0.3), PER_CHAIN, MEAN, STD)
    assert v.state == "failed" and "35% of draws" in v.reasons[0]


def test_some_draws_below_init_warns():
    v = judge(healthy(below_init_fraction=0.15), PER_CHAIN, MEAN, STD)
    assert v.state == "warning" and "15% of draws" in v.reasons[0] and "train longer" in v.reasons[0]
    assert judge(healthy(below_init_fraction=0.05), PER_CHAIN, MEAN, STD).state == "ok"


def test_negative_llc_fails():
    per = [-5.0, -6.0, -4.0, -5.5]
    v = judge(healthy(), per, float(np.mean(per)), float(np.std(per, ddof=1)))
    assert v.state == "failed"
    assert any("negative" in r and "-5.12" in r and "train the model longer" in r for r in v.reasons)


def test_non_finite_llc_fails():
    v = judge(healthy(), [math.nan] * 4, math.nan, math.nan)
    assert v.state == "failed" and "not a finite number" in v.reasons[0]


def test_rhat_warning_and_failure():
    v = judge(healthy(rhat=1.35), PER_CHAIN, MEAN, STD)
    assert v.state == "warning"
    assert v.reasons == ["chains disagree (R-hat 1.35, want below 1.1): run more draws or a longer burn-in."]
    v = judge(healthy(rhat=2.4), PER_CHAIN, MEAN, STD)
    assert v.state == "failed" and "R-hat 2.40" in v.reasons[0] and "burn-in" in v.reasons[0]


def test_low_ess_warns():
    v = judge(healthy(ess=31.0), PER_CHAIN, MEAN, STD)
    assert v.state == "warning" and "ESS 31" in v.reasons[0] and "run more draws" in v.reasons[0]
    assert judge(healthy(ess=80.0), PER_CHAIN, MEAN, STD).state == "ok"


def test_large_monte_carlo_error_warns():
    v = judge(healthy(mcse_relative=0.18), PER_CHAIN, MEAN, STD)
    assert v.state == "warning"
    assert "imprecise" in v.reasons[0] and "18% of its value" in v.reasons[0]
    assert "run more draws" in v.reasons[0]
    v = judge(healthy(mcse_relative=math.inf), PER_CHAIN, MEAN, STD)
    assert v.state == "warning" and "averages exactly" in v.reasons[0]
    assert judge(healthy(mcse_relative=0.05), PER_CHAIN, MEAN, STD).state == "ok"


def test_low_acceptance_warns_then_fails():
    v = judge(healthy(acceptance=0.65), PER_CHAIN, MEAN, STD)
    assert v.state == "warning"
    assert "step size too large" in v.reasons[0] and "65%" in v.reasons[0]
    assert "lower the step size" in v.reasons[0]
    v = judge(healthy(acceptance=0.3), PER_CHAIN, MEAN, STD)
    assert v.state == "failed" and "step size too large" in v.reasons[0] and "30%" in v.reasons[0]


def test_large_per_chain_spread_warns():
    per = [5.0, 15.0, 25.0, 12.0]
    v = judge(healthy(), per, float(np.mean(per)), float(np.std(per, ddof=1)))
    assert v.state == "warning"
    assert "per-chain estimates disagree" in v.reasons[0] and "from 5 to 25" in v.reasons[0]
    assert "more draws" in v.reasons[0]


def test_llc_above_half_the_parameter_count_warns_then_fails():
    per = [60.0, 61.0, 59.0, 60.0]
    mean, std = float(np.mean(per)), float(np.std(per, ddof=1))
    v = judge(healthy(), per, mean, std, num_parameters=100)
    assert v.state == "warning"
    assert "d/2 = 50" in v.reasons[0] and "step size too large" in v.reasons[0]
    assert "inflated" in v.reasons[0]
    assert judge(healthy(), per, mean, std, num_parameters=200).state == "ok"
    v = judge(healthy(), per, mean, std, num_parameters=50)
    assert v.state == "failed" and "twice" in v.reasons[0]


def test_unverifiable_convergence_warns():
    v = judge(healthy(rhat=math.nan), [15.0], 15.0, 0.0)
    assert v.state == "warning" and "only one chain" in v.reasons[0] and "at least 2 chains" in v.reasons[0]
    v = judge(healthy(rhat=math.nan, ess=math.nan), PER_CHAIN, MEAN, STD)
    assert v.state == "warning" and "run more draws" in v.reasons[0]


def test_failures_come_before_warnings():
    v = judge(healthy(ess=30.0, rhat=1.2, below_init_fraction=0.9), [-3.0, -4.0], -3.5, 0.7)
    assert v.state == "failed"
    assert v.reasons[0].startswith("w* is not a local minimum")
    assert "negative" in v.reasons[1]
    assert any("R-hat 1.20" in r for r in v.reasons[2:]) and any("ESS 30" in r for r in v.reasons[2:])


def test_every_reason_says_what_to_do():
    cases = [
        healthy(diverged_chains=[0]), healthy(below_init_fraction=0.5), healthy(below_init_fraction=0.12),
        healthy(rhat=1.2), healthy(rhat=3.0), healthy(ess=10.0), healthy(acceptance=0.1),
        healthy(acceptance=0.6), healthy(rhat=math.nan),
    ]
    verbs = ("lower", "raise", "run", "train", "check")
    for d in cases:
        for reason in judge(d, PER_CHAIN, MEAN, STD, num_parameters=10).reasons:
            assert ":" in reason and any(v in reason.split(":", 1)[1] for v in verbs), reason


def test_thresholds_are_ordered():
    assert 1 < dg.RHAT_WARN < dg.RHAT_FAIL
    assert 0 < dg.BELOW_INIT_WARN < dg.BELOW_INIT_FAIL < 1
    assert 0 < dg.ACCEPTANCE_FAIL < dg.ACCEPTANCE_WARN < 1


def test_end_to_end_draws_from_a_run_that_walks_downhill_fail():
    """Loss traces that start at L_n(w*) and drift down: the signature of an undertrained w*."""
    rng = np.random.default_rng(11)
    init = 0.63
    draws = init - 0.2 * (1 - np.exp(-np.arange(200) / 60))[None, :] + 0.01 * rng.normal(size=(4, 200))
    nbeta = 240.0
    per = (nbeta * (draws.mean(axis=1) - init)).tolist()
    diag = diagnose(draws, init)
    v = judge(diag, per, float(np.mean(per)), float(np.std(per, ddof=1)), num_parameters=4810)
    assert v.state == "failed" and v.reasons[0].startswith("w* is not a local minimum") and v.not_at_minimum


def test_a_known_predicted_bias_judges_the_step_instead_of_the_acceptance_line():
    # large models run calibrated steps at acceptance ~0.75 with λ̂ within a few % of theory
    assert judge(healthy(acceptance=0.74, bias_relative=0.02), PER_CHAIN, MEAN, STD).state == "ok"
    v = judge(healthy(acceptance=0.95, bias_relative=0.08), PER_CHAIN, MEAN, STD)
    assert v.state == "warning" and "inflates λ̂ by about 8%" in v.reasons[0]
    assert "leave it unset to calibrate it" in v.reasons[0]  # a step the user gave
    # a calibrated step whose bias λ̂ has taken off: neither "inflates" nor "leave it unset"
    v = judge(healthy(acceptance=0.95, bias_relative=0.08), PER_CHAIN, MEAN, STD, bias_corrected=True,
              step_calibrated=True)
    assert v.state == "warning" and "inflated λ̂ as sampled by about 8%, which the reported λ̂ has taken off" \
        in v.reasons[0] and "leave it unset" not in v.reasons[0] and "--max-steps" in v.reasons[0], v.reasons
    assert judge(healthy(bias_relative=0.3), PER_CHAIN, MEAN, STD).state == "failed"
    # acceptance below 0.5 fails whatever the prediction; unknown bias: the 0.8 line as before
    assert judge(healthy(acceptance=0.4, bias_relative=0.01), PER_CHAIN, MEAN, STD).state == "failed"
    assert judge(healthy(acceptance=0.74), PER_CHAIN, MEAN, STD).state == "warning"


def test_drift_beyond_its_noise_warns_and_within_it_does_not():
    v = judge(healthy(drift=0.12, mcse_relative=0.01), PER_CHAIN, MEAN, STD)
    assert v.state == "warning" and v.reasons[0].startswith("λ̂ was still rising")
    assert judge(healthy(drift=0.12, mcse_relative=0.05), PER_CHAIN, MEAN, STD).state == "ok"
    assert judge(healthy(drift=-0.03, mcse_relative=0.001), PER_CHAIN, MEAN, STD).state == "ok"
    # with the drift's own standard error known, that is its noise (not the kept window's MCSE)
    v = judge(healthy(drift=0.12, drift_error=0.02, mcse_relative=0.05), PER_CHAIN, MEAN, STD)
    assert v.state == "warning" and "+12.0% ± 2.0% per doubling" in v.reasons[0], v.reasons
    assert judge(healthy(drift=0.12, drift_error=0.05, mcse_relative=0.001), PER_CHAIN, MEAN, STD).state == "ok"
