"""Where a job's worker runs: the execution backends behind lambdascope.jobs.JobManager.

One interface, two implementations:

- `LocalBackend` (LAMBDASCOPE_JOB_BACKEND=local, the default): a worker process on this
  machine, started fresh with `python -m <worker_module>`, the job as JSON on its stdin.
- `KubernetesBackend` (LAMBDASCOPE_JOB_BACKEND=kubernetes): one batch/v1 Job per job, named
  after the job id, running the worker image; see `build_job` for the Job itself.

Either way the worker speaks the protocol of lambdascope.worker: JobEvent JSON lines on stdout
(for Kubernetes: the pod's log), exit code 0 / 1 (infrastructure) / 2 (bad input). The manager
sees only this module's types:

    backend.start(job_id, spec_json, credential) -> Execution    create the job's worker (idempotent)
    backend.adopt(job_id) -> Execution | None          the worker a previous service left
                                                       running, if the backend can tell
    execution.run(on_progress) -> Outcome              follow it to its end
    execution.cancel()                                 end it for good (the user cancelled)
    execution.detach()                                 the service stops: stop following; with
                                                       `backend.survives_shutdown` the worker
                                                       keeps running, else it is stopped
"""
from __future__ import annotations

import abc
import dataclasses
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable

from google.protobuf import json_format

from lambdascope import config, job_kinds
from lambdascope.config import Settings
from lambdascope.v1 import jobs_pb2

log = logging.getLogger("lambdascope.backends")

State = jobs_pb2.JobState
TERMINAL = {State.JOB_STATE_SUCCEEDED, State.JOB_STATE_FAILED, State.JOB_STATE_CANCELLED,
            State.JOB_STATE_INTERRUPTED}
# Exit codes of lambdascope.worker (not imported: that module is the worker's side).
EXIT_BAD_INPUT = 2
JOB_ENV = "LAMBDASCOPE_JOB"

ProgressCallback = Callable[[jobs_pb2.JobEvent], None]


@dataclasses.dataclass
class Outcome:
    """How an execution ended: SUCCEEDED (with the worker's final event) or FAILED (message for
    the user). `final` is the worker's last, terminal event when it printed one."""
    state: int
    message: str
    final: jobs_pb2.JobEvent | None = None
    detail: dict = dataclasses.field(default_factory=dict)  # for the log: exit code, reason
    # The worker failed for a reason other than its input (killed, crashed) and the backend has
    # not retried it itself: the job manager may start it again.
    retryable: bool = False


class Execution(abc.ABC):
    job_id: str

    @abc.abstractmethod
    def run(self, on_progress: ProgressCallback) -> Outcome:
        """Follow the worker until it ends: progress events go to `on_progress`."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop the worker for good; `run` returns soon after (its outcome is then moot)."""

    def detach(self) -> None:
        """The service shuts down. Default: stop the worker like cancel."""
        self.cancel()


class Backend(abc.ABC):
    name: str = ""
    # True: workers outlive the service (a service shutdown leaves them running, and a new
    # service adopts them); False: they are the service's children and end with it.
    survives_shutdown: bool = False

    @abc.abstractmethod
    def start(self, job_id: str, spec_json: str, credential: str = "") -> Execution:
        """Start the job's worker; starting one that already runs adopts it."""

    def adopt(self, job_id: str) -> Execution | None:
        """The worker a previous instance of the service started for this job, if it still
        exists (finished or not); None when there is none or the backend cannot tell."""
        return None


