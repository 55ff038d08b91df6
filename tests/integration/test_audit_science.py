"""The estimator issue through the service: verdicts, diagnostics, measures, LLC over training,
and bad input that must end in a clear error or a failed verdict, never a silent number."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2, trainer_pb2

MSE = models_pb2.LOSS_KIND_MSE


def config(**sampler) -> audit_pb2.AuditConfig:
    c = audit_pb2.AuditConfig(loss=MSE)
    for key, value in {"chains": 3, "draws": 150, "burnin": 100, "seed": 2, **sampler}.items():
        setattr(c.sampler, key, value)
    return c


def export(model: torch.nn.Module, path, features: int) -> None:
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.zeros(2, features),), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)


@pytest.fixture(scope="module")
def regression(platform, regression_files):
    model_path, data_path = regression_files
    with platform.client() as c:
        return c.upload_model(model_path, "reg-science"), c.upload_dataset(data_path, "reg-sci")


def test_calibrated_audit_reports_diagnostics_and_an_ok_verdict(client, regression):
    version, dataset = regression
    done = client.wait(client.start_audit(version.id, dataset.id, config()).id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
    report = client.get_report(done.output_ids[0])
    assert report.calibration.ran and report.calibration.chosen_step_size > 0
    assert report.config.sampler.step_size == report.calibration.chosen_step_size
    assert len(report.calibration.candidates) >= 2
    d = report.diagnostics
    assert 0.9 < d.rhat < 1.5 and d.ess > 5 and 0.5 <= d.acceptance <= 1
    assert 0 <= d.below_init_fraction < 0.1
    # A trained model at a calibrated step: never failed; a warning must say why.
    assert report.verdict.state in (audit_pb2.VERDICT_STATE_OK, audit_pb2.VERDICT_STATE_WARNING)
    assert (report.verdict.state == audit_pb2.VERDICT_STATE_OK) == (not report.verdict.reasons)
    assert report.wbic == pytest.approx(
        report.num_examples * sum(sum(t.loss[100:]) for t in report.traces) / (3 * 150),
        rel=1e-6)
    # 41 parameters, regular: λ = d/2 = 20.5 is the ceiling; a trained net sits well below.
    assert 0 < report.llc.mean < 41


def test_measures_per_layer_groups_hessian_and_weights(client, regression):
    version, dataset = regression
    c = config(step_size=1e-4, localization=100.0)
    c.measures.per_layer_llc = True
    c.measures.hessian = True
    c.measures.weight_statistics = True
    c.measures.groups.add(name="first", patterns=["0.*"])
    done = client.wait(client.start_audit(version.id, dataset.id, c).id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
    report = client.get_report(done.output_ids[0])
    groups = {g.name: g for g in report.group_llc}
    assert "first" in groups and groups["first"].num_parameters == 3 * 8 + 8
    assert len(groups) >= 3  # two layers + the named group
    assert all(math.isfinite(g.llc.mean) for g in groups.values())
    assert report.hessian.trace > 0 and report.hessian.top_eigenvalue > 0
    assert report.hessian.top_eigenvalue <= report.hessian.trace + 3 * report.hessian.trace_stderr
    assert {w.name for w in report.weight_statistics} >= {"0.weight", "2.weight"}


def test_a_group_that_matches_nothing_fails_clearly(client, regression):
    version, dataset = regression
    c = config(step_size=1e-4)
    c.measures.groups.add(name="ghost", patterns=["decoder.*"])
    done = client.wait(client.start_audit(version.id, dataset.id, c).id)
    assert done.state == jobs_pb2.JOB_STATE_FAILED
    assert "ghost" in done.message and "matches no parameter" in done.message


def test_a_diverging_estimate_ends_with_a_clear_error(client, regression):
    version, dataset = regression
    done = client.wait(client.start_audit(version.id, dataset.id, config(step_size=5.0)).id)
    assert done.state == jobs_pb2.JOB_STATE_FAILED
    assert "step size" in done.message.lower()
    assert not done.output_ids


def test_w_star_that_is_not_a_minimum_gets_a_failed_verdict(client, platform, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(512, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    untrained = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    export(untrained, tmp_path / "untrained.pt2", 3)
    save_file({"x": x, "y": y}, str(tmp_path / "d.safetensors"))
    version = client.upload_model(tmp_path / "untrained.pt2", "untrained")
    dataset = client.upload_dataset(tmp_path / "d.safetensors", "untrained-data")
    done = client.wait(client.start_audit(version.id, dataset.id, config(step_size=1e-3)).id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
    report = client.get_report(done.output_ids[0])
    assert report.verdict.state == audit_pb2.VERDICT_STATE_FAILED
    assert any("not a local minimum" in r for r in report.verdict.reasons), report.verdict.reasons
    assert report.verdict.not_at_minimum


def test_a_dataset_with_nan_is_refused(client, regression, tmp_path):
    version, _ = regression
    x = torch.randn(64, 3)
    x[5, 1] = float("nan")
    save_file({"x": x, "y": torch.randn(64, 1)}, str(tmp_path / "nan.safetensors"))
    dataset = client.upload_dataset(tmp_path / "nan.safetensors", "with-nan")
    done = client.wait(client.start_audit(version.id, dataset.id, config(step_size=1e-4)).id)
    assert done.state == jobs_pb2.JOB_STATE_FAILED
    assert "NaN" in done.message and "row 5" in done.message
    assert done.attempts == 1  # bad input fails the same way every time: never retried


def _trajectory(client, checkpoints: int) -> tuple[list[str], str, int]:
    """(a small MLP's checkpoint versions, their dataset, the training's total steps)."""
    spec = trainer_pb2.TrainSpec(
        model_name="trajectory", loss=models_pb2.LOSS_KIND_CROSS_ENTROPY, epochs=8,
        batch_size=64, seed=3,
        architecture=models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=[64, 24, 10])),
        dataset=trainer_pb2.DatasetSpec(builtin="digits", test_fraction=0.2),
        optimizer=trainer_pb2.OptimizerSpec(kind="adam", learning_rate=3e-3),
        checkpoints=trainer_pb2.CheckpointPolicy(count=checkpoints))
    trained = client.wait(client.start_training(spec).id)
    assert trained.state == jobs_pb2.JOB_STATE_SUCCEEDED, trained.message
    versions = list(trained.output_ids)
    return versions, client.get_model_version(versions[0]).lineage.dataset_version_id, trained.total


def test_llc_over_training(client):
    versions, data, total = _trajectory(client, 3)
    c = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_CROSS_ENTROPY)
    c.sampler.chains, c.sampler.draws, c.sampler.burnin = 2, 100, 100
    c.sampler.step_size, c.sampler.localization = 1e-3, 10.0
    done = client.wait(client.start_audit(versions, data, c).id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
    reports = [client.get_report(r) for r in done.output_ids]
    assert [r.model_version_id for r in reports] == versions
    steps = [r.step for r in reports]
    assert steps == sorted(steps) and steps[-1] == total
    assert all(r.config.sampler.step_size == 1e-3 for r in reports)
    assert all(math.isfinite(r.llc.mean) for r in reports)


def test_checkpoints_audited_together_share_the_first_ones_default_localization(client):
    """γ unset: the first version's curvature sets it (lambdascope.llc.localization), the rest
    hold it, so the trajectory's λ̂ compare at one γ; each report says where its γ came from."""
    versions, data, _ = _trajectory(client, 2)
    c = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_CROSS_ENTROPY)
    c.sampler.chains, c.sampler.draws, c.sampler.burnin, c.sampler.step_size = 2, 60, 60, 1e-3
    done = client.wait(client.start_audit(versions, data, c).id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
    first, second = (client.get_report(r) for r in done.output_ids)
    gamma = first.config.sampler.localization
    assert 3 <= gamma <= 10 and second.config.sampler.localization == gamma
    assert "set from the curvature" in first.calibration.summary and first.calibration.top_eigenvalue > 0
    assert "held from the first version of this audit" in second.calibration.summary
