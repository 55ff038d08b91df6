"""The API's enums by the short names people write ("mse", "ok"), one table each, derived from
the enums in protos/: the CLI, the job specs, the workers and the metrics all read these, so a
value added to a proto enum appears everywhere at once. The science library keeps its own
protobuf-free tables (lambdascope.llc.losses.LOSSES, diagnostics.VERDICT_STATES); a test holds
them to the same names."""
from __future__ import annotations

from typing import Any

from lambdascope.specs import enum_short_names
from lambdascope.v1 import audit_pb2, models_pb2


def by_short_name(enum: Any) -> dict[str, int]:
    """Short name -> value of a generated enum (``models_pb2.LossKind``), UNSPECIFIED left out."""
    return {short: enum.Value(full) for short, full in enum_short_names(enum.DESCRIPTOR).items()}


def one_of(enum: Any) -> str:
    """The enum's valid full names for an error message: "A, B or C"."""
    names = list(enum_short_names(enum.DESCRIPTOR).values())
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


LOSS_KINDS = by_short_name(models_pb2.LossKind)  # "mse" -> LOSS_KIND_MSE
LOSS_NAMES = {value: name for name, value in LOSS_KINDS.items()}  # LOSS_KIND_MSE -> "mse"
VERDICTS = by_short_name(audit_pb2.VerdictState)  # "ok" -> VERDICT_STATE_OK
VERDICT_NAMES = {value: name for name, value in VERDICTS.items()}
# What an audit may compute in (AuditConfig.dtype; empty: the model's own dtype).
AUDIT_DTYPES = ("float32", "float64")
