"""The Kubernetes Job backend (lambdascope.backends): the Jobs it builds, validated against the
Kubernetes API schemas, and its logic against StandInKubernetesAPI (tests/k8s_standin.py), a
stand-in API server on loopback, since no real cluster can run here."""
from __future__ import annotations

import io
import json
import pathlib
import sys
import threading
import time

import pytest
import sqlalchemy as sa

kubernetes = pytest.importorskip("kubernetes")
from google.protobuf import json_format  # noqa: E402
from kubernetes import client as k8s  # noqa: E402

from lambdascope import backends, config, jobs, worker  # noqa: E402
from lambdascope.v1 import jobs_pb2  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from k8s_standin import JobScript, ScriptedPod, StandInKubernetesAPI  # noqa: E402

NS = "lambdascope"
MODULE = "services.estimator.worker"
SPEC = json.dumps({"model_version_id": "mv-1", "dataset_id": "ds-1"})
S = jobs_pb2.JobState


def _settings(**overrides) -> config.Settings:
    settings = config.Settings(service="estimator")
    settings.data_dir = pathlib.Path("/var/lib/lambdascope")
    settings.job_backend = "kubernetes"
    settings.job_image = "ghcr.io/lambdascope/worker:0.1.0"
    settings.job_namespace = NS
    settings.admin_key = "very-secret-token"
    settings.s3_access_key = "access-key-value"
    settings.s3_secret_key = "secret-key-value"
    for name, value in overrides.items():
        setattr(settings, name, value)
    return settings


def _doc(job) -> dict:
    return k8s.ApiClient().sanitize_for_serialization(job)


def _env(doc) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"][0]["env"]


# -- build_job ---------------------------------------------------------------------------------

