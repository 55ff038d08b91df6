"""Whether a dataset can go through a model and a loss: one rule, applied by the CLI before it
uploads anything and by the estimator before it queues an audit and again in its worker.

Works on what the registry records (a ModelVersion's input/output shapes and input dtype, a
Dataset's x/y shapes and dtypes), which the CLI computes locally from the files it is about to
upload (lambdascope.artifacts), so a misfit is refused before a byte is sent.
"""
from __future__ import annotations

from lambdascope import artifacts
from lambdascope.enums import LOSS_NAMES
from lambdascope.v1 import models_pb2, registry_pb2

__all__ = ["FLOAT_DTYPES", "FitError", "INTEGER_DTYPES", "check_fit"]

FLOAT_DTYPES = artifacts.FLOAT_DTYPES  # what data may hold as floats
INTEGER_DTYPES = artifacts.ID_DTYPES  # what a model may take as token ids


class FitError(ValueError):
    """The data cannot go through the model and loss; the message says which part and why."""


def check_fit(version: registry_pb2.ModelVersion, dataset: registry_pb2.Dataset,
              loss: int) -> None:
    """Refuse a dataset whose x/y shapes and dtypes cannot go through the model and loss."""
    x_shape, y_shape = list(dataset.x_shape), list(dataset.y_shape)
    in_shape, out_shape = list(version.input_shape), list(version.output_shape)
    where = f"model {version.model_name}" + (f" v{version.version}" if version.version else "")
    takes_ids = version.input_dtype in INTEGER_DTYPES
    if takes_ids and dataset.x_dtype not in INTEGER_DTYPES:
        raise FitError(f"{where} takes integer inputs ({version.input_dtype}, e.g. token ids) but "
                        f"dataset x is {dataset.x_dtype}")
    if not takes_ids and dataset.x_dtype not in FLOAT_DTYPES:
        raise FitError(f"dataset x must be floating point (got {dataset.x_dtype})"
                        + (f"; {where} takes {version.input_dtype} inputs" if version.input_dtype else ""))
    if in_shape and not _fits(x_shape[1:], in_shape[1:]):
        raise FitError(f"dataset x has shape {x_shape} but {where} takes inputs of shape "
                        f"{_fmt(in_shape)}")
    outputs = version.task_outputs or (out_shape[-1] if out_shape else -1)
    if loss == models_pb2.LOSS_KIND_CROSS_ENTROPY:
        # [batch, classes] outputs with [n] labels, or [batch, ..., classes] with [n, ...] labels
        # (token-level: lambdascope.llc.losses)
        if dataset.y_dtype not in INTEGER_DTYPES:
            raise FitError(f"cross_entropy needs y as integer class labels (got {dataset.y_dtype})")
        if len(out_shape) < 2:
            raise FitError(f"cross_entropy needs model outputs of shape [batch, ..., classes] "
                            f"({where} returns {_fmt(out_shape)})")
        if out_shape and not _fits(y_shape[1:], out_shape[1:-1]):
            raise FitError(f"cross_entropy needs y of shape {_fmt([-1, *out_shape[1:-1]])} to match "
                            f"{where}'s outputs {_fmt(out_shape)} (got y {y_shape})")
    else:
        name = LOSS_NAMES.get(loss, "this loss")
        if dataset.y_dtype not in FLOAT_DTYPES:
            raise FitError(f"{name} needs floating-point targets y (got {dataset.y_dtype}); for "
                            "class labels use cross_entropy")
        expected = [*out_shape[1:-1], outputs] if out_shape else None
        if expected is not None and not _fits(y_shape[1:], expected):
            raise FitError(f"dataset y has shape {y_shape} but the task outputs of {where} "
                            f"have shape {_fmt([-1, *expected])}")


def _fits(actual: list[int], expected: list[int]) -> bool:
    return len(actual) == len(expected) and all(e < 0 or a == e for a, e in zip(actual, expected))


def _fmt(shape: list[int]) -> str:
    return "[" + ", ".join("batch" if d < 0 else str(d) for d in shape) + "]"
