"""Page tokens and sizes for every List call, so all of them page the same way."""
from __future__ import annotations

import base64

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
