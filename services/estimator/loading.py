"""Turn a downloaded model version into a module to sample, without trusting the file.

`.pt2` archives go through lambdascope.artifacts (inspected, never unpickled) and this runs in
the job's worker process, a second wall around user files. Safetensors weights are loaded into
the built-in architecture their version names.
"""
from __future__ import annotations

import pathlib

import torch

from lambdascope import artifacts, modules
from lambdascope.v1 import models_pb2, registry_pb2


class TaskOutputs(torch.nn.Module):
    """Keep the first `count` outputs: the task's, without e.g. self-model outputs."""

    def __init__(self, inner: torch.nn.Module, count: int):
        super().__init__()
        self.inner = inner
        self.count = count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[..., : self.count]


def load_model(version: registry_pb2.ModelVersion, path: pathlib.Path,
               dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The module of `version` whose weights are at `path` (in `dtype` when given); raises
    ValueError if unusable."""
    if version.format == models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT:
        module = artifacts.load_exported_program(path).module()
    elif version.format == models_pb2.ARTIFACT_FORMAT_SAFETENSORS:
        module = modules.build_module(version.architecture)
        modules.load_weights(module, artifacts.load_safetensors(path))
        module.eval()
    else:
        raise ValueError(f"model version {version.id} has no known artifact format")
    if dtype is not None:
        module = module.to(dtype)
    if version.task_outputs:
        module = TaskOutputs(module, version.task_outputs)
    return module
