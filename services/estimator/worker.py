"""Audits, in their own process: fetch model(s) and data, run the audit, store the reports.

Started by the estimator's job manager as `python -m services.estimator.worker` (protocol in
lambdascope.worker); the same entry point runs in a Kubernetes Job's pod. Several model
versions (LLC over training) are audited in order with the same settings, one report each; a
localization the request left unset is set from the first version's curvature and then held for
the rest, so their λ̂ compare at one γ.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time

import grpc
import torch
from google.protobuf import json_format

from lambdascope import artifacts, enums, fit, tls, worker
from lambdascope.client import Client
from lambdascope.v1 import audit_pb2, estimator_pb2, registry_pb2
from lambdascope.llc import losses, uncertainty
from services.estimator import audit_spec
from lambdascope.llc.audit import AuditResult, AuditSettings, run_audit
from lambdascope.llc import llc as llc_core
from lambdascope.llc.llc import SamplerDivergedError
from lambdascope.reports import MAX_PAGE_BYTES, page_check
from services.estimator.job_snapshots import JobSnapshots
from services.estimator.loading import load_model

log = logging.getLogger("lambdascope.estimator.worker")


def run(ctx: worker.JobContext) -> worker.Result:
    request = json_format.Parse(ctx.spec_json, estimator_pb2.StartAuditRequest())
    settings = ctx.settings
    try:
        audit_settings = audit_spec.audit_settings(request.config, settings.max_chain_steps)
    except audit_spec.SpecError as exc:
        raise worker.BadInput(str(exc)) from None
    version_ids = audit_spec.version_ids(request)
    loss_name = enums.LOSS_NAMES[request.config.loss]
    device = request.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    per_version = audit_settings.sgld.chains * audit_settings.sgld.total_steps
    total = len(version_ids) * per_version
    with Client(registry=settings.registry_address, api_key=ctx.api_key,
                tls=tls.of_service(settings)) as client, \
            tempfile.TemporaryDirectory(prefix="audit-") as scratch:
        try:
            versions = [client.get_model_version(v) for v in version_ids]
            dataset = client.get_dataset(request.dataset_id)
            for version in versions:
                audit_spec.check_fit(version, dataset, request.config.loss)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise worker.BadInput(exc.details()) from None
            raise
        except audit_spec.SpecError as exc:
            raise worker.BadInput(str(exc)) from None
        ctx.progress(0, total, message="downloading data", force=True)
        try:
            x, y = artifacts.load_dataset(client.download_dataset(dataset.id, f"{scratch}/data"))
        except artifacts.ArtifactError as exc:
            raise worker.BadInput(f"cannot load the dataset: {exc}") from None
        reports: list[audit_pb2.AuditReport] = []
        shared_gamma = len(versions) > 1 and not request.config.sampler.HasField("localization")
        for index, version in enumerate(versions):
            if shared_gamma and reports:
                audit_settings = _held_localization(audit_settings, reports[0])
            earlier = _reported(client, version.id, ctx.job_id)
            if earlier is not None:  # a retried worker: this version's report is in already
                reports.append(earlier)
                continue
            started = time.perf_counter()
            path = client.download_model_version(version.id, f"{scratch}/model-{index}")
            try:
                model = load_model(version, path, audit_spec.DTYPES.get(request.config.dtype))
            except (ValueError, artifacts.ArtifactError) as exc:
                raise worker.BadInput(f"cannot load model version {version.id}: {exc}") from None
            inputs = x
            if version.input_dtype in fit.INTEGER_DTYPES and x.dtype != getattr(torch, version.input_dtype):
                inputs = x.to(getattr(torch, version.input_dtype))  # token ids as the program takes them
            load_seconds = time.perf_counter() - started

            def progress(step: int, steps: int, running_llc: float, status: str,
                         offset=index * per_version) -> None:
                done = offset + round(per_version * step / max(steps, 1))
                metrics = {"llc": running_llc} if math.isfinite(running_llc) else {}
                ctx.progress(done, total, metrics, status)

            def snapshots(name: str, prefix=f"v{index}") -> JobSnapshots:
                return JobSnapshots(client, f"{prefix}-{name}", settings.audit_snapshot_seconds)

            try:
                result = run_audit(model, inputs, y, losses.LOSSES[loss_name], audit_settings,
                                   device=device, progress=progress, snapshots=snapshots)
            except SamplerDivergedError as exc:
                raise worker.BadInput(str(exc)) from None
            except ValueError as exc:
                raise worker.BadInput(f"the audit cannot run: {exc}") from None
            report = to_report(result, request.config, version, dataset, ctx.job_id, device)
            if shared_gamma and reports:
                report.calibration.summary += (
                    f" Localization γ = {report.config.sampler.localization:.3g} held from the first version of this "
                    "audit (set from its curvature), so the versions' λ̂ compare at one γ.")
            report.loss_description = losses.describe(loss_name, tuple(y.shape))
            report.timing.load_seconds = load_seconds
            report.timing.seconds = time.perf_counter() - started
            reports.append(client.put_report(report, _page(report)))
        _forget_snapshots(client)
    last = reports[-1]
    metrics = {"llc": last.llc.mean, "llc_std": last.llc.std, "llc_standard_error": last.llc.standard_error,
               **service_metrics(reports)}
    return worker.Result(output_ids=[r.id for r in reports], metrics=metrics, step=total,
                         total=total, message=f"verdict: {enums.VERDICT_NAMES[last.verdict.state]}")


def _held_localization(settings: AuditSettings, first: audit_pb2.AuditReport) -> AuditSettings:
    """``settings`` with the localization the first version's audit used."""
    sgld = dataclasses.replace(settings.sgld, localization=first.config.sampler.localization)
    return dataclasses.replace(settings, sgld=sgld)


