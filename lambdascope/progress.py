"""A terminal progress bar for job events (a line per update when stderr is not a TTY).

On a terminal the bar rewrites one line in place, so it is cut to the terminal's width: a line
that wrapped would leave its first rows behind at every update (an audit's status, "ESS 23/200,
R-hat 1.08/1.05, MCSE 3.1%/2%, drift +4.0%/2% per doubling", is longer than 80 columns).
"""
from __future__ import annotations

import shutil
import sys
import time

from lambdascope.v1 import jobs_pb2


class ProgressBar:
    def __init__(self, label: str, width: int = 30, stream=sys.stderr):
        self.label = label
        self.width = width
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0

    def update(self, event: jobs_pb2.JobEvent) -> None:
        now = time.monotonic()
        if not self.tty and now - self._last < 2.0 and event.state == jobs_pb2.JOB_STATE_RUNNING:
            return
        self._last = now
        frac = event.step / event.total if event.total else 0.0
        filled = int(round(frac * self.width))
        metrics = "  ".join(f"{k}={v:.4g}" for k, v in sorted(event.metrics.items())
                            if k in ("loss", "accuracy", "llc"))
        state = jobs_pb2.JobState.Name(event.state).removeprefix("JOB_STATE_").lower()
        line = (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{100 * frac:5.1f}% {state} {metrics} {event.message}").rstrip()
        self.stream.write(("\r\x1b[2K" + _fit(line)) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fit(line: str) -> str:
    """``line`` cut to one row of the terminal (its last column left free: some terminals wrap
    on writing it)."""
    room = shutil.get_terminal_size(fallback=(120, 24)).columns - 1
    return line if len(line) <= room else line[: max(room - 1, 0)] + "…"
