"""`lambdascope audit` checks what it can before it uploads: a careless input leaves the
registry as it was, and a file that is already registered is reused, not uploaded again."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from lambdascope.v1 import registry_pb2


def _counts(client) -> tuple[int, int]:
    """(model versions, datasets) in the registry."""
    models = client.registry.ListModels(registry_pb2.ListModelsRequest(page_size=1000)).models
    versions = sum(len(list(client.list_model_versions(m.name))) for m in models)
    datasets = client.registry.ListDatasets(registry_pb2.ListDatasetsRequest(page_size=1000)).datasets
    return versions, len(datasets)


def _cli(platform, tmp_path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lambdascope.cli", *argv, "--server",
                           platform.endpoints["estimator"]], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LAMBDASCOPE_HOME": str(tmp_path), "LAMBDASCOPE_API_KEY": platform.api_key})


def _audit(platform, tmp_path, *argv: str) -> subprocess.CompletedProcess:
    return _cli(platform, tmp_path, "audit", *argv)


@pytest.fixture
def careless_files(tmp_path, regression_files):
    model_path, _ = regression_files
    torch.manual_seed(1)
    wide = tmp_path / "wide.safetensors"  # x has 5 columns; the model takes 3
    save_file({"x": torch.randn(64, 5), "y": torch.randn(64, 1)}, str(wide))
    no_y = tmp_path / "no-y.safetensors"
    save_file({"x": torch.randn(64, 3)}, str(no_y))
    labels = tmp_path / "labels.safetensors"  # integer y for a regression output with mse
    save_file({"x": torch.randn(64, 3), "y": torch.randint(0, 2, (64, 1))}, str(labels))
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(b"PK\x03\x04 not really a zip archive")
    weights = tmp_path / "weights.safetensors"
    save_file({"layers.0.weight": torch.randn(4, 3)}, str(weights))
    return {"model": model_path, "wide": wide, "no_y": no_y, "labels": labels, "broken": broken,
            "weights": weights}


CASES = [  # (argv with placeholders, what the message must say)
    (["--model", "{model}", "--data", "{labels}", "--loss", "mse", "--chains", "-2"], "chains must be >= 1"),
    (["--model", "{model}", "--data", "{tmp}/missing.safetensors", "--loss", "mse"], "no such file"),
    (["--model", "{tmp}/missing.pt2", "--data", "{labels}", "--loss", "mse"], "no such file"),
    (["--model", "{model}", "--data", "{wide}", "--loss", "mse"], "dataset x has shape [64, 5]"),
    (["--model", "{model}", "--data", "{no_y}", "--loss", "mse"], "--data"),
    (["--model", "{model}", "--data", "{labels}", "--loss", "mse"], "floating-point targets"),
    (["--model", "{broken}", "--data", "{labels}", "--loss", "mse"], "not a valid artifact"),
    (["--model", "{weights}", "--data", "{labels}", "--loss", "mse"], "need --architecture"),
    (["--model", "{weights}", "--architecture", '{{"mlp": {{"widths": [3, 4, 1]}}}}', "--data", "{labels}",
      "--loss", "mse"], "do not fit the architecture"),
    (["--model", "{model}", "--data", "{labels}", "--loss", "mse", "--max-rhat", "0.5"], "max_rhat must be > 1"),
]


@pytest.mark.parametrize(("argv", "says"), CASES, ids=[c[1] for c in CASES])
def test_a_careless_input_is_refused_before_any_upload(platform, client, careless_files, tmp_path, argv, says):
    before = _counts(client)
    filled = [a.format(tmp=tmp_path, **careless_files) for a in argv]
    result = _audit(platform, tmp_path, *filled)
    assert result.returncode == 1, result.stdout + result.stderr
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert _counts(client) == before  # nothing was registered


def test_identical_files_audited_twice_reuse_one_version_and_dataset(platform, client, tmp_path):
    torch.manual_seed(2)
    x = torch.randn(128, 2)
    y = x @ torch.tensor([[1.0], [-1.0]])
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))
        model.bias.zero_()
    program = torch.export.export(model, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    model_path, data_path = tmp_path / "twice.pt2", tmp_path / "twice.safetensors"
    torch.export.save(program, model_path)
    save_file({"x": x, "y": y}, str(data_path))
    argv = ["--model", str(model_path), "--data", str(data_path), "--loss", "mse", "--draws", "30", "--burnin",
            "10", "--step-size", "1e-5", "--chains", "2"]
    logs = {name: platform.data_dir / "logs" / f"{name}.log" for name in ("registry", "estimator")}
    sizes = {name: path.stat().st_size for name, path in logs.items()}
    first = _audit(platform, tmp_path, *argv)
    assert first.returncode in (0, 3), first.stderr
    after_first = _counts(client)
    second = _audit(platform, tmp_path, *argv)
    assert second.returncode in (0, 3), second.stderr
    assert "already registered" in second.stderr
    for name, path in logs.items():  # two audits, uploads and downloads: no ERROR line, no traceback
        written = path.read_bytes()[sizes[name]:].decode()
        assert '"level": "error"' not in written.lower() and "Traceback" not in written, written
    assert _counts(client) == after_first
    versions = list(client.list_model_versions("twice"))
    assert len(versions) == 1

    # ... and the listings lead from the version to its reports, and show what each job did.
    reports = [r for r in client.list_reports(versions[0].id)]
    assert len(reports) == 2
    listed = _cli(platform, tmp_path, "reports", "twice/latest").stdout
    assert all(r.id in listed and f"{r.llc.mean:.3f}" in listed for r in reports), listed
    jobs = _cli(platform, tmp_path, "jobs", "--kind", "audit").stdout
    line = next(line for line in jobs.splitlines() if reports[0].job_id in line)
    assert versions[0].id in line and f"LLC {reports[0].llc.mean:.3f}" in line, line
    compared = _cli(platform, tmp_path, "compare", reports[0].id, reports[1].id)
    assert compared.returncode == 0, compared.stderr
    assert "within the estimator's noise" in compared.stdout and "warning" not in compared.stdout, compared.stdout
    datasets = _cli(platform, tmp_path, "datasets", "twice").stdout
    assert "twice v1" in datasets and "float32[128, 2]" in datasets, datasets


def test_a_trajectory_reports_points_before_a_minimum_without_failing(platform, client, tmp_path):
    """LLC over training: a checkpoint taken before the model reached a minimum is reported as
    such (its λ̂ left out), and the command's exit code follows the points at a minimum."""
    import json

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1000, 4, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.5 * torch.randn(1000, 1, generator=gen)
    early, converged = torch.nn.Linear(4, 1).eval(), torch.nn.Linear(4, 1).eval()
    solution = torch.linalg.lstsq(torch.cat([x, torch.ones(1000, 1)], dim=1), y).solution
    with torch.no_grad():
        early.weight.zero_()  # far from the least-squares minimum
        converged.weight.copy_(solution[:4].T)
        converged.bias.copy_(solution[4])
    for module, name in ((early, "early"), (converged, "converged")):
        program = torch.export.export(module, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, tmp_path / f"{name}.pt2")
        client.upload_model(tmp_path / f"{name}.pt2", "trajectory-cli")
    save_file({"x": x, "y": y}, str(tmp_path / "ls.safetensors"))
    out = tmp_path / "trajectory.json"
    result = _audit(platform, tmp_path, "--model-version", "trajectory-cli/1", "trajectory-cli/2", "--data",
                    str(tmp_path / "ls.safetensors"), "--loss", "mse", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not at a minimum" in result.stdout and "1 of 2 checkpoints" in result.stdout, result.stdout
    points = json.loads(out.read_text())["trajectory"]
    assert [p["at_minimum"] for p in points] == [False, True]
    assert abs(points[1]["llc_mean"] - 2.5) < 0.25 and points[1]["verdict"] == "ok"
