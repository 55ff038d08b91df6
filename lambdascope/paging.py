"""Page tokens and sizes for every List call, so all of them page the same way."""
from __future__ import annotations

import base64
import hashlib
import json

from google.protobuf.message import Message

from lambdascope import errors

MAX_PAGE = 1000
DEFAULT_PAGE = 50


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode() if offset else ""


def decode_token(token: str) -> int:
    if not token:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "offset" and int(value) >= 0:
            return int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise errors.InvalidArgument("page_token is not one this server issued; start again without it")


def size(requested: int) -> int:
    if requested < 0:
        raise errors.InvalidArgument(f"page_size must be >= 0 (got {requested})")
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


# Keyset pagination: the token carries the sort key of the last row served and a fingerprint of
# the query, so a page is stable under concurrent inserts and a token from another query is
# refused instead of silently paging the wrong result.


def fingerprint(request: Message) -> str:
    """A short digest of a List/Search request without its paging fields."""
    query = type(request)()
    query.CopyFrom(request)
    for name in ("page_token", "page_size"):
        query.ClearField(name)
    return hashlib.sha256(query.SerializeToString(deterministic=True)).hexdigest()[:16]


def encode_keyset(query: str, key: list) -> str:
    return base64.urlsafe_b64encode(json.dumps({"q": query, "k": key}).encode()).decode()


def keyset(request: Message, width: int) -> tuple[int, str, list | None]:
    """(page size, the query's fingerprint, the last served key or None on the first page) of a
    List request whose rows are ordered by ``width`` keys; INVALID_ARGUMENT for a bad size or a
    token this server did not issue for this query."""
    page_size = size(request.page_size)
    query = fingerprint(request)
    after = decode_keyset(request.page_token, query)
    if after is not None and len(after) != width:
        raise errors.InvalidArgument("page_token is not one this server issued; start again without it")
    return page_size, query, after


def decode_keyset(token: str, query: str) -> list | None:
    """The last served sort key (None on the first page); INVALID_ARGUMENT for a token this
    server did not issue or issued for another query."""
    if not token:
        return None
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
        key, issued_for = doc["k"], doc["q"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise errors.InvalidArgument(
            "page_token is not one this server issued; start again without it") from None
    if issued_for != query or not isinstance(key, list):
        raise errors.InvalidArgument(
            "page_token belongs to another query (the filters changed): start again without it")
    return key
