"""An estimate interrupted at any stage boundary and resumed from its snapshot ends with the
estimate an uninterrupted run gives (same seed): after calibration, after the warm-up, between
chunks of the main run, and after a snapshot was skipped (an older one resumes right too)."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lambdascope import tensorfile
from lambdascope.llc import llc as llc_module
from lambdascope.llc.llc import SGLDConfig, estimate_llc
from lambdascope.llc.snapshots import InMemory

mse = torch.nn.functional.mse_loss


class Killed(Exception):
    """Stands for the worker dying right after a snapshot was written."""


class DiesAfter(InMemory):
    """Keeps snapshots as a file would (written and read back through lambdascope.tensorfile)
    and dies right after the `die_at`-th save; `keep` saves only those numbers."""

    def __init__(self, tmp_path, die_at: int, keep=None):
        super().__init__()
        self.path, self.die_at, self.keep = tmp_path / "snapshot.safetensors", die_at, keep

    def save(self, state: dict) -> None:
        self.saves += 1
        if self.keep is None or self.saves in self.keep:
            tensorfile.write(self.path, state)
        if self.saves == self.die_at:
            raise Killed()

    def load(self) -> dict | None:
        return tensorfile.read(self.path) if self.path.exists() else None


def _problem(config: SGLDConfig):
    """Two outputs, so that the weight is a matrix a Kronecker M rotates; for a preconditioned
    run the inputs are scaled 1/4-4 in a random basis, so that M is worth its while
    (lambdascope.llc.llc.MIN_RAISE; a plain run would need far longer there)."""
    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    x = torch.randn(1000, 6, generator=gen, dtype=torch.float64)
    if config.precondition != "none":
        x = x @ torch.diag(torch.logspace(-1, 1, 6, base=4.0, dtype=torch.float64)) @ basis.T
    y = x @ torch.randn(6, 2, generator=gen, dtype=torch.float64) + 0.3 * torch.randn(1000, 2, generator=gen,
                                                                                    dtype=torch.float64)
    model = torch.nn.Linear(6, 2, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    return model, x, y


# calibrated, a warm-up, then run until trusted (looser targets than the default: a short run that
# still writes 13-16 snapshots; at the default drift bound it runs ~3x longer and writes no
# different kind of snapshot); eager throughout, since when a run compiles depends on the
# machine's speed
CONFIG = SGLDConfig(chains=2, seed=5, chains_per_pass=2, until_ess=60, max_mcse=0.05, max_drift=0.1,
                    compile_gradients=False, precondition="none")
# ... and preconditioned: the snapshot must carry M (its basis too) and the gradients gathered
# towards the next one
PRECONDITIONED = dataclasses.replace(CONFIG, precondition="kronecker")


@pytest.fixture(scope="module", params=[CONFIG, PRECONDITIONED], ids=["plain", "preconditioned"])
def baseline(request):
    model, x, y = _problem(request.param)
    counted = InMemory()
    result = estimate_llc(model, x, y, mse, request.param, device="cpu", snapshots=counted)
    assert result.calibration.ran and result.stopping.reason == "converged"
    assert counted.saves >= 4, counted.saves  # calibration, warm-up, two chunk boundaries at least
    assert ("preconditioner" in result.stopping.summary) == (request.param.precondition == "kronecker")
    return result, counted.saves, request.param


@pytest.mark.parametrize("die_at, keep", [(1, None), (2, None), (3, None), ("last", None),
                                         ("last", {1, 2})])
def test_a_resumed_estimate_equals_the_uninterrupted_one(baseline, tmp_path, monkeypatch, die_at, keep):
    expected, saves, config = baseline
    die_at = saves if die_at == "last" else die_at
    model, x, y = _problem(config)
    snapshots = DiesAfter(tmp_path, die_at, keep)
    with pytest.raises(Killed):
        estimate_llc(model, x, y, mse, config, device="cpu", snapshots=snapshots)
    snapshots.die_at = -1
    # It continues, not starts over: no second calibration, and sampling picks up where the
    # snapshot left the chains.
    saved = snapshots.load()
    done = sum(len(p["losses"][0]) for p in (saved["main"] or {}).get("parts", []))
    done += len(saved["warmup"]["trace"]["losses"][0]) if saved["warmup"] else 0
    monkeypatch.setattr(llc_module, "calibrate", lambda *a, **k: pytest.fail("calibrated again"))
    steps: list[int] = []
    resumed = estimate_llc(model, x, y, mse, config, device="cpu", snapshots=snapshots,
                           progress=lambda step, *_: steps.append(step))
    assert min(steps) >= done > 0 or saved["warmup"] is None, (min(steps), done)
    # Float tolerance: torch's reductions may round differently from one process to the next.
    assert resumed.mean == pytest.approx(expected.mean, rel=1e-9)
    assert resumed.per_chain == pytest.approx(expected.per_chain, rel=1e-9)
    assert resumed.step_size == pytest.approx(expected.step_size, rel=1e-9)
    assert resumed.burnin == expected.burnin
    assert resumed.stopping.steps == expected.stopping.steps
    assert resumed.calibration.summary == expected.calibration.summary
    assert len(resumed.traces[0]) == len(expected.traces[0])


def test_a_snapshot_of_another_estimate_is_not_resumed(baseline, tmp_path):
    expected, _, config = baseline
    model, x, y = _problem(config)
    snapshots = DiesAfter(tmp_path, 2)
    with pytest.raises(Killed):
        estimate_llc(model, x, y, mse, dataclasses.replace(config, seed=6), device="cpu", snapshots=snapshots)
    snapshots.die_at = -1
    fresh = estimate_llc(model, x, y, mse, config, device="cpu", snapshots=snapshots)
    assert fresh.mean == pytest.approx(expected.mean, rel=1e-9) and math.isfinite(fresh.mean)
