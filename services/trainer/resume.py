"""A training job's resume state on disk, so a restarted trainer continues instead of starting over.

One directory per job under the trainer's data directory:

- `state.safetensors`: the last checkpoint's `TrainState`. Tensors (weights, optimizer buffers,
  noise, generator state) are safetensors entries; everything else (step, optimizer
  hyper-parameters, ...) is JSON in the file's metadata, with tensors referenced by name. No
  pickle: the file is read back with safetensors and json only.
- `job.json`: facts fixed at the job's start (the registered training-data id).

Writes go to a temporary file that is renamed into place, so a crash mid-write leaves the
previous state, never a half-written one.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from services.trainer.training import TrainState

STATE_FILE = "state.safetensors"
JOB_FILE = "job.json"
_TENSOR = "__tensor__"


def job_dir(data_dir: str | os.PathLike, job_id: str) -> pathlib.Path:
    return pathlib.Path(data_dir) / "trainer" / "resume" / job_id


def save_state(directory: pathlib.Path, state: TrainState, versions: list[str]) -> None:
    """Atomically replace the job's state with `state`; `versions` are the model versions
    registered up to and including state.step."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {
        "step": state.step, "epoch": state.epoch, "batch": state.batch, "versions": versions,
        "module": _flatten(state.module, "module", tensors),
        "optimizer": _flatten(state.optimizer, "optimizer", tensors),
        "noise": None if state.noise is None else _flatten(state.noise, "noise", tensors),
        "epoch_generator": _flatten(state.epoch_generator, "epoch_generator", tensors),
    }
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE_FILE + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={"state": json.dumps(skeleton)})
    _fsync(tmp)
    os.replace(tmp, directory / STATE_FILE)


def load_state(directory: pathlib.Path) -> tuple[TrainState, list[str]] | None:
    """The saved state and its registered versions, or None when the job has none yet."""
    path = directory / STATE_FILE
    if not path.exists():
        return None
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


def save_job(directory: pathlib.Path, facts: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (JOB_FILE + ".tmp")
    tmp.write_text(json.dumps(facts))
    _fsync(tmp)
    os.replace(tmp, directory / JOB_FILE)


def load_job(directory: pathlib.Path) -> dict[str, str]:
    path = directory / JOB_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def discard(directory: pathlib.Path) -> None:
    """Remove a finished job's resume state."""
    shutil.rmtree(directory, ignore_errors=True)


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


def _fsync(path: pathlib.Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
