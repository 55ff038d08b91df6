"""The local learning coefficient estimator: λ̂ = nβ · (E_w[L_n(w)] − L_n(w*)).

E_w is taken over SGLD draws from the posterior localized at the trained weights w*
(see :mod:`lambdascope.llc.sgld`), nβ defaults to n / log n with n the DATASET size, and
L_n(w*) is measured on the full data set, because one minibatch is too noisy a baseline.
When no step size is given, it is chosen by :func:`lambdascope.llc.calibration.calibrate`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import vmap

from lambdascope.llc.calibration import (CalibrationResult, Lowered, after_divergence, calibrate, given, loss_curvature,
                                         predicted_bias, refine, retune, window_bias)
from lambdascope.llc.compiled import GradientCompiler
from lambdascope.llc.diagnostics import BIAS_WARN, SLOPE_FAIL
from lambdascope.llc.localization import default_localization
from lambdascope.llc.localization import describe as describe_localization
from lambdascope.llc.chain_groups import (MEMORY_SHARE, TIMING_ROUNDS, ChainPlan, available_bytes, by_speed, peak_bytes,
                                            plan_chains, reset_peak, worth_timing)
from lambdascope.llc.sgld import (LossFn, SamplerDivergedError, SGLDTrace, activation_bytes, make_forward,
                                     pass_seconds, prepare_for_sampling, run_sgld)
from lambdascope.llc import preconditioner as preconditioner_lib
from lambdascope.llc.preconditioner import Preconditioner
from lambdascope.llc import snapshots as snapshots_lib
from lambdascope.llc import stopping as stopping_lib
from lambdascope.llc.stationarity import loss_gradient
from lambdascope.llc.snapshots import Snapshots
from lambdascope.llc.stopping import MIN_DRAWS, Check, StoppingRule, assess, next_chunk

__all__ = [
    "CalibrationResult",
    "LLCResult",
    "SGLDConfig",
    "SamplerDivergedError",
    "Stopping",
    "default_nbeta",
    "divergence_threshold",
    "estimate_llc",
    "full_loss",
]


@dataclass(frozen=True)
class SGLDConfig:
    """Sampler settings.

    Length. With neither ``draws`` nor ``burnin`` given (the default) the run chooses its own
    length: it samples until the estimate can be trusted (:mod:`lambdascope.llc.stopping`:
    bulk ESS ≥ ``until_ess``, split R-hat ≤ ``max_rhat``, Monte Carlo error ≤ ``max_mcse`` of
    λ̂, drift ≤ ``max_drift``), or until ``max_steps`` steps per chain or ``max_seconds``, and
    the result says which. Giving ``draws`` or ``burnin`` fixes the length instead (the other
    defaults to 200); ``draws`` counts kept steps after burn-in and thinning.

    - ``step_size`` ε: None (the default) calibrates it from the model and data before the run
      (:mod:`lambdascope.llc.calibration`); a number skips calibration.
    - ``localization`` γ: strength of the pull (γ/2)·‖w − w*‖² to the trained weights. None (the
      default) sets it from the loss's curvature at w*: nβ·h_top/1000 within [3, 10], h_top the
      top Hessian eigenvalue (:mod:`lambdascope.llc.localization`; the result and the
      calibration summary say which γ). A constant could not serve: on deep linear networks at
      n = 1e5 (nβ·h_top ≥ 5.6e4) γ = 1, 3 and 10 give the same λ̂ and 10 mixes fastest, while a
      softmax regression on standardized features (λ = d/2 exactly, nβ·h_top ≈ 200) reads 10-13%
      low at γ = 10 and 2.5-3.8% low at γ = 3 (docs/benchmarks.md §4zb). Below 3, an MLP's
      chains stop being local (on the digits MLP below γ = 1 λ̂ keeps climbing). Give it to hold
      γ fixed, e.g. to compare checkpoints along a training run at one γ.
    - ``nbeta``: None → n / log n (n = dataset size), which makes ``wbic`` the WBIC.
    - ``bias_correction``: subtract the step's predicted first-order bias (discretization plus
      minibatch noise, measured along the chains; :mod:`lambdascope.llc.calibration`) from λ̂.
      A calibrated step leaves about +2% of bias; with the correction, on six DLNs of the bench
      suite and a 100-parameter linear regression (λ exact), default settings otherwise, the
      errors went from +0.6 … +2.6% (mean |err| 1.7%) to −1.5 … +0.3% (0.5%). Without it λ̂ is the SGLD average as
      sampled, as devinterp reports it.
    - ``weight_decay`` wd ≥ 0 adds a Gaussian prior (wd/2)·‖w‖² to the potential (0 = none).
    - ``remove_slope``: sample L_n less its tangent plane at w*, L_n(w) − ∇L_n(w*)·(w − w*) (the
      loss's Bregman divergence from w*, plus L_n(w*)), and read λ̂ from it
      (:mod:`lambdascope.llc.stationarity`). At a minimum ∇L_n(w*) = 0 and nothing changes; at a
      linear regression's point off its minimum it gives the minimum's λ̂ exactly where the
      loss as it is gives a λ̂ lowered by the slope, even negative. Off (the default): the
      loss as it is, as devinterp samples it, with the slope's part of λ̂ measured
      (``slope_term``) and judged by the verdict. Not the default: on a digits MLP trained as
      the demo's (−7% of λ̂ from the slope) the tilted chains mixed several times more slowly and
      ran to the step cap where the loss as it is converged (docs/benchmarks.md §4zt), and it changes what λ̂ means along a training run.
    - ``accept_every`` k: score every k-th step with the MALA acceptance probability (one extra
      forward+backward each, on the step's own minibatch); 0 turns it off.
    - ``chains_per_pass``: chains stepped together in one forward+backward pass. None (the
      default): all of them when their activations fit in half of the available memory, else
      the largest group that does, then one chain per pass instead if one step timed that way
      is faster (large models; :mod:`lambdascope.llc.chain_groups`). The estimate is the same
      either way, up to floating-point rounding.
    - ``compile_gradients``: compile the chains' gradient with torch's inductor once the
      estimate has sampled long enough to repay it (:mod:`lambdascope.llc.compiled`); the
      estimate is the same up to float rounding. Off: eager throughout.
    - ``calibration_budget``: the chain-steps calibration may spend, as a fraction of the main
      run's planned length (:attr:`planned_steps`); a floor of a few short pilots applies to
      tiny runs.
    - ``precondition``: "kronecker" (the default) samples the main run of a calibrated run that
      chooses its length with a preconditioner M, estimated from the warm-up's gradients and
      re-estimated at each chunk as the chains stiffen, the step raised by the bias M removes
      (:mod:`lambdascope.llc.preconditioner`): each weight matrix moves in the eigenbasis of its
      gradients' row and column second moments, the other parameters per coordinate. On two
      draws of ten deep linear networks it ended 19 of 20 audits `ok` in 0.6-0.7x the diagonal
      M's time (docs/benchmarks.md §4y). "diagonal" uses a per-coordinate M throughout (§4v);
      "none" samples with M = I. A fixed-length run or a given step size is never
      preconditioned.

    Background for the step-size defaults, on an MLP 64→256→10 trained to 99.9% on sklearn digits
    (x / 16, CE, n = 1797, nβ = n / log n ≈ 240, top Hessian eigenvalue at w* ≈ 1), 4 chains,
    γ = 10: ε = 3e-4 → λ̂ 33.5, 1e-3 → 35.8, 2e-3 → 52, 1e-2 → 575 (3000 steps).
    """

    chains: int = 4
    draws: int | None = None
    burnin: int | None = None
    thin: int = 1
    step_size: float | None = None
    localization: float | None = None
    nbeta: float | None = None
    batch_size: int = 256
    seed: int = 0
    weight_decay: float = 0.0
    accept_every: int = 10
    calibration_budget: float = 0.25
    until_ess: float = StoppingRule.until_ess
    max_rhat: float = StoppingRule.max_rhat
    max_mcse: float = StoppingRule.max_mcse
    max_drift: float = StoppingRule.max_drift
    max_steps: int = StoppingRule.max_steps
    max_seconds: float = StoppingRule.max_seconds
    bias_correction: bool = True
    remove_slope: bool = False
    chains_per_pass: int | None = None
    compile_gradients: bool = True
    precondition: str = "kronecker"

    @property
    def adaptive(self) -> bool:
        """True when the run chooses its own length (neither draws nor burnin given)."""
        return self.draws is None and self.burnin is None

    @property
    def fixed_burnin(self) -> int:
        return FIXED_BURNIN if self.burnin is None else self.burnin

    @property
    def fixed_draws(self) -> int:
        return FIXED_DRAWS if self.draws is None else self.draws

    @property
    def total_steps(self) -> int:
        """Steps per chain: the fixed length, or the cap of a run that chooses its own."""
        if self.adaptive:
            return self.max_steps
        return self.fixed_burnin + self.fixed_draws * self.thin

    @property
    def planned_steps(self) -> int:
        """The length calibration plans for (a run that chooses its own is typically this long)."""
        return min(PLANNED_STEPS, self.max_steps) if self.adaptive else self.total_steps

    @property
    def planned_burnin(self) -> int:
        """The burn-in the warm-up step is sized for (see calibration)."""
        return 2 * warmup_steps(self) if self.adaptive else self.fixed_burnin

    def stopping_rule(self) -> StoppingRule:
        return StoppingRule(until_ess=self.until_ess, max_rhat=self.max_rhat, max_mcse=self.max_mcse,
                            max_drift=self.max_drift, max_steps=self.max_steps, max_seconds=self.max_seconds)

    def __post_init__(self) -> None:
        """Checked once, when built: an SGLDConfig that exists is valid, so nothing downstream
        validates it again (dataclasses.replace builds, and checks, a new one)."""
        def finite_pos(v: float | None) -> bool:
            return v is not None and math.isfinite(v) and v > 0

        checks = [
            ("chains", self.chains >= 1, ">= 1"),
            ("draws", self.draws is None or self.draws >= 1, ">= 1 (or unset: run until trusted)"),
            ("burnin", self.burnin is None or self.burnin >= 0, ">= 0 (or unset: run until trusted)"),
            ("thin", self.thin >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("step_size", self.step_size is None or finite_pos(self.step_size), "> 0 and finite (or unset)"),
            ("localization", self.localization is None or (math.isfinite(self.localization) and self.localization >= 0),
             ">= 0 and finite (or unset: chosen from the curvature)"),
            ("nbeta", self.nbeta is None or finite_pos(self.nbeta), "> 0 and finite"),
            ("seed", self.seed >= 0, ">= 0"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, ">= 0 and finite"),
            ("accept_every", self.accept_every >= 0, ">= 0"),
            ("calibration_budget", math.isfinite(self.calibration_budget) and self.calibration_budget > 0,
             "> 0 and finite"),
            ("until_ess", finite_pos(self.until_ess), "> 0 and finite"),
            ("max_rhat", math.isfinite(self.max_rhat) and self.max_rhat > 1, "> 1 and finite"),
            ("max_mcse", finite_pos(self.max_mcse), "> 0 and finite"),
            ("max_drift", finite_pos(self.max_drift), "> 0 and finite"),
            ("max_steps", self.max_steps >= 2 * MIN_DRAWS, f">= {2 * MIN_DRAWS}"),
            ("max_seconds", finite_pos(self.max_seconds), "> 0 and finite"),
            ("chains_per_pass", self.chains_per_pass is None or self.chains_per_pass >= 1,
             ">= 1 (or unset: as many as fit in memory)"),
            ("precondition", self.precondition in PRECONDITIONERS, " or ".join(map(repr, PRECONDITIONERS))),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule} (got {getattr(self, name)!r})")


PRECONDITIONERS = ("none", *preconditioner_lib.STRUCTURES)
# a preconditioned main run's step is at most this multiple of the calibrated one (the Kronecker
# M's rotations let it grow 26-64x on deep linear networks, docs/benchmarks.md §4y)
MAX_RAISE = {"diagonal": 8.0, "kronecker": 64.0}
# ... and at least this one, or M is declined: it slows the stiff directions' relaxation (by
# m·raise) for little gain in the flat ones (on make run's MLPs a Kronecker M that let the step
# grow ×1.2 took 44,000-69,000 steps where the plain step took 10,000-19,000, docs §4y)
MIN_RAISE = 2.0
FIXED_DRAWS = FIXED_BURNIN = 200  # a fixed-length run's default for whichever of the two is unset
PLANNED_STEPS = 8000  # what calibration's budget is sized for in a run that chooses its length
WARMUP_STEPS = 1000  # the warm-up stage of such a run (at most a fifth of max_steps)


def warmup_steps(config: SGLDConfig) -> int:
    """Steps of the warm-up stage at the larger step (see calibration), before the main run."""
    if config.adaptive:
        return min(WARMUP_STEPS, config.max_steps // 5)
    return config.fixed_burnin // 2 if config.fixed_burnin >= 2 * MIN_STAGE else 0


@dataclass
class LLCResult:
    mean: float
    std: float  # sample std (ddof=1) of the per-chain estimates; 0 for one chain
    per_chain: list[float]
    init_loss: float  # L_n(w*) on the full data set
    nbeta: float
    num_examples: int
    num_parameters: int  # the SAMPLED parameters (a restricted run counts only its group)
    # per chain, the minibatch loss at every step (less the minibatch's own loss at w*, plus L_n(w*),
    # when the loss is a mean over examples: sgld.run_sgld's baseline), warm-up and burn-in included
    traces: list[list[float]]
    sampling_seconds: float  # the main run only (calibration.seconds is separate)
    vectorized: bool  # whether the chains ran under vmap
    # mean MALA acceptance probability of the scored steps after burn-in (all scored steps if
    # none fall after it); nan when accept_every = 0
    acceptance: float = math.nan
    acceptance_per_chain: list[float] | None = None
    # how the step size was chosen; ran=False (and no pilots) when step_size was given
    calibration: CalibrationResult | None = None
    # n · (mean kept minibatch loss over all chains): the WBIC only when nbeta = n / log n
    wbic: float = math.nan
    step_size: float = math.nan  # as used
    localization: float = math.nan  # as used
    chain_steps_per_second: float = math.nan  # chains × steps / sampling_seconds
    # First-order estimate of the step's upward bias of λ̂ (discretization + minibatch noise, in
    # λ units) from the scored steps after burn-in; see lambdascope.llc.calibration. nan when
    # accept_every = 0. With ``bias_corrected`` it has been subtracted from ``mean`` and
    # ``per_chain``; ``uncorrected_mean`` is λ̂ as sampled.
    bias_estimate: float = math.nan
    uncorrected_mean: float = math.nan
    bias_corrected: bool = False
    burnin: int = 0  # steps of each trace discarded before the draws (warm-up stage included)
    draws: int = 0  # kept per chain, after thinning
    thin: int = 1
    stopping: Stopping | None = None  # how the run's length was decided
    chain_plan: ChainPlan | None = None  # how many chains went through each forward+backward pass
    peak_memory_bytes: int = 0  # see lambdascope.llc.chain_groups.peak_bytes
    peak_memory_kind: str = ""  # what peak_memory_bytes measured
    compile_summary: str = ""  # whether the gradient was compiled, and when (lambdascope.llc.compiled)
    compile_seconds: float = 0.0  # what compiling took (included in sampling_seconds)
    # λ̂'s change into the kept draws per doubling of the chains' age, and its standard error,
    # relative to λ̂ (lambdascope.llc.stopping.drift); nan when there is nothing to compare
    drift: float = math.nan
    drift_error: float = math.nan
    # |∇L_n(w*)| over the sampled parameters, and the mean over the kept draws' scored steps of
    # nβ·∇L_n(w*)·(w − w*): the part of λ̂ owed to w*'s slope, not to a minimum's geometry
    # (lambdascope.llc.stationarity); nan when not measured (accept_every = 0, or no gradient)
    gradient_norm: float = math.nan
    slope_term: float = math.nan
    slope_removed: bool = False  # the chains sampled L_n less its tangent plane at w* (remove_slope)


MIN_STAGE = 10  # a fixed burn-in is split for refinement only if each half has this many steps
REFINE_SCORE_EVERY = 2  # scoring in the refinement stage (first half of the burn-in)
STAGE_SEED = 7_777_777  # the second stage's seed offset (its own random streams)


def default_nbeta(n: int) -> float:
    """n / log n: the inverse temperature β = 1 / log n times the data set size."""
    if n < 2:
        raise ValueError(f"need at least 2 examples for nbeta = n / log n (got {n})")
    return n / math.log(n)


def batch_losses(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, batch_size: int
) -> tuple[float, list[float], torch.Tensor | None]:
    """(mean loss over all of (x, y), the loss of each full batch, each example's loss less that
    mean), without gradients. The last is None when the loss is not a mean over examples (a
    batch's loss differs from the mean of its examples' losses, or ``loss_fn`` cannot be mapped
    over single examples): see :func:`lambdascope.llc.sgld.run_sgld`'s ``baseline``."""
    forward = make_forward(model, vectorized=True)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    state = {k: v.detach() for k, v in state.items()}
    total, per_batch, examples = 0.0, [], []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            output = forward(state, xb)
            value = loss_fn(output, yb).item()
            total += value * xb.shape[0]
            if xb.shape[0] == batch_size:
                per_batch.append(value)
            if examples is not None:  # dropped for good once a batch is not a mean over its examples
                each = _example_losses(loss_fn, output, yb, value)
                examples = None if each is None else examples + [each]
    mean = total / x.shape[0]
    baseline = torch.cat(examples).sub_(mean) if examples else None
    return mean, per_batch, baseline


def _example_losses(loss_fn: LossFn, output: torch.Tensor, target: torch.Tensor,
                    batch_loss: float) -> torch.Tensor | None:
    """This batch's per-example losses (float64), or None when the batch's loss is not their mean
    (to float32's precision)."""
    try:
        each = vmap(lambda o, t: loss_fn(o.unsqueeze(0), t.unsqueeze(0)))(output, target).double()
    except Exception:  # noqa: BLE001 - a loss that cannot be mapped per example gets no baseline
        return None
    if each.shape != (output.shape[0],) or not bool(torch.isfinite(each).all()):
        return None
    if abs(float(each.mean()) - batch_loss) > 1e-5 * max(abs(batch_loss), float(each.abs().mean()), 1e-30):
        return None
    return each


def full_loss(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, batch_size: int
) -> float:
    """Mean loss over all of (x, y), in batches, without gradients; exact for mean-reduced losses."""
    return batch_losses(model, x, y, loss_fn, batch_size)[0]


def divergence_threshold(init_loss: float, nbeta: float, num_parameters: int, batch_spread: float) -> float:
    """The minibatch loss above which a chain counts as diverged (exploded), not merely noisy.

    At equilibrium nβ·(L_n(w) − L_n(w*)) has mean λ ≤ d/2 and a spread of order √(d/2) (exactly
    Gamma(d/2) for a regular model), and a minibatch adds nβ·(std of minibatch losses at w*).
    A chain more than ten times past the d/2 ceiling plus a hundred such spreads is not sampling
    the local posterior any more: its loss is growing geometrically, which is what a too-large
    step does, and it would overflow a few dozen steps later.
    """
    half = num_parameters / 2
    energy = 10 * half + 100 * math.sqrt(half) + 20 * nbeta * batch_spread
    return init_loss + energy / nbeta


def _on_device(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> torch.nn.Module:
    """The model itself if it already lives on ``device`` (in ``dtype``), else a converted copy
    (never the original)."""
    tensors = [*model.parameters(), *model.buffers()]
    same_device = all(t.device == device for t in tensors)
    same_dtype = dtype is None or all(t.dtype == dtype for t in tensors if t.is_floating_point())
    if same_device and same_dtype:
        return model
    moved = copy.deepcopy(model).to(device)
    if dtype is not None:
        moved = moved.to(dtype)
    return moved


def resolve_params(model: torch.nn.Module, params: Sequence[str] | None) -> list[str]:
    """The names of the parameters to sample: ``params`` (checked), or all with requires_grad."""
    named = dict(model.named_parameters())
    if params is None:
        names = [k for k, p in named.items() if p.requires_grad]
        if not names:
            raise ValueError("the model has no trainable parameters to sample")
        return names
    if isinstance(params, str):
        params = [params]
    names = list(dict.fromkeys(params))
    if not names:
        raise ValueError("params is empty; name at least one parameter to sample (or pass None)")
    unknown = [k for k in names if k not in named]
    if unknown:
        known = list(named)
        raise ValueError(
            f"unknown parameter name(s): {', '.join(unknown)}; the model has: {', '.join(known[:30])}"
            + (" ..." if len(known) > 30 else ""))
    not_float = [k for k in names if not named[k].is_floating_point()]
    if not_float:
        raise ValueError(f"parameter(s) {', '.join(not_float)} are not floating point and cannot be sampled")
    return names


def estimate_llc(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    config: SGLDConfig,
    *,
    device: torch.device | str | None = None,
    progress: Callable[[int, int, float, str], None] | None = None,
    vectorize: bool = True,
    params: Sequence[str] | None = None,
    dtype: torch.dtype | None = None,
    snapshots: Snapshots | None = None,
) -> LLCResult:
    """Estimate the LLC of ``model`` at its current weights w* on the data (x, y).

    ``loss_fn(output, target)`` must return the MEAN loss over the batch. The model is evaluated
    in its current mode (call ``.eval()`` first if it has dropout or batch norm) and never
    mutated.

    - ``params``: sample only these parameter names (a restricted LLC: the rest stay frozen at
      w*, ``num_parameters`` counts only these); unknown names raise ValueError naming them.
      None samples every parameter with ``requires_grad``.
    - ``dtype``: run in this floating dtype (e.g. torch.float64); model and floating data are
      converted (a copy; the original model is untouched). None keeps the model's dtype.
    - ``progress(step, total, running λ̂, status)`` is called every ~1% of a sampling stage's
      steps and at the end (λ̂ as sampled: the bias correction comes with the result); ``total`` is the fixed length, or the step cap of a run that
      chooses its own length, whose ``status`` says what it still waits for ("ESS 23/200,
      R-hat 1.08/1.05, ..."). Calibration (which runs first when ``config.step_size`` is None)
      does not report progress.
    - After calibration the chains start where the pilots left them (partly burned in), not at
      w*; a warm-up stage runs at ``calibration.warmup_step_size`` (up to a few times the
      pilots' choice: faster diffusion along flat directions) and its statistics refine the step
      for the rest (:func:`lambdascope.llc.calibration.refine`); it is always burn-in, and
      ``step_size`` reports the final step. With a given step size the chains start at w* and
      every step uses it.
    - ``vectorize=False`` skips vmap (for debugging; vmap failures fall back to that path by
      themselves).
    - ``snapshots``: where progress is saved at each stage boundary (after calibration, the
      warm-up and each chunk of the main run) and resumed from when this same estimate was
      interrupted: the result is the one an uninterrupted run gives
      (:mod:`lambdascope.llc.snapshots`).

    A chain whose loss goes non-finite or explodes (:func:`divergence_threshold`) raises
    :class:`SamplerDivergedError` within 50 steps; the estimate is never NaN.
    """
    began = time.perf_counter()
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x and y must hold as many examples (got {n} and {y.shape[0]})")
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype (got {dtype})")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    model = prepare_for_sampling(_on_device(model, device, dtype))
    names = resolve_params(model, params)
    named = dict(model.named_parameters())
    work_dtype = named[names[0]].dtype
    x = x.to(device=device, dtype=work_dtype if x.is_floating_point() else None)
    y = y.to(device=device, dtype=work_dtype if y.is_floating_point() else None)
    nbeta = config.nbeta if config.nbeta is not None else default_nbeta(n)
    num_parameters = sum(named[k].numel() for k in names)

    try:
        init_loss, per_batch, baseline = batch_losses(model, x, y, loss_fn, config.batch_size)
    except (RuntimeError, IndexError, TypeError) as exc:  # shapes, dtypes or ids the model rejects
        raise ValueError(f"the model cannot evaluate the loss on this data ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); check that x, y and the loss "
                         "fit the model") from None
    if not math.isfinite(init_loss):
        raise ValueError(f"L_n(w*) is not finite ({init_loss}); check the model, data and loss_fn")
    spread = float(torch.tensor(per_batch, dtype=torch.float64).std()) if len(per_batch) > 1 else 0.0
    explode_at = divergence_threshold(init_loss, nbeta, num_parameters, spread)
    # the slope at w* is recorded on scored steps only (lambdascope.llc.stationarity)
    slope = loss_gradient(model, x, y, loss_fn, names, config.batch_size) if config.accept_every else None
    plan = _chain_plan(model, x, y, loss_fn, config, names, device, vectorize)
    compiler = GradientCompiler() if config.compile_gradients and vectorize else None
    reset_peak(device)

    key = snapshots_lib.fingerprint(config, num_parameters, n, init_loss)
    resumed = snapshots_lib.resumable(snapshots, key)
    if resumed is not None:  # an interrupted run of this estimate: continue from its snapshot
        began = time.perf_counter() - resumed["elapsed"]
        calibration = snapshots_lib.calibration_from(resumed["calibration"])
        gamma = calibration.localization
        tilted = config.remove_slope and slope is not None and gamma > 0
        step_size, warm, retries = resumed["step_size"], resumed["warm"], resumed["retries"]
        start = None if resumed["start"] is None else resumed["start"].to(device)
    else:
        start = None
        calibration_deadline = began + CALIBRATION_TIME_SHARE * config.max_seconds if config.adaptive else None
        # The loss's top curvature sets calibration's first step and the default γ; it needs no
        # precision, so it gets a small share of calibration's time (on a 1M-parameter
        # transformer its 20 products on 2048 examples took 93 s, 2 CPU threads).
        h_top = math.nan
        if config.step_size is None or config.localization is None:
            h_top = loss_curvature(model, x, y, loss_fn, names, config.seed, calibration_deadline)
        chosen_gamma = config.localization is None
        gamma = default_localization(nbeta, h_top) if chosen_gamma else config.localization
        tilted = config.remove_slope and slope is not None and gamma > 0
        step_size = config.step_size
        calibration = given(step_size)
        if step_size is None:
            calibration = calibrate(
                model, x, y, loss_fn, config, params=names, nbeta=nbeta, init_loss=init_loss,
                explode_at=explode_at, vectorize=vectorize, chains_per_pass=plan.per_pass, compiler=compiler,
                deadline=calibration_deadline, top_eigenvalue=h_top, localization=gamma, baseline=baseline,
                slope=slope, tilt=tilted)
            step_size = calibration.chosen_step_size
            start, calibration.states = calibration.states, None  # the result stays plain data
        calibration.top_eigenvalue, calibration.localization = h_top, gamma  # a given step's too
        if chosen_gamma:
            calibration.summary += " " + describe_localization(gamma, nbeta, h_top) + "."
        # With calibration, a warm-up stage at the larger warm-up step comes first; its
        # well-relaxed statistics then refine the step for the main run (calibration.refine).
        warm = warmup_steps(config) if calibration.ran else 0
        retries = 0
    saver = snapshots_lib.Saver(snapshots, key, began)
    if resumed is None:
        saver.attempt(calibration, step_size, start, warm, retries)
    else:
        saver.calibration, saver.state = calibration, {k: resumed[k] for k in (
            "step_size", "start", "warm", "retries", "warmup", "main")}

    sampler = _Sampler(model, x, y, loss_fn, config, nbeta, init_loss, progress,
                       dict(chains=config.chains, localization=gamma, nbeta=nbeta,
                            batch_size=config.batch_size, weight_decay=config.weight_decay, params=names,
                            explode_at=explode_at, vectorize=vectorize, chains_per_pass=plan.per_pass,
                            compiler=compiler, baseline=baseline, slope=slope, tilt=tilted), began,
                       saver, resumed, device)
    deadline = began + config.max_seconds
    while True:
        try:
            trace, burnin, stopping, step_size = sampler.run(step_size, start, warm, calibration, deadline)
            break
        except SamplerDivergedError as err:
            smaller = after_divergence(calibration, err, retries)
            if smaller is None:
                raise
            retries += 1
            step_size, start, warm = smaller, None, 0  # from w*, without warm-up
            sampler.resumed = None
            saver.attempt(calibration, step_size, start, warm, retries)
    losses = trace.losses.double()
    kept = losses[:, burnin :: config.thin]
    sampled = (nbeta * (kept.mean(dim=1) - init_loss)).tolist()
    acceptance, per_chain_acc = _acceptance(trace.acceptance, trace.accept_steps, burnin)
    bias = predicted_bias(trace, burnin, step_size)
    # The first-order bias is a property of the step, not of a chain: one correction for all.
    corrected = config.bias_correction and math.isfinite(bias)
    per_chain = [v - bias for v in sampled] if corrected else sampled
    std = torch.tensor(per_chain).std().item() if len(per_chain) > 1 else 0.0
    peak, peak_kind = peak_bytes(device)
    drift, drift_error = _drift(losses, burnin, stopping, nbeta, init_loss,
                                calibration.warmup_step_size / step_size)
    slope_term = _slope_term(trace, burnin)
    return LLCResult(
        mean=sum(per_chain) / len(per_chain),
        std=std,
        per_chain=per_chain,
        init_loss=init_loss,
        nbeta=nbeta,
        num_examples=n,
        num_parameters=num_parameters,
        traces=losses.tolist(),
        sampling_seconds=trace.seconds,
        vectorized=trace.vectorized,
        acceptance=acceptance,
        acceptance_per_chain=per_chain_acc,
        calibration=calibration,
        wbic=n * kept.mean().item(),
        step_size=step_size,
        localization=gamma,
        chain_steps_per_second=config.chains * losses.shape[1] / max(trace.seconds, 1e-12),
        bias_estimate=bias,
        uncorrected_mean=sum(sampled) / len(sampled),
        bias_corrected=corrected,
        burnin=burnin,
        draws=kept.shape[1],
        thin=config.thin,
        stopping=stopping,
        chain_plan=plan,
        peak_memory_bytes=peak,
        peak_memory_kind=peak_kind,
        compile_summary=compiler.summary() if compiler is not None else _not_compiled(config),
        compile_seconds=compiler.compile_seconds if compiler is not None else 0.0,
        drift=drift,
        drift_error=drift_error,
        gradient_norm=float(slope.norm()) if slope is not None else math.nan,
        slope_term=slope_term,
        slope_removed=tilted,
    )


def _slope_term(trace: SGLDTrace, burnin: int) -> float:
    """Mean of nβ·∇L_n(w*)·(w − w*) over the scored steps after burn-in, all chains (nan when none
    was recorded): the first-order part of λ̂ that w*'s slope makes (lambdascope.llc.stationarity)."""
    if trace.slope is None:
        return math.nan
    kept = trace.slope[:, trace.accept_steps >= burnin]
    kept = kept[torch.isfinite(kept)]
    return float(kept.mean()) if kept.numel() else math.nan


def _drift(losses: torch.Tensor, burnin: int, stopping: Stopping, nbeta: float, init_loss: float,
           warm_ratio: float) -> tuple[float, float]:
    """(drift, its error) of the kept draws, per doubling of the chains' age. A run that chose
    its length reports what its stopping rule last saw (its window and age, which a lowered
    step moves); a fixed run's age counts each warm-up step as ``warm_ratio`` (its step over the
    main one) steps. Measured from the trace's start instead, a window late in a long run spans a
    sliver of a doubling, so its noise read as a steep climb (+748% per doubling a few thousand
    steps after a late lowered step), and a fixed run's climb after a warm-up read as a fraction
    of itself."""
    if stopping.last is not None:
        return stopping.last.drift, stopping.last.drift_error
    warm = stopping.warmup_steps
    energy = (nbeta * (losses[:, warm:] - init_loss)).numpy()
    age = warm * warm_ratio if math.isfinite(warm_ratio) else float(warm)
    start = max(0, burnin - warm)
    return stopping_lib.drift(energy, start, age), stopping_lib.drift_error(energy, start, age)


def _chain_plan(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, config: SGLDConfig,
                names: list[str], device: torch.device, vectorize: bool) -> ChainPlan:
    """Chains per pass: as given, else what fits in memory, then the faster of that and one chain
    per pass when a step is long enough to time and the run long enough to repay it
    (:mod:`lambdascope.llc.chain_groups`)."""
    dim = sum(p.numel() for k, p in model.named_parameters() if k in set(names))
    plan = plan_chains(config.chains, dim, dict(model.named_parameters())[names[0]].element_size(),
                       activation_bytes(model, x, y, loss_fn, names, config.batch_size),
                       int(MEMORY_SHARE * available_bytes(device)), config.chains_per_pass)
    if config.chains_per_pass is not None or plan.per_pass == 1 or not vectorize:
        return plan
    try:
        together = pass_seconds(model, x, y, loss_fn, names, config.batch_size, config.chains, plan.per_pass,
                                repeats=1)
        run_seconds = config.max_seconds if config.adaptive else config.total_steps * together
        if not worth_timing(together, run_seconds):
            return plan
        # Alternate the two ways and keep each one's best: a burst of other work on the machine
        # then slows both alike instead of deciding the choice.
        one = math.inf
        for _ in range(TIMING_ROUNDS):
            one = min(one, pass_seconds(model, x, y, loss_fn, names, config.batch_size, config.chains, 1, repeats=1))
            together = min(together, pass_seconds(model, x, y, loss_fn, names, config.batch_size, config.chains,
                                                  plan.per_pass, repeats=1))
    except Exception:  # noqa: BLE001 - vmap cannot batch this model: the sampler falls back by itself
        return plan
    return by_speed(plan, config.chains, together, one)


@dataclass
class Stopping:
    """How a run's length was decided, and what the stopping rule saw last."""

    adaptive: bool
    reason: str  # one of STOP_REASONS
    summary: str  # a sentence a person can read
    steps: int  # per chain: warm-up stage + main run
    warmup_steps: int
    checks: int = 0
    last: Check | None = None
    # a capped run: about the steps per chain what it lacked would have needed at the rates seen
    # (0: unknown, or nothing it lacked grows with the run), and what that was ("ESS and settling")
    steps_wanted: int = 0
    wanted_for: str = ""
    # a capped run whose window's ESS fell to half as the window doubled: (kept steps, ESS) then
    # and at the last check; the steps the ESS would need cannot be told then (_ess_stalled)
    ess_stalled: tuple[tuple[int, float], tuple[int, float]] | None = None


# Why sampling stopped. "fixed": the length was given; the others only for a run that chose it.
STOP_REASONS = ("fixed", "converged", "step_cap", "time_cap", "not_a_minimum")


class _Sampler:
    """Runs the warm-up stage and the main run of one estimate, at a fixed length or until the
    stopping rule is met; one object per estimate, so the settings are threaded through once."""

    def __init__(self, model, x, y, loss_fn, config: SGLDConfig, nbeta: float, init_loss: float,
                 progress, run: dict, began: float, saver: snapshots_lib.Saver,
                 resumed: dict | None, device: torch.device):
        self.model, self.x, self.y, self.loss_fn = model, x, y, loss_fn
        self.config, self.nbeta, self.init_loss = config, nbeta, init_loss
        self.progress, self.kwargs, self.began = progress, run, began
        # resumed: the snapshot this attempt continues from (its warm-up and main-run parts)
        self.saver, self.resumed, self.device = saver, resumed, device

    def sgld(self, steps: int, step_size: float, seed: int, init, accept_every: int, on_check=None,
             deadline: float | None = None, precondition: Preconditioner | None = None) -> SGLDTrace:
        structure = self.config.precondition if self.config.precondition != "none" else "diagonal"
        return run_sgld(self.model, self.x, self.y, self.loss_fn, steps=steps, step_size=step_size, seed=seed,
                        init=init, accept_every=accept_every, on_check=on_check, deadline=deadline,
                        precondition=precondition, moments=structure, **self.kwargs)

    def report(self, step: int, total: int, losses: torch.Tensor | None, status: str,
               llc: float | None = None) -> None:
        """Progress with λ̂ = ``llc``, else that of ``losses`` (nan when there are none)."""
        if self.progress is None:
            return
        if llc is None:
            empty = losses is None or losses.shape[1] == 0
            llc = math.nan if empty else self.nbeta * (losses.double().mean().item() - self.init_loss)
        self.progress(step, total, llc, status)

    def run(self, step_size: float, start, warm: int, calibration: CalibrationResult, deadline: float
            ) -> tuple[SGLDTrace, int, Stopping, float]:
        """(trace of every step, burn-in, how the length was decided, the final step size)."""
        config = self.config
        total = config.total_steps
        first = None
        warmed = (self.resumed or {}).get("warmup")
        if warm and warmed is not None:  # resumed after the warm-up (refine already applied)
            first = snapshots_lib.trace_from(warmed["trace"], self.device)
            warm, step_size, start = first.losses.shape[1], warmed["step_size"], first.final
        elif warm:
            def on_warm(done: int, losses: torch.Tensor) -> None:
                self.report(done, total, losses[:, -1:], "warming up")
            # A run that chooses its length gives the warm-up at most WARMUP_TIME_SHARE of its time.
            cutoff = self.began + WARMUP_TIME_SHARE * config.max_seconds if config.adaptive else None
            first = self.sgld(warm, calibration.warmup_step_size, config.seed, start, REFINE_SCORE_EVERY, on_warm,
                              cutoff)
            warm = first.losses.shape[1]
            step_size = refine(calibration, first, self.nbeta, self.init_loss, calibration.warmup_step_size)
            start = first.final
            self.saver.warmed(first, step_size)
        if config.adaptive:
            warm_time = warm * calibration.warmup_step_size if warm else 0.0
            main, stopping, step_size, burnin = self._until_trusted(step_size, start, warm, warm_time, deadline,
                                                                    calibration, first)
            burnin += warm
        else:
            main = self._fixed(step_size, start, warm)
            burnin = config.fixed_burnin
            stopping = Stopping(False, "fixed", f"fixed length: {burnin} burn-in steps + {config.fixed_draws} "
                                f"draws (thinned by {config.thin})", total, warm)
        if first is not None and config.accept_every == 0:
            first = _unscored(first)  # no acceptance asked for: report none, warm-up's included
        trace = main if first is None else _join([first, main])
        return trace, burnin, stopping, step_size

    def _fixed(self, step_size: float, start, warm: int) -> SGLDTrace:
        config = self.config
        total = config.total_steps
        keep_from = config.fixed_burnin - warm

        def on_check(done: int, losses: torch.Tensor) -> None:
            kept = losses[:, keep_from :: config.thin]
            self.report(warm + done, total, kept if kept.shape[1] else losses[:, -1:], "")
        seed = config.seed + STAGE_SEED if warm else config.seed
        return self.sgld(total - warm, step_size, seed, start, config.accept_every, on_check)

    def _until_trusted(self, step_size: float, start, warm: int, warm_time: float, deadline: float,
                       calibration: CalibrationResult, first: SGLDTrace | None
                       ) -> tuple[SGLDTrace, Stopping, float, int]:
        """(trace of the main run, how it stopped, the final step size, its burn-in in steps).

        The stationary window starts at ``origin``: everything before it is burn-in. After
        each chunk calibration may lower a calibrated step (:func:`calibration.retune`: the
        chains met stiffer regions than the pilots saw); the window then restarts, unless the
        restarted window could not settle before the cap (:func:`_too_late`). ``clock``
        is the chains' sampling time Σε before ``origin`` (``warm_time`` for the warm-up), so
        the drift test measures the climb per doubling of the chains' age (:func:`stopping.drift`).
        With ``config.precondition`` (a calibrated step only) the main run is preconditioned
        (:class:`_Preconditioning`), from the warm-up's gradients on.
        """
        config = self.config
        precond = _Preconditioning(config, calibration, first)
        rule = config.stopping_rule()
        cap = config.max_steps - warm
        parts: list[SGLDTrace] = []
        losses = torch.empty(config.chains, 0, dtype=torch.float64)  # the main run's, on the CPU
        done, origin, checks, check, status, clock = 0, 0, 0, None, "sampling", warm_time
        reason, retunes, declined, slope_share = "step_cap", [], "", math.nan
        history: list[tuple[int, float]] = []  # (kept steps, ESS) of each check of the current window

        def settle() -> float:
            """Steps the window must span: a doubling of the chains' age, once the step was lowered."""
            return clock / step_size if retunes else 0.0

        def judge(joined: SGLDTrace | None = None) -> Check:
            """The stopping rule on the window since ``origin``, with the chains' age there, its
            drift net of the predicted bias when the estimate is (the bias grows as the chains
            stiffen at a fixed step, and that climb is not λ̂'s: docs/benchmarks.md §4x).
            ``joined``: the parts already joined, where the caller has them."""
            probes = (joined if joined is not None else _join(parts)) if config.bias_correction and parts else None

            def bias(lo: int, hi: int) -> tuple[float, float]:
                return window_bias(probes, origin + lo, origin + hi, step_size)
            return assess(losses[:, origin:].numpy(), self.nbeta, self.init_loss, rule, config.thin,
                          clock / step_size, settle(), bias if probes is not None else None)
        main = (self.resumed or {}).get("main")
        if main is not None:  # resumed between two chunks: as the run stood after the last one
            parts = [snapshots_lib.trace_from(p, self.device) for p in main["parts"]]
            losses = torch.cat([losses, *(p.losses.double() for p in parts)], dim=1)
            done, start = losses.shape[1], parts[-1].final
            step_size, origin, checks, status = main["step_size"], main["origin"], main["checks"], main["status"]
            retunes, clock, declined = list(main["retunes"]), main["clock"], main.get("declined", "")
            history = [(int(k), float(e)) for k, e in main.get("history", [])]
            precond.restore(main["precondition"])
            if main["checked"]:
                check = judge()
        elif precond.m is not None:
            step_size = precond.raised(step_size)
        saved = len(parts)
        while True:
            if len(parts) > saved:  # between chunks: a boundary a resumed run can start from
                self.saver.main(parts, step_size=step_size, origin=origin, checks=checks, status=status,
                                retunes=retunes, checked=check is not None, clock=clock, declined=declined,
                                precondition=precond.state(), history=[list(h) for h in history])
                saved = len(parts)
            seconds = sum(p.seconds for p in parts)
            rate = done / seconds if seconds > 0 else math.nan
            left = deadline - time.perf_counter()
            if left <= 0 and parts:
                reason = "time_cap"
                break
            steps = next_chunk(done - origin, cap - done, left, rate)
            if steps <= 0:
                break

            def on_check(d: int, chunk: torch.Tensor, shown=check) -> None:
                # the window's λ̂ as of the last check; the chunk's own until there is one
                self.report(warm + done + d, config.total_steps, None if shown else chunk[:, d // 2:],
                            status, shown.llc if shown else None)
            part = self.sgld(steps, step_size, _chunk_seed(config.seed, len(parts)), start, config.accept_every,
                             on_check, deadline, precond.m)
            precond.gather(part)
            parts.append(part)
            start = part.final
            done += part.losses.shape[1]
            losses = torch.cat([losses, part.losses.double()], dim=1)
            smaller = retune(calibration, part, step_size, self.nbeta, self.init_loss, len(retunes))
            if smaller is not None and done < cap:
                if _too_late(smaller, cap - done, clock, done - origin, step_size):
                    declined = declined or (f"at step {warm + done} a smaller step was declined ({smaller.why}): a "
                                            "window restarted there could not span a doubling of the chains' age "
                                            "before the step cap, and the bias is corrected"
                                            + ("" if smaller.bias_share <= BIAS_WARN else
                                               " (above the verdict's bound: see its warning)"))
                else:
                    retunes.append(f"at step {warm + done} the step size went {step_size:.3g} → "
                                   f"{smaller.step_size:.3g} ({smaller.why})")
                    clock += (done - origin) * step_size
                    step_size, origin, check, history = smaller.step_size, done, None, []
                    status = "step size lowered: the window starts again"
                    continue
            joined = _join(parts)  # once per check: the stopping rule and the slope's share both read it
            check = judge(joined)
            checks += 1
            history.append((check.steps - check.burnin, check.ess))
            status = check.status(rule)
            slope_share = self._slope_share(joined, origin + check.burnin, check)
            if abs(slope_share) > SLOPE_FAIL:  # λ̂ is mostly the chains' slide: more sampling slides further
                check.not_a_minimum = True
            if check.not_a_minimum:  # first: a stable estimate below L_n(w*) is no estimate
                reason = "not_a_minimum"
                break
            if check.met:
                reason = "converged"
                break
            if done >= cap:
                break
        if check is None and done:  # stopped right after a retune: judge what there is
            if done <= origin:  # judge the window before the retune instead
                origin, clock = 0, warm_time
            check = judge()
            checks += 1
        summary = _stopping_summary(reason, check, rule, warm + done, warm + origin, slope_share)
        if retunes or declined:
            changes = sorted([*retunes, declined] if declined else retunes, key=_at_step)
            summary += "; the chains met stiffer regions than calibration saw, so " + "; ".join(changes)
        summary += precond.summary()
        burnin = origin + (check.burnin if check is not None else 0)
        self.report(warm + done, warm + done, losses[:, burnin:], status)
        stalled = _ess_stalled(history, rule) if reason in ("step_cap", "time_cap") else None
        wanted, wanted_for = _steps_wanted(check, rule, done - origin, settle(), ess_grows=stalled is None)
        if reason != "step_cap" or not wanted:
            wanted, wanted_for = 0, ""
        stop = Stopping(True, reason, summary, warm + done, warm, checks, check,
                        warm + origin + wanted if wanted else 0, wanted_for, stalled)
        return _join(parts), stop, step_size, burnin

    def _slope_share(self, joined: SGLDTrace, kept_from: int, check: Check) -> float:
        """w*'s slope's part of the window's λ̂ (lambdascope.llc.stationarity), relative to |λ̂|; nan
        while the window holds fewer than MIN_DRAWS draws, or when λ̂ holds no slope (removed).
        ``joined``: the main run's parts as one trace."""
        if self.kwargs.get("tilt") or check.draws < MIN_DRAWS or not check.llc or not math.isfinite(check.llc):
            return math.nan
        return _slope_term(joined, kept_from) / abs(check.llc)


class _Preconditioning:
    """The M of a preconditioned main run (:mod:`lambdascope.llc.preconditioner`): first from the
    warm-up's scored gradients, which also raise the calibrated step by the share of its bias M
    removes; then re-estimated from each ~``MIN_SAMPLES`` scored gradients of the main run
    (between chunks, so M is fixed within each). ``m`` is None when off ("none", a given step,
    no warm-up scored) or until there is something to estimate from."""

    def __init__(self, config: SGLDConfig, calibration: CalibrationResult, first: SGLDTrace | None):
        self.structure = config.precondition
        self.on = self.structure != "none" and calibration.ran
        self.localization = calibration.localization  # the γ the run uses (set from the curvature if unset)
        self.m: Preconditioner | None = None
        self.pending: dict | None = None  # the moments since the last estimate
        self.estimates, self.raise_factor, self.declined = 0, 1.0, math.nan
        if self.on and first is not None and first.moments is not None:
            self.m = preconditioner_lib.estimate(first.moments, self.localization, self.structure)
            if self.m is not None and 1.0 / self.m.bias_ratio < MIN_RAISE:
                self.on, self.m, self.declined = False, None, 1.0 / self.m.bias_ratio
            elif self.m is not None:
                self.estimates = 1
                self.raise_factor = min(MAX_RAISE[self.structure], 1.0 / self.m.bias_ratio)

    def raised(self, step_size: float) -> float:
        """The main run's first step: the calibrated one with the bias M removes given back."""
        return step_size * self.raise_factor

    def gather(self, part: SGLDTrace) -> None:
        """Add a chunk's gradients; re-estimate M once there are enough."""
        if not self.on or part.moments is None:
            return
        self.pending = preconditioner_lib.add(self.pending, part.moments)
        m = preconditioner_lib.estimate(self.pending, self.localization, self.structure)
        if m is not None:
            self.m, self.pending, self.estimates = m, None, self.estimates + 1

    def state(self) -> dict:
        """What a snapshot keeps to resume between chunks (:meth:`restore`)."""
        return {"m": None if self.m is None else self.m.state(), "pending": self.pending,
                "estimates": self.estimates, "raise_factor": self.raise_factor}

    def restore(self, state: dict) -> None:
        self.m = None if state["m"] is None else Preconditioner.from_state(state["m"])
        self.pending, self.estimates, self.raise_factor = state["pending"], state["estimates"], state["raise_factor"]

    def summary(self) -> str:
        if math.isfinite(self.declined):
            return (f"; not preconditioned: a {self.structure} M estimated from the warm-up would have let the "
                    f"calibrated step grow only ×{self.declined:.1f} (below ×{MIN_RAISE:g}, it slows the stiff "
                    "directions more than it speeds the flat ones)")
        if self.estimates == 0:
            return ""
        times = "once" if self.estimates == 1 else f"{self.estimates} times"
        where = "in its flattest directions" if self.structure == "kronecker" else "in the flattest coordinates"
        return (f"; sampled with a {self.structure} preconditioner, estimated {times} from the chains' "
                f"gradients (it let the calibrated step grow ×{self.raise_factor:.1f} {where})")


# Shares of max_seconds (from the start of the estimate) by which calibration, then the warm-up
# stage, must have ended in a run that chooses its length; the main run has the rest.
CALIBRATION_TIME_SHARE = 0.2
WARMUP_TIME_SHARE = 0.35


def _too_late(lowered: Lowered, steps_left: int, clock: float, since: int, step_size: float) -> bool:
    """Whether a smaller step that the predicted bias asks for should be declined: the window that
    would restart with it must span a doubling of the chains' age (Σε since w*, in steps of the
    new size) and cannot within the steps left, so lowering it would leave the run to end at its
    cap on a short window. A bias up to the verdict's BIAS_WARN is corrected well (docs §4o: at
    lowered steps λ̂ moved by the predicted bias within ±2.4% of λ), so the step is kept. A larger
    bias still lowers it, unless the steps left could not even make a window as long as the one
    it would end (run 16's R10-L6: lowered 239 steps before the cap, judged `failed` on those 239
    with R-hat 1.93, where the window it ended had sampled 84,571): the step is kept and the
    verdict weighs the bias. An acceptance too low for stability always lowers it."""
    if not math.isfinite(lowered.bias_share):
        return False
    if lowered.bias_share > BIAS_WARN:
        return steps_left < since
    age_after = (clock + since * step_size) / lowered.step_size
    return steps_left < age_after


def _steps_wanted(check: Check | None, rule: StoppingRule, window: int, settle: float,
                  ess_grows: bool = True) -> tuple[int, str]:
    """(steps of the final window that would meet what a capped run lacked, as far as it scales
    with the window, and what that is), or (0, "") when none of it does: the ESS grows with the
    window's length (unless ``ess_grows`` is False: :func:`_ess_stalled`), the MCSE and the
    drift's error fall with its square root, a restarted window must span ``settle`` steps.
    Rounded up to a thousand. R-hat and the drift itself have no such rate, so a run lacking them
    may need more."""
    if check is None or window <= 0:
        return 0, ""
    needs = {}
    if ess_grows and math.isfinite(check.ess) and 0 < check.ess < rule.until_ess:
        needs["ESS"] = window * rule.until_ess / check.ess
    if math.isfinite(check.mcse) and check.mcse > rule.max_mcse:
        needs["MCSE"] = window * (check.mcse / rule.max_mcse) ** 2
    if stopping_lib.unresolved(check, rule) and math.isfinite(check.drift_error):
        needs["drift's resolution"] = window * (check.drift_error / stopping_lib.resolution(check.llc, rule)) ** 2
    if settle > window:
        needs["settling"] = settle
    if not needs:
        return 0, ""
    names = list(needs)
    what = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return int(math.ceil(max(needs.values()) / 1000) * 1000), what


def _ess_stalled(history: list[tuple[int, float]], rule: StoppingRule
                 ) -> tuple[tuple[int, float], tuple[int, float]] | None:
    """((kept steps, ESS) of an earlier check, of the last) when the last check lacked ESS and
    an earlier check of the same window, over at most half as many kept steps, had at least
    twice as much; else None. The ESS of a stationary trace grows with its length, so the steps
    a capped run would need are extrapolated from it (:func:`_steps_wanted`); on deep networks it
    need not: the chains drift along the weights' rescaling symmetries into ever stiffer regions
    and wander more slowly than the run (docs/benchmarks.md §4zj, §4zp: one window's ESS fell
    from 285 to 29 as it doubled). A fall to half where a stationary trace would have doubled is
    well beyond the noise of the ESS's estimate (one window's went 49, 14, ..., 152, 65, 144 on
    its way to 375), and there "raise the cap to N steps" would be a guess."""
    if not history:
        return None
    kept, ess = history[-1]
    if not (math.isfinite(ess) and ess < rule.until_ess):
        return None
    earlier = [(k, e) for k, e in history[:-1] if 2 * k <= kept and math.isfinite(e) and e >= 2 * ess]
    return (max(earlier, key=lambda h: h[1]), (kept, ess)) if earlier else None


def _at_step(note: str) -> int:
    """The step a note "at step N ..." of :meth:`_Sampler._until_trusted` is about."""
    return int(note.split(maxsplit=3)[2])


def _chunk_seed(seed: int, index: int) -> int:
    """Each chunk of the main run draws from its own streams (see sgld: seeded per chain)."""
    return (seed + STAGE_SEED * (index + 1)) % (2**63)


def _stopping_summary(reason: str, check: Check | None, rule: StoppingRule, steps: int, before: int,
                      slope_share: float = math.nan) -> str:
    """``before``: steps ahead of the final window (warm-up, and runs at larger steps); ``slope_share``:
    w*'s slope's part of the window's λ̂ at the last check."""
    seen = "" if check is None else f" ({check.status(rule)})"
    if reason == "converged":
        kept = (f"the first {before} at larger step sizes, then the first half of the rest discarded as burn-in"
                if before else "the first half discarded as burn-in")
        return f"stopped when the estimate could be trusted{seen}, after {steps} steps per chain ({kept})"
    if reason == "not_a_minimum" and abs(slope_share) > SLOPE_FAIL:
        return (f"stopped after {steps} steps per chain: w*'s slope makes {100 * slope_share:+.0f}% of λ̂ "
                "(nβ·∇L_n(w*)·(w − w*) over the draws), so w* is not a stationary point and more sampling "
                "only lets the chains slide further")
    if reason == "not_a_minimum":
        return (f"stopped after {steps} steps per chain: the sampled loss stays below L_n(w*), so w* is "
                "not a local minimum and more sampling cannot make λ̂ right")
    missing = ", ".join(check.missing) if check is not None else "no check ran"
    cap = (f"its step cap (max_steps = {rule.max_steps})" if reason == "step_cap"
           else f"its time cap (max_seconds = {rule.max_seconds:g})")
    return (f"stopped by {cap} after {steps} steps per chain before the estimate could be trusted: "
            f"still short of {missing}")


def _not_compiled(config: SGLDConfig) -> str:
    """Why an estimate had no gradient compiler (lambdascope.llc.compiled)."""
    if not config.compile_gradients:
        return "not compiled (compile_gradients off)"
    return "not compiled (the chains ran without vmap)"


def _unscored(trace: SGLDTrace) -> SGLDTrace:
    empty = trace.acceptance[:, :0]
    return dataclasses.replace(trace, accept_steps=trace.accept_steps[:0], acceptance=empty, curvature=empty,
                               grad_noise=empty, localization_energy=empty,
                               slope=None if trace.slope is None else empty)


def _join(traces: list[SGLDTrace]) -> SGLDTrace:
    """One trace from consecutive runs (step indices of the later ones shifted)."""
    if len(traces) == 1:
        return traces[0]
    offsets = np.cumsum([0] + [t.losses.shape[1] for t in traces[:-1]])
    return SGLDTrace(
        losses=torch.cat([t.losses for t in traces], dim=1),
        vectorized=all(t.vectorized for t in traces),
        seconds=sum(t.seconds for t in traces),
        accept_steps=torch.cat([t.accept_steps + int(o) for t, o in zip(traces, offsets)]),
        acceptance=torch.cat([t.acceptance for t in traces], dim=1),
        curvature=torch.cat([t.curvature for t in traces], dim=1),
        grad_noise=torch.cat([t.grad_noise for t in traces], dim=1),
        localization_energy=torch.cat([t.localization_energy for t in traces], dim=1),
        final=traces[-1].final,
        # a part without it (a snapshot of an earlier version) leaves the slope unmeasured
        slope=None if any(t.slope is None for t in traces) else torch.cat([t.slope for t in traces], dim=1),
    )


def _acceptance(acc: torch.Tensor, steps: torch.Tensor, burnin: int) -> tuple[float, list[float]]:
    """Mean acceptance (overall, per chain) over the scored steps after burn-in, else all."""
    if acc.numel() == 0:
        return math.nan, [math.nan] * acc.shape[0]
    after = steps >= burnin
    use = acc[:, after] if bool(after.any()) else acc
    per_chain = use.mean(dim=1).tolist()
    return float(use.mean()), per_chain
