"""A worker's thread count follows the workers alive on the machine (lambdascope.cpu_share),
with real processes holding real locks."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lambdascope import cpu_share

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from lambdascope import cpu_share
    share = cpu_share.Share(directory=Path(sys.argv[1]), cores=8)
    print(share.join(), flush=True)
    time.sleep(60)
""")


def _holder(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout.readline().strip()  # registered
    return proc


def test_alone_a_worker_takes_every_core(tmp_path):
    assert cpu_share.Share(directory=tmp_path, cores=8).join() == 8


def test_shares_follow_workers_starting_and_dying(tmp_path):
    me = cpu_share.Share(directory=tmp_path, cores=8)
    assert me.join() == 8
    others = [_holder(tmp_path), _holder(tmp_path), _holder(tmp_path)]
    try:
        assert me.live_workers() == 4
        assert me.threads(now=True) == 2
        assert me.threads() == 2  # not recounted within RECOUNT_SECONDS
        others[0].kill()  # SIGKILL: the kernel drops its lock, its marker is cleaned up
        others[0].wait()
        assert me.threads(now=True) == 2  # 8 // 3
        assert not (tmp_path / str(others[0].pid)).exists()
        for proc in others[1:]:
            proc.kill()
            proc.wait()
        assert me.threads(now=True) == 8
    finally:
        for proc in others:
            proc.kill()
            proc.wait()


def test_a_marker_left_by_a_dead_process_is_not_counted(tmp_path):
    (tmp_path / "999999").write_text("")  # no process holds its lock
    me = cpu_share.Share(directory=tmp_path, cores=4)
    assert me.join() == 4
    assert not (tmp_path / "999999").exists()


def test_never_fewer_than_one_thread(tmp_path):
    me = cpu_share.Share(directory=tmp_path, cores=1)
    me.join()
    other = _holder(tmp_path)
    try:
        assert me.threads(now=True) == 1
    finally:
        other.kill()
        other.wait()


def test_a_fixed_setting_turns_sharing_off(tmp_path):
    fixed = cpu_share.Share(fixed=3, directory=tmp_path, cores=8)
    assert fixed.join() == 3
    assert list(tmp_path.iterdir()) == []  # not registered, not counted by others


@pytest.mark.parametrize("text, cores", [("max 100000", 64), ("150000 100000", 2), ("50000 100000", 1)])
def test_a_cgroup_quota_caps_the_cores(tmp_path, monkeypatch, text, cores):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    (tmp_path / "cpu.max").write_text(text + "\n")
    assert cpu_share.available_cores(tmp_path) == cores
