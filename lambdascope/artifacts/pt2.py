"""What a `.pt2` (torch.export archive) may contain, and `inspect_pt2`: exactly the members a plain
`torch.export.save` of one tensor-only program named "model" writes. Refuses AOTInductor code,
legacy pickled payloads, extra programs and unknown members; checks the weights/constants payload
configs (no `use_pickle`, no pickled-object files, dense tensors whose bytes are all there) and the
program's user inputs/outputs; hands the program JSON to `program`, the sample inputs to
`pickle_scan`, and every zip-level concern to `archive`. Returns the plan the loader re-packs from."""
from __future__ import annotations

import math
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO

from lambdascope.artifacts.archive import _Pt2Reader
from lambdascope.artifacts.common import ArtifactError, _is_int, _open_regular
from lambdascope.artifacts.pickle_scan import _MAX_SAMPLE_INPUTS_BYTES, _load_sample_inputs
from lambdascope.artifacts.program import _check_guard_code, _dims, _dtype_of, _walk_program


@dataclass(frozen=True)
class ExportInfo:
    """What an inspected `.pt2` holds. A dynamic dimension is reported as -1."""

    input_shapes: list[tuple[int, ...]]
    output_shapes: list[tuple[int, ...]]
    input_dtypes: list[str]
    output_dtypes: list[str]
    num_parameters: int  # elements in parameters
    num_buffers: int  # elements in buffers and tensor constants
    num_nodes: int  # operator calls in the graph
    torch_version: str  # the torch that exported it, as the archive says


_MAX_SMALL_BYTES = 4096  # archive_format, archive_version, byteorder, .data/version, ...
_LAYOUT_STRIDED = 7

_WEIGHT_FILE = re.compile(r"weight_[0-9]+")
_CONSTANT_FILE = re.compile(r"tensor_[0-9]+")
_FIXED_MEMBERS = {
    "archive_format": b"pt2",
    "archive_version": b"0",
    "byteorder": b"little",
}
_OPTIONAL_SMALL = {".data/version", ".data/serialization_id"}
_MODEL_JSON = "models/model.json"
_WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
_CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
_SAMPLE_INPUTS = "data/sample_inputs/model.pt"


@dataclass
class _Pt2Plan:
    root: str
    infos: dict[str, zipfile.ZipInfo]  # relative name -> member, everything torch will read
    info: ExportInfo


def _check_payload_config(
    r: _Pt2Reader, rel: str, base: str, file_re: re.Pattern[str], kind: str
) -> tuple[dict[str, zipfile.ZipInfo], int, int]:
    """Validate a weights/constants payload config; return (files it uses, param elems, other elems)."""
    cfg = r.json(rel)
    entries = cfg.get("config") if isinstance(cfg, dict) and set(cfg) == {"config"} else None
    if not isinstance(entries, dict):
        raise ArtifactError(f"{rel}: expected {{\"config\": {{...}}}}")
    used: dict[str, zipfile.ZipInfo] = {}
    n_param = n_other = 0
    for fqn, p in entries.items():
        what = f"{kind} {fqn!r}"
        if not isinstance(p, dict):
            raise ArtifactError(f"{what}: malformed payload entry")
        if p.get("use_pickle") is not False:
            raise ArtifactError(
                f"{what} is stored as a pickle (use_pickle); torch would unpickle it with "
                "weights_only=False, which can run arbitrary code. Re-export with plain tensors "
                "(torch.export.save writes them as raw bytes)."
            )
        path_name = p.get("path_name")
        if not isinstance(path_name, str) or not file_re.fullmatch(path_name):
            shown = path_name if isinstance(path_name, str) else type(path_name).__name__
            hint = (
                " (pickled Python/TorchScript objects are not accepted)"
                if isinstance(path_name, str) and path_name.startswith(("custom_obj_", "opaque_obj_"))
                else ""
            )
            raise ArtifactError(f"{what}: unexpected payload file {shown!r}{hint}")
        if not isinstance(p.get("is_param"), bool):
            raise ArtifactError(f"{what}: is_param must be true or false")
        tm = p.get("tensor_meta")
        if not isinstance(tm, dict):
            raise ArtifactError(f"{what}: missing tensor metadata")
        dname, itemsize = _dtype_of(tm, what)
        sizes = _dims(tm, what, allow_symbolic=False)
        strides = _dims({"sizes": tm.get("strides")}, what, allow_symbolic=False)
        off = tm.get("storage_offset")
        if len(strides) != len(sizes) or not (isinstance(off, dict) and _is_int(off.get("as_int")) and off["as_int"] >= 0):
            raise ArtifactError(f"{what}: malformed strides or storage offset")
        dev = tm.get("device")
        if not (isinstance(dev, dict) and dev.get("type") in ("cpu", "cuda")):
            raise ArtifactError(f"{what}: device must be cpu or cuda")
        if tm.get("layout") != _LAYOUT_STRIDED or not isinstance(tm.get("requires_grad"), bool):
            raise ArtifactError(f"{what}: only dense (strided) tensors are accepted")
        member = base + path_name
        if member not in r.members:
            raise ArtifactError(f"{what}: its data file {member} is missing")
        nbytes = r.members[member].file_size
        numel = math.prod(sizes)
        if nbytes % itemsize:
            raise ArtifactError(f"{what}: {member} is not a whole number of {dname} elements")
        if numel:
            extent = off["as_int"] + sum((s - 1) * st for s, st in zip(sizes, strides)) + 1
            if extent * itemsize > nbytes:
                raise ArtifactError(
                    f"{what}: {list(sizes)} {dname} needs {extent * itemsize} bytes but {member} "
                    f"has {nbytes}"
                )
        used[member] = r.members[member]
        if p["is_param"]:
            n_param += numel
        else:
            n_other += numel
    return used, n_param, n_other


