"""Real audit reports for the tests of report pages: a small regression model audited by the
estimator's own code path (run_audit, then the worker's to_report), not hand-made protos."""
from __future__ import annotations

import functools
import time

import torch

from lambdascope.llc import losses
from lambdascope.llc.audit import run_audit
from lambdascope.v1 import audit_pb2, models_pb2, registry_pb2
from services.estimator import audit_spec
from services.estimator.worker import to_report


@functools.cache
def audited(per_layer: bool = True, draws: int = 300) -> audit_pb2.AuditReport:
    """One audit of a 2-layer MLP at its least-squares fit, calibrated, per-layer LLC included."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    x = torch.randn(512, 4)
    y = model(x).detach() + 0.1 * torch.randn(512, 2)
    config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_MSE,
                                   sampler=audit_pb2.SamplerConfig(chains=4, draws=draws, burnin=200, seed=1),
                                   measures=audit_pb2.Measures(per_layer_llc=per_layer))
    settings = audit_spec.audit_settings(config, 10_000_000)
    began = time.perf_counter()
    result = run_audit(model, x, y, losses.LOSSES["mse"], settings, device="cpu")
    seconds = time.perf_counter() - began
    version = registry_pb2.ModelVersion(id="mv-sample", lineage=registry_pb2.Lineage(step=100))
    report = to_report(result, config, version, registry_pb2.Dataset(id="ds-sample"), "job-sample", "cpu")
    report.id = "rep-sample"
    report.timing.seconds = seconds  # as the worker does (nothing to load here: the model is in memory)
    return report


def variant(report: audit_pb2.AuditReport, **changes) -> audit_pb2.AuditReport:
    """A copy with ``changes`` applied: ``id``, ``step``, ``model_version_id``, ``llc_shift`` (added
    to the mean and every chain), ``init_loss``, ``nbeta``, ``not_at_minimum``."""
    out = audit_pb2.AuditReport()
    out.CopyFrom(report)
    shift = changes.pop("llc_shift", 0.0)
    out.llc.mean += shift
    out.llc.per_chain[:] = [v + shift for v in out.llc.per_chain]
    if "nbeta" in changes:
        out.config.sampler.nbeta = changes.pop("nbeta")
    if changes.pop("not_at_minimum", False):
        out.verdict.not_at_minimum = True
    for key, value in changes.items():
        setattr(out, key, value)
    return out
