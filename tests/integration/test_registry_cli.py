"""Registry references through the whole platform: `name@alias` in an audit, and the CLI's
alias / tag / models / download / rm / gc commands."""
from __future__ import annotations

import subprocess
import sys

from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2


def cli(platform, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "lambdascope.cli", *args, "--server",
                           platform.endpoints["registry"], "--api-key", platform.api_key],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_audit_of_name_at_alias_audits_the_version_it_names_then(platform, client,
                                                                     regression_files):
    model_path, data_path = regression_files
    first = client.upload_model(model_path, "aliased-regressor")
    dataset = client.upload_dataset(data_path, "aliased-regression")
    client.set_alias("aliased-regressor", "production", first.id)
    config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_MSE)
    config.sampler.draws, config.sampler.burnin, config.sampler.chains = 40, 20, 2
    job = client.start_audit("aliased-regressor@production", dataset.id, config)
    done = client.wait(job.id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
    report = client.get_report(done.output_ids[0])
    assert report.model_version_id == first.id
    latest = client.start_audit(["aliased-regressor/latest"], dataset.id, config)
    assert '"mv-' in latest.spec_json and "latest" not in latest.spec_json  # pinned to the id


def test_cli_alias_tag_models_download_rm_and_gc(platform, client, regression_files, tmp_path):
    model_path, _ = regression_files
    a = client.upload_model(model_path, "cli-model")
    b = client.upload_model(model_path, "cli-model", tags={"stage": "candidate"})
    assert "cli-model@production -> v1" in cli(platform, "alias", "cli-model", "production",
                                                 a.id)
    cli(platform, "alias", "cli-model", "production", "cli-model/latest")
    assert cli(platform, "alias", "cli-model", "production").strip() == b.id
    history = cli(platform, "alias", "cli-model", "production", "--history").splitlines()
    assert [line.split("\t")[-1] for line in history] == [f"- -> {a.id}", f"{a.id} -> {b.id}"]
    assert "best=yes" in cli(platform, "tag", a.id, "--set", "best=yes")
    listed = cli(platform, "models", "cli-model", "--tag", "stage=candidate").splitlines()
    assert len(listed) == 1 and b.id in listed[0] and "@production" in listed[0]
    out = cli(platform, "download", "cli-model@production", str(tmp_path / "prod.pt2"))
    assert "sha256 checked" in out and (tmp_path / "prod.pt2").read_bytes() == \
        model_path.read_bytes()
    assert "shared" in cli(platform, "rm", a.id)  # the same bytes as b: they stay
    assert "would remove" in cli(platform, "gc", "--dry-run")
