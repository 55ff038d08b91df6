"""Loading an inspected `.pt2` into an ExportedProgram without letting torch run user code: the
archive is inspected (`pt2`), re-packed by us from exactly the inspected members, and read with
torch's new-format loader only (never `torch.export.load`, whose legacy fallback unpickles), while
torch's dangerous calls are patched to raise: unrestricted `torch.load`, `pickle.loads`, the
TorchScript object unpickler, AOTInductor loading, and `sympify` of unchecked strings. Guard code is
checked again on the loaded program. Meant for the sandboxed worker process."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import threading
import types
import zipfile
from typing import TYPE_CHECKING, Any, Iterator

from lambdascope.artifacts.archive import _CHUNK
from lambdascope.artifacts.common import ArtifactError, _open_regular
from lambdascope.artifacts.program import _check_guard_code, _check_sym_expr
from lambdascope.artifacts.pt2 import _SAMPLE_INPUTS, _inspect_open_pt2

if TYPE_CHECKING:  # torch is imported lazily: the registry may inspect without loading models
    import torch


_guard_lock = threading.Lock()


def _refuse(what: str):
    def refuse(*_a: Any, **_k: Any) -> Any:
        raise ArtifactError(f"refused to {what} while loading a user archive")

    return refuse


class _CheckedSympy(types.ModuleType):
    """Stands in for `sympy` inside torch's deserializer: sympify only takes checked strings."""

    def __init__(self, real: types.ModuleType):
        super().__init__("sympy")
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sympify(self, a: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(a, str):
            _check_sym_expr(a)
        return self._real.sympify(a, *args, **kwargs)


@contextlib.contextmanager
def _unsafe_loading_disabled() -> Iterator[None]:
    """While active, torch's load paths cannot unpickle unrestricted, eval shapes or load AOTI code.

    Patches process-wide attributes (under a lock); meant for the loading worker process.
    """
    import pickle

    import torch
    import torch._export.serde.serialize as ser
    import torch.export.pt2_archive._package as pkg

    real_load = torch.load

    def weights_only_load(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs.get("weights_only") is not True or kwargs.get("pickle_module") is not None:
            raise ArtifactError(
                "refused to unpickle with weights_only=False while loading a user archive"
            )
        return real_load(f, map_location=map_location, **kwargs)

    no_pickle = types.SimpleNamespace(
        loads=_refuse("unpickle an object"), load=_refuse("unpickle an object"),
        dumps=pickle.dumps, dump=pickle.dump,
    )
    patches = [
        (torch, "load", weights_only_load),
        (pkg, "pickle", no_pickle),
        (pkg, "_load_aoti", _refuse("load AOTInductor code")),
        (torch._C, "_pickle_load_obj", _refuse("unpickle a TorchScript object")),
        (ser, "sympy", _CheckedSympy(ser.sympy)),
    ]
    with _guard_lock:
        saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
        try:
            for obj, name, new in patches:
                setattr(obj, name, new)
            yield
        finally:
            for obj, name, old in saved:
                setattr(obj, name, old)


def _guarded_load_pt2(path: str | os.PathLike) -> "torch.export.ExportedProgram":
    """torch's new-format archive loader under `_unsafe_loading_disabled` (no inspection, no repack).

    Never torch.export.load: on failure that retries the legacy format, which unpickles.
    """
    from torch.export.pt2_archive._package import load_pt2

    with _unsafe_loading_disabled():
        try:
            contents = load_pt2(os.fspath(path))
        except ArtifactError:
            raise
        except Exception as e:  # noqa: BLE001 - torch raises many kinds on bad input
            raise ArtifactError(f"torch could not load the program: {type(e).__name__}: {e}") from None
    if contents.aoti_runners or set(contents.exported_programs) != {"model"}:
        raise ArtifactError("the archive does not hold exactly one exported program named 'model'")
    ep = contents.exported_programs["model"]
    for g in ep._guards_code:
        _check_guard_code(g)
    return ep


def load_exported_program(
    path: str | os.PathLike, *, max_uncompressed_bytes: int = 8 * 2**30
) -> "torch.export.ExportedProgram":
    """Inspect a `.pt2`, then load it so that no unrestricted unpickling or eval can happen.

    The archive is opened once; `inspect_pt2`'s checks run on that handle; then a fresh archive is
    written to a private temporary directory from exactly the inspected members (streamed), with the
    sample inputs re-saved from their weights-only load. torch's new-format loader reads that copy
    under `_unsafe_loading_disabled`. Run this in the sandboxed worker process.
    """
    import torch

    with _open_regular(path, ".pt2 archive") as f:
        plan, sample = _inspect_open_pt2(f, max_uncompressed_bytes)
        zf = zipfile.ZipFile(f)
        with tempfile.TemporaryDirectory(prefix="lambdascope-pt2-") as tmp:
            copy = os.path.join(tmp, "model.pt2")
            with zipfile.ZipFile(copy, "w", zipfile.ZIP_STORED) as out:
                for rel, zi in plan.infos.items():
                    dst_info = zipfile.ZipInfo("archive/" + rel, date_time=(1980, 1, 1, 0, 0, 0))
                    dst_info.compress_type = zipfile.ZIP_STORED
                    if rel == _SAMPLE_INPUTS:
                        buf = io.BytesIO()
                        if sample is not None:
                            torch.save(sample, buf, pickle_protocol=2)
                        out.writestr(dst_info, buf.getvalue())
                        continue
                    dst_info.file_size = zi.file_size
                    with zf.open(zi) as src, out.open(
                        dst_info, "w", force_zip64=zi.file_size >= zipfile.ZIP64_LIMIT
                    ) as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
            return _guarded_load_pt2(copy)
