"""Receiving chunked uploads: stage to a private file, hash while streaming, verify.

A staged file is never visible as a version: the servicer commits it to the object store and
the metadata only after every check passed, and deletes it in all other cases.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from lambdascope import errors

MAX_CHUNK = 4 << 20
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclasses.dataclass
class Staged:
    header: Any
    path: pathlib.Path
    sha256: str
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def receive(requests: Iterator[Any], staging_dir: pathlib.Path, max_bytes: int,
            check_header: Callable[[Any], None]) -> Staged:
    """Read a header message then chunks into a staging file; check size and sha256.
    `check_header` refuses a bad header before any data is stored."""
    first = next(requests, None)
    if first is None or first.WhichOneof("part") != "header":
        raise errors.InvalidArgument("an upload must start with a header message, then chunks")
    header = first.header
    check_header(header)
    declared = header.sha256.lower()
    if not HEX64.match(declared):
        raise errors.InvalidArgument(
            "header.sha256 must be the artifact's sha256 as 64 hex digits")
    if header.size_bytes < 0 or header.size_bytes > max_bytes:
        raise errors.InvalidArgument(
            f"header.size_bytes must be between 0 and {max_bytes} (got {header.size_bytes})")
    staging_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=staging_dir, prefix="upload-")
    path = pathlib.Path(name)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for message in requests:
                if message.WhichOneof("part") != "chunk":
                    raise errors.InvalidArgument("only chunks may follow the header")
                chunk = message.chunk
                if len(chunk) > MAX_CHUNK:
                    raise errors.InvalidArgument(f"chunks must be at most {MAX_CHUNK} bytes")
                size += len(chunk)
                if size > header.size_bytes:
                    raise errors.DataLoss(
                        f"received more than the declared {header.size_bytes} bytes; "
                        "nothing was registered")
                digest.update(chunk)
                out.write(chunk)
        if size != header.size_bytes:
            raise errors.DataLoss(
                f"received {size} bytes but the header declared {header.size_bytes}; "
                "the upload was cut short; nothing was registered")
        actual = digest.hexdigest()
        if actual != declared:
            raise errors.DataLoss(
                f"sha256 of the received bytes is {actual} but the header declared {declared}: "
                "the data was corrupted on the way or the header is wrong; nothing was registered")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Staged(header, path, actual, size)
