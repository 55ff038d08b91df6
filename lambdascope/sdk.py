"""The Python API for notebooks: audit a model in one call and get a typed result back.

    import lambdascope
    result = lambdascope.audit(model, x, y, loss="mse")     # on the platform: stored, shareable
    print(result.llc, result.verdict, result.reasons)
    result.to_dict()                                          # plain data, enums by name
    local = lambdascope.estimate_llc(model, loader, loss="cross_entropy")   # in this process

``audit`` exports an ``nn.Module`` with ``torch.export`` (a dynamic batch dimension), writes
tensors as safetensors, uploads both (reusing a version or dataset whose bytes are already
registered under the same name), runs the audit on a platform (the one ``lambdascope up`` runs,
or ``server=``) and waits for it. Files are checked locally before anything is uploaded, as the
CLI does. The lower-level :class:`lambdascope.client.Client` stays available for everything else.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from google.protobuf import json_format

from lambdascope import fit, inspection, specs
from lambdascope.client import Client
from lambdascope.reports import views
from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2

__all__ = ["AuditFailed", "AuditResult", "Estimate", "LocalResult", "Trajectory", "audit", "estimate_llc", "report",
           "result_of", "trajectory"]

PathLike = str | os.PathLike


class AuditFailed(RuntimeError):
    """The audit job did not succeed (bad input found by the worker, divergence, cancel)."""

    def __init__(self, job: jobs_pb2.Job):
        super().__init__(f"audit {job.id} {jobs_pb2.JobState.Name(job.state).removeprefix('JOB_STATE_').lower()}: "
                         f"{job.message}")
        self.job = job


@dataclasses.dataclass(frozen=True)
class Estimate:
    """λ̂ of the sampled parameters: the mean over chains, its standard error, the chains' spread
    and each chain's value."""

    mean: float
    std: float  # how far the chains lie apart
    per_chain: list[float]
    uncorrected_mean: float  # λ̂ as sampled, before the step's predicted bias was subtracted
    bias_corrected: bool
    standard_error: float  # what another run's λ̂ may differ by (lambdascope.llc.uncertainty); 0: not stored


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """One audit report, typed. ``report`` keeps the full protobuf (traces, calibration, ...)."""

    report_id: str
    model_version_id: str
    dataset_id: str
    llc: float
    llc_std: float  # the chains' spread
    llc_standard_error: float  # what another run's λ̂ may differ by (lambdascope.llc.uncertainty)
    estimate: Estimate
    verdict: str  # "ok", "warning" or "failed"
    reasons: list[str]  # what a non-ok verdict is about, most serious first
    at_minimum: bool  # False: w* is not a local minimum, so llc means nothing (train longer)
    stopped_by: str  # "converged", "step_cap", "time_cap", "fixed", "not_a_minimum"
    diagnostics: dict[str, float]  # rhat, ess, mcse_relative, drift, acceptance, predicted_bias, ...
    groups: dict[str, Estimate]  # restricted LLC per layer or named group
    num_parameters: int
    num_examples: int
    seconds: float
    report: audit_pb2.AuditReport = dataclasses.field(repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), enums as names; the full report under ``"report"``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "report"}
        out["estimate"] = dataclasses.asdict(self.estimate)
        out["groups"] = {k: dataclasses.asdict(v) for k, v in self.groups.items()}
        out["report"] = specs.to_dict(self.report)
        return out

    def to_frame(self) -> Any:
        """The chains' traces as a pandas DataFrame, one row per chain and trace point: ``step``,
        ``chain``, ``loss``, ``energy`` (nβ·(L − L_n(w*)), whose mean over the kept rows is λ̂ as
        sampled) and ``kept`` (past the burn-in). Needs pandas (the ``notebook`` extra)."""
        pandas = _pandas()
        steps, energy = views.energy_trace(self.report)
        _warm, burnin = views.warmup_and_burnin(self.report)
        chains, points = energy.shape
        return pandas.DataFrame({
            "step": np.tile(steps, chains), "chain": np.repeat(np.arange(chains), points),
            "loss": np.concatenate([np.asarray(t.loss, dtype=np.float64) for t in self.report.traces])
            if chains else np.empty(0),
            "energy": energy.reshape(-1), "kept": np.tile(steps >= burnin, chains)})

    def plot(self, which: str = "traces") -> Any:
        """A matplotlib Figure: ``"traces"`` (per chain, burn-in marked), ``"running"`` (running
        λ̂ per chain), ``"chains"``, ``"calibration"`` or ``"groups"`` (None when the report has
        no data for it)."""
        from lambdascope.reports import plots

        makers = {"traces": plots.traces, "running": plots.running_llc, "chains": plots.chains,
                  "calibration": plots.calibration, "groups": plots.groups}
        if which not in makers:
            raise ValueError(f"which must be one of {', '.join(makers)} (got {which!r})")
        return makers[which](self.report)

    def html(self) -> str:
        """The report's full HTML page (self-contained), as the estimator stores it."""
        from lambdascope.reports import html

        return html.audit_page(self.report)

    def _repr_html_(self) -> str:
        from lambdascope.reports import html

        return html.audit_summary(self.report)


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """LLC over training: one audit per checkpoint, in training order, and the stages found."""

    results: list[AuditResult]
    stages: list[Any]  # lambdascope.llc.stages.Stage

    @property
    def reports(self) -> list[audit_pb2.AuditReport]:
        return [r.report for r in self.results]

    def to_frame(self) -> Any:
        """One row per checkpoint: ``step``, ``llc``, ``llc_std``, ``llc_stderr``, ``train_loss``
        (L_n at the checkpoint), ``verdict``, ``at_minimum``, ``stage`` (its label, "" outside any),
        ``model_version_id``, ``report_id``. Needs pandas (the ``notebook`` extra)."""
        pandas = _pandas()

        def stage_of(step: int) -> str:
            return next((st.label for st in self.stages if st.start <= step <= st.end), "")
        return pandas.DataFrame([{
            "step": r.report.step, "llc": r.llc if r.at_minimum else math.nan,
            "llc_std": r.llc_std if r.at_minimum else math.nan, "llc_stderr": r.llc_standard_error,
            "train_loss": r.report.init_loss, "verdict": r.verdict, "at_minimum": r.at_minimum,
            "stage": stage_of(r.report.step) if r.at_minimum else "", "model_version_id": r.model_version_id,
            "report_id": r.report_id} for r in self.results])

    def plot(self) -> Any:
        """λ̂ against the step (log axis) with its band, the loss, the stages shaded (a Figure)."""
        from lambdascope.reports import plots

        return plots.trajectory(self.reports, self.stages)

    def html(self) -> str:
        from lambdascope.reports import html

        return html.trajectory_page(self.reports)

    def _repr_html_(self) -> str:
        from lambdascope.reports import html

        return html.trajectory_summary(self.reports)


