"""When an audit has sampled enough: the stopping rule of a run without a fixed length.

A default audit (neither ``draws`` nor ``burnin`` given) samples in chunks and, after each one,
asks :func:`assess` whether its estimate can be trusted. The rule, all on the main run's trace
(the warm-up stage at a larger step is never part of it):

- **burn-in by stationarity**: the first half of the main run is discarded, whatever its length
  (the "last half" rule of Stan's warm-up and of Gelman et al.), so the burn-in grows with the
  run; the kept half must then look stationary:
- **drift**: λ̂ over the kept half against λ̂ over the quarter before it, relative to λ̂, per
  doubling of the chains' sampling time. A trace still climbing towards equilibrium shows it
  (on singular models the climb is slow, roughly logarithmic in steps: comparing consecutive
  doublings of the run sees it where comparing the two halves of the kept window does not:
  measured on a 5-layer DLN at 20,000 steps, the kept halves agreed within 0.1% while the
  doubling test said +5.6%, and λ̂ was 10% low). The clock is the chains' age in steps of the
  current size, Σε/ε since w*: a window that starts after a warm-up at a larger step or after
  the step was lowered spans less than a doubling of that age, and its raw drift is scaled up
  to one. Without that a 5-layer DLN (d 24,693, λ 1575) passed at +1.1% over a window of a
  third of a doubling and stopped 8.4% low, while sampled on to 100,000 steps it climbed
  4-7% per doubling throughout. Each window's λ̂ is taken net of its predicted bias (as the
  reported λ̂ is): at a fixed step that bias grows as the chains stiffen, and its climb alone
  read +4% per doubling on 3- and 6-layer DLNs whose λ̂ was within 1.6% of λ. The drift must
  also be **resolved**: its standard error at most ``max_drift`` (or half a unit of λ on small
  models, :func:`resolution`), else a window too noisy to see a climb of several times the
  bound would pass it by chance;
- **settling** after the step was lowered mid-run: the window that restarts there must span a
  doubling of the chains' age (``settle``). Lowering the step drops the stiff modes' energy
  quickly while the slow ones go on climbing, and early on the two cancel in the drift: on a
  3-layer DLN (d 19,037, λ 1942) the window right after such a change showed −0.3% per doubling
  and stopped 5.5% low, while the same chains sampled on from w* at that step climbed 3-4% per
  doubling to 60,000 steps. A lowering whose window could not span that before the step cap is
  declined while the predicted bias is within the verdict's 5% (it is corrected): it could only
  end the run at its cap on a short window (``llc._too_late``);
- **split R-hat** (rank-normalized, bulk and tail) of the kept draws at most ``max_rhat``;
- **bulk ESS** of the kept draws, over all chains, at least ``until_ess``;
- **Monte Carlo error** of λ̂ (sd / sqrt(ESS of the mean), relative to λ̂) at most ``max_mcse``;
- at least :data:`MIN_DRAWS` draws per chain.

It stops early, without converging, when w* is plainly not a minimum (the kept loss sits below
L_n(w*) beyond minibatch noise and λ̂ < 0; or, in ``llc``, w*'s slope makes more than
:data:`lambdascope.llc.diagnostics.SLOPE_FAIL` of λ̂): no amount of sampling makes that estimate right.
Otherwise it stops at ``max_steps`` steps per chain or ``max_seconds``, and says which: the
verdict then carries a warning naming what was still missing.

Why these defaults. λ̂ is a mean, so what must be trusted is its precision and its stationarity,
not every quantile of the posterior:
- MCSE ≤ 2% of λ̂ keeps the Monte Carlo part of the error inside the 3% accuracy the estimator
  is held to, next to the calibrated step's ~2% bias; 1% doubled or tripled run lengths on deep
  DLNs for no gain in accuracy there, and small models (λ ≈ 6, per-draw sd ≈ 40% of λ̂) hardly
  ever reached it with 4 chains (the ESS stops growing once slow modes dominate).
- drift ≤ 2%: the drift of two windows whose means each carry ~1-2% error is itself uncertain
  by ~2%, so a tighter bound would mostly measure noise and only lengthen runs.
- bulk ESS ≥ 200 (50 per chain at the default 4): enough for the MCSE and R-hat to be estimated
  to about ±5% of themselves. Stan's 100 per chain (Vehtari et al. 2021) serves posterior
  quantiles; singular posteriors have slow modes that keep the ESS of a window near a few
  hundred however long it runs (measured: 260-300 on a 5-layer DLN from 20,000 to 100,000 steps).
- split R-hat ≤ 1.05: R-hat compares the chains' disagreement to the per-draw noise, so where
  that noise is small (large λ) chains agreeing within 1% of λ̂ already read 1.02 (5-layer DLN,
  100,000 steps). 1.05 still flags chains that sample different things (a 10% disagreement at
  per-draw noise of 20%); the precision of λ̂ itself is the MCSE's to judge.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lambdascope.llc import diagnostics

__all__ = ["MIN_DRAWS", "Check", "StoppingRule", "assess", "drift", "drift_error", "drift_windows", "next_chunk",
           "resolution", "unresolved"]

MIN_DRAWS = 100  # kept draws per chain before any check may pass
FIRST_CHUNK = 400  # steps of the main run before the first check
MIN_CHUNK = 100
GROWTH = 0.25  # each later chunk adds this fraction of the main run so far
HALF_UNIT = 0.5  # λ units: the drift is resolved to within this much per doubling on small models (resolution)


@dataclass(frozen=True)
class StoppingRule:
    until_ess: float = 200.0
    max_rhat: float = 1.05
    max_mcse: float = 0.02
    max_drift: float = 0.02
    max_steps: int = 100_000  # per chain: warm-up stage + main run (calibration excluded)
    max_seconds: float = 1800.0  # wall time of the whole estimate, calibration included


@dataclass
class Check:
    """What one look at the main run's trace found."""

    steps: int  # main-run steps so far
    burnin: int  # of them, discarded (the first half)
    draws: int  # kept per chain (after thinning)
    llc: float
    ess: float
    rhat: float
    mcse: float  # relative to |λ̂|
    drift: float  # relative to |λ̂| per doubling of the chains' age, signed (+ = still rising)
    drift_error: float = math.nan  # the drift's standard error, in the same units
    not_a_minimum: bool = False
    missing: list[str] = field(default_factory=list)  # the criteria not yet met, as shown

    @property
    def met(self) -> bool:
        return not self.missing

    def status(self, rule: StoppingRule) -> str:
        """What the run is waiting for, e.g. "ESS 23/200, R-hat 1.08/1.05, MCSE 3.1%/2%, drift +4.0%/2% per
        doubling (±1.1%/2.0%)" (the drift's error against the resolution it must reach)."""
        return (f"ESS {_num(self.ess, '.0f')}/{rule.until_ess:g}, R-hat {_num(self.rhat, '.3f')}/{rule.max_rhat:g}, "
                f"MCSE {_pct(self.mcse)}/{100 * rule.max_mcse:g}%, "
                f"{_drift_text(self.drift, self.drift_error, rule, resolution(self.llc, rule))}")


