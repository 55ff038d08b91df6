"""Object storage behind one small interface; the local directory is the embedded default.

Keys are content addresses (`sha256/ab/abcdef...`), so identical artifacts are stored once.
`put_file` is atomic: an object is either absent or whole, never half-written.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import Protocol

CHUNK = 1 << 20


def content_key(sha256_hex: str) -> str:
    return f"sha256/{sha256_hex[:2]}/{sha256_hex}"


class ObjectStore(Protocol):
    def put_file(self, key: str, path: pathlib.Path) -> None: ...
    def read_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...


class LocalObjectStore:
    """Objects as files under `root`; writes go through a temp file and an atomic rename."""

    def __init__(self, root: pathlib.Path):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> pathlib.Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()) or ".." in key.split("/"):
            raise ValueError(f"object key {key!r} escapes the store")
        return path

    def put_file(self, key: str, path: pathlib.Path) -> None:
        target = self._path(key)
        if target.exists():
            return  # content-addressed: the same key holds the same bytes
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise

    def read_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        with open(self._path(key), "rb") as src:
            while chunk := src.read(chunk_size):
                yield chunk

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def open_store(location: pathlib.Path | str) -> ObjectStore:
    """The object store at `location` (a directory; S3 URLs arrive with the registry issue)."""
    location = str(location)
    if location.startswith("s3://"):
        raise SystemExit("S3 object storage is not available yet; use a local directory")
    return LocalObjectStore(pathlib.Path(location))
