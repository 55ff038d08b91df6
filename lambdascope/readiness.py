"""Health that follows the dependencies: a service reports NOT_SERVING (grpc.health.v1) while
its database or object store does not answer, and SERVING again once they do.

Readiness (the empty service name, and each hosted service) follows the dependencies, so a
load balancer or the kubelet's readiness probe sends no calls to a service that would fail
them. Liveness ("liveness") stays SERVING while the process runs: restarting a service whose
database is down would not bring the database back.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import sqlalchemy as sa
from grpc_health.v1 import health, health_pb2

log = logging.getLogger("lambdascope.readiness")

LIVENESS = "liveness"
Probe = Callable[[], None]  # returns when the dependency answers, raises otherwise


def database(engine: sa.Engine) -> Probe:
    def probe() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    return probe


class Watch:
    """Runs the probes every `interval` seconds and sets the services' health from them."""

    def __init__(self, servicer: health.HealthServicer, names: list[str],
                 probes: dict[str, Probe], interval: float):
        self.servicer, self.names, self.probes, self.interval = servicer, names, probes, interval
        self.down: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="health-watch", daemon=True)

    def start(self) -> "Watch":
        self.servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self.check()
        if self.probes and self.interval > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> None:
        """Probe every dependency once and publish the result."""
        down = {}
        for name, probe in self.probes.items():
            try:
                probe()
            except Exception as exc:  # noqa: BLE001 - any failure means "not answering"
                down[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        for name in set(down) - set(self.down):
            log.warning("dependency down: not serving until it answers",
                        extra={"dependency": name, "error": down[name]})
        for name in set(self.down) - set(down):
            log.info("dependency back: serving again", extra={"dependency": name})
        self.down = down
        status = (health_pb2.HealthCheckResponse.NOT_SERVING if down
                  else health_pb2.HealthCheckResponse.SERVING)
        for name in self.names:
            self.servicer.set(name, status)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()