def _num(v: float, spec: str) -> str:
    return format(v, spec) if math.isfinite(v) else "n/a"


def _pct(v: float, signed: bool = False) -> str:
    if math.isinf(v):
        return "inf"
    return f"{100 * v:{'+' if signed else ''}.1f}%" if math.isfinite(v) else "n/a"


def _drift_text(d: float, error: float, rule: StoppingRule, bound: float | None = None) -> str:
    """E.g. "drift +4.0%/2% per doubling (±1.1%)": the error tells a climb (+4.0% ± 1.1%) from a
    window too short to measure one (+748% ± 900% a few thousand steps after a lowered step);
    ``bound``: the resolution the error must reach (:func:`resolution`), shown as "(±2.6%/2.0%)"."""
    known = f" (±{_pct(error)}{'' if bound is None else '/' + _pct(bound)})" if math.isfinite(error) else ""
    return f"drift {_pct(d, signed=True)}/{100 * rule.max_drift:g}% per doubling{known}"


WindowBias = Callable[[int, int], tuple[float, float]]


def drift(energy: np.ndarray, start: int, age: float = 0.0, bias: WindowBias | None = None) -> float:
    """Relative change of λ̂ from the window before ``start`` to the kept window [start, T), per
    doubling of the chains' age.

    ``energy`` is nβ·(L − L_n(w*)) shaped (chains, T); ``age`` is the chains' age at the trace's
    first step, in steps of the trace's size. The earlier window is as long as half the kept
    one, ending at ``start`` (consecutive doublings of the age when start = T/2 and age = 0);
    when the trace has no room for it, the kept window's two halves are compared instead. The
    change is divided by log2 of the ratio of the windows' mid-ages. nan when λ̂ is 0 or a window
    is empty. ``bias(lo, hi)``: the step's predicted bias over steps [lo, hi) and its error
    (calibration.window_bias); each window's λ̂ is then taken net of it, so the climb of the
    bias as the chains stiffen at a fixed step is not read as λ̂ still climbing (what is
    reported is λ̂ net of that bias).
    """
    windows = _compared(energy, start, age, bias)
    if windows is None:
        return math.nan
    earlier, later, doublings, _ = windows
    return float((later - earlier) / abs(later) / doublings)


