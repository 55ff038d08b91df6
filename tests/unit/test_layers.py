"""The import rules that keep the code readable one part at a time: the science libraries
(lambdascope/llc/, lambdascope/training/) need neither gRPC nor protobuf nor any service, no
service imports another, and the shared package imports no service."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())
# The plain-PyTorch science, and how many modules each has at least (a glob gone wrong finds none).
LIBRARIES = {"llc": 8, "training": 8}
# What a library may not import: gRPC, protobuf, the generated stubs (which load protobuf), services.
FORBIDDEN = ("grpc", "google.protobuf", "lambdascope.v1", "services")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, anywhere in it (also inside functions): relative imports
    resolved, and `from a import b` recorded as both a and a.b (b may be a submodule)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names if a.name != "*")
    return names


def _is_under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _library_modules(library: str) -> list[str]:
    folder = ROOT / "lambdascope" / library
    return sorted(_module_name(p) for p in folder.rglob("*.py") if p.stem != "__init__")


def _loaded_when_importing(modules: list[str]) -> list[str]:
    """The forbidden modules in sys.modules after importing `modules` in a fresh interpreter."""
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + f"print(sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') "
              f"for p in {FORBIDDEN!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip())


def test_the_llc_library_loads_without_grpc_or_protobuf() -> None:
    modules = _library_modules("llc")
    loaded = _loaded_when_importing(modules)
    assert len(modules) >= LIBRARIES["llc"] and loaded == [], loaded


def test_the_training_library_loads_without_grpc_or_protobuf() -> None:
    modules = _library_modules("training")
    loaded = _loaded_when_importing(["lambdascope.training", *modules])
    assert len(modules) >= LIBRARIES["training"] and loaded == [], loaded


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_the_science_libraries_import_no_grpc_protobuf_or_service(library: str) -> None:
    """Also imports made only when a function runs, which loading the modules does not reach."""
    paths = sorted((ROOT / "lambdascope" / library).rglob("*.py"))
    assert len(paths) >= LIBRARIES[library]
    for path in paths:
        bad = {n for n in _imports(path) if _is_under(n, FORBIDDEN)}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_no_service_imports_another() -> None:
    for service in SERVICES:
        for path in (ROOT / "services" / service).rglob("*.py"):
            others = {n for n in _imports(path) for s in SERVICES
                      if s != service and (n == f"services.{s}" or n.startswith(f"services.{s}."))}
            assert not others, f"{path.relative_to(ROOT)} imports {others}"


def test_the_shared_package_imports_no_service() -> None:
    """The shared package, the science libraries included."""
    paths = list((ROOT / "lambdascope").rglob("*.py"))
    assert any("training" in p.parts for p in paths) and any("llc" in p.parts for p in paths)
    for path in paths:
        if "v1" in path.parts:
            continue
        bad = {n for n in _imports(path) if n == "services" or n.startswith("services.")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
