"""One training run, in its own process: data, model, training loop, checkpoints as versions.

Started by the trainer's job manager as `python -m services.trainer.worker` (protocol in
lambdascope.worker). Each checkpoint is uploaded to the registry as a version of
spec.model_name with lineage: this job, the step, the previous checkpoint, the dataset.

Restarts: after each checkpoint the full training state is saved (services.trainer.resume). A
job that the restarted trainer runs again continues from there, and a checkpoint that was
uploaded just before a crash is found in the registry (by job and step) instead of being
uploaded twice.
"""
from __future__ import annotations

import pathlib
import tempfile

import grpc
import torch
from google.protobuf import json_format
from safetensors.torch import save_file

from lambdascope import architectures, artifacts, modules, tls, worker
from lambdascope.client import Client
from lambdascope.training import datasets
from lambdascope.training.datasets import TrainingData
from lambdascope.training.loop import TrainConfig, TrainState, evaluate, train
from lambdascope.v1 import registry_pb2, trainer_pb2
from services.trainer import resume, train_spec, translate


def load_data(spec: trainer_pb2.TrainSpec, client: Client, scratch: pathlib.Path) -> TrainingData:
    """The spec's data, split into train and test; BadInput when it cannot be used."""
    source = spec.dataset.WhichOneof("source")
    try:
        if source == "dln_teacher":
            return translate.dln_teacher(spec.dataset.dln_teacher)
        if source == "quadratic_regression":
            return translate.quadratic_regression(spec.dataset.quadratic_regression)
        if source == "modular_addition":
            x, y = translate.modular_addition(spec.dataset.modular_addition,
                                              tokens=train_spec.takes_token_ids(spec.architecture))
        elif source == "builtin":
            x, y = datasets.BUILTIN_DATASETS[spec.dataset.builtin]()
        else:
            dataset = client.get_dataset(spec.dataset.dataset_id)
            train_spec.check_dataset(spec, dataset)
            x, y = artifacts.load_dataset(client.download_dataset(dataset.id, scratch / "data"))
            if not x.is_floating_point():
                x = x.long()  # token ids, as an embedding takes them
        return datasets.split(x, y, spec.dataset.test_fraction, spec.seed)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise worker.BadInput(exc.details()) from None
        raise
    except (ValueError, artifacts.ArtifactError) as exc:
        raise worker.BadInput(f"spec.dataset: {exc}") from None


def token_ids(data: TrainingData) -> int | None:
    """How many token ids integer inputs need (largest id + 1); None for float inputs."""
    if data.x_train.is_floating_point():
        return None
    return max(int(x.max()) for x in (data.x_train, data.x_test) if len(x)) + 1


def register_training_data(spec: trainer_pb2.TrainSpec, job_id: str, client: Client,
                           scratch: pathlib.Path, data: TrainingData) -> str:
    """The registry id of exactly the rows trained on, shaped as an audit needs them (an
    autoencoder's target is its input), so lineage and audits can use them."""
    reconstruct = architectures.reconstructs_input(spec.architecture)
    if spec.dataset.HasField("dataset_id") and not spec.dataset.test_fraction and not reconstruct:
        return spec.dataset.dataset_id
    path = scratch / "train.safetensors"
    target = data.x_train.clone() if reconstruct else data.y_train  # safetensors: no shared storage
    save_file({"x": data.x_train.contiguous(), "y": target.contiguous()}, str(path))
    source = spec.dataset.WhichOneof("source")
    dataset = client.upload_dataset(path, f"{spec.model_name}-train", metadata={
        "source": spec.dataset.builtin or spec.dataset.dataset_id or source, "split": "train",
        "test_fraction": str(spec.dataset.test_fraction), "seed": str(spec.seed),
        "job_id": job_id, **{k: str(v) for k, v in data.info.items()}})
    path.unlink()
    return dataset.id


def existing_checkpoint(client: Client, model_name: str, job_id: str,
                        step: int) -> registry_pb2.ModelVersion | None:
    """The version this job registered for `step` before a restart, if any."""
    try:
        for version in client.list_model_versions(model_name, job_id=job_id):
            if version.lineage.step == step:
                return version
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
    return None


