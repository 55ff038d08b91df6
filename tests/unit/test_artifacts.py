"""lambdascope.artifacts: round trips, corrupt files, and crafted .pt2 archives that run code.

The exploit cases prove each crafted archive is dangerous (plain `torch.export.load` in a child
process creates a marker file), then that inspection and loading refuse it and nothing runs.
"""
from __future__ import annotations

import io
import json
import pickle
import random
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lambdascope.artifacts import (
    ArtifactError,
    DatasetInfo,
    ExportInfo,
    TensorInfo,
    _guarded_load_pt2,
    inspect_dataset,
    inspect_pt2,
    inspect_safetensors,
    load_dataset,
    load_exported_program,
    load_safetensors,
)


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(4, 8)
        self.l2 = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.tanh(self.l1(x)))


@pytest.fixture(scope="module")
def legit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("legit")
    model = MLP().eval()
    x = torch.randn(10, 4)
    y = model(x).detach()
    pt2 = d / "model.pt2"
    torch.export.save(torch.export.export(model, (x[:2].clone(),)), pt2)
    weights = d / "weights.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, weights)
    data = d / "data.safetensors"
    save_file({"x": x, "y": y}, data)
    return {"dir": d, "model": model, "x": x, "y": y, "pt2": pt2, "weights": weights, "data": data}


