"""The parsers that read user bytes, fuzzed (hypothesis): safetensors headers and datasets, the
`.pt2` inspection, train specs (JSON/YAML) and chunked uploads. Every generated input must be
accepted or refused with the parser's own error; any other exception is a crash and fails.

`make test` tries LAMBDASCOPE_FUZZ_EXAMPLES cases per parser (default 150, a few seconds each);
the longer run written down in docs/benchmarks.md §7:

    LAMBDASCOPE_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/unit/test_fuzz_parsers.py -q --timeout 3600

A hang is caught by pytest-timeout (the suite's per-test limit), not by timing the cases.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import struct
import tempfile
import zipfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lambdascope import artifacts, errors, specs
from lambdascope.v1 import registry_pb2, trainer_pb2
from services.registry import uploads

EXAMPLES = int(os.environ.get("LAMBDASCOPE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("LAMBDASCOPE_FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
TRIED: dict[str, int] = {}


def tried(parser: str) -> None:
    TRIED[parser] = TRIED.get(parser, 0) + 1


def scratch(data: bytes, suffix: str) -> pathlib.Path:
    fd, name = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return pathlib.Path(name)


# -- safetensors ------------------------------------------------------------------------------

DTYPES = ["F32", "F64", "F16", "BF16", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "X", ""]
JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() |
                       st.text(max_size=8), lambda inner: st.lists(inner, max_size=4) |
                       st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)


@st.composite
def safetensors_bytes(draw) -> bytes:
    """Files near the format: a header length (often right), a JSON header of plausible entries
    (sometimes wrong in one place), then data; or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=256))
    header: dict = {}
    offset = 0
    for i in range(draw(st.integers(0, 4))):
        shape = draw(st.lists(st.integers(-2, 6), max_size=3))
        size = draw(st.integers(0, 64))
        entry = {"dtype": draw(st.sampled_from(DTYPES)), "shape": shape,
                 "data_offsets": draw(st.sampled_from([[offset, offset + size], [offset + size, offset],
                                                       [0, size], [offset]]))}
        if draw(st.integers(0, 5)) == 0:
            entry = draw(JSONISH)
        header[draw(st.sampled_from(["x", "y", f"t{i}", "__metadata__"]))] = entry
        offset += size
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=5), st.text(max_size=5) | JSONISH,
                                                      max_size=3))
    raw = json.dumps(header).encode() if draw(st.integers(0, 7)) else draw(st.binary(max_size=64))
    length = draw(st.sampled_from([len(raw), len(raw) + 1, max(0, len(raw) - 1), 2**64 - 1, 0]))
    return struct.pack("<Q", length) + raw + draw(st.binary(max_size=offset + 8))


@FUZZ
@given(safetensors_bytes())
def test_safetensors_headers_and_datasets(data):
    path = scratch(data, ".safetensors")
    try:
        for parse in (artifacts.inspect_safetensors, artifacts.inspect_dataset):
            try:
                parse(path)
            except artifacts.ArtifactError:
                pass
        tried("safetensors")
    finally:
        path.unlink()


# -- .pt2 -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    program = torch.export.export(model, (torch.randn(2, 3),))
    path = tmp_path_factory.mktemp("pt2") / "m.pt2"
    torch.export.save(program, path)
    data = path.read_bytes()
    artifacts.inspect_pt2(scratch(data, ".pt2"))  # the unmutated archive is accepted
    return data


@st.composite
def mutations(draw, size: int):
    kind = draw(st.sampled_from(["flip", "truncate", "append", "splice", "member"]))
    return kind, draw(st.integers(0, size - 1)), draw(st.binary(min_size=1, max_size=32))


def mutate(data: bytes, kind: str, at: int, junk: bytes) -> bytes:
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ junk[0]]) + data[at + 1:]
    if kind == "truncate":
        return data[:at]
    if kind == "append":
        return data + junk
    if kind == "splice":
        return data[:at] + junk + data[at + len(junk):]
    # a member replaced or added inside a rebuilt archive (of one still readable as a zip)
    try:
        source = zipfile.ZipFile(io.BytesIO(data))
        members = {name: source.read(name) for name in source.namelist()}
    except Exception:  # noqa: BLE001 - damaged by an earlier step: damage it further instead
        return data + junk
    names = list(members)
    target = names[at % len(names)] if names else "x"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as rebuilt:
        for name in names:
            rebuilt.writestr(name, junk if name == target else members[name])
        if junk[0] % 3 == 0:
            rebuilt.writestr(target.split("/")[0] + "/extra/" + junk.hex()[:8], junk)
    return out.getvalue()