def _inspect_open_pt2(f: BinaryIO, max_uncompressed_bytes: int) -> tuple[_Pt2Plan, Any]:
    """Inspect an open archive; return the plan (members torch may read) and the sample inputs."""
    from torch._export.serde.schema import SCHEMA_VERSION

    r = _Pt2Reader(f, max_uncompressed_bytes)
    names = set(r.members)

    if any(n.startswith("data/aotinductor/") for n in names):
        raise ArtifactError(
            "the archive holds AOTInductor compiled code (data/aotinductor/); torch would load it as "
            "a native library. Upload a plain torch.export.save archive."
        )
    models = sorted(n for n in names if n.startswith("models/"))
    if models != [_MODEL_JSON]:
        if not models:
            raise ArtifactError(
                "not a torch.export archive: no models/<name>.json (save with torch.export.save)"
            )
        raise ArtifactError(
            f"the archive must hold exactly one program, models/model.json; it has {models[:5]}"
        )
    for legacy in ("data/weights/model.pt", "data/constants/model.pt"):
        if legacy in names:
            raise ArtifactError(
                f"the archive uses the legacy pickled format ({legacy}); re-export with a current "
                "torch.export.save"
            )

    plan: dict[str, zipfile.ZipInfo] = {}
    for rel, want in _FIXED_MEMBERS.items():
        if rel not in names:
            if rel == "byteorder":
                continue
            raise ArtifactError(f"not a torch.export archive: {rel} is missing")
        got = r.read(rel, _MAX_SMALL_BYTES)
        if got != want:
            raise ArtifactError(f"{rel} is {got[:40]!r}; expected {want!r}")
        plan[rel] = r.members[rel]
    for rel in _OPTIONAL_SMALL & names:
        got = r.read(rel, _MAX_SMALL_BYTES)
        if not re.fullmatch(rb"[0-9]{1,64}\n?", got):
            raise ArtifactError(f"{rel} is malformed")
        plan[rel] = r.members[rel]
    for rel in (_WEIGHTS_CONFIG, _CONSTANTS_CONFIG, _SAMPLE_INPUTS):
        if rel not in names:
            raise ArtifactError(f"not a complete torch.export archive: {rel} is missing")
        plan[rel] = r.members[rel]
    plan[_MODEL_JSON] = r.members[_MODEL_JSON]

    wfiles, n_param, n_buf = _check_payload_config(
        r, _WEIGHTS_CONFIG, "data/weights/", _WEIGHT_FILE, "weight"
    )
    cfiles, c_param, c_buf = _check_payload_config(
        r, _CONSTANTS_CONFIG, "data/constants/", _CONSTANT_FILE, "constant"
    )
    plan.update(wfiles)
    plan.update(cfiles)

    ignored = {n for n in names if n.startswith("extra/")}  # strings; never handed to torch
    unexpected = sorted(names - set(plan) - ignored)
    if unexpected:
        hint = ""
        if any(os.path.basename(n).startswith(("custom_obj_", "opaque_obj_")) for n in unexpected):
            hint = " (pickled Python/TorchScript objects are not accepted)"
        raise ArtifactError(f"the archive has unexpected members{hint}: {unexpected[:5]}")

    prog = r.json(_MODEL_JSON)
    if not isinstance(prog, dict):
        raise ArtifactError("models/model.json is not a JSON object")
    sv = prog.get("schema_version")
    if not (isinstance(sv, dict) and sv.get("major") == SCHEMA_VERSION[0]):
        raise ArtifactError(
            f"the program's schema version {sv!r} does not match this torch ({SCHEMA_VERSION[0]}.x); "
            "export with the torch version the platform documents"
        )
    guards = prog.get("guards_code", [])
    if not isinstance(guards, list):
        raise ArtifactError("the program's guards_code is malformed")
    for g in guards:
        _check_guard_code(g)
    rc = prog.get("range_constraints", {})
    if not isinstance(rc, dict):
        raise ArtifactError("the program's range_constraints are malformed")
    counts: dict[str, int] = {}
    _walk_program(prog, counts)

    try:
        graph = prog["graph_module"]["graph"]
        tvals = graph["tensor_values"]
        sig = prog["graph_module"]["signature"]
        in_specs, out_specs = sig["input_specs"], sig["output_specs"]
    except (KeyError, TypeError):
        raise ArtifactError("models/model.json does not describe an exported program") from None

    def user_tensor(arg: Any, what: str) -> tuple[tuple[int, ...], str]:
        at = arg.get("as_tensor") if isinstance(arg, dict) else None
        name = at.get("name") if isinstance(at, dict) else None
        if not isinstance(name, str) or name not in tvals:
            kind = next(iter(arg), "?") if isinstance(arg, dict) and arg else "?"
            raise ArtifactError(
                f"{what} is not a tensor ({kind}); only tensor inputs and outputs are accepted"
            )
        tm = tvals[name]
        return _dims(tm, what, allow_symbolic=True), _dtype_of(tm, what)[0]

    if not (isinstance(tvals, dict) and isinstance(in_specs, list) and isinstance(out_specs, list)):
        raise ArtifactError("models/model.json does not describe an exported program")
    ins, outs = [], []
    for spec in in_specs:
        if isinstance(spec, dict) and isinstance(spec.get("user_input"), dict):
            ins.append(user_tensor(spec["user_input"].get("arg"), f"user input #{len(ins)}"))
        elif not (isinstance(spec, dict) and len(spec) == 1):
            raise ArtifactError("models/model.json has a malformed input spec")
    for spec in out_specs:
        if isinstance(spec, dict) and isinstance(spec.get("user_output"), dict):
            outs.append(user_tensor(spec["user_output"].get("arg"), f"user output #{len(outs)}"))
        elif not (isinstance(spec, dict) and len(spec) == 1):
            raise ArtifactError("models/model.json has a malformed output spec")
    if not ins or not outs:
        raise ArtifactError("the program must take at least one tensor input and return a tensor")

    sample = _load_sample_inputs(r.read(_SAMPLE_INPUTS, _MAX_SAMPLE_INPUTS_BYTES))
    for rel in plan:
        r.verify(rel)  # CRC of every member torch will read, streamed

    tv = prog.get("torch_version")
    info = ExportInfo(
        input_shapes=[s for s, _ in ins],
        output_shapes=[s for s, _ in outs],
        input_dtypes=[d for _, d in ins],
        output_dtypes=[d for _, d in outs],
        num_parameters=n_param + c_param,
        num_buffers=n_buf + c_buf,
        num_nodes=counts.get("nodes", 0),
        torch_version=tv if isinstance(tv, str) else "",
    )
    return _Pt2Plan(root=r.root, infos=plan, info=info), sample