def drift_error(energy: np.ndarray, start: int, age: float = 0.0, bias: WindowBias | None = None) -> float:
    """Standard error of :func:`drift` (relative to λ̂, per doubling): the Monte Carlo errors of
    its two windows' means (sd / sqrt(ESS) each), and of their predicted biases when ``bias``
    is given, combined, over the doublings between them. nan where :func:`drift` is, or where a
    window is too short for its ESS."""
    windows = _compared(energy, start, age, bias)
    if windows is None:
        return math.nan
    _, later, doublings, errors = windows
    return float(math.hypot(*errors) / abs(later) / doublings)


def _compared(energy: np.ndarray, start: int, age: float, bias: WindowBias | None
              ) -> tuple[float, float, float, list[float]] | None:
    """(λ̂ over the earlier window, over the kept one, doublings between them, the errors of
    both) of :func:`drift`, each net of its predicted bias where ``bias`` gives one; None where
    there is nothing to compare."""
    t = energy.shape[1]
    if t - start < 2:
        return None
    lo, mid, doublings = drift_windows(t, start, age)
    levels, errors = [], []
    for a, b in ((lo, mid), (mid, t)):
        window = energy[:, a:b]
        if window.size == 0:
            return None
        level = float(window.mean())
        error = diagnostics.mcse_relative(window, 0.0) * abs(level)
        predicted, predicted_error = bias(a, b) if bias is not None else (math.nan, math.nan)
        if math.isfinite(predicted):
            level, error = level - predicted, math.hypot(error, predicted_error)
        levels.append(level)
        errors.append(error)
    if levels[1] == 0 or not math.isfinite(levels[1]):
        return None
    return levels[0], levels[1], doublings, errors