@FUZZ
@given(data=st.data())
def test_pt2_inspection_of_damaged_archives(archive, data):
    steps = data.draw(st.lists(mutations(len(archive)), min_size=1, max_size=3))
    mutated = archive
    for kind, at, junk in steps:
        mutated = mutate(mutated, kind, min(at, max(0, len(mutated) - 1)), junk) if mutated else junk
    path = scratch(mutated, ".pt2")
    try:
        try:
            artifacts.inspect_pt2(path, max_uncompressed_bytes=16 * 2**20)
        except artifacts.ArtifactError:
            pass
        tried("pt2")
    finally:
        path.unlink()


# -- train specs (JSON/YAML) ------------------------------------------------------------------

FIELDS = [f.name for f in trainer_pb2.TrainSpec.DESCRIPTOR.fields]
SPEC_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**65, 2**65) | st.floats() | st.text(max_size=10) |
    st.sampled_from(["mse", "cross_entropy", "LOSS_KIND_MSE", "adam", "digits", "nan", "1e999"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(FIELDS + ["widths", "mlp", "kind", "builtin", "x"]), inner, max_size=4),
    max_leaves=15)


@FUZZ
@example(doc={}, as_yaml=False, raw="1")  # found by the long run: a file holding a bare number
@example(doc={}, as_yaml=True, raw="- a\n- b")
@given(doc=st.dictionaries(st.sampled_from(FIELDS + ["unknown"]), SPEC_VALUES, max_size=6),
       as_yaml=st.booleans(), raw=st.one_of(st.none(), st.text(max_size=200)))
def test_train_specs(doc, as_yaml, raw):
    import yaml

    if raw is not None:
        text = raw
    else:
        text = yaml.safe_dump(doc) if as_yaml else json.dumps(doc)
    path = scratch(text.encode("utf-8", "surrogatepass"), ".yaml" if as_yaml else ".json")
    try:
        try:
            specs.load(path, trainer_pb2.TrainSpec())
        except ValueError:
            pass
        tried("spec")
    finally:
        path.unlink()


# -- chunked uploads --------------------------------------------------------------------------

@st.composite
def upload_streams(draw):
    body = draw(st.binary(max_size=300))
    right = hashlib.sha256(body).hexdigest()
    header = registry_pb2.DatasetUploadHeader(
        name="d", sha256=draw(st.sampled_from([right, right.upper(), "0" * 64, "zz", ""])),
        size_bytes=draw(st.sampled_from([len(body), len(body) + 1, max(0, len(body) - 1), -1, 2**40])))
    messages = [registry_pb2.UploadDatasetRequest(header=header)] if draw(st.integers(0, 9)) else []
    cut = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    for a, b in zip([0, *cut], [*cut, len(body)]):
        messages.append(registry_pb2.UploadDatasetRequest(chunk=body[a:b]))
    if draw(st.integers(0, 9)) == 0:
        messages.insert(draw(st.integers(1, len(messages))), registry_pb2.UploadDatasetRequest(header=header))
    return messages


@FUZZ
@given(upload_streams())
def test_chunked_uploads(tmp_path, messages):
    staging = tmp_path / "staging"
    try:
        staged = uploads.receive(iter(messages), staging, 2**20, lambda header: None)
    except errors.ApiError:
        assert not staging.exists() or not any(staging.iterdir()), "a refused upload left a file"
    else:
        assert staged.path.read_bytes() == b"".join(m.chunk for m in messages)
        staged.discard()
    tried("upload")


def test_zz_the_number_of_cases_tried_is_written_down(capsys):
    """(Runs last in this file.) Each parser was tried on the number of cases asked."""
    with capsys.disabled():
        print(f"\nfuzz cases tried: {TRIED}")
    assert all(TRIED.get(p, 0) >= min(EXAMPLES, 50) for p in ("safetensors", "pt2", "spec", "upload")), TRIED
