"""`lambdascope up` serves all three services; other commands find it without flags."""
from __future__ import annotations

import json
import os
import signal
import subprocess
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
        discovered = json.loads((tmp_path / "home" / "platform.json").read_text())
        assert discovered["endpoints"] == addresses

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
    assert not (tmp_path / "home" / "platform.json").exists()