@pytest.mark.parametrize("gpu", [False, True])
def test_built_jobs_validate_strictly_against_the_kubernetes_schemas(gpu):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    settings = _settings(job_gpu=1, job_node_selector="nvidia.com/gpu.present=true",
                         job_tolerations="nvidia.com/gpu:NoSchedule") if gpu else _settings()
    doc = _doc(backends.build_job("audit-0123456789abcdef", "audit", SPEC, settings))
    for version in ("1.37", "1.29"):
        assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_a_cpu_job_has_the_contracted_shape():
    doc = _doc(backends.build_job("audit-0123456789abcdef", "audit", SPEC, _settings()))
    assert (doc["apiVersion"], doc["kind"]) == ("batch/v1", "Job")
    meta, spec = doc["metadata"], doc["spec"]
    assert meta["name"] == "audit-0123456789abcdef" and meta["namespace"] == NS
    labels = {"app.kubernetes.io/name": "lambdascope", "app.kubernetes.io/component": "worker",
              "lambdascope.dev/job-id": "audit-0123456789abcdef"}
    assert labels.items() <= meta["labels"].items()
    assert labels.items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["backoffLimit"] == 3
    assert spec["activeDeadlineSeconds"] == 86400
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert spec["podFailurePolicy"] == {"rules": [
        {"action": "FailJob",
         "onExitCodes": {"containerName": "worker", "operator": "In", "values": [2]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]}
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["name"] == "worker"
    assert container["image"] == "ghcr.io/lambdascope/worker:0.1.0"
    assert container["args"] == [MODULE] and "command" not in container
    assert "nvidia.com/gpu" not in json.dumps(container.get("resources", {}))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts) == {"/tmp", "/var/lib/lambdascope"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())


def test_a_gpu_job_asks_for_the_gpu_node_and_tolerates_its_taint():
    settings = _settings(job_gpu=2, job_node_selector="nvidia.com/gpu.present=true, zone=a",
                         job_tolerations="nvidia.com/gpu:NoSchedule,dedicated=ml:NoExecute",
                         job_backoff_limit=5, job_active_deadline_seconds=600,
                         job_ttl_seconds=60)
    doc = _doc(backends.build_job("train-00ff", "train", SPEC, settings))
    pod = doc["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources == {"limits": {"nvidia.com/gpu": "2"}}  # requests omitted
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true", "zone": "a"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}]
    assert pod["containers"][0]["args"] == ["services.trainer.worker"]
    assert (doc["spec"]["backoffLimit"], doc["spec"]["activeDeadlineSeconds"],
            doc["spec"]["ttlSecondsAfterFinished"]) == (5, 600, 60)


def test_the_job_travels_in_env_and_its_credential_only_by_secret_reference():
    """A pod's literal env is readable by whoever may read Jobs or Pods (the "view" role): the
    job's credential reaches the pod from its own Secret, owned by the Job."""
    settings = _settings()
    doc = _doc(backends.build_job("audit-1", "audit", SPEC, settings, credential="lsk_job", secret="audit-1-0a1b"))
    env = _env(doc)
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    by_name = {e["name"]: e for e in env}
    assert json.loads(by_name["LAMBDASCOPE_JOB"]["value"]) == {
        "job_id": "audit-1", "kind": "audit", "spec_json": SPEC}
    assert "LAMBDASCOPE_ADMIN_KEY" not in by_name or not by_name["LAMBDASCOPE_ADMIN_KEY"].get("value")
    # The one reference: the job's credential, from the Secret of the Job's name.
    assert [e for e in env if "valueFrom" in e] == [{"name": "LAMBDASCOPE_JOB_API_KEY", "valueFrom": {
        "secretKeyRef": {"name": "audit-1-0a1b", "key": "api-key"}}}]
    for key in ("LAMBDASCOPE_S3_ACCESS_KEY", "LAMBDASCOPE_S3_SECRET_KEY", "LAMBDASCOPE_DATABASE_URL"):
        assert by_name[key]["value"] == "", key
    text = json.dumps(doc)
    for secret in ("lsk_job", "very-secret-token", "access-key-value", "secret-key-value"):
        assert secret not in text
    # The service's other settings reach the worker as they are.
    assert by_name["LAMBDASCOPE_DATA_DIR"]["value"] == "/var/lib/lambdascope"
    assert by_name["LAMBDASCOPE_MAX_CHAIN_STEPS"]["value"] == str(settings.max_chain_steps)
    # Without a credential (a job that calls nothing) there is no reference at all.
    assert not any("valueFrom" in e for e in _env(_doc(backends.build_job("audit-1", "audit", SPEC, settings))))

    secret = _doc(backends.build_secret("audit-1", "lsk_job", settings, "uid-audit-1", "audit-1-0a1b"))
    assert secret["stringData"] == {"api-key": "lsk_job"} and secret["immutable"] is True
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "audit-1", "uid": "uid-audit-1"}]
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == ("audit-1-0a1b", NS)
    # Each Job gets a Secret of its own name: a Job made again never meets the one before's.
    names = {backends.credential_secret("audit-1") for _ in range(20)}
    assert len(names) == 20 and all(n.startswith("audit-1-") and len(n) <= 63 for n in names)
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for built in (doc, secret):
        assert kubernetes_validate.validate(built, "1.37", strict=True) == "1.37"


