"""The local learning coefficient estimator: λ̂ = nβ · (E_w[L_n(w)] − L_n(w*)).

E_w is taken over SGLD draws from the posterior localized at the trained weights w*
(see :mod:`services.estimator.sgld`), nβ defaults to n / log n with n the DATASET size, and
L_n(w*) is measured on the full data set, because one minibatch is too noisy a baseline.
When no step size is given, it is chosen by :func:`services.estimator.calibration.calibrate`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from services.estimator.calibration import CalibrationResult, calibrate, refine
from services.estimator.sgld import LossFn, SamplerDivergedError, SGLDTrace, make_forward, run_sgld

__all__ = [
    "CalibrationResult",
    "LLCResult",
    "SGLDConfig",
    "SamplerDivergedError",
    "default_nbeta",
    "divergence_threshold",
    "estimate_llc",
    "full_loss",
]


@dataclass(frozen=True)
class SGLDConfig:
    """Sampler settings. ``draws`` counts kept steps after burn-in and thinning.

    - ``step_size`` ε: None (the default) calibrates it from the model and data before the run
      (:mod:`services.estimator.calibration`); a number skips calibration.
    - ``localization`` γ: strength of the pull (γ/2)·‖w − w*‖² to the trained weights. Default 10:
      on the digits MLP below γ = 1 no longer localizes (λ̂ keeps climbing) and γ = 100 swamps
      the loss; on deep linear networks at n = 1e5 (nβ ≈ 8700, where the published protocol
      used γ = 1) γ = 10 gives the same λ̂ as γ = 1, because the loss curvature there exceeds
      γ by orders of magnitude. Calibration reports when γ looks too weak or too strong.
    - ``nbeta``: None → n / log n (n = dataset size), which makes ``wbic`` the WBIC.
    - ``weight_decay`` wd ≥ 0 adds a Gaussian prior (wd/2)·‖w‖² to the potential (0 = none).
    - ``accept_every`` k: score every k-th step with the MALA acceptance probability (one extra
      forward+backward each, on the step's own minibatch); 0 turns it off.
    - ``calibration_budget``: the chain-steps calibration may spend, as a fraction of the main
      run's (chains × total_steps); a floor of a few short pilots applies to tiny runs.

    Background for the defaults, on an MLP 64→256→10 trained to 99.9% on sklearn digits (x / 16,
    CE, n = 1797, nβ = n / log n ≈ 240, top Hessian eigenvalue at w* ≈ 1), 4 chains, γ = 10:
    ε = 3e-4 → λ̂ 33.5, 1e-3 → 35.8, 2e-3 → 52, 1e-2 → 575 (3000 steps); traces level off
    after ~150-200 steps, hence the 200-step burn-in.
    """

    chains: int = 4
    draws: int = 200
    burnin: int = 200
    thin: int = 1
    step_size: float | None = None
    localization: float = 10.0
    nbeta: float | None = None
    batch_size: int = 256
    seed: int = 0
    weight_decay: float = 0.0
    accept_every: int = 10
    calibration_budget: float = 0.25

    @property
    def total_steps(self) -> int:
        return self.burnin + self.draws * self.thin

    def validate(self) -> None:
        def finite_pos(v: float | None) -> bool:
            return v is not None and math.isfinite(v) and v > 0

        checks = [
            ("chains", self.chains >= 1, ">= 1"),
            ("draws", self.draws >= 1, ">= 1"),
            ("burnin", self.burnin >= 0, ">= 0"),
            ("thin", self.thin >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("step_size", self.step_size is None or finite_pos(self.step_size), "> 0 and finite (or unset)"),
            ("localization", math.isfinite(self.localization) and self.localization >= 0, ">= 0 and finite"),
            ("nbeta", self.nbeta is None or finite_pos(self.nbeta), "> 0 and finite"),
            ("seed", self.seed >= 0, ">= 0"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, ">= 0 and finite"),
            ("accept_every", self.accept_every >= 0, ">= 0"),
            ("calibration_budget", math.isfinite(self.calibration_budget) and self.calibration_budget > 0,
             "> 0 and finite"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule} (got {getattr(self, name)!r})")


@dataclass
class LLCResult:
    mean: float
    std: float  # sample std (ddof=1) of the per-chain estimates; 0 for one chain
    per_chain: list[float]
    init_loss: float  # L_n(w*) on the full data set
    nbeta: float
    num_examples: int
    num_parameters: int  # the SAMPLED parameters (a restricted run counts only its group)
    traces: list[list[float]]  # per chain, the minibatch loss at every step including burn-in
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
    # λ units) from the scored steps after burn-in; see services.estimator.calibration. A
    # diagnostic: ``mean`` is NOT corrected by it. nan when accept_every = 0.
    bias_estimate: float = math.nan


MAX_RETRIES = 2  # restarts of a calibrated main run that diverged
MIN_STAGE = 10  # the burn-in is split for refinement only if each half has this many steps
REFINE_SCORE_EVERY = 2  # scoring in the refinement stage (first half of the burn-in)
STAGE_SEED = 7_777_777  # the second stage's seed offset (its own random streams)
RETRY_FACTOR = 4.0  # ... each at this fraction of the step


def default_nbeta(n: int) -> float:
    """n / log n: the inverse temperature β = 1 / log n times the data set size."""
    if n < 2:
        raise ValueError(f"need at least 2 examples for nbeta = n / log n (got {n})")
    return n / math.log(n)


def batch_losses(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, batch_size: int
) -> tuple[float, list[float]]:
    """(mean loss over all of (x, y), the loss of each full batch), without gradients."""
    forward = make_forward(model, vectorized=True)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    state = {k: v.detach() for k, v in state.items()}
    total, per_batch = 0.0, []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            value = loss_fn(forward(state, xb), yb).item()
            total += value * xb.shape[0]
            if xb.shape[0] == batch_size:
                per_batch.append(value)
    return total / x.shape[0], per_batch


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
    progress: Callable[[int, int, float], None] | None = None,
    vectorize: bool = True,
    params: Sequence[str] | None = None,
    dtype: torch.dtype | None = None,
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
    - ``progress(step, total_steps, running λ̂)`` is called every ~1% of the MAIN run's steps and
      at its end; calibration (which runs first when ``config.step_size`` is None) does not
      report progress. After calibration the main run's chains start where the calibration
      pilots left them (already partly burned in), not at w*; the first half of the burn-in
      runs at ``calibration.warmup_step_size`` (up to a few times the pilots' choice: faster
      diffusion along flat directions) and its statistics refine the step used for the rest
      (:func:`services.estimator.calibration.refine`); all of it is discarded as burn-in, and
      ``step_size`` reports the final step. With a given step size the chains start at w* and
      every step uses it.
    - ``vectorize=False`` skips vmap (for debugging; vmap failures fall back to that path by
      themselves).

    A chain whose loss goes non-finite or explodes (:func:`divergence_threshold`) raises
    :class:`SamplerDivergedError` within 50 steps; the estimate is never NaN.
    """
    config.validate()
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x and y must hold as many examples (got {n} and {y.shape[0]})")
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype (got {dtype})")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    model = _on_device(model, device, dtype)
    names = resolve_params(model, params)
    named = dict(model.named_parameters())
    work_dtype = named[names[0]].dtype
    x = x.to(device=device, dtype=work_dtype if x.is_floating_point() else None)
    y = y.to(device=device, dtype=work_dtype if y.is_floating_point() else None)
    nbeta = config.nbeta if config.nbeta is not None else default_nbeta(n)
    num_parameters = sum(named[k].numel() for k in names)

    init_loss, per_batch = batch_losses(model, x, y, loss_fn, config.batch_size)
    if not math.isfinite(init_loss):
        raise ValueError(f"L_n(w*) is not finite ({init_loss}); check the model, data and loss_fn")
    spread = float(torch.tensor(per_batch, dtype=torch.float64).std()) if len(per_batch) > 1 else 0.0
    explode_at = divergence_threshold(init_loss, nbeta, num_parameters, spread)

    start = None
    step_size = config.step_size
    calibration = CalibrationResult(ran=False, chosen_step_size=step_size or math.nan,
                                    summary="step size given: no calibration", warmup_step_size=step_size or math.nan)
    if step_size is None:
        calibration = calibrate(
            model, x, y, loss_fn, config, params=names, nbeta=nbeta, init_loss=init_loss,
            explode_at=explode_at, vectorize=vectorize)
        step_size = calibration.chosen_step_size
        start, calibration.states = calibration.states, None  # the result stays plain data
    # With calibration, the main run has two stages: the first half of the burn-in at the
    # warm-up step (see calibration), whose well-relaxed statistics then refine the step for the
    # rest (calibration.refine); both stages' losses form the one trace.
    stage_a = config.burnin // 2 if calibration.ran and config.burnin >= 2 * MIN_STAGE else 0

    def on_check_at(offset: int, keep_from: int):
        def on_check(done: int, losses: torch.Tensor) -> None:
            kept = losses[:, keep_from :: config.thin] if keep_from >= 0 else losses[:, :0]
            current = kept if kept.shape[1] else losses[:, -1:]
            progress(offset + done, config.total_steps, nbeta * (current.double().mean().item() - init_loss))
        return on_check if progress is not None else None

    run = dict(
        chains=config.chains,
        localization=config.localization,
        nbeta=nbeta,
        batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        params=names,
        explode_at=explode_at,
        vectorize=vectorize,
    )
    retries = 0
    while True:
        try:
            if stage_a:
                first = run_sgld(model, x, y, loss_fn, steps=stage_a, step_size=calibration.warmup_step_size,
                                 seed=config.seed, init=start, accept_every=REFINE_SCORE_EVERY,
                                 on_check=on_check_at(0, -1), **run)
                step_size = refine(calibration, first, nbeta, init_loss, calibration.warmup_step_size)
                second = run_sgld(model, x, y, loss_fn, steps=config.total_steps - stage_a, step_size=step_size,
                                  seed=config.seed + STAGE_SEED, init=first.final,
                                  accept_every=config.accept_every,
                                  on_check=on_check_at(stage_a, config.burnin - stage_a), **run)
                trace = _join(first, second, config.accept_every)
            else:
                trace = run_sgld(model, x, y, loss_fn, steps=config.total_steps, step_size=step_size,
                                 seed=config.seed, init=start, accept_every=config.accept_every,
                                 on_check=on_check_at(0, config.burnin), **run)
            break
        except SamplerDivergedError as err:
            # A calibrated step can still meet stiffer regions than the pilots saw (singular
            # potentials stiffen without bound along their flat arms): restart once or twice
            # from w* with a quarter of the step, in one stage, and say so. A given step size is
            # the user's: its divergence is reported as is.
            if not calibration.ran or retries >= MAX_RETRIES:
                raise
            retries += 1
            smaller = calibration.chosen_step_size / RETRY_FACTOR
            calibration.summary += (
                f" The main run diverged (chain {err.chain}, step {err.step}, loss {err.loss:.4g}); "
                f"restarted from w* at step size {smaller:.3g}.")
            step_size, start, stage_a = smaller, None, 0
            calibration.chosen_step_size = step_size
    losses = trace.losses.double()
    kept = losses[:, config.burnin :: config.thin]
    per_chain = (nbeta * (kept.mean(dim=1) - init_loss)).tolist()
    std = torch.tensor(per_chain).std().item() if len(per_chain) > 1 else 0.0
    acceptance, per_chain_acc = _acceptance(trace.acceptance, trace.accept_steps, config.burnin)
    bias = _bias(trace, config.burnin, step_size)
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
        localization=config.localization,
        chain_steps_per_second=config.chains * config.total_steps / max(trace.seconds, 1e-12),
        bias_estimate=bias,
    )


