"""Job specs as users write them (JSON or YAML), mapped through the protobuf schema."""
from __future__ import annotations

import json
import pathlib
from typing import TypeVar

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def canonical_json(message: Message) -> str:
    """One text per message content: how a retried start is recognised as the same request."""
    return json_format.MessageToJson(message, sort_keys=True, indent=None,
                                     preserving_proto_field_name=True)


def to_dict(message: Message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def load(path: str | pathlib.Path, message: M) -> M:
    """Parse a JSON or YAML file into `message`; unknown fields are errors naming the field."""
    text = pathlib.Path(path).read_text()
    try:
        data = yaml.safe_load(text) if str(path).endswith((".yaml", ".yml")) else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid YAML/JSON: {exc}") from None
    try:
        return json_format.ParseDict(data or {}, message)
    except json_format.ParseError as exc:
        raise ValueError(f"{path}: {exc}") from None
