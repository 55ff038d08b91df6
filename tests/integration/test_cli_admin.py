"""`lambdascope admin` and `whoami` as the README shows them: a team, a key printed once, used."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid


def cli(platform, *args: str, key: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lambdascope.cli", *args, "--server",
                           platform.endpoints["registry"], "--api-key", key],
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "LAMBDASCOPE_API_KEY"})


def test_an_admin_makes_a_team_and_a_key_that_then_works_and_can_be_revoked(platform):
    team = f"vision-{uuid.uuid4().hex[:6]}"
    assert cli(platform, "admin", "team", "create", team, key=platform.api_key).returncode == 0
    made = cli(platform, "admin", "key", "create", "--team", team, "--role", "writer",
               "--expires", "90", "--description", "ci", "--user", "ana@vision",
               key=platform.api_key)
    assert made.returncode == 0, made.stderr
    key = made.stdout.splitlines()[0]
    assert key.startswith("lsk_") and "shown once" in made.stdout
    me = cli(platform, "whoami", key=key)
    assert me.returncode == 0 and f"team {team}" in me.stdout and "role writer" in me.stdout
    assert "user ana@vision" in me.stdout
    listed = cli(platform, "admin", "key", "list", "--team", team, key=platform.api_key)
    key_id = key.split("_")[1]
    assert key_id in listed.stdout and key not in listed.stdout  # the secret is never shown again
    assert "ana@vision" in listed.stdout
    refused = cli(platform, "admin", "team", "list", key=key)
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr
    assert cli(platform, "admin", "key", "revoke", key_id, key=platform.api_key).returncode == 0
    gone = cli(platform, "whoami", key=key)
    assert gone.returncode == 1 and "UNAUTHENTICATED" in gone.stderr and key not in gone.stderr