def checkpoint_metrics(module: torch.nn.Module, data: TrainingData, config: TrainConfig
                       ) -> dict[str, str]:
    """The held-out metrics of the weights being checkpointed (loss, accuracy when it is a
    classification), stored with the version so a trajectory can be plotted without
    downloading every checkpoint."""
    if not len(data.x_test):
        return {}
    return {f"test_{k}": f"{v:.6g}" for k, v in evaluate(module, data.x_test, data.y_test,
                                                         config).items()}


def run(ctx: worker.JobContext) -> worker.Result:
    with Client(registry=ctx.settings.registry_address, api_key=ctx.api_key,
                tls=tls.of_service(ctx.settings)) as client:
        saved = resume.ResumeStore(client)
        try:
            return _run(ctx, client, saved)
        except worker.BadInput:
            saved.discard()  # the job fails for good: nothing to resume
            raise


def _run(ctx: worker.JobContext, client: Client, saved: resume.ResumeStore) -> worker.Result:
    spec = json_format.Parse(ctx.spec_json, trainer_pb2.TrainSpec())
    try:
        train_spec.train_config(spec)
    except train_spec.SpecError as exc:
        raise worker.BadInput(str(exc)) from None
    arch = train_spec.model_architecture(spec)
    with tempfile.TemporaryDirectory(prefix="train-") as tmp:
        scratch = pathlib.Path(tmp)
        data = load_data(spec, client, scratch)
        own_test = spec.dataset.WhichOneof("source") in train_spec.OWN_TEST_SET
        rows = len(data.x_train) + (0 if own_test else len(data.x_test))
        classes = None if data.y_train.is_floating_point() else int(data.y_train.max()) + 1
        try:
            config = train_spec.train_config(
                spec, train_spec.DataFacts(rows, classes, token_ids(data)))
        except train_spec.SpecError as exc:
            raise worker.BadInput(str(exc)) from None
        job = saved.load_job()
        if "train_data_id" not in job:
            job["train_data_id"] = register_training_data(spec, ctx.job_id, client, scratch, data)
            saved.save_job(job)
        previous = saved.load_state()
        start, versions = previous if previous is not None else (None, [])
        if start is not None:
            ctx.progress(start.step, 0, message=f"resumed from the checkpoint at step "
                         f"{start.step}", force=True)
        module = modules.build_module(arch, seed=spec.seed)
        if config.self_modeling:
            translate.paired_init(module, arch, config.task_outputs, spec.seed)
        if torch.cuda.is_available():  # a GPU node: train there (checkpoints are saved on CPU)
            module.to("cuda")

        def on_checkpoint(step: int, weights: dict[str, torch.Tensor], state: TrainState) -> None:
            version = existing_checkpoint(client, spec.model_name, ctx.job_id, step)
            if version is None:
                path = scratch / f"step-{step}.safetensors"
                save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
                version = client.upload_model(
                    path, spec.model_name, architecture=arch,
                    task_outputs=config.task_outputs if config.self_modeling else 0,
                    lineage=registry_pb2.Lineage(
                        job_id=ctx.job_id, step=step,
                        parent_version_id=versions[-1] if versions else "",
                        dataset_version_id=job["train_data_id"]),
                    metadata={"step": str(step), **checkpoint_metrics(module, data, config)})
                path.unlink()
            versions.append(version.id)
            saved.save_state(state, versions)

        try:
            result = train(module, data.x_train, data.y_train, data.x_test, data.y_test, config,
                           rows_train=data.rows_train, resume=start,
                           on_progress=ctx.progress, on_checkpoint=on_checkpoint)
        except (ValueError, FloatingPointError) as exc:
            raise worker.BadInput(str(exc)) from None
    saved.discard()
    metrics = {**result.metrics, **{f"data_{k}": v for k, v in data.info.items()}}
    return worker.Result(output_ids=versions, metrics=metrics, step=result.steps,
                         total=result.steps)


if __name__ == "__main__":
    worker.main("trainer", run)
