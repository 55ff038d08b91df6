"""Run the whole platform on this machine: three service processes on loopback ports.

Used by `lambdascope up`, `make run` and the integration tests. Each service is its own
process (the same entry points the Kubernetes manifests run) and finds the others through
LAMBDASCOPE_*_ADDRESS, exactly as in a cluster. On its first start on a data dir the platform
makes an admin key, kept in `<data dir>/admin.key` (mode 0600) and installed by the registry;
commands on this machine find it through discovery (lambdascope.discovery.admin_key).
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc

from lambdascope import auth, discovery
from lambdascope import tls as lambdascope_tls
from lambdascope.tls import ClientTLS
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = ("registry", "trainer", "estimator")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalPlatform:
    def __init__(self, data_dir: str | os.PathLike, host: str = "127.0.0.1",
                 extra_env: dict[str, str] | None = None,
                 services: tuple[str, ...] = SERVICES,
                 service_env: dict[str, dict[str, str]] | None = None):
        """extra_env: variables of every service; service_env: of one service (its own
        database URL, say), over those."""
        self.data_dir = pathlib.Path(data_dir).expanduser().resolve()
        self.host = host
        self.extra_env = extra_env or {}
        self.service_env = service_env or {}
        self.services = services
        self.endpoints: dict[str, str] = {}
        self.metrics: dict[str, str] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.api_key = ""  # the admin key, once started

    def start(self, timeout: float = 60.0) -> dict[str, str]:
        """Start every service; return once all report SERVING on their health service."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        self.api_key = _admin_key(self.data_dir)
        self.endpoints = {name: f"{self.host}:{free_port(self.host)}" for name in self.services}
        try:
            for name in self.services:
                self._spawn(name)
            for name in self.services:
                self._wait_ready(name, timeout)
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def client(self, **options):
        """A Client of this platform, with its admin key unless `api_key` is given
        (lambdascope.client.Client options)."""
        from lambdascope.client import Client

        tls = ClientTLS.from_env({**os.environ, **self.extra_env})
        return Client(**{**self.endpoints, "api_key": self.api_key, "tls": tls, **options})

    def restart(self, name: str, timeout: float = 60.0) -> int | None:
        """Stop one service gracefully (if it still runs) and start it again on the same port;
        the exit code of the stopped process, None when there was none."""
        proc = self.procs.pop(name, None)
        code = None
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout)
        self._spawn(name)
        self._wait_ready(name, timeout)
        return code

    def _spawn(self, name: str) -> None:
        env = {**os.environ, **self.extra_env, **self.service_env.get(name, {}),
               "LAMBDASCOPE_DATA_DIR": str(self.data_dir),
               "LAMBDASCOPE_HOST": self.host}
        env.update({f"LAMBDASCOPE_{n.upper()}_ADDRESS": a for n, a in self.endpoints.items()})
        env.pop("LAMBDASCOPE_API_KEY", None)  # services act for their callers, never as the user
        env["LAMBDASCOPE_ADMIN_KEY"] = self.api_key if name == "registry" else ""
        port = self.endpoints[name].rpartition(":")[2]
        with open(self.data_dir / "logs" / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}", "--port", port, "--metrics-port", "0"],
                stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True)

    def _wait_ready(self, name: str, timeout: float) -> None:
        ready = _read_line(self.procs[name], timeout)
        if ready is None:
            raise RuntimeError(f"the {name} service did not start; see "
                               f"{self.data_dir / 'logs' / (name + '.log')}")
        self.metrics[name] = json.loads(ready)["metrics"]
        wait_serving(self.endpoints[name], timeout,
                     ClientTLS.from_env({**os.environ, **self.extra_env}))

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM every service (graceful: jobs are marked), wait, then kill stragglers."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait()
        self.procs.clear()
        return codes

    def __enter__(self) -> LocalPlatform:
        # The services run in sessions of their own (a Ctrl-C in a terminal is the platform's to
        # pass on), so they outlive a script killed by SIGTERM unless it unwinds: within the
        # `with`, SIGTERM exits the script through __exit__ (when it would have killed it).
        self._previous_sigterm = None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _admin_key(data_dir: pathlib.Path) -> str:
    """The platform's admin key: read from its file, or made and written there (0600, atomically)
    on the first start."""
    path = discovery.admin_key_file(data_dir)
    key = discovery.admin_key(data_dir)
    if auth.split_key(key) is not None:
        return key
    _, key = auth.new_key()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    os.replace(tmp, path)
    return key


def _read_line(proc: subprocess.Popen, timeout: float) -> bytes | None:
    """The first stdout line of `proc` (its readiness announcement), or None."""
    box: list[bytes] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box and box[0] else None


def wait_serving(address: str, timeout: float = 30.0, tls: ClientTLS | None = None) -> None:
    deadline = time.monotonic() + timeout
    with lambdascope_tls.channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address} is not SERVING after {timeout:.0f} s")
            time.sleep(0.1)
