"""lambdascope.artifacts.pt2 (and program's graph-target check): zips that are sound but are not
exactly what torch.export.save writes for one tensor program are refused (other zips, AOTInductor
code, unknown or missing members, a second program, short weights, a graph calling os.system);
`extra/` members are ignored. The legitimate round trip and the code-execution archives are in
test_artifacts_loader.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lambdascope.artifacts import inspect_pt2
from tests.artifact_samples import pt2_refused, read_member, rewrite, torch_save_bytes, write_zip
from tests.artifact_samples import legit  # noqa: F401 - a fixture, used by name


def _custom_target(pt2: Path, dst: Path) -> Path:
    prog = json.loads(read_member(pt2, "models/model.json"))
    node = prog["graph_module"]["graph"]["nodes"][1]
    node["target"] = "torch.os.system"
    node["inputs"] = [{"name": "command", "arg": {"as_string": "true"}, "kind": 1}]
    return rewrite(pt2, dst, {"models/model.json": json.dumps(prog).encode()})


BAD_PT2 = {
    "torch_save": (lambda pt2, d: (d.write_bytes(torch_save_bytes()), d)[1], ["models/"]),
    "other_zip": (lambda pt2, d: write_zip(d, {"docs/readme.txt": b"hi"}), ["not a torch.export archive"]),
    "aotinductor": (
        lambda pt2, d: rewrite(pt2, d, {"data/aotinductor/model/model.so": b"\x7fELF"}),
        ["AOTInductor"],
    ),
    "unknown_member": (lambda pt2, d: rewrite(pt2, d, {"data/weights/bonus": b"x"}), ["unexpected members"]),
    "two_models": (
        lambda pt2, d: rewrite(pt2, d, {"models/other.json": read_member(pt2, "models/model.json")}),
        ["exactly one program"],
    ),
    "no_weights_config": (
        lambda pt2, d: rewrite(pt2, d, {"data/weights/model_weights_config.json": None}),
        ["model_weights_config.json is missing"],
    ),
    "short_weight": (lambda pt2, d: rewrite(pt2, d, {"data/weights/weight_0": bytes(8)}), ["needs 128 bytes"]),
    "custom_target": (_custom_target, ["torch.os.system"]),
}


@pytest.mark.parametrize("case", sorted(BAD_PT2))
def test_bad_pt2_rejected(case: str, legit: dict, tmp_path: Path) -> None:
    make, words = BAD_PT2[case]
    pt2_refused(make(legit["pt2"], tmp_path / "bad.pt2"), *words)


def test_pt2_extra_files_are_ignored(legit: dict, tmp_path: Path) -> None:
    p = rewrite(legit["pt2"], tmp_path / "extra.pt2", {"extra/notes.txt": b"hello"})
    assert inspect_pt2(p).input_shapes == [(2, 4)]
