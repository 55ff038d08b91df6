"""Bad input answers with the right status and a message a person can act on; nothing is kept."""
from __future__ import annotations

import hashlib
import io

import grpc
import pytest
import torch
from safetensors.torch import save, save_file

from lambdascope.v1 import (audit_pb2, jobs_pb2, models_pb2, registry_pb2, trainer_pb2)

MSE = models_pb2.LOSS_KIND_MSE


def code_of(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value.code(), err.value.details()


def raw_upload(client, data: bytes, *, sha256: str | None = None, name: str = "raw",
               fmt=models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT, architecture=None, request_id: str = ""):
    header = registry_pb2.ModelUploadHeader(
        model_name=name, format=fmt, architecture=architecture,
        sha256=sha256 or hashlib.sha256(data).hexdigest(), size_bytes=len(data), request_id=request_id)
    messages = [registry_pb2.UploadModelVersionRequest(header=header)]
    messages += [registry_pb2.UploadModelVersionRequest(chunk=data[i:i + 1000])
                 for i in range(0, len(data), 1000)]
    return client.registry.UploadModelVersion(iter(messages))


def versions_of(client, name: str) -> list:
    try:
        return list(client.registry.ListModelVersions(
            registry_pb2.ListModelVersionsRequest(model_name=name)).versions)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        return []


@pytest.fixture(scope="module")
def uploaded(platform, regression_files):
    model_path, data_path = regression_files
    with platform.client() as c:
        return c.upload_model(model_path, "regressor-bad"), c.upload_dataset(data_path, "reg")


def test_unknown_ids_are_not_found(client, uploaded):
    version, dataset = uploaded
    config = audit_pb2.AuditConfig(loss=MSE)
    code, message = code_of(client.start_audit, "mv-nope", dataset.id, config)
    assert code == grpc.StatusCode.NOT_FOUND and "mv-nope" in message
    code, message = code_of(client.start_audit, version.id, "ds-nope", config)
    assert code == grpc.StatusCode.NOT_FOUND and "ds-nope" in message
    for job_id in ("audit-0000", "train-0000"):
        code, message = code_of(client.get_job, job_id)
        assert code == grpc.StatusCode.NOT_FOUND and job_id in message
        code, _ = code_of(client.cancel_job, job_id)
        assert code == grpc.StatusCode.NOT_FOUND
        code, _ = code_of(lambda: list(client.watch(job_id)))
        assert code == grpc.StatusCode.NOT_FOUND
    code, _ = code_of(client.get_model_version, "mv-nope")
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = code_of(client.get_report, "rep-nope")
    assert code == grpc.StatusCode.NOT_FOUND


def test_dataset_that_does_not_fit_the_model(client, uploaded, tmp_path):
    version, _ = uploaded
    wrong_x = tmp_path / "wrong_x.safetensors"
    save_file({"x": torch.randn(64, 5), "y": torch.randn(64, 1)}, str(wrong_x))
    wrong_y = tmp_path / "wrong_y.safetensors"
    save_file({"x": torch.randn(64, 3), "y": torch.randn(64, 4)}, str(wrong_y))
    for path, hint in ((wrong_x, "[64, 5]"), (wrong_y, "[64, 4]")):
        dataset = client.upload_dataset(path, path.stem)
        code, message = code_of(client.start_audit, version.id, dataset.id,
                                audit_pb2.AuditConfig(loss=MSE))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert hint in message, message
    # cross_entropy on float targets does not fit either
    dataset = client.upload_dataset(wrong_y, "float-targets")
    code, message = code_of(client.start_audit, version.id, dataset.id,
                            audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_CROSS_ENTROPY))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cross_entropy" in message


def test_a_bad_upload_request_id_is_invalid_and_registers_nothing(client, regression_files):
    data = regression_files[0].read_bytes()
    for request_id, hint in (("r" * 129, "at most 128"), ("line\nbreak", "printable")):
        code, message = code_of(raw_upload, client, data, name="bad-request-id", request_id=request_id)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in message and hint in message, message
    assert versions_of(client, "bad-request-id") == []


