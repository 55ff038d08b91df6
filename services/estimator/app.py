"""Wire the estimator together from settings: job manager, registry client, server."""
from __future__ import annotations

from lambdascope import audit_log, auth, config, logs, readiness, server, tls
from lambdascope.client import Client
from lambdascope.jobs import JobManager
from lambdascope.metrics import AuditMetrics, ServerMetrics
from lambdascope.storage import db
from services.estimator.servicer import bindings


def start(settings: config.Settings) -> server.RunningServer:
    if not settings.registry_address:
        raise SystemExit("the estimator needs the registry's address: set "
                         "LAMBDASCOPE_REGISTRY_ADDRESS")
    metrics = ServerMetrics()
    engine = db.engine(settings.database)
    # Resumable: an audit continues from its last snapshot (lambdascope.llc.snapshots) when the
    # estimator is restarted, as training continues from its last checkpoint.
    jobs = JobManager(kind="audit", engine=engine, settings=settings,
                      resumable=True, metrics=AuditMetrics(metrics))
    # Calls to the registry carry the key of the caller being served; the service has none.
    registry = Client(registry=settings.registry_address, forward_caller=True, timeout=15,
                      tls=tls.of_service(settings))
    authenticator = auth.RemoteAuthenticator(tls.channel(settings.registry_address,
                                                         tls.of_service(settings)))
    return server.start(settings, bindings(jobs, registry, settings.max_chain_steps), authenticator,
                        on_shutdown=jobs.shutdown, metrics=metrics,
                        trail=audit_log.AuditLog(engine, "estimator",
                                                 retention_days=settings.audit_retention_days),
                        dependencies={"database": readiness.database(engine)})


def main(argv: list[str] | None = None) -> None:
    args = server.arg_parser("estimator").parse_args(argv)
    settings = config.load("estimator", **vars(args))
    logs.configure("estimator", settings.log_level)
    server.serve_forever(start(settings), settings)
