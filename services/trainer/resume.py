"""A training job's resume state, so a restarted trainer (or a retried Kubernetes pod)
continues instead of starting over.

It is kept by the registry as the job's own files (Registry.PutJobState, readable by the job's
credential alone; stored under `jobstate/<team>/<job id>/`), so it outlives a worker pod's disk
and the worker needs no storage credentials:

- `state.safetensors`: the last checkpoint's `TrainState`. Tensors (weights, optimizer buffers,
  noise, generator state) are safetensors entries; everything else (step, optimizer
  hyper-parameters, ...) is JSON in the file's metadata, with tensors referenced by name. No
  pickle: the file is read back with safetensors and json only.
- `job.json`: facts fixed at the job's start (the registered training-data id).

Each file is replaced whole (verified against its sha256, then renamed into place or PUT in
one piece), so a crash mid-write leaves the previous state, never a half-written one.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lambdascope.client import Client
from services.trainer.training import TrainState

STATE_FILE = "state.safetensors"
JOB_FILE = "job.json"
_TENSOR = "__tensor__"


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
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {
        "step": state.step, "epoch": state.epoch, "batch": state.batch, "versions": versions,
        "module": _flatten(state.module, "module", tensors),
        "optimizer": _flatten(state.optimizer, "optimizer", tensors),
        "noise": None if state.noise is None else _flatten(state.noise, "noise", tensors),
        "epoch_generator": _flatten(state.epoch_generator, "epoch_generator", tensors),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={"state": json.dumps(skeleton)})


def read_state(path: pathlib.Path) -> tuple[TrainState, list[str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        skeleton = json.loads(f.metadata()["state"])
    tensors = load_file(str(path))
    state = TrainState(
        step=skeleton["step"], epoch=skeleton["epoch"], batch=skeleton["batch"],
        module=_unflatten(skeleton["module"], tensors),
        optimizer=_unflatten(skeleton["optimizer"], tensors),
        noise=None if skeleton["noise"] is None else _unflatten(skeleton["noise"], tensors),
        epoch_generator=_unflatten(skeleton["epoch_generator"], tensors))
    return state, list(skeleton["versions"])


def _flatten(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON skeleton of nested dicts/lists with each tensor moved into `tensors` under a name.
    Dict keys become strings; integer keys (optimizer state) are marked so they come back."""
    if isinstance(value, torch.Tensor):
        tensors[name] = value.detach().cpu()
        return {_TENSOR: name}
    if isinstance(value, dict):
        return {"__dict__": [[k, _flatten(v, f"{name}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_flatten(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in the resume state ({name})")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if _TENSOR in value:
            return tensors[value[_TENSOR]]
        return {k: _unflatten(v, tensors) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value