def _expect(exc: pytest.ExceptionInfo, *words: str) -> None:
    msg = str(exc.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


# --------------------------------------------------------------------------------------------
# safetensors and datasets


def test_safetensors_round_trip(legit: dict) -> None:
    info = inspect_safetensors(legit["weights"])
    assert info == {
        "l1.weight": TensorInfo("float32", (8, 4)),
        "l1.bias": TensorInfo("float32", (8,)),
        "l2.weight": TensorInfo("float32", (1, 8)),
        "l2.bias": TensorInfo("float32", (1,)),
    }
    loaded = load_safetensors(legit["weights"])
    for k, v in legit["model"].state_dict().items():
        assert torch.equal(loaded[k], v)


def test_dataset_round_trip(legit: dict, tmp_path: Path) -> None:
    assert inspect_dataset(legit["data"]) == DatasetInfo(
        10, TensorInfo("float32", (10, 4)), TensorInfo("float32", (10, 1))
    )
    x, y = load_dataset(legit["data"])
    assert torch.equal(x, legit["x"]) and torch.equal(y, legit["y"])
    p = tmp_path / "cls.safetensors"
    save_file({"x": torch.randn(5, 3).half(), "y": torch.arange(5)}, p)
    assert inspect_dataset(p) == DatasetInfo(5, TensorInfo("float16", (5, 3)), TensorInfo("int64", (5,)))


def _st(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def _valid_st() -> bytes:
    buf = io.BytesIO()
    from safetensors.torch import save

    buf.write(save({"a": torch.arange(6, dtype=torch.float32), "b": torch.ones(2, 2)}))
    return buf.getvalue()


def _torch_save_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    return buf.getvalue()


def _header_len(b: bytes) -> int:
    return struct.unpack("<Q", b[:8])[0]


BAD_SAFETENSORS = {
    "empty": (lambda: b"", ["empty"]),
    "random": (lambda: random.Random(0).randbytes(4096), ["header length"]),
    "truncated_header": (lambda: _valid_st()[: 8 + _header_len(_valid_st()) // 2], ["header length", "truncated"]),
    "truncated_data": (lambda: _valid_st()[:-3], ["truncated"]),
    "length_past_eof": (
        lambda: struct.pack("<Q", _header_len(_valid_st()) + 1000) + _valid_st()[8:],
        ["header length", "truncated"],
    ),
    "overlap": (
        lambda: _st(
            {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
             "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}},
            bytes(24),
        ),
        ["overlap"],
    ),
    "gap": (
        lambda: _st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, bytes(16)),
        ["unused bytes"],
    ),
    "trailing": (
        lambda: _st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(12)),
        ["after the last tensor"],
    ),
    "wrong_dtype": (
        lambda: _st({"a": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
        ["unknown dtype", "F33"],
    ),
    "size_mismatch": (
        lambda: _st({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)),
        ["do not hold"],
    ),
    "negative_shape": (
        lambda: _st({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b""),
        ["shape"],
    ),
    "not_json": (lambda: struct.pack("<Q", 9) + b"{garbage}", ["not valid JSON"]),
    "duplicate_key": (
        lambda: (lambda h: struct.pack("<Q", len(h)) + h + bytes(8))(
            b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},'
            b' "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'
        ),
        ["repeats"],
    ),
    "bad_metadata": (
        lambda: _st({"__metadata__": {"k": 1}, "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
        ["__metadata__"],
    ),
    "torch_save_pickle": (_torch_save_bytes, ["zip archive", "torch.save"]),
    "raw_pickle": (lambda: pickle.dumps({"w": [1.0, 2.0]}, protocol=2), ["pickle"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SAFETENSORS))
def test_bad_safetensors_rejected(case: str, tmp_path: Path) -> None:
    make, words = BAD_SAFETENSORS[case]
    p = tmp_path / "bad.safetensors"
    p.write_bytes(make())
    with pytest.raises(ArtifactError) as e:
        inspect_safetensors(p)
    _expect(e, *words)
    with pytest.raises(ArtifactError):
        load_safetensors(p)


def test_pt2_passed_as_safetensors(legit: dict) -> None:
    with pytest.raises(ArtifactError) as e:
        inspect_safetensors(legit["pt2"])
    _expect(e, "zip archive")


BAD_DATASETS = {
    "missing_y": ({"x": torch.randn(4, 2)}, ["missing 'y'"]),
    "extra": ({"x": torch.randn(4, 2), "y": torch.randn(4), "z": torch.ones(1)}, ["unexpected 'z'"]),
    "leading_dims": ({"x": torch.randn(4, 2), "y": torch.randn(5)}, ["4 examples", "5"]),
    "bool_x": ({"x": torch.ones(4, 2, dtype=torch.bool), "y": torch.randn(4)}, ["x must be floating"]),
    "bool_y": ({"x": torch.randn(4, 2), "y": torch.ones(4, dtype=torch.bool)}, ["y must be"]),
    "scalar_x": ({"x": torch.tensor(1.0), "y": torch.randn(1)}, ["at least 1-D"]),
    "empty": ({"x": torch.randn(0, 2), "y": torch.randn(0)}, ["no examples"]),
}


@pytest.mark.parametrize("case", sorted(BAD_DATASETS))
def test_bad_dataset_rejected(case: str, tmp_path: Path) -> None:
    tensors, words = BAD_DATASETS[case]
    p = tmp_path / "d.safetensors"
    save_file(tensors, p)
    with pytest.raises(ArtifactError) as e:
        inspect_dataset(p)
    _expect(e, *words)
    with pytest.raises(ArtifactError):
        load_dataset(p)


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


def _members(src: Path) -> tuple[str, list[tuple[str, bytes]]]:
    with zipfile.ZipFile(src) as z:
        items = [(i.filename, z.read(i)) for i in z.infolist()]
    root = items[0][0].split("/", 1)[0]
    return root, items


def _rewrite(src: Path, dst: Path, edits: dict[str, bytes | None]) -> Path:
    """Copy a .pt2, replacing (bytes), dropping (None) or adding members named relative to the root."""
    root, items = _members(src)
    edits = dict(edits)
    with zipfile.ZipFile(dst, "w") as out:
        for name, data in items:
            rel = name.split("/", 1)[1]
            if rel in edits:
                data = edits.pop(rel)
                if data is None:
                    continue
            out.writestr(name, data)
        for rel, data in edits.items():
            out.writestr(f"{root}/{rel}", data)
    return dst


def _read(src: Path, rel: str) -> bytes:
    root, _ = _members(src)
    with zipfile.ZipFile(src) as z:
        return z.read(f"{root}/{rel}")


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
    cfg = json.loads(_read(pt2, "data/weights/model_weights_config.json"))
    entry = cfg["config"]["l1.bias"]
    entry["use_pickle"] = True
    return _rewrite(pt2, dst, {
        "data/weights/model_weights_config.json": json.dumps(cfg).encode(),
        f"data/weights/{entry['path_name']}": _evil_torch_save(marker),
    })


def _craft_constants_use_pickle(pt2: Path, dst: Path, marker: Path) -> Path:
    cfg = {"config": {"c": {"path_name": "tensor_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}}
    return _rewrite(pt2, dst, {
        "data/constants/model_constants_config.json": json.dumps(cfg).encode(),
        "data/constants/tensor_0": _evil_torch_save(marker),
    })


def _craft_sample_inputs_fallback(pt2: Path, dst: Path, marker: Path) -> Path:
    # Fails the weights-only load (it names builtins.exec), so torch retries with weights_only=False.
    return _rewrite(pt2, dst, {"data/sample_inputs/model.pt": _evil_torch_save(marker)})


def _craft_opaque_obj_constant(pt2: Path, dst: Path, marker: Path) -> Path:
    payload = pickle.dumps(_RunsCode(marker))
    meta = {  # raw uint8 bytes, so torch's file map accepts it before the opaque_obj_ branch
        "dtype": 1, "sizes": [{"as_int": len(payload)}], "requires_grad": False,
        "device": {"type": "cpu", "index": None}, "strides": [{"as_int": 1}],
        "storage_offset": {"as_int": 0}, "layout": 7,
    }
    cfg = {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False, "tensor_meta": meta}}}
    return _rewrite(pt2, dst, {
        "data/constants/model_constants_config.json": json.dumps(cfg).encode(),
        "data/constants/opaque_obj_0": payload,  # -> pickle.loads
    })


def _craft_legacy_weights_file(pt2: Path, dst: Path, marker: Path) -> Path:
    return _rewrite(pt2, dst, {"data/weights/model.pt": _evil_torch_save(marker)})


def _craft_sympy_eval(pt2: Path, dst: Path, marker: Path) -> Path:
    prog = json.loads(_read(pt2, "models/model.json"))
    expr = f"__import__('builtins').open({str(marker)!r}, 'w').close()"
    prog["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0] = {
        "as_expr": {"expr_str": expr, "hint": {"as_int": 2}}
    }
    return _rewrite(pt2, dst, {"models/model.json": json.dumps(prog).encode()})


def _craft_guards_code_exec(pt2: Path, dst: Path, marker: Path) -> Path:
    prog = json.loads(_read(pt2, "models/model.json"))
    prog["guards_code"] = [f"__import__('builtins').open({str(marker)!r}, 'w').close() is None"]
    return _rewrite(pt2, dst, {"models/model.json": json.dumps(prog).encode()})


def _craft_legacy_format(pt2: Path, dst: Path, marker: Path) -> Path:
    # No new-format model: torch.export.load falls back to the pre-2.8 format, which unpickles.
    with zipfile.ZipFile(dst, "w") as out:
        out.writestr("version", "8.20")
        out.writestr("serialized_exported_program.json", _read(pt2, "models/model.json"))
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
    _expect(e, *words)
    with pytest.raises(ArtifactError):
        load_exported_program(c["path"])
    # The second wall alone (torch's loader with the dangerous calls disabled, no inspection) holds too.
    with pytest.raises(ArtifactError):
        ep = _guarded_load_pt2(c["path"])
        if how == "call":
            ep.module()(torch.randn(2, 4))
    assert not c["marker"].exists(), "the payload ran"


# --------------------------------------------------------------------------------------------
# .pt2: other bad archives


def _zip(dst: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(dst, "w", compression) as out:
        for n, b in members.items():
            out.writestr(n, b)
    return dst


def _flip_weight_byte(pt2: Path, dst: Path) -> Path:
    data = bytearray(pt2.read_bytes())
    with zipfile.ZipFile(pt2) as z:
        zi = next(i for i in z.infolist() if i.filename.endswith("data/weights/weight_0"))
    name_len, extra_len = struct.unpack("<HH", data[zi.header_offset + 26 : zi.header_offset + 30])
    data[zi.header_offset + 30 + name_len + extra_len + 5] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def _duplicate_member(pt2: Path, dst: Path) -> Path:
    root, items = _members(pt2)
    with pytest.warns(UserWarning), zipfile.ZipFile(dst, "w") as out:
        for n, b in items:
            out.writestr(n, b)
        out.writestr(f"{root}/models/model.json", b"{}")
    return dst


def _custom_target(pt2: Path, dst: Path) -> Path:
    prog = json.loads(_read(pt2, "models/model.json"))
    node = prog["graph_module"]["graph"]["nodes"][1]
    node["target"] = "torch.os.system"
    node["inputs"] = [{"name": "command", "arg": {"as_string": "true"}, "kind": 1}]
    return _rewrite(pt2, dst, {"models/model.json": json.dumps(prog).encode()})


BAD_PT2 = {
    "empty": (lambda pt2, d: (d.write_bytes(b""), d)[1], ["empty"]),
    "random": (lambda pt2, d: (d.write_bytes(random.Random(1).randbytes(2048)), d)[1], ["not a .pt2 archive"]),
    "safetensors": (lambda pt2, d: (d.write_bytes(_valid_st()), d)[1], ["safetensors"]),
    "torch_save": (lambda pt2, d: (d.write_bytes(_torch_save_bytes()), d)[1], ["models/"]),
    "other_zip": (lambda pt2, d: _zip(d, {"docs/readme.txt": b"hi"}), ["not a torch.export archive"]),
    "dotdot": (lambda pt2, d: _rewrite(pt2, d, {"../../evil.sh": b"echo"}), ["'..'"]),
    "absolute": (lambda pt2, d: _zip(d, {"/etc/cron.d/x": b"x"}), ["unsafe member name"]),
    "duplicate": (_duplicate_member, ["two members"]),
    "aotinductor": (
        lambda pt2, d: _rewrite(pt2, d, {"data/aotinductor/model/model.so": b"\x7fELF"}),
        ["AOTInductor"],
    ),
    "unknown_member": (lambda pt2, d: _rewrite(pt2, d, {"data/weights/bonus": b"x"}), ["unexpected members"]),
    "two_models": (
        lambda pt2, d: _rewrite(pt2, d, {"models/other.json": _read(pt2, "models/model.json")}),
        ["exactly one program"],
    ),
    "no_weights_config": (
        lambda pt2, d: _rewrite(pt2, d, {"data/weights/model_weights_config.json": None}),
        ["model_weights_config.json is missing"],
    ),
    "short_weight": (lambda pt2, d: _rewrite(pt2, d, {"data/weights/weight_0": bytes(8)}), ["needs 128 bytes"]),
    "crc": (_flip_weight_byte, ["corrupt"]),
    "custom_target": (_custom_target, ["torch.os.system"]),
    "zip_bomb": (
        lambda pt2, d: _zip(
            d, {**{n: b for n, b in _members(pt2)[1]}, f"{_members(pt2)[0]}/extra/pad": bytes(80 * 2**20)},
            zipfile.ZIP_DEFLATED,
        ),
        ["zip bomb"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PT2))
def test_bad_pt2_rejected(case: str, legit: dict, tmp_path: Path) -> None:
    make, words = BAD_PT2[case]
    p = make(legit["pt2"], tmp_path / "bad.pt2")
    with pytest.raises(ArtifactError) as e:
        inspect_pt2(p)
    _expect(e, *words)


def test_pt2_size_limit(legit: dict) -> None:
    with pytest.raises(ArtifactError) as e:
        inspect_pt2(legit["pt2"], max_uncompressed_bytes=1000)
    _expect(e, "limit")


def test_pt2_extra_files_are_ignored(legit: dict, tmp_path: Path) -> None:
    p = _rewrite(legit["pt2"], tmp_path / "extra.pt2", {"extra/notes.txt": b"hello"})
    assert inspect_pt2(p).input_shapes == [(2, 4)]
