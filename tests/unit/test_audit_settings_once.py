"""An audit's settings are parsed and checked once where it runs: the estimator's worker builds
them from the request (audit_spec.audit_settings), the library samples with them, and the
report's resolved configuration is written from them, not rebuilt."""
from __future__ import annotations

import pytest
import torch

from lambdascope.llc import losses
from lambdascope.llc.audit import run_audit
from lambdascope.llc.llc import SGLDConfig
from lambdascope.v1 import audit_pb2, models_pb2, registry_pb2
from services.estimator import audit_spec
from services.estimator.worker import to_report


def test_one_audit_builds_its_sampler_settings_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built = []
    check = SGLDConfig.__post_init__
    monkeypatch.setattr(SGLDConfig, "__post_init__", lambda self: (built.append(self), check(self)))
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(256, 3)
    y = model(x).detach() + 0.1 * torch.randn(256, 1)
    config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_MSE, sampler=audit_pb2.SamplerConfig(
        chains=2, draws=50, burnin=50, step_size=1e-4, seed=1))

    settings = audit_spec.audit_settings(config, 10_000_000)
    result = run_audit(model, x, y, losses.LOSSES["mse"], settings, device="cpu")
    report = to_report(result, config, registry_pb2.ModelVersion(id="mv-1"), registry_pb2.Dataset(id="ds-1"),
                       "audit-1", "cpu")

    assert len(built) == 1 and result.settings is settings
    assert (report.config.sampler.draws, report.config.sampler.burnin, report.config.sampler.chains) == (50, 50, 2)
    assert report.config.sampler.batch_size == settings.sgld.batch_size  # defaults written out from it