def trajectory(results: list[AuditResult | audit_pb2.AuditReport]) -> Trajectory:
    """The audits of a training run's checkpoints (results or reports), ordered by step, with
    their developmental stages (lambdascope.llc.stages)."""
    typed = sorted((r if isinstance(r, AuditResult) else result_of(r) for r in results), key=lambda r: r.report.step)
    return Trajectory(typed, views.stages([r.report for r in typed]))


def report(report_id: str, *, server: str | None = None, client: Client | None = None) -> AuditResult:
    """A stored audit report, by id."""
    owned = client is None
    client = client or Client(server)
    try:
        return result_of(client.get_report(report_id))
    finally:
        if owned:
            client.close()


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError("to_frame needs pandas: pip install 'lambdascope[notebook]'") from None
    return pandas


def result_of(report: audit_pb2.AuditReport) -> AuditResult:
    """A stored report as an :class:`AuditResult`."""
    d = report.diagnostics
    stop = audit_pb2.StopReason.Name(report.stopping.reason).removeprefix("STOP_REASON_").lower()
    return AuditResult(
        report_id=report.id, model_version_id=report.model_version_id, dataset_id=report.dataset_id,
        llc=report.llc.mean, llc_std=report.llc.std, llc_standard_error=views.stderr(report),
        estimate=_estimate(report.llc),
        verdict=views.verdict(report),
        reasons=list(report.verdict.reasons), at_minimum=not report.verdict.not_at_minimum, stopped_by=stop,
        diagnostics={"rhat": d.rhat, "ess": d.ess, "mcse_relative": d.mcse_relative, "drift": d.drift,
                     "drift_error": d.drift_error, "acceptance": d.acceptance,
                     "below_init_fraction": d.below_init_fraction,
                     "predicted_bias": d.predicted_bias,
                     # nan where the report predates them (absent), not the 0 of an exact minimum
                     "gradient_norm": d.gradient_norm if d.HasField("gradient_norm") else math.nan,
                     "slope_term": d.slope_term if d.HasField("slope_term") else math.nan},
        groups={g.name: _estimate(g.llc) for g in report.group_llc},
        num_parameters=report.num_parameters, num_examples=report.num_examples,
        seconds=report.timing.seconds, report=report)


