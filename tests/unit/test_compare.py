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