def _page(report: audit_pb2.AuditReport) -> bytes:
    """The report's HTML page, or none when it cannot be rendered within the registry's limit
    (the report itself is what must not be lost; `lambdascope report --html` renders one).
    The renderer is imported here, not at start: matplotlib is 0.9 s of the worker's 2.7 s import."""
    try:
        from lambdascope.reports import html as report_html

        page = report_html.audit_page(report).encode()
    except Exception:  # noqa: BLE001 - a plot that fails must not cost the audit
        log.exception("could not render the report's HTML page")
        return b""
    if len(page) > MAX_PAGE_BYTES:
        log.warning("the report's HTML page has %d bytes, over the registry's %d: stored without it",
                    len(page), MAX_PAGE_BYTES)
        return b""
    try:
        page_check.check_page(page)  # as the registry will: a refused page must not cost the report
    except page_check.PageRefused as exc:
        log.error("the report's HTML page fails the registry's check (%s): stored without it", exc)
        return b""
    return page


def _reported(client: Client, version_id: str, job_id: str) -> audit_pb2.AuditReport | None:
    """The report this job already stored for the version (by an earlier attempt), if any:
    a retried audit never stores a version's report twice."""
    return next((r for r in client.list_reports(version_id) if r.job_id == job_id), None)


def _forget_snapshots(client: Client) -> None:
    try:
        client.delete_job_state()
    except grpc.RpcError:  # the registry's collector removes them once the job's key is revoked
        pass


def service_metrics(reports: list[audit_pb2.AuditReport]) -> dict[str, float]:
    """What the estimator exports to Prometheus (lambdascope.metrics.AuditMetrics): reports by
    verdict, and the sampler's chain-steps per second over all versions' sampling time."""
    out = {f"verdict_{v}": float(sum(r.verdict.state == state for r in reports))
           for v, state in enums.VERDICTS.items()}
    timed = [r.timing for r in reports
             if math.isfinite(r.timing.chain_steps_per_second) and r.timing.sampling_seconds > 0]
    seconds = sum(t.sampling_seconds for t in timed)
    if seconds > 0:
        out["chain_steps_per_second"] = sum(
            t.chain_steps_per_second * t.sampling_seconds for t in timed) / seconds
    return out