def audit(model: Any, x: Any = None, y: Any = None, *, loss: str, data: PathLike | None = None,
          name: str | None = None, architecture: models_pb2.Architecture | Mapping | None = None,
          sampler: Mapping[str, Any] | None = None, measures: Mapping[str, Any] | None = None,
          device: str = "", dtype: str = "", model_targets: bool = False, server: str | None = None,
          client: Client | None = None,
          on_event: Callable[[jobs_pb2.JobEvent], None] | None = None) -> AuditResult:
    """Audit ``model`` on (``x``, ``y``) and wait for the result.

    - ``model``: an ``nn.Module`` in eval mode (exported here), a ``.pt2`` path, or a safetensors
      path of weights of a built-in ``architecture`` (a proto or its JSON-like dict).
    - ``x``, ``y``: tensors (one input tensor, targets with the same number of rows), or ``data=``
      a safetensors file holding ``x`` and ``y``.
    - ``loss``: "mse", "mae" or "cross_entropy" (token-level over sequences when the outputs are
      [batch, ..., classes]).
    - ``sampler`` / ``measures``: fields of SamplerConfig / Measures by name, e.g.
      ``sampler={"chains": 8, "max_seconds": 600}``; none means the defaults (run until trusted).
    - ``name``: the registry model name (default: the class or file name).
    - ``model_targets``: audit against the model's own outputs on ``x`` (mse, mae), so that a
      checkpoint taken before training converged is a minimum too (LLC over training).

    Raises ValueError for input that cannot be audited (before anything is uploaded), gRPC errors
    for refusals by the platform, and :class:`AuditFailed` when the job fails.
    """
    config = audit_pb2.AuditConfig(loss=_loss(loss), device=device, dtype=dtype, model_targets=model_targets)
    for field, value in (sampler or {}).items():
        _set(config.sampler, "sampler", field, value)
    for field, value in (measures or {}).items():
        _set(config.measures, "measures", field, value)
    if isinstance(architecture, Mapping):
        architecture = json_format.ParseDict(dict(architecture), models_pb2.Architecture())
    with tempfile.TemporaryDirectory(prefix="lambdascope-") as scratch:
        model_path, default_name = _model_file(model, x, pathlib.Path(scratch))
        data_path = _data_file(x, y, data, pathlib.Path(scratch))
        name = name or default_name
        fmt = models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT if model_path.suffix == ".pt2" \
            else models_pb2.ARTIFACT_FORMAT_SAFETENSORS
        local = inspection.describe_model(model_path, fmt, architecture)
        local.model_name = name
        fit.check_fit(local, inspection.describe_dataset(data_path), config.loss)
        owned = client is None
        client = client or Client(server)
        try:
            client.check_audit(config)
            version = client.find_model_version(model_path, name, format=fmt, architecture=architecture) or \
                client.upload_model(model_path, name, format=fmt, architecture=architecture)
            data_name = pathlib.Path(data).stem if data is not None else f"{name}-data"
            dataset = client.find_dataset(data_path, data_name) or client.upload_dataset(data_path, data_name)
            job = client.wait(client.start_audit(version.id, dataset.id, config).id, on_event=on_event)
            if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
                raise AuditFailed(job)
            return result_of(client.get_report(job.output_ids[0]))
        finally:
            if owned:
                client.close()