def test_under_tls_the_job_mounts_the_certificates_where_the_service_reads_them():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    settings = _settings(job_tls_secret="lambdascope-tls", tls_ca="/etc/lambdascope/tls/ca.crt",
                         tls_client_cert="/etc/lambdascope/tls/tls.crt",
                         tls_client_key="/etc/lambdascope/tls/tls.key")
    doc = _doc(backends.build_job("audit-1", "audit", SPEC, settings))
    pod = doc["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["tls"] == {"name": "tls", "mountPath": "/etc/lambdascope/tls", "readOnly": True}
    assert {"name": "tls", "secret": {"secretName": "lambdascope-tls"}} in pod["volumes"]
    env = {e["name"]: e.get("value") for e in _env(doc)}
    assert env["LAMBDASCOPE_TLS_CA"] == "/etc/lambdascope/tls/ca.crt"
    assert kubernetes_validate.validate(doc, "1.37", strict=True) == "1.37"
    with pytest.raises(ValueError, match="absolute path"):
        backends.build_job("audit-1", "audit", SPEC, _settings(job_tls_secret="s", tls_ca="ca.crt"))


@pytest.mark.parametrize("field,value", [("job_node_selector", "novalue"),
                                         ("job_tolerations", "nvidia.com/gpu"),
                                         ("job_tolerations", "k:Sometimes"),
                                         ("job_image", "")])
def test_bad_job_settings_are_refused(field, value):
    with pytest.raises(ValueError):
        backends.build_job("audit-1", "audit", SPEC, _settings(**{field: value}))


def test_job_names_are_dns_labels():
    assert backends.job_name("audit-0123456789abcdef") == "audit-0123456789abcdef"
    assert backends.job_name("Train_ABC") == "train-abc"
    assert len(backends.job_name("x" * 100)) == 63


def test_the_namespace_defaults_to_the_pods_then_default(tmp_path, monkeypatch):
    assert backends.namespace_of(_settings(job_namespace="ml")) == "ml"
    monkeypatch.setattr(backends, "NAMESPACE_FILE", str(tmp_path / "missing"))
    assert backends.namespace_of(_settings(job_namespace="")) == "default"
    (tmp_path / "ns").write_text("team-a\n")
    monkeypatch.setattr(backends, "NAMESPACE_FILE", str(tmp_path / "ns"))
    assert backends.namespace_of(_settings(job_namespace="")) == "team-a"


# -- the worker's side -------------------------------------------------------------------------

def test_the_worker_reads_its_job_from_lambdascope_job_else_stdin():
    job = {"job_id": "audit-1", "kind": "audit", "spec_json": SPEC}
    stdin = io.StringIO(json.dumps({"job_id": "from-stdin", "kind": "audit", "spec_json": "{}"}))
    assert worker.read_job({"LAMBDASCOPE_JOB": json.dumps(job)}, stdin) == job
    assert worker.read_job({}, stdin)["job_id"] == "from-stdin"
    # What build_job puts in the pod, with the Secret's value where the kubelet puts it, is
    # what the worker reads.
    settings = _settings()
    doc = _doc(backends.build_job("audit-1", "audit", SPEC, settings, credential="lsk_x", secret="audit-1-s"))
    secret = _doc(backends.build_secret("audit-1", "lsk_x", settings, "uid-1", "audit-1-s"))
    env = {e["name"]: e["value"] if "value" in e else secret["stringData"][e["valueFrom"]["secretKeyRef"]["key"]]
           for e in _env(doc)}
    assert worker.read_job(env, io.StringIO("")) == {**job, "api_key": "lsk_x"}
    with pytest.raises(ValueError):
        worker.read_job({"LAMBDASCOPE_JOB": json.dumps({"job_id": "x"})}, io.StringIO(""))


# -- against the stand-in API server -----------------------------------------------------------

def _event(state=S.JOB_STATE_RUNNING, step=0, total=10, message="", **metrics) -> str:
    event = jobs_pb2.JobEvent(job_id="x", state=state, step=step, total=total, message=message,
                              metrics=metrics)
    return json_format.MessageToJson(event, indent=None)


def _done(message="done", step=10, outputs=("report-1",)) -> str:
    event = jobs_pb2.JobEvent(job_id="x", state=S.JOB_STATE_SUCCEEDED, step=step, total=10,
                              message=message, output_ids=list(outputs), metrics={"llc": 4.5})
    return json_format.MessageToJson(event, indent=None)


@pytest.fixture
def api():
    with StandInKubernetesAPI() as server:
        yield server


def _backend(api, **overrides) -> backends.KubernetesBackend:
    configuration = k8s.Configuration(host=api.url)
    return backends.KubernetesBackend(_settings(**overrides), kind="audit", worker_module=MODULE,
                                      api_client=k8s.ApiClient(configuration),
                                      poll_interval=0.05)


class Recorder:
    """A JobManager whose published events are kept, to see the progress it applied."""

    def __init__(self, tmp_path, backend, name="jobs.db"):
        engine = sa.create_engine(f"sqlite:///{tmp_path / name}")
        self.manager = jobs.JobManager(kind="audit", engine=engine, worker_module=MODULE,
                                       settings=backend.settings, backend=backend)
        self.events: list[jobs_pb2.JobEvent] = []
        publish = self.manager._publish

        def record(event):
            self.events.append(event)
            publish(event)

        self.manager._publish = record

    def wait(self, job_id, timeout=20.0) -> jobs_pb2.Job:
        """The job once it ended, and once its final event was published (which follows the
        database update)."""
        job = self.manager._wait_terminal(job_id, timeout)
        deadline = time.monotonic() + 5
        while job.state in jobs.TERMINAL and time.monotonic() < deadline and not any(
                e.job_id == job_id and e.state in jobs.TERMINAL for e in list(self.events)):
            time.sleep(0.01)
        return job

    def wait_step(self, job_id, step, timeout=10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.manager.get(job_id).step < step:
            assert time.monotonic() < deadline, self.manager.get(job_id)
            time.sleep(0.02)


def test_a_job_runs_as_a_kubernetes_job_to_success_with_its_progress(api, tmp_path):
    api.script(JobScript([ScriptedPod([
        _event(step=1, loss=0.5), "a stray line that is not an event",
        _event(step=5, loss=0.25), _done()])]))
    rec = Recorder(tmp_path, _backend(api))
    try:
        job = rec.manager.start("req-1", SPEC)
        done = rec.wait(job.id)
        assert done.state == S.JOB_STATE_SUCCEEDED, done
        assert (done.step, list(done.output_ids), dict(done.metrics)) == (10, ["report-1"],
                                                                         {"llc": 4.5})
        steps = [(e.state, e.step) for e in rec.events if e.job_id == job.id]
        assert (S.JOB_STATE_RUNNING, 1) in steps and (S.JOB_STATE_RUNNING, 5) in steps
        assert steps[-1] == (S.JOB_STATE_SUCCEEDED, 10)
        assert api.create_attempts == [job.id]
        created = api.job(NS, job.id)
        assert created["spec"]["template"]["spec"]["containers"][0]["args"] == [MODULE]
        assert not api.deletes  # a finished Job is left to ttlSecondsAfterFinished
    finally:
        rec.manager.shutdown()


def test_a_repeated_create_adopts_the_existing_job(api):
    backend = _backend(api)
    script = JobScript([ScriptedPod([_event(step=3), _done()], pending_s=0.3)])
    api.script(script, name="audit-again")
    # An earlier service created it (then stopped before recording anything).
    api.precreate(NS, _doc(backends.build_job("audit-again", "audit", SPEC, backend.settings)))
    execution = backend.start("audit-again", SPEC)  # 409 AlreadyExists: adopted, no error
    assert backend.start("audit-again", SPEC) is not None  # and again
    progress = []
    outcome = execution.run(progress.append)
    assert outcome.state == S.JOB_STATE_SUCCEEDED and outcome.final.output_ids == ["report-1"]
    assert [e.step for e in progress] == [3]
    assert api.create_attempts == ["audit-again"] * 3
    assert len(api.jobs) == 1 and len(api.pods) == 1  # no duplicate work


def test_bad_input_fails_fast_with_the_workers_message(api, tmp_path):
    refusal = "the dataset's inputs have 3 features but the model expects 8"
    api.script(JobScript(
        [ScriptedPod([_event(step=0), _event(S.JOB_STATE_FAILED, message=refusal)],
                     end="Failed", exit_code=2)],
        condition=("Failed", "PodFailurePolicy",
                   "Container worker for pod x failed with exit code 2 matching FailJob rule "
                   "at index 0")))
    rec = Recorder(tmp_path, _backend(api))
    try:
        job = rec.manager.start("req-bad", SPEC)
        done = rec.wait(job.id)
        assert done.state == S.JOB_STATE_FAILED
        assert done.message == refusal
        assert len(api.pods) == 1  # not retried
    finally:
        rec.manager.shutdown()


def test_backoff_limit_exceeded_is_an_infrastructure_failure(api, tmp_path):
    crash = _event(S.JOB_STATE_FAILED, message="internal error: RuntimeError: CUDA error")
    api.script(JobScript(
        [ScriptedPod([_event(step=1), crash], end="Failed", exit_code=1) for _ in range(2)],
        condition=("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff "
                                                     "limit")))
    rec = Recorder(tmp_path, _backend(api, job_backoff_limit=1))
    try:
        job = rec.manager.start("req-crash", SPEC)
        done = rec.wait(job.id)
        assert done.state == S.JOB_STATE_FAILED
        assert "failed 2 times" in done.message and "backoffLimit" in done.message, done.message
        assert "infrastructure" in done.message
        assert "CUDA error" in done.message  # what the worker said last
    finally:
        rec.manager.shutdown()


def test_deadline_exceeded_is_reported(api, tmp_path):
    api.script(JobScript([ScriptedPod([_event(step=1)], end="Failed", exit_code=143)],
                         condition=("Failed", "DeadlineExceeded",
                                    "Job was active longer than specified deadline")))
    rec = Recorder(tmp_path, _backend(api, job_active_deadline_seconds=120))
    try:
        done = rec.wait(rec.manager.start("req-slow", SPEC).id)
        assert done.state == S.JOB_STATE_FAILED
        assert "longer than its limit of 120s" in done.message, done.message
    finally:
        rec.manager.shutdown()


@pytest.mark.parametrize("remove_after", [False, True])
def test_an_evicted_pod_is_followed_by_its_replacement_and_the_job_succeeds(
        api, tmp_path, remove_after):
    api.script(JobScript([
        ScriptedPod([_event(step=1), _event(step=2)], end="Evicted", remove_after=remove_after),
        ScriptedPod([_event(step=3), _event(step=4), _done(step=10)]),
    ]))
    rec = Recorder(tmp_path, _backend(api))
    try:
        job = rec.manager.start("req-evicted", SPEC)
        done = rec.wait(job.id)
        assert done.state == S.JOB_STATE_SUCCEEDED, done
        assert list(done.output_ids) == ["report-1"]
        steps = [e.step for e in rec.events if e.state == S.JOB_STATE_RUNNING and e.step]
        assert steps == [1, 2, 3, 4]  # both pods followed, in order, nothing replayed
        assert api.create_attempts == [job.id]  # retried by the Job, not recreated
    finally:
        rec.manager.shutdown()


def test_an_api_server_outage_does_not_lose_the_job(api, tmp_path):
    api.script(JobScript([ScriptedPod([_event(step=1), _event(step=2)], end="hold")]))
    rec = Recorder(tmp_path, _backend(api))
    try:
        job = rec.manager.start("req-outage", SPEC)
        rec.wait_step(job.id, 2)
        pod = next(iter(api.pods.values()))
        with api.cond:  # the result, then the pod ends and the API server is away a while
            pod.log.append(_done())
            api.unavailable = 6
            api.cond.notify_all()
        api.release(job.id)
        done = rec.wait(job.id)
        assert api.unavailable == 0  # the backend met the outage
        assert done.state == S.JOB_STATE_SUCCEEDED, done
    finally:
        rec.manager.shutdown()


def test_cancel_deletes_the_job_in_the_foreground(api, tmp_path):
    api.script(JobScript([ScriptedPod([_event(step=1), _event(step=2)], end="hold")]))
    rec = Recorder(tmp_path, _backend(api))
    try:
        job = rec.manager.start("req-cancel", SPEC)
        rec.wait_step(job.id, 2)
        cancelled = rec.manager.cancel(job.id, '')
        assert cancelled.state == S.JOB_STATE_CANCELLED, cancelled
        assert cancelled.message == "cancelled by request"
        assert api.deletes == [(job.id, "Foreground")]
        assert api.job(NS, job.id) is None and not api.pods
    finally:
        rec.manager.shutdown()


def test_an_adopted_job_that_completed_without_a_readable_result_fails_clearly(api, tmp_path):
    api.script(JobScript([ScriptedPod([_event(step=1), _event(step=2)], end="hold"),
                          ]))
    first = Recorder(tmp_path, _backend(api))
    job = first.manager.start("req-restart", SPEC)
    first.wait_step(job.id, 2)
    first.manager.shutdown()
    # The Job keeps running: not deleted, not INTERRUPTED.
    assert not api.deletes and api.job(NS, job.id) is not None
    assert first.manager.get(job.id).state == S.JOB_STATE_RUNNING
    api.release(job.id)  # it finishes while no service follows it

    second = Recorder(tmp_path, _backend(api))
    try:
        done = second.wait(job.id)
        # The held pod ended with exit 0 but printed no result: the Job completed without one.
        assert done.state == S.JOB_STATE_FAILED and "could not be read" in done.message, done
        assert api.create_attempts == [job.id]
    finally:
        second.manager.shutdown()


def test_a_restarted_service_adopts_and_finishes_a_running_job(api, tmp_path):
    lines = [_event(step=1), _event(step=2)]
    api.script(JobScript([ScriptedPod(lines, end="hold")]))
    first = Recorder(tmp_path, _backend(api))
    job = first.manager.start("req-restart-2", SPEC)
    first.wait_step(job.id, 2)
    first.manager.shutdown()
    assert first.manager.get(job.id).state == S.JOB_STATE_RUNNING

    second = Recorder(tmp_path, _backend(api))
    try:
        pod = next(iter(api.pods.values()))
        with api.cond:  # the worker prints its result, then ends
            pod.log.append(_done())
            api.cond.notify_all()
        api.release(job.id)
        done = second.wait(job.id)
        assert done.state == S.JOB_STATE_SUCCEEDED, done
        assert list(done.output_ids) == ["report-1"]
    finally:
        second.manager.shutdown()


def test_a_restarted_service_interrupts_running_jobs_whose_kubernetes_job_is_gone(
        api, tmp_path):
    backend = _backend(api)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'gone.db'}")
    jobs._metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(jobs.jobs_table.insert().values(
            id="audit-gone", kind="audit", request_id="r", spec_json=SPEC,
            state=S.JOB_STATE_RUNNING, step=1, total=10, message="", metrics_json="{}",
            output_ids_json="[]", created_at=time.time()))
    manager = jobs.JobManager(kind="audit", engine=engine, worker_module=MODULE,
                              settings=backend.settings, backend=backend)
    try:
        assert manager.get("audit-gone").state == S.JOB_STATE_INTERRUPTED
    finally:
        manager.shutdown()


def test_the_backend_calls_only_what_the_role_allows(api, tmp_path):
    """deploy/k8s/base/rbac.yaml: jobs create/get/list/watch/delete, pods get/list/watch,
    pods/log get, secrets create."""
    api.script(JobScript([ScriptedPod([_event(step=1), _done()])]))
    rec = Recorder(tmp_path, _backend(api))
    try:
        job = rec.manager.start("req-rbac", SPEC, credential=lambda job_id: "lsk_rbac")
        rec.wait(job.id)
        api.script(JobScript([ScriptedPod([_event(step=1)], end="hold")]))
        job2 = rec.manager.start("req-rbac-2", SPEC, credential=lambda job_id: "lsk_rbac_2")
        rec.wait_step(job2.id, 1)
        assert rec.manager.cancel(job2.id, '').state == S.JOB_STATE_CANCELLED
    finally:
        rec.manager.shutdown()
    allowed = set()
    for method, path in api.requests:
        parts = path.strip("/").split("/")
        if parts[0] == "apis":
            resource = "jobs"
            verb = {"POST": "create", "DELETE": "delete"}.get(method) or (
                "get" if len(parts) == 7 else "list")
        elif parts[4] == "secrets":
            resource, verb = "secrets", {"POST": "create"}.get(method, method)
        else:
            resource = "pods/log" if parts[-1] == "log" else "pods"
            verb = "get" if len(parts) >= 6 else "list"
        allowed.add((resource, verb))
    role = {("jobs", v) for v in ("create", "get", "list", "watch", "delete")} | {
        ("pods", v) for v in ("get", "list", "watch")} | {("pods/log", "get"), ("secrets", "create")}
    assert allowed <= role, allowed - role
    assert {("jobs", "create"), ("jobs", "delete"), ("pods/log", "get"), ("secrets", "create")} <= allowed


def test_the_credential_goes_to_a_secret_the_job_owns_and_goes_with_it(api, tmp_path):
    api.script(JobScript([ScriptedPod([_event(step=1)], end="hold")]))
    rec = Recorder(tmp_path, _backend(api))
    try:
        job = rec.manager.start("req-secret", SPEC, credential=lambda job_id: "lsk_secret")
        rec.wait_step(job.id, 1)
        stored = api.job(NS, job.id)
        assert "lsk_secret" not in json.dumps(stored)  # not in the Job, its pod template included
        (reference,) = [e["valueFrom"]["secretKeyRef"]["name"] for e in _env(stored) if "valueFrom" in e]
        secret = api.secrets[(NS, reference)]
        assert secret["stringData"] == {"api-key": "lsk_secret"}
        assert [o["uid"] for o in secret["metadata"]["ownerReferences"]] == [stored["metadata"]["uid"]]
        assert rec.manager.cancel(job.id, "").state == S.JOB_STATE_CANCELLED
        assert not api.secrets  # deleted with the Job that owns it
    finally:
        rec.manager.shutdown()


def test_a_job_whose_secret_cannot_be_made_is_deleted_and_the_start_fails(api):
    backend = _backend(api)
    api.fail_secrets = 1  # e.g. a Role without secrets create
    with pytest.raises(k8s.ApiException) as info:
        backend.start("audit-nosecret", SPEC, credential="lsk_x")
    assert info.value.status == 403
    assert api.job(NS, "audit-nosecret") is None and not api.secrets  # no pod left waiting forever
    assert backend.start("audit-nosecret", SPEC, credential="lsk_x") is not None  # a retry goes through
    (secret,) = api.secrets.values()
    assert secret["stringData"] == {"api-key": "lsk_x"}
    # A repeated start adopts the Job and its Secret: no second Secret, the Job still reads its own.
    assert backend.start("audit-nosecret", SPEC, credential="lsk_x") is not None
    (again,) = api.secrets.values()
    assert again is secret
    (reference,) = [e["valueFrom"]["secretKeyRef"]["name"] for e in _env(api.job(NS, "audit-nosecret"))
                    if "valueFrom" in e]
    assert reference == secret["metadata"]["name"]


def test_the_local_backend_is_the_default():
    settings = config.Settings(service="estimator")
    backend = backends.from_settings(settings, kind="audit", worker_module=MODULE)
    assert isinstance(backend, backends.LocalBackend) and not backend.survives_shutdown
    settings.job_backend = "slurm"
    with pytest.raises(SystemExit):
        backends.from_settings(settings, kind="audit", worker_module=MODULE)


def test_threads_are_not_left_behind(api, tmp_path):
    before = threading.active_count()
    api.script(JobScript([ScriptedPod([_done()])]))
    rec = Recorder(tmp_path, _backend(api))
    rec.wait(rec.manager.start("req-threads", SPEC).id)
    rec.manager.shutdown()
    time.sleep(0.2)
    assert threading.active_count() <= before + 2  # the stand-in's handler threads may linger