def _join(first: SGLDTrace, second: SGLDTrace, accept_every: int) -> SGLDTrace:
    """One trace from two consecutive stages (the second's step indices shifted)."""
    offset = first.losses.shape[1]
    keep = torch.zeros(first.accept_steps.shape[0], dtype=torch.bool) if accept_every == 0 else \
        torch.ones(first.accept_steps.shape[0], dtype=torch.bool)
    cat = lambda a, b: torch.cat([a[:, keep], b], dim=1)  # noqa: E731
    return SGLDTrace(
        losses=torch.cat([first.losses, second.losses], dim=1),
        vectorized=first.vectorized and second.vectorized,
        seconds=first.seconds + second.seconds,
        accept_steps=torch.cat([first.accept_steps[keep], second.accept_steps + offset]),
        acceptance=cat(first.acceptance, second.acceptance),
        curvature=cat(first.curvature, second.curvature),
        grad_noise=cat(first.grad_noise, second.grad_noise),
        localization_energy=cat(first.localization_energy, second.localization_energy),
        final=second.final,
    )


def _bias(trace, burnin: int, step_size: float) -> float:
    """Predicted bias of λ̂ from the scored steps after burn-in (all of them if none are)."""
    if trace.curvature.numel() == 0:
        return math.nan
    after = trace.accept_steps >= burnin
    if not bool(after.any()):
        after = torch.ones_like(after)
    noise = trace.grad_noise[:, after]
    noise = noise[torch.isfinite(noise)]
    value = trace.curvature[:, after].mean().item() / 8
    return value + (step_size * noise.mean().item() / 16 if noise.numel() else 0.0)


def _acceptance(acc: torch.Tensor, steps: torch.Tensor, burnin: int) -> tuple[float, list[float]]:
    """Mean acceptance (overall, per chain) over the scored steps after burn-in, else all."""
    if acc.numel() == 0:
        return math.nan, [math.nan] * acc.shape[0]
    after = steps >= burnin
    use = acc[:, after] if bool(after.any()) else acc
    per_chain = use.mean(dim=1).tolist()
    return float(use.mean()), per_chain
