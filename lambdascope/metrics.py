"""Prometheus metrics of the services, in one CollectorRegistry per server.

- grpc_server_*: every RPC, by type, method and status code, in the conventional names. A small
  interceptor of our own (lambdascope.server): py-grpc-prometheus uses upper-case type labels
  and misses handled_total for server streams.
- lambdascope_*: what the services do: jobs (JobMetrics, hooked into lambdascope.jobs), audits
  (AuditMetrics), training (TrainingMetrics), the registry's storage (RegistryMetrics) and
  database / object-store errors. docs/metrics.md lists every metric.

Each server gets its own CollectorRegistry, so several servers in one process (tests) keep
separate counts. Gauges that describe stored state (jobs by state, stored bytes) are computed
from the database when scraped, so they are right after a restart and across replicas.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from lambdascope import enums
from lambdascope.v1 import jobs_pb2

_LABELS = ("grpc_type", "grpc_service", "grpc_method")

# "queued", "running", "succeeded", ... for every job state but UNSPECIFIED.
JOB_STATES = {value: name.removeprefix("JOB_STATE_").lower()
              for name, value in jobs_pb2.JobState.items() if value}
FINISHED_STATES = ("succeeded", "failed", "cancelled", "interrupted")
VERDICTS = (*enums.VERDICTS, "error")  # "error": an audit job that failed without a verdict
OBJECT_OPERATIONS = ("put", "get", "stat", "delete", "list", "presign")
# Operation label of database errors outside an RPC.
SCRAPE, JOB_RUNNER = "metrics_scrape", "job_runner"

JOB_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
CHAIN_STEPS_BUCKETS = (100, 300, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6)
TRAINING_STEPS_BUCKETS = (1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5)


def is_database_error(exc: BaseException | None) -> bool:
    """An SQLAlchemy error, itself or as the explicit cause (`raise ... from exc`)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, sa.exc.SQLAlchemyError):
            return True
        exc, seen = exc.__cause__, seen + 1
    return False


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        registry = registry if registry is not None else CollectorRegistry()
        self.registry = registry
        self.started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", _LABELS, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            (*_LABELS, "grpc_code"),
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received_total",
            "Stream messages received from clients.",
            _LABELS,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent_total", "Stream messages sent to clients.", _LABELS, registry=registry
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its completion on the server.",
            _LABELS,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.database_errors = Counter(
            "lambdascope_database_errors_total",
            "SQL errors (SQLAlchemy) that ended an RPC, a job runner or a scrape, by operation: "
            "the RPC method, job_runner or metrics_scrape.",
            ("operation",),
            registry=registry,
        )
        self.database_errors.labels(SCRAPE)  # the family is present (at 0) from the start
        self.denied = Counter(
            "lambdascope_denied_calls_total",
            "Calls refused by who made them, by reason: no_key, bad_key (wrong, revoked or "
            "expired), role, acting_team, job_credential, other_team, read_only, quota.",
            ("grpc_service", "grpc_method", "reason"),
            registry=registry,
        )
        self.audit_errors = Counter(
            "lambdascope_audit_log_errors_total",
            "Calls the audit trail failed to record (the call itself was answered).",
            registry=registry,
        )

    def count_exception(self, exc: BaseException, operation: str) -> None:
        """Count `exc` if it is a database error; called where exceptions end an operation."""
        if is_database_error(exc):
            self.database_errors.labels(operation).inc()


def rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def split_method(full_method: str) -> tuple[str, str]:
    """'/lambdascope.v1.Registry/GetModel' -> ('lambdascope.v1.Registry', 'GetModel')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class Observation:
    """Counts one RPC: started now, handled when `finish` is called with its status code."""

    def __init__(self, metrics: ServerMetrics, kind: str, service: str, method: str):
        self.metrics = metrics
        self.labels = (kind, service, method)
        self.start = time.perf_counter()
        metrics.started.labels(*self.labels).inc()

    def received(self) -> None:
        self.metrics.received.labels(*self.labels).inc()

    def sent(self) -> None:
        self.metrics.sent.labels(*self.labels).inc()

    def finish(self, code: grpc.StatusCode) -> None:
        self.metrics.handled.labels(*self.labels, code.name).inc()
        self.metrics.seconds.labels(*self.labels).observe(time.perf_counter() - self.start)

    def count_requests(self, requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            self.received()
            yield request

    def count_responses(self, responses: Iterator[Any], finish: Callable[[], None]) -> Iterator[Any]:
        try:
            for response in responses:
                self.sent()
                yield response
        finally:
            finish()


# -- jobs ------------------------------------------------------------------------------------


class JobMetrics:
    """The job metrics of one job-running service. lambdascope.jobs.JobManager calls `track`
    once, `progress` for each progress event of a worker and `finished` when a job reaches a
    terminal state in this process; services add their own (AuditMetrics, TrainingMetrics)."""

    def __init__(self, server: ServerMetrics, kind: str):
        self.server = server
        self.kind = kind
        registry = server.registry
        self.finished_total = Counter(
            "lambdascope_jobs_finished_total",
            "Jobs that reached a terminal state in this process, by kind and state.",
            ("kind", "state"), registry=registry)
        self.duration = Histogram(
            "lambdascope_job_duration_seconds",
            "Time from a job's start (claimed by a runner) to its end, by kind and final state.",
            ("kind", "state"), buckets=JOB_SECONDS_BUCKETS, registry=registry)
        for state in FINISHED_STATES:  # present at 0 from the start: ratios and rates work
            self.finished_total.labels(kind, state)
            self.duration.labels(kind, state)

    def track(self, read_table: Callable[[], Mapping[int, tuple[int, float | None]]]) -> None:
        """Export the job table at scrape time. `read_table()` answers {state: (jobs, oldest
        created_at)} for this service's kind."""
        self.server.registry.register(_JobTableCollector(self, read_table))

    def progress(self, job_id: str, metrics: Mapping[str, float]) -> None:
        """A worker's progress event (at most a few per second per job)."""

    def count_exception(self, exc: BaseException) -> None:
        """An exception that ended a job runner (outside any RPC)."""
        self.server.count_exception(exc, JOB_RUNNER)

    def finished(self, job: jobs_pb2.Job) -> None:
        state = JOB_STATES.get(job.state)
        if state not in FINISHED_STATES:
            return
        self.finished_total.labels(self.kind, state).inc()
        if job.HasField("started_at") and job.HasField("finished_at"):
            seconds = (job.finished_at.ToNanoseconds() - job.started_at.ToNanoseconds()) / 1e9
            if seconds >= 0:
                self.duration.labels(self.kind, state).observe(seconds)


class _JobTableCollector:
    def __init__(self, metrics: JobMetrics, read_table):
        self.metrics = metrics
        self.read_table = read_table

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            table = self.read_table()
        except sa.exc.SQLAlchemyError:
            self.metrics.server.database_errors.labels(SCRAPE).inc()
            return  # no job gauges this scrape rather than wrong ones
        yield from self._families(table)

    def _families(self, table: Mapping[int, tuple[int, float | None]] | None = None
                  ) -> Iterator[GaugeMetricFamily]:
        kind = self.metrics.kind
        jobs = GaugeMetricFamily("lambdascope_jobs", "Jobs in the service's job table, by kind "
                                 "and current state (read from the database at scrape time).",
                                 labels=("kind", "state"))
        queued = GaugeMetricFamily("lambdascope_jobs_queued", "Jobs waiting for a free runner "
                                   "(the queue depth).", labels=("kind",))
        oldest = GaugeMetricFamily("lambdascope_jobs_queued_oldest_age_seconds",
                                   "Age of the oldest queued job, 0 when none waits.",
                                   labels=("kind",))
        if table is not None:
            for value, name in JOB_STATES.items():
                jobs.add_metric((kind, name), table.get(value, (0, None))[0])
            waiting, since = table.get(jobs_pb2.JOB_STATE_QUEUED, (0, None))
            queued.add_metric((kind,), waiting)
            oldest.add_metric((kind,), max(0.0, time.time() - since) if waiting and since else 0.0)
        yield from (jobs, queued, oldest)


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class TrainingMetrics(JobMetrics):
    """Training jobs, plus the throughput their workers report (no per-job label)."""

    def __init__(self, server: ServerMetrics):
        super().__init__(server, "train")
        self.steps_per_second = Histogram(
            "lambdascope_training_steps_per_second",
            "Optimizer steps per second of training workers, one observation per progress "
            "report (a report covers about 1% of a run).",
            buckets=TRAINING_STEPS_BUCKETS, registry=server.registry)

    def progress(self, job_id: str, metrics: Mapping[str, float]) -> None:
        rate = _finite(metrics.get("steps_per_second"))
        if rate is not None and rate > 0:
            self.steps_per_second.observe(rate)


class AuditMetrics(JobMetrics):
    """Audit jobs, plus their verdicts and sampler throughput, read from a finished job's
    metrics (the worker puts verdict_ok / verdict_warning / verdict_failed counts and
    chain_steps_per_second there)."""

    def __init__(self, server: ServerMetrics):
        super().__init__(server, "audit")
        self.audits = Counter(
            "lambdascope_audits_total",
            "Audited model versions by verdict (ok, warning, failed); error counts audit jobs "
            "that failed without a verdict.",
            ("verdict",), registry=server.registry)
        for verdict in VERDICTS:
            self.audits.labels(verdict)
        self.chain_steps = Histogram(
            "lambdascope_audit_chain_steps_per_second",
            "Sampler throughput of finished audits: chains x steps per second of sampling.",
            buckets=CHAIN_STEPS_BUCKETS, registry=server.registry)

    def finished(self, job: jobs_pb2.Job) -> None:
        super().finished(job)
        if job.state == jobs_pb2.JOB_STATE_FAILED:
            self.audits.labels("error").inc()
        if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
            return
        counted = 0
        for verdict in enums.VERDICTS:
            n = _finite(job.metrics.get(f"verdict_{verdict}")) or 0
            if n > 0:
                self.audits.labels(verdict).inc(n)
                counted += n
        if not counted:  # a worker that does not report counts: its message names the verdict
            verdict = job.message.removeprefix("verdict: ").strip()
            if job.message.startswith("verdict: ") and verdict in enums.VERDICTS:
                self.audits.labels(verdict).inc()
        speed = _finite(job.metrics.get("chain_steps_per_second"))
        if speed is not None and speed > 0:
            self.chain_steps.observe(speed)


