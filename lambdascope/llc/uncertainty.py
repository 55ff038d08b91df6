"""The standard error of λ̂: how far another run's estimate may lie, not only how far one run's
chains lie apart.

The chains' spread (``LLCResult.std``, the "±" devinterp reports) measures how the chains of one
run differ. On deep networks it misses what makes two runs differ: λ̂ still climbs slowly when
the stopping rule lets a run end (by up to ``max_drift`` per doubling of the chains' age), so
where a run stops sets its level. A six-layer DLN read −8.2% and −6.0% of λ in two default runs
(stopped at 24,196 and 86,596 steps), 25 λ-units apart, where each run's chains spread by 1.6.

The standard error has two parts, combined in quadrature:

- **Monte Carlo**: the larger of the MCSE (sd / √ESS of all kept draws) and the chains' spread
  / √chains (independent chains). Each estimates the same error and each can read low: the ESS
  of a slowly wandering window, the spread of four chains.
- **drift**: one doubling's worth of the change the kept draws still show, net of the drift
  measurement's own noise: √max(0, drift² − drift_error²)·|λ̂| (drift² overstates the squared
  real drift by its error², on average). How far λ̂ would move if the run went on as long again,
  what two runs stopped a doubling apart differ by. Unknown (nan) where the run was too short to
  measure a drift; the standard error is then the Monte Carlo part alone and says so.

Why net of the noise: a drift that its own error explains is the two windows' Monte Carlo error
again, already in the first part. Over 51 pairs of reruns of 17 default audits of deep linear
networks (docs/benchmarks.md §4zl) this standard error held 50 of the pairs' differences within
1.96 of their combined error (median |z| 0.60; a standard normal's is 0.67); counting the drift's
error as drift where it was the larger held all 51 at a median of 0.31, about twice as wide as the
differences, which would blunt every comparison.

It does not cover what no length of run changes: the gap between the estimator's limit at this
nβ and the λ of theory (docs/benchmarks.md §4za, §4zi), nor the first-order bias correction's
remainder: on runs 20-27's deep networks λ lay within 1.96 of them in 8 of 29 audits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["StandardError", "combine", "standard_error"]


@dataclass(frozen=True)
class StandardError:
    """λ̂'s standard error and its two parts, in λ units."""

    total: float
    monte_carlo: float
    drift: float  # nan: not measured (the run was too short to compare two windows)

    @property
    def drift_measured(self) -> bool:
        return math.isfinite(self.drift)


def combine(mean: float, std: float, chains: int, mcse_relative: float, drift: float,
            drift_error: float, uncorrected_mean: float | None = None) -> StandardError:
    """The standard error from a report's numbers: ``std`` the chains' spread over ``chains``,
    ``mcse_relative`` relative to λ̂ as sampled (``uncorrected_mean``, else ``mean``), ``drift``
    and ``drift_error`` relative to ``mean`` per doubling (lambdascope.llc.stopping.drift)."""
    sampled = mean if uncorrected_mean is None or not math.isfinite(uncorrected_mean) else uncorrected_mean
    parts = [std / math.sqrt(chains) if chains > 1 and math.isfinite(std) else math.nan,
             mcse_relative * abs(sampled) if math.isfinite(mcse_relative) else math.nan]
    finite = [p for p in parts if math.isfinite(p)]
    monte_carlo = max(finite) if finite else math.nan
    noise = drift_error if math.isfinite(drift_error) else 0.0
    drift_part = math.sqrt(max(0.0, drift**2 - noise**2)) * abs(mean) if math.isfinite(drift) else math.nan
    total = math.hypot(monte_carlo, drift_part) if math.isfinite(drift_part) else monte_carlo
    return StandardError(total, monte_carlo, drift_part)


def standard_error(llc) -> StandardError:
    """The standard error of an estimate (a lambdascope.llc.LLCResult) from its kept draws."""
    from lambdascope.llc import diagnostics  # loads torch: the report views need only combine

    kept = np.asarray([trace[llc.burnin::llc.thin] for trace in llc.traces], dtype=np.float64)
    finite = kept[np.isfinite(kept).all(axis=1)] if kept.size else kept
    mcse = diagnostics.mcse_relative(finite, llc.init_loss) if finite.size else math.nan
    return combine(llc.mean, llc.std, len(llc.per_chain), mcse, llc.drift, llc.drift_error, llc.uncorrected_mean)
