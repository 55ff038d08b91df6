"""An audit's snapshots (lambdascope.llc.snapshots) kept by the registry as the job's own files
(Registry.PutJobState), so a retried worker continues the estimate where the last one stopped.

At most one snapshot per `every_seconds` is written (the first after that long: short audits
write none); any snapshot resumes to the same result, so skipping some only costs the work
since the last one. A snapshot that cannot be written is logged and the audit goes on.
"""
from __future__ import annotations

import logging
import pathlib
import tempfile
import time

import grpc

from lambdascope import tensorfile
from lambdascope.client import Client

log = logging.getLogger("lambdascope.estimator.snapshots")


class JobSnapshots:
    def __init__(self, client: Client, name: str, every_seconds: float):
        self.client, self.name, self.every = client, f"{name}.safetensors", every_seconds
        self._last = time.monotonic()

    def load(self) -> dict | None:
        with tempfile.TemporaryDirectory(prefix="snapshot-") as tmp:
            path = self.client.get_job_state(self.name, pathlib.Path(tmp) / self.name)
            return tensorfile.read(path) if path is not None else None

    def save(self, state: dict) -> None:
        if time.monotonic() - self._last < self.every:
            return
        with tempfile.TemporaryDirectory(prefix="snapshot-") as tmp:
            path = pathlib.Path(tmp) / self.name
            tensorfile.write(path, state)
            try:
                self.client.put_job_state(self.name, path)
            except grpc.RpcError as exc:
                log.warning("could not save a snapshot; the audit goes on without it",
                            extra={"code": exc.code().name, "detail": exc.details()})
                return
        self._last = time.monotonic()