def inspect_pt2(path: str | os.PathLike, *, max_uncompressed_bytes: int = 8 * 2**30) -> ExportInfo:
    """Inspect a `torch.export` archive without torch's loader; refuse anything that could run code.

    Zip checks: names inside one top folder, no absolute paths / '..' / backslashes / case-folded
    duplicates, members back to back from byte 0 (no overlap, no hidden data, no comment), stored or
    deflated only, bounded member count, total size and ratio, every member's CRC streamed.

    Content: exactly the members `torch.export.save` writes for one program named "model". Refused:
    `use_pickle` weights/constants and pickled-object constants (torch unpickles those with
    weights_only=False or pickle.loads), legacy `.pt` payloads, AOTInductor code, custom objects,
    subgraphs, graph targets other than ATen ops and basic scalar ops, symbolic-shape strings
    outside the `srepr` grammar (sympify evals them), and guard strings that are not shape arithmetic
    (torch execs them).

    Sample inputs: torch loads them weights-only and, if that fails, falls back to an unrestricted
    unpickler. We do not strip them (torch's example inputs are part of the program); instead the
    pickle must (a) name only tensor-rebuilding globals, checked statically without unpickling, and
    (b) pass `torch.load(weights_only=True)` here. A file that passes can never reach the fallback;
    `load_exported_program` additionally re-saves what the weights-only load returned.
    """
    with _open_regular(path, ".pt2 archive") as f:
        plan, _ = _inspect_open_pt2(f, max_uncompressed_bytes)
    return plan.info