def test_sha256_mismatch_is_data_loss_and_registers_nothing(client, regression_files):
    data = regression_files[0].read_bytes()
    code, message = code_of(raw_upload, client, data, sha256="0" * 64, name="corrupt")
    assert code == grpc.StatusCode.DATA_LOSS
    assert "nothing was registered" in message
    assert versions_of(client, "corrupt") == []
    # a body cut short of its declared size is data loss as well
    header = registry_pb2.ModelUploadHeader(
        model_name="corrupt", format=models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT,
        sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    cut = [registry_pb2.UploadModelVersionRequest(header=header),
           registry_pb2.UploadModelVersionRequest(chunk=data[: len(data) // 2])]
    code, _ = code_of(client.registry.UploadModelVersion, iter(cut))
    assert code == grpc.StatusCode.DATA_LOSS
    assert versions_of(client, "corrupt") == []


def test_files_that_are_not_artifacts_are_invalid(client):
    mlp = models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=[3, 4, 1]))
    pickled = io.BytesIO()
    torch.save({"layers.0.weight": torch.zeros(4, 3)}, pickled)
    cases = [
        (b"definitely not a zip", models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT, None),
        (pickled.getvalue(), models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT, None),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", models_pb2.ARTIFACT_FORMAT_SAFETENSORS, mlp),
        (pickled.getvalue(), models_pb2.ARTIFACT_FORMAT_SAFETENSORS, mlp),
        # valid safetensors whose tensors do not fit the architecture
        (save({"layers.0.weight": torch.zeros(4, 3)}), models_pb2.ARTIFACT_FORMAT_SAFETENSORS, mlp),
        (save({"x": torch.zeros(2)}), models_pb2.ARTIFACT_FORMAT_UNSPECIFIED, None),
    ]
    for data, fmt, arch in cases:
        code, message = code_of(raw_upload, client, data, name="junk", fmt=fmt, architecture=arch)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message
    assert versions_of(client, "junk") == []


def test_a_dataset_that_is_not_safetensors_is_invalid(client, tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 100)
    code, message = code_of(client.upload_dataset, path, "junk")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    no_y = tmp_path / "no_y.safetensors"
    save_file({"x": torch.randn(4, 3)}, str(no_y))
    code, message = code_of(client.upload_dataset, no_y, "no-y")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "y" in message


@pytest.mark.parametrize("field,value,named", [
    ("step_size", -1e-3, "step_size"),
    ("step_size", 0.0, "step_size"),
    ("chains", 0, "chains"),
    ("draws", 0, "draws"),
    ("batch_size", -5, "batch_size"),
    ("localization", -1.0, "localization"),
])
def test_absurd_sampler_settings_are_invalid(client, uploaded, field, value, named):
    version, dataset = uploaded
    config = audit_pb2.AuditConfig(loss=MSE)
    setattr(config.sampler, field, value)
    code, message = code_of(client.start_audit, version.id, dataset.id, config)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert named in message


def test_too_many_chain_steps_and_missing_loss_are_invalid(client, uploaded):
    version, dataset = uploaded
    config = audit_pb2.AuditConfig(loss=MSE)
    config.sampler.chains, config.sampler.draws = 1000, 1_000_000
    code, message = code_of(client.start_audit, version.id, dataset.id, config)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit" in message
    code, message = code_of(client.start_audit, version.id, dataset.id, audit_pb2.AuditConfig())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "loss" in message


def test_bad_training_specs_name_the_field(client):
    arch = models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=[64, 16, 10]))
    base = dict(model_name="m", architecture=arch, loss=models_pb2.LOSS_KIND_CROSS_ENTROPY,
                dataset=trainer_pb2.DatasetSpec(builtin="digits"))
    cases = [
        (dict(base, architecture=models_pb2.Architecture()), "architecture"),
        (dict(base, dataset=trainer_pb2.DatasetSpec(builtin="imagenet")), "dataset.builtin"),
        (dict(base, self_modeling=trainer_pb2.SelfModelingSpec(layer=5, weight=1)),
         "self_modeling.layer"),
        (dict(base, model_name="no spaces please"), "model_name"),
        (dict(base, optimizer=trainer_pb2.OptimizerSpec(kind="lbfgs")), "optimizer.kind"),
        (dict(base, dataset=trainer_pb2.DatasetSpec(dataset_id="ds-nope")), None),
        (dict(base, routing=trainer_pb2.GradientRoutingSpec(rules=[trainer_pb2.RoutingRule(
            site="hidden.9", groups=[trainer_pb2.RouteGroup(
                labels=trainer_pb2.LabelSet(labels=[1]),
                units=trainer_pb2.UnitRange(start=0, stop=4))])])),
         "spec.routing.rules[0].site"),
        (dict(base, optimizer=trainer_pb2.OptimizerSpec(kind="sgd", noise=trainer_pb2.NoiseInjection(
            kind=trainer_pb2.NOISE_KIND_ANTI_PGD, sigma=-0.5))), "spec.optimizer.noise.sigma"),
        (dict(base, architecture=models_pb2.Architecture(
            mlp=models_pb2.MLPArchitecture(widths=[100, 16, 10]))), "spec.dataset"),
        (dict(base, loss=models_pb2.LOSS_KIND_MSE, architecture=models_pb2.Architecture(
            quadratic=models_pb2.QuadraticArchitecture(dim=50)),
            dataset=trainer_pb2.DatasetSpec(quadratic_regression=trainer_pb2.QuadraticRegressionData(
                dim=100))), "spec.dataset.quadratic_regression"),
        (dict(base, penalties=[trainer_pb2.ActivationPenalty(
            site="latent", kind=trainer_pb2.PENALTY_KIND_L1, weight=1.0)]), "spec.penalties[0].site"),
        (dict(base, epochs=3, steps=100), "spec.epochs and spec.steps"),
    ]
    for fields, named in cases:
        code, message = code_of(client.start_training, trainer_pb2.TrainSpec(**fields))
        if named is None:
            assert code == grpc.StatusCode.NOT_FOUND
        else:
            assert code == grpc.StatusCode.INVALID_ARGUMENT, message
            assert named in message, message


def test_page_tokens_are_checked(client):
    code, message = code_of(client.jobs_stub("train").ListJobs, jobs_pb2.ListJobsRequest(page_token="zzz"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in message


def test_a_refused_call_logs_one_clean_line(client, platform):
    """A refused RPC (unary or streaming) leaves one 'rpc refused' line in the service's log and
    no traceback: the refusal is answered, not re-serialized as a None response."""
    import time

    log = platform.data_dir / "logs" / "registry.log"
    before = log.stat().st_size
    missing = registry_pb2.GetModelVersionRequest(version_id="mv-does-not-exist")
    assert code_of(client.registry.GetModelVersion, missing)[0] == grpc.StatusCode.NOT_FOUND
    stream = registry_pb2.DownloadModelVersionRequest(version_id="mv-does-not-exist")
    assert code_of(lambda r: list(client.registry.DownloadModelVersion(r)), stream)[0] == grpc.StatusCode.NOT_FOUND
    time.sleep(0.5)  # the service writes its log line after answering
    written = log.read_bytes()[before:].decode()
    assert "Traceback" not in written and "Exception serializing" not in written, written
    assert '"level": "error"' not in written.lower(), written
    refused = [line for line in written.splitlines() if '"rpc refused"' in line]
    assert len(refused) == 2, written
