"""Training through the trainer service: progress events, checkpoints registered with lineage."""
from __future__ import annotations

import pytest

from lambdascope.v1 import jobs_pb2, models_pb2, registry_pb2, trainer_pb2


def digits_spec(name: str, epochs: int = 3, **extra) -> trainer_pb2.TrainSpec:
    return trainer_pb2.TrainSpec(
        model_name=name, loss=models_pb2.LOSS_KIND_CROSS_ENTROPY, epochs=epochs, batch_size=64,
        seed=7, architecture=models_pb2.Architecture(
            mlp=models_pb2.MLPArchitecture(widths=[64, 32, 10])),
        dataset=trainer_pb2.DatasetSpec(builtin="digits", test_fraction=0.2),
        optimizer=trainer_pb2.OptimizerSpec(kind="adam", learning_rate=3e-3),
        checkpoints=trainer_pb2.CheckpointPolicy(count=4), **extra)


def test_training_registers_checkpoints_with_lineage(client):
    job = client.start_training(digits_spec("digits-small"))
    events = []
    done = client.wait(job.id, on_event=events.append)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
    running = [e for e in events if e.state == jobs_pb2.JOB_STATE_RUNNING and e.step > 0]
    assert running and all("loss" in e.metrics for e in running)
    assert done.metrics["test_accuracy"] > 0.85
    assert len(done.output_ids) == 4
    versions = [client.get_model_version(v) for v in done.output_ids]
    steps = [v.lineage.step for v in versions]
    assert steps == sorted(steps) and steps[-1] == done.total
    assert all(v.lineage.job_id == job.id for v in versions)
    # each checkpoint carries its held-out metrics; the last one equals the job's final ones
    assert all({"step", "test_loss", "test_accuracy"} <= set(v.metadata) for v in versions)
    assert float(versions[-1].metadata["test_accuracy"]) == pytest.approx(
        done.metrics["test_accuracy"], abs=1e-5)
    assert float(versions[0].metadata["test_accuracy"]) < done.metrics["test_accuracy"]
    assert versions[0].lineage.parent_version_id == ""
    assert [v.lineage.parent_version_id for v in versions[1:]] == [v.id for v in versions[:-1]]
    train_data = client.get_dataset(versions[-1].lineage.dataset_version_id)
    assert train_data.num_examples == round(1797 * 0.8)
    listed = client.registry.ListModelVersions(
        registry_pb2.ListModelVersionsRequest(model_name="digits-small", job_id=job.id))
    assert [v.id for v in listed.versions] == list(done.output_ids)


def test_self_modeling_checkpoints_mark_task_outputs_and_audit(client):
    # Trained to near a minimum: at an early checkpoint the sampler finds lower loss and λ̂ < 0.
    from lambdascope.v1 import audit_pb2

    job = client.start_training(digits_spec(
        "digits-sm", epochs=40, self_modeling=trainer_pb2.SelfModelingSpec(layer=1, weight=5.0)))
    done = client.wait(job.id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
    final = client.get_model_version(done.output_ids[-1])
    assert final.task_outputs == 10
    assert list(final.architecture.mlp.widths) == [64, 32, 10 + 32]
    config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_CROSS_ENTROPY)
    config.sampler.draws, config.sampler.burnin, config.sampler.chains = 60, 30, 2
    audit = client.wait(client.start_audit(final.id, final.lineage.dataset_version_id, config).id)
    assert audit.state == jobs_pb2.JOB_STATE_SUCCEEDED, audit.message
    report = client.get_report(audit.output_ids[0])
    assert report.llc.mean > 0
    # the audit samples the task network only: the self-model head's rows are cut off
    assert report.num_parameters == (64 * 32 + 32) + (32 * 10 + 10)


def test_training_on_a_registry_dataset_from_the_cli(platform, client, tmp_path):
    import os
    import subprocess
    import sys

    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    x = torch.randn(400, 6)
    y = (x[:, :3].sum(dim=1) > 0).long() + 2 * (x[:, 3] > 0).long()
    path = tmp_path / "quad.safetensors"
    save_file({"x": x, "y": y}, str(path))
    dataset = client.upload_dataset(path, "quadrants")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
