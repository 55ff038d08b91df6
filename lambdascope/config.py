"""One place for configuration.

Precedence: explicit overrides (command-line flags) > LAMBDASCOPE_* environment variables >
the YAML file named by LAMBDASCOPE_CONFIG (a mapping of the field names below, e.g.
`object_store: s3://models`) > defaults. Every service reads the same Settings; `lambdascope up`
and the Kubernetes manifests set the same variables. Addresses of the other services come from
here, never from shared files. Secrets (admin_key, s3_secret_key) may sit in the file, but
prefer the environment (a Kubernetes Secret): the file tends to get copied and committed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import yaml

ENV_PREFIX = "LAMBDASCOPE_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


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
    # Where the registry keeps objects: `s3://bucket[/prefix]` or a directory (default: under
    # data_dir).
    object_store: str = ""
    # The S3-compatible server for an s3:// object_store, as host:port.
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_secure: bool = True
    s3_region: str = ""
    # Seconds between garbage collections of unreferenced objects; 0 disables the schedule.
    gc_interval_seconds: float = 3600.0
    # Staging uploads older than this are abandoned and may be removed.
    staging_ttl_seconds: float = 86400.0
    # The team of the admin key given as admin_key.
    default_owner: str = "default"
    # Lifetime of presigned download URLs.
    presign_seconds: int = 3600
    registry_address: str = ""
    trainer_address: str = ""
    estimator_address: str = ""
    # Jobs running at once on this service; more wait in the queue.
    max_concurrent_jobs: int = 2
    # Jobs that may wait in the queue; a start beyond it answers RESOURCE_EXHAUSTED (retry later).
    max_queued_jobs: int = 100
    # An API key (lsk_<id>_<secret>, `python -m lambdascope.auth` makes one) that the registry
    # installs at start as an admin key of default_owner's team: how the first admin gets in
    # (a Kubernetes Secret; `lambdascope up` writes one into its data dir). Given to the
    # registry only; never passed on to workers.
    admin_key: str = ""
    # Seconds in-flight calls get to finish on SIGTERM.
    grace_seconds: float = 5.0
    # Torch threads per worker process; 0 shares the machine's cores among the workers running
    # now, resized as they start and end (lambdascope.cpu_share).
    worker_threads: int = 0
    # Largest chains x (burnin + draws) an audit may ask for.
    max_chain_steps: int = 10_000_000
    log_level: str = "INFO"
    # Where jobs run (lambdascope.backends): `local` (worker processes in this service's pod)
    # or `kubernetes` (one batch/v1 Job per job; the job_* settings below shape it).
    job_backend: str = "local"
    # The worker image the Jobs run (Dockerfile target `worker`; ENTRYPOINT `python -m`).
    job_image: str = ""
    # Namespace of the Jobs; default: this pod's namespace, else "default".
    job_namespace: str = ""
    # A Secret with the TLS files (tls_ca, tls_client_cert/key) mounted into each Job's pod, at
    # the directory tls_ca names, so workers reach the registry over TLS as the service does.
    job_tls_secret: str = ""
    # nvidia.com/gpu limit of each Job's pod (0: none).
    job_gpu: int = 0
    # key=value[,key=value...]: the nodeSelector of each Job's pod.
    job_node_selector: str = ""
    # key[=value]:Effect[,...]: the tolerations of each Job's pod.
    job_tolerations: str = ""
    # A Job running longer is stopped (FAILED); its retries count within the same limit.
    job_active_deadline_seconds: int = 86400
    # Finished Jobs (and their pods and logs) are removed this long after they end.
    job_ttl_seconds: int = 3600
    # Retries of a job whose worker failed for a reason other than its input (killed, out of
    # memory, a crash): a Kubernetes Job's pod failures (evictions and other disruptions are not
    # counted), and on the local backend the worker processes, started again after
    # retry_backoff_seconds, doubling per attempt (at most 60 s). Bad input is never retried.
    job_backoff_limit: int = 3
    retry_backoff_seconds: float = 2.0
    # Per-team quotas (lambdascope.quotas; 0: no limit): jobs a team runs at once on a service
    # (more wait, while other teams' start), jobs it keeps waiting there (a start beyond answers
    # RESOURCE_EXHAUSTED), bytes its records hold in the registry (an upload beyond is refused).
    quota_running_jobs: int = 0
    quota_queued_jobs: int = 0
    quota_stored_bytes: int = 0
    # Per-team overrides of the three, a JSON or YAML mapping (a mapping in the config file):
    # {"vision": {"running_jobs": 4, "stored_bytes": 50000000000}}.
    team_quotas: str = ""
    # TLS (lambdascope.tls), PEM file paths. A server given tls_cert and tls_key serves TLS only;
    # with tls_client_ca it also requires client certificates that CA signed (mutual TLS).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # As a client (of the other services; the SDK and CLI read the same variables): the CA that
    # signed the servers' certificates, and the certificate and key to present under mutual TLS.
    tls_ca: str = ""
    tls_client_cert: str = ""
    tls_client_key: str = ""
    # A second port serving only grpc.health.v1, in plaintext, for probes that cannot speak TLS
    # (the kubelet's gRPC probes); -1: none (health is served on the main port, as every service).
    health_port: int = -1
    # Seconds between checks of the service's database (and the registry's object store); health
    # is NOT_SERVING while one does not answer (lambdascope.readiness). 0: checked at start only.
    health_interval_seconds: float = 5.0
    # An audit's worker saves its progress (the registry keeps it for the job) at most this
    # often; a retried worker continues from the last save. 0: at every stage boundary.
    audit_snapshot_seconds: float = 30.0
    # Days the audit trail keeps its events (lambdascope.audit_log); 0 keeps them forever.
    audit_retention_days: float = 365.0

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / (self.service + '.db')}"

    @property
    def objects_dir(self) -> pathlib.Path:
        return pathlib.Path(self.object_store) if self.object_store else self.data_dir / "objects"

    @property
    def endpoints(self) -> dict[str, str]:
        found = {
            "registry": self.registry_address,
            "trainer": self.trainer_address,
            "estimator": self.estimator_address,
        }
        return {name: addr for name, addr in found.items() if addr}


def load(service: str, **overrides: object) -> Settings:
    """Settings for `service`: defaults, then the LAMBDASCOPE_CONFIG file, then LAMBDASCOPE_*
    variables, then non-None overrides."""
    settings = Settings(service=service)
    if os.environ.get(CONFIG_ENV):
        for name, value in _read_file(pathlib.Path(os.environ[CONFIG_ENV])).items():
            setattr(settings, name, value)
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
    """The variables that reproduce `settings` in a child process (workers, other services).
    They carry every field, so the child reads no config file: one that changed on disk since
    the parent started must not give the two different settings. No credential is passed on
    (the admin key, the object store's keys, the database URL): a worker acts with the one it
    is given, its job's, and reaches storage through the registry."""
    env = {CONFIG_ENV: ""}
    for field in dataclasses.fields(Settings):
        if field.name != "service":
            value = "" if field.name in WITHHELD else getattr(settings, field.name)
            env[ENV_PREFIX + field.name.upper()] = str(value)
    return env


# Settings a child process never gets (to_env): what would let it act beyond its job.
WITHHELD = ("admin_key", "s3_access_key", "s3_secret_key", "database_url")


def _kinds() -> dict[str, str]:
    return {f.name: f.type for f in dataclasses.fields(Settings) if f.name != "service"}


def _read_file(path: pathlib.Path) -> dict[str, object]:
    """The settings in a YAML config file, checked: a typo must not be silently ignored."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"{CONFIG_ENV}={path}: cannot read it: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SystemExit(f"{CONFIG_ENV}={path}: expected a mapping of setting names to values")
    kinds = _kinds()
    values = {}
    for name, value in data.items():
        if name not in kinds:
            raise SystemExit(f"{path}: unknown setting {name!r}; known: {', '.join(kinds)}")
        if name == "team_quotas" and isinstance(value, dict):
            value = json.dumps(value)  # its one setting written as a mapping
        kind = kinds[name]
        matches = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
        }.get(kind, isinstance(value, str))  # str and paths: quote numbers in the YAML
        if not matches:
            raise SystemExit(f"{path}: setting {name!r} must be {_KIND_NAMES[kind]}, "
                             f"not {value!r}")
        values[name] = _coerce(name, value) if isinstance(value, str) else (
            float(value) if kind == "float" else value)
    return values


_KIND_NAMES = {"pathlib.Path": "a path (a string)", "str": "a string (quote it)",
               "int": "an integer", "float": "a number", "bool": "true or false"}


def _coerce(name: str, raw: str) -> object:
    kind = _kinds()[name]
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() in _TRUE | _FALSE:
                return raw.lower() in _TRUE
            raise ValueError(raw)
        if kind == "pathlib.Path":
            return pathlib.Path(raw).expanduser()
    except ValueError:
        raise SystemExit(f"{ENV_PREFIX}{name.upper()}={raw!r} is not "
                         f"{_KIND_NAMES[kind]}") from None
    return raw