def drift_windows(steps: int, start: int, age: float = 0.0) -> tuple[int, int, float]:
    """(lo, mid, doublings): :func:`drift` compares [lo, mid) with [mid, steps) of a trace whose
    kept window starts at ``start``, over ``doublings`` of the chains' age between their middles."""
    kept = steps - start
    before = kept // 2
    lo, mid = (start - before, start) if start >= before > 0 else (start, start + kept // 2)
    return lo, mid, math.log2((age + (mid + steps) / 2) / (age + (lo + mid) / 2))


def assess(losses: np.ndarray, nbeta: float, init_loss: float, rule: StoppingRule, thin: int = 1,
           age: float = 0.0, settle: float = 0.0, bias: WindowBias | None = None) -> Check:
    """Judge the main run's minibatch losses (chains, steps) against the rule; ``age``: the
    chains' age at the first of them, in steps of their size (see :func:`drift`); ``settle``:
    steps the window must span before it may pass (after the step was lowered: see the module
    docstring); ``bias``: the predicted bias over a span of those steps, which the drift test
    takes off each window (:func:`drift`)."""
    losses = np.asarray(losses, dtype=np.float64)
    steps = losses.shape[1]
    burnin = steps // 2
    kept = losses[:, burnin::thin]
    energy = nbeta * (losses - init_loss)
    llc = float(energy[:, burnin:].mean()) if steps > burnin else math.nan
    ess = diagnostics.effective_sample_size(kept)
    rhat = diagnostics.split_rhat(kept)
    mcse = diagnostics.mcse_relative(kept, init_loss)
    d = drift(energy, burnin, age, bias)
    check = Check(steps=steps, burnin=burnin, draws=kept.shape[1], llc=llc, ess=ess, rhat=rhat,
                  mcse=mcse, drift=d, drift_error=drift_error(energy, burnin, age, bias))
    below = diagnostics.below_init_segments(kept, init_loss)
    check.not_a_minimum = llc < 0 and math.isfinite(below) and below > diagnostics.BELOW_INIT_FAIL
    missing = check.missing
    if kept.shape[1] < MIN_DRAWS:
        missing.append(f"draws {kept.shape[1]}/{MIN_DRAWS}")
    if steps < settle:
        missing.append(f"{steps}/{settle:.0f} steps since the step was lowered")
    if not ess >= rule.until_ess:
        missing.append(f"ESS {_num(ess, '.0f')}/{rule.until_ess:g}")
    if kept.shape[0] >= 2 and not rhat <= rule.max_rhat:
        missing.append(f"R-hat {_num(rhat, '.3f')}/{rule.max_rhat:g}")
    if not mcse <= rule.max_mcse:
        missing.append(f"MCSE {_pct(mcse)}/{100 * rule.max_mcse:g}%")
    if not abs(d) <= rule.max_drift:
        missing.append(_drift_text(d, check.drift_error, rule))
    elif unresolved(check, rule):
        missing.append(f"drift error ±{_pct(check.drift_error)}/{_pct(resolution(llc, rule))} per doubling "
                       f"(too noisy to tell a climb)")
    return check


def unresolved(check: Check, rule: StoppingRule) -> bool:
    """The check's drift is within its bound but not measured finely enough to say so
    (:func:`resolution`; an unknown error counts as too large)."""
    return abs(check.drift) <= rule.max_drift and not check.drift_error <= resolution(check.llc, rule)


def resolution(llc: float, rule: StoppingRule) -> float:
    """The largest standard error (relative to λ̂, per doubling) at which the drift test can pass:
    ``max_drift``, or half a unit of λ where λ̂ is small enough that this is the larger.

    A drift within its bound says nothing when its own error is several times that bound: on a
    100-parameter regression whose inputs span a condition number of 10⁴ the window read −1.9%
    ± 3.9% per doubling while λ̂ was still climbing 2-5% per doubling, and the audit stopped `ok`
    18% low. Half a unit of λ is one direction's share of a regular model's d/2: a climb smaller
    than that per doubling is below what λ̂ can mean on a small model (λ ≈ 2.5 would otherwise need
    a 0.05 resolution, hundreds of thousands of steps)."""
    return max(rule.max_drift, HALF_UNIT / abs(llc)) if math.isfinite(llc) and llc != 0 else rule.max_drift


def next_chunk(done: int, left: int, seconds_left: float, steps_per_second: float) -> int:
    """Steps to run before the next check: about GROWTH of the run so far, at least MIN_CHUNK,
    never past the step cap and, at the measured speed, about never past the time cap."""
    want = FIRST_CHUNK if done == 0 else max(MIN_CHUNK, int(GROWTH * done))
    if math.isfinite(steps_per_second) and steps_per_second > 0 and math.isfinite(seconds_left):
        want = min(want, max(1, int(seconds_left * steps_per_second)))
    return max(0, min(want, left))
