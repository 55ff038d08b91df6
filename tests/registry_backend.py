"""The registry service on one of its two backend pairs, for tests: (SQLite, local directory)
and (PostgreSQL at 127.0.0.1:5432, moto's S3 server on a loopback port). Real servers both:
each instance gets a fresh database and bucket, dropped at the end."""
from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import uuid
from collections.abc import Iterator

import sqlalchemy as sa

from lambdascope import config
from lambdascope.client import Client
from lambdascope.local import LocalPlatform
from lambdascope.storage.objects import ObjectStore, open_store

POSTGRES_ADMIN = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite-local", "postgres-s3")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server; its URL."""
    name = f"lambdascope_test_{uuid.uuid4().hex[:12]}"
    # pre-ping: the server may have restarted since (bench/chaos.py restarts it)
    admin = sa.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        raise RuntimeError("PostgreSQL is not answering at 127.0.0.1:5432; start it with "
                           "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main "
                           f"start`: {exc}") from None
    try:
        yield f"postgresql://root@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


class RegistryBackend:
    """A running registry process plus direct access to its object store (to check what is
    stored) and its staging directory."""

    def __init__(self, kind: str, data_dir: pathlib.Path, env: dict[str, str]):
        self.kind = kind
        self.data_dir = data_dir
        self.env = env
        self.platform = LocalPlatform(data_dir, extra_env=env, services=("registry",))

    def start(self) -> None:
        self.platform.start()

    def stop(self) -> None:
        self.platform.stop()

    def kill(self) -> None:
        """SIGKILL the registry: what a crash leaves behind stays behind."""
        proc = self.platform.procs.pop("registry")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self) -> None:
        self.platform.restart("registry")

    @property
    def address(self) -> str:
        return self.platform.endpoints["registry"]

    def client(self) -> Client:
        return Client(registry=self.address, api_key=self.api_key)

    @property
    def api_key(self) -> str:
        return self.platform.api_key

    def settings(self) -> config.Settings:
        saved = dict(os.environ)
        try:
            os.environ.update(self.env)
            os.environ["LAMBDASCOPE_DATA_DIR"] = str(self.data_dir)
            return config.load("registry")
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def objects(self) -> ObjectStore:
        return open_store(self.settings())

    def content_keys(self) -> list[str]:
        return sorted(info.key for info in self.objects().list("sha256/"))

    def staging_files(self) -> list[pathlib.Path]:
        staging = self.data_dir / "staging"
        return sorted(staging.iterdir()) if staging.exists() else []


@contextlib.contextmanager
def registry_backend(kind: str, data_dir: pathlib.Path, s3_endpoint: str | None,
                     **extra_env: str) -> Iterator[RegistryBackend]:
    env = {"LAMBDASCOPE_GC_INTERVAL_SECONDS": "0", **extra_env}
    with contextlib.ExitStack() as stack:
        if kind == "postgres-s3":
            env["LAMBDASCOPE_DATABASE_URL"] = stack.enter_context(postgres_database())
            env.update({
                "LAMBDASCOPE_OBJECT_STORE": f"s3://registry-{uuid.uuid4().hex[:10]}/artifacts",
                "LAMBDASCOPE_S3_ENDPOINT": s3_endpoint or "",
                "LAMBDASCOPE_S3_ACCESS_KEY": "test", "LAMBDASCOPE_S3_SECRET_KEY": "test-secret",
                "LAMBDASCOPE_S3_SECURE": "false", "LAMBDASCOPE_S3_REGION": "us-east-1"})
        elif kind != "sqlite-local":
            raise ValueError(f"unknown backend pair {kind!r}; known: {BACKENDS}")
        backend = RegistryBackend(kind, data_dir, env)
        backend.start()
        stack.callback(backend.stop)
        yield backend
