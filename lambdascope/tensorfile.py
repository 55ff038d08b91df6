"""Nested state (dicts, lists, numbers, strings, tensors) in one safetensors file, never a pickle.

Tensors are the file's entries; everything else is a JSON skeleton in its metadata that names
them. A training run's resume state and an audit's chain snapshots are written this way, and
read back with safetensors and json alone. Floats keep NaN and infinities (Python's JSON).
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

_TENSOR = "__tensor__"
_DICT = "__dict__"
_KEY = "state"


def write(path: pathlib.Path, state: Any) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "s", tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={_KEY: json.dumps(skeleton)})


def read(path: pathlib.Path) -> Any:
    with safe_open(str(path), framework="pt") as f:
        skeleton = json.loads(f.metadata()[_KEY])
    return _unflatten(skeleton, load_file(str(path)))


def _flatten(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON skeleton of `value` with each tensor moved into `tensors` under a name. Dict keys
    keep their type (the optimizer's state is keyed by integers)."""
    if isinstance(value, torch.Tensor):
        tensors[name] = value.detach().cpu()
        return {_TENSOR: name}
    if isinstance(value, dict):
        return {_DICT: [[k, _flatten(v, f"{name}.{i}", tensors)] for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, (list, tuple)):
        return [_flatten(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a tensor file ({name})")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if _TENSOR in value:
            return tensors[value[_TENSOR]]
        return {k: _unflatten(v, tensors) for k, v in value[_DICT]}
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value