# -- the registry ----------------------------------------------------------------------------


class RegistryMetrics:
    """Storage of the registry: stored bytes and records (from the database at scrape time),
    bytes moved through the API, object-store errors (by wrapping the store: `watch_objects`)."""

    def __init__(self, server: ServerMetrics, usage: Callable[[], Mapping[str, Any]]):
        self.server = server
        registry = server.registry
        self.transferred = Counter(
            "lambdascope_registry_transferred_bytes_total",
            "Artifact bytes received by uploads and sent by downloads through the gRPC API.",
            ("direction",), registry=registry)
        for direction in ("upload", "download"):
            self.transferred.labels(direction)
        self.object_store_errors = Counter(
            "lambdascope_object_store_errors_total",
            "Object store calls that failed (backend unreachable, refused, missing object), by "
            "operation.", ("operation",), registry=registry)
        for operation in OBJECT_OPERATIONS:
            self.object_store_errors.labels(operation)
        registry.register(_RegistryUsageCollector(server, usage))

    def uploaded(self, size: int) -> None:
        self.transferred.labels("upload").inc(size)

    def downloaded(self, size: int) -> None:
        self.transferred.labels("download").inc(size)

    def watch_objects(self, store):
        """`store`, counting its failures in lambdascope_object_store_errors_total."""
        return CountingObjectStore(store, self.object_store_errors)


class _RegistryUsageCollector:
    def __init__(self, server: ServerMetrics, usage):
        self.server = server
        self.usage = usage

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            usage = self.usage()
        except sa.exc.SQLAlchemyError:
            self.server.database_errors.labels(SCRAPE).inc()
            return
        yield from self._families(usage)

    @staticmethod
    def _families(usage: Mapping[str, Any] | None = None) -> Iterator[GaugeMetricFamily]:
        stored = GaugeMetricFamily(
            "lambdascope_registry_stored_bytes",
            "Bytes of stored content that at least one model version or dataset references "
            "(each content counted once).")
        objects = GaugeMetricFamily(
            "lambdascope_registry_stored_objects",
            "Distinct stored contents that at least one model version or dataset references.")
        garbage = GaugeMetricFamily(
            "lambdascope_registry_unreferenced_bytes",
            "Bytes of stored content no record references: awaiting the garbage collector, "
            "or pinned by an upload in flight.")
        records = GaugeMetricFamily(
            "lambdascope_registry_records", "Registry records by kind.", labels=("kind",))
        if usage is not None:
            stored.add_metric((), usage["stored_bytes"])
            objects.add_metric((), usage["stored_objects"])
            garbage.add_metric((), usage["unreferenced_bytes"])
            for kind, count in sorted(usage["records"].items()):
                records.add_metric((kind,), count)
        yield from (stored, objects, garbage, records)


class CountingObjectStore:
    """An ObjectStore (lambdascope.storage.objects) that counts the failures of the one it
    wraps: backend errors and OSErrors (a missing object the metadata says exists, a full
    disk). Bad keys (ValueError) are the caller's mistakes and are not counted."""

    def __init__(self, store, errors: Counter):
        from lambdascope.storage.objects import ObjectStoreError  # minio: registry only

        self._COUNTED = (OSError, ObjectStoreError)
        self._store = store
        self._errors = errors

    def __getattr__(self, name: str) -> Any:  # backend details: root, bucket, ...
        return getattr(self._store, name)

    @property
    def describe(self) -> str:
        return self._store.describe

    def _call(self, operation: str, method, *args):
        try:
            return method(*args)
        except self._COUNTED:
            self._errors.labels(operation).inc()
            raise

    def _iterate(self, operation: str, items) -> Iterator[Any]:
        try:
            yield from items
        except self._COUNTED:
            self._errors.labels(operation).inc()
            raise

    def put_file(self, key, path) -> None:
        return self._call("put", self._store.put_file, key, path)

    def read_chunks(self, key, *args) -> Iterator[bytes]:
        return self._iterate("get", self._call("get", self._store.read_chunks, key, *args))

    def exists(self, key) -> bool:
        return self._call("stat", self._store.exists, key)

    def stat(self, key):
        return self._call("stat", self._store.stat, key)

    def delete(self, key) -> None:
        return self._call("delete", self._store.delete, key)

    def list(self, prefix: str = "") -> Iterator[Any]:
        return self._iterate("list", self._call("list", self._store.list, prefix))

    def presigned_get(self, key, expires_seconds):
        return self._call("presign", self._store.presigned_get, key, expires_seconds)
