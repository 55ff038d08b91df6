"""λ̂'s standard error: it covers what a rerun stopped elsewhere gives, where the chains' spread
and the Monte Carlo error alone do not, and the report states the same figure the views compute."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from lambdascope.llc import diagnostics, stopping
from lambdascope.llc.uncertainty import combine
from lambdascope.reports import views
from tests import report_samples as samples


def _run(steps: int, climb: float, seed: int, level: float = 1000.0, sd: float = 40.0, rho: float = 0.9,
         chains: int = 4) -> np.ndarray:
    """Energies nβ(L − L*) of ``chains`` chains over ``steps`` steps: a level that rises by
    ``climb`` of itself per doubling of the age (the slow climb of deep networks), plus AR(1) noise."""
    rng = np.random.default_rng(seed)
    noise = np.empty((chains, steps))
    noise[:, 0] = rng.normal(0, 1, chains)
    for t in range(1, steps):
        noise[:, t] = rho * noise[:, t - 1] + math.sqrt(1 - rho**2) * rng.normal(0, 1, chains)
    age = np.arange(1, steps + 1)
    return level * (1 + climb * np.log2(age / 16_000)) + sd * noise


def _audit(energy: np.ndarray) -> tuple[float, float]:
    """(λ̂ over the last half, its standard error) as the estimator reads a trace (nβ = 1, L* = 0)."""
    start = energy.shape[1] // 2
    kept = energy[:, start:]
    spread = float(kept.mean(axis=1).std(ddof=1))
    se = combine(float(kept.mean()), spread, kept.shape[0], diagnostics.mcse_relative(kept, 0.0),
                 stopping.drift(energy, start), stopping.drift_error(energy, start))
    return float(kept.mean()), se.total


def test_a_climb_left_at_the_stop_is_in_the_standard_error() -> None:
    """Two runs of one climbing chain process, stopped a doubling apart, differ by about one
    doubling's climb; the standard error holds that, the Monte Carlo part alone is several times short."""
    short, short_se = _audit(_run(8_000, 0.015, seed=1))
    long, long_se = _audit(_run(16_000, 0.015, seed=2))
    gap = long - short
    assert 8 < gap < 22  # 1.5% of ~1000 per doubling, one doubling apart
    assert abs(gap) / math.hypot(short_se, long_se) < 1.96
    kept = _run(8_000, 0.015, seed=1)[:, 4_000:]
    monte_carlo = diagnostics.mcse_relative(kept, 0.0) * kept.mean()
    assert abs(gap) / (math.sqrt(2) * monte_carlo) > 3


def test_stationary_reruns_are_covered_without_inflating_the_error_far_past_their_spread() -> None:
    runs = [_audit(_run(6_000, 0.0, seed=s)) for s in range(24)]
    z = [abs(a[0] - b[0]) / math.hypot(a[1], b[1]) for a, b in zip(runs[::2], runs[1::2], strict=True)]
    assert sum(v <= 1.96 for v in z) >= 11  # of 12 pairs
    assert 0.3 < np.median(z)  # |z| of a standard normal has median 0.67: an error twice too wide gives ~0.34


def test_the_parts_combine_as_documented() -> None:
    se = combine(mean=1000, std=4.0, chains=4, mcse_relative=0.003, drift=0.015, drift_error=0.005)
    assert se.monte_carlo == pytest.approx(3.0)  # the larger of 0.3% of 1000 and 4/√4
    net = math.sqrt(0.015**2 - 0.005**2) * 1000  # the drift less its measurement noise, in quadrature
    assert se.drift == pytest.approx(net) and se.total == pytest.approx(math.hypot(3.0, net))
    noise = combine(mean=1000, std=4.0, chains=4, mcse_relative=0.003, drift=-0.004, drift_error=0.006)
    assert noise.drift_measured and noise.drift == 0 and noise.total == pytest.approx(3.0)
    unmeasured = combine(mean=1000, std=4.0, chains=4, mcse_relative=0.001, drift=math.nan, drift_error=math.nan)
    assert not unmeasured.drift_measured and unmeasured.total == pytest.approx(2.0)


def test_the_stored_standard_error_is_the_one_the_views_compute() -> None:
    report = samples.audited()
    assert report.llc.standard_error > 0
    assert views.standard_error(report).total == pytest.approx(report.llc.standard_error, rel=1e-6)
    assert views.stderr(report) == report.llc.standard_error
    old = samples.variant(report)
    old.llc.standard_error = 0.0  # stored before the field was kept: computed from the report's numbers
    assert views.stderr(old) == pytest.approx(report.llc.standard_error, rel=1e-6)
    assert "standard error" in views.uncertainty(report)


def test_the_report_views_still_load_without_torch() -> None:
    """The CLI reads reports through the views; torch would add a second to every command."""
    code = "import lambdascope.reports.views, sys; assert 'torch' not in sys.modules, 'torch loaded'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
