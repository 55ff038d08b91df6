"""Ctrl-C while `lambdascope audit` follows its job: no traceback, and no job left running unless
the user chose to keep it (with no terminal to ask on, the CLI cancels it)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from lambdascope.v1 import jobs_pb2


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_ctrl_c_during_an_audit_cancels_its_job_without_a_traceback(platform, client, regression_files, tmp_path):
    model_path, data_path = regression_files
    before = {j.id for j in client.list_jobs("audit")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lambdascope.cli", "audit", "--model", str(model_path), "--data", str(data_path),
         "--loss", "mse", "--name", "interrupted", "--step-size", "1e-4", "--burnin", "0",
         "--draws", "900000", "--chains", "2", "--server", platform.endpoints["estimator"]],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "LAMBDASCOPE_HOME": str(tmp_path), "LAMBDASCOPE_API_KEY": platform.api_key})
    try:
        def running():
            if proc.poll() is not None:
                raise AssertionError(f"the CLI ended early ({proc.returncode}): {proc.stderr.read()}")
            jobs = [j for j in client.list_jobs("audit") if j.id not in before]
            return next((j for j in jobs if j.state == jobs_pb2.JOB_STATE_RUNNING and j.step > 0), None)

        job = _wait_for(running, 180, "the audit to start sampling")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert f"job {job.id} cancel" in err, err  # says what became of the job
    final = _wait_for(lambda: (j := client.get_job(job.id)).state != jobs_pb2.JOB_STATE_RUNNING and j, 60,
                      "the job to stop")
    assert final.state == jobs_pb2.JOB_STATE_CANCELLED, final
