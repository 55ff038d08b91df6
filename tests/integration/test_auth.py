"""Every call but health checks needs a valid API key; roles bound what a key may do."""
from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lambdascope import auth, config
from lambdascope.client import Client
from lambdascope.v1 import registry_pb2
from services.registry import app

ADMIN = auth.new_key()[1]


@pytest.fixture
def registry(tmp_path):
    settings = config.load("registry", data_dir=tmp_path, admin_key=ADMIN, metrics_port=-1)
    running = app.start(settings)
    yield running.address
    running.stop(grace=1)


def _code(call, *args):
    with pytest.raises(grpc.RpcError) as err:
        call(*args)
    return err.value.code(), err.value.details()


def test_a_key_is_required_except_for_health(registry):
    with Client(registry=registry, api_key="") as anonymous:
        code, details = _code(anonymous.registry.ListModels, registry_pb2.ListModelsRequest())
        assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in details
        health = health_pb2_grpc.HealthStub(anonymous.channel("registry"))
        assert health.Check(health_pb2.HealthCheckRequest()).status == \
            health_pb2.HealthCheckResponse.SERVING
    key_id, _ = auth.split_key(ADMIN)
    for wrong in ("not-a-key-xyz", f"lsk_{key_id}_" + "A" * 43, auth.new_key()[1]):
        with Client(registry=registry, api_key=wrong) as guesser:
            code, details = _code(guesser.registry.ListModels, registry_pb2.ListModelsRequest())
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert wrong not in details
    with Client(registry=registry, api_key=ADMIN) as admin:
        assert admin.registry.ListModels(registry_pb2.ListModelsRequest()).models == []
        assert admin.whoami().team == "default"


def test_roles_bound_what_a_key_may_do_and_revoked_or_expired_keys_stop_working(registry):
    with Client(registry=registry, api_key=ADMIN) as admin:
        admin.create_team("team-a")
        reader = admin.create_key("team-a", auth.Role.ROLE_READER, description="ci").secret
        writer = admin.create_key("team-a", auth.Role.ROLE_WRITER).secret
        listed = {k.id: k for k in admin.list_keys("team-a")}
        assert set(listed) == {auth.split_key(reader)[0], auth.split_key(writer)[0]}
        assert all(reader not in str(k) and writer not in str(k) for k in listed.values())
    with Client(registry=registry, api_key=reader) as as_reader:
        assert as_reader.whoami().team == "team-a"
        assert as_reader.registry.ListModels(registry_pb2.ListModelsRequest()).models == []
        code, _ = _code(as_reader.registry.CreateModel, registry_pb2.CreateModelRequest(name="m"))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, _ = _code(as_reader.create_team, "mine")
        assert code == grpc.StatusCode.PERMISSION_DENIED
        # A client-sent team header decides nothing for a key that is not an admin's.
        code, _ = _code(as_reader.registry.ListModels, registry_pb2.ListModelsRequest(), None,
                        [(auth.TEAM_HEADER, "default")])
        assert code == grpc.StatusCode.PERMISSION_DENIED
    with Client(registry=registry, api_key=writer) as as_writer:
        assert as_writer.registry.CreateModel(registry_pb2.CreateModelRequest(name="m")).owner == "team-a"
        # A key may revoke itself, and nothing else.
        code, _ = _code(as_writer.revoke_key, auth.split_key(reader)[0])
        assert code == grpc.StatusCode.PERMISSION_DENIED
        as_writer.revoke_key(auth.split_key(writer)[0])
        code, _ = _code(as_writer.whoami)
        assert code == grpc.StatusCode.UNAUTHENTICATED
    with Client(registry=registry, api_key=ADMIN) as admin:
        admin.revoke_key(auth.split_key(reader)[0])
        assert admin.list_keys("team-a") == []
        assert len(admin.list_keys("team-a", include_revoked=True)) == 2
    with Client(registry=registry, api_key=reader) as revoked:
        code, _ = _code(revoked.whoami)
        assert code == grpc.StatusCode.UNAUTHENTICATED


def test_bad_identity_requests_are_refused_with_what_to_fix(registry):
    with Client(registry=registry, api_key=ADMIN) as admin:
        for call, args, code in (
                (admin.create_team, ("no spaces",), grpc.StatusCode.INVALID_ARGUMENT),
                (admin.create_team, ("default",), grpc.StatusCode.ALREADY_EXISTS),
                (admin.create_key, ("nobody", auth.Role.ROLE_READER), grpc.StatusCode.NOT_FOUND),
                (admin.create_key, ("default", 0), grpc.StatusCode.INVALID_ARGUMENT),
                (admin.create_key, ("default", auth.Role.ROLE_READER, -1), grpc.StatusCode.INVALID_ARGUMENT),
                (admin.revoke_key, ("0123456789abcdef",), grpc.StatusCode.NOT_FOUND),
                (admin.revoke_key, ("",), grpc.StatusCode.INVALID_ARGUMENT)):
            assert _code(call, *args)[0] == code, (call.__name__, args)
