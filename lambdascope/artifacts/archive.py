"""The `.pt2` file as a zip archive, before any of its content means anything: one reader that opens
it once and refuses unsafe or ambiguous zips (member names, duplicates, encryption, compression,
member count, total size and ratio, layout: overlaps, hidden bytes, comments), then reads members
with a size limit and streams their CRCs. Of torch.export it knows only that every member lies in
one top folder; which members may be there is `pt2`'s business."""
from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from typing import Any, BinaryIO

from lambdascope.artifacts.common import ArtifactError, _sniff

_MAX_MEMBERS = 65_536
_MAX_JSON_BYTES = 256 * 2**20
_MAX_RATIO = 100  # uncompressed : file size, beyond 64 MiB uncompressed
_CHUNK = 2**20

_MEMBER_NAME = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")


class _Pt2Reader:
    """The archive, opened once; every check reads through this one file handle."""

    def __init__(self, f: BinaryIO, max_uncompressed_bytes: int):
        size = os.fstat(f.fileno()).st_size
        head = f.read(16)
        f.seek(0)
        if head[:4] != b"PK\x03\x04":
            raise ArtifactError(
                f"not a .pt2 archive (a zip file): {_sniff(head) or 'unrecognized content'}"
            )
        try:
            self.zf = zipfile.ZipFile(f)
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
            raise ArtifactError(f"not a readable zip archive: {e}") from None
        self.f = f
        if self.zf.comment:
            raise ArtifactError("the zip archive has a comment; torch.export.save writes none")
        if not infos:
            raise ArtifactError("the zip archive is empty")
        if len(infos) > _MAX_MEMBERS:
            raise ArtifactError(f"the archive has {len(infos)} members (limit {_MAX_MEMBERS})")

        seen: set[str] = set()
        total = 0
        for zi in infos:
            n = zi.filename
            if n.startswith("/") or "\\" in n or ":" in n or not _MEMBER_NAME.fullmatch(n):
                raise ArtifactError(f"the archive has an unsafe member name {n[:120]!r}")
            if any(part in (".", "..") for part in n.split("/")):
                raise ArtifactError(f"the archive has a member name with '..' or '.': {n[:120]!r}")
            if n.lower() in seen:
                raise ArtifactError(f"the archive has two members named {n[:120]!r}")
            seen.add(n.lower())
            if zi.flag_bits & 0x1:
                raise ArtifactError(f"member {n!r} is encrypted")
            if zi.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ArtifactError(f"member {n!r} uses an unsupported compression method")
            total += zi.file_size
        if total > max_uncompressed_bytes:
            raise ArtifactError(
                f"the archive unpacks to {total} bytes, over the {max_uncompressed_bytes}-byte limit"
            )
        if total > 64 * 2**20 and total > _MAX_RATIO * max(size, 1):
            raise ArtifactError(
                f"the archive claims {total} bytes from a {size}-byte file (a zip bomb?)"
            )
        self._check_layout(infos, size)

        flat = [zi.filename for zi in infos if "/" not in zi.filename]
        if flat:
            raise ArtifactError(
                f"not a torch.export archive: member {flat[0]!r} is not inside a top folder (an old "
                "torch.export format or some other zip?); save with a current torch.export.save"
            )
        root = infos[0].filename.split("/", 1)[0]
        self.root = root
        self.members: dict[str, zipfile.ZipInfo] = {}
        for zi in infos:
            if not zi.filename.startswith(root + "/"):
                raise ArtifactError(
                    f"member {zi.filename!r} is outside the archive's top folder {root!r}"
                )
            self.members[zi.filename[len(root) + 1:]] = zi

    def _check_layout(self, infos: list[zipfile.ZipInfo], size: int) -> None:
        """Members start at byte 0, follow each other without overlap or gaps of hidden data."""
        pos = 0
        for zi in sorted(infos, key=lambda z: z.header_offset):
            if zi.header_offset != pos:
                raise ArtifactError(
                    "the zip archive has overlapping members or hidden bytes between them"
                )
            self.f.seek(zi.header_offset)
            lh = self.f.read(30)
            if len(lh) != 30 or lh[:4] != b"PK\x03\x04":
                raise ArtifactError("the zip archive has a corrupt local header")
            name_len, extra_len = struct.unpack("<HH", lh[26:30])
            pos = zi.header_offset + 30 + name_len + extra_len + zi.compress_size
            if zi.flag_bits & 0x8:  # data descriptor follows the data
                self.f.seek(pos)
                sig = self.f.read(4)
                dd = 12 if sig != b"PK\x07\x08" else 16
                if zi.file_size >= 0xFFFFFFFF or zi.compress_size >= 0xFFFFFFFF:
                    dd += 8
                pos += dd
            if pos > size:
                raise ArtifactError("the zip archive is truncated")
        if pos != getattr(self.zf, "start_dir", pos):
            raise ArtifactError("the zip archive has hidden bytes before its central directory")
        self.f.seek(0)

    def read(self, rel: str, limit: int) -> bytes:
        zi = self.members[rel]
        if zi.file_size > limit:
            raise ArtifactError(f"member {rel!r} is {zi.file_size} bytes (limit {limit})")
        try:
            return self.zf.read(zi)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise ArtifactError(f"member {rel!r} is corrupt: {e}") from None

    def verify(self, rel: str) -> None:
        """Stream a member through zipfile's CRC check without holding it in memory."""
        try:
            with self.zf.open(self.members[rel]) as src:
                while src.read(_CHUNK):
                    pass
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise ArtifactError(f"member {rel!r} is corrupt: {e}") from None

    def json(self, rel: str) -> Any:
        try:
            return json.loads(self.read(rel, _MAX_JSON_BYTES))
        except (ValueError, RecursionError) as e:
            raise ArtifactError(f"{rel} is not valid JSON: {e}") from None
