"""Which service runs each kind of job. A job id starts with its kind ("train-…", "audit-…"),
so the id alone tells a client which server's Jobs service answers for it and a backend which
worker module runs it."""
from __future__ import annotations

SERVICE_OF_KIND = {"train": "trainer", "audit": "estimator"}


def service_of(job_id_or_kind: str) -> str:
    """The service that owns a job, from its id or its kind."""
    for kind, service in SERVICE_OF_KIND.items():
        if job_id_or_kind == kind or job_id_or_kind.startswith(kind + "-"):
            return service
    kinds = " or ".join(f"{k}-" for k in SERVICE_OF_KIND)
    raise ValueError(f"{job_id_or_kind!r} is not a job id (they start with {kinds})")


def worker_module(kind: str) -> str:
    """The module a worker process of this kind runs (`python -m ...`)."""
    return f"services.{service_of(kind)}.worker"
