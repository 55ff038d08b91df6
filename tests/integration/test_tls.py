"""TLS on every connection, with certificates made here: the platform serves mutual TLS (the
services reach each other, and the jobs' workers the registry, over it); the CLI audits over it;
a plaintext client, a client without a certificate and one whose certificate another CA signed
are all refused before any RPC runs."""
from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lambdascope import tls
from lambdascope.local import LocalPlatform
from lambdascope.v1 import platform_pb2, platform_pb2_grpc
from tests.tls_certs import Authority


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    out = tmp_path_factory.mktemp("pki")
    ca, rogue = Authority(out, "lambdascope-ca"), Authority(out, "rogue-ca")
    return {"ca": ca.ca_path, "server": ca.issue("server", hosts=("127.0.0.1", "localhost")),
            "client": ca.issue("alice"), "rogue": rogue.issue("mallory")}


@pytest.fixture(scope="module")
def platform(tmp_path_factory, pki):
    server_cert, server_key = pki["server"]
    env = {"LAMBDASCOPE_TLS_CERT": str(server_cert), "LAMBDASCOPE_TLS_KEY": str(server_key),
           "LAMBDASCOPE_TLS_CLIENT_CA": str(pki["ca"]),
           # how the services (and their workers) reach each other: trusting the CA, presenting
           # their serving certificate
           "LAMBDASCOPE_TLS_CA": str(pki["ca"]), "LAMBDASCOPE_TLS_CLIENT_CERT": str(server_cert),
           "LAMBDASCOPE_TLS_CLIENT_KEY": str(server_key)}
    running = LocalPlatform(tmp_path_factory.mktemp("tls"), extra_env=env)
    running.start()
    yield running
    running.stop()


def describe(address: str, credentials: tls.ClientTLS | None) -> grpc.StatusCode:
    with tls.channel(address, credentials) as channel:
        try:
            platform_pb2_grpc.PlatformStub(channel).Describe(platform_pb2.DescribeRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_the_cli_audits_over_mutual_tls(platform, pki, regression_files):
    model, data = regression_files
    cert, key = pki["client"]
    done = subprocess.run(
        [sys.executable, "-m", "lambdascope.cli", "audit", "--model", str(model), "--data", str(data),
         "--loss", "mse", "--chains", "2", "--draws", "40", "--burnin", "20", "--seed", "1",
         "--server", platform.endpoints["estimator"], "--ca", str(pki["ca"]), "--cert", str(cert),
         "--key", str(key)],
        env={"LAMBDASCOPE_API_KEY": platform.api_key, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300)
    # exit 3: a run this short may be judged untrustworthy; that it ran over TLS is the point
    assert done.returncode in (0, 3), done.stderr
    assert "succeeded" in done.stderr + done.stdout


def test_plaintext_and_unknown_clients_are_refused(platform, pki):
    address = platform.endpoints["registry"]
    cert, key = pki["client"]
    good = tls.ClientTLS.from_files(str(pki["ca"]), str(cert), str(key))
    assert describe(address, good) == grpc.StatusCode.UNAUTHENTICATED  # TLS passed; no API key
    assert describe(address, None) == grpc.StatusCode.UNAVAILABLE  # plaintext
    assert describe(address, tls.ClientTLS.from_files(str(pki["ca"]))) == \
        grpc.StatusCode.UNAVAILABLE  # no client certificate
    rogue_cert, rogue_key = pki["rogue"]
    assert describe(address, tls.ClientTLS.from_files(str(pki["ca"]), str(rogue_cert),
                                                       str(rogue_key))) == grpc.StatusCode.UNAVAILABLE
    # Health checks (probes) need TLS too: nothing is served in plaintext.
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_a_client_that_does_not_trust_the_servers_ca_is_refused(platform, pki, tmp_path):
    other = Authority(tmp_path, "other-ca")
    cert, key = pki["client"]
    mistrusting = tls.ClientTLS.from_files(str(other.ca_path), str(cert), str(key))
    assert describe(platform.endpoints["estimator"], mistrusting) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("files, says", [
    ({"cert": "c.pem"}, "needs its key"),
    ({"cert": "c.pem", "key": "k.pem"}, "give the CA"),
    ({"ca": "/nonexistent.pem"}, "cannot read the CA"),
])
def test_half_given_client_tls_is_explained(files, says):
    with pytest.raises(ValueError, match=says):
        tls.ClientTLS.from_files(**files)


@pytest.mark.parametrize("values, says", [
    ({"tls_cert": "c.pem"}, "both LAMBDASCOPE_TLS_CERT and LAMBDASCOPE_TLS_KEY"),
    ({"tls_client_ca": "ca.pem"}, "needs TLS"),
    ({"tls_cert": "/nonexistent.pem", "tls_key": "/nonexistent.key"}, "cannot read the TLS"),
    ({"tls_cert": __file__, "tls_key": __file__}, "not PEM"),
])
def test_a_half_configured_server_does_not_start(values, says):
    from lambdascope.config import Settings

    with pytest.raises(SystemExit, match=says):
        tls.server_credentials(Settings(service="registry", **values))


def test_probes_get_a_plaintext_health_port_and_nothing_else(pki):
    """The kubelet's gRPC probes cannot speak TLS: health_port serves grpc.health.v1 alone."""
    from lambdascope import server
    from lambdascope.config import Settings
    from lambdascope.local import free_port

    cert, key = pki["server"]
    settings = Settings(service="registry", port=0, metrics_port=-1, health_port=free_port("127.0.0.1"),
                        tls_cert=str(cert), tls_key=str(key))

    def nobody(key: str, team: str):
        raise AssertionError("no call reaches authentication in this test")

    running = server.start(settings, [], nobody)
    try:
        probe = f"127.0.0.1:{settings.health_port}"
        with grpc.insecure_channel(probe) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as only_health:
                platform_pb2_grpc.PlatformStub(channel).Describe(platform_pb2.DescribeRequest(), timeout=5)
            assert only_health.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert describe(running.address, None) == grpc.StatusCode.UNAVAILABLE  # main port: TLS only
    finally:
        running.stop(0)


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path):
    """cert-manager renews the files in place; the next connection gets the new certificate."""
    from lambdascope import server
    from lambdascope.config import Settings

    old, new = Authority(tmp_path, "old-ca"), Authority(tmp_path, "new-ca")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"

    def install(authority: Authority, name: str) -> None:
        issued_cert, issued_key = authority.issue(name, hosts=("127.0.0.1",))
        cert.write_bytes(issued_cert.read_bytes())
        key.write_bytes(issued_key.read_bytes())

    install(old, "first")
    settings = Settings(service="registry", port=0, metrics_port=-1, tls_cert=str(cert),
                        tls_key=str(key))
    running = server.start(settings, [], lambda key, team: None)
    try:
        trusting_old = tls.ClientTLS.from_files(str(old.ca_path))
        trusting_new = tls.ClientTLS.from_files(str(new.ca_path))
        assert describe(running.address, trusting_old) == grpc.StatusCode.UNAUTHENTICATED
        assert describe(running.address, trusting_new) == grpc.StatusCode.UNAVAILABLE
        install(new, "renewed")
        assert describe(running.address, trusting_new) == grpc.StatusCode.UNAUTHENTICATED
        assert describe(running.address, trusting_old) == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(0)