def parse_event(raw: bytes | str, job_id: str) -> jobs_pb2.JobEvent | None:
    """One line of worker output as a JobEvent; None (logged) for anything else."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not raw.strip():
        return None
    try:
        return json_format.Parse(raw, jobs_pb2.JobEvent())
    except json_format.ParseError:
        log.warning("unreadable worker output", extra={"job_id": job_id, "line": raw[:200]})
        return None


def follow_lines(lines: Iterable[bytes | str], job_id: str,
                 on_progress: ProgressCallback) -> jobs_pb2.JobEvent | None:
    """Apply the worker's progress events; return its final (terminal) event, if any. The same
    reader for a local worker's stdout and a pod's log."""
    final = None
    for raw in lines:
        event = parse_event(raw, job_id)
        if event is None:
            continue
        if event.state in TERMINAL:
            final = event
            continue
        on_progress(event)
    return final


def from_settings(settings: Settings, *, kind: str, worker_module: str) -> Backend:
    """The backend LAMBDASCOPE_JOB_BACKEND names."""
    name = (settings.job_backend or "local").lower()
    if name == "local":
        return LocalBackend(settings, kind=kind, worker_module=worker_module)
    if name == "kubernetes":
        return KubernetesBackend(settings, kind=kind, worker_module=worker_module)
    raise SystemExit(f"LAMBDASCOPE_JOB_BACKEND={settings.job_backend!r}: expected local or "
                     "kubernetes")


# Variables of a service's environment a local worker does not inherit (libpq's password).
WITHHELD_FROM_WORKERS = {"PGPASSWORD", "PGPASSFILE", "LAMBDASCOPE_API_KEY"}


# -- local: a worker process -------------------------------------------------------------------

class LocalBackend(Backend):
    name = "local"

    def __init__(self, settings: Settings, *, kind: str, worker_module: str):
        self.settings, self.kind, self.worker_module = settings, kind, worker_module

    def start(self, job_id: str, spec_json: str, credential: str = "") -> Execution:
        # The service's environment, less what a worker must not hold (the database password):
        # the worker's only key is the job's credential.
        env = {k: v for k, v in os.environ.items() if k not in WITHHELD_FROM_WORKERS}
        env.update(config.to_env(self.settings))
        env["LAMBDASCOPE_PARENT_PID"] = str(os.getpid())  # the worker dies with this service
        env.pop(JOB_ENV, None)  # the job comes on stdin
        proc = subprocess.Popen(
            [sys.executable, "-m", self.worker_module], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, start_new_session=True)
        log.info("job started", extra={"job_id": job_id, "pid": proc.pid})
        return LocalExecution(job_id, proc, json.dumps(
            {"job_id": job_id, "kind": self.kind, "spec_json": spec_json, "api_key": credential}))


class LocalExecution(Execution):
    def __init__(self, job_id: str, proc: subprocess.Popen, job_json: str):
        self.job_id, self.proc, self._job_json = job_id, proc, job_json

    def run(self, on_progress: ProgressCallback) -> Outcome:
        try:
            self.proc.stdin.write(self._job_json.encode())
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        final = follow_lines(self.proc.stdout, self.job_id, on_progress)
        returncode = self.proc.wait()
        detail = {"returncode": returncode}
        if returncode == 0 and final is not None and final.state == State.JOB_STATE_SUCCEEDED:
            return Outcome(State.JOB_STATE_SUCCEEDED, final.message, final, detail)
        reason = final.message if final is not None and final.message else (
            f"the worker process ended with exit code {returncode} without a result"
            + (f" (killed by signal {-returncode}; out of memory?)" if returncode < 0 else ""))
        return Outcome(State.JOB_STATE_FAILED, reason, final, detail, retryable=returncode != EXIT_BAD_INPUT)

    def cancel(self) -> None:
        terminate(self.proc)


def terminate(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the worker's process group, SIGKILL it if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return

    def reap() -> None:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    threading.Thread(target=reap, daemon=True).start()


# -- Kubernetes: one batch/v1 Job per job ------------------------------------------------------

WORKER_CONTAINER = "worker"
JOB_ID_LABEL = "lambdascope.dev/job-id"
KIND_LABEL = "lambdascope.dev/kind"
WORKER_LABELS = {"app.kubernetes.io/name": "lambdascope", "app.kubernetes.io/component": "worker",
                 "app.kubernetes.io/part-of": "lambdascope"}
GPU_RESOURCE = "nvidia.com/gpu"
# The job's credential reaches the pod from a Secret made for each Job (build_secret), as this
# variable: a pod's literal env is readable by anyone who may read Jobs or Pods (the "view" role),
# a Secret only by who may read Secrets.
CREDENTIAL_ENV = "LAMBDASCOPE_JOB_API_KEY"
CREDENTIAL_KEY = "api-key"
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def job_name(job_id: str) -> str:
    """The Kubernetes name of a job's Job: the id as a DNS label (ids are already lower-case
    letters, digits and dashes; anything else becomes a dash)."""
    name = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")[:63].rstrip("-")
    if not name:
        raise ValueError(f"job id {job_id!r} gives no Kubernetes name")
    return name


def namespace_of(settings: Settings) -> str:
    """LAMBDASCOPE_JOB_NAMESPACE, else the namespace of the pod we run in, else "default"."""
    if settings.job_namespace:
        return settings.job_namespace
    try:
        with open(NAMESPACE_FILE) as f:
            found = f.read().strip()
    except OSError:
        found = ""
    return found or "default"


def parse_node_selector(text: str) -> dict[str, str]:
    """`key=value[,key=value...]` (LAMBDASCOPE_JOB_NODE_SELECTOR)."""
    selector = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"LAMBDASCOPE_JOB_NODE_SELECTOR: {item!r} is not key=value")
        selector[key.strip()] = value.strip()
    return selector


def parse_tolerations(text: str) -> list:
    """`key[=value]:Effect[,...]` (LAMBDASCOPE_JOB_TOLERATIONS): with a value the toleration
    matches that value (operator Equal), without it any value (Exists)."""
    from kubernetes import client as k8s

    tolerations = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        spec, sep, effect = item.rpartition(":")
        if not sep or effect not in TOLERATION_EFFECTS or not spec:
            raise ValueError(f"LAMBDASCOPE_JOB_TOLERATIONS: {item!r} is not key[=value]:Effect "
                             f"with Effect one of {', '.join(TOLERATION_EFFECTS)}")
        key, has_value, value = spec.partition("=")
        tolerations.append(k8s.V1Toleration(
            key=key, operator="Equal" if has_value else "Exists",
            value=value if has_value else None, effect=effect))
    return tolerations


def build_job(job_id: str, kind: str, spec_json: str, settings: Settings, *,
              worker_module: str | None = None, credential: str = "", secret: str = ""):
    """The batch/v1 Job that runs one job (a typed kubernetes.client.V1Job; no API calls).

    The pod runs the worker image (ENTRYPOINT `python -m`) with the worker module as its only
    argument; the service's settings as LAMBDASCOPE_* variables (config.to_env: no admin key, no
    storage or database credentials), and the job itself as JSON in LAMBDASCOPE_JOB. Its
    credential, the only key the worker holds (bound to the job's team, revoked when the job
    ends), is not in the Job: the pod reads it as CREDENTIAL_ENV from the Secret named
    ``secret`` (`credential_secret`, made by `build_secret`), so whoever may read Jobs and Pods
    in the namespace (the "view" role) does not see it."""
    from kubernetes import client as k8s

    if not settings.job_image:
        raise ValueError("LAMBDASCOPE_JOB_IMAGE is not set: the Kubernetes job backend needs "
                         "the worker image")
    module = worker_module or job_kinds.worker_module(kind)
    name = job_name(job_id)
    labels = {**WORKER_LABELS, JOB_ID_LABEL: name, KIND_LABEL: job_name(kind)}

    env_values = config.to_env(settings)
    # One job per pod: the worker's torch threads are the pod's, not shared with other jobs.
    env_values[config.ENV_PREFIX + "MAX_CONCURRENT_JOBS"] = "1"
    env = [k8s.V1EnvVar(name=key, value=value) for key, value in sorted(env_values.items())]
    env.append(k8s.V1EnvVar(name=JOB_ENV, value=json.dumps(
        {"job_id": job_id, "kind": kind, "spec_json": spec_json})))
    if credential:
        env.append(k8s.V1EnvVar(name=CREDENTIAL_ENV, value_from=k8s.V1EnvVarSource(
            secret_key_ref=k8s.V1SecretKeySelector(name=secret or credential_secret(job_id), key=CREDENTIAL_KEY))))

    resources = k8s.V1ResourceRequirements(
        limits={GPU_RESOURCE: str(settings.job_gpu)} if settings.job_gpu > 0 else None)
    container = k8s.V1Container(
        name=WORKER_CONTAINER, image=settings.job_image, image_pull_policy="IfNotPresent",
        args=[module], env=env, resources=resources,
        security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False, read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"])),
        volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
                       k8s.V1VolumeMount(name="data", mount_path=str(settings.data_dir))])
    volumes = [k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
               k8s.V1Volume(name="data", empty_dir=k8s.V1EmptyDirVolumeSource())]
    if settings.job_tls_secret:  # the worker reaches the registry over TLS, as its service does
        if not settings.tls_ca.startswith("/"):
            raise ValueError("LAMBDASCOPE_JOB_TLS_SECRET needs LAMBDASCOPE_TLS_CA as an absolute "
                             "path: the Secret is mounted at its directory")
        container.volume_mounts.append(k8s.V1VolumeMount(
            name="tls", mount_path=os.path.dirname(settings.tls_ca), read_only=True))
        volumes.append(k8s.V1Volume(name="tls", secret=k8s.V1SecretVolumeSource(
            secret_name=settings.job_tls_secret)))
    pod = k8s.V1PodSpec(
        restart_policy="Never", containers=[container], enable_service_links=False,
        automount_service_account_token=False,  # the worker never calls the Kubernetes API
        node_selector=parse_node_selector(settings.job_node_selector) or None,
        tolerations=parse_tolerations(settings.job_tolerations) or None,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=10001, run_as_group=10001, fs_group=10001,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
        volumes=volumes)
    failure_policy = k8s.V1PodFailurePolicy(rules=[
        # Bad input fails the same way every time: no retry.
        k8s.V1PodFailurePolicyRule(
            action="FailJob", on_exit_codes=k8s.V1PodFailurePolicyOnExitCodesRequirement(
                container_name=WORKER_CONTAINER, operator="In", values=[EXIT_BAD_INPUT])),
        # Evictions, preemptions, node drains: retried without counting against backoffLimit.
        k8s.V1PodFailurePolicyRule(action="Ignore", on_pod_conditions=[
            k8s.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")]),
    ])
    return k8s.V1Job(
        api_version="batch/v1", kind="Job",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace_of(settings), labels=labels),
        spec=k8s.V1JobSpec(
            backoff_limit=settings.job_backoff_limit,
            active_deadline_seconds=settings.job_active_deadline_seconds,
            ttl_seconds_after_finished=settings.job_ttl_seconds,
            pod_failure_policy=failure_policy,
            template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=pod)))


def _api_status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


def credential_secret(job_id: str) -> str:
    """A fresh name for the Secret of one Job's credential: the Job's name and a random suffix,
    so that a Job made again under the same name (a job re-run after its Job was deleted) never
    meets the Secret of the one before, which the garbage collector may not have deleted yet."""
    return f"{job_name(job_id)[:54]}-{secrets.token_hex(4)}"


def build_secret(job_id: str, credential: str, settings: Settings, owner_uid: str, name: str):
    """The Secret ``name`` that holds a job's credential for its pod (a typed
    kubernetes.client.V1Secret): owned by the job's Job (so Kubernetes deletes it with the Job),
    immutable."""
    from kubernetes import client as k8s

    job = job_name(job_id)
    owner = k8s.V1OwnerReference(api_version="batch/v1", kind="Job", name=job, uid=owner_uid)
    return k8s.V1Secret(
        api_version="v1", kind="Secret", type="Opaque", immutable=True,
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace_of(settings),
                                  labels={**WORKER_LABELS, JOB_ID_LABEL: job}, owner_references=[owner]),
        string_data={CREDENTIAL_KEY: credential})


def _credential_reference(job) -> str:
    """The name of the Secret a Job's worker reads its credential from ("" when it reads none):
    the one this start made, or, for a Job adopted from an earlier start, that start's."""
    for env in job.spec.template.spec.containers[0].env or []:
        if env.name == CREDENTIAL_ENV and env.value_from is not None and env.value_from.secret_key_ref:
            return env.value_from.secret_key_ref.name
    return ""


