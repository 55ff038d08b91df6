"""lambdascope.artifacts.loader (with the inspection in front of it): a legitimate `.pt2` is
inspected, loaded and runs exactly like the model; crafted `.pt2` archives that run code are refused.

The exploit cases prove each crafted archive is dangerous (plain `torch.export.load` in a child
process creates a marker file), then that inspection and loading refuse it and nothing runs. They
cover every wall at once (pt2, program and pickle_scan refuse at inspection; the loader's disabled
calls hold alone), and stay in one table so that the child process runs once.
"""
from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from lambdascope.artifacts import ArtifactError, ExportInfo, inspect_pt2, load_exported_program
from lambdascope.artifacts.loader import _guarded_load_pt2
from tests.artifact_samples import MLP, expect, read_member, rewrite
from tests.artifact_samples import legit  # noqa: F401 - a fixture, used by name


# --------------------------------------------------------------------------------------------
# .pt2: the legitimate path


def test_pt2_round_trip(legit: dict) -> None:
    info = inspect_pt2(legit["pt2"])
    assert isinstance(info, ExportInfo)
    assert info.input_shapes == [(2, 4)] and info.output_shapes == [(2, 1)]
    assert info.input_dtypes == ["float32"] and info.output_dtypes == ["float32"]
    assert info.num_parameters == 4 * 8 + 8 + 8 + 1
    assert info.num_nodes == 3
    ep = load_exported_program(legit["pt2"])
    assert isinstance(ep, torch.export.ExportedProgram)
    run = ep.module()
    with torch.no_grad():
        for i in range(0, 10, 2):
            xb = legit["x"][i : i + 2]
            assert torch.allclose(run(xb), legit["model"](xb), rtol=0, atol=0)


