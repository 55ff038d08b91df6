"""A terminal progress bar for job events (a line per update when stderr is not a TTY)."""
from __future__ import annotations

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
        self.stream.write(("\r\x1b[2K" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
