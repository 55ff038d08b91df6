"""What the tests of lambdascope.artifacts (tests/unit/test_artifacts_*.py) share: a legitimate
model exported as `.pt2` with its weights and data as safetensors (the `legit` fixture, built once
per test module that imports it), small valid files of each kind, and helpers that take a `.pt2`
apart and write altered copies."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lambdascope.artifacts import ArtifactError, inspect_pt2


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


def expect(exc: pytest.ExceptionInfo, *words: str) -> None:
    msg = str(exc.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def pt2_refused(path: Path, *words: str) -> None:
    """`inspect_pt2` refuses the file, with a message naming every one of `words`."""
    with pytest.raises(ArtifactError) as e:
        inspect_pt2(path)
    expect(e, *words)


def valid_st() -> bytes:
    buf = io.BytesIO()
    from safetensors.torch import save

    buf.write(save({"a": torch.arange(6, dtype=torch.float32), "b": torch.ones(2, 2)}))
    return buf.getvalue()


def torch_save_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    return buf.getvalue()


# -- taking .pt2 archives apart -----------------------------------------------------------------


def members(src: Path) -> tuple[str, list[tuple[str, bytes]]]:
    with zipfile.ZipFile(src) as z:
        items = [(i.filename, z.read(i)) for i in z.infolist()]
    root = items[0][0].split("/", 1)[0]
    return root, items


def rewrite(src: Path, dst: Path, edits: dict[str, bytes | None]) -> Path:
    """Copy a .pt2, replacing (bytes), dropping (None) or adding members named relative to the root."""
    root, items = members(src)
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


def read_member(src: Path, rel: str) -> bytes:
    root, _ = members(src)
    with zipfile.ZipFile(src) as z:
        return z.read(f"{root}/{rel}")


def write_zip(dst: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(dst, "w", compression) as out:
        for n, b in members.items():
            out.writestr(n, b)
    return dst
