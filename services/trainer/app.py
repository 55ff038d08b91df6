"""Wire the trainer together from settings: job manager, registry client, server."""
from __future__ import annotations

from lambdascope import audit_log, auth, config, logs, readiness, server, tls
from lambdascope.client import Client
from lambdascope.jobs import JobManager
from lambdascope.metrics import ServerMetrics, TrainingMetrics
from lambdascope.storage import db
from services.trainer.servicer import bindings


def start(settings: config.Settings) -> server.RunningServer:
    if not settings.registry_address:
        raise SystemExit("the trainer needs the registry's address: set "
                         "LAMBDASCOPE_REGISTRY_ADDRESS")
    metrics = ServerMetrics()
    engine = db.engine(settings.database)
    jobs = JobManager(kind="train", engine=engine, settings=settings,
                      resumable=True, metrics=TrainingMetrics(metrics))
    # Calls to the registry carry the key of the caller being served; the service has none.
    registry = Client(registry=settings.registry_address, forward_caller=True, timeout=15,
                      tls=tls.of_service(settings))
    authenticator = auth.RemoteAuthenticator(tls.channel(settings.registry_address,
                                                         tls.of_service(settings)))
    return server.start(settings, bindings(jobs, registry), authenticator, on_shutdown=jobs.shutdown,
                        metrics=metrics,
                        trail=audit_log.AuditLog(engine, "trainer",
                                                 retention_days=settings.audit_retention_days),
                        dependencies={"database": readiness.database(engine)})


def main(argv: list[str] | None = None) -> None:
    args = server.arg_parser("trainer").parse_args(argv)
    settings = config.load("trainer", **vars(args))
    logs.configure("trainer", settings.log_level)
    server.serve_forever(start(settings), settings)
