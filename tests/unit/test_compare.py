"""Comparing audits: a difference is called real only beyond the chains' noise, and settings that
make two λ̂ incomparable are named."""
from __future__ import annotations

import random

import pytest

from lambdascope.reports import views
from lambdascope.llc.compare import compare_chains
from lambdascope.v1 import audit_pb2


def test_a_clear_difference_is_significant_and_its_interval_holds_it() -> None:
    d = compare_chains([10.1, 9.8, 10.3, 9.9], [14.9, 15.2, 15.1, 14.7])
    assert d.significant and d.p_value == pytest.approx(2 / 70) and d.smallest_p == pytest.approx(2 / 70)
    assert d.low < d.difference < d.high and d.low > 4 and d.difference == pytest.approx(4.95)


def test_chains_from_one_distribution_are_rarely_called_different() -> None:
    rng = random.Random(1)
    calls = sum(compare_chains([rng.gauss(50, 2) for _ in range(4)], [rng.gauss(50, 2) for _ in range(4)]).significant
                for _ in range(400))
    assert calls / 400 < 0.08  # the test's level is 5%; with 70 splits its exact size is 4/70 ≈ 5.7%


def test_too_few_chains_are_refused() -> None:
    with pytest.raises(ValueError, match="at least two chains"):
        compare_chains([1.0], [1.0, 2.0])


def test_settings_that_differ_are_named() -> None:
    def report(nbeta: float, step: float, data: str) -> audit_pb2.AuditReport:
        r = audit_pb2.AuditReport(dataset_id=data)
        r.config.sampler.nbeta, r.config.sampler.step_size, r.config.sampler.localization = nbeta, step, 10
        return r
    same = views.incomparable(report(100, 1e-4, "ds-1"), report(100, 1.5e-4, "ds-1"))
    assert same == []
    warnings = views.incomparable(report(100, 1e-4, "ds-1"), report(200, 1e-3, "ds-2"))
    assert len(warnings) == 3 and "different data" in warnings[0] and "nβ" in warnings[1] and "2x" in warnings[2]


def test_a_different_localization_says_which_to_audit_both_at() -> None:
    a, b = audit_pb2.AuditReport(dataset_id="ds-1"), audit_pb2.AuditReport(dataset_id="ds-1")
    for r, gamma in ((a, 3.0), (b, 5.3)):
        r.config.sampler.nbeta, r.config.sampler.localization = 100, gamma
    [warning] = views.incomparable(a, b)
    assert "γ (3, 5.3" in warning and "--localization 3 " in warning


def test_the_same_bytes_registered_twice_are_the_same_data() -> None:
    a, b = audit_pb2.AuditReport(dataset_id="ds-1"), audit_pb2.AuditReport(dataset_id="ds-2")
    for r in (a, b):
        r.config.sampler.nbeta, r.config.sampler.localization = 100, 10
    assert "different data" in views.incomparable(a, b)[0]  # nothing known of their bytes
    assert views.incomparable(a, b, {"ds-1": "abc", "ds-2": "abc"}) == []
    assert "different data" in views.incomparable(a, b, {"ds-1": "abc", "ds-2": "def"})[0]


def test_audits_whose_standard_errors_hold_the_difference_are_not_called_different() -> None:
    """Tight chains, but each audit stopped while λ̂ still drifted (a standard error of 3): the chains
    alone would call 4.95 apart a difference, the audits' standard errors do not."""
    a, b = [10.1, 9.8, 10.3, 9.9], [14.9, 15.2, 15.1, 14.7]
    d = compare_chains(a, b, errors=(3.0, 3.0))
    assert not d.significant and d.within_errors and d.p_value == pytest.approx(2 / 70)
    assert d.high - d.difference == pytest.approx(1.96 * 3.0 * 2**0.5) and d.low < 0 < d.high
    small = compare_chains(a, b, errors=(0.05, 0.05))  # errors within the chains' own spread: the Welch interval
    assert small.significant and not small.within_errors
    assert (small.low, small.high) == pytest.approx((compare_chains(a, b).low, compare_chains(a, b).high))
    with pytest.raises(ValueError, match="standard errors"):
        compare_chains(a, b, errors=(float("nan"), 1.0))


def test_the_comparison_sentence_says_when_the_stop_points_explain_a_difference() -> None:
    def report(name: str, values: list[float], drift: float) -> audit_pb2.AuditReport:
        r = audit_pb2.AuditReport(id=name, dataset_id="ds-1")
        r.config.sampler.nbeta, r.config.sampler.localization = 100, 10
        r.llc.mean, r.llc.per_chain[:] = sum(values) / 4, values
        r.llc.std = float(__import__("statistics").stdev(values))
        r.diagnostics.mcse_relative, r.diagnostics.drift, r.diagnostics.drift_error = 0.002, drift, 0.005
        return r
    a = report("rep-a", [1000, 1001, 999, 1000.5], 0.015)
    b = report("rep-b", [1025, 1026, 1024, 1025.5], 0.012)
    [c] = views.compare([a, b])
    assert not c.difference.significant and "drift left where each run stopped" in c.sentence, c.sentence
    steady = [report("rep-a", [1000, 1001, 999, 1000.5], 0.0), report("rep-b", [1025, 1026, 1024, 1025.5], 0.0)]
    [c] = views.compare(steady)  # the same chains, no drift left: 25 apart is beyond the noise
    assert c.difference.significant and "larger than the estimator's noise" in c.sentence, c.sentence
