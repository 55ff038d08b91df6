"""One audit, in its own process: fetch model and data, sample, store the report.

Started by the estimator's job manager as `python -m services.estimator.worker` (protocol in
lambdascope.worker); the same entry point runs in a Kubernetes Job's pod.
"""
from __future__ import annotations

import math
import tempfile
import time

import grpc
import torch
from google.protobuf import json_format

from lambdascope import artifacts, worker
from lambdascope.client import Client
from lambdascope.v1 import audit_pb2, estimator_pb2, models_pb2
from services.estimator import audit_spec
from services.estimator.llc import SamplerDivergedError, estimate_llc
from services.estimator.loading import load_model

LOSSES = {
    models_pb2.LOSS_KIND_MSE: torch.nn.functional.mse_loss,
    models_pb2.LOSS_KIND_CROSS_ENTROPY: torch.nn.functional.cross_entropy,
}


def run(ctx: worker.JobContext) -> worker.Result:
    started = time.perf_counter()
    request = json_format.Parse(ctx.spec_json, estimator_pb2.StartAuditRequest())
    settings = ctx.settings
    try:
        sgld = audit_spec.check_request(request.config, settings.max_chain_steps)
    except audit_spec.SpecError as exc:
        raise worker.BadInput(str(exc)) from None
    with Client(registry=settings.registry_address, token=settings.auth_token) as client, \
            tempfile.TemporaryDirectory(prefix="audit-") as scratch:
        try:
            version = client.get_model_version(request.model_version_id)
            dataset = client.get_dataset(request.dataset_id)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise worker.BadInput(exc.details()) from None
            raise
        try:
            audit_spec.check_fit(version, dataset, request.config.loss)
        except audit_spec.SpecError as exc:
            raise worker.BadInput(str(exc)) from None
        ctx.progress(0, 0, message="downloading model and data", force=True)
        model_path = client.download_model_version(version.id, f"{scratch}/model")
        data_path = client.download_dataset(dataset.id, f"{scratch}/data")
        try:
            model = load_model(version, model_path)
            x, y = artifacts.load_dataset(data_path)
        except (ValueError, artifacts.ArtifactError) as exc:
            raise worker.BadInput(f"cannot load the model or data: {exc}") from None
        load_seconds = time.perf_counter() - started
        device = request.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        total = sgld.chains * sgld.total_steps

        def progress(step: int, steps: int, running_llc: float) -> None:
            ctx.progress(step * sgld.chains, total, {"llc": running_llc})

        try:
            result = estimate_llc(model, x, y, LOSSES[request.config.loss], sgld, device=device,
                                  progress=progress)
        except SamplerDivergedError as exc:
            raise worker.BadInput(str(exc)) from None
        except ValueError as exc:
            raise worker.BadInput(f"the audit cannot run: {exc}") from None
        if not all(math.isfinite(v) for v in [result.mean, result.std, *result.per_chain]):
            raise worker.BadInput("the estimate is not finite; lower the step size")
        report = audit_pb2.AuditReport(
            model_version_id=version.id, dataset_id=dataset.id, job_id=ctx.job_id,
            config=audit_spec.resolved_config(request.config, sgld, result.nbeta, device),
            llc=audit_pb2.LLCEstimate(mean=result.mean, std=result.std,
                                      per_chain=result.per_chain),
            init_loss=result.init_loss, num_examples=result.num_examples,
            num_parameters=result.num_parameters,
            traces=[audit_pb2.ChainTrace(loss=t) for t in result.traces],
            timing=audit_pb2.Timing(seconds=time.perf_counter() - started,
                                    load_seconds=load_seconds,
                                    sampling_seconds=result.sampling_seconds),
            device=device)
        stored = client.put_report(report)
    return worker.Result(output_ids=[stored.id],
                         metrics={"llc": result.mean, "llc_std": result.std},
                         step=total, total=total)


if __name__ == "__main__":
    worker.main("estimator", run)
