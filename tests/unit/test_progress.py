"""The CLI's progress bar: one row in place on a terminal, full lines in a log."""
from __future__ import annotations

import io

import pytest

from lambdascope.progress import ProgressBar
from lambdascope.v1 import jobs_pb2

STATUS = "ESS 23/200, R-hat 1.08/1.05, MCSE 3.1%/2%, drift +4.0%/2% per doubling"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _event() -> jobs_pb2.JobEvent:
    event = jobs_pb2.JobEvent(state=jobs_pb2.JOB_STATE_RUNNING, step=500, total=100_000, message=STATUS)
    event.metrics["llc"] = 1234.5
    return event


def test_on_a_terminal_the_line_is_cut_to_its_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    out = _Terminal()
    ProgressBar("audit m", stream=out).update(_event())
    written = out.getvalue()
    assert written.startswith("\r\x1b[2K")
    line = written.removeprefix("\r\x1b[2K")
    assert len(line) == 59 and line.endswith("…")  # a wrapped row would stay behind at the next update
    assert line.startswith("audit m [")


def test_a_short_line_and_a_log_are_left_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    out = _Terminal()
    ProgressBar("audit m", stream=out).update(_event())
    assert out.getvalue().endswith(STATUS)
    monkeypatch.setenv("COLUMNS", "60")
    log = io.StringIO()  # not a terminal: one full line per update
    ProgressBar("audit m", stream=log).update(_event())
    assert log.getvalue().endswith(STATUS + "\n")
