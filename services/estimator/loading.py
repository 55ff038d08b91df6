"""Turn a downloaded model version into a module to sample, without trusting the file.

`.pt2` archives go through lambdascope.artifacts (inspected, never unpickled) and this runs in
the job's worker process, a second wall around user files. Safetensors weights are loaded into
the built-in architecture their version names; when only the first `task_outputs` outputs are
the task's (self-modeling), the output layer is cut to them, so the audit samples exactly the
parameters the task loss depends on. An archive is wrapped to keep those outputs instead.
"""
from __future__ import annotations

import pathlib

import torch

from lambdascope import architectures, artifacts, modules
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
        arch, tensors = version.architecture, artifacts.load_safetensors(path)
        outputs = architectures.io_shapes(arch)[1][-1]
        if 0 < version.task_outputs < outputs:  # sample only what the task loss depends on
            tensors = modules.narrow_weights(arch, tensors, version.task_outputs)
            arch = architectures.narrow_outputs(arch, version.task_outputs)
        module = modules.build_module(arch)
        modules.load_weights(module, tensors)
        module.eval()
        return module.to(dtype) if dtype is not None else module
    else:
        raise ValueError(f"model version {version.id} has no known artifact format")
    if dtype is not None:
        module = module.to(dtype)
    if version.task_outputs:
        module = TaskOutputs(module, version.task_outputs)
    return module
