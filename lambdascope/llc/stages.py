"""Developmental stages in an LLC-over-training curve: stretches where λ̂ rises, falls or stays
level, each with what the loss does meanwhile.

Singular learning theory reads a training run's development off λ̂(t): a network that learns a
new piece of structure climbs to a higher λ̂, and a stretch where the loss stays flat while λ̂
falls is the "pruning" the free-energy trade-off predicts.

How: λ̂ against log(step) is cut into straight pieces, meeting at checkpoints, by optimal
partitioning: the cut that minimizes the pieces' weighted squared residuals (weights 1 / standard
error², each audit's standard error: Monte Carlo and the drift left at its stop,
lambdascope.llc.uncertainty) plus ``penalty`` per piece. With the estimator's own noise as the
yardstick, pure noise costs about one per point and never pays for a cut, while a real change of
direction removes far more than ``penalty``: no boundary from noise. Each piece is "up" or
"down" when its slope is more than ``z`` of its own standard errors from zero, else "flat";
neighbouring pieces with the same reading merge into one stage. The loss is read on each stage
against ``loss_tolerance`` of its range over the run, and as moved when it halves or doubles.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Stage", "detect_stages"]

Z = 3.0  # standard errors a slope must exceed to count as up or down
PENALTY = 2 * Z**2  # cost of one more piece, in χ² units: two fitted numbers and a cut
LOSS_TOLERANCE = 0.02  # of the loss's range over the run: smaller moves count as flat


@dataclass(frozen=True)
class Stage:
    """Checkpoints ``first`` … ``last`` (indices) spanning training steps ``start`` … ``end``."""

    first: int
    last: int
    start: int
    end: int
    llc: str  # "up", "down" or "flat"
    loss: str  # "down", "up", "flat", or "unknown" when no loss was given
    llc_change: float  # λ̂ at the end minus at the start

    @property
    def label(self) -> str:
        return f"λ̂ {self.llc}" if self.loss == "unknown" else f"λ̂ {self.llc}, loss {self.loss}"


def detect_stages(steps: Sequence[int], llc: Sequence[float], llc_stderr: Sequence[float],
                  loss: Sequence[float] | None = None, *, z: float = Z, penalty: float = PENALTY,
                  loss_tolerance: float = LOSS_TOLERANCE) -> list[Stage]:
    """Stages of a curve of checkpoints at increasing positive ``steps`` (λ̂ and its standard
    error at each; optionally the loss). Fewer than two points give no stage."""
    n = len(steps)
    if len(llc) != n or len(llc_stderr) != n or (loss is not None and len(loss) != n):
        raise ValueError("steps, llc, llc_stderr (and loss) must have one entry per checkpoint")
    if any(s <= 0 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError("steps must be positive and increase")
    if any(not math.isfinite(v) for v in llc) or any(not (s >= 0) for s in llc_stderr):
        raise ValueError("llc must be finite and llc_stderr non-negative at every checkpoint")
    if n < 2:
        return []
    x = [math.log(s) for s in steps]
    scale = max(abs(v) for v in llc) or 1.0
    w = [1.0 / max(s, 1e-6 * scale) ** 2 for s in llc_stderr]
    fit = _Fits(x, list(llc), w)
    pieces = _partition(n, fit, penalty)
    readings = [_direction(fit, i, j, z) for i, j in pieces]
    merged: list[tuple[int, int, str]] = []
    for (i, j), reading in zip(pieces, readings):
        if merged and merged[-1][2] == reading:
            merged[-1] = (merged[-1][0], j, reading)
        else:
            merged.append((i, j, reading))
    span = (max(loss) - min(loss)) if loss is not None else 0.0
    stages = []
    for i, j, reading in merged:
        trend = "unknown" if loss is None else _loss_move(loss[i], loss[j], loss_tolerance * span)
        stages.append(Stage(i, j, steps[i], steps[j], reading, trend, llc[j] - llc[i]))
    return stages


class _Fits:
    """Weighted straight-line fits of y on x over any run of points, from prefix sums."""

    def __init__(self, x: list[float], y: list[float], w: list[float]):
        self.sums = [[0.0] * 6]
        for xi, yi, wi in zip(x, y, w):
            last = self.sums[-1]
            self.sums.append([last[0] + wi, last[1] + wi * xi, last[2] + wi * yi, last[3] + wi * xi * xi,
                              last[4] + wi * xi * yi, last[5] + wi * yi * yi])

    def line(self, i: int, j: int) -> tuple[float, float, float]:
        """(slope, its standard error, weighted residual sum of squares) over points i..j."""
        sw, sx, sy, sxx, sxy, syy = (b - a for a, b in zip(self.sums[i], self.sums[j + 1]))
        sxx_c = sxx - sx * sx / sw
        syy_c = max(0.0, syy - sy * sy / sw)
        if j == i or sxx_c <= 0:
            return 0.0, math.inf, syy_c
        slope = (sxy - sx * sy / sw) / sxx_c
        return slope, math.sqrt(1.0 / sxx_c), max(0.0, syy_c - slope * slope * sxx_c)


def _partition(n: int, fit: _Fits, penalty: float) -> list[tuple[int, int]]:
    """Optimal partitioning of points 0..n-1 into pieces that meet at a shared checkpoint
    (piece [b, e] then [e, f]), so a jump between two level stretches is a piece of its own."""
    best = [0.0] + [math.inf] * (n - 1)  # best[e]: cost of the pieces covering points 0..e
    cut = [0] * n
    for end in range(1, n):
        for begin in range(0, end):
            cost = best[begin] + fit.line(begin, end)[2] + penalty
            if cost < best[end]:
                best[end], cut[end] = cost, begin
    pieces, end = [], n - 1
    while end > 0:
        pieces.append((cut[end], end))
        end = cut[end]
    return pieces[::-1]


def _direction(fit: _Fits, i: int, j: int, z: float) -> str:
    slope, stderr, _ = fit.line(i, j)
    if not math.isfinite(stderr) or abs(slope) <= z * stderr:
        return "flat"
    return "up" if slope > 0 else "down"


def _loss_move(a: float, b: float, tolerance: float) -> str:
    """A move beyond ``tolerance`` (a share of the loss's range over the run), or by a factor of
    two: a late fall from 0.07 to 0 after an early one from 5.7 is small against the range but
    is the loss going down all the same."""
    if b < a - tolerance or (a > 0 and b < a / 2):
        return "down"
    if b > a + tolerance or (b > 0 and a >= 0 and b > 2 * a):
        return "up"
    return "flat"
