"""One complexity audit in plain PyTorch: the LLC with its diagnostics and verdict, plus the
optional companion measures (restricted LLC per group, Hessian, weight statistics).

The worker translates requests into AuditSettings and results into the report message; this
module knows nothing of either.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence

import torch

from lambdascope.llc import diagnostics, hessian, weights
from lambdascope.llc.llc import LLCResult, SGLDConfig, estimate_llc
from lambdascope.llc.snapshots import Snapshots

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    sgld: SGLDConfig
    # name -> shell-style patterns over parameter names; each gets a restricted LLC.
    groups: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    per_layer: bool = False
    hessian: bool = False
    weight_statistics: bool = False
    # Targets: the model's own outputs on x instead of y (see :func:`own_outputs`).
    model_targets: bool = False


@dataclasses.dataclass
class GroupResult:
    name: str
    parameter_names: list[str]
    llc: LLCResult


@dataclasses.dataclass
class AuditResult:
    llc: LLCResult
    diagnostics: diagnostics.Diagnostics
    verdict: diagnostics.Verdict
    groups: list[GroupResult]
    hessian: hessian.HessianSummary | None
    weight_statistics: list[weights.WeightStatistics]
    settings: AuditSettings | None = None  # what it ran with (the report's resolved configuration)

    @property
    def peak_memory_bytes(self) -> int:
        """The highest peak of the audit's sampling runs (full and restricted)."""
        return max([self.llc.peak_memory_bytes, *(g.llc.peak_memory_bytes for g in self.groups)])


def resolve_groups(model: torch.nn.Module, settings: AuditSettings) -> dict[str, list[str]]:
    """Parameter names of every requested group; a pattern that matches nothing is an error."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    groups: dict[str, list[str]] = {}
    if settings.per_layer:
        groups.update(weights.layer_groups(model))
    for group, patterns in settings.groups.items():
        matched = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not matched:
            raise ValueError(f"parameter group {group!r} ({', '.join(patterns)}) matches no "
                             f"parameter; the model has: {', '.join(names[:20])}"
                             + (" ..." if len(names) > 20 else ""))
        groups[group] = matched
    return groups


def run_audit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
              settings: AuditSettings, *, device: torch.device | str | None = None,
              progress: Callable[[int, int, float], None] | None = None,
              snapshots: Callable[[str], Snapshots] | None = None) -> AuditResult:
    """Estimate the LLC at the model's weights, diagnose the chains, and measure what was asked.

    `progress(step, total, running_llc)` counts the steps of every sampling run together.
    `snapshots(name)`: where each sampling run ("llc", "group-<name>") keeps its progress, to
    resume an interrupted audit (lambdascope.llc.snapshots). Raises ValueError for input that
    cannot be audited and SamplerDivergedError when chains diverge."""
    check_finite(x, y)
    if settings.model_targets:
        y = own_outputs(model, x, settings.sgld.batch_size)
        check_finite(x, y)
    groups = resolve_groups(model, settings)
    runs = 1 + len(groups)
    steps_per_run = settings.sgld.total_steps
    total = runs * steps_per_run

    def stage(index: int) -> Callable[[int, int, float, str], None] | None:
        if progress is None:
            return None
        return lambda step, _steps, llc, status: progress(index * steps_per_run + step, total, llc, status)

    def kept(name: str) -> Snapshots | None:
        return snapshots(name) if snapshots is not None else None

    llc = estimate_llc(model, x, y, loss_fn, settings.sgld, device=device, progress=stage(0),
                       snapshots=kept("llc"))
    diag, verdict = diagnose(llc)
    # Restricted runs reuse the step size the full run settled on: calibrating again per
    # group would make the numbers incomparable (settings of their own, built only for them).
    restricted = dataclasses.replace(settings.sgld, step_size=llc.step_size,
                                     localization=llc.localization) if groups else settings.sgld
    group_results = [
        GroupResult(name, names, estimate_llc(model, x, y, loss_fn, restricted, device=device,
                                              params=names, progress=stage(i + 1),
                                              snapshots=kept(f"group-{i}")))
        for i, (name, names) in enumerate(groups.items())]
    summary = None
    if settings.hessian:
        summary = hessian.hessian_summary(model, x, y, loss_fn, batch_size=settings.sgld.batch_size)
    stats = weights.weight_statistics(model) if settings.weight_statistics else []
    return AuditResult(llc, diag, verdict, group_results, summary, stats, settings)


def own_outputs(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's outputs on ``x``, as targets: w* is then an exact minimum (zero loss) of a
    regression loss, so the audit measures the LLC of the function the weights compute, which is
    defined at any checkpoint, converged or not. For a deep linear network it is Aoyagi's λ for
    the rank of the end-to-end matrix (bench/stages.py checks it along saddle-to-saddle training)."""
    device = next((p.device for p in model.parameters()), x.device)
    with torch.no_grad():
        parts = [model(x[i:i + batch_size].to(device)).to(x.device) for i in range(0, x.shape[0], max(1, batch_size))]
    return torch.cat(parts).detach()


