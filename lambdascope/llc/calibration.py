"""Automatic step-size calibration for the SGLD LLC estimator.

Why not "acceptance ≈ 0.9": the MALA acceptance of an SGLD step says how far one step is from an
exact Metropolis step, but how that translates into bias of λ̂ depends on the dimension. For a
Gaussian posterior with d equally stiff directions, ε·a = stiffness × step, the stationary
ULA chain has ``log α ≈ −(ε/8)·Σ a_i²·(x_i'² − x_i²)``, so ``1 − acceptance ≈ 0.1·√(d·(εa)³)``,
while the relative bias of λ̂ is ``εa/4``. At acceptance 0.9 that is a +20% bias for d = 2, +9%
for d = 20 (measured: +21% at 0.89 on a 20-parameter linear regression), +2.6% for d = 864 and
< 1% for d = 20 000. A single acceptance target is therefore too lax for small models and too
strict for large ones. Acceptance is still measured and reported (and is the fallback criterion
when λ̂ itself is unusable); the step size is chosen on a direct estimate of the bias instead.

The bias estimate. To first order in ε, Euler–Maruyama on a Gaussian posterior inflates the
expected loss energy nβ·(E L − L*) by ``(ε/8)·nβ·tr ∇²L`` (discretization) plus
``(ε/8)·nβ²·tr Cov(∇L_B)`` (minibatch gradient noise); both sums are basis-free and are measured
along the chains for free by the acceptance computation (see :mod:`lambdascope.llc.sgld`:
``curvature`` and ``grad_noise``). Checked against long runs: linear regression (λ = 10):
ε = 3e-3, 1e-3, 3e-4, 1e-4 → λ̂ − 10 = 9.1, 2.15, 0.68, 0.25; predicted 9.4, 2.0, 0.53, 0.17.
DLN (10, 20, 10), λ = 50, n = 1e5: ε = 2e-6 … 1.25e-7 → λ̂ 56.2, 52.9, 51.5, 50.8, 50.4; minus the
predicted bias 50.2, 50.3, 50.2, 50.2, 50.1. On a ReLU MLP (sklearn digits) the prediction is
conservative (it over-predicts), which only makes the chosen step smaller.

The procedure (:func:`calibrate`, then :func:`refine` inside the main run), all with the run's
own chains, batch size, nβ, γ and weight decay:

1. Curvature scale: the top Hessian eigenvalue h of the loss at w*, by power iteration on a
   subsample of at most 2048 examples; the stiffest direction of the potential has
   a = nβ·h + γ + wd (Euler–Maruyama is unstable beyond ε = 4/a).
2. A log grid ε_k = (0.5/a)·2^(−k); the first candidate (predicted bias ≈ 12% for a regular
   model) is stable but visibly biased.
3. Each candidate runs a short pilot segment (every second step scored); on its second half:
   λ̂, the acceptance, and the predicted bias. Chains CONTINUE from segment to segment when a
   segment's predicted bias is below 30% (else they are rolled back: far-off states would slow
   the next segment down), so larger early steps act as a fast burn-in.
4. A candidate passes if it is stable (no non-finite or exploding loss, acceptance ≥ 0.05,
   λ̂ not beyond twice the regular ceiling d/2) and its predicted bias is at most
   ``target_bias`` (2%) of λ_ref, the larger of its own λ̂ and the best "λ̂ − bias" of the
   larger stable pilots (a short pilot from w* has not relaxed: its own λ̂ is too low). The
   search jumps along the grid using the bias being linear in ε, and stops at the largest
   passing grid step whose larger neighbour fails (or must fail: bias at 2ε is 2×).
5. Budget: the pilots take about ``calibration_budget`` (25%) of the main run's chain-steps
   (floor: four 24-step segments for tiny runs). If none passes in the budget, the grid step
   the bias predicts to pass is taken (said in the summary).
6. Refinement (:func:`refine`): the main run's first half of burn-in runs at a warm-up step
   (up to min(16, burnin/60) times the pilots' choice, never above a step a pilot saw stable
   with bias < 30%; faster diffusion along flat directions) with every second step scored;
   its far better relaxed λ̂ and bias set the final step, ε·target·λ_ref/bias, kept within
   [choice/4, 2·warm-up] and below any unstable step. The rest of the run uses it.
7. Safety net: if a calibrated main run still diverges (singular potentials stiffen without
   bound along their flat arms, beyond what a pilot sees), it restarts from w* at a quarter of
   the step, at most twice, and the summary says so.

Measured with it, no per-case tuning: the bench/dln.py suite (4 chains, 1000 + 1000 steps, γ = 1,
n = 1e5, batch 500, float32) gave relative errors +1.7, −1.3, +2.7, +1.9, −25.8 (L5-deep: still
rising, these chains are far too short for it), −9.4, +0.9, −1.3, −3.6%; the speed-864 DLN −8.4%.
Linear regression λ = 10 → 10.1-10.3; DLN (4, 3, 4) λ = 6 → 6.03; the digits MLP 64→256→10
(γ = 10, 4 chains, 1000 + 1000 steps) 29.3 and 28.9 at ε ≈ 3e-4 against ≈ 30 from long runs; with
the default 200 + 200 steps it is still rising (12-18) and the summary says so.

γ, when not given, is set from h (:mod:`lambdascope.llc.localization`), and checked either way:
the summary warns when γ exceeds 0.3·nβ·h (it then shrinks λ̂), when
λ̂ was still rising through the chosen pilot (not yet equilibrated, or not localized: raise
burnin or γ), and says whether the localization relaxes (1/(ε·γ) steps) within the run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from lambdascope.llc import diagnostics
from lambdascope.llc.compiled import GradientCompiler
from lambdascope.llc.sgld import LossFn, SamplerDivergedError, run_sgld

log = logging.getLogger(__name__)

__all__ = ["CalibrationCandidate", "CalibrationResult", "DEFAULT_TARGET_BIAS", "Lowered", "after_divergence",
           "calibrate", "given", "loss_curvature", "predicted_bias", "refine", "retune"]

DEFAULT_TARGET_BIAS = 0.02  # predicted bias of λ̂ allowed, as a fraction of λ̂
GRID_FACTOR = 2.0  # neighbouring candidates differ by this factor
SCORE_EVERY = 2  # pilots score every second step (one extra gradient each)
MIN_SEGMENT, MAX_SEGMENT = 24, 400  # pilot segment length in steps
MIN_SEGMENTS, MAX_SEGMENTS = 4, 12
KEEP_BIAS = 0.3  # a segment's end states seed the next only if its predicted bias is below this
REFERENCE_BIAS = 0.5  # ... and its λ̂ − bias serves as the reference λ if the bias is below this
WARMUP_MAX = 16.0  # the main run's first half of burn-in runs at up to this multiple of the step
WARMUP_RELAX = 60  # ... and at most burnin / WARMUP_RELAX times it (see calibrate)
EXPECTED_SEGMENTS = 4  # the budget is split into about this many segments
MIN_ACCEPTANCE = 0.05  # below this the step is plainly broken, whatever the bias says
MAX_RETRIES = 2  # restarts of a calibrated main run that diverged (see after_divergence) ...
RETRY_FACTOR = 4.0  # ... each at this fraction of the step
MAX_RETUNES = 8  # step-size reductions a run that chooses its length may make (see retune)
RETUNE_BIAS = 0.04  # predicted bias above this fraction of λ̂ (twice the target) ...
RETUNE_ACCEPTANCE = 0.5  # ... or acceptance below this lowers the step
HESSIAN_SUBSAMPLE = 2048  # examples the power iteration runs on, at most ...
HESSIAN_MIN_SUBSAMPLE = 64  # ... and at least, when a deadline shrinks it
HESSIAN_ITERATIONS = 20
HESSIAN_TIME_SHARE = 0.25  # of calibration's time (to its deadline) the power iteration may use


@dataclass
class CalibrationCandidate:
    step_size: float
    acceptance: float  # mean MALA acceptance over the segment's second half
    llc: float  # λ̂ over the segment's second half (short: a rough value)
    stable: bool
    note: str
    bias: float = math.nan  # predicted first-order bias of λ̂ at this step size (λ units)
    steps: int = 0  # steps the segment ran (fewer if it diverged)


@dataclass
class CalibrationResult:
    ran: bool
    chosen_step_size: float
    candidates: list[CalibrationCandidate] = field(default_factory=list)
    summary: str = ""
    seconds: float = 0.0
    target_bias: float = DEFAULT_TARGET_BIAS
    top_eigenvalue: float = math.nan  # of the loss Hessian at w* (subsample), nan if unavailable
    localization: float = math.nan  # γ the run used (chosen from top_eigenvalue when not given)
    # step size of the first half of the main run's burn-in (see estimate_llc and refine)
    warmup_step_size: float = math.nan
    reference_llc: float = math.nan  # best estimate of λ from the pilots (λ̂ − predicted bias)
    unstable_step_size: float = math.inf  # smallest step a pilot found unstable
    # The chains' states where calibration left them (chains, D) on the sampling device; used to
    # start the main run, then dropped by estimate_llc (never part of a report).
    states: torch.Tensor | None = field(default=None, repr=False, compare=False)


def loss_curvature(model, x, y, loss_fn, params: Sequence[str], seed: int, deadline: float | None) -> float:
    """Top Hessian eigenvalue of the loss at w* on a seeded subsample; nan if it cannot be had.
    It sets calibration's first step and the default localization
    (:mod:`lambdascope.llc.localization`).

    With calibration's ``deadline`` (a ``time.perf_counter()`` value) it gets
    :data:`HESSIAN_TIME_SHARE` of the time to it: the subsample shrinks (to :data:`HESSIAN_MIN_SUBSAMPLE` at least) until
    :data:`HESSIAN_ITERATIONS` products fit before it, as timed on one warm product of that
    minimum size. It halves through powers of two, so timing noise seldom changes it, nor the
    estimate: a model whose 20 products take a small part of the time always gets the full
    subsample. Fewer iterations would be no substitute: a few products from a random start
    give a Rayleigh quotient near the mean eigenvalue, orders of magnitude low in high dimension
    (a 1M-parameter transformer's first product: nβ·h = 0.27 against 2,281 converged), which
    sends the first pilots far past stability; a smaller subsample only adds sampling noise."""
    from lambdascope.llc.hessian import top_eigenvalue

    if deadline is not None:
        now = time.perf_counter()
        deadline = now + HESSIAN_TIME_SHARE * (deadline - now)
    n = x.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:HESSIAN_SUBSAMPLE].to(x.device)

    def power(size: int, iterations: int) -> float:
        xs, ys = (x, y) if size >= n else (x[order[:size]], y[order[:size]])
        return float(top_eigenvalue(model, xs, ys, loss_fn, iterations=iterations, tol=1e-2, batch_size=size,
                                    seed=seed, params=list(params)))

    size = min(n, HESSIAN_SUBSAMPLE)
    try:
        if deadline is not None and size > HESSIAN_MIN_SUBSAMPLE:
            power(HESSIAN_MIN_SUBSAMPLE, 1)  # untimed: the first call pays for setting up
            began = time.perf_counter()
            power(HESSIAN_MIN_SUBSAMPLE, 1)
            per_example = (time.perf_counter() - began) / HESSIAN_MIN_SUBSAMPLE
            affordable = (deadline - time.perf_counter()) / (HESSIAN_ITERATIONS * per_example)
            # 64·2^k examples: the same size (so the same estimate) unless the time is far off
            while size > HESSIAN_MIN_SUBSAMPLE and size > affordable:
                size = max(HESSIAN_MIN_SUBSAMPLE, 2 ** math.floor(math.log2(size - 1)))
        return power(size, HESSIAN_ITERATIONS)
    except Exception as err:  # any model the power iteration cannot handle: start from nβ alone
        log.warning("calibration: no Hessian eigenvalue (%s: %s); starting the grid from nβ",
                    type(err).__name__, err)
        return math.nan


def _segment_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + 7_919 * (index + 1) + 104_729) % (2**62)


@dataclass
class _Stats:
    llc: float
    llc_first: float  # second quarter, for the trend
    llc_last: float  # fourth quarter
    acceptance: float
    bias: float
    loc_energy: float
    reference: float = math.nan  # the λ̂ the bias is compared with (see calibrate)


def predicted_bias(trace, from_step: int, step_size: float) -> float:
    """The one bias formula: the step's predicted first-order bias of λ̂ (λ units), from the
    scored steps at or after ``from_step`` (all scored steps if none are): mean curvature / 8
    plus ε · mean gradient-noise / 16 (see the module docstring). nan when nothing was scored."""
    if trace.curvature.numel() == 0:
        return math.nan
    after = trace.accept_steps >= from_step
    if not bool(after.any()):
        after = torch.ones_like(after)
    return _bias(trace, after, step_size)


def window_bias(trace, lo: int, hi: int, step_size: float) -> tuple[float, float]:
    """(:func:`predicted_bias` from the scored steps in [lo, hi) only, the Monte Carlo error of
    its curvature term); (nan, nan) when none of them was scored. What the stopping rule's drift
    test takes off each window it compares (stopping.drift)."""
    inside = (trace.accept_steps >= lo) & (trace.accept_steps < hi)
    if trace.curvature.numel() == 0 or not bool(inside.any()):
        return math.nan, math.nan
    curvature = trace.curvature[:, inside].double().numpy() / 8
    error = diagnostics.mcse_relative(curvature, 0.0) * abs(float(curvature.mean()))  # nan when too few
    return _bias(trace, inside, step_size), (error if math.isfinite(error) else 0.0)


def _bias(trace, selected: torch.Tensor, step_size: float) -> float:
    noise = trace.grad_noise[:, selected]
    noise = noise[torch.isfinite(noise)]
    value = trace.curvature[:, selected].mean().item() / 8
    return value + (step_size * noise.mean().item() / 16 if noise.numel() else 0.0)


def _segment_stats(trace, nbeta: float, init_loss: float, step_size: float) -> _Stats:
    losses = trace.losses.double()
    steps = losses.shape[1]
    half, quarter = steps // 2, steps // 4
    energy = nbeta * (losses - init_loss)
    after = trace.accept_steps >= half
    acc = trace.acceptance[:, after]
    return _Stats(
        llc=energy[:, half:].mean().item(),
        llc_first=energy[:, quarter:half].mean().item(),
        llc_last=energy[:, steps - quarter:].mean().item(),
        acceptance=acc.mean().item() if acc.numel() else math.nan,
        bias=predicted_bias(trace, half, step_size),
        loc_energy=trace.localization_energy[:, after].mean().item() if after.any() else math.nan,
    )


def calibrate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    config,
    *,
    params: Sequence[str],
    nbeta: float,
    init_loss: float,
    explode_at: float | None,
    vectorize: bool = True,
    target_bias: float = DEFAULT_TARGET_BIAS,
    deadline: float | None = None,
    chains_per_pass: int | None = None,
    compiler: GradientCompiler | None = None,
    top_eigenvalue: float,
    localization: float,
    baseline: torch.Tensor | None = None,
    slope: torch.Tensor | None = None,
    tilt: bool = False,
) -> CalibrationResult:
    """Choose the SGLD step size for ``config`` (an SGLDConfig) on this model and data.

    ``model``, ``x``, ``y`` already on the sampling device; ``params`` the sampled parameter
    names; ``init_loss`` = L_n(w*); ``explode_at`` the divergence threshold of the main run;
    ``chains_per_pass`` and ``compiler`` as in :func:`run_sgld`; ``top_eigenvalue`` the loss's
    at w* (:func:`loss_curvature`, nan if unavailable) and ``localization`` the run's γ, both as
    the caller settled them; ``baseline`` each example's loss at w* less L_n(w*) (as in
    :func:`run_sgld`), ``slope`` and ``tilt`` as in :func:`run_sgld` (the pilots sample the
    main run's potential); ``deadline`` (a ``time.perf_counter()`` value): no pilot starts
    after it, and one running stops there (the choice is then made
    from what was measured). See the module docstring for the procedure. Never raises for a
    diverging candidate (that is a finding); the returned ``states`` warm-start the main run.
    """
    began = time.perf_counter()
    named = dict(model.named_parameters())
    dim = sum(named[k].numel() for k in params)
    gamma, wd, h_max = localization, config.weight_decay, top_eigenvalue
    chains = config.chains

    curvature = nbeta * h_max if math.isfinite(h_max) and h_max > 0 else 0.0
    a_max = curvature + gamma + wd
    if a_max <= 0:  # no curvature, no localization, no prior: nothing sets a scale but nβ
        a_max = nbeta
    base = 0.5 / a_max

    budget_steps = config.calibration_budget * config.planned_steps
    cost = 1.0 + 1.0 / SCORE_EVERY
    seg = int(min(MAX_SEGMENT, max(MIN_SEGMENT, budget_steps / (cost * EXPECTED_SEGMENTS))))
    seg += seg % 2
    max_segments = int(min(MAX_SEGMENTS, max(MIN_SEGMENTS, budget_steps // (cost * seg))))
    ceiling = float(dim)  # twice the regular d/2: beyond it the step is absurd, not just biased

    def eps(k: int) -> float:
        return base * GRID_FACTOR ** (-k)

    tested: dict[int, tuple[CalibrationCandidate, _Stats | None, bool]] = {}  # k -> (cand, stats, passed)
    order: list[int] = []
    states = None
    last_stats = None
    k = 0
    for index in range(max_segments):
        step = eps(k)
        try:
            trace = run_sgld(
                model, x, y, loss_fn, chains=chains, steps=seg, step_size=step, localization=gamma,
                nbeta=nbeta, batch_size=config.batch_size, seed=_segment_seed(config.seed, index),
                weight_decay=wd, params=params, accept_every=SCORE_EVERY, explode_at=explode_at,
                init=states, vectorize=vectorize, deadline=deadline, chains_per_pass=chains_per_pass,
                compiler=compiler, baseline=baseline, slope=slope, tilt=tilt)
        except SamplerDivergedError as err:
            cand = CalibrationCandidate(step, math.nan, math.nan, False,
                                        f"diverged at step {err.step}: loss {err.loss:.4g}", steps=err.step)
            tested[k] = (cand, None, False)
        else:
            st = _segment_stats(trace, nbeta, init_loss, step)
            last_stats = st
            notes = []
            stable = True
            if not st.acceptance >= MIN_ACCEPTANCE:
                stable = False
                notes.append(f"acceptance {st.acceptance:.3f} < {MIN_ACCEPTANCE}")
            if st.llc > ceiling:
                stable = False
                notes.append(f"λ̂ {st.llc:.4g} beyond twice the regular ceiling d/2 = {dim / 2:g}")
            # The denominator: this pilot's λ̂, or, if larger, the best equilibrated reference: a
            # short pilot from w* has not relaxed yet (its λ̂ is low, its bias fraction too high),
            # while a larger-step pilot relaxes faster and, less its predicted bias, estimates λ.
            reference = max([st.llc] + [o.llc - o.bias for c, o, _ in tested.values()
                                        if c.stable and o is not None and o.llc > 0
                                        and o.bias <= REFERENCE_BIAS * o.llc])
            st.reference = reference
            frac = st.bias / reference if reference > 0 else math.inf
            if st.llc <= 0:
                notes.append("loss below L_n(w*): λ̂ ≤ 0")
            passed = stable and frac <= target_bias
            if stable and frac <= KEEP_BIAS:
                states = trace.final  # else roll back: far-off states would slow the next segment
            notes.append(f"predicted bias {st.bias:+.3g} ({100 * frac:+.1f}% of λ̂ ≈ {reference:.4g})"
                         if math.isfinite(frac) else f"predicted bias {st.bias:+.3g}")
            cand = CalibrationCandidate(step, st.acceptance, st.llc, stable, "; ".join(notes),
                                        bias=st.bias, steps=trace.losses.shape[1])
            tested[k] = (cand, st, passed)
        order.append(k)
        if deadline is not None and time.perf_counter() > deadline:
            break
        nxt = _next_k(k, tested, target_bias)
        if nxt is None:
            if len(order) >= 2 or index + 1 >= max_segments:
                break
            # Only one candidate so far: look at the larger neighbour, so that the choice is
            # seen to be the largest passing step (and the chains get a faster warm-up).
            nxt = min(tested) - 1
            if nxt in tested:
                break
        k = nxt

    chosen_k, how = _choose(tested, target_bias)
    chosen = eps(chosen_k)
    cands = [tested[j][0] for j in order]
    summary = _summary(chosen, chosen_k, how, tested, order, h_max, nbeta, gamma, wd, a_max, seg,
                       config, target_bias, dim)
    # Warm-up step for the first half of the main run's burn-in: larger, for faster diffusion
    # along flat directions (what singular models need: on a 5-layer DLN, 2000 steps at 8× the
    # step then 1500 at it gave λ̂ 195 at once, where 3000 plain steps gave 163 and 8000 steps at
    # 2× gave 190). The warm-up over-spreads the directions with ε_w·a ≳ 0.1 (> 2.5% energy);
    # at the chosen ε those relax within 10·ε_w/ε steps, so the factor is at most
    # burnin / WARMUP_RELAX (three such times in the second half of the burn-in). And it is
    # never larger than a pilot step seen stable with a predicted bias below KEEP_BIAS: the
    # stiffness a chain meets away from w* can exceed the Hessian's at w*, so no extrapolation.
    factor = min(WARMUP_MAX, max(1.0, config.planned_burnin / WARMUP_RELAX))
    seen = [c.step_size for c, st, _ in tested.values()
            if c.stable and st is not None and st.llc > 0 and st.bias <= KEEP_BIAS * st.llc]
    warm = min(chosen * factor, max(seen, default=chosen))
    warm = max(warm, chosen)
    unstable = [tested[j][0].step_size for j in tested if not tested[j][0].stable]
    refs = [st.reference for c, st, _ in tested.values() if st is not None and c.stable]
    return CalibrationResult(
        ran=True, chosen_step_size=chosen, candidates=cands, summary=summary,
        seconds=time.perf_counter() - began, target_bias=target_bias, top_eigenvalue=h_max,
        localization=gamma, warmup_step_size=warm, reference_llc=max(refs, default=math.nan),
        unstable_step_size=min(unstable, default=math.inf), states=states)


def refine(result: CalibrationResult, trace, nbeta: float, init_loss: float, step_size: float) -> float:
    """The step size for the rest of the main run, from its first half of burn-in (``trace``, run
    at ``step_size`` = ``result.warmup_step_size``), whose statistics are far better relaxed than
    the short pilots'. Bias is linear in ε: ε ← ε · target·λ_ref / bias, with λ_ref the larger of
    this stage's λ̂ and the pilots' reference; kept within [chosen/4, 2·ε] and below half of any
    step a pilot found unstable. Updates ``result`` (a candidate, the summary, the chosen step).
    """
    st = _segment_stats(trace, nbeta, init_loss, step_size)
    chosen = result.chosen_step_size
    reference = max(st.llc, result.reference_llc if math.isfinite(result.reference_llc) else -math.inf)
    if not st.acceptance >= MIN_ACCEPTANCE or not reference > 0 or not st.bias > 0:
        new = chosen
    else:
        new = step_size * result.target_bias * reference / st.bias
        new = min(max(new, chosen / 4), 2 * step_size, result.unstable_step_size / GRID_FACTOR)
    frac = st.bias / reference if reference > 0 else math.nan
    result.candidates.append(CalibrationCandidate(
        step_size, st.acceptance, st.llc, True,
        f"first half of the main burn-in; predicted bias {st.bias:+.3g} ({100 * frac:+.1f}% of λ̂ ≈ {reference:.4g})",
        bias=st.bias, steps=trace.losses.shape[1]))
    result.summary += (f" Refined on the first half of the burn-in ({trace.losses.shape[1]} steps at "
                       f"{step_size:.3g}: λ̂ ≈ {st.llc:.4g}, predicted bias {st.bias:+.3g}): step size "
                       f"{chosen:.3g} → {new:.3g} for the rest of the run.")
    result.chosen_step_size = new
    return new


def given(step_size: float | None) -> CalibrationResult:
    """The schedule of a run whose step size the user gave: that step throughout, no pilots."""
    step = step_size or math.nan
    return CalibrationResult(ran=False, chosen_step_size=step, summary="step size given: no calibration",
                             warmup_step_size=step)


class Lowered(NamedTuple):
    """A smaller step :func:`retune` asks for, and why."""

    step_size: float
    why: str  # e.g. "predicted bias 5.3% of λ̂, acceptance 0.75"
    bias_share: float  # the predicted bias over λ̂ that asked for it; nan when acceptance did


def retune(result: CalibrationResult, part, step_size: float, nbeta: float, init_loss: float,
           retunes_so_far: int) -> Lowered | None:
    """During a run that chooses its length: a smaller step and why, when a chunk of the main run
    (``part``, sampled at ``step_size``) says the step has become too large; None when it is fine,
    unmeasured (accept_every = 0), the step was given, or MAX_RETUNES were made. Chains drifting
    along the flat directions of a singular model (e.g. the rescaling symmetries of a deep linear
    network) meet growing curvature: above RETUNE_BIAS of λ̂ the step is cut to the target bias
    (at most by 4), below RETUNE_ACCEPTANCE it is halved."""
    if not result.ran or retunes_so_far >= MAX_RETUNES or part.acceptance.numel() == 0:
        return None
    acceptance = float(part.acceptance.mean())
    bias = predicted_bias(part, 0, step_size)
    llc = nbeta * (part.losses.double().mean().item() - init_loss)
    frac = bias / llc if llc > 0 and math.isfinite(bias) else math.nan
    if frac > RETUNE_BIAS:
        factor = max(0.25, result.target_bias / frac)
        return Lowered(step_size * factor, f"predicted bias {100 * frac:.1f}% of λ̂, acceptance {acceptance:.2f}",
                       frac)
    if acceptance < RETUNE_ACCEPTANCE:
        return Lowered(step_size / 2, f"acceptance {acceptance:.2f}", math.nan)
    return None


def after_divergence(result: CalibrationResult, err: SamplerDivergedError, retries_so_far: int) -> float | None:
    """The step to restart a diverged main run with, from w* and without warm-up, or None when it
    must not restart (the step was given: its divergence is the user's to see; or MAX_RETRIES
    restarts were made). A calibrated step can still meet stiffer regions than the pilots saw
    (singular potentials stiffen without bound along their flat arms): a quarter of it, said in
    the summary. Updates ``result``."""
    if not result.ran or retries_so_far >= MAX_RETRIES:
        return None
    smaller = result.chosen_step_size / RETRY_FACTOR
    result.summary += (f" The main run diverged (chain {err.chain}, step {err.step}, loss {err.loss:.4g}); "
                       f"restarted from w* at step size {smaller:.3g}.")
    result.chosen_step_size = smaller
    return smaller


def _next_k(k: int, tested: dict, target: float) -> int | None:
    """The next grid index to try after index k, or None when the choice is settled."""
    passing = sorted(j for j, (_, _, ok) in tested.items() if ok)
    if passing:
        best = passing[0]  # smallest index = largest step size
        cand, st, _ = tested[best]
        larger = best - 1
        failed_above = [j for j, (_, _, ok) in tested.items() if not ok and j < best]
        if larger in tested or GRID_FACTOR * st.bias > target * st.reference:
            return None
        # bias is linear in ε: jump up as far as it predicts, but not onto a failed step
        frac = max(st.bias / st.reference, 1e-12)
        jump = max(1, int(math.floor(math.log(target / frac, GRID_FACTOR))))
        nxt = best - jump
        if failed_above:
            nxt = max(nxt, max(failed_above) + 1)
        return nxt if nxt not in tested else None
    cand, st, _ = tested[k]
    if st is None:  # diverged: far too large
        jump = 3
    elif not cand.stable:
        jump = 2
    elif st.reference > 0 and st.bias > 0:
        jump = max(1, int(math.ceil(math.log(st.bias / (target * st.reference), GRID_FACTOR) - 1e-6)))
        jump = min(jump, 6)
    else:  # no usable λ̂ (w* not a minimum): walk down one step at a time
        jump = 1
    nxt = k + jump
    while nxt in tested:
        nxt += 1
    return nxt


def _choose(tested: dict, target: float) -> tuple[int, str]:
    passing = sorted(j for j, (_, _, ok) in tested.items() if ok)
    if passing:
        return passing[0], "largest grid step meeting the bias target"
    stable = [(j, st) for j, (c, st, _) in tested.items() if c.stable and st is not None]
    usable = [(j, st) for j, st in stable if st.reference > 0 and st.bias > 0]
    if usable:
        j, st = min(usable, key=lambda item: item[1].bias / item[1].reference)
        jump = max(0, int(math.ceil(math.log(st.bias / (target * st.reference), GRID_FACTOR) - 1e-6)))
        return j + jump, "not confirmed by a pilot (budget spent): the grid step the bias predicts to pass"
    accepting = [j for j, st in stable if st.acceptance >= 0.9]
    if accepting:
        return min(accepting), "no usable λ̂ in the pilots: the largest step with acceptance ≥ 0.9"
    worst = max(tested)
    return worst + 3, "no stable pilot: eight times below the smallest step tried"


def _summary(chosen, chosen_k, how, tested, order, h_max, nbeta, gamma, wd, a_max, seg, config,
             target, dim) -> str:
    parts = [f"step size {chosen:.3g} ({how}; target bias ≤ {100 * target:g}% of λ̂)"]
    entry = tested.get(chosen_k)
    if entry is not None and entry[1] is not None:
        cand, st, _ = entry
        parts.append(f"its pilot: λ̂ ≈ {st.llc:.4g}, predicted bias {st.bias:+.3g}, "
                     f"acceptance {st.acceptance:.3f}")
    grid = ", ".join(f"{tested[j][0].step_size:.3g}" + ("✓" if tested[j][2] else "✗") for j in order)
    curv = f"nβ·h = {nbeta * h_max:.4g} (h = top Hessian eigenvalue at w*)" if math.isfinite(h_max) \
        else "no Hessian eigenvalue available"
    parts.append(f"{len(order)} pilots of {seg} steps × {config.chains} chains from 0.5/(nβ·h + γ + wd); "
                 f"{curv}; tried {grid}")
    # γ checks
    notes = []
    if math.isfinite(h_max) and h_max > 0 and gamma > 0.3 * nbeta * h_max:
        notes.append(f"γ = {gamma:g} is comparable to the stiffest loss curvature nβ·h = {nbeta * h_max:.3g}: "
                     "the localization shrinks λ̂ — use a smaller localization")
    if entry is not None and entry[1] is not None:
        st = entry[1]
        noise = abs(st.llc) * 0.1 + 1e-12
        if st.llc_last - st.llc_first > max(noise, 0.15 * abs(st.llc_first)):
            notes.append(f"λ̂ was still rising through the pilot ({st.llc_first:.3g} → {st.llc_last:.3g}): "
                         "if it keeps rising over the run, raise burnin, or localization if it never levels off")
    if gamma > 0:
        relax = 1.0 / (chosen * gamma)
        steps = config.planned_steps
        where = "within" if relax < steps else "beyond"
        run = "a run's typical" if config.adaptive else "the run's"
        notes.append(f"localization relaxes in 1/(ε·γ) ≈ {relax:.3g} steps, {where} {run} {steps}")
    if notes:
        parts.append("; ".join(notes))
    return ". ".join(parts) + "."
