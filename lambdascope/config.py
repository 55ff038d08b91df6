"""One place for configuration: environment variables, overridden by command-line flags.

Every service reads the same Settings; `lambdascope up` and the Kubernetes manifests set the
same variables. Addresses of the other services come from here, never from shared files.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

ENV_PREFIX = "LAMBDASCOPE_"


@dataclasses.dataclass
class Settings:
    service: str
    host: str = "127.0.0.1"
    port: int = 0
    # Prometheus /metrics port; 0 picks a free one, -1 disables the endpoint.
    metrics_port: int = 0
    data_dir: pathlib.Path = pathlib.Path("~/.lambdascope/data").expanduser()
    # SQLAlchemy URL of this service's metadata; default: SQLite under data_dir.
    database_url: str = ""
    # Where the registry keeps objects; default: a directory under data_dir.
    object_store: str = ""
    registry_address: str = ""
    trainer_address: str = ""
    estimator_address: str = ""
    # Jobs running at once on this service; more wait in the queue.
    max_concurrent_jobs: int = 2
    # When set, every call but health checks must carry `authorization: Bearer <token>`.
    auth_token: str = ""
    # Seconds in-flight calls get to finish on SIGTERM.
    grace_seconds: float = 5.0
    # Torch threads per worker process; 0 shares the cores among the concurrent jobs. On small
    # machines more threads than cores/jobs made training 10-20x slower under load.
    worker_threads: int = 0
    # Largest chains x (burnin + draws) an audit may ask for.
    max_chain_steps: int = 10_000_000
    log_level: str = "INFO"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / (self.service + '.db')}"

    @property
    def objects_dir(self) -> pathlib.Path:
        return pathlib.Path(self.object_store) if self.object_store else self.data_dir / "objects"

    @property
    def threads_per_worker(self) -> int:
        if self.worker_threads > 0:
            return self.worker_threads
        return max(1, (os.cpu_count() or 1) // max(1, self.max_concurrent_jobs))

    @property
    def endpoints(self) -> dict[str, str]:
        found = {
            "registry": self.registry_address,
            "trainer": self.trainer_address,
            "estimator": self.estimator_address,
        }
        return {name: addr for name, addr in found.items() if addr}


def load(service: str, **overrides: object) -> Settings:
    """Settings for `service` from LAMBDASCOPE_* variables, then non-None overrides."""
    settings = Settings(service=service)
    for field in dataclasses.fields(Settings):
        if field.name == "service":
            continue
        raw = os.environ.get(ENV_PREFIX + field.name.upper())
        if raw is not None and raw != "":
            setattr(settings, field.name, _coerce(field.name, raw))
    for name, value in overrides.items():
        if value is not None:
            setattr(settings, name, _coerce(name, value) if isinstance(value, str) else value)
    settings.data_dir = pathlib.Path(settings.data_dir).expanduser()
    return settings


def to_env(settings: Settings) -> dict[str, str]:
    """The variables that reproduce `settings` in a child process (workers, other services)."""
    env = {}
    for field in dataclasses.fields(Settings):
        if field.name != "service":
            env[ENV_PREFIX + field.name.upper()] = str(getattr(settings, field.name))
    return env


def _coerce(name: str, raw: str) -> object:
    kind = {f.name: f.type for f in dataclasses.fields(Settings)}[name]
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "pathlib.Path":
            return pathlib.Path(raw).expanduser()
    except ValueError:
        raise SystemExit(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw
