"""Job specs as users write them (JSON or YAML), mapped through the protobuf schema."""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, TypeVar

import yaml
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def canonical_json(message: Message) -> str:
    """One text per message content: how a retried start is recognised as the same request."""
    return json_format.MessageToJson(message, sort_keys=True, indent=None,
                                     preserving_proto_field_name=True)


def to_dict(message: Message) -> dict:
    """A message as JSON-ready data: proto field names, enums by name, and every field written
    out, zeros and empty lists included (a reader should not have to know proto3's defaults)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def load(path: str | pathlib.Path, message: M) -> M:
    """Parse a JSON or YAML file into `message`; unknown fields are errors naming the field.
    Enum values may be written as the CLI writes them (``cross_entropy``) or in full
    (``LOSS_KIND_CROSS_ENTROPY``)."""
    text = pathlib.Path(path).read_text()
    try:
        data = yaml.safe_load(text) if str(path).endswith((".yaml", ".yml")) else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid YAML/JSON: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: a spec is a mapping of {message.DESCRIPTOR.name} fields "
                         f"(name: value), not a {type(data).__name__}")
    try:
        return json_format.ParseDict(_full_enum_names(data or {}, message.DESCRIPTOR, ""), message)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def enum_short_names(enum: EnumDescriptor) -> dict[str, str]:
    """Short name (``cross_entropy``) -> full name (``LOSS_KIND_CROSS_ENTROPY``), the UNSPECIFIED
    value left out: the enum's names less the prefix they share, lower-cased."""
    names = [v.name for v in enum.values]
    prefix = os.path.commonprefix(names)
    prefix = prefix[: prefix.rfind("_") + 1]
    return {n[len(prefix):].lower(): n for n in names if not n.endswith("_UNSPECIFIED")}


def _full_enum_names(data: Any, descriptor: Descriptor, where: str) -> Any:
    """``data`` with every short enum name replaced by its full name (unknown names refused with
    the valid ones listed); anything else is left for json_format to judge."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    fields = {**descriptor.fields_by_name, **{f.json_name: f for f in descriptor.fields}}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            continue
        path = f"{where}.{key}" if where else key
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if isinstance(value, dict) and value_field.message_type is not None:
                out[key] = {k: _full_enum_names(v, value_field.message_type, f"{path}[{k}]")
                            for k, v in value.items()}
        elif field.message_type is not None:
            out[key] = ([_full_enum_names(v, field.message_type, f"{path}[{i}]") for i, v in enumerate(value)]
                        if isinstance(value, list) else _full_enum_names(value, field.message_type, path))
        elif field.enum_type is not None:
            out[key] = ([_enum_value(v, field.enum_type, f"{path}[{i}]") for i, v in enumerate(value)]
                        if isinstance(value, list) else _enum_value(value, field.enum_type, path))
    return out


def _enum_value(value: Any, enum: EnumDescriptor, where: str) -> Any:
    if not isinstance(value, str) or value in enum.values_by_name:
        return value
    short = enum_short_names(enum)
    if value.lower() in short:
        return short[value.lower()]
    raise ValueError(f"{where}: {value!r} is not one of {', '.join(sorted(short))} "
                     f"(or their full names, e.g. {next(iter(short.values()), '')})")


def timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp from seconds since the epoch (as SQL rows keep times); None for None."""
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts
