"""StandInKubernetesAPI: a STAND-IN for the Kubernetes API server, for tests only.

No real API server can run on these machines, so this small threaded HTTP server on loopback
implements just the endpoints lambdascope.backends.KubernetesBackend calls, closely enough for
the official `kubernetes` client:

    POST   /apis/batch/v1/namespaces/{ns}/jobs            create (409 AlreadyExists on a name
                                                          that exists)
    GET    /apis/batch/v1/namespaces/{ns}/jobs[/{name}]   list / get
    DELETE /apis/batch/v1/namespaces/{ns}/jobs/{name}     delete (records the DeleteOptions'
                                                          propagationPolicy; removes the pods)
    POST   /api/v1/namespaces/{ns}/secrets                create (409 AlreadyExists); kept in
                                                          `secrets`, dropped with the Job that
                                                          owns it (its ownerReferences' uid)
    GET    /api/v1/namespaces/{ns}/pods?labelSelector=    list pods by label selector
    GET    /api/v1/namespaces/{ns}/pods/{name}/log        a pod's log; follow=true streams it
                                                          (chunked) until the pod ends

It is not a Job controller: the test scripts what happens to each Job it creates (`JobScript`):
which pods appear one after the other, what each prints (JobEvent JSON lines), how each ends
(Succeeded, Failed with an exit code, Evicted with a DisruptionTarget condition, or held
running until the test releases it or the Job is deleted), and the condition the Job ends with.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclasses.dataclass
class ScriptedPod:
    lines: list[str]
    # Succeeded | Failed | Evicted | hold (runs until released or the Job is deleted)
    end: str = "Succeeded"
    exit_code: int = 0
    # Evicted pods: also remove the pod (and its log) afterwards, as a node drain may.
    remove_after: bool = False
    # Hold the pod's end until a follower has received all its lines (makes the test see the
    # backend follow this pod live, not read it after the fact).
    wait_read: bool = True
    pending_s: float = 0.05
    line_delay_s: float = 0.02


@dataclasses.dataclass
class JobScript:
    pods: list[ScriptedPod]
    # The Job's final condition: (type, reason, message), type Complete or Failed.
    condition: tuple[str, str, str] = ("Complete", "CompletionsReached", "")


@dataclasses.dataclass
class _Pod:
    name: str
    namespace: str
    labels: dict
    created: str
    phase: str = "Pending"
    log: list[str] = dataclasses.field(default_factory=list)
    delivered: int = 0
    ended: bool = False
    exit_code: int | None = None
    reason: str = ""
    conditions: list[dict] = dataclasses.field(default_factory=list)
    released: bool = False

    def as_dict(self) -> dict:
        status = {"phase": self.phase, "conditions": self.conditions}
        if self.reason:
            status["reason"] = self.reason
        if self.exit_code is not None:
            status["containerStatuses"] = [{
                "name": "worker", "image": "worker", "imageID": "", "ready": False,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": self.exit_code}}}]
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "labels": self.labels, "creationTimestamp": self.created},
                "spec": {"containers": [{"name": "worker", "image": "worker"}]},
                "status": status}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class StandInKubernetesAPI:
    def __init__(self):
        self.cond = threading.Condition()
        self.jobs: dict[tuple[str, str], dict] = {}
        self.secrets: dict[tuple[str, str], dict] = {}
        self.fail_secrets = 0  # answer this many secret creations with 403 (RBAC missing)
        self.pods: dict[tuple[str, str], _Pod] = {}
        self.scripts: dict[str, JobScript] = {}
        self.default_script: JobScript | None = None
        self.create_attempts: list[str] = []  # names of every POST, conflicts included
        self.deletes: list[tuple[str, str | None]] = []  # (name, propagationPolicy)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every call
        self._pod_serial = 0
        self.unavailable = 0  # answer this many GET calls with 503 (an API server restarting)
        self._closed = False
        self._threads: list[threading.Thread] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                api._handle(self, "GET")

            def do_POST(self):
                api._handle(self, "POST")

            def do_DELETE(self):
                api._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._serve = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandInKubernetesAPI:
        self._serve.start()
        return self

    def __exit__(self, *exc) -> None:
        with self.cond:
            self._closed = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- what the test drives ------------------------------------------------------------------

    def script(self, script: JobScript, name: str | None = None) -> None:
        """The script of the Job named `name`, or of every Job created without one."""
        with self.cond:
            if name is None:
                self.default_script = script
            else:
                self.scripts[name] = script

    def precreate(self, namespace: str, body: dict) -> None:
        """A Job that exists before the backend asks (made by an earlier service)."""
        status, _ = self._create(namespace, body)
        assert status == 201

    def release(self, job: str) -> None:
        """End the held pods of `job` (they then succeed)."""
        with self.cond:
            for pod in self.pods.values():
                if pod.labels.get("lambdascope.dev/job-id") == job:
                    pod.released = True
            self.cond.notify_all()

    def job(self, namespace: str, name: str) -> dict | None:
        with self.cond:
            return self.jobs.get((namespace, name))

    def wait_for(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                assert left > 0, "the stand-in API server waited in vain"
                self.cond.wait(min(left, 0.1))

    # -- the Job "controller": plays a script --------------------------------------------------

    def _play(self, namespace: str, name: str, script: JobScript) -> None:
        key = (namespace, name)
        job = self.jobs[key]
        labels = dict(job["spec"]["template"]["metadata"].get("labels", {}))
        for scripted in script.pods:
            with self.cond:
                if key not in self.jobs or self._closed:
                    return
                self._pod_serial += 1
                pod = _Pod(f"{name}-{self._pod_serial}", namespace, labels, _now())
                self.pods[(namespace, pod.name)] = pod
                self.cond.notify_all()
            time.sleep(scripted.pending_s)
            with self.cond:
                pod.phase = "Running"
                self.cond.notify_all()
            for line in scripted.lines:
                time.sleep(scripted.line_delay_s)
                with self.cond:
                    pod.log.append(line)
                    self.cond.notify_all()
            with self.cond:
                if scripted.wait_read:
                    deadline = time.monotonic() + 10
                    while (pod.delivered < len(pod.log) and time.monotonic() < deadline
                           and not self._closed and key in self.jobs):
                        self.cond.wait(0.05)
                if scripted.end == "hold":
                    while not (pod.released or self._closed or key not in self.jobs):
                        self.cond.wait(0.05)
                    if key not in self.jobs or self._closed:
                        return
                    pod.phase, pod.exit_code = "Succeeded", 0
                elif scripted.end == "Evicted":
                    pod.phase, pod.reason, pod.exit_code = "Failed", "Evicted", 1
                    pod.conditions.append({"type": "DisruptionTarget", "status": "True",
                                           "reason": "EvictionByEvictionAPI",
                                           "lastTransitionTime": _now()})
                else:
                    pod.phase, pod.exit_code = scripted.end, scripted.exit_code
                pod.ended = True
                if scripted.end == "Evicted" and scripted.remove_after:
                    del self.pods[(namespace, pod.name)]
                self.cond.notify_all()
        with self.cond:
            if key not in self.jobs:
                return
            kind, reason, message = script.condition
            job["status"]["conditions"] = [{
                "type": kind, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": _now(), "lastTransitionTime": _now()}]
            self.cond.notify_all()

    # -- HTTP ----------------------------------------------------------------------------------

    def _create(self, namespace: str, body: dict) -> tuple[int, dict]:
        name = body["metadata"]["name"]
        with self.cond:
            self.create_attempts.append(name)
            if (namespace, name) in self.jobs:
                return 409, _status(409, "AlreadyExists",
                                    f'jobs.batch "{name}" already exists', name)
            body = json.loads(json.dumps(body))
            body["metadata"].update(namespace=namespace, uid=f"uid-{name}",
                                    creationTimestamp=_now(), resourceVersion="1")
            body["status"] = {}
            self.jobs[(namespace, name)] = body
            script = self.scripts.get(name, self.default_script)
            self.cond.notify_all()
        if script is not None:
            thread = threading.Thread(target=self._play, args=(namespace, name, script),
                                      daemon=True)
            self._threads.append(thread)
            thread.start()
        return 201, body

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.strip("/").split("/")
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}") if length else {}
        with self.cond:
            self.requests.append((method, url.path))
            if method == "GET" and self.unavailable > 0:
                self.unavailable -= 1
                return _reply(handler, 503, _status(503, "ServiceUnavailable",
                                                    "the stand-in plays unavailable", ""))
        # /apis/batch/v1/namespaces/{ns}/jobs[/{name}]
        if parts[:3] == ["apis", "batch", "v1"] and len(parts) in (6, 7) \
                and parts[3] == "namespaces" and parts[5] == "jobs":
            namespace = parts[4]
            name = parts[6] if len(parts) == 7 else None
            if method == "POST" and name is None:
                return _reply(handler, *self._create(namespace, body))
            if method == "GET" and name is None:
                with self.cond:
                    items = [j for (ns, _), j in self.jobs.items() if ns == namespace
                             and _selects(query.get("labelSelector", ""),
                                          j["metadata"].get("labels", {}))]
                    return _reply(handler, 200, {"apiVersion": "batch/v1", "kind": "JobList",
                                                 "metadata": {}, "items": items})
            if method == "GET":
                with self.cond:
                    job = self.jobs.get((namespace, name))
                    if job is None:
                        return _reply(handler, 404, _status(404, "NotFound",
                                                            f'jobs.batch "{name}" not found', name))
                    return _reply(handler, 200, job)
            if method == "DELETE":
                with self.cond:
                    self.deletes.append((name, body.get("propagationPolicy")))
                    job = self.jobs.pop((namespace, name), None)
                    if job is None:
                        return _reply(handler, 404, _status(404, "NotFound",
                                                            f'jobs.batch "{name}" not found', name))
                    uid = job["metadata"]["uid"]  # the garbage collector: what the Job owned goes
                    for key, secret in list(self.secrets.items()):
                        if any(o.get("uid") == uid for o in secret["metadata"].get("ownerReferences", [])):
                            del self.secrets[key]
                    for key, pod in list(self.pods.items()):
                        if pod.labels.get("lambdascope.dev/job-id") == name:
                            del self.pods[key]
                            pod.ended = True
                    self.cond.notify_all()
                return _reply(handler, 200, {"apiVersion": "v1", "kind": "Status", "metadata": {},
                                             "status": "Success",
                                             "details": {"name": name, "kind": "jobs"}})
        # /api/v1/namespaces/{ns}/secrets
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 5 and parts[4] == "secrets" \
                and method == "POST":
            namespace, name = parts[3], body["metadata"]["name"]
            with self.cond:
                if self.fail_secrets > 0:
                    self.fail_secrets -= 1
                    return _reply(handler, 403, _status(403, "Forbidden", "secrets is forbidden", name))
                if (namespace, name) in self.secrets:
                    return _reply(handler, 409, _status(409, "AlreadyExists",
                                                        f'secrets "{name}" already exists', name))
                body["metadata"].update(namespace=namespace, uid=f"uid-secret-{name}")
                self.secrets[(namespace, name)] = body
                self.cond.notify_all()
            return _reply(handler, 201, body)
        # /api/v1/namespaces/{ns}/pods[/{name}/log]
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5 and parts[4] == "pods" \
                and method == "GET":
            namespace = parts[3]
            if len(parts) == 5:
                with self.cond:
                    items = [p.as_dict() for (ns, _), p in self.pods.items() if ns == namespace
                             and _selects(query.get("labelSelector", ""), p.labels)]
                return _reply(handler, 200, {"apiVersion": "v1", "kind": "PodList",
                                             "metadata": {}, "items": items})
            if len(parts) == 7 and parts[6] == "log":
                return self._log(handler, namespace, parts[5], query)
        _reply(handler, 404, _status(404, "NotFound", f"the stand-in does not serve "
                                                      f"{method} {url.path}", ""))

    def _log(self, handler, namespace: str, name: str, query: dict) -> None:
        with self.cond:
            pod = self.pods.get((namespace, name))
            if pod is None:
                return _reply(handler, 404, _status(404, "NotFound",
                                                    f'pods "{name}" not found', name))
            if pod.phase == "Pending":
                return _reply(handler, 400, _status(
                    400, "BadRequest", f'container "worker" in pod "{name}" is waiting to start: '
                                       "ContainerCreating", name))
        follow = query.get("follow") == "true"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        sent = 0
        try:
            while True:
                with self.cond:
                    lines = pod.log[sent:]
                    if not lines:
                        if not follow or pod.ended or self._closed:
                            break
                        self.cond.wait(0.05)
                        continue
                for line in lines:
                    data = (line + "\n").encode()
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    handler.wfile.flush()
                sent += len(lines)
                with self.cond:
                    pod.delivered = max(pod.delivered, sent)
                    self.cond.notify_all()
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True


def _selects(selector: str, labels: dict) -> bool:
    for item in filter(None, selector.split(",")):
        key, _, value = item.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _status(code: int, reason: str, message: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": {"name": name, "kind": "jobs"},
            "code": code}


def _reply(handler: BaseHTTPRequestHandler, code: int, doc: dict) -> None:
    data = json.dumps(doc).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
