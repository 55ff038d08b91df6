"""Paths and helpers of the observability tests (fixtures: conftest.py)."""
from __future__ import annotations

import pathlib
import subprocess
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "k8s" / "base"
ALERTS = DEPLOY / "alerts"
DASHBOARDS = DEPLOY / "dashboards"


def run_promtool(promtool: str, *args: str, stdin: str | None = None,
                 cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], input=stdin, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        return reply.read().decode()
