"""A job-running service (the trainer, the estimator) put together from settings: its SQL job
records (lambdascope.jobs), a registry client that calls for the caller being served, keys
checked by the registry, and a server hosting the service's own RPCs beside the Jobs service
(GetJob, ListJobs, CancelJob, WatchJob) over its jobs. One wiring, so the two services differ only
in what they start and how their workers run it."""
from __future__ import annotations

from collections.abc import Callable

from lambdascope import audit_log, auth, errors, job_kinds, readiness, server, tls
from lambdascope.client import Client
from lambdascope.config import Settings
from lambdascope.jobs import JobManager
from lambdascope.metrics import JobMetrics, ServerMetrics
from lambdascope.server import ServiceBinding
from lambdascope.storage import db
from lambdascope.v1 import jobs_pb2, jobs_pb2_grpc

# A job's credential outlives any job (the longest queue, the active deadline, retries); it is
# revoked as soon as the job ends.
CREDENTIAL_SECONDS = 7 * 24 * 3600


class JobsServicer(jobs_pb2_grpc.JobsServicer):
    """The Jobs service over one manager's jobs, those of the caller's team."""

    def __init__(self, manager: JobManager):
        self.manager = manager

    def GetJob(self, request, context):
        return self.manager.get(request.job_id, auth.current().team)

    def ListJobs(self, request, context):
        return self.manager.list(request, auth.current().team)

    def CancelJob(self, request, context):
        return self.manager.cancel(request.job_id, auth.current().team)

    def WatchJob(self, request, context):
        return self.manager.watch(request.job_id, auth.current().team, context.is_active)


def caller_credential(registry: Client) -> Callable[[str], str]:
    """JobManager.start's `credential`: a new job's registry credential, issued with the caller's
    own key (`registry` calls for the caller): bound to the caller's team, never able to do more
    than the caller."""
    return lambda job_id: errors.call_upstream("registry", registry.issue_job_credential, job_id,
                                               CREDENTIAL_SECONDS)


def start(settings: Settings, *, kind: str, job_metrics: Callable[[ServerMetrics], JobMetrics],
          bindings: Callable[[JobManager, Client], list[ServiceBinding]]) -> server.RunningServer:
    """Start the server of the service that runs jobs of `kind`; `bindings(manager, registry)`
    are the service's own RPCs. Jobs are resumable: training continues from its last checkpoint,
    an audit from its last snapshot (lambdascope.llc.snapshots), when the service starts again."""
    service = job_kinds.service_of(kind)
    if not settings.registry_address:
        raise SystemExit(f"the {service} needs the registry's address: set LAMBDASCOPE_REGISTRY_ADDRESS")
    metrics = ServerMetrics()
    engine = db.engine(settings.database)
    manager = JobManager(kind=kind, engine=engine, settings=settings, resumable=True,
                         metrics=job_metrics(metrics))
    # Calls to the registry carry the key of the caller being served; the service has none.
    registry = Client(registry=settings.registry_address, forward_caller=True, timeout=15,
                      tls=tls.of_service(settings))
    authenticator = auth.RemoteAuthenticator(tls.channel(settings.registry_address, tls.of_service(settings)))
    jobs_servicer = JobsServicer(manager)
    jobs_binding = ServiceBinding(jobs_pb2.DESCRIPTOR.services_by_name["Jobs"].full_name,
                                  lambda grpc_server: jobs_pb2_grpc.add_JobsServicer_to_server(jobs_servicer,
                                                                                               grpc_server))
    return server.start(settings, [*bindings(manager, registry), jobs_binding], authenticator,
                        on_shutdown=manager.shutdown, metrics=metrics,
                        trail=audit_log.AuditLog(engine, service, retention_days=settings.audit_retention_days),
                        dependencies={"database": readiness.database(engine)})

