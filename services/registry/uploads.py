"""Receiving chunked uploads: stage to a private file, hash while streaming, verify.

A staged file is never visible as a version: the servicer commits it to the object store and
the metadata only after every check passed, and deletes it in all other cases.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import pathlib
import queue
import re
import tempfile
import threading
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
            check_header: Callable[[Any], None],
            tee_for: Callable[[Any], StreamTee | None] | None = None) -> Staged:
    """Read a header message then chunks into a staging file; check size and sha256.
    `check_header` refuses a bad header before any data is stored; `tee_for(header)` may
    return a StreamTee that stores the bytes while they arrive (finished here, verified)."""
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
    tee = None
    try:
        tee = tee_for(header) if tee_for is not None else None
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
                if tee is not None:
                    tee.write(chunk)
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
        if tee is not None:
            tee.finish(ok=False)
        path.unlink(missing_ok=True)
        raise
    if tee is not None:
        tee.finish(ok=True)  # on False the store did not get it; the commit stores the file
    return Staged(header, path, actual, size)


_EOF = object()


class UploadAborted(Exception):
    """The upload being streamed to the object store was cut off or failed verification."""


class StreamTee:
    """Feeds an upload's chunks to the object store while they arrive (`upload` runs in its own
    thread and reads this object like a file), so storing overlaps receiving.

    The last chunk is held back until `finish(ok=True)`: the store sees the upload's final byte
    only after its size and sha256 were verified, and `finish(ok=False)` makes the next read
    raise, which aborts the store's multipart upload. Either way nothing unverified becomes
    visible. If the store's upload fails, chunks are dropped and `finish` reports False: the
    caller then stores the staged file instead."""

    def __init__(self, upload: Callable[[StreamTee], None], depth: int = 16):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._pending: bytes | None = None
        self._chunks: collections.deque[bytes | memoryview] = collections.deque()
        self._buffered = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(upload,), daemon=True,
                                        name="upload-stream")
        self._thread.start()

    def write(self, chunk: bytes) -> None:
        if self._pending is not None:
            self._put(self._pending)
        self._pending = chunk

    def finish(self, ok: bool) -> bool:
        """End the stream; True when the store now holds the whole, verified object."""
        if ok and self._pending is not None:
            self._put(self._pending)
        self._pending = None
        self._put(_EOF if ok else UploadAborted("the upload was cut off or failed verification"))
        self._thread.join()
        return ok and self.error is None

    def read(self, size: int = -1) -> bytes:
        while size < 0 or self._buffered < size:
            item = self._queue.get()
            if item is _EOF:
                self._queue.put(_EOF)  # later reads see the end too
                break
            if isinstance(item, BaseException):
                raise item
            self._chunks.append(item)
            self._buffered += len(item)
        # Whole chunks go out as they are and the bytes are copied once, by the join (a part
        # of the store is a whole number of chunks, so a chunk is rarely split).
        want = self._buffered if size < 0 else min(size, self._buffered)
        parts, taken = [], 0
        while taken < want:
            chunk = self._chunks.popleft()
            if taken + len(chunk) > want:  # split it without copying (views)
                view = memoryview(chunk)
                self._chunks.appendleft(view[want - taken:])
                chunk = view[:want - taken]
            parts.append(chunk)
            taken += len(chunk)
        self._buffered -= taken
        return b"".join(parts)

    def _put(self, item: object) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self, upload: Callable[[StreamTee], None]) -> None:
        try:
            upload(self)
        except BaseException as exc:  # noqa: BLE001 - reported by finish(); aborts are expected
            self.error = exc
