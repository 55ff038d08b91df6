"""Snapshots of an estimate in progress, so that a run killed part-way (a worker lost to OOM, a
node drained) resumes instead of starting over, and ends with the estimate it would have had.

Every sampling run is seeded by its own seed (sgld: one stream per chain), so an estimate is a
deterministic function of its settings and the states its chains start from. A snapshot
therefore holds only stage boundaries: the calibration result and the chains' states after
calibration, the warm-up's trace, and the main run's chunks with the chains' last states. Any
snapshot, however old, resumes to the same result (to float rounding where the resumed run
compiles its gradient at another point than the first would have: lambdascope.llc.compiled);
where they are kept (and how often one is written) is the caller's choice (`Snapshots`). Plain
data: numbers, strings, lists, tensors.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any, Protocol

import torch

from lambdascope.llc.calibration import CalibrationCandidate, CalibrationResult
from lambdascope.llc.sgld import SGLDTrace


class Snapshots(Protocol):
    """Where one estimate's snapshots are kept."""

    def load(self) -> dict | None:
        """The last snapshot saved, or None."""

    def save(self, state: dict) -> None:
        """Replace the snapshot (an implementation may skip some: any one resumes right)."""


# The layout of a snapshot's state; raised when it changes, so that a worker never resumes one
# written by another version (2: the main run records its sampling clock; 3: and its
# preconditioner, and traces their gradients' second moments; 4: M in a basis, the moments of
# each weight matrix's rows and columns; 5: the recorded losses less each minibatch's own loss at
# w*, sgld.run_sgld's ``baseline``).
FORMAT = 5


def fingerprint(config: Any, num_parameters: int, num_examples: int, init_loss: float) -> str:
    """What a snapshot must have been taken of to be resumed: these settings, on a model and
    data that give the same size and the same loss at w*, by an estimator of this FORMAT."""
    text = repr((FORMAT, sorted(dataclasses.asdict(config).items()), num_parameters, num_examples,
                 float(init_loss).hex()))
    return hashlib.sha256(text.encode()).hexdigest()


class Saver:
    """Keeps the state of one estimate's current attempt and writes it at each boundary."""

    def __init__(self, snapshots: Snapshots | None, key: str, began: float):
        self.snapshots, self.key, self.began = snapshots, key, began
        self.state: dict = {}
        self.calibration: CalibrationResult | None = None

    def attempt(self, calibration: CalibrationResult, step_size: float, start: torch.Tensor | None,
                warm: int, retries: int) -> None:
        """An attempt begins: after calibration, or after a restart from w* at a smaller step."""
        self.calibration = calibration
        self.state = {"step_size": step_size, "start": start, "warm": warm, "retries": retries,
                      "warmup": None, "main": None}
        self._write()

    def warmed(self, trace: SGLDTrace, step_size: float) -> None:
        self.state["warmup"] = {"trace": trace_state(trace, final=True), "step_size": step_size}
        self._write()

    def main(self, parts: list[SGLDTrace], **loop: Any) -> None:
        """The main run between chunks: its chunks so far (the last with the chains' states)."""
        self.state["main"] = {"parts": [trace_state(p, final=i == len(parts) - 1)
                                        for i, p in enumerate(parts)], **loop}
        self._write()

    def _write(self) -> None:
        if self.snapshots is None:
            return
        self.snapshots.save({"fingerprint": self.key, "elapsed": time.perf_counter() - self.began,
                             "calibration": calibration_state(self.calibration), **self.state})


def resumable(snapshots: Snapshots | None, key: str) -> dict | None:
    """The saved snapshot of this estimate, or None (none saved, or one of another estimate)."""
    saved = snapshots.load() if snapshots is not None else None
    return saved if saved is not None and saved.get("fingerprint") == key else None


def trace_state(trace: SGLDTrace, *, final: bool) -> dict:
    """A trace as plain data; `final` keeps the chains' last states and the gradients' moments
    (only the last chunk's are ever needed: the main run keeps its preconditioner's own state)."""
    state = {f.name: getattr(trace, f.name) for f in dataclasses.fields(SGLDTrace)}
    if not final:
        state["final"] = state["moments"] = None
    return state


def trace_from(state: dict, device: torch.device) -> SGLDTrace:
    values = dict(state)
    if values["final"] is not None:
        values["final"] = values["final"].to(device)
    return SGLDTrace(**values)


def calibration_state(calibration: CalibrationResult | None) -> dict | None:
    if calibration is None:
        return None
    state = {f.name: getattr(calibration, f.name) for f in dataclasses.fields(CalibrationResult)
             if f.name != "states"}
    state["candidates"] = [dataclasses.asdict(c) for c in calibration.candidates]
    return state


def calibration_from(state: dict) -> CalibrationResult:
    values = dict(state)
    values["candidates"] = [CalibrationCandidate(**c) for c in values["candidates"]]
    return CalibrationResult(**values)


class InMemory:
    """Snapshots kept in this process (tests; a caller that only wants the last state)."""

    def __init__(self) -> None:
        self.last: dict | None = None
        self.saves = 0

    def load(self) -> dict | None:
        return self.last

    def save(self, state: dict) -> None:
        self.saves += 1
        self.last = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}