def to_report(result: AuditResult, config: audit_pb2.AuditConfig,
              version: registry_pb2.ModelVersion, dataset: registry_pb2.Dataset, job_id: str,
              device: str) -> audit_pb2.AuditReport:
    llc = result.llc
    if not all(math.isfinite(v) for v in [llc.mean, llc.std, *llc.per_chain]):
        raise worker.BadInput("the estimate is not finite; lower the step size")
    calibration = audit_pb2.Calibration(ran=False)
    if llc.calibration is not None:
        c = llc.calibration
        calibration = audit_pb2.Calibration(
            ran=c.ran, chosen_step_size=c.chosen_step_size, summary=c.summary, seconds=c.seconds,
            top_eigenvalue=c.top_eigenvalue if math.isfinite(c.top_eigenvalue) else 0.0,
            candidates=[audit_pb2.CalibrationCandidate(
                step_size=k.step_size, acceptance=k.acceptance, llc=k.llc, stable=k.stable,
                note=k.note) for k in c.candidates])
    d = result.diagnostics
    stride, traces = downsample(llc.traces)
    report = audit_pb2.AuditReport(
        model_version_id=version.id, dataset_id=dataset.id, job_id=job_id, step=version.lineage.step,
        config=audit_spec.resolved_config(config, result.settings.sgld, llc, device),
        llc=estimate_of(llc), init_loss=llc.init_loss, num_examples=llc.num_examples,
        num_parameters=llc.num_parameters,
        traces=[audit_pb2.ChainTrace(loss=t) for t in traces], trace_stride=stride,
        stopping=stopping_of(llc),
        timing=audit_pb2.Timing(sampling_seconds=llc.sampling_seconds,
                                calibration_seconds=calibration.seconds,
                                chain_steps_per_second=llc.chain_steps_per_second),
        device=device, calibration=calibration, wbic=llc.wbic,
        diagnostics=audit_pb2.Diagnostics(
            rhat=d.rhat, ess=d.ess, acceptance=d.acceptance,
            below_init_fraction=d.below_init_fraction, diverged_chains=d.diverged_chains,
            mcse_relative=d.mcse_relative, below_init_segments=d.below_init_segments, drift=d.drift,
            drift_error=d.drift_error, predicted_bias=llc.bias_estimate, gradient_norm=llc.gradient_norm,
            slope_term=llc.slope_term),
        verdict=audit_pb2.Verdict(state=enums.VERDICTS[result.verdict.state],
                                  reasons=result.verdict.reasons, not_at_minimum=result.verdict.not_at_minimum),
        group_llc=[audit_pb2.GroupLLC(name=g.name, parameter_names=g.parameter_names,
                                      num_parameters=g.llc.num_parameters, llc=estimate_of(g.llc))
                   for g in result.groups],
        weight_statistics=[audit_pb2.WeightStatistics(
            name=w.name, numel=w.numel, mean=w.mean, std=w.std, kurtosis=w.kurtosis)
            for w in result.weight_statistics])
    plan = llc.chain_plan
    if plan is not None:
        report.resources.CopyFrom(audit_pb2.Resources(
            chains_per_pass=plan.per_pass, chains_summary=plan.summary, bytes_per_chain=plan.bytes_per_chain,
            memory_budget_bytes=plan.budget_bytes, peak_memory_bytes=result.peak_memory_bytes,
            peak_memory_kind=llc.peak_memory_kind, compile_summary=llc.compile_summary,
            compile_seconds=llc.compile_seconds))
    if result.hessian is not None:
        h = result.hessian
        report.hessian.CopyFrom(audit_pb2.HessianSummary(
            trace=h.trace, trace_stderr=h.trace_stderr, top_eigenvalue=h.top_eigenvalue,
            probes=h.probes, power_iterations=h.power_iterations))
    return report


MAX_TRACE_POINTS = 4096  # per chain in a report; longer traces are stored as block means

# The core's reason names are the proto enum's, upper-cased after its prefix.
STOP_REASONS = {name: audit_pb2.StopReason.Value("STOP_REASON_" + name.upper()) for name in llc_core.STOP_REASONS}


def downsample(traces: list[list[float]]) -> tuple[int, list[list[float]]]:
    """(stride, traces): every step, or block means of ``stride`` steps so that a chain keeps at
    most MAX_TRACE_POINTS entries (a 100,000-step run would otherwise be megabytes per chain)."""
    steps = len(traces[0]) if traces else 0
    if steps <= MAX_TRACE_POINTS:
        return 1, traces
    stride = math.ceil(steps / MAX_TRACE_POINTS)
    t = torch.tensor(traces, dtype=torch.float64)
    full = steps // stride * stride
    blocks = t[:, :full].reshape(t.shape[0], -1, stride).mean(dim=2)
    if full < steps:
        blocks = torch.cat([blocks, t[:, full:].mean(dim=1, keepdim=True)], dim=1)
    return stride, blocks.tolist()


def stopping_of(llc) -> audit_pb2.Stopping:
    stop = llc.stopping
    out = audit_pb2.Stopping(burnin=llc.burnin, draws=llc.draws)
    if stop is not None:
        out.reason, out.summary = STOP_REASONS[stop.reason], stop.summary
        out.steps, out.warmup_steps, out.checks = stop.steps, stop.warmup_steps, stop.checks
    return out


def estimate_of(llc) -> audit_pb2.LLCEstimate:
    return audit_pb2.LLCEstimate(mean=llc.mean, std=llc.std, per_chain=llc.per_chain,
                                 uncorrected_mean=llc.uncorrected_mean, bias_corrected=llc.bias_corrected,
                                 standard_error=uncertainty.standard_error(llc).total,
                                 slope_removed=llc.slope_removed)


if __name__ == "__main__":
    worker.main("estimator", run)