@dataclasses.dataclass(frozen=True)
class LocalResult:
    """An estimate made in this process (no platform, nothing stored); ``result`` keeps the
    library's full record (traces, calibration, stopping)."""

    llc: float
    llc_std: float  # the chains' spread
    llc_standard_error: float  # what another run's λ̂ may differ by (lambdascope.llc.uncertainty)
    per_chain: list[float]
    uncorrected_llc: float  # λ̂ as sampled, before the step's predicted bias was subtracted
    verdict: str  # "ok", "warning" or "failed"
    reasons: list[str]
    at_minimum: bool
    stopped_by: str
    diagnostics: dict[str, float]
    num_parameters: int
    num_examples: int
    seconds: float
    result: Any = dataclasses.field(repr=False, compare=False)  # lambdascope.llc.LLCResult

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "result"}


def estimate_llc(model: Any, data: Any, y: Any = None, *, loss: str | Callable = "mse", device: str | None = None,
                 **settings: Any) -> LocalResult:
    """Estimate the LLC of ``model`` at its weights, here, as devinterp does (no servers).

    - ``data``: a DataLoader (or any iterable) of (x, y) batches, gathered once into tensors (the
      sampler draws its own minibatches), or the tensor ``x`` with ``y`` given.
    - ``loss``: "mse", "mae", "cross_entropy" (token-level over sequences), or a function
      ``loss(output, target)`` returning the batch MEAN.
    - ``settings``: SGLDConfig fields (``chains``, ``max_seconds``, ``draws``, ``step_size``, ...);
      none means the platform's defaults: calibrated step, run until trusted. ``batch_size``
      defaults to the DataLoader's.

    The model must be in eval mode; it is never modified.
    """
    import torch

    from lambdascope.llc import SGLDConfig
    from lambdascope.llc.audit import AuditSettings, run_audit
    from lambdascope.llc.losses import LOSSES
    from lambdascope.llc.uncertainty import standard_error

    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be an nn.Module (got {type(model).__name__})")
    if model.training:
        raise ValueError("the model is in training mode (dropout and batch norm would make its loss random); "
                         "call model.eval() first")
    loss_fn = loss if callable(loss) else LOSSES.get(str(loss).lower())
    if loss_fn is None:
        raise ValueError(f"loss must be one of {', '.join(sorted(LOSSES))} or a function (got {loss!r})")
    x, y, loader_batch = _gathered(data, y)
    known = {f.name for f in dataclasses.fields(SGLDConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; SGLDConfig has: {', '.join(sorted(known))}")
    if loader_batch and "batch_size" not in settings:
        settings["batch_size"] = loader_batch
    config = SGLDConfig(**settings)
    audit = run_audit(model, x, y, loss_fn, AuditSettings(sgld=config), device=device)
    llc, d = audit.llc, audit.diagnostics
    return LocalResult(
        llc=llc.mean, llc_std=llc.std, llc_standard_error=standard_error(llc).total, per_chain=list(llc.per_chain),
        uncorrected_llc=llc.uncorrected_mean,
        verdict=audit.verdict.state, reasons=list(audit.verdict.reasons), at_minimum=not audit.verdict.not_at_minimum,
        stopped_by=llc.stopping.reason if llc.stopping is not None else "fixed",
        diagnostics={"rhat": d.rhat, "ess": d.ess, "mcse_relative": d.mcse_relative, "drift": d.drift,
                     "drift_error": d.drift_error, "acceptance": d.acceptance,
                     "below_init_fraction": d.below_init_fraction,
                     "predicted_bias": llc.bias_estimate, "gradient_norm": llc.gradient_norm,
                     "slope_term": llc.slope_term},
        num_parameters=llc.num_parameters, num_examples=llc.num_examples,
        seconds=llc.sampling_seconds + (llc.calibration.seconds if llc.calibration is not None else 0.0),
        result=llc)


def _gathered(data: Any, y: Any) -> tuple[Any, Any, int]:
    """(x, y, the loader's batch size or 0) from tensors or an iterable of (x, y) batches."""
    import torch

    if isinstance(data, torch.Tensor):
        if not isinstance(y, torch.Tensor):
            raise ValueError("with x as a tensor, give y as a tensor too (or pass a DataLoader of (x, y))")
        if data.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must hold as many examples (got {data.shape[0]} and {y.shape[0]})")
        return data, y, 0
    if y is not None:
        raise ValueError("y is given separately only with x as a tensor")
    xs, ys = [], []
    for i, batch in enumerate(data):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"batch {i} of the data is not an (x, y) pair")
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise ValueError("the data yielded no batches")
    return torch.cat(xs), torch.cat(ys), int(getattr(data, "batch_size", 0) or 0)


def _estimate(e: audit_pb2.LLCEstimate) -> Estimate:
    return Estimate(e.mean, e.std, list(e.per_chain), e.uncorrected_mean, e.bias_corrected, e.standard_error)


def _loss(name: str) -> int:
    losses = specs.enum_short_names(models_pb2.LossKind.DESCRIPTOR)
    full = losses.get(str(name).lower(), str(name))
    if full not in models_pb2.LossKind.keys() or full.endswith("_UNSPECIFIED"):
        raise ValueError(f"loss must be one of {', '.join(sorted(losses))} (got {name!r})")
    return models_pb2.LossKind.Value(full)


def _set(message: Any, where: str, field: str, value: Any) -> None:
    if field not in message.DESCRIPTOR.fields_by_name:
        known = ", ".join(sorted(message.DESCRIPTOR.fields_by_name))
        raise ValueError(f"{where} has no field {field!r}; it has: {known}")
    try:
        json_format.ParseDict({field: value}, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise ValueError(f"{where}.{field}: {exc}") from None


def _model_file(model: Any, x: Any, scratch: pathlib.Path) -> tuple[pathlib.Path, str]:
    """(a file to upload, a default model name) for a path or an nn.Module."""
    if isinstance(model, (str, os.PathLike)):
        path = pathlib.Path(model).expanduser()
        if not path.is_file():
            raise ValueError(f"model {model}: no such file")
        return path, path.stem
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be an nn.Module or a path to a .pt2 or safetensors file "
                         f"(got {type(model).__name__})")
    if model.training:
        raise ValueError("the model is in training mode (dropout and batch norm would make its loss random); "
                         "call model.eval() first")
    if not isinstance(x, torch.Tensor):
        raise ValueError("exporting an nn.Module needs x as a tensor (an example batch is taken from it)")
    example = x[: min(2, x.shape[0])].clone()
    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:  # noqa: BLE001 - whatever the model raises, the data does not fit it
        raise ValueError(f"the model cannot take x of shape {list(x.shape)} ({type(exc).__name__}: "
                         f"{_first_line(exc)})") from None
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds; the user needs the first line
        raise ValueError(f"torch.export could not export the model with a dynamic batch dimension: "
                         f"{_first_line(exc)}; "
                         "export it yourself and pass the .pt2 path") from None
    path = scratch / f"{type(model).__name__}.pt2"
    torch.export.save(program, path)
    return path, type(model).__name__.lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _data_file(x: Any, y: Any, data: PathLike | None, scratch: pathlib.Path) -> pathlib.Path:
    if data is not None:
        path = pathlib.Path(data).expanduser()
        if not path.is_file():
            raise ValueError(f"data {data}: no such file")
        return path
    import torch
    from safetensors.torch import save_file

    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("give x and y as tensors, or data= a safetensors file holding x and y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold as many examples (got {x.shape[0]} and {y.shape[0]})")
    path = scratch / "data.safetensors"
    save_file({"x": x.detach().contiguous().cpu(), "y": y.detach().contiguous().cpu()}, str(path))
    return path
