"""lambdascope.artifacts.safetensors: weights files round trip, and corrupt or disguised files
(truncated, overlapping, padded, bad JSON, pickles, zips) are refused with a useful message."""
from __future__ import annotations

import json
import pickle
import random
import struct
from pathlib import Path

import pytest
import torch

from lambdascope.artifacts import ArtifactError, TensorInfo, inspect_safetensors, load_safetensors
from tests.artifact_samples import expect, torch_save_bytes, valid_st
from tests.artifact_samples import legit  # noqa: F401 - a fixture, used by name


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


def _st(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def _header_len(b: bytes) -> int:
    return struct.unpack("<Q", b[:8])[0]


BAD_SAFETENSORS = {
    "empty": (lambda: b"", ["empty"]),
    "random": (lambda: random.Random(0).randbytes(4096), ["header length"]),
    "truncated_header": (lambda: valid_st()[: 8 + _header_len(valid_st()) // 2], ["header length", "truncated"]),
    "truncated_data": (lambda: valid_st()[:-3], ["truncated"]),
    "length_past_eof": (
        lambda: struct.pack("<Q", _header_len(valid_st()) + 1000) + valid_st()[8:],
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
    "torch_save_pickle": (torch_save_bytes, ["zip archive", "torch.save"]),
    "raw_pickle": (lambda: pickle.dumps({"w": [1.0, 2.0]}, protocol=2), ["pickle"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SAFETENSORS))
def test_bad_safetensors_rejected(case: str, tmp_path: Path) -> None:
    make, words = BAD_SAFETENSORS[case]
    p = tmp_path / "bad.safetensors"
    p.write_bytes(make())
    with pytest.raises(ArtifactError) as e:
        inspect_safetensors(p)
    expect(e, *words)
    with pytest.raises(ArtifactError):
        load_safetensors(p)


def test_pt2_passed_as_safetensors(legit: dict) -> None:
    with pytest.raises(ArtifactError) as e:
        inspect_safetensors(legit["pt2"])
    expect(e, "zip archive")
