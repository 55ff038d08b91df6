"""Inspect users' artifacts before anything trusts them: safetensors weights, datasets, `.pt2` models.

Nothing here unpickles user data with a general unpickler. The `inspect_*` functions are cheap and
are meant to run on every upload (registry side); `load_*` re-run the inspection and then load.

`torch.export.load` is NOT safe on untrusted files. In torch 2.13 a crafted `.pt2` reaches Python
code execution on load (or on the first call of the loaded program) through:

1. weights whose payload config says ``use_pickle`` -> ``torch.load(weights_only=False)``;
2. tensor constants whose payload config says ``use_pickle`` -> ``torch.load(weights_only=False)``;
3. sample inputs that fail a weights-only load -> fallback ``torch.load(weights_only=False)``;
4. constants named ``opaque_obj_*`` -> ``pickle.loads`` (``custom_obj_*`` -> the TorchScript
   unpickler: not shown exploitable, refused all the same);
5. legacy ``data/weights/<model>.pt`` / ``data/constants/<model>.pt`` files -> the same fallback
   as (3);
6. symbolic-shape strings (``expr_str``) in the program JSON -> ``sympy.sympify``, which ``eval``s;
7. ``guards_code`` strings in the program JSON -> ``exec`` when ``ep.module()`` is first called;
8. ``data/aotinductor/`` members -> a native shared library is loaded (by design; not crafted in
   the tests, as it needs a compiler);
9. a file without a new-format model -> ``torch.export.load``'s legacy-format path, which unpickles.

`inspect_pt2` accepts only the members and config values a plain ``torch.export.save`` of a
tensor-only program writes, and rejects every trigger above. `load_exported_program` then loads a
copy of the archive that it re-packs itself from the inspected members (so torch's zip reader never
sees the user's bytes, and there is no room for a zip-parser disagreement), via torch's new-format
loader only, with the dangerous calls temporarily made to raise as a second line of defence.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickletools
import re
import shutil
import stat
import struct
import tempfile
import threading
import types
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator

if TYPE_CHECKING:  # torch is imported lazily: the registry may inspect without loading models
    import torch


class ArtifactError(ValueError):
    """The file is not an acceptable artifact; str(e) is a message a person can act on."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's dtype (torch's name, e.g. ``"float32"``) and shape."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset of `num_examples` pairs: inputs `x` and targets `y` (leading dimension = examples)."""

    num_examples: int
    x: TensorInfo
    y: TensorInfo


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


# --------------------------------------------------------------------------------------------
# safetensors

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
_FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
_INT_DTYPES = frozenset({"uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64"})
ID_DTYPES = frozenset({"uint8", "int8", "int16", "int32", "int64"})  # inputs torch can index with


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


def _json_object_no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ArtifactError(f"safetensors header repeats the key {k!r}")
        out[k] = v
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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


def inspect_dataset(path: str | os.PathLike) -> DatasetInfo:
    """Check a dataset file: safetensors with exactly tensors `x` and `y`, same leading dim >= 1.

    `x` must be floating (float16/bfloat16/float32/float64) or, for models that take token ids,
    a signed integer type or uint8; `y` floating or integer; both at least 1-D (`x[i]` is one
    example's input, `y[i]` its target).
    """
    tensors = inspect_safetensors(path)
    missing = sorted({"x", "y"} - set(tensors))
    extra = sorted(set(tensors) - {"x", "y"})
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(repr(m) for m in missing))
        if extra:
            parts.append("unexpected " + ", ".join(repr(e) for e in extra))
        raise ArtifactError(
            "a dataset must hold exactly the tensors 'x' and 'y': " + "; ".join(parts)
        )
    x, y = tensors["x"], tensors["y"]
    if not x.shape or not y.shape:
        raise ArtifactError(
            f"x and y must be at least 1-D with examples along dim 0 (x {list(x.shape)}, y {list(y.shape)})"
        )
    if x.shape[0] != y.shape[0]:
        raise ArtifactError(
            f"x has {x.shape[0]} examples but y has {y.shape[0]} (leading dimensions must match)"
        )
    if x.shape[0] < 1:
        raise ArtifactError("the dataset has no examples (leading dimension is 0)")
    if x.dtype not in _FLOAT_DTYPES | ID_DTYPES:
        raise ArtifactError(f"x must be floating point (float16/bfloat16/float32/float64) or, for token "
                            f"ids, int64/int32/int16/int8/uint8; not {x.dtype}")
    if y.dtype not in _FLOAT_DTYPES | _INT_DTYPES:
        raise ArtifactError(f"y must be floating point or integer, not {y.dtype}")
    return DatasetInfo(num_examples=x.shape[0], x=x, y=y)


def load_dataset(path: str | os.PathLike) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Inspect, then load a dataset file; return `(x, y)`."""
    inspect_dataset(path)
    tensors = load_safetensors(path)
    return tensors["x"], tensors["y"]


# --------------------------------------------------------------------------------------------
# .pt2 (torch.export archives)

_MAX_MEMBERS = 65_536
_MAX_JSON_BYTES = 256 * 2**20
_MAX_SMALL_BYTES = 4096  # archive_format, archive_version, byteorder, .data/version, ...
_MAX_SAMPLE_INPUTS_BYTES = 64 * 2**20
_MAX_RATIO = 100  # uncompressed : file size, beyond 64 MiB uncompressed
_CHUNK = 2**20

_SCALAR_TYPES: dict[int, tuple[str, int]] = {  # torch._export.serde.schema.ScalarType
    1: ("uint8", 1), 2: ("int8", 1), 3: ("int16", 2), 4: ("int32", 4), 5: ("int64", 8),
    6: ("float16", 2), 7: ("float32", 4), 8: ("float64", 8), 9: ("complex32", 4),
    10: ("complex64", 8), 11: ("complex128", 16), 12: ("bool", 1), 13: ("bfloat16", 2),
    28: ("uint16", 2), 29: ("float8_e4m3fn", 1), 30: ("float8_e5m2", 1),
    31: ("float8_e4m3fnuz", 1), 32: ("float8_e5m2fnuz", 1), 33: ("float8_e8m0fnu", 1),
    34: ("uint32", 4), 35: ("uint64", 8),
}
_LAYOUT_STRIDED = 7

_MEMBER_NAME = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
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

# Graph call targets we resolve: ATen operator overloads and a few Python scalar ops.
_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")
_ATEN_DENY = frozenset({"from_file", "_from_file"})  # maps files named by the graph
_PY_TARGETS = frozenset(
    {f"_operator.{n}" for n in (
        "getitem add sub mul floordiv truediv mod pow neg pos abs eq ne lt le gt ge "
        "and_ or_ xor not_ invert lshift rshift"
    ).split()}
    | {f"math.{n}" for n in ("ceil", "floor", "trunc", "sqrt")}
    | {f"torch.{n}" for n in (
        "sym_int sym_float sym_max sym_min sym_not sym_ite sym_sum _sym_sqrt"
    ).split()}
)

# sympy names a serialized shape expression (sympy.srepr form) may call or mention.
_SYM_CALLS = frozenset(
    (
        "Symbol Integer Rational Float Add Mul Pow Max Min Abs Mod floor ceiling "
        "Eq Ne Lt Le Gt Ge Equality Unequality StrictLessThan StrictGreaterThan LessThan GreaterThan "
        "And Or Not Piecewise ExprCondPair IntInfinity NegativeIntInfinity "
        # torch.utils._sympy.functions, as the deserializer maps them
        "FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift "
        "PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat "
        "TruncToInt RoundToInt RoundDecimal ToFloat Identity"
    ).split()
)
_SYM_CONSTS = frozenset("oo zoo nan true false True False None int_oo".split())
_SYM_POWERS = frozenset({"Pow", "PowByNatural", "FloatPow", "LShift"})
_SYM_TOKEN = re.compile(
    r"\s*(?:(?P<num>[0-9]{1,40}(?:\.[0-9]{1,40})?(?:[eE][+-]?[0-9]{1,4})?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<str>'[A-Za-z0-9_.+\-]{0,64}')|(?P<op>[(),=\-]))"
)
_GUARD_TOKEN = re.compile(
    r"\s+|L(?:\['[A-Za-z_][A-Za-z0-9_]{0,64}'\]|\[[0-9]{1,6}\])+|\.size\(\)|\.stride\(\)"
    r"|\.storage_offset\(\)|\[[0-9]{1,6}\]|[0-9]{1,20}(?![0-9])|==|!=|<=|>=|<|>|\+|-|\*|//|%|\(|\)"
    r"|(?:and|or|not)(?![A-Za-z0-9_])"
)

# Globals a pickle of sample inputs (tensors in tuples/dicts) may name.
_PICKLE_GLOBALS = frozenset(
    {"torch._utils _rebuild_tensor_v2", "collections OrderedDict", "torch._utils _rebuild_tensor"}
)
_PICKLE_STORAGE = re.compile(r"torch [A-Za-z0-9_]*Storage")
_PICKLE_DENY_OPS = frozenset({"INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID"})
_PICKLE_STR_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_PICKLE_MEMO_OPS = frozenset({"MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"})


def _check_sym_expr(s: Any) -> None:
    """Refuse a shape-expression string that sympify could turn into anything but sympy math.

    torch's deserializer passes these strings to `sympy.sympify`, which `eval`s them. We accept
    only the `srepr` grammar torch writes: calls of known sympy/torch-sympy names on numbers, short
    quoted names, keyword flags and nested calls, so nothing but sympy constructors can run.
    Powers/shifts with a literal exponent are capped, which stops the obvious tiny-string-huge-
    integer cases; resource exhaustion in general is left to the loading worker's limits.
    """
    if not isinstance(s, str) or len(s) > 10_000:
        raise ArtifactError("a symbolic shape expression is not a string of reasonable length")
    toks: list[tuple[str, str]] = []
    pos = 0
    while pos < len(s):
        m = _SYM_TOKEN.match(s, pos)
        if m is None or m.end() == pos:
            if s[pos:].strip() == "":
                break
            raise ArtifactError(f"symbolic shape expression {s[:80]!r} has characters torch never writes")
        kind = m.lastgroup
        toks.append((kind, m.group(kind)))  # type: ignore[arg-type]
        pos = m.end()
    budget = {"powers": 0}
    i = _parse_sym(toks, 0, s, 0, budget)
    if i != len(toks):
        raise ArtifactError(f"symbolic shape expression {s[:80]!r} is not a single expression")


def _parse_sym(toks: list[tuple[str, str]], i: int, s: str, depth: int, budget: dict[str, int]) -> int:
    bad = ArtifactError(f"symbolic shape expression {s[:80]!r} is not in the form torch writes")
    if depth > 64 or i >= len(toks):
        raise bad
    kind, val = toks[i]
    if kind == "op" and val == "-":
        i += 1
        if i >= len(toks) or toks[i][0] != "num":
            raise bad
        return i + 1
    if kind in ("num", "str"):
        return i + 1
    if kind != "name":
        raise bad
    if i + 1 < len(toks) and toks[i + 1] == ("op", "("):
        if val not in _SYM_CALLS:
            raise ArtifactError(f"symbolic shape expression calls {val!r}, which is not allowed")
        i += 2
        nargs = 0
        while toks[i:i + 1] != [("op", ")")]:
            if nargs:
                if toks[i:i + 1] != [("op", ",")]:
                    raise bad
                i += 1
            if i + 1 < len(toks) and toks[i][0] == "name" and toks[i + 1] == ("op", "="):
                kw = toks[i][1]
                if not re.fullmatch(r"[a-z][a-z_]{0,40}", kw) or "__" in kw:
                    raise bad
                i += 2
            start = i
            i = _parse_sym(toks, i, s, depth + 1, budget)
            if val in _SYM_POWERS and nargs == 1:
                lit = [t for t in toks[start:i] if t[0] == "num"]
                if lit and i - start <= 5:  # a literal exponent: 7, -7, Integer(7), Integer(-7)
                    budget["powers"] += 1
                    if abs(float(lit[0][1])) > 64 or budget["powers"] > 3:
                        raise ArtifactError(
                            f"symbolic shape expression {s[:80]!r} raises to a large literal power"
                        )
            nargs += 1
            if nargs > 256 or i >= len(toks):
                raise bad
        return i + 1
    if val not in _SYM_CONSTS:
        raise ArtifactError(f"symbolic shape expression names {val!r}, which is not allowed")
    return i + 1


def _check_guard_code(g: Any) -> None:
    """Refuse a guard string that is not plain size arithmetic; torch `exec`s these."""
    pos = 0
    while isinstance(g, str) and len(g) <= 10_000 and pos < len(g):
        m = _GUARD_TOKEN.match(g, pos)
        if m is None:
            break
        pos = m.end()
    if not isinstance(g, str) or len(g) > 10_000 or pos != len(g):
        shown = g[:80] if isinstance(g, str) else type(g).__name__
        raise ArtifactError(
            f"the program's guards_code entry {shown!r} is not plain shape arithmetic; torch would "
            "execute it as Python, so the archive is refused"
        )


def _check_target(t: Any) -> None:
    if not isinstance(t, str):
        raise ArtifactError("a graph node has a non-string target")
    m = _ATEN_TARGET.fullmatch(t)
    if m:
        if "__" in t or m.group(1) in _ATEN_DENY:
            raise ArtifactError(f"the graph calls {t}, which is not allowed")
        return
    if t in _PY_TARGETS:
        return
    raise ArtifactError(
        f"the graph calls {t!r}; only ATen operators (torch.ops.aten.*) and basic scalar ops are "
        "accepted (no custom ops, higher-order ops or Python functions)"
    )


def _walk_program(obj: Any, counts: dict[str, int], depth: int = 0) -> None:
    """Walk the program JSON; check every string that torch would evaluate or resolve."""
    if depth > 200:
        raise ArtifactError("the program JSON is nested too deeply")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "expr_str":
                _check_sym_expr(v)
            elif k in ("as_graph", "as_operator", "as_custom_obj", "custom_obj", "as_custom_objs"):
                raise ArtifactError(
                    f"the program uses {k!r} (a subgraph, operator argument or custom object); only "
                    "plain tensor programs are accepted"
                )
            elif k == "custom_obj_values" and v:
                raise ArtifactError("the program holds custom (TorchScript) objects; not accepted")
            elif k == "nodes" and isinstance(v, list):
                for node in v:
                    if not isinstance(node, dict):
                        raise ArtifactError("the program JSON has a malformed node")
                    _check_target(node.get("target"))
                    counts["nodes"] = counts.get("nodes", 0) + 1
            _walk_program(v, counts, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _walk_program(v, counts, depth + 1)


def _dims(tm: Any, what: str, *, allow_symbolic: bool) -> tuple[int, ...]:
    sizes = tm.get("sizes") if isinstance(tm, dict) else None
    if not isinstance(sizes, list):
        raise ArtifactError(f"{what}: malformed tensor metadata")
    out = []
    for d in sizes:
        if isinstance(d, dict) and len(d) == 1 and _is_int(d.get("as_int")) and d["as_int"] >= 0:
            out.append(d["as_int"])
        elif allow_symbolic and isinstance(d, dict) and len(d) == 1 and "as_expr" in d:
            out.append(-1)
        else:
            raise ArtifactError(f"{what}: malformed size {d!r}")
    return tuple(out)


def _dtype_of(tm: Any, what: str) -> tuple[str, int]:
    code = tm.get("dtype") if isinstance(tm, dict) else None
    if not _is_int(code) or code not in _SCALAR_TYPES:
        raise ArtifactError(f"{what}: unknown dtype code {code!r}")
    return _SCALAR_TYPES[code]


@dataclass
class _Pt2Plan:
    root: str
    infos: dict[str, zipfile.ZipInfo]  # relative name -> member, everything torch will read
    info: ExportInfo


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


# -- loading -----------------------------------------------------------------------------------

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