def test_pt2_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = MLP().eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    ep = torch.export.export(model, (torch.randn(3, 4),), dynamic_shapes={"x": {0: batch}})
    p = tmp_path / "dyn.pt2"
    torch.export.save(ep, p)
    info = inspect_pt2(p)
    assert info.input_shapes == [(-1, 4)] and info.output_shapes == [(-1, 1)]
    loaded = load_exported_program(p).module()
    x = torch.randn(7, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# --------------------------------------------------------------------------------------------
# .pt2: crafted archives


class _RunsCode:
    """Unpickling this runs Python that creates `marker` (as a shell command would)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _evil_torch_save(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"payload": _RunsCode(marker)}, buf)
    return buf.getvalue()


def _craft_weights_use_pickle(pt2: Path, dst: Path, marker: Path) -> Path:
    cfg = json.loads(read_member(pt2, "data/weights/model_weights_config.json"))
    entry = cfg["config"]["l1.bias"]
    entry["use_pickle"] = True
    return rewrite(pt2, dst, {
        "data/weights/model_weights_config.json": json.dumps(cfg).encode(),
        f"data/weights/{entry['path_name']}": _evil_torch_save(marker),
    })


def _craft_constants_use_pickle(pt2: Path, dst: Path, marker: Path) -> Path:
    cfg = {"config": {"c": {"path_name": "tensor_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}}
    return rewrite(pt2, dst, {
        "data/constants/model_constants_config.json": json.dumps(cfg).encode(),
        "data/constants/tensor_0": _evil_torch_save(marker),
    })


def _craft_sample_inputs_fallback(pt2: Path, dst: Path, marker: Path) -> Path:
    # Fails the weights-only load (it names builtins.exec), so torch retries with weights_only=False.
    return rewrite(pt2, dst, {"data/sample_inputs/model.pt": _evil_torch_save(marker)})


def _craft_opaque_obj_constant(pt2: Path, dst: Path, marker: Path) -> Path:
    payload = pickle.dumps(_RunsCode(marker))
    meta = {  # raw uint8 bytes, so torch's file map accepts it before the opaque_obj_ branch
        "dtype": 1, "sizes": [{"as_int": len(payload)}], "requires_grad": False,
        "device": {"type": "cpu", "index": None}, "strides": [{"as_int": 1}],
        "storage_offset": {"as_int": 0}, "layout": 7,
    }
    cfg = {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False, "tensor_meta": meta}}}
    return rewrite(pt2, dst, {
        "data/constants/model_constants_config.json": json.dumps(cfg).encode(),
        "data/constants/opaque_obj_0": payload,  # -> pickle.loads
    })


def _craft_legacy_weights_file(pt2: Path, dst: Path, marker: Path) -> Path:
    return rewrite(pt2, dst, {"data/weights/model.pt": _evil_torch_save(marker)})


def _craft_sympy_eval(pt2: Path, dst: Path, marker: Path) -> Path:
    prog = json.loads(read_member(pt2, "models/model.json"))
    expr = f"__import__('builtins').open({str(marker)!r}, 'w').close()"
    prog["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0] = {
        "as_expr": {"expr_str": expr, "hint": {"as_int": 2}}
    }
    return rewrite(pt2, dst, {"models/model.json": json.dumps(prog).encode()})


def _craft_guards_code_exec(pt2: Path, dst: Path, marker: Path) -> Path:
    prog = json.loads(read_member(pt2, "models/model.json"))
    prog["guards_code"] = [f"__import__('builtins').open({str(marker)!r}, 'w').close() is None"]
    return rewrite(pt2, dst, {"models/model.json": json.dumps(prog).encode()})


def _craft_legacy_format(pt2: Path, dst: Path, marker: Path) -> Path:
    # No new-format model: torch.export.load falls back to the pre-2.8 format, which unpickles.
    with zipfile.ZipFile(dst, "w") as out:
        out.writestr("version", "8.20")
        out.writestr("serialized_exported_program.json", read_member(pt2, "models/model.json"))
        out.writestr("serialized_state_dict.pt", _evil_torch_save(marker))
        out.writestr("serialized_constants.pt", b"")
        out.writestr("serialized_example_inputs.pt", b"")
    return dst


# name -> (builder, words the rejection must contain, what plain torch must do to trigger it)
EXPLOITS = {
    # the three paths in the platform notes
    "weights_use_pickle": (_craft_weights_use_pickle, ["use_pickle", "l1.bias"], "load"),
    "constants_use_pickle": (_craft_constants_use_pickle, ["use_pickle"], "load"),
    "sample_inputs_fallback": (_craft_sample_inputs_fallback, ["sample inputs", "exec"], "load"),
    # further paths found in torch 2.13's loader
    "opaque_obj_constant": (_craft_opaque_obj_constant, ["opaque_obj_0", "pickled"], "load"),
    "legacy_weights_file": (_craft_legacy_weights_file, ["legacy"], "load"),
    "sympy_eval": (_craft_sympy_eval, ["symbolic shape expression"], "load"),
    "guards_code_exec": (_craft_guards_code_exec, ["guards_code"], "call"),
    "legacy_format_fallback": (_craft_legacy_format, ["not inside a top folder"], "load"),
}

_CHILD = textwrap.dedent(
    """
    import json, sys, torch
    out = {}
    for name, path, how in json.loads(sys.argv[1]):
        try:
            ep = torch.export.load(path)  # what a naive platform would do
            if how == "call":
                ep.module()(torch.randn(2, 4))
            out[name] = "loaded"
        except BaseException as e:
            out[name] = f"{type(e).__name__}: {e}"[:300]
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def exploits(legit: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build every crafted archive; run plain torch.export.load on all of them in ONE child process."""
    d = tmp_path_factory.mktemp("exploits")
    cases = {}
    for name, (build, _words, how) in EXPLOITS.items():
        marker = d / f"{name}.marker"
        cases[name] = {"path": build(legit["pt2"], d / f"{name}.pt2", marker), "marker": marker, "how": how}
    jobs = [[n, str(c["path"]), c["how"]] for n, c in cases.items()]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(jobs)],
        capture_output=True, text=True, timeout=240, cwd=d,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        pytest.fail(f"the child running plain torch.export.load failed: {proc.stderr[-2000:]}")
    outcome = json.loads(lines[-1])
    for name, c in cases.items():
        c["exploited"] = c["marker"].exists()
        c["outcome"] = outcome[name]
        if c["marker"].exists():
            c["marker"].unlink()
    return cases


@pytest.mark.parametrize("case", list(EXPLOITS))
def test_crafted_pt2_is_really_dangerous(case: str, exploits: dict) -> None:
    c = exploits[case]
    if not c["exploited"]:
        pytest.skip(
            f"plain torch.export.load did not run the payload on torch {torch.__version__} "
            f"(this path is not exploitable here; outcome: {c['outcome']})"
        )
    assert c["exploited"]


@pytest.mark.parametrize("case", list(EXPLOITS))
def test_crafted_pt2_is_refused(case: str, exploits: dict) -> None:
    c = exploits[case]
    _, words, how = EXPLOITS[case]
    assert not c["marker"].exists()
    with pytest.raises(ArtifactError) as e:
        inspect_pt2(c["path"])
    expect(e, *words)
    with pytest.raises(ArtifactError):
        load_exported_program(c["path"])
    # The second wall alone (torch's loader with the dangerous calls disabled, no inspection) holds too.
    with pytest.raises(ArtifactError):
        ep = _guarded_load_pt2(c["path"])
        if how == "call":
            ep.module()(torch.randn(2, 4))
    assert not c["marker"].exists(), "the payload ran"
