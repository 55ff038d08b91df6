"""Server bootstrap shared by every service: health, reflection, /metrics, auth, logs, shutdown.

A service calls `start(settings, [ServiceBinding...], authenticator, on_shutdown=...)`. The
interceptor here counts every call in the grpc_server_* metrics, authenticates it (the caller's
API key, checked by `authenticator`, against the access level the RPC declares in protos/; see
lambdascope.auth), and answers lambdascope.errors.ApiError with its status; unexpected exceptions
are logged with a traceback and answered INTERNAL.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import ProcessCollector, start_http_server

from lambdascope import __version__, audit_log, auth, config, errors, logs, readiness, tls
from lambdascope.config import Settings
from lambdascope.metrics import Observation, ServerMetrics, rpc_type, split_method
from lambdascope.v1 import platform_pb2, platform_pb2_grpc

log = logging.getLogger("lambdascope.server")

# Calls that never need a token: load balancers and probes must reach them.
_OPEN_SERVICES = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                  "grpc.reflection.v1.ServerReflection"}


@dataclasses.dataclass
class ServiceBinding:
    """One gRPC service to host: its full name and the function that adds it to a server."""

    name: str
    add: Callable[[grpc.Server], None]


@dataclasses.dataclass
class _Call:
    """What the audit trail records of one call, filled in while it is served."""

    rpc: str
    key_id: str = ""
    team: str = ""
    user: str = ""
    request: Any = None
    response: Any = None
    reason: str = ""


class _Interceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: ServerMetrics, authenticator: auth.Authenticator,
                 trail: audit_log.AuditLog | None):
        self.metrics = metrics
        self.authenticator = authenticator
        self.trail = trail

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        service, method = split_method(details.method)
        kind = rpc_type(handler)
        if service in _OPEN_SERVICES:
            return self._wrap(handler, kind, service, method, None)
        return self._wrap(handler, kind, service, method, auth.access_of(service, method))

    def _caller(self, context: grpc.ServicerContext, service: str, method: str, access: int,
                call: _Call) -> tuple[auth.Principal, str, str]:
        """The verified caller, the key it presented and the team it asked to act for; raises
        the ApiError that refuses the call."""
        metadata = context.invocation_metadata()
        key, team = auth.bearer(metadata), auth.acting_team(metadata)
        if not key:
            raise errors.Unauthenticated(
                "no API key: send 'authorization: Bearer <key>' (the CLI and SDK send "
                "LAMBDASCOPE_API_KEY or --api-key)", reason="no_key")
        parts = auth.split_key(key)
        call.key_id, call.team = (parts[0] if parts else ""), team
        principal = self.authenticator(key, team)
        call.team, call.user = principal.team, principal.user
        if not auth.allows(principal.role, access):
            raise errors.PermissionDenied(
                f"{service}/{method} needs a key with more rights than this "
                f"{auth.role_name(principal.role)} key of team {principal.team!r}", reason="role")
        return principal, key, team

    def _record(self, call: _Call, code: grpc.StatusCode, writes: bool) -> None:
        """Count a denied call and put it, or any call of a writing RPC, in the audit trail."""
        service, _, method = call.rpc.rpartition("/")
        if call.reason:
            self.metrics.denied.labels(service, method, call.reason).inc()
        if self.trail is None or not (writes or call.reason):
            return
        try:
            self.trail.record(rpc=call.rpc, key_id=call.key_id, team=call.team,
                              object=audit_log.describe(call.request), code=code.name,
                              reason=call.reason, result_id=audit_log.result_id(call.response),
                              user=call.user)
        except Exception:  # noqa: BLE001 - the call was answered; the gap is logged and counted
            log.exception("could not record a call in the audit trail", extra={"rpc": call.rpc})
            self.metrics.audit_errors.inc()

    def _wrap(self, handler, kind, service, method, access: int | None):
        """`handler` counted and answered as described above; authenticated first unless
        `access` is None (health and reflection), and recorded in the audit trail."""
        original = _behavior(handler)
        metrics = self.metrics
        writes = access is not None and auth.writes(service, method)

        def serve(request: Any, context: grpc.ServicerContext, call: _Call) -> Any:
            if access is None:
                return original(request, context)
            principal, key, team = self._caller(context, service, method, access, call)
            with auth.acting_as(principal, key, team):
                return original(request, context)

        def serve_stream(request: Any, context: grpc.ServicerContext, call: _Call) -> Iterator[Any]:
            if access is None:
                yield from original(request, context)
                return
            principal, key, team = self._caller(context, service, method, access, call)
            with auth.acting_as(principal, key, team):
                yield from original(request, context)

        def begin(request: Any) -> tuple[Observation, _Call, Any]:
            obs = Observation(metrics, kind, service, method)
            call = _Call(f"{service}/{method}")
            if handler.request_streaming:
                request = _first_kept(obs.count_requests(request), call)
            else:
                call.request = request
            return obs, call, request

        def end(obs: Observation, call: _Call, code: grpc.StatusCode) -> None:
            obs.finish(code)
            if access is not None:
                self._record(call, code, writes)

        if handler.response_streaming:

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                obs, call, request = begin(request)
                code = grpc.StatusCode.CANCELLED  # if the client goes away mid-stream
                try:
                    for response in serve_stream(request, context, call):
                        obs.sent()
                        yield response
                    # a stream the handler ended because its client left was cancelled
                    code = context.code() or (grpc.StatusCode.OK if context.is_active()
                                              else grpc.StatusCode.CANCELLED)
                except Exception as exc:  # noqa: BLE001 - every failure is answered
                    metrics.count_exception(exc, method)
                    code = _fail(exc, context, service, method)
                    call.reason = getattr(exc, "reason", "")
                    raise  # the status is set: grpc ends the call with it (no response to serialize)
                finally:
                    end(obs, call, code)

            return _replace_behavior(handler, stream)

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            obs, call, request = begin(request)
            code = grpc.StatusCode.UNKNOWN
            try:
                call.response = serve(request, context, call)
                code = context.code() or grpc.StatusCode.OK
                return call.response
            except Exception as exc:  # noqa: BLE001 - every failure is answered
                metrics.count_exception(exc, method)
                code = _fail(exc, context, service, method)
                call.reason = getattr(exc, "reason", "")
                # The status is set (context.abort); raising ends the call with it. Returning
                # None instead made grpc try to serialize None and log a TypeError per refusal.
                raise
            finally:
                end(obs, call, code)

        return _replace_behavior(handler, unary)


def _first_kept(requests: Iterator[Any], call: _Call) -> Iterator[Any]:
    """`requests` unchanged, the first one kept in `call` (an upload's header names it)."""
    for i, request in enumerate(requests):
        if i == 0:
            call.request = request
        yield request


def _fail(exc: Exception, context: grpc.ServicerContext, service: str, method: str) -> grpc.StatusCode:
    """Set the status that answers `exc` on `context` and return its code; the caller re-raises
    (grpc then ends the call with that status: the context is marked aborted)."""
    if isinstance(exc, errors.ApiError):
        code, message = exc.code, exc.message
        if not exc.retryable:  # gRPC's retry pushback: a negative delay means "do not retry"
            context.set_trailing_metadata((("grpc-retry-pushback-ms", "-1"),))
        log.info("rpc refused", extra={"rpc": f"{service}/{method}", "code": code.name, "reason": message})
    elif context.code() not in (None, grpc.StatusCode.OK):
        # context.abort() was called by the servicer: keep its status.
        return context.code()
    elif (outage := _outage(exc)) is not None:  # a dependency is down: the call may be retried
        code, message = grpc.StatusCode.UNAVAILABLE, outage
        log.warning("rpc failed: dependency unavailable",
                    extra={"rpc": f"{service}/{method}", "reason": message})
    else:
        incident = uuid.uuid4().hex[:12]
        log.exception("rpc failed", extra={"rpc": f"{service}/{method}", "incident": incident})
        code, message = grpc.StatusCode.INTERNAL, f"internal error (incident {incident} in the server log)"
    try:
        context.abort(code, message)
    except Exception:  # noqa: BLE001 - abort always raises; the status is now set
        pass
    return code


def _outage(exc: Exception) -> str | None:
    """What to tell a caller when `exc` means a dependency did not answer (the object store, or
    the database's connection), else None."""
    import sqlalchemy as sa

    from lambdascope.storage.objects import ObjectStoreError

    cause = exc
    while cause is not None:
        if isinstance(cause, ObjectStoreError):
            return f"the object store is unavailable ({cause}); nothing was stored: retry later"
        if isinstance(cause, (sa.exc.OperationalError, sa.exc.InterfaceError)) or (
                isinstance(cause, sa.exc.DBAPIError) and cause.connection_invalidated):
            return "the database is unavailable; nothing was changed: retry later"
        cause = cause.__cause__ or cause.__context__
    return None


def _behavior(handler: grpc.RpcMethodHandler) -> Callable:
    return (handler.unary_unary or handler.unary_stream or handler.stream_unary
            or handler.stream_stream)


def _replace_behavior(handler: grpc.RpcMethodHandler, behavior: Callable) -> grpc.RpcMethodHandler:
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return factory(behavior, request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)


class _Platform(platform_pb2_grpc.PlatformServicer):
    def __init__(self, settings: Settings, trail: audit_log.AuditLog | None):
        self.settings = settings
        self.trail = trail

    def ListAuditEvents(self, request, context):
        if self.trail is None:
            raise errors.FailedPrecondition(f"the {self.settings.service} keeps no audit trail")
        return self.trail.list(request)

    def Describe(self, request, context):
        return platform_pb2.DescribeResponse(
            service=self.settings.service,
            version=__version__,
            endpoints=[platform_pb2.ServiceEndpoint(name=n, address=a)
                       for n, a in sorted(self.settings.endpoints.items())],
        )


@dataclasses.dataclass
class RunningServer:
    """A started server: its addresses, and how to stop it."""

    server: grpc.Server
    address: str
    metrics_address: str
    metrics: ServerMetrics
    health: health.HealthServicer
    _on_shutdown: Callable[[], None] | None
    _http: Any = None
    _probe_server: grpc.Server | None = None
    _watch: readiness.Watch | None = None
    _stopped: threading.Event = dataclasses.field(default_factory=threading.Event)

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new work, let in-flight calls finish for `grace` seconds, mark jobs, stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._watch is not None:
            self._watch.stop()
        self.health.enter_graceful_shutdown()
        if self._on_shutdown is not None:
            self._on_shutdown()
        self.server.stop(grace).wait()
        if self._probe_server is not None:
            self._probe_server.stop(0).wait()
        if self._http is not None:
            self._http.shutdown()

    def wait(self) -> None:
        self.server.wait_for_termination()


def start(settings: Settings, bindings: list[ServiceBinding], authenticator: auth.Authenticator,
          *, on_shutdown: Callable[[], None] | None = None, max_workers: int = 64,
          metrics: ServerMetrics | None = None,
          trail: audit_log.AuditLog | None = None,
          dependencies: dict[str, readiness.Probe] | None = None) -> RunningServer:
    """Start a server hosting `bindings` plus health, reflection and Platform, every call but
    health and reflection checked by `authenticator`, writes and denied calls recorded in
    `trail` (every service passes one). `dependencies`: probes of what the service cannot work
    without (its database, object store); its health is NOT_SERVING while one fails
    (lambdascope.readiness).

    metrics: the server's metrics, when the service registered its own (jobs, storage) in
    them before starting; a fresh registry otherwise. /metrics serves its registry."""
    metrics = metrics if metrics is not None else ServerMetrics()
    registry = metrics.registry
    ProcessCollector(registry=registry)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=settings.service),
        interceptors=[_Interceptor(metrics, authenticator, trail)],
        options=[("grpc.max_receive_message_length", 8 * 2**20),
                 ("grpc.so_reuseport", 0)],
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    platform_pb2_grpc.add_PlatformServicer_to_server(_Platform(settings, trail), server)
    for binding in bindings:
        binding.add(server)
    names = [b.name for b in bindings] + [
        platform_pb2.DESCRIPTOR.services_by_name["Platform"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(names, server)
    credentials = tls.server_credentials(settings)
    listen = f"{settings.host}:{settings.port}"
    port = (server.add_secure_port(listen, credentials) if credentials is not None
            else server.add_insecure_port(listen))
    if port == 0:
        raise SystemExit(f"{settings.service}: cannot listen on {settings.host}:{settings.port}")
    probe_server = None
    if settings.health_port >= 0:  # health alone, in plaintext, for probes that cannot do TLS
        probe_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2,
                                                              thread_name_prefix="probe"))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, probe_server)
        if probe_server.add_insecure_port(f"{settings.host}:{settings.health_port}") == 0:
            raise SystemExit(f"{settings.service}: cannot listen on {settings.host}:"
                             f"{settings.health_port} (health_port)")
        probe_server.start()
    http = None
    metrics_address = ""
    if settings.metrics_port >= 0:
        http, _ = start_http_server(settings.metrics_port, addr=settings.host, registry=registry)
        metrics_address = f"{settings.host}:{http.server_port}"
    server.start()
    watch = readiness.Watch(health_servicer, ["", *[b.name for b in bindings]], dependencies or {},
                         settings.health_interval_seconds).start()
    address = f"{settings.host}:{port}"
    log.info("serving", extra={"address": address, "metrics": metrics_address,
                               "tls": "off" if credentials is None else
                               "mutual" if settings.tls_client_ca else "on"})
    return RunningServer(server, address, metrics_address, metrics, health_servicer, on_shutdown,
                         http, probe_server, watch)


def serve_forever(running: RunningServer, settings: Settings) -> None:
    """Announce readiness on stdout (one JSON line), then block until SIGTERM/SIGINT."""
    print(json.dumps({"service": settings.service, "address": running.address,
                      "metrics": running.metrics_address}), flush=True)
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    running.stop(settings.grace_seconds)
    log.info("stopped")
    sys.stdout.flush()


def arg_parser(service: str) -> argparse.ArgumentParser:
    """Command-line flags every service takes; they override LAMBDASCOPE_* variables."""
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--metrics-port", dest="metrics_port", type=int)
    parser.add_argument("--data-dir", dest="data_dir")
    return parser


def main(service: str, start_service: Callable[[Settings], RunningServer], argv: list[str] | None) -> None:
    """A service's entry point: settings from its flags and the environment, logs, then serve
    until SIGTERM/SIGINT."""
    args = arg_parser(service).parse_args(argv)
    settings = config.load(service, **vars(args))
    logs.configure(service, settings.log_level)
    serve_forever(start_service(settings), settings)
