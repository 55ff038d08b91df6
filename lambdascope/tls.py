"""TLS for every gRPC connection: servers, the SDK and CLI, and the services between them.

A server serves TLS only (no plaintext port) when given a certificate and key
(LAMBDASCOPE_TLS_CERT / LAMBDASCOPE_TLS_KEY, PEM files), and requires client certificates
signed by LAMBDASCOPE_TLS_CLIENT_CA when that is set (mutual TLS). A client (the SDK, the CLI's
--ca/--cert/--key, a service calling another, a job's worker) verifies servers against
LAMBDASCOPE_TLS_CA and presents LAMBDASCOPE_TLS_CLIENT_CERT / LAMBDASCOPE_TLS_CLIENT_KEY when
set. With none of these, connections are plaintext, as on the embedded default's loopback.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib

import grpc

from lambdascope.config import Settings

log = logging.getLogger("lambdascope.tls")

ENV = {"ca": "LAMBDASCOPE_TLS_CA", "cert": "LAMBDASCOPE_TLS_CLIENT_CERT",
       "key": "LAMBDASCOPE_TLS_CLIENT_KEY"}


@dataclasses.dataclass(frozen=True)
class ClientTLS:
    """How a client connects: the CA its servers' certificates chain to, and its own
    certificate and key for servers that require one (PEM bytes)."""

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def from_files(cls, ca: str = "", cert: str = "", key: str = "") -> ClientTLS | None:
        """None when no CA is given (plaintext); a certificate needs its key and a CA."""
        if bool(cert) != bool(key):
            raise ValueError("a client certificate needs its key and a key its certificate "
                             "(--cert and --key, or LAMBDASCOPE_TLS_CLIENT_CERT and _KEY)")
        if not ca:
            if cert:
                raise ValueError("a client certificate is sent over TLS only: give the CA that "
                                 "signed the servers' certificates (--ca or LAMBDASCOPE_TLS_CA)")
            return None
        return cls(_read(ca, "CA"), _read(cert, "client certificate") if cert else None,
                   _read(key, "client key") if key else None)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ClientTLS | None:
        env = os.environ if environ is None else environ
        return cls.from_files(**{name: env.get(var, "") for name, var in ENV.items()})

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)


def channel(address: str, tls: ClientTLS | None, options: list | None = None) -> grpc.Channel:
    """A channel to `address`: TLS when `tls` is given, plaintext otherwise."""
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, tls.credentials(), options=options)


def of_service(settings: Settings) -> ClientTLS | None:
    """How a service reaches the others: trusting tls_ca, presenting tls_client_cert/key (under
    mutual TLS, often its own serving certificate)."""
    return ClientTLS.from_files(settings.tls_ca, settings.tls_client_cert, settings.tls_client_key)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The server's TLS credentials, or None to serve plaintext; a half-configured TLS stops
    the service with the setting named. The files are read again when they change (a renewed
    certificate), checked at each new connection."""
    if not (settings.tls_cert or settings.tls_key):
        if settings.tls_client_ca:
            raise SystemExit("LAMBDASCOPE_TLS_CLIENT_CA needs TLS: set LAMBDASCOPE_TLS_CERT "
                             "and LAMBDASCOPE_TLS_KEY too")
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise SystemExit("TLS needs both LAMBDASCOPE_TLS_CERT and LAMBDASCOPE_TLS_KEY")
    files = _ServerFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    try:
        initial = files.load()
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return grpc.dynamic_ssl_server_credentials(
        initial, files.changed, require_client_authentication=bool(settings.tls_client_ca))


class _ServerFiles:
    """A server's certificate, key and client CA, with what they were when last read."""

    def __init__(self, cert: str, key: str, client_ca: str):
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._seen: tuple = ()

    def _stamp(self) -> tuple:
        return tuple(os.stat(p).st_mtime_ns for p in (self.cert, self.key, self.client_ca) if p)

    def load(self) -> grpc.ServerCertificateConfiguration:
        try:
            stamp = self._stamp()  # before reading: a change meanwhile is seen next time
        except OSError as exc:
            raise ValueError(f"cannot read the TLS files: {exc}") from None
        pair = (_read(self.key, "TLS key"), _read(self.cert, "TLS certificate"))
        client_ca = _read(self.client_ca, "client CA") if self.client_ca else None
        self._seen = stamp
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=client_ca)

    def changed(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed since read; None to keep the current one
        (also while a renewal is half-written: the next connection tries again)."""
        try:
            if self._stamp() == self._seen:
                return None
            return self.load()
        except (OSError, ValueError):
            log.warning("the TLS files changed but cannot be read yet; keeping the current ones")
            self._seen = ()
            return None


def _read(path: str, what: str) -> bytes:
    try:
        data = pathlib.Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise ValueError(f"the {what} {path} is not PEM (no -----BEGIN line)")
    return data
