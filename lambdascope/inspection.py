"""What a model or dataset file is, as the registry records it: read from the file's bytes by
lambdascope.artifacts (nothing is unpickled or run), by the registry on upload and by the CLI
before it uploads, so a file that cannot be audited is refused before a byte is sent.
"""
from __future__ import annotations

import os

from lambdascope import architectures, artifacts
from lambdascope.v1 import models_pb2, registry_pb2

__all__ = ["InvalidArtifact", "describe_dataset", "describe_model"]


class InvalidArtifact(ValueError):
    """The file is not a model (or dataset) the platform can take; the message says why."""


def describe_model(path: str | os.PathLike, format: int, architecture: models_pb2.Architecture | None = None,
                   task_outputs: int = 0) -> registry_pb2.ModelVersion:
    """The version fields read from the artifact: input/output shapes (-1: a dynamic dimension),
    input dtype, and for safetensors weights the architecture they were checked against."""
    version = registry_pb2.ModelVersion(format=format, task_outputs=task_outputs)
    try:
        if format == models_pb2.ARTIFACT_FORMAT_SAFETENSORS:
            if architecture is None or architecture.WhichOneof("kind") is None:
                raise InvalidArtifact("safetensors weights need the built-in architecture they belong to")
            _check_weights(path, architecture)
            version.architecture.CopyFrom(architecture)
            inputs, outputs = architectures.io_shapes(architecture)
            version.input_shape[:], version.output_shape[:] = inputs, outputs
            version.input_dtype = architectures.input_dtype(architecture)
        else:
            info = artifacts.inspect_pt2(path)
            if len(info.input_shapes) != 1 or len(info.output_shapes) != 1:
                raise InvalidArtifact(
                    "the exported program must take one input tensor and return one tensor "
                    f"(it takes {len(info.input_shapes)} and returns {len(info.output_shapes)})")
            version.input_shape[:] = info.input_shapes[0]
            version.output_shape[:] = info.output_shapes[0]
            version.input_dtype = info.input_dtypes[0]
    except artifacts.ArtifactError as exc:
        raise InvalidArtifact(f"not a valid artifact: {exc}") from None
    outputs = version.output_shape[-1] if version.output_shape else 0
    if task_outputs and outputs > 0 and task_outputs > outputs:
        raise InvalidArtifact(f"task_outputs ({task_outputs}) exceeds the model's {outputs} outputs")
    return version


def describe_dataset(path: str | os.PathLike) -> registry_pb2.Dataset:
    """The dataset fields read from a safetensors file holding ``x`` and ``y``."""
    try:
        info = artifacts.inspect_dataset(path)
    except artifacts.ArtifactError as exc:
        raise InvalidArtifact(f"not a usable dataset: {exc}") from None
    return registry_pb2.Dataset(num_examples=info.num_examples, x_shape=info.x.shape, y_shape=info.y.shape,
                                x_dtype=info.x.dtype, y_dtype=info.y.dtype)


def _check_weights(path: str | os.PathLike, architecture: models_pb2.Architecture) -> None:
    tensors = artifacts.inspect_safetensors(path)
    expected = {k: tuple(v) for k, v in architectures.expected_parameters(architecture).items()}
    found = {name: tuple(info.shape) for name, info in tensors.items()}
    if found == expected:
        return
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = sorted(n for n in set(found) & set(expected) if found[n] != expected[n])
    raise InvalidArtifact("the weights do not fit the architecture: " + "; ".join(p for p in (
        f"missing {missing}" if missing else "",
        f"unexpected {extra}" if extra else "",
        "wrong shape " + ", ".join(f"{n} {found[n]} (expected {expected[n]})" for n in wrong) if wrong else "")
        if p))