model_name: quadrant-mlp
architecture: {{mlp: {{widths: [6, 16, 4], activation: ACTIVATION_TANH}}}}
loss: LOSS_KIND_CROSS_ENTROPY
dataset: {{dataset_id: {dataset.id}}}
optimizer: {{kind: adam, learning_rate: 0.01}}
epochs: 30
batch_size: 50
checkpoints: {{count: 2}}
""")
    result = subprocess.run(
        [sys.executable, "-m", "lambdascope.cli", "train", str(spec), "--server",
         platform.endpoints["trainer"]], capture_output=True, text=True, timeout=180,
        env={**os.environ, "LAMBDASCOPE_HOME": str(tmp_path), "LAMBDASCOPE_API_KEY": platform.api_key})
    assert result.returncode == 0, result.stderr
    assert "train_accuracy" in result.stdout
    job_id = result.stdout.splitlines()[0].removeprefix("job ")
    ids = result.stdout.split("checkpoints:")[1].split()
    assert list(client.get_job(job_id).output_ids) == ids  # the job stdout names made them
    final = client.get_model_version(ids[-1])
    assert final.model_name == "quadrant-mlp" and final.lineage.dataset_version_id == dataset.id
    accuracy = float(next(line.split()[1] for line in result.stdout.splitlines()
                          if line.startswith("train_accuracy")))
    assert accuracy > 0.9


def test_cli_rejects_unknown_spec_fields(tmp_path):
    import subprocess
    import sys

    spec = tmp_path / "spec.json"
    spec.write_text('{"model_name": "m", "epochz": 3}')
    result = subprocess.run([sys.executable, "-m", "lambdascope.cli", "train", str(spec),
                             "--server", "127.0.0.1:1"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "epochz" in result.stderr


def test_a_restarted_trainer_resumes_the_job_from_its_last_checkpoint(tmp_path):
    """SIGTERM the trainer mid-run, start it again: the job continues from its last checkpoint,
    registers each checkpoint once, and ends with exactly the weights of an uninterrupted run."""
    from lambdascope.local import LocalPlatform

    def spec(name: str) -> trainer_pb2.TrainSpec:
        s = digits_spec(name, epochs=0, steps=6000)
        s.checkpoints.count = 0
        s.checkpoints.steps[:] = [300, 1500]
        s.optimizer.noise.kind = trainer_pb2.NOISE_KIND_ANTI_PGD
        s.optimizer.noise.sigma = 1e-3
        return s

    with LocalPlatform(tmp_path / "data") as platform, platform.client() as client:
        job = client.start_training(spec("resumed"), request_id="resume-me")
        for event in client.watch(job.id):
            assert event.state in (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING), event
            if event.step > 1600:
                break
        assert platform.restart("trainer") == 0
        events = []
        done = client.wait(job.id, on_event=events.append)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
        assert any(e.message == "resumed from the checkpoint at step 1500" for e in events)
        versions = [client.get_model_version(v) for v in done.output_ids]
        assert [v.lineage.step for v in versions] == [300, 1500, 6000]
        assert [v.lineage.parent_version_id for v in versions[1:]] == [v.id for v in versions[:-1]]
        assert len(list(client.list_model_versions("resumed", job_id=job.id))) == 3
        assert client.start_training(spec("resumed"), request_id="resume-me").id == job.id

        straight = client.wait(client.start_training(spec("straight")).id)
        assert straight.state == jobs_pb2.JOB_STATE_SUCCEEDED, straight.message
        final = client.get_model_version(straight.output_ids[-1])
        assert final.sha256 == versions[-1].sha256  # bit-identical weights
        assert straight.metrics["test_accuracy"] == done.metrics["test_accuracy"]


def test_routed_autoencoder_trains_from_yaml_and_its_checkpoints_audit_with_mae(client, tmp_path):
    """A YAML spec with the techniques on (routing, penalties, a schedule), the trainer's
    reconstruction dataset registered for lineage (y = x), and LLC over training with MAE."""
    import yaml
    from google.protobuf import json_format

    from lambdascope import specs
    from lambdascope.v1 import audit_pb2

    doc = {
        "model_name": "routed-ae",
        "architecture": {"autoencoder": {"encoder_widths": [64, 32, 8]}},
        "loss": "LOSS_KIND_MAE",
        "dataset": {"builtin": "digits", "test_fraction": 0.2},
        "optimizer": {"kind": "adam", "learning_rate": 0.003,
                      "schedule": {"kind": "SCHEDULE_KIND_COSINE", "warmup_steps": 10}},
        "epochs": 4, "seed": 2,
        "penalties": [{"site": "latent", "kind": "PENALTY_KIND_L1", "weight": 0.003},
                      {"site": "latent", "kind": "PENALTY_KIND_HALF_DECORRELATION",
                       "weight": 0.1}],
        "routing": {"rules": [{"site": "latent", "groups": [
            {"labels": {"labels": [0, 1, 2, 3, 4]}, "units": {"start": 0, "stop": 4}},
            {"labels": {"labels": [5, 6, 7, 8, 9]}, "units": {"start": 4, "stop": 8}}]}]},
        "checkpoints": {"count": 2},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec = specs.load(str(path), trainer_pb2.TrainSpec())
    assert json_format.MessageToDict(spec)["routing"]["rules"][0]["site"] == "latent"
    events = []
    done = client.wait(client.start_training(spec).id, on_event=events.append)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
    progress = [e.metrics for e in events if e.state == jobs_pb2.JOB_STATE_RUNNING and e.metrics]
    assert progress and {"loss", "task_loss", "penalty", "lr", "steps_per_second"} <= set(progress[-1])
    assert "test_loss" in done.metrics and "test_accuracy" not in done.metrics
    versions = [client.get_model_version(v) for v in done.output_ids]
    assert len(versions) == 2 and versions[0].architecture.HasField("autoencoder")
    data = client.get_dataset(versions[-1].lineage.dataset_version_id)
    assert list(data.x_shape) == list(data.y_shape) == [round(1797 * 0.8), 64]
    config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_MAE)
    config.sampler.draws, config.sampler.burnin, config.sampler.chains = 60, 60, 2
    audit = client.wait(client.start_audit([v.id for v in versions], data.id, config).id)
    assert audit.state == jobs_pb2.JOB_STATE_SUCCEEDED, audit.message
    reports = [client.get_report(r) for r in audit.output_ids]
    assert len(reports) == 2 and all(r.llc.per_chain for r in reports)
