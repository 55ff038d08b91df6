"""Wire the registry together from settings: SQL store, object store, collector, server."""
from __future__ import annotations

from lambdascope import audit_log, auth, config, quotas, readiness, server
from lambdascope.metrics import RegistryMetrics, ServerMetrics
from lambdascope.storage.objects import open_store
from services.registry import gc, identity_servicer
from services.registry.identities import Identities
from services.registry.schema import audit_events
from services.registry.servicer import binding
from services.registry.store import RegistryStore


def start(settings: config.Settings) -> server.RunningServer:
    store = RegistryStore(settings.database)
    identities = Identities(store)
    if settings.admin_key:
        try:
            identities.install_key(settings.admin_key, settings.default_owner,
                                   auth.Role.ROLE_ADMIN, "the admin key given as admin_key")
        except ValueError as exc:
            raise SystemExit(f"LAMBDASCOPE_ADMIN_KEY: {exc}") from None
    metrics = ServerMetrics()
    registry_metrics = RegistryMetrics(metrics, store.usage)
    objects = registry_metrics.watch_objects(open_store(settings))
    staging = settings.data_dir / "staging"
    schedule = gc.Schedule(settings.gc_interval_seconds, lambda: gc.collect(
        store, objects, staging, settings.staging_ttl_seconds)).start()
    return server.start(settings, [
        binding(store, objects, staging, presign_seconds=settings.presign_seconds,
                staging_ttl_seconds=settings.staging_ttl_seconds, metrics=registry_metrics,
                quotas=quotas.Quotas(settings)),
        identity_servicer.binding(identities)],
        identities.authenticate, on_shutdown=schedule.stop, metrics=metrics,
        trail=audit_log.AuditLog(store.engine, "registry", table=audit_events,
                                 retention_days=settings.audit_retention_days),
        dependencies={"database": readiness.database(store.engine),
                      "object store": lambda: objects.exists("health/probe")})


def main(argv: list[str] | None = None) -> None:
    server.main("registry", start, argv)
