"""Each service's /metrics counts the gRPC calls made to it, by type, method and code."""
from __future__ import annotations

import grpc
import pytest

from lambdascope.v1 import jobs_pb2, platform_pb2, platform_pb2_grpc, registry_pb2
from tests.platform_probes import scrape


def delta(before, after, name, **labels) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_the_calls_made(platform, client):
    registry_metrics = platform.metrics["registry"]
    trainer_metrics = platform.metrics["trainer"]
    before_r, before_t = scrape(registry_metrics), scrape(trainer_metrics)

    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            client.registry.GetModel(registry_pb2.GetModelRequest(name="no-such-model"))
    for _ in range(2):
        client.registry.ListModels(registry_pb2.ListModelsRequest())
    platform_pb2_grpc.PlatformStub(client.channel("registry")).Describe(
        platform_pb2.DescribeRequest())
    with pytest.raises(grpc.RpcError):
        list(client.jobs_stub("train").WatchJob(jobs_pb2.WatchJobRequest(job_id="train-none")))

    after_r, after_t = scrape(registry_metrics), scrape(trainer_metrics)
    unary = dict(grpc_type="unary", grpc_service="lambdascope.v1.Registry")
    assert delta(before_r, after_r, "grpc_server_started_total", grpc_method="GetModel", **unary) == 3
    assert delta(before_r, after_r, "grpc_server_handled_total", grpc_method="GetModel",
                 grpc_code="NOT_FOUND", **unary) == 3
    assert delta(before_r, after_r, "grpc_server_handled_total", grpc_method="ListModels",
                 grpc_code="OK", **unary) == 2
    assert delta(before_r, after_r, "grpc_server_handling_seconds_count",
                 grpc_method="ListModels", **unary) == 2
    assert delta(before_r, after_r, "grpc_server_handled_total", grpc_type="unary",
                 grpc_service="lambdascope.v1.Platform", grpc_method="Describe",
                 grpc_code="OK") == 1
    stream = dict(grpc_type="server_stream", grpc_service="lambdascope.v1.Jobs",
                  grpc_method="WatchJob")
    assert delta(before_t, after_t, "grpc_server_started_total", **stream) == 1
    assert delta(before_t, after_t, "grpc_server_handled_total", grpc_code="NOT_FOUND",
                 **stream) == 1


def test_uploads_count_stream_messages(platform, client, tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "d.safetensors"
    save_file({"x": torch.randn(300_000, 2), "y": torch.randn(300_000, 1)}, str(path))
    before = scrape(platform.metrics["registry"])
    client.upload_dataset(path, "counted")
    after = scrape(platform.metrics["registry"])
    labels = dict(grpc_type="client_stream", grpc_service="lambdascope.v1.Registry",
                  grpc_method="UploadDataset")
    chunks = -(-path.stat().st_size // (1 << 20))
    assert delta(before, after, "grpc_server_msg_received_total", **labels) == 1 + chunks
    assert delta(before, after, "grpc_server_handled_total", grpc_code="OK", **labels) == 1
