"""What people read off stored audit reports, one definition for the CLI, the HTML pages and the
notebook SDK: the verdict's name, a trajectory's points and stages, how two audits compare."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lambdascope.llc.compare import Difference, compare_chains
from lambdascope.llc.stages import Stage, detect_stages
from lambdascope.llc.uncertainty import StandardError, combine
from lambdascope.v1 import audit_pb2

__all__ = ["Comparison", "compare", "drift", "energy_trace", "incomparable", "slope", "stages", "standard_error", "stderr",
           "trajectory_points", "uncertainty", "verdict", "warmup_and_burnin"]


def verdict(report: audit_pb2.AuditReport) -> str:
    """"ok", "warning" or "failed"."""
    return audit_pb2.VerdictState.Name(report.verdict.state).removeprefix("VERDICT_STATE_").lower()


def drift(d: audit_pb2.Diagnostics) -> str:
    """E.g. "+1.2% per doubling (± 0.8%)"; reports stored before the error was kept (0) show none."""
    if not math.isfinite(d.drift):
        return "n/a"
    error = f" (± {100 * d.drift_error:.1f}%)" if math.isfinite(d.drift_error) and d.drift_error > 0 else ""
    return f"{100 * d.drift:+.1f}% per doubling{error}"


def slope(report: audit_pb2.AuditReport) -> str:
    """E.g. "|∇L_n(w*)| 0.03, its part of λ̂ -5.9 (-12%)": how far w* is from a stationary point
    and what that made of λ̂ (lambdascope.llc.stationarity)."""
    d, mean = report.diagnostics, report.llc.mean
    if not d.HasField("gradient_norm"):
        return "not measured (the report predates it)"
    if not math.isfinite(d.gradient_norm):
        return "not measured"
    if report.llc.slope_removed:
        return f"|∇L_n(w*)| {d.gradient_norm:.3g}, the loss sampled less its tangent plane there (λ̂ holds no slope)"
    if not math.isfinite(d.slope_term):
        return f"|∇L_n(w*)| {d.gradient_norm:.3g}"
    share = f" ({100 * d.slope_term / abs(mean):+.0f}%)" if mean and math.isfinite(mean) else ""
    return f"|∇L_n(w*)| {d.gradient_norm:.3g}, its part of λ̂ {d.slope_term:+.3g}{share}"


def standard_error(report: audit_pb2.AuditReport) -> StandardError:
    """λ̂'s standard error and its parts (lambdascope.llc.uncertainty), from the report's
    numbers: the same figure as the stored LLCEstimate.standard_error, and for reports stored
    before that was kept, the only one."""
    llc, d = report.llc, report.diagnostics
    return combine(llc.mean, llc.std, len(llc.per_chain), d.mcse_relative, d.drift, d.drift_error,
                   llc.uncorrected_mean or None)


def stderr(report: audit_pb2.AuditReport) -> float:
    """Standard error of λ̂ (:func:`standard_error`'s total)."""
    return report.llc.standard_error if report.llc.standard_error > 0 else standard_error(report).total


def uncertainty(report: audit_pb2.AuditReport) -> str:
    """What the standard error is made of, e.g. "standard error: Monte Carlo 2.2 and drift 14.9, one
    doubling at +1.4% per doubling (± 0.5%) net of that noise"."""
    se = standard_error(report)
    d = report.diagnostics
    if not se.drift_measured:
        return "standard error: Monte Carlo only, the run too short to measure whether λ̂ still drifts"
    if se.drift == 0:
        return f"standard error: Monte Carlo; the drift, {drift(d)}, is within its own noise"
    return (f"standard error: Monte Carlo {se.monte_carlo:.2g} and drift {se.drift:.2g}, one doubling at "
            f"{drift(d)} net of that noise")


def energy_trace(report: audit_pb2.AuditReport) -> tuple[np.ndarray, np.ndarray]:
    """(steps, nβ·(L − L_n(w*)) shaped (chains, points)) from the stored traces: the mean over
    the kept points is λ̂ as sampled. A point of a trace stored as block means sits at its
    block's middle step."""
    stride = max(1, report.trace_stride)
    values = np.array([list(t.loss) for t in report.traces], dtype=np.float64).reshape(len(report.traces), -1)
    steps = np.arange(values.shape[1]) * stride + (stride - 1) / 2
    return steps, report.config.sampler.nbeta * (values - report.init_loss)


def warmup_and_burnin(report: audit_pb2.AuditReport) -> tuple[int, int]:
    """(warm-up steps, burn-in steps) per chain, the warm-up counted in the burn-in."""
    if report.HasField("stopping") and report.stopping.steps:
        return int(report.stopping.warmup_steps), int(report.stopping.burnin)
    return 0, int(report.config.sampler.burnin)


def trajectory_points(reports: list[audit_pb2.AuditReport]) -> list[audit_pb2.AuditReport]:
    """The checkpoints of an LLC-over-training run whose λ̂ means something: those at a minimum
    (a checkpoint taken before training converged has no λ̂)."""
    return [r for r in reports if not r.verdict.not_at_minimum]


def stages(reports: list[audit_pb2.AuditReport]) -> list[Stage]:
    """Developmental stages (lambdascope.llc.stages) of the points at a minimum; none when fewer
    than three or when the versions carry no increasing training steps (uploaded by hand)."""
    points = trajectory_points(reports)
    steps = [r.step for r in points]
    if len(points) < 3 or steps[0] <= 0 or any(b <= a for a, b in zip(steps, steps[1:])):
        return []
    return detect_stages(steps, [r.llc.mean for r in points], [stderr(r) for r in points],
                         [r.init_loss for r in points])


def incomparable(a: audit_pb2.AuditReport, b: audit_pb2.AuditReport,
                 digests: Mapping[str, str] | None = None) -> list[str]:
    """Settings that differ between two audits, each making their λ̂ less comparable.
    ``digests`` (dataset id → sha256 of its bytes, when the caller looked them up) lets two
    datasets registered apart with the same bytes count as the same data."""
    sa, sb = a.config.sampler, b.config.sampler
    out = []
    digests = digests or {}
    same_bytes = a.dataset_id in digests and digests.get(a.dataset_id) == digests.get(b.dataset_id)
    if a.dataset_id != b.dataset_id and not same_bytes:
        out.append(f"different data ({a.dataset_id}, {b.dataset_id}): λ̂ is a property of model and data together")
    if a.config.loss != b.config.loss:
        out.append("different losses")
    if not math.isclose(sa.nbeta, sb.nbeta, rel_tol=1e-6):
        out.append(f"different nβ ({sa.nbeta:.4g}, {sb.nbeta:.4g}): λ̂ depends on the temperature")
    if not math.isclose(sa.localization, sb.localization, rel_tol=1e-6):
        out.append(f"different localization γ ({sa.localization:.3g}, {sb.localization:.3g}; an unset γ is set "
                   f"from each model's curvature): λ̂ depends on γ, so audit both with --localization "
                   f"{sa.localization:.3g} to compare them at one")
    if sa.step_size > 0 and sb.step_size > 0 and max(sa.step_size, sb.step_size) > 2 * min(sa.step_size, sb.step_size):
        out.append(f"step sizes differ by more than 2x ({sa.step_size:.3g}, {sb.step_size:.3g}); each was "
                   "calibrated for its model and its first-order bias removed, but not all of it")
    if a.llc.bias_corrected != b.llc.bias_corrected:
        out.append("one λ̂ has the step's predicted bias removed and the other not (--bias-correction)")
    return out


@dataclass(frozen=True)
class Comparison:
    """One audit against the first of a comparison."""

    base: audit_pb2.AuditReport
    other: audit_pb2.AuditReport
    difference: Difference | None  # None: fewer than two chains on a side, no test possible
    warnings: list[str]

    @property
    def sentence(self) -> str:
        d = self.difference
        if d is None:
            return f"{self.other.id} vs {self.base.id}: cannot judge against the noise (fewer than two chains)"
        judged = "larger than the estimator's noise" if d.significant else "within the estimator's noise"
        if d.within_errors:
            judged += (" (the chains alone would call it larger; the audits' standard errors, which include the "
                       "drift left where each run stopped, do not)")
        return (f"{self.other.id} vs {self.base.id}: ΔLLC {d.difference:+.3f} (95% interval {d.low:+.3f} … "
                f"{d.high:+.3f}), permutation p = {d.p_value:.3f} (smallest possible {d.smallest_p:.3f}): {judged}")


def compare(reports: list[audit_pb2.AuditReport], digests: Mapping[str, str] | None = None) -> list[Comparison]:
    """Each report after the first against the first: the difference of λ̂ over the chain
    estimates, its interval widened by each audit's standard error (lambdascope.llc.compare), and
    the settings that make them less comparable (``digests`` as in :func:`incomparable`)."""
    if len(reports) < 2:
        raise ValueError("compare needs at least two audit reports")
    base = reports[0]
    out = []
    for r in reports[1:]:
        enough = len(base.llc.per_chain) >= 2 and len(r.llc.per_chain) >= 2
        errors = (stderr(base), stderr(r))
        diff = compare_chains(base.llc.per_chain, r.llc.per_chain, errors=errors) if enough else None
        out.append(Comparison(base, r, diff, incomparable(base, r, digests)))
    return out
