"""What a valid registry request looks like: names, aliases, tags and an upload's header fields.

One place owns each rule, so every RPC that takes a name, an alias or tags refuses a bad one
with the same INVALID_ARGUMENT message. These checks read only the request (and the caller's
team): the ones that need the store (quota, lineage) are the upload pipeline's (uploads.py).
"""
from __future__ import annotations

import re

from lambdascope import architectures, errors
from lambdascope.names import RECORD as NAME
from lambdascope.v1 import models_pb2, registry_pb2

ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,99}$")
VERSION_LIKE = re.compile(r"^(v|version)?[0-9]+$", re.IGNORECASE)
RESERVED_ALIASES = {"latest"}
TAG_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS = 128, 1024, 100


def check_name(field: str, value: str) -> None:
    if not NAME.match(value):
        raise errors.InvalidArgument(
            f"{field} {value!r} is not a valid name: use 1-200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '@', spaces or control characters; one '/' "
            "only in '<team>/<name>', a name another team shared)")


def check_reference_name(field: str, value: str) -> None:
    """A name a team reads by: its own ("mlp") or one shared with it ("team-a/mlp")."""
    owner, _, name = value.rpartition("/")
    if owner:
        check_name(field, owner)
    check_name(field, name)


def own(field: str, value: str, team: str) -> str:
    """The name of a record `team` writes: always its own. "<team>/<name>" of another team is
    PERMISSION_DENIED, shared or not (and whether or not it exists)."""
    owner, _, name = value.rpartition("/")
    if owner:
        check_name(field, owner)
    if owner and owner != team:
        raise errors.PermissionDenied(
            f"{field} {value!r} names team {owner!r}'s record: a team writes only its own "
            "(what another team shares with it is read-only)", reason="other_team")
    check_name(field, name)
    return name


def check_alias(value: str) -> None:
    if not ALIAS.match(value):
        raise errors.InvalidArgument(
            f"alias {value!r} is not a valid alias: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter")
    if VERSION_LIKE.match(value) or value.lower() in RESERVED_ALIASES:
        raise errors.InvalidArgument(
            f"alias {value!r} looks like a version number or 'latest', so 'name@{value}' would "
            "be ambiguous: choose a word such as 'production' or 'candidate'")


def check_tags(field: str, tags: dict[str, str], remove: list[str] = ()) -> None:
    if len(tags) > MAX_TAGS:
        raise errors.InvalidArgument(f"{field}: at most {MAX_TAGS} tags per call")
    for key in [*tags, *remove]:
        if len(key) > MAX_TAG_KEY:
            raise errors.InvalidArgument(
                f"{field}: tag key {key[:40]!r}... is {len(key)} characters long; "
                f"the limit is {MAX_TAG_KEY}")
        if not TAG_KEY.match(key):
            raise errors.InvalidArgument(
                f"{field}: tag key {key!r} must start with a letter or digit and use only "
                "letters, digits and '.', '_', ':', '/', '-'")
    for key, value in tags.items():
        if len(value) > MAX_TAG_VALUE:
            raise errors.InvalidArgument(
                f"{field}: the value of tag {key!r} is {len(value)} characters long; the limit "
                f"is {MAX_TAG_VALUE}")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise errors.InvalidArgument(f"{field}: the value of tag {key!r} contains control "
                                         "characters")


def check_model_artifact(header: registry_pb2.ModelUploadHeader) -> None:
    """What a model upload's header says about its artifact: task outputs, format and, for
    safetensors weights, the built-in architecture they belong to."""
    if header.task_outputs < 0:
        raise errors.InvalidArgument(
            f"header.task_outputs must be >= 0 (got {header.task_outputs})")
    if header.format not in (models_pb2.ARTIFACT_FORMAT_SAFETENSORS,
                             models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT):
        raise errors.InvalidArgument(
            "header.format must be ARTIFACT_FORMAT_SAFETENSORS (weights of a built-in "
            "architecture) or ARTIFACT_FORMAT_TORCH_EXPORT (a .pt2 archive)")
    if header.format == models_pb2.ARTIFACT_FORMAT_SAFETENSORS:
        if not header.HasField("architecture"):
            raise errors.InvalidArgument(
                "header.architecture is required for safetensors weights: it says which "
                "built-in architecture the weights belong to")
        try:
            architectures.validate_architecture(header.architecture)
        except ValueError as exc:
            raise errors.InvalidArgument(f"header.{exc}") from None
