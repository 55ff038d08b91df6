"""The metric hooks in isolation (no platform): job table gauges after a restart, audit and
training hooks, object-store and database error counting, registry usage."""
from __future__ import annotations

import time

import grpc
import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lambdascope import auth, config, errors, jobs, metrics, server
from lambdascope.storage.objects import LocalObjectStore
from lambdascope.v1 import jobs_pb2, registry_pb2, registry_pb2_grpc


def read(registry) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(registry, name: str, **labels: str) -> float | None:
    return read(registry).get((name, frozenset(labels.items())))


def _insert(engine, job_id: str, kind: str, state: int, *, started: float | None = None,
            created: float | None = None) -> None:
    now = time.time()
    with engine.begin() as conn:
        conn.execute(jobs.jobs_table.insert().values(
            id=job_id, kind=kind, request_id=f"r-{job_id}", spec_json="{}", state=state, step=0,
            total=0, message="", metrics_json="{}", output_ids_json="[]",
            created_at=created or now, started_at=started,
            finished_at=now if state in jobs.TERMINAL else None))


def test_job_gauges_come_from_the_table_after_a_restart(tmp_path):
    settings = config.Settings(service="estimator", data_dir=tmp_path)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    jobs._metadata.create_all(engine)
    S = jobs_pb2
    for i in range(2):
        _insert(engine, f"audit-ok{i}", "audit", S.JOB_STATE_SUCCEEDED)
    _insert(engine, "audit-bad", "audit", S.JOB_STATE_FAILED)
    _insert(engine, "audit-run", "audit", S.JOB_STATE_RUNNING, started=time.time() - 30)
    _insert(engine, "train-x", "train", S.JOB_STATE_SUCCEEDED)  # another kind: not counted

    server_metrics = metrics.ServerMetrics()
    manager = jobs.JobManager(kind="audit", engine=engine, worker_module="no.such.module",
                              settings=settings, metrics=metrics.AuditMetrics(server_metrics))
    try:
        registry = server_metrics.registry
        assert get(registry, "lambdascope_jobs", kind="audit", state="succeeded") == 2
        assert get(registry, "lambdascope_jobs", kind="audit", state="failed") == 1
        # the job the "crash" left running was marked interrupted when the service started
        assert get(registry, "lambdascope_jobs", kind="audit", state="running") == 0
        assert get(registry, "lambdascope_jobs", kind="audit", state="interrupted") == 1
        assert get(registry, "lambdascope_jobs_finished_total", kind="audit",
                   state="interrupted") == 1
        assert get(registry, "lambdascope_job_duration_seconds_count", kind="audit",
                   state="interrupted") == 1
        assert get(registry, "lambdascope_job_duration_seconds_sum", kind="audit",
                   state="interrupted") >= 29
        assert get(registry, "lambdascope_jobs_queued", kind="audit") == 0
        assert get(registry, "lambdascope_jobs_queued_oldest_age_seconds", kind="audit") == 0
        # the job table read of a scrape counts nothing as finished
        assert get(registry, "lambdascope_jobs_finished_total", kind="audit",
                   state="succeeded") == 0
    finally:
        manager.shutdown()


def test_queue_gauges_and_a_failing_table_read():
    server_metrics = metrics.ServerMetrics()
    job_metrics = metrics.TrainingMetrics(server_metrics)
    state = {"fail": False}

    def table():
        if state["fail"]:
            raise sa.exc.OperationalError("SELECT", {}, Exception("database is down"))
        return {jobs_pb2.JOB_STATE_QUEUED: (3, time.time() - 120),
                jobs_pb2.JOB_STATE_RUNNING: (2, time.time() - 300)}

    job_metrics.track(table)
    registry = server_metrics.registry
    assert get(registry, "lambdascope_jobs_queued", kind="train") == 3
    assert get(registry, "lambdascope_jobs", kind="train", state="running") == 2
    assert 119 <= get(registry, "lambdascope_jobs_queued_oldest_age_seconds", kind="train") < 200
    state["fail"] = True
    samples = read(registry)  # the scrape still answers, without the job gauges
    assert ("lambdascope_jobs_queued", frozenset({("kind", "train")})) not in samples
    # counted when it happens: the next scrape shows it (this one, and the one before)
    assert get(registry, "lambdascope_database_errors_total", operation="metrics_scrape") >= 1


def _job(state: int, message: str = "", started: float = 100.0, finished: float = 160.0,
         **values: float) -> jobs_pb2.Job:
    job = jobs_pb2.Job(id="audit-1", kind="audit", state=state, message=message,
                       metrics=values)
    job.started_at.FromNanoseconds(int(started * 1e9))
    job.finished_at.FromNanoseconds(int(finished * 1e9))
    return job


def test_audit_metrics_count_verdicts_errors_and_throughput():
    server_metrics = metrics.ServerMetrics()
    audits = metrics.AuditMetrics(server_metrics)
    registry = server_metrics.registry
    S = jobs_pb2
    audits.finished(_job(S.JOB_STATE_SUCCEEDED, "verdict: warning", verdict_ok=2.0,
                         verdict_warning=1.0, verdict_failed=0.0, chain_steps_per_second=5000.0))
    audits.finished(_job(S.JOB_STATE_SUCCEEDED, "verdict: failed"))  # no counts: the message
    audits.finished(_job(S.JOB_STATE_FAILED, "the dataset does not fit"))
    audits.finished(_job(S.JOB_STATE_CANCELLED, "cancelled by request"))
    assert get(registry, "lambdascope_audits_total", verdict="ok") == 2
    assert get(registry, "lambdascope_audits_total", verdict="warning") == 1
    assert get(registry, "lambdascope_audits_total", verdict="failed") == 1
    assert get(registry, "lambdascope_audits_total", verdict="error") == 1
    assert get(registry, "lambdascope_audit_chain_steps_per_second_count") == 1
    assert get(registry, "lambdascope_audit_chain_steps_per_second_sum") == 5000
    assert get(registry, "lambdascope_jobs_finished_total", kind="audit", state="succeeded") == 2
    assert get(registry, "lambdascope_jobs_finished_total", kind="audit", state="cancelled") == 1
    assert get(registry, "lambdascope_job_duration_seconds_sum", kind="audit",
               state="succeeded") == pytest.approx(120.0)


