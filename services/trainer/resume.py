"""A training job's resume state, so a restarted trainer (or a retried Kubernetes pod)
continues instead of starting over.

It is kept by the registry as the job's own files (Registry.PutJobState, readable by the job's
credential alone; stored under `jobstate/<team>/<job id>/`), so it outlives a worker pod's disk
and the worker needs no storage credentials:

- `state.safetensors`: the last checkpoint's `TrainState` (lambdascope.tensorfile: tensors as
  safetensors entries, the rest as JSON in its metadata; no pickle).
- `job.json`: facts fixed at the job's start (the registered training-data id).

Each file is replaced whole (verified against its sha256, then renamed into place or PUT in
one piece), so a crash mid-write leaves the previous state, never a half-written one.
"""

from __future__ import annotations

import json
import pathlib
import tempfile

from lambdascope import tensorfile
from lambdascope.client import Client
from lambdascope.training.loop import TrainState

STATE_FILE = "state.safetensors"
JOB_FILE = "job.json"


class ResumeStore:
    """One training job's resume state, kept by the registry for the job (`client` calls with
    the job's credential)."""

    def __init__(self, client: Client):
        self.client = client

    def save_state(self, state: TrainState, versions: list[str]) -> None:
        """Replace the job's state with `state`; `versions` are the model versions registered
        up to and including state.step."""
        with tempfile.TemporaryDirectory(prefix="resume-") as tmp:
            path = pathlib.Path(tmp) / STATE_FILE
            write_state(path, state, versions)
            self._put(STATE_FILE, path)

    def load_state(self) -> tuple[TrainState, list[str]] | None:
        """The saved state and its registered versions, or None when the job has none yet."""
        with tempfile.TemporaryDirectory(prefix="resume-") as tmp:
            path = self._get(STATE_FILE, pathlib.Path(tmp))
            return read_state(path) if path is not None else None

    def save_job(self, facts: dict[str, str]) -> None:
        with tempfile.TemporaryDirectory(prefix="resume-") as tmp:
            path = pathlib.Path(tmp) / JOB_FILE
            path.write_text(json.dumps(facts))
            self._put(JOB_FILE, path)

    def load_job(self) -> dict[str, str]:
        with tempfile.TemporaryDirectory(prefix="resume-") as tmp:
            path = self._get(JOB_FILE, pathlib.Path(tmp))
            return json.loads(path.read_text()) if path is not None else {}

    def discard(self) -> None:
        """Remove a finished job's resume state."""
        self.client.delete_job_state()

    def _put(self, name: str, path: pathlib.Path) -> None:
        self.client.put_job_state(name, path)

    def _get(self, name: str, directory: pathlib.Path) -> pathlib.Path | None:
        return self.client.get_job_state(name, directory / name)


def write_state(path: pathlib.Path, state: TrainState, versions: list[str]) -> None:
    tensorfile.write(path, {
        "step": state.step, "epoch": state.epoch, "batch": state.batch, "versions": versions,
        "module": state.module, "optimizer": state.optimizer, "noise": state.noise,
        "epoch_generator": state.epoch_generator})


def read_state(path: pathlib.Path) -> tuple[TrainState, list[str]]:
    saved = tensorfile.read(path)
    state = TrainState(step=saved["step"], epoch=saved["epoch"], batch=saved["batch"],
                       module=saved["module"], optimizer=saved["optimizer"], noise=saved["noise"],
                       epoch_generator=saved["epoch_generator"])
    return state, list(saved["versions"])
