"""safetensors files (model weights, and datasets underneath): a strict parser of the header that
checks dtypes, shapes and byte spans before any tensor is read, and a loader that re-checks what
the safetensors library returns against it. Nothing here is ever unpickled."""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lambdascope.artifacts.common import ArtifactError, _is_int, _open_regular, _sniff

if TYPE_CHECKING:  # torch is imported lazily: the registry may inspect without loading models
    import torch


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's dtype (torch's name, e.g. ``"float32"``) and shape."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


# safetensors dtype -> (torch dtype name, bytes per element). Sub-byte types are refused.
_ST_DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 1),
    "U8": ("uint8", 1),
    "I8": ("int8", 1),
    "I16": ("int16", 2),
    "U16": ("uint16", 2),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I32": ("int32", 4),
    "U32": ("uint32", 4),
    "F32": ("float32", 4),
    "F64": ("float64", 8),
    "I64": ("int64", 8),
    "U64": ("uint64", 8),
    "C64": ("complex64", 8),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 1),
}


def _json_object_no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ArtifactError(f"safetensors header repeats the key {k!r}")
        out[k] = v
    return out


def inspect_safetensors(
    path: str | os.PathLike, *, max_header_bytes: int = 100 * 2**20
) -> dict[str, TensorInfo]:
    """Parse and strictly validate a safetensors file's header; return its tensors' dtypes/shapes.

    Reads only the header. Checks: header length within the file and `max_header_bytes`, UTF-8
    JSON object (no repeated keys), `__metadata__` a str->str map, known dtypes, integer shapes
    >= 0, `data_offsets` of the right length, non-overlapping and covering the data exactly.
    """
    with _open_regular(path, "safetensors file") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise ArtifactError(
                f"not a safetensors file: {_sniff(head) or 'too short'} ({size} bytes; a safetensors "
                "file starts with an 8-byte header length)"
            )
        (n,) = struct.unpack("<Q", head)
        if n > max_header_bytes or 8 + n > size:
            why = _sniff(head)
            if why is None:
                why = (
                    f"the header length field says {n} bytes but the file has {size - 8} bytes after it "
                    "(truncated or not safetensors)"
                    if n <= max_header_bytes
                    else f"the header length field says {n} bytes, over the {max_header_bytes}-byte limit"
                )
            raise ArtifactError(f"not a valid safetensors file: {why}")
        if n < 2:
            raise ArtifactError(f"not a valid safetensors file: header of {n} bytes is too short")
        raw = f.read(n)
    if len(raw) != n:
        raise ArtifactError("safetensors file is truncated inside its header")
    if raw[:1] != b"{":
        raise ArtifactError(
            f"not a valid safetensors file: {_sniff(head) or 'the header is not a JSON object'}"
        )
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_json_object_no_dupes)
    except UnicodeDecodeError:
        raise ArtifactError("safetensors header is not valid UTF-8") from None
    except ArtifactError:
        raise
    except (ValueError, RecursionError) as e:
        raise ArtifactError(f"safetensors header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise ArtifactError("safetensors header is not a JSON object")

    meta = header.pop("__metadata__", None)
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    ):
        raise ArtifactError("safetensors __metadata__ must map strings to strings")

    data_len = size - 8 - n
    out: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for tname, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ArtifactError(
                f"tensor {tname!r}: header entry must have exactly dtype, shape and data_offsets"
            )
        dt, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dt not in _ST_DTYPES:
            raise ArtifactError(
                f"tensor {tname!r}: unknown dtype {dt!r} (accepted: {', '.join(sorted(_ST_DTYPES))})"
            )
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise ArtifactError(f"tensor {tname!r}: shape {shape!r} must be a list of integers >= 0")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs)):
            raise ArtifactError(f"tensor {tname!r}: data_offsets {offs!r} must be [begin, end] integers")
        begin, end = offs
        torch_name, itemsize = _ST_DTYPES[dt]
        nbytes = math.prod(shape) * itemsize
        if not 0 <= begin <= end or end - begin != nbytes:
            raise ArtifactError(
                f"tensor {tname!r}: data_offsets [{begin}, {end}] do not hold {dt} {shape} "
                f"({nbytes} bytes)"
            )
        if end > data_len:
            raise ArtifactError(
                f"tensor {tname!r}: data ends at byte {end} but the file holds only {data_len} data "
                "bytes (truncated?)"
            )
        spans.append((begin, end, tname))
        out[tname] = TensorInfo(torch_name, tuple(shape))

    pos, prev = 0, None
    for begin, end, tname in sorted(spans):
        if begin < pos:
            raise ArtifactError(f"tensors {prev!r} and {tname!r} overlap in the data section")
        if begin > pos:
            raise ArtifactError(f"the data section has unused bytes {pos}..{begin} before {tname!r}")
        pos, prev = end, tname
    if pos != data_len:
        raise ArtifactError(
            f"the file has {data_len - pos} bytes after the last tensor's data (corrupt or padded)"
        )
    return out


def load_safetensors(path: str | os.PathLike) -> dict[str, "torch.Tensor"]:
    """Inspect, then load a safetensors file into CPU tensors (read into memory, not mmapped)."""
    from safetensors.torch import load_file

    info = inspect_safetensors(path)
    try:
        tensors = load_file(os.fspath(path), backend="pread")
    except Exception as e:  # noqa: BLE001 - any loader failure is a bad artifact
        raise ArtifactError(f"safetensors could not load the file: {e}") from None
    for k, t in tensors.items():
        want = info.get(k)
        if want is None or str(t.dtype).removeprefix("torch.") != want.dtype or tuple(t.shape) != want.shape:
            raise ArtifactError("the file changed while it was being loaded")
    if set(tensors) != set(info):
        raise ArtifactError("the file changed while it was being loaded")
    return tensors
