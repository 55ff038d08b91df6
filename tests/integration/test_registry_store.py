"""The registry's SQL store against the machine's PostgreSQL, below the gRPC layer."""
from __future__ import annotations

import sqlalchemy as sa

from lambdascope.v1 import registry_pb2
from registry_backend import postgres_database
from services.registry.store import RegistryStore


def test_a_read_on_a_connection_the_server_dropped_is_retried_on_a_fresh_one():
    """Reads skip the pool's pre-ping round trip; when PostgreSQL has dropped the pooled
    sessions (a restart, an idle timeout), the read is retried once instead of failing."""
    with postgres_database() as url:
        store = RegistryStore(url)
        try:
            store.pin_object("e" * 64, 1)
            made = store.add_version(registry_pb2.ModelVersion(
                model_name="kept", sha256="e" * 64, size_bytes=1), {"stage": "x"}, "team")
            assert store.get_version("kept/latest", "team").id == made.id  # a reading session is pooled
            admin = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"),
                                     isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                dropped = conn.exec_driver_sql(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM "
                    "pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()").scalar()
            admin.dispose()
            assert dropped >= 1
            got = store.get_version("kept/latest", "team")
            assert got.id == made.id and dict(got.tags) == {"stage": "x"}
            page = store.search_versions(registry_pb2.SearchModelVersionsRequest(), "team",
                                         tags={"stage": "x"})
            assert [v.id for v in page.versions] == [made.id]
        finally:
            store.dispose()
