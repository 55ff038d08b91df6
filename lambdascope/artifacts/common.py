"""What every reader of user files here shares: the error they raise, opening only regular files,
naming what a file that is not the expected kind really is, and the integer test used on parsed
JSON. Kept apart so that each format's module can import it without importing the others."""
from __future__ import annotations

import contextlib
import os
import stat
from typing import Any, BinaryIO, Iterator


class ArtifactError(ValueError):
    """The file is not an acceptable artifact; str(e) is a message a person can act on."""


def _sniff(head: bytes) -> str | None:
    """What a file that is not what we expected actually is, from its first bytes (None: no idea)."""
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "it is a zip archive (torch.save output or a .pt2 archive?)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "it is a Python pickle (torch.save output?); pickles are never accepted"
    if head.startswith(b"\x89HDF"):
        return "it is an HDF5 file"
    if head.startswith(b"\x93NUMPY"):
        return "it is a numpy .npy file"
    if len(head) >= 9 and head[8:9] == b"{":
        return "it looks like a safetensors file"
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@contextlib.contextmanager
def _open_regular(path: str | os.PathLike, kind: str) -> Iterator[BinaryIO]:
    """Open a non-empty regular file (not a device, FIFO or directory) for reading."""
    name = os.fspath(path)
    try:
        f = open(name, "rb")
    except OSError as e:
        raise ArtifactError(f"cannot open {name}: {e.strerror}") from None
    with f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{name} is not a regular file")
        if st.st_size == 0:
            raise ArtifactError(f"not a {kind}: the file is empty")
        yield f
