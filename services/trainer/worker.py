"""One training run, in its own process: data, model, training loop, checkpoints as versions.

Started by the trainer's job manager as `python -m services.trainer.worker` (protocol in
lambdascope.worker). Each checkpoint is uploaded to the registry as a version of
spec.model_name with lineage: this job, the step, the previous checkpoint, the dataset.
"""
from __future__ import annotations

import pathlib
import tempfile

import grpc
import torch
from google.protobuf import json_format
from safetensors.torch import save_file

from lambdascope import architectures, artifacts, worker
from lambdascope.client import Client
from lambdascope.v1 import registry_pb2, trainer_pb2
from services.trainer import datasets, train_spec
from services.trainer.training import train


def load_data(spec: trainer_pb2.TrainSpec, client: Client, scratch: pathlib.Path
              ) -> tuple[torch.Tensor, torch.Tensor]:
    if spec.dataset.HasField("builtin"):
        return datasets.load_digits_dataset()
    try:
        dataset = client.get_dataset(spec.dataset.dataset_id)
        train_spec.check_dataset(spec, dataset)
        path = client.download_dataset(dataset.id, scratch / "data")
        return artifacts.load_dataset(path)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise worker.BadInput(exc.details()) from None
        raise
    except (train_spec.SpecError, artifacts.ArtifactError) as exc:
        raise worker.BadInput(str(exc)) from None


def register_training_data(spec: trainer_pb2.TrainSpec, job_id: str, client: Client,
                           scratch: pathlib.Path, x: torch.Tensor, y: torch.Tensor) -> str:
    """The registry id of exactly the rows trained on, so lineage (and audits) can use them."""
    if spec.dataset.HasField("dataset_id") and not spec.dataset.test_fraction:
        return spec.dataset.dataset_id
    path = scratch / "train.safetensors"
    save_file({"x": x.contiguous(), "y": y.contiguous()}, str(path))
    source = spec.dataset.builtin or spec.dataset.dataset_id
    dataset = client.upload_dataset(path, f"{spec.model_name}-train", metadata={
        "source": source, "split": "train", "test_fraction": str(spec.dataset.test_fraction),
        "seed": str(spec.seed), "job_id": job_id})
    path.unlink()
    return dataset.id


def run(ctx: worker.JobContext) -> worker.Result:
    spec = json_format.Parse(ctx.spec_json, trainer_pb2.TrainSpec())
    try:
        config = train_spec.train_config(spec)
    except train_spec.SpecError as exc:
        raise worker.BadInput(str(exc)) from None
    arch = train_spec.model_architecture(spec)
    settings = ctx.settings
    with Client(registry=settings.registry_address, token=settings.auth_token) as client, \
            tempfile.TemporaryDirectory(prefix="train-") as tmp:
        scratch = pathlib.Path(tmp)
        x, y = load_data(spec, client, scratch)
        x_train, y_train, x_test, y_test = datasets.train_test_split(
            x, y, spec.dataset.test_fraction, spec.seed)
        train_data_id = register_training_data(spec, ctx.job_id, client, scratch, x_train, y_train)
        module = architectures.build_module(arch, seed=spec.seed)
        versions: list[str] = []

        def on_checkpoint(step: int, state: dict[str, torch.Tensor]) -> None:
            path = scratch / f"step-{step}.safetensors"
            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
            version = client.upload_model(
                path, spec.model_name, architecture=arch,
                task_outputs=config.task_outputs if config.self_modeling else 0,
                lineage=registry_pb2.Lineage(
                    job_id=ctx.job_id, step=step,
                    parent_version_id=versions[-1] if versions else "",
                    dataset_version_id=train_data_id),
                metadata={"step": str(step)})
            versions.append(version.id)
            path.unlink()

        try:
            result = train(module, x_train, y_train, x_test, y_test, config,
                           on_progress=ctx.progress, on_checkpoint=on_checkpoint)
        except (ValueError, FloatingPointError) as exc:
            raise worker.BadInput(str(exc)) from None
    return worker.Result(output_ids=versions, metrics=result.metrics, step=result.steps,
                         total=result.steps)


if __name__ == "__main__":
    worker.main("trainer", run)
