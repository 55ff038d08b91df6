"""With a token configured, calls need it; health checks never do."""
from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lambdascope import config
from lambdascope.client import Client
from lambdascope.v1 import registry_pb2
from services.registry import app


@pytest.fixture
def guarded_registry(tmp_path):
    settings = config.load("registry", data_dir=tmp_path, auth_token="s3cret", metrics_port=-1)
    running = app.start(settings)
    yield running.address
    running.stop(grace=1)


def test_token_is_required_except_for_health(guarded_registry):
    with Client(registry=guarded_registry, token="") as anonymous:
        with pytest.raises(grpc.RpcError) as err:
            anonymous.registry.ListModels(registry_pb2.ListModelsRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "Bearer" in err.value.details()
        health = health_pb2_grpc.HealthStub(anonymous.channel("registry"))
        assert health.Check(health_pb2.HealthCheckRequest()).status == \
            health_pb2.HealthCheckResponse.SERVING
    with Client(registry=guarded_registry, token="wrong") as wrong:
        with pytest.raises(grpc.RpcError) as err:
            wrong.registry.ListModels(registry_pb2.ListModelsRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with Client(registry=guarded_registry, token="s3cret") as member:
        assert member.registry.ListModels(registry_pb2.ListModelsRequest()).models == []
