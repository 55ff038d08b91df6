"""The exported program (`models/model.json`): the strings torch would evaluate or resolve, checked
against what a plain tensor program needs. Graph call targets must be ATen operators or basic
scalar ops; symbolic-shape strings (torch `sympify`s, i.e. `eval`s, them) must be in the `srepr`
grammar; guard strings (torch `exec`s them) must be plain shape arithmetic; no subgraphs, operator
arguments or custom objects. Also reads the serialized tensor metadata (sizes, dtype codes)."""
from __future__ import annotations

import re
from typing import Any

from lambdascope.artifacts.common import ArtifactError, _is_int

_SCALAR_TYPES: dict[int, tuple[str, int]] = {  # torch._export.serde.schema.ScalarType
    1: ("uint8", 1), 2: ("int8", 1), 3: ("int16", 2), 4: ("int32", 4), 5: ("int64", 8),
    6: ("float16", 2), 7: ("float32", 4), 8: ("float64", 8), 9: ("complex32", 4),
    10: ("complex64", 8), 11: ("complex128", 16), 12: ("bool", 1), 13: ("bfloat16", 2),
    28: ("uint16", 2), 29: ("float8_e4m3fn", 1), 30: ("float8_e5m2", 1),
    31: ("float8_e4m3fnuz", 1), 32: ("float8_e5m2fnuz", 1), 33: ("float8_e8m0fnu", 1),
    34: ("uint32", 4), 35: ("uint64", 8),
}


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