def test_training_metrics_observe_reported_throughput():
    server_metrics = metrics.ServerMetrics()
    training = metrics.TrainingMetrics(server_metrics)
    training.progress("train-1", {"loss": 0.5, "steps_per_second": 250.0})
    training.progress("train-1", {"loss": 0.4})  # no rate in this event
    training.progress("train-1", {"steps_per_second": float("nan")})
    registry = server_metrics.registry
    assert get(registry, "lambdascope_training_steps_per_second_count") == 1
    assert get(registry, "lambdascope_training_steps_per_second_sum") == 250
    assert not any(dict(labels).get("job") for (name, labels) in read(registry)
                   if name.startswith("lambdascope_training"))


def test_object_store_errors_are_counted_by_operation(tmp_path):
    server_metrics = metrics.ServerMetrics()
    registry_metrics = metrics.RegistryMetrics(server_metrics, lambda: {
        "stored_bytes": 0, "stored_objects": 0, "unreferenced_bytes": 0, "records": {}})
    store = registry_metrics.watch_objects(LocalObjectStore(tmp_path / "objects"))
    source = tmp_path / "blob"
    source.write_bytes(b"abc")
    store.put_file("sha256/ab/abc", source)
    assert b"".join(store.read_chunks("sha256/ab/abc")) == b"abc"
    assert store.exists("sha256/ab/abc") and store.describe == str(tmp_path / "objects")
    with pytest.raises(FileNotFoundError):
        list(store.read_chunks("sha256/ab/missing"))
    with pytest.raises(OSError):
        store.put_file("sha256/ab/other", tmp_path / "no-such-file")
    with pytest.raises(ValueError):  # a bad key is the caller's mistake, not the store's
        store.exists("../escape")
    registry = server_metrics.registry
    assert get(registry, "lambdascope_object_store_errors_total", operation="get") == 1
    assert get(registry, "lambdascope_object_store_errors_total", operation="put") == 1
    assert get(registry, "lambdascope_object_store_errors_total", operation="stat") == 0


class _BrokenStore:
    """Raises what a store raises when its database fails, or refuses as the real one does."""

    def get_model(self, name, team):
        raise sa.exc.OperationalError("SELECT", {}, Exception("could not connect"))

    def list_models(self, request, team):
        try:
            raise sa.exc.OperationalError("SELECT", {}, Exception("could not connect"))
        except sa.exc.OperationalError as exc:
            raise errors.Unavailable("the database is unreachable") from exc

    def create_model(self, name, description, owner):
        try:
            raise sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))
        except sa.exc.IntegrityError:
            raise errors.AlreadyExists(f"model {name!r} already exists") from None


def test_database_errors_are_counted_by_rpc(tmp_path):
    from services.registry.servicer import binding

    server_metrics = metrics.ServerMetrics()
    settings = config.Settings(service="registry", data_dir=tmp_path, metrics_port=-1)
    # Every caller is a writer of team-a: this test is about the store's errors, not about keys.
    anyone = lambda key, team: auth.Principal("k", "team-a", auth.Role.ROLE_WRITER)  # noqa: E731
    running = server.start(settings, [binding(_BrokenStore(), LocalObjectStore(tmp_path / "o"),
                                              tmp_path / "staging")], anyone, metrics=server_metrics)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            for call, request, code in [
                # the database did not answer: UNAVAILABLE (retry later), and counted
                (stub.GetModel, registry_pb2.GetModelRequest(name="m"), grpc.StatusCode.UNAVAILABLE),
                (stub.ListModels, registry_pb2.ListModelsRequest(), grpc.StatusCode.UNAVAILABLE),
                (stub.CreateModel, registry_pb2.CreateModelRequest(name="m"),
                 grpc.StatusCode.ALREADY_EXISTS),
            ]:
                with pytest.raises(grpc.RpcError) as caught:
                    call(request, timeout=10, metadata=[("authorization", "Bearer any")])
                assert caught.value.code() == code
    finally:
        running.stop(0)
    registry = server_metrics.registry
    assert get(registry, "lambdascope_database_errors_total", operation="GetModel") == 1
    assert get(registry, "lambdascope_database_errors_total", operation="ListModels") == 1
    # a conflict the store answered (AlreadyExists) is not a database error
    assert get(registry, "lambdascope_database_errors_total", operation="CreateModel") is None


def test_registry_usage_counts_referenced_content_once(tmp_path):
    from services.registry.store import RegistryStore

    store = RegistryStore(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        shared, data, orphan = "a" * 64, "b" * 64, "c" * 64
        for _ in range(2):  # the same checkpoint registered twice: stored once
            store.pin_object(shared, 100)
            store.add_version(registry_pb2.ModelVersion(model_name="m", sha256=shared,
                                                        size_bytes=100), {}, "team")
        store.pin_object(data, 50)
        store.add_dataset(registry_pb2.Dataset(name="d", sha256=data, size_bytes=50), {}, "team")
        store.pin_object(orphan, 7)  # an upload in flight (or garbage): no record yet
        usage = store.usage()
    finally:
        store.dispose()
    assert usage == {"stored_bytes": 150, "stored_objects": 2, "unreferenced_bytes": 7,
                     "records": {"model": 1, "model_version": 2, "dataset": 1, "report": 0}}
