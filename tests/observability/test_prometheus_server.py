"""A real Prometheus server (Debian's package) on loopback scrapes the three services that
`lambdascope up` started; after an audit its HTTP API shows the job and gRPC counters moved."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from lambdascope import discovery
from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def query(base: str, promql: str) -> float | None:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        result = json.load(response)["data"]["result"]
    return sum(float(r["value"][1]) for r in result) if result else None


def wait_for(base: str, promql: str, check, timeout: float = 60.0) -> float:
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            value = query(base, promql)
        except OSError:  # the server is still starting
            value = None
        if value is not None and check(value):
            return value
        time.sleep(0.5)
    raise AssertionError(f"{promql} never satisfied the check (last value {value})")


@pytest.fixture
def up(tmp_path):
    """`lambdascope up` in a subprocess: {service: (grpc address, metrics address)}."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAMBDASCOPE")},
           "LAMBDASCOPE_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "lambdascope.cli", "up", "--data-dir",
                             str(tmp_path / "data")], stdout=subprocess.PIPE, text=True, env=env)
    try:
        services = {}
        for _ in range(3):
            line = proc.stdout.readline()
            found = re.match(r"(\w+)\s+(\S+)\s+\(metrics http://([^/]+)/metrics\)", line)
            assert found, line
            services[found[1]] = (found[2], found[3])
        yield services
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


@pytest.fixture
def prometheus(promtool, up, tmp_path):
    """Prometheus scraping the three metrics endpoints every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus server binary is missing (Debian package `prometheus`)")
    jobs = "\n".join(f"  - job_name: {name}\n    static_configs:\n"
                     f"      - targets: ['{metrics}']" for name, (_, metrics) in up.items())
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                      f"scrape_configs:\n{jobs}\n")
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(base, 'sum(up{job=~"registry|trainer|estimator"})', lambda v: v == 3)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_prometheus_sees_the_audit_in_the_job_and_grpc_counters(prometheus, up, tmp_path,
                                                                 regression_files):
    from lambdascope.client import Client

    model_path, data_path = regression_files
    client = Client(**{name: grpc for name, (grpc, _) in up.items()},
                    api_key=discovery.admin_key(tmp_path / "data"))
    finished = 'sum(lambdascope_jobs_finished_total{job="estimator",kind="audit"})'
    handled = ('sum(grpc_server_handled_total{job="estimator",'
               'grpc_method="StartAudit",grpc_code="OK"})')
    before_finished = query(prometheus, finished) or 0.0
    before_handled = query(prometheus, handled) or 0.0
    version = client.upload_model(model_path, "scraped")
    dataset = client.upload_dataset(data_path, "scraped-data")
    config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_MSE)
    config.sampler.draws, config.sampler.burnin, config.sampler.chains = 40, 20, 2
    done = client.wait(client.start_audit(version.id, dataset.id, config).id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
    assert wait_for(prometheus, finished, lambda v: v >= before_finished + 1) >= 1
    assert wait_for(prometheus, handled, lambda v: v >= before_handled + 1) >= 1
    uploaded = 'sum(lambdascope_registry_transferred_bytes_total{job="registry",direction="upload"})'
    assert wait_for(prometheus, uploaded, lambda v: v > 0) > 0
    client.close()
