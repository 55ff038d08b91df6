"""lambdascope.artifacts.archive (and the file checks in common): `.pt2` uploads that are not safe,
unambiguous zips are refused before anything looks at their content: not a zip or empty, unsafe or
duplicate member names, bad CRCs, zip bombs, more bytes than the size limit."""
from __future__ import annotations

import random
import struct
import zipfile
from pathlib import Path

import pytest

from lambdascope.artifacts import ArtifactError, inspect_pt2
from tests.artifact_samples import expect, members, pt2_refused, rewrite, valid_st, write_zip
from tests.artifact_samples import legit  # noqa: F401 - a fixture, used by name


def _flip_weight_byte(pt2: Path, dst: Path) -> Path:
    data = bytearray(pt2.read_bytes())
    with zipfile.ZipFile(pt2) as z:
        zi = next(i for i in z.infolist() if i.filename.endswith("data/weights/weight_0"))
    name_len, extra_len = struct.unpack("<HH", data[zi.header_offset + 26 : zi.header_offset + 30])
    data[zi.header_offset + 30 + name_len + extra_len + 5] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def _duplicate_member(pt2: Path, dst: Path) -> Path:
    root, items = members(pt2)
    with pytest.warns(UserWarning), zipfile.ZipFile(dst, "w") as out:
        for n, b in items:
            out.writestr(n, b)
        out.writestr(f"{root}/models/model.json", b"{}")
    return dst


BAD_ZIPS = {
    "empty": (lambda pt2, d: (d.write_bytes(b""), d)[1], ["empty"]),
    "random": (lambda pt2, d: (d.write_bytes(random.Random(1).randbytes(2048)), d)[1], ["not a .pt2 archive"]),
    "safetensors": (lambda pt2, d: (d.write_bytes(valid_st()), d)[1], ["safetensors"]),
    "dotdot": (lambda pt2, d: rewrite(pt2, d, {"../../evil.sh": b"echo"}), ["'..'"]),
    "absolute": (lambda pt2, d: write_zip(d, {"/etc/cron.d/x": b"x"}), ["unsafe member name"]),
    "duplicate": (_duplicate_member, ["two members"]),
    "crc": (_flip_weight_byte, ["corrupt"]),
    "zip_bomb": (
        lambda pt2, d: write_zip(
            d, {**{n: b for n, b in members(pt2)[1]}, f"{members(pt2)[0]}/extra/pad": bytes(80 * 2**20)},
            zipfile.ZIP_DEFLATED,
        ),
        ["zip bomb"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ZIPS))
def test_bad_zip_rejected(case: str, legit: dict, tmp_path: Path) -> None:
    make, words = BAD_ZIPS[case]
    pt2_refused(make(legit["pt2"], tmp_path / "bad.pt2"), *words)


def test_pt2_size_limit(legit: dict) -> None:
    with pytest.raises(ArtifactError) as e:
        inspect_pt2(legit["pt2"], max_uncompressed_bytes=1000)
    expect(e, "limit")