def diagnose(llc: LLCResult) -> tuple[diagnostics.Diagnostics, diagnostics.Verdict]:
    """The diagnostics of an estimate's kept draws and the verdict on them, including how its
    length was decided (a run stopped by a cap before it could be trusted is a warning)."""
    kept = [trace[llc.burnin::llc.thin] for trace in llc.traces]
    bias = llc.bias_estimate / llc.mean if llc.mean > 0 else math.nan
    # the slope's part of λ̂, when λ̂ holds it (with the slope removed the chains sampled without it)
    sloped = not llc.slope_removed and llc.mean != 0 and math.isfinite(llc.mean)
    slope = llc.slope_term / abs(llc.mean) if sloped else math.nan
    diag = diagnostics.diagnose(kept, llc.init_loss, acceptance=llc.acceptance, drift=llc.drift,
                                drift_error=llc.drift_error, bias_relative=bias, slope_relative=slope)
    verdict = diagnostics.judge(diag, llc.per_chain, llc.mean, llc.std, num_parameters=llc.num_parameters,
                                bias_corrected=llc.bias_corrected,
                                step_calibrated=llc.calibration is not None and llc.calibration.ran,
                                ess_stalled=llc.stopping is not None and llc.stopping.ess_stalled is not None)
    stop = llc.stopping
    if stop is not None and stop.adaptive and stop.reason in ("step_cap", "time_cap"):
        flag = "--max-steps" if stop.reason == "step_cap" else "--max-seconds"
        if stop.ess_stalled is not None:
            (kept0, ess0), (kept1, ess1) = stop.ess_stalled
            longer = (f"; for the {stop.wanted_for} it also lacked, about {stop.steps_wanted:,} steps per chain "
                      f"(raise {flag})" if stop.steps_wanted else "")
            reason = (f"the run {stop.summary}; λ̂ may still be off, and a longer run may not reach the ESS it "
                      f"lacked: its window's ESS fell as the window doubled (ESS {ess0:.0f} over {kept0:,} kept "
                      f"steps per chain, {ess1:.0f} over {kept1:,}), so the chains wander more slowly than the run "
                      "(on deep networks they drift along the weights' rescaling symmetries into ever stiffer "
                      "regions, and sampling on carries them further) and the steps it would need cannot be told "
                      f"from this run; more chains add to the ESS without a longer run, at their cost per step{longer}")
        else:
            more = (f" (to about {stop.steps_wanted:,} steps per chain for the {stop.wanted_for} it lacked, at the "
                    "rate this run saw; R-hat and drift can need more)" if stop.steps_wanted else "")
            reason = f"the run {stop.summary}; λ̂ may still be off: raise {flag}{more} for a longer run"
        state = verdict.state if verdict.state == "failed" else "warning"
        verdict = diagnostics.Verdict(state, [*verdict.reasons, reason] if state == "failed"
                                      else [reason, *verdict.reasons])
    return diag, verdict


def check_finite(x: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse data with NaN or infinity: every estimate on it would be silently meaningless."""
    for name, tensor in (("x", x), ("y", y)):
        if tensor.is_floating_point():
            bad = (~torch.isfinite(tensor)).sum().item()
            if bad:
                rows = (~torch.isfinite(tensor.reshape(len(tensor), -1))).any(dim=1)
                first = int(rows.nonzero()[0])
                raise ValueError(f"dataset {name} holds {bad} NaN or infinite values "
                                 f"(first in row {first}); clean the data and upload it again")
    if len(x) < 2:
        raise ValueError(f"the dataset needs at least 2 examples (got {len(x)})")
