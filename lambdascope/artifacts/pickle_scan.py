"""The one pickle an accepted `.pt2` holds, its sample inputs: torch loads them weights-only and,
when that fails, falls back to an unrestricted unpickler. So the pickle is first scanned statically
(opcodes walked with pickletools, nothing unpickled): only tensor-rebuilding globals from an
allow-list, no INST/OBJ/EXT/PERSID, no globals built from computed strings. Then it must pass a
weights-only load here, and what that returns must be a tree of dense tensors and plain scalars."""
from __future__ import annotations

import io
import pickletools
import re
import zipfile
from typing import Any

from lambdascope.artifacts.common import ArtifactError

_MAX_SAMPLE_INPUTS_BYTES = 64 * 2**20

# Globals a pickle of sample inputs (tensors in tuples/dicts) may name.
_PICKLE_GLOBALS = frozenset(
    {"torch._utils _rebuild_tensor_v2", "collections OrderedDict", "torch._utils _rebuild_tensor"}
)
_PICKLE_STORAGE = re.compile(r"torch [A-Za-z0-9_]*Storage")
_PICKLE_DENY_OPS = frozenset({"INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID"})
_PICKLE_STR_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_PICKLE_MEMO_OPS = frozenset({"MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"})


def _check_pickle_globals(data: bytes, what: str) -> None:
    """Statically check a pickle (no unpickling): only tensor-rebuilding globals may appear."""
    try:
        ops = list(pickletools.genops(data))
    except Exception as e:  # noqa: BLE001 - malformed pickle of any kind
        raise ArtifactError(f"{what}: malformed pickle ({e})") from None
    for idx, (op, arg, _pos) in enumerate(ops):
        if op.name in _PICKLE_DENY_OPS:
            raise ArtifactError(f"{what}: the pickle uses {op.name}, which tensors never need")
        name = None
        if op.name == "GLOBAL":
            name = str(arg).replace("\n", " ")
        elif op.name == "STACK_GLOBAL":
            strs = []
            j = idx - 1
            while j >= 0 and len(strs) < 2:
                if ops[j][0].name in _PICKLE_MEMO_OPS:
                    j -= 1
                    continue
                if ops[j][0].name not in _PICKLE_STR_OPS:
                    break
                strs.append(str(ops[j][1]))
                j -= 1
            if len(strs) != 2:
                raise ArtifactError(f"{what}: the pickle builds a global from computed strings")
            name = f"{strs[1]} {strs[0]}"
        if name is not None and name not in _PICKLE_GLOBALS and not _PICKLE_STORAGE.fullmatch(name):
            raise ArtifactError(
                f"{what}: the pickle refers to {name.replace(' ', '.')!r}; only tensors are accepted"
            )


def _check_tensor_tree(obj: Any, what: str, depth: int = 0) -> None:
    import torch

    if depth > 32:
        raise ArtifactError(f"{what}: nested too deeply")
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided:
            raise ArtifactError(f"{what}: only dense tensors are accepted")
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            _check_tensor_tree(v, what, depth + 1)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ArtifactError(f"{what}: dict keys must be strings")
            _check_tensor_tree(v, what, depth + 1)
    elif obj is not None and type(obj) not in (int, float, bool, str):
        raise ArtifactError(f"{what}: holds a {type(obj).__name__}; only tensors are accepted")


def _load_sample_inputs(data: bytes) -> Any:
    """Weights-only load of the archive's sample inputs, after a static check of the pickle.

    torch falls back to an unrestricted unpickler when this weights-only load fails, so inspection
    insists it succeeds (and the worker re-saves what it loaded, so torch only ever sees our bytes).
    """
    import torch

    what = "the archive's sample inputs (data/sample_inputs/model.pt)"
    if not data:
        return None
    if not data.startswith(b"PK\x03\x04"):
        raise ArtifactError(f"{what}: not in torch.save's zip format")
    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
        inner_infos = inner.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise ArtifactError(f"{what}: not a readable zip: {e}") from None
    if sum(zi.file_size for zi in inner_infos) > 4 * _MAX_SAMPLE_INPUTS_BYTES:
        raise ArtifactError(f"{what}: too large")
    names = [zi.filename for zi in inner_infos]
    if len({n.lower() for n in names}) != len(names):
        raise ArtifactError(f"{what}: repeated member names")
    pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1 or not names[0].startswith(pkls[0].split("/")[0] + "/"):
        raise ArtifactError(f"{what}: not a torch.save archive")
    try:
        pkl = inner.read(pkls[0])
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ArtifactError(f"{what}: corrupt: {e}") from None
    _check_pickle_globals(pkl, what)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch would fall back to weights_only=False here
        raise ArtifactError(
            f"{what}: fails a weights-only load ({type(e).__name__}); torch would then unpickle it "
            "unrestricted, so the archive is refused. Export with plain tensor inputs."
        ) from None
    if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], tuple) and isinstance(obj[1], dict)):
        raise ArtifactError(f"{what}: expected (args, kwargs)")
    _check_tensor_tree(obj, what)
    return obj
