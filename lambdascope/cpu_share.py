"""How many torch threads a local worker uses: this machine's cores, shared among the workers
running on it now.

A fixed share (cores / max_concurrent_jobs) gave an audit running alone half of a two-core
machine, so it ran at half speed. More threads than cores is worse still: oversubscribed workers
made training 10-20× slower under load. So each worker registers itself in a directory the
machine's workers share (a file holding an exclusive ``flock`` for the worker's life: the kernel
releases it when the process dies, even by SIGKILL, so a dead worker is never counted), counts
the live ones, takes ``cores // live`` threads, and recounts from its progress reports at most
every :data:`RECOUNT_SECONDS`. When a second worker starts, the first shrinks to its share within
that time; when one ends, the others grow back.

"Cores" are those this process may run on (CPU affinity), capped by a cgroup v2 CPU quota when
there is one (a container's CPU limit).
"""
from __future__ import annotations

import fcntl
import math
import os
import tempfile
import time
from pathlib import Path

__all__ = ["RECOUNT_SECONDS", "Share", "available_cores", "default_directory"]

RECOUNT_SECONDS = 5.0


def default_directory() -> Path:
    """The machine's shared directory of worker markers (per user)."""
    return Path(tempfile.gettempdir()) / f"lambdascope-workers-{os.getuid()}"


def available_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 ``cpu.max`` quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


class Share:
    """This worker's place among the machine's workers; :meth:`threads` is its fair share.

    ``fixed`` > 0 (the ``worker_threads`` setting) turns sharing off: always that many threads.
    """

    def __init__(self, fixed: int = 0, directory: Path | None = None, cores: int | None = None):
        self.fixed = fixed
        self.cores = cores or available_cores()
        self.directory = directory or default_directory()
        self._marker: int | None = None
        self._counted_at = -math.inf
        self.current = 0

    def join(self) -> int:
        """Register this process and return its share."""
        if self.fixed <= 0 and self._marker is None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.directory / f"{os.getpid()}", os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._marker = fd
        return self.threads(now=True)

    def threads(self, now: bool = False) -> int:
        """Threads this worker should use: recounted when ``now`` or RECOUNT_SECONDS have passed."""
        if self.fixed > 0:
            self.current = self.fixed
            return self.fixed
        clock = time.monotonic()
        if now or clock - self._counted_at >= RECOUNT_SECONDS:
            self._counted_at = clock
            self.current = max(1, self.cores // max(1, self.live_workers()))
        return self.current

    def live_workers(self) -> int:
        """Workers holding their marker's lock; markers of dead ones are removed."""
        live = 0
        for path in self.directory.glob("[0-9]*"):
            if path.name == str(os.getpid()):
                live += self._marker is not None
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:  # removed meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live += 1
            else:  # nobody holds it: its worker is gone
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return live
