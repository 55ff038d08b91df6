"""The estimator: its own RPCs (servicer.py) on the shared wiring of a job-running service
(lambdascope.job_service: job records, registry client, the Jobs service)."""
from __future__ import annotations

from lambdascope import config, job_service, server
from lambdascope.metrics import AuditMetrics
from services.estimator.servicer import binding


def start(settings: config.Settings) -> server.RunningServer:
    return job_service.start(settings, kind="audit", job_metrics=AuditMetrics,
                             bindings=lambda jobs, registry: [binding(jobs, registry, settings.max_chain_steps)])


def main(argv: list[str] | None = None) -> None:
    server.main("estimator", start, argv)
