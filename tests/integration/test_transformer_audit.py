"""A transformer (embeddings over integer token ids, LayerNorm, causal attention through
scaled_dot_product_attention, GELU, dropout in eval mode, a fixed buffer) exported by the test,
uploaded and audited through the CLI with token-level cross-entropy."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import torch
from safetensors.torch import save_file

from tiny_transformer import SEQ, train_tiny_transformer


def test_cli_audits_an_exported_transformer(platform, tmp_path):
    model, x, y = train_tiny_transformer()
    program = torch.export.export(model, (x[:2].clone(),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    model_path, data_path, out = tmp_path / "tiny.pt2", tmp_path / "tokens.safetensors", tmp_path / "r.json"
    torch.export.save(program, model_path)
    save_file({"x": x, "y": y}, str(data_path))
    result = subprocess.run(
        [sys.executable, "-m", "lambdascope.cli", "audit", "--model", str(model_path), "--data",
         str(data_path), "--loss", "cross_entropy", "--max-steps", "1500", "--json", str(out),
         "--server", platform.endpoints["estimator"]],
        capture_output=True, text=True, timeout=600, env={**os.environ, "LAMBDASCOPE_HOME": str(tmp_path), "LAMBDASCOPE_API_KEY": platform.api_key})
    assert result.returncode in (0, 3), result.stderr
    report = json.loads(out.read_text())
    llc = report["llc"]["mean"]
    d = sum(p.numel() for p in model.parameters())
    assert math.isfinite(llc) and 0 < llc < d / 2, llc
    assert report["loss_description"].startswith("token-level cross-entropy")
    assert f"all {SEQ} positions" in report["loss_description"]
    assert int(report["num_parameters"]) == d
    resources = report["resources"]  # how the chains were grouped, and the memory it took
    assert 1 <= resources["chains_per_pass"] <= 4 and resources["chains_summary"]
    assert int(resources["peak_memory_bytes"]) > 0 and resources["peak_memory_kind"]
    assert "peak memory" in result.stdout
    verdict = report["verdict"]
    state = verdict["state"].removeprefix("VERDICT_STATE_")
    if state != "OK":  # an honest verdict says why: here, at most a run cut short by its cap
        assert verdict["reasons"], verdict
    if report["stopping"]["reason"] == "STOP_REASON_STEP_CAP":
        assert state != "OK" and any("--max-steps" in r for r in verdict["reasons"])


def test_a_transformer_exported_in_training_mode_is_refused(platform, client, tmp_path):
    from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2

    model, x, y = train_tiny_transformer(n=64)
    model.train()  # dropout on: the loss would be random from step to step
    program = torch.export.export(model, (x[:2].clone(),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    model_path, data_path = tmp_path / "train-mode.pt2", tmp_path / "tokens.safetensors"
    torch.export.save(program, model_path)
    save_file({"x": x, "y": y}, str(data_path))
    version = client.upload_model(str(model_path), "train-mode")
    dataset = client.upload_dataset(str(data_path), "tokens")
    config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_CROSS_ENTROPY)
    config.sampler.max_steps = 400
    job = client.wait(client.start_audit(version.id, dataset.id, config).id)
    assert job.state == jobs_pb2.JOB_STATE_FAILED
    assert "dropout" in job.message and "model.eval()" in job.message, job.message
