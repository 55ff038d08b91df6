"""`lambdascope up` serves all three services; other commands find it without flags."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import pathlib
import sys
import time


def test_up_prints_services_and_other_commands_find_it(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAMBDASCOPE")},
           "LAMBDASCOPE_HOME": str(tmp_path / "home")}
    up = subprocess.Popen([sys.executable, "-m", "lambdascope.cli", "up", "--data-dir",
                           str(tmp_path / "data")], stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = [up.stdout.readline() for _ in range(3)]
        names = [line.split()[0] for line in lines]
        assert names == ["registry", "trainer", "estimator"], lines
        addresses = {line.split()[0]: line.split()[1] for line in lines}
        assert all(a.startswith("127.0.0.1:") for a in addresses.values())
        files = list((tmp_path / "home" / "platforms").glob("*.json"))
        assert len(files) == 1
        discovered = json.loads(files[0].read_text())
        assert discovered["endpoints"] == addresses and discovered["pid"] == up.pid

        models = subprocess.run([sys.executable, "-m", "lambdascope.cli", "models"],
                                capture_output=True, text=True, env=env, timeout=60)
        assert models.returncode == 0, models.stderr
        jobs = subprocess.run([sys.executable, "-m", "lambdascope.cli", "jobs", "--kind", "audit"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert jobs.returncode == 0, jobs.stderr
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
    assert up.returncode == 0
    assert "stopped" in rest
    assert not list((tmp_path / "home" / "platforms").glob("*.json"))


def _up(data_dir, env) -> tuple[subprocess.Popen, dict[str, str]]:
    up = subprocess.Popen([sys.executable, "-m", "lambdascope.cli", "up", "--data-dir", str(data_dir)],
                          stdout=subprocess.PIPE, text=True, env=env)
    lines = [up.stdout.readline() for _ in range(3)]
    return up, {line.split()[0]: line.split()[1] for line in lines if line.strip()}


def _stop(up: subprocess.Popen) -> None:
    up.send_signal(signal.SIGINT)
    up.communicate(timeout=60)


def _cli(env, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lambdascope.cli", *argv], capture_output=True, text=True,
                          env=env, timeout=60)


def test_two_platforms_are_found_by_data_dir_and_outlive_each_other(tmp_path, monkeypatch):
    from lambdascope.client import Client

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAMBDASCOPE")},
           "LAMBDASCOPE_HOME": str(tmp_path / "home")}
    monkeypatch.setenv("LAMBDASCOPE_HOME", env["LAMBDASCOPE_HOME"])
    first, second = tmp_path / "first", tmp_path / "second"
    up1, addresses1 = _up(first, env)
    try:
        up2, addresses2 = _up(second, env)
        try:
            assert addresses1 != addresses2
            both = _cli(env, "models")
            assert both.returncode == 1 and "several platforms are running" in both.stderr
            assert str(first.resolve()) in both.stderr and str(second.resolve()) in both.stderr
            for data_dir, addresses in ((first, addresses1), (second, addresses2)):
                assert _cli(env, "models", "--data-dir", str(data_dir)).returncode == 0
                assert Client(data_dir=str(data_dir)).endpoints == addresses
        finally:
            _stop(up2)
        # The second one's exit removed its own record only: the first is still found, without flags.
        assert _cli(env, "models").returncode == 0
        assert Client().endpoints == addresses1
        gone = _cli(env, "models", "--data-dir", str(second))
        assert gone.returncode == 1 and "no platform is running on data dir" in gone.stderr
    finally:
        _stop(up1)


def test_a_stale_record_names_the_dead_pid(tmp_path, monkeypatch):
    from lambdascope import discovery

    monkeypatch.setenv("LAMBDASCOPE_HOME", str(tmp_path / "home"))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAMBDASCOPE")},
           "LAMBDASCOPE_HOME": str(tmp_path / "home")}
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)  # a process that has exited: as an `up` killed with SIGKILL leaves its record
    discovery.record(tmp_path / "data", {"registry": "127.0.0.1:1"}, pid=pid)
    stale = _cli(env, "models")
    assert stale.returncode == 1
    assert f"pid {pid}" in stale.stderr and "lambdascope up --data-dir" in stale.stderr, stale.stderr
    assert "Traceback" not in stale.stderr and "UNAVAILABLE" not in stale.stderr
    assert not list((tmp_path / "home" / "platforms").glob("*.json"))  # cleared
    again = _cli(env, "models")
    assert "no platform is running" in again.stderr


def test_an_unreachable_server_says_what_to_do(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAMBDASCOPE")},
           "LAMBDASCOPE_HOME": str(tmp_path / "home")}
    from lambdascope.local import free_port

    result = _cli(env, "models", "--server", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach a lambdascope service at 127.0.0.1:" in result.stderr, result.stderr
    # Refused at once, not a wait for readiness that ends in deadline_exceeded.
    assert "(unavailable:" in result.stderr and "Traceback" not in result.stderr


def test_a_script_killed_with_sigterm_takes_its_platform_down(tmp_path):
    """A benchmark or notebook using `with LocalPlatform(...)` and stopped with SIGTERM (pkill,
    a CI timeout) stops the services it started instead of leaving them running."""
    script = tmp_path / "script.py"
    script.write_text(
        "import sys, time\n"
        "from lambdascope.local import LocalPlatform\n"
        f"with LocalPlatform({str(tmp_path / 'data')!r}) as platform:\n"
        "    print(' '.join(str(p.pid) for p in platform.procs.values()), flush=True)\n"
        # a script at work: Python runs a signal's handler when the main thread next runs
        # bytecode (one long sleep would hold it off if the signal reached a gRPC thread)
        "    for _ in range(1200):\n"
        "        time.sleep(0.5)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            cwd=pathlib.Path(__file__).resolve().parents[2])
    pids: list[int] = []
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3 and all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids), "services outlived the script"
    finally:
        proc.kill()
        for pid in pids:  # a failed run leaves no servers behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
