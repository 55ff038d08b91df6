"""The committed stubs are exactly what scripts/gen_protos.py makes from protos/."""
import filecmp
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_protos(tmp_path):
    _generator().generate(tmp_path)
    fresh = tmp_path / "lambdascope" / "v1"
    committed = ROOT / "lambdascope" / "v1"
    fresh_names = sorted(p.name for p in fresh.iterdir())
    committed_names = sorted(p.name for p in committed.iterdir() if p.name != "__pycache__")
    assert fresh_names == committed_names, "stubs added or removed: run `make proto`"
    match, mismatch, errors = filecmp.cmpfiles(fresh, committed, fresh_names, shallow=False)
    assert not mismatch and not errors, f"stale stubs {mismatch + errors}: run `make proto`"
    assert len(match) >= 7 * 3


def test_every_proto_is_generated():
    protos = sorted(p.stem for p in (ROOT / "protos" / "lambdascope" / "v1").glob("*.proto"))
    stubs = sorted(p.name.removesuffix("_pb2.py")
                   for p in (ROOT / "lambdascope" / "v1").glob("*_pb2.py"))
    assert protos == stubs