class KubernetesBackend(Backend):
    """Each job is a batch/v1 Job in `namespace_of(settings)`, with a Secret for its credential.
    Needs the Role in deploy/k8s/base/rbac.yaml: jobs create/get/delete, secrets create, pods
    list, pods/log get."""

    name = "kubernetes"
    survives_shutdown = True

    def __init__(self, settings: Settings, *, kind: str, worker_module: str,
                 api_client=None, poll_interval: float = 2.0, max_api_failures: int = 150):
        from kubernetes import client as k8s

        if api_client is None:
            from kubernetes import config as kube_config

            try:
                kube_config.load_incluster_config()
            except kube_config.ConfigException:
                kube_config.load_kube_config()
            api_client = k8s.ApiClient()
        self.settings, self.kind, self.worker_module = settings, kind, worker_module
        self.namespace = namespace_of(settings)
        self.batch = k8s.BatchV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        # Seconds between looks at a Job; consecutive failed looks tolerated (API restarts).
        self.poll_interval, self.max_api_failures = poll_interval, max_api_failures
        build_job("check", kind, "{}", settings, worker_module=worker_module)  # settings parse

    def start(self, job_id: str, spec_json: str, credential: str = "") -> Execution:
        from kubernetes.client.rest import ApiException

        job = build_job(job_id, self.kind, spec_json, self.settings, worker_module=self.worker_module,
                        credential=credential, secret=credential_secret(job_id))
        try:
            created = self.batch.create_namespaced_job(self.namespace, job)
            log.info("kubernetes job created", extra={"job_id": job_id,
                                                      "k8s_job": job.metadata.name})
        except ApiException as exc:
            if exc.status != 409:
                raise
            # Already there (a retried start, or a service restart mid-create): adopt it.
            log.info("kubernetes job exists; adopting it", extra={"job_id": job_id})
            created = self.batch.read_namespaced_job(job.metadata.name, self.namespace)
        secret = _credential_reference(created)
        if credential and secret:
            self._put_credential(job_id, credential, created.metadata.uid, secret)
        return KubernetesExecution(self, job_id)

    def _put_credential(self, job_id: str, credential: str, job_uid: str, secret: str) -> None:
        """The Secret the Job's pod reads its credential from, made after the Job so that the Job
        owns it (until it exists the pod waits in CreateContainerConfigError, which the kubelet
        retries). If it cannot be made the Job is deleted: its pod could never start."""
        from kubernetes.client.rest import ApiException

        try:
            self.core.create_namespaced_secret(
                self.namespace, build_secret(job_id, credential, self.settings, job_uid, secret))
        except ApiException as exc:
            if exc.status == 409:  # made by the start this one retries
                return
            self.batch.delete_namespaced_job(job_name(job_id), self.namespace,
                                             propagation_policy="Background")
            raise

    def adopt(self, job_id: str) -> Execution | None:
        from kubernetes.client.rest import ApiException

        try:
            self.batch.read_namespaced_job(job_name(job_id), self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return KubernetesExecution(self, job_id)


def _condition(job, kind: str):
    for cond in (job.status.conditions or []) if job.status else []:
        if cond.type == kind and cond.status == "True":
            return cond
    return None


def _created(pod) -> tuple:
    stamp = pod.metadata.creation_timestamp
    return (stamp.timestamp() if stamp is not None else 0.0, pod.metadata.name)


class KubernetesExecution(Execution):
    """Follows a Job: its pods' logs in creation order (a pod evicted mid-run is followed by
    the one the Job creates next), until the Job has a Complete or Failed condition."""

    def __init__(self, backend: KubernetesBackend, job_id: str):
        self.backend, self.job_id, self.name = backend, job_id, job_name(job_id)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stream = None
        self._lines_seen: dict[str, int] = {}  # pod -> log lines already applied
        self._done_pods: set[str] = set()  # pods whose log was read to their end
        self._final: jobs_pb2.JobEvent | None = None  # the last terminal event a pod printed

    # -- following --------------------------------------------------------------------------

    def run(self, on_progress: ProgressCallback) -> Outcome:
        import urllib3
        from kubernetes.client.rest import ApiException

        failures = 0
        while not self._stop.is_set():
            try:
                outcome = self._look(on_progress)
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                # The API server restarting or overloaded is no reason to lose the job.
                status = getattr(exc, "status", None)
                if status is not None and status not in TRANSIENT_STATUSES:
                    raise
                failures += 1
                if failures > self.backend.max_api_failures:
                    raise
                log.warning("kubernetes API call failed; retrying",
                            extra={"job_id": self.job_id, "error": str(exc)[:200]})
            else:
                if outcome is not None:
                    return outcome
                failures = 0
            self._stop.wait(self.backend.poll_interval)
        return Outcome(State.JOB_STATE_FAILED, "stopped following the Kubernetes Job",
                       self._final, {"reason": "Detached"})

    def _look(self, on_progress: ProgressCallback) -> Outcome | None:
        """One round: the Job's state, the new log lines of its pods; the outcome once it ended."""
        from kubernetes.client.rest import ApiException

        b = self.backend
        try:
            job = b.batch.read_namespaced_job(self.name, b.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return Outcome(State.JOB_STATE_FAILED,
                           f"the Kubernetes Job {self.name} was deleted while the job ran",
                           self._final, {"reason": "NotFound"})
        finished = _condition(job, "Complete") or _condition(job, "Failed")
        self._follow_pods(on_progress)
        if finished is None:
            return None
        # Read what the last pods printed after our last look, then decide.
        self._follow_pods(on_progress)
        return self._verdict(job, finished, self._final)

    def _follow_pods(self, on_progress: ProgressCallback) -> None:
        """Read every pod of the Job not read to its end yet, oldest first; the running one is
        followed live until its log ends. The last terminal event seen becomes `_final`."""
        b = self.backend
        pods = b.core.list_namespaced_pod(
            b.namespace, label_selector=f"{JOB_ID_LABEL}={self.name}").items
        for pod in sorted(pods, key=_created):
            name = pod.metadata.name
            phase = pod.status.phase if pod.status else None
            if name in self._done_pods or phase in (None, "Pending", "Unknown"):
                continue
            if self._stop.is_set():
                break
            event = self._read_log(name, on_progress)
            if event is not None:
                self._final = event
            if phase in ("Succeeded", "Failed"):
                self._done_pods.add(name)

    def _read_log(self, pod: str, on_progress: ProgressCallback) -> jobs_pb2.JobEvent | None:
        from kubernetes.client.rest import ApiException

        b = self.backend
        try:
            stream = b.core.read_namespaced_pod_log(
                pod, b.namespace, container=WORKER_CONTAINER, follow=True,
                _preload_content=False)
        except ApiException as exc:
            if exc.status in (400, 404):  # not started yet / gone with its log
                if exc.status == 404:
                    self._done_pods.add(pod)
                return None
            raise
        with self._lock:
            self._stream = stream
        if self._stop.is_set():
            stream.release_conn()
            return None
        skip = self._lines_seen.get(pod, 0)
        seen = 0

        def fresh_lines():
            nonlocal seen
            try:
                for raw in _lines(stream):
                    seen += 1
                    if seen > skip:
                        yield raw
            except Exception:  # noqa: BLE001 - a dropped stream is read again next round
                if not self._stop.is_set():
                    log.warning("pod log stream broke", extra={"job_id": self.job_id,
                                                               "pod": pod}, exc_info=True)
            finally:
                self._lines_seen[pod] = max(skip, seen)

        try:
            return follow_lines(fresh_lines(), self.job_id, on_progress)
        finally:
            with self._lock:
                self._stream = None
            stream.release_conn()

    def _verdict(self, job, finished, final: jobs_pb2.JobEvent | None) -> Outcome:
        detail = {"reason": finished.reason or finished.type}
        if finished.type == "Complete":
            if final is not None and final.state == State.JOB_STATE_SUCCEEDED:
                return Outcome(State.JOB_STATE_SUCCEEDED, final.message, final, detail)
            return Outcome(State.JOB_STATE_FAILED,
                           f"the Kubernetes Job {self.name} completed, but its worker's result "
                           "could not be read from the pod log", final, detail)
        worker_said = final.message if final is not None and final.message else ""
        reason = finished.reason or ""
        if reason == "PodFailurePolicy":  # the worker exited EXIT_BAD_INPUT
            return Outcome(State.JOB_STATE_FAILED, worker_said or (
                f"the job's input was refused (worker exit code {EXIT_BAD_INPUT}): "
                f"{finished.message or ''}").strip(), final, detail)
        if reason == "BackoffLimitExceeded":
            message = (f"the job's worker pod failed {self.backend.settings.job_backoff_limit + 1}"
                       " times (infrastructure: backoffLimit reached)")
        elif reason == "DeadlineExceeded":
            message = ("the job ran longer than its limit of "
                       f"{job.spec.active_deadline_seconds}s (activeDeadlineSeconds) and was "
                       "stopped")
        else:
            message = f"the Kubernetes Job {self.name} failed ({reason or 'no reason given'})"
        if finished.message:
            message += f"; Kubernetes: {finished.message}"
        if worker_said:
            message += f"; last worker message: {worker_said}"
        return Outcome(State.JOB_STATE_FAILED, message, final, detail)

    # -- ending --------------------------------------------------------------------------------

    def _stop_following(self) -> None:
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            try:
                stream.shutdown() if hasattr(stream, "shutdown") else stream.close()
            except Exception:  # noqa: BLE001
                pass

    def cancel(self) -> None:
        """Delete the Job; Foreground propagation removes its pods first."""
        from kubernetes import client as k8s
        from kubernetes.client.rest import ApiException

        b = self.backend
        try:
            b.batch.delete_namespaced_job(
                self.name, b.namespace,
                body=k8s.V1DeleteOptions(propagation_policy="Foreground"))
        except ApiException as exc:
            if exc.status != 404:
                raise
        self._stop_following()

    def detach(self) -> None:
        """The service stops: the Job keeps running; the next service adopts it."""
        self._stop_following()


def _lines(stream) -> Iterable[bytes]:
    """Lines of a streamed HTTP response (a pod log with follow=True), as they arrive."""
    buffer = b""
    for chunk in stream.stream(amt=4096, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line
    if buffer:
        yield buffer
