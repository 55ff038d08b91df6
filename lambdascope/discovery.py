"""How commands find a platform that `lambdascope up` runs on this machine.

Each running platform has its own file, ``$LAMBDASCOPE_HOME/platforms/<data dir digest>.json``
(endpoints, owner pid, data dir), written atomically when it is serving and removed by that owner
alone when it stops, so several platforms (one per data dir) can run side by side and one's exit
never hides another. A command picks the platform of ``--data-dir`` (or LAMBDASCOPE_DATA_DIR),
else the only one running; a file whose owner died is reported by its pid and cleared.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time

__all__ = ["PlatformNotFound", "admin_key", "admin_key_file", "find", "forget", "home", "platform_file", "record", "running"]


class PlatformNotFound(RuntimeError):
    """No platform to talk to, with what to do about it."""


def home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("LAMBDASCOPE_HOME", "~/.lambdascope")).expanduser()


def platform_file(data_dir: str | os.PathLike) -> pathlib.Path:
    """The discovery file of the platform serving ``data_dir``."""
    key = hashlib.sha256(str(_resolved(data_dir)).encode()).hexdigest()[:16]
    return home() / "platforms" / f"{key}.json"


def record(data_dir: str | os.PathLike, endpoints: dict[str, str], pid: int | None = None) -> pathlib.Path:
    """Announce a serving platform (atomically: readers never see half a file)."""
    path = platform_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"endpoints": endpoints, "pid": pid or os.getpid(), "data_dir": str(_resolved(data_dir)),
             "started_at": time.time()}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, path)
    return path


def forget(data_dir: str | os.PathLike, pid: int | None = None) -> None:
    """Remove the platform's file if ``pid`` (default: this process) still owns it."""
    path = platform_file(data_dir)
    entry = _read(path)
    if entry is not None and entry.get("pid") == (pid or os.getpid()):
        path.unlink(missing_ok=True)


def running() -> tuple[list[dict], list[dict]]:
    """(entries of live platforms, entries whose owner process is gone), each with its ``file``."""
    live, stale = [], []
    folder = home() / "platforms"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        entry = _read(path)
        if entry is None:
            continue
        entry["file"] = str(path)
        (live if _alive(int(entry.get("pid", 0))) else stale).append(entry)
    return live, stale


def find(data_dir: str | os.PathLike | None = None) -> dict:
    """The record of the platform serving ``data_dir`` (LAMBDASCOPE_DATA_DIR when None), else of
    the only platform running: its ``endpoints`` and ``data_dir``; PlatformNotFound says what
    to do otherwise."""
    data_dir = data_dir or os.environ.get("LAMBDASCOPE_DATA_DIR")
    live, stale = running()
    for entry in stale:  # its owner is gone: the addresses lead nowhere
        pathlib.Path(entry["file"]).unlink(missing_ok=True)
    if data_dir is not None:
        wanted = str(_resolved(data_dir))
        match = [e for e in live if e["data_dir"] == wanted]
        if match:
            return match[0]
        dead = [e for e in stale if e["data_dir"] == wanted]
        if dead:
            raise PlatformNotFound(_dead_message(dead[0]))
        raise PlatformNotFound(f"no platform is running on data dir {wanted}: start it with "
                               f"`lambdascope up --data-dir {wanted}`" + _others(live))
    if len(live) == 1:
        return live[0]
    if len(live) > 1:
        raise PlatformNotFound("several platforms are running; choose one with --data-dir DIR (or "
                               "LAMBDASCOPE_DATA_DIR)" + _others(live))
    if stale:
        raise PlatformNotFound(_dead_message(stale[0]))
    raise PlatformNotFound("no platform is running: start one with `lambdascope up` (it keeps running; "
                           "use another terminal), or pass --server HOST:PORT of any lambdascope service")


def admin_key_file(data_dir: str | os.PathLike) -> pathlib.Path:
    """Where `lambdascope up` keeps the admin key of the platform on ``data_dir`` (mode 0600):
    commands on the same machine, as the same user, find it without flags."""
    return _resolved(data_dir) / "admin.key"


def admin_key(data_dir: str | os.PathLike) -> str:
    """The admin key of the platform on ``data_dir``; "" when there is none or it is unreadable."""
    try:
        return admin_key_file(data_dir).read_text().strip()
    except OSError:
        return ""


def _dead_message(entry: dict) -> str:
    return (f"the platform on data dir {entry['data_dir']} is not running any more (its process, pid "
            f"{entry['pid']}, has exited without cleaning up; its record {entry['file']} was removed): "
            f"start it again with `lambdascope up --data-dir {entry['data_dir']}`")


def _others(live: list[dict]) -> str:
    if not live:
        return ""
    return "; running: " + ", ".join(f"--data-dir {e['data_dir']} (pid {e['pid']})" for e in live)


def _read(path: pathlib.Path) -> dict | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and "endpoints" in entry and "data_dir" in entry else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _resolved(data_dir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(data_dir).expanduser().resolve()
