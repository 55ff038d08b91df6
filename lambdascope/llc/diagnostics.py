"""Convergence diagnostics for the SGLD chains, and a verdict a person can act on.

The diagnostics look at the per-draw loss traces (chains, draws) kept after burn-in/thinning:

- :func:`split_rhat`: rank-normalized split R-hat (Vehtari, Gelman, Simpson, Carpenter, Bürkner,
  "Rank-normalization, folding, and localization: an improved R-hat", Bayesian Analysis 2021),
  the maximum of the bulk R-hat (rank-normalized split chains) and the tail R-hat (the same on
  draws folded around the median). ``rank_normalize=False`` gives the classic split R-hat of
  Gelman et al. (BDA3, §11.4). Near 1 when the chains sample one distribution; a trend within a
  chain (split halves disagree) or chains stuck in different places push it above 1.
- :func:`effective_sample_size`: bulk ESS over all chains: the multi-chain autocorrelation
  estimate of Stan (within-chain autocovariances combined with the between-chain variance),
  truncated by Geyer's initial positive sequence and made monotone (Geyer 1992), on the
  rank-normalized split chains.
- :func:`below_init_fraction`: the share of draws whose loss is below L_n(w*). At a local
  minimum the localized posterior sits above L_n(w*) (its mean is L_n(w*) + λ/nβ), so a large
  share below means w* was not a minimum and λ̂ is meaningless (often negative). The draws are
  MINIBATCH losses, whose noise alone can put a third of them below L_n(w*) when λ/nβ is small
  next to it (large n, small batches); so the verdict also asks :func:`below_init_segments`, the
  share of stretches of draws whose mean is below L_n(w*) by more than that noise explains.
- :func:`mcse_relative`: Monte Carlo standard error of λ̂ as a fraction of |λ̂|, from the ESS of
  the mean (sd / sqrt(ESS) over the mean loss gap E[L] − L_n(w*); nβ cancels).

:func:`judge` turns the numbers into ``ok`` / ``warning`` / ``failed`` with sentences that say
what happened and what to do. Its thresholds are module constants, each justified where it is set.

Plain numpy and torch only (no scipy): the normal quantile comes from ``torch.special.ndtri``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "Diagnostics",
    "Verdict",
    "below_init_fraction",
    "below_init_segments",
    "mcse_relative",
    "diagnose",
    "effective_sample_size",
    "judge",
    "split_rhat",
    "MIN_DRAWS_PER_CHAIN",
    "RHAT_WARN",
    "RHAT_FAIL",
    "ESS_WARN",
    "MCSE_WARN",
    "SEGMENTS_PER_CHAIN",
    "NOISE_Z",
    "BELOW_INIT_WARN",
    "BELOW_INIT_FAIL",
    "ACCEPTANCE_WARN",
    "ACCEPTANCE_FAIL",
    "SPREAD_WARN",
    "CEILING_MARGIN",
    "DRIFT_WARN",
]

# ---------------------------------------------------------------------------------------------
# Thresholds. Checked on an MLP 64→64→10 (4810 parameters) on sklearn digits (x / 16, CE,
# n = 1797, nβ = n / log n ≈ 240), 4 chains × (200 burn-in + 200 draws), γ = 10, batch 256,
# acceptance = the sampler's minibatch MALA score (every 10th step):
# - trained to 100% accuracy (SGD, 100-200 epochs, 3 seeds), ε = 1e-3: λ̂ ≈ 15-17, R-hat
#   1.035-1.048, bulk ESS 55-129, MCSE 3-6% of λ̂, acceptance 0.91-0.97, no draw below
#   L_n(w*), per-chain std 5-13% of λ̂ → ok.
# - trained for one epoch (78-83% accuracy, 3 seeds): 100% of draws and stretches below L_n(w*),
#   λ̂ ≈ −55 … −63, R-hat 1.06-1.08, ESS 34-60 → failed (not a minimum, negative λ̂).
# - step size sweep on the trained model (λ̂; acceptance): 3e-4 (11.7, still drifting: R-hat
#   1.14, ESS 19; 0.98), 1e-3 (15.3; 0.96), 2e-3 (16.2; 0.90), 3e-3 (17.2; 0.85), 5e-3 (32.0;
#   0.60), 1e-2 (272; 0.31). R-hat and ESS do NOT see the inflation at 5e-3 or 1e-2; the
#   acceptance (and, far out, the d/2 ceiling and the chain spread) do.
# - logistic regression at its exact minimum on digits with 30% of labels shuffled (L_n(w*) =
#   1.23): 16% of single draws below L_n(w*) from minibatch noise alone, 0% of stretches → ok.
# ---------------------------------------------------------------------------------------------

# Split R-hat needs two halves of at least 2 draws each; below 4 draws per chain it is nan.
MIN_DRAWS_PER_CHAIN = 4

# R-hat. Vehtari et al. (2021) recommend 1.01 for final inference with long HMC chains; SGLD
# chains of a few hundred minibatch draws are shorter and noisier, and their λ̂ only needs the
# mean loss, so the classic 1.1 (Gelman et al., BDA3) marks chains that have not mixed. Above
# 1.5 (R-hat² ≈ 1 + var(half-chain means) / within-chain variance) the half-chain means differ
# by more than a within-chain standard deviation: the chains are plainly sampling different
# things (a trend, a chain stuck elsewhere) and λ̂ is not trustworthy.
RHAT_WARN = 1.1
RHAT_FAIL = 1.5

# Bulk ESS floor (all chains together). Vehtari et al. (2021) ask for ~100 per chain before
# trusting R-hat at 1.01 in long HMC runs. λ̂ needs far less: only the mean loss, whose precision
# MCSE_WARN checks directly. The floor guards the diagnostics themselves: from k effective draws
# a variance is known to about sqrt(2 / k), ±22% at k = 40, so below 40 (10 per chain at 4 chains)
# R-hat and the chain spread are too noisy to vouch for anything. Healthy digits runs gave 55-129
# (slow modes along the localization), a still-drifting one 19.
ESS_WARN = 40.0

# Monte Carlo error of λ̂ relative to |λ̂|: sd(L) / sqrt(ESS of the mean) / |E[L] − L_n(w*)|.
# Above 10% the leading digit of λ̂ is uncertain from sampling alone. Healthy digits runs gave
# 3-6%; ε = 5e-3 and 1e-2 gave 15-18%.
MCSE_WARN = 0.10

# Share of draws with loss below L_n(w*). The draws are MINIBATCH losses and L_n(w*) a full-data
# loss. At a true minimum, minibatch noise of sd σ puts about Φ(−(λ/nβ)/σ) of the draws below
# L_n(w*): on digits (λ/nβ ≈ 0.06, tiny σ at near-zero loss) none, but e.g. at n = 300k
# (nβ ≈ 24000) with λ = 325 and batch 256 of per-example loss sd 1, λ/nβ ≈ 0.23σ: 41% of draws.
# So the verdict takes the smaller of the per-draw share and the share of stretches (each chain
# cut into SEGMENTS_PER_CHAIN, 40 draws each for 200 draws) whose mean lies more than NOISE_Z
# noise standard errors below L_n(w*) (see below_init_segments): at a true minimum ≤ ~2% of
# stretches, whatever the noise (simulated at λ/nβ = 0.1σ-0.4σ: 29-44% of draws, 0-5% of stretches),
# while the undertrained digits model had 100% of draws and of stretches below, and one chain of
# four settled in a lower basin gives 25%. Above 10% the posterior finds lower loss than w* more
# often than noise explains: a warning. Above 20% w* is not a local minimum, and
# λ̂ = nβ·(E[L] − L(w*)) is biased low, often negative: failed.
BELOW_INIT_WARN = 0.10
BELOW_INIT_FAIL = 0.20
SEGMENTS_PER_CHAIN = 5
NOISE_Z = 2.0

# MALA acceptance probability of the SGLD proposal (when the caller measured it): the share of
# steps an exact, Metropolis-adjusted sampler would keep, a measure of the unadjusted step's
# discretization error; ~0.9 was the healthy value in the published DLN experiments (science
# notes §2). On the digits sweep above, acceptance ≥ 0.85 kept λ̂ within ~12% of its ε = 1e-3
# value, 0.60 doubled it and 0.31 multiplied it by 18 (a full-batch MALA score gave nearly the
# same numbers: 0.94, 0.87, 0.81, 0.65, 0.33 for ε = 1e-3 … 1e-2). Hence: below 0.8 warning
# (λ̂ likely inflated), below 0.5 failed (discretization error dominates λ̂).
ACCEPTANCE_WARN = 0.8
ACCEPTANCE_FAIL = 0.5

# Predicted bias of λ̂ from the step size (discretization + minibatch noise, measured along the
# chains; lambdascope.llc.calibration), relative to λ̂. Where it is known it judges the step
# instead of the 0.8 acceptance line, which is dimension-blind: on random DLNs of 20,000-26,000
# parameters calibrated steps ran at acceptance 0.74-0.84 with λ̂ within 1.4-3% of theory (the
# acceptance a given bias implies falls with the dimension; see the calibration module). The
# calibration aims at 2%; above 5% the estimate is visibly inflated (warning), above 25% the
# step dominates it (failed). Acceptance below ACCEPTANCE_FAIL still fails either way.
BIAS_WARN = 0.05
BIAS_FAIL = 0.25

# Per-chain λ̂ spread: std of the per-chain estimates relative to |mean|. Healthy runs gave
# 5-13% (33% at ε = 1e-2, where λ̂ was 18x inflated); above 30% the chains disagree about λ̂
# itself, so the reported mean depends on which chains happened to run.
SPREAD_WARN = 0.30

# Drift: λ̂ over the kept draws against λ̂ over the stretch just before them, half as long, per
# doubling of the chains' age (lambdascope.llc.stopping.drift), relative to λ̂. On singular models
# λ̂ climbs slowly (roughly logarithmically in steps) before it levels off, and that climb barely
# moves R-hat or ESS: on a 5-layer DLN 200 burn-in + 200 draws gave R-hat 1.15-1.45 but λ̂ 7-31%
# low, and at 20,000 steps R-hat was fine while λ̂ was still 10% low and rising 5.6% per doubling.
# Above 5% per doubling, and beyond DRIFT_Z of its standard errors (the two windows' Monte Carlo
# errors combined; without it, about sqrt(3) times the kept window's MCSE), the trace is still
# moving: a warning.
DRIFT_WARN = 0.05
DRIFT_Z = 3.0

# w*'s slope: the mean over the kept draws of nβ·∇L_n(w*)·(w − w*), the first-order part of λ̂
# owed to a gradient at w* rather than to a minimum's geometry (lambdascope.llc.stationarity),
# relative to |λ̂|. At a minimum it is noise around zero. Above SLOPE_WARN it is a visible part of
# λ̂ (warning); above SLOPE_FAIL λ̂ mostly measures how far the chains slid, and w* is treated as
# no minimum (failed), like a λ̂ below zero.
SLOPE_WARN = 0.10
SLOPE_FAIL = 0.50

# λ ≤ d/2 always (d/2 is the regular-model value; singularities only lower it). λ̂ above
# CEILING_MARGIN · d/2 is beyond Monte Carlo noise: the step size inflates the estimate
# (warning); above twice that the estimate is dominated by discretization error (failed).
CEILING_MARGIN = 1.1


@dataclass
class Diagnostics:
    """Convergence diagnostics of one LLC run (computed on the kept draws' losses).

    ``rhat`` is the rank-normalized split R-hat (max of bulk and tail); nan with fewer than 2
    finite chains or fewer than :data:`MIN_DRAWS_PER_CHAIN` draws per chain, or when every draw
    is identical. ``ess`` is the bulk ESS over all finite chains (nan under the same draw-count
    and constant-draws conditions; one chain is enough). ``acceptance`` is passed through (nan
    when unknown). ``below_init_fraction`` counts finite draws only. ``diverged_chains`` lists
    the chains that were reported diverged or hold a non-finite draw; R-hat, ESS and the other
    statistics exclude them. ``below_init_segments``: the share of chain stretches whose MEAN
    loss is below L_n(w*) beyond minibatch noise (see :func:`below_init_segments`).
    ``mcse_relative``: Monte Carlo standard error of λ̂ over |λ̂| (see :func:`mcse_relative`).
    Both nan when unknown.
    """

    rhat: float
    ess: float
    acceptance: float
    below_init_fraction: float
    diverged_chains: list[int] = field(default_factory=list)
    below_init_segments: float = math.nan
    mcse_relative: float = math.nan
    drift: float = math.nan  # change of λ̂ into the kept draws per doubling (see DRIFT_WARN); nan if unknown
    drift_error: float = math.nan  # its standard error; nan if unknown
    bias_relative: float = math.nan  # predicted bias of λ̂ from the step, over λ̂ (see BIAS_WARN)
    slope_relative: float = math.nan  # the part of λ̂ owed to w*'s slope, over |λ̂| (see SLOPE_WARN)


VERDICT_STATES = ("ok", "warning", "failed")  # the API's VerdictState, by its short names


@dataclass
class Verdict:
    state: str  # one of VERDICT_STATES
    reasons: list[str]  # most serious first; empty when ok
    # w* is not a local minimum (draws below L_n(w*) beyond noise, or λ̂ < 0): λ̂ means nothing
    # there, e.g. an early checkpoint of a training run, reported but not plotted
    not_at_minimum: bool = False


# ------------------------------------------------------------------------------ statistics


def _as_draws(draws) -> np.ndarray:
    a = np.asarray(draws, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"draws must be shaped (chains, draws) (got shape {a.shape})")
    return a


def _split(a: np.ndarray) -> np.ndarray:
    """Each chain cut into its first and second half (the middle draw of an odd chain dropped)."""
    half = a.shape[1] // 2
    return np.concatenate([a[:, :half], a[:, a.shape[1] - half :]], axis=0)


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks over all elements of ``a``, ties given their average rank."""
    flat = a.ravel()
    order = np.argsort(flat, kind="mergesort")
    _, first, counts = np.unique(flat[order], return_index=True, return_counts=True)
    ranks = np.empty(flat.size)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks.reshape(a.shape)


def _rank_normalize(a: np.ndarray) -> np.ndarray:
    """Normal scores of the pooled ranks, Blom's offset: Φ⁻¹((r − 3/8) / (S + 1/4))."""
    p = (_average_ranks(a) - 0.375) / (a.size + 0.25)
    return torch.special.ndtri(torch.from_numpy(p)).numpy()


def _rhat(a: np.ndarray) -> float:
    """Classic R-hat of already-split chains: sqrt(var⁺ / W), var⁺ = (n−1)/n·W + B/n."""
    n = a.shape[1]
    within = a.var(axis=1, ddof=1).mean()
    between_over_n = a.mean(axis=1).var(ddof=1)
    if within <= 0:
        return math.nan
    return float(math.sqrt(((n - 1) / n * within + between_over_n) / within))


def _usable(a: np.ndarray) -> bool:
    return a.shape[1] >= MIN_DRAWS_PER_CHAIN and np.isfinite(a).all() and np.ptp(a) > 0


def split_rhat(draws, *, rank_normalize: bool = True) -> float:
    """Split R-hat of ``draws`` shaped (chains, draws).

    Rank-normalized (default): max(bulk, tail) R-hat of Vehtari et al. 2021, robust to heavy tails
    and sensitive to chains differing in spread. ``rank_normalize=False``: classic split R-hat.
    nan with fewer than 2 chains (one chain's halves alone are too weak a check to report), fewer
    than :data:`MIN_DRAWS_PER_CHAIN` draws per chain, any non-finite draw, or constant draws.
    """
    a = _as_draws(draws)
    if a.shape[0] < 2 or not _usable(a):
        return math.nan
    if not rank_normalize:
        return _rhat(_split(a))
    bulk = _rhat(_rank_normalize(_split(a)))
    folded = np.abs(a - np.median(a))
    tail = _rhat(_rank_normalize(_split(folded))) if np.ptp(folded) > 0 else math.nan
    return float(np.nanmax([bulk, tail])) if not (math.isnan(bulk) and math.isnan(tail)) else math.nan


def _autocovariance(a: np.ndarray) -> np.ndarray:
    """Biased (1/n) autocovariance of each row at every lag, by FFT."""
    n = a.shape[1]
    centered = a - a.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(centered, n=size, axis=1)
    return np.fft.irfft(f * np.conj(f), n=size, axis=1)[:, :n] / n


def _ess(a: np.ndarray) -> float:
    """ESS of chains ``a`` (chains, n): Stan's multi-chain estimator with Geyer's truncation."""
    m, n = a.shape
    acov = _autocovariance(a)
    within = acov[:, 0].mean() * n / (n - 1)  # mean within-chain variance (ddof=1)
    var_plus = within * (n - 1) / n
    if m > 1:
        var_plus += a.mean(axis=1).var(ddof=1)
    if var_plus <= 0:
        return math.nan
    # rho[t]: combined autocorrelation at lag t (1 − (W − mean acov_t) / var⁺).
    rho = 1.0 - (within - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    # Geyer: sum pairs P_k = rho[2k] + rho[2k+1] while they stay positive...
    pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
    positive = np.nonzero(pairs <= 0)[0]
    k = int(positive[0]) if positive.size else pairs.size
    pairs = pairs[:k]
    # ...and force them non-increasing (initial monotone sequence).
    pairs = np.minimum.accumulate(pairs)
    tau = -1.0 + 2.0 * pairs.sum()
    # Antithetic chains can make tau tiny; cap ESS at m·n·log10(m·n) as Stan does.
    tau = max(tau, 1.0 / math.log10(m * n)) if m * n > 1 else max(tau, 1.0)
    return float(m * n / tau)


def effective_sample_size(draws, *, rank_normalize: bool = True) -> float:
    """Bulk ESS of ``draws`` shaped (chains, draws), counted over all chains.

    Chains are split in halves (so a trend lowers ESS) and, by default, rank-normalized (bulk
    ESS of Vehtari et al. 2021). About chains·draws for independent draws, n(1−ρ)/(1+ρ) for an
    AR(1) chain with coefficient ρ. nan with fewer than :data:`MIN_DRAWS_PER_CHAIN` draws per
    chain, any non-finite draw, or constant draws.
    """
    a = _as_draws(draws)
    if not _usable(a):
        return math.nan
    a = _split(a)
    return _ess(_rank_normalize(a) if rank_normalize else a)


def below_init_fraction(draws, init_loss: float) -> float:
    """Share of the finite draws whose loss is strictly below ``init_loss``; nan if none is finite."""
    a = _as_draws(draws)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return math.nan
    return float(np.mean(finite < init_loss))


def below_init_segments(draws, init_loss: float, segments: int = SEGMENTS_PER_CHAIN) -> float:
    """Share of chain stretches whose mean loss is CLEARLY below ``init_loss``, beyond minibatch noise.

    Each chain is cut into ``segments`` consecutive stretches of L draws (the oldest leftover
    draws dropped; L = 1 when a chain has fewer draws than ``segments``). Minibatch noise is
    independent from step to step, so its sd σ is at most sqrt(mean((x_t − x_{t−1})²) / 2)
    (the slow motion of the weights only adds to the differences) and a stretch mean carries
    σ / sqrt(L) of it. A stretch counts when its mean lies more than :data:`NOISE_Z` of those
    below ``init_loss``: at a true minimum (true loss ≥ L_n(w*)) that happens to fewer than
    Φ(−2) ≈ 2% of stretches, while a walk downhill or a chain in a lower basin clears it easily.
    Chains with a non-finite draw are skipped; nan if none is left.
    """
    a = _as_draws(draws)
    a = a[np.isfinite(a).all(axis=1)]
    if a.size == 0:
        return math.nan
    k = min(segments, a.shape[1])
    length = a.shape[1] // k
    a = a[:, a.shape[1] - k * length :]
    means = a.reshape(a.shape[0], k, length).mean(axis=2)
    if a.shape[1] > 1:
        noise = np.sqrt(np.mean(np.diff(a, axis=1) ** 2, axis=1) / 2)[:, None]
    else:
        noise = np.zeros((a.shape[0], 1))
    return float(np.mean(means < init_loss - NOISE_Z * noise / math.sqrt(length)))


def mcse_relative(draws, init_loss: float) -> float:
    """Monte Carlo standard error of λ̂ = nβ·(mean(draws) − init_loss), as a fraction of |λ̂|.

    MCSE of the mean loss = sd(draws) / sqrt(ESS), with the ESS of the mean (split chains, not
    rank-normalized); nβ cancels in the ratio. inf when the mean equals ``init_loss``; nan when the
    ESS is (too few draws, constant or non-finite draws).
    """
    a = _as_draws(draws)
    ess = effective_sample_size(a, rank_normalize=False)
    if not math.isfinite(ess):
        return math.nan
    gap = abs(a.mean() - init_loss)
    mcse = a.std(ddof=1) / math.sqrt(ess)
    return float(mcse / gap) if gap > 0 else math.inf


def diagnose(
    draws, init_loss: float, acceptance: float = math.nan, diverged_chains: Iterable[int] = (),
    drift: float = math.nan, drift_error: float = math.nan, bias_relative: float = math.nan,
    slope_relative: float = math.nan,
) -> Diagnostics:
    """All diagnostics of the kept draws' losses ``draws`` shaped (chains, draws); ``drift``,
    ``drift_error``, ``bias_relative`` and ``slope_relative`` are passed through (they need what
    ``draws`` does not hold: the steps before the draws, the scored steps).

    A chain holding any non-finite draw is counted as diverged (added to ``diverged_chains``);
    R-hat, ESS, the segment share and the MCSE are computed over the remaining chains.
    """
    a = _as_draws(draws)
    diverged = {int(c) for c in diverged_chains}
    diverged.update(int(c) for c in np.nonzero(~np.isfinite(a).all(axis=1))[0])
    healthy = a[[c for c in range(a.shape[0]) if c not in diverged]]
    return Diagnostics(
        rhat=split_rhat(healthy) if healthy.shape[0] else math.nan,
        ess=effective_sample_size(healthy) if healthy.shape[0] else math.nan,
        acceptance=float(acceptance),
        below_init_fraction=below_init_fraction(a, init_loss),
        diverged_chains=sorted(diverged),
        below_init_segments=below_init_segments(healthy, init_loss) if healthy.shape[0] else math.nan,
        mcse_relative=mcse_relative(healthy, init_loss) if healthy.shape[0] else math.nan,
        drift=float(drift),
        drift_error=float(drift_error),
        bias_relative=float(bias_relative),
        slope_relative=float(slope_relative),
    )


# ------------------------------------------------------------------------------ verdict


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _chains(ids: Sequence[int]) -> str:
    return ("chain " if len(ids) == 1 else "chains ") + ", ".join(str(c) for c in ids)


def _more_sampling(usual: str, stalled: bool) -> str:
    """What to change for a diagnostic short of its bound that more sampling would meet: ``usual``,
    or more chains where the run's ESS fell as its window grew (``stalled``): sampling on carried
    its chains further apart than it let them mix, so a longer run may not meet it (the run's
    length says why)."""
    return "more chains, not a longer run (see the run's length)." if stalled else usual


def _few_draws(ess: float, stalled: bool) -> str:
    """The warning for an ESS below :data:`ESS_WARN`, with what to change."""
    advice = _more_sampling("run more draws (a longer chain) or more chains.", stalled)
    return (f"few effective draws (ESS {ess:.0f} across all chains, want at least {ESS_WARN:.0f}): the chains "
            f"mix too slowly for their diagnostics to be trusted; {advice}")


def _step_too_large(bias: float, corrected: bool, calibrated: bool) -> str:
    """The reason for a predicted bias above :data:`BIAS_WARN` (of λ̂), with what to change."""
    seen = (f"it inflates λ̂ by about {_pct(bias)}" if not corrected else
            f"it inflated λ̂ as sampled by about {_pct(bias)}, which the reported λ̂ has taken off (a "
            "correction this large is itself uncertain)")
    advice = ("a longer run (--max-steps, --max-seconds) lets the sampler lower its step, or set a smaller "
              "--step-size" if calibrated else "lower the step size, or leave it unset to calibrate it")
    return f"step size too large: {seen}, predicted from the chains' curvature and gradient noise; {advice}."


def judge(
    diag: Diagnostics,
    per_chain_llc: list[float],
    llc_mean: float,
    llc_std: float,
    *,
    num_parameters: int | None = None,
    bias_corrected: bool = False,
    step_calibrated: bool = False,
    ess_stalled: bool = False,
) -> Verdict:
    """``ok`` / ``warning`` / ``failed`` with the reasons, most serious first.

    Each reason says what was seen and what to change. Failed: diverged chains, a non-finite
    λ̂, w* not a minimum (many draws, and stretches of draws, below L_n(w*); λ̂ < 0; or w*'s slope
    above :data:`SLOPE_FAIL` of λ̂), R-hat
    above :data:`RHAT_FAIL`, acceptance below :data:`ACCEPTANCE_FAIL`, λ̂ above twice the d/2
    ceiling. Warning: R-hat above :data:`RHAT_WARN`, ESS below :data:`ESS_WARN`, relative Monte
    Carlo error above :data:`MCSE_WARN`, acceptance below :data:`ACCEPTANCE_WARN`, draws below
    L_n(w*) above :data:`BELOW_INIT_WARN`, per-chain spread above :data:`SPREAD_WARN`, drift above
    :data:`DRIFT_WARN` (beyond its noise), w*'s slope above :data:`SLOPE_WARN` of λ̂, λ̂ above
    the d/2 ceiling, R-hat not computable (one chain, too few draws). ``bias_corrected``: λ̂ has
    the predicted bias taken off; ``step_calibrated``: the step was the sampler's own choice (a
    large predicted bias then asks for what lets it choose a smaller one, not for leaving the
    step unset); ``ess_stalled``: the run's ESS fell as its window grew (a low ESS, a high MCSE, a wide
    spread then ask for more chains, and a high R-hat or a drift says a longer run may not settle it).
    """
    failed: list[str] = []
    warned: list[str] = []
    chains = len(per_chain_llc)
    not_at_minimum = False

    if diag.diverged_chains:
        failed.append(
            f"{_chains(diag.diverged_chains)} of {chains} diverged (the sampled loss became "
            "infinite or NaN): lower the step size or raise the localization."
        )

    if not math.isfinite(llc_mean):
        failed.append(
            f"λ̂ is not a finite number ({llc_mean}): the chains blew up; lower the step size "
            "or raise the localization, and check the data for NaN or infinite values."
        )

    frac = diag.below_init_fraction
    # Minibatch noise alone can put many single draws below L_n(w*); when the stretch means are
    # known, only a share that survives averaging counts (see BELOW_INIT_WARN).
    seg = diag.below_init_segments
    below = min(frac, seg) if math.isfinite(frac) and math.isfinite(seg) else frac
    if math.isfinite(below) and below > BELOW_INIT_FAIL:
        not_at_minimum = True
        failed.append(
            f"w* is not a local minimum: the sampled loss fell below the initial loss L_n(w*) in "
            f"{_pct(frac)} of draws; train longer (to convergence), or, if it was trained with "
            "weight decay or an extra loss term, audit that same loss (e.g. set the sampler's "
            "weight decay)."
        )
    elif math.isfinite(below) and below > BELOW_INIT_WARN:
        warned.append(
            f"w* may not be a local minimum: the sampled loss fell below the initial loss L_n(w*) "
            f"in {_pct(frac)} of draws; train longer, or audit the loss the model was trained on."
        )

    slope = diag.slope_relative
    if math.isfinite(slope) and abs(slope) > SLOPE_WARN:
        sloped = (
            f"w* is not a stationary point of the loss: its gradient there makes {'−' if slope < 0 else '+'}"
            f"{_pct(abs(slope))} of λ̂ (nβ·∇L_n(w*)·(w − w*) over the draws), so λ̂ measures how far the "
            "chains slid down that slope, which depends on the localization and the run's length, "
            "more than the minimum's geometry; train to convergence, audit the loss the model was "
            "trained on (weight decay, extra terms), or sample the loss less its tangent plane at "
            "w* (--remove-slope on)."
        )
        if abs(slope) > SLOPE_FAIL:
            not_at_minimum = True
            failed.append(sloped)
        else:
            warned.append(sloped)

    if math.isfinite(llc_mean) and llc_mean < 0:
        not_at_minimum = True
        failed.append(
            f"λ̂ is negative ({llc_mean:.3g}), which is impossible at a local minimum: the sampler "
            "found lower loss than w*; train the model longer (to a minimum) before auditing it."
        )

    ceiling = num_parameters / 2 if num_parameters else None
    if ceiling and math.isfinite(llc_mean) and llc_mean > 2 * CEILING_MARGIN * ceiling:
        failed.append(
            f"λ̂ = {llc_mean:.4g} is more than twice its largest possible value d/2 = {ceiling:g} "
            f"(d = {num_parameters} parameters): step size far too large, so the estimate is "
            "inflated; lower the step size (by 10x) and run again."
        )
    elif ceiling and math.isfinite(llc_mean) and llc_mean > CEILING_MARGIN * ceiling:
        warned.append(
            f"λ̂ = {llc_mean:.4g} exceeds its largest possible value d/2 = {ceiling:g} "
            f"(d = {num_parameters} parameters): step size too large, so the estimate is "
            "inflated; lower the step size."
        )

    rhat = diag.rhat
    if math.isfinite(rhat) and rhat > RHAT_FAIL:
        failed.append(
            f"chains disagree badly (R-hat {rhat:.2f}, want below {RHAT_WARN}): they have not "
            "reached the same distribution; run a longer burn-in and more draws, or lower the "
            "step size if a chain is running away."
        )
    elif math.isfinite(rhat) and rhat > RHAT_WARN:
        warned.append(
            f"chains disagree (R-hat {rhat:.2f}, want below {RHAT_WARN}): "
            + ("a longer run may not bring them together (see the run's length); more chains measure how "
               "far apart they lie, in λ̂'s standard error." if ess_stalled
               else "run more draws or a longer burn-in.")
        )

    acc, bias = diag.acceptance, diag.bias_relative
    if math.isfinite(acc) and acc < ACCEPTANCE_FAIL:
        failed.append(
            f"step size too large: an exact (Metropolis-adjusted) sampler would accept only "
            f"{_pct(acc)} of these steps, so discretization error dominates λ̂; lower the step size."
        )
    elif math.isfinite(bias) and bias > BIAS_FAIL:
        failed.append(_step_too_large(bias, bias_corrected, step_calibrated))
    elif math.isfinite(bias) and bias > BIAS_WARN:
        warned.append(_step_too_large(bias, bias_corrected, step_calibrated))
    elif not math.isfinite(bias) and math.isfinite(acc) and acc < ACCEPTANCE_WARN:
        warned.append(
            f"step size too large: an exact (Metropolis-adjusted) sampler would accept only "
            f"{_pct(acc)} of these steps (healthy is about 90%), so λ̂ is likely inflated; lower "
            "the step size."
        )

    if math.isfinite(diag.ess) and diag.ess < ESS_WARN:
        warned.append(_few_draws(diag.ess, ess_stalled))
    mcse = diag.mcse_relative
    if math.isinf(mcse):
        warned.append(
            "λ̂ is imprecise: the sampled loss averages exactly L_n(w*), so λ̂ = 0 with unknown "
            "relative error; run more draws or more chains."
        )
    elif mcse > MCSE_WARN:  # False for nan
        warned.append(
            f"λ̂ is imprecise: its Monte Carlo standard error is {_pct(mcse)} of its value (want "
            f"at most {_pct(MCSE_WARN)}); " + _more_sampling("run more draws or more chains.", ess_stalled)
        )

    drift, error = diag.drift, diag.drift_error
    noise = error if math.isfinite(error) else math.sqrt(3) * mcse if math.isfinite(mcse) else math.inf
    if math.isfinite(drift) and abs(drift) > DRIFT_WARN and abs(drift) > DRIFT_Z * noise:
        known = f" ± {100 * error:.1f}%" if math.isfinite(error) else ""
        warned.append(
            f"λ̂ was still {'rising' if drift > 0 else 'falling'}: {100 * drift:+.1f}%{known} per doubling "
            "of the chains' sampling time, from the steps just before the draws to the draws, so the "
            "chains had not settled; "
            + ("a longer run may not settle them: their ESS fell as the window grew (see the run's "
               "length)." if ess_stalled else
               "run longer (leave draws and burn-in unset to let the audit run until its diagnostics "
               "are met).")
        )

    finite_chain_llc = [v for v in per_chain_llc if math.isfinite(v)]
    if (
        len(finite_chain_llc) >= 2
        and math.isfinite(llc_mean)
        and math.isfinite(llc_std)
        and llc_mean != 0
        and llc_std > SPREAD_WARN * abs(llc_mean)
    ):
        warned.append(
            f"per-chain estimates disagree (λ̂ from {min(finite_chain_llc):.3g} to "
            f"{max(finite_chain_llc):.3g}, std {_pct(llc_std / abs(llc_mean))} of the mean): "
            + _more_sampling("run more draws per chain or more chains.", ess_stalled)
        )

    if not math.isfinite(rhat) and not diag.diverged_chains:
        if chains < 2:
            warned.append(
                "only one chain ran, so convergence cannot be checked (R-hat needs 2 or more "
                "chains): run at least 2 chains (4 recommended)."
            )
        else:
            warned.append(
                f"convergence could not be checked (too few or constant draws; R-hat needs at "
                f"least {MIN_DRAWS_PER_CHAIN} varying draws per chain): run more draws."
            )

    if failed:
        return Verdict("failed", failed + warned, not_at_minimum)
    if warned:
        return Verdict("warning", warned)
    return Verdict("ok", [])
