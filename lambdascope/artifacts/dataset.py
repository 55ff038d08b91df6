"""Datasets: a safetensors file holding exactly `x` and `y` with one example per leading index,
and the dtypes each may have (`ID_DTYPES`: the integer inputs a model may take as token ids)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lambdascope.artifacts.common import ArtifactError
from lambdascope.artifacts.safetensors import TensorInfo, inspect_safetensors, load_safetensors

if TYPE_CHECKING:  # torch is imported lazily: the registry may inspect without loading models
    import torch


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset of `num_examples` pairs: inputs `x` and targets `y` (leading dimension = examples)."""

    num_examples: int
    x: TensorInfo
    y: TensorInfo


FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})  # the one list of float dtypes data may have
_INT_DTYPES = frozenset({"uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64"})
ID_DTYPES = frozenset({"uint8", "int8", "int16", "int32", "int64"})  # inputs torch can index with


def inspect_dataset(path: str | os.PathLike) -> DatasetInfo:
    """Check a dataset file: safetensors with exactly tensors `x` and `y`, same leading dim >= 1.

    `x` must be floating (float16/bfloat16/float32/float64) or, for models that take token ids,
    a signed integer type or uint8; `y` floating or integer; both at least 1-D (`x[i]` is one
    example's input, `y[i]` its target).
    """
    tensors = inspect_safetensors(path)
    missing = sorted({"x", "y"} - set(tensors))
    extra = sorted(set(tensors) - {"x", "y"})
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(repr(m) for m in missing))
        if extra:
            parts.append("unexpected " + ", ".join(repr(e) for e in extra))
        raise ArtifactError(
            "a dataset must hold exactly the tensors 'x' and 'y': " + "; ".join(parts)
        )
    x, y = tensors["x"], tensors["y"]
    if not x.shape or not y.shape:
        raise ArtifactError(
            f"x and y must be at least 1-D with examples along dim 0 (x {list(x.shape)}, y {list(y.shape)})"
        )
    if x.shape[0] != y.shape[0]:
        raise ArtifactError(
            f"x has {x.shape[0]} examples but y has {y.shape[0]} (leading dimensions must match)"
        )
    if x.shape[0] < 1:
        raise ArtifactError("the dataset has no examples (leading dimension is 0)")
    if x.dtype not in FLOAT_DTYPES | ID_DTYPES:
        raise ArtifactError(f"x must be floating point (float16/bfloat16/float32/float64) or, for token "
                            f"ids, int64/int32/int16/int8/uint8; not {x.dtype}")
    if y.dtype not in FLOAT_DTYPES | _INT_DTYPES:
        raise ArtifactError(f"y must be floating point or integer, not {y.dtype}")
    return DatasetInfo(num_examples=x.shape[0], x=x, y=y)


def load_dataset(path: str | os.PathLike) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Inspect, then load a dataset file; return `(x, y)`."""
    inspect_dataset(path)
    tensors = load_safetensors(path)
    return tensors["x"], tensors["y"]
