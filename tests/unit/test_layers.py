"""The import rules that keep the code readable one part at a time: the science library needs
neither gRPC nor protobuf, no service imports another, and the shared package imports no
service."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_llc_library_loads_without_grpc_or_protobuf() -> None:
    modules = [f"lambdascope.llc.{p.stem}" for p in (ROOT / "lambdascope" / "llc").glob("*.py") if p.stem != "__init__"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith(('grpc.', 'google.protobuf'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert len(modules) >= 8 and out.stdout.strip() == "[]", out.stdout


def test_no_service_imports_another() -> None:
    for service in SERVICES:
        for path in (ROOT / "services" / service).rglob("*.py"):
            others = {n for n in _imports(path) for s in SERVICES
                      if s != service and (n == f"services.{s}" or n.startswith(f"services.{s}."))}
            assert not others, f"{path.relative_to(ROOT)} imports {others}"


def test_the_shared_package_imports_no_service() -> None:
    for path in (ROOT / "lambdascope").rglob("*.py"):
        if "v1" in path.parts:
            continue
        bad = {n for n in _imports(path) if n == "services" or n.startswith("services.")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
