"""The trainer: its own RPCs (servicer.py) on the shared wiring of a job-running service
(lambdascope.job_service: job records, registry client, the Jobs service)."""
from __future__ import annotations

from lambdascope import config, job_service, server
from lambdascope.metrics import TrainingMetrics
from services.trainer.servicer import binding


def start(settings: config.Settings) -> server.RunningServer:
    return job_service.start(settings, kind="train", job_metrics=TrainingMetrics,
                             bindings=lambda jobs, registry: [binding(jobs, registry)])


def main(argv: list[str] | None = None) -> None:
    server.main("trainer", start, argv)
