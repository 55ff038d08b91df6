"""gRPC server metrics in the conventional names (grpc_server_*), per server registry.

A small interceptor of our own: py-grpc-prometheus uses upper-case type labels and misses
handled_total for server streams. Each server gets its own CollectorRegistry so several
servers in one process (tests) keep separate counts.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", _LABELS, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            (*_LABELS, "grpc_code"),
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received_total",
            "Stream messages received from clients.",
            _LABELS,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent_total", "Stream messages sent to clients.", _LABELS, registry=registry
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its completion on the server.",
            _LABELS,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )


def rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def split_method(full_method: str) -> tuple[str, str]:
    """'/lambdascope.v1.Registry/GetModel' -> ('lambdascope.v1.Registry', 'GetModel')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class Observation:
    """Counts one RPC: started now, handled when `finish` is called with its status code."""

    def __init__(self, metrics: ServerMetrics, kind: str, service: str, method: str):
        self.metrics = metrics
        self.labels = (kind, service, method)
        self.start = time.perf_counter()
        metrics.started.labels(*self.labels).inc()

    def received(self) -> None:
        self.metrics.received.labels(*self.labels).inc()

    def sent(self) -> None:
        self.metrics.sent.labels(*self.labels).inc()

    def finish(self, code: grpc.StatusCode) -> None:
        self.metrics.handled.labels(*self.labels, code.name).inc()
        self.metrics.seconds.labels(*self.labels).observe(time.perf_counter() - self.start)

    def count_requests(self, requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            self.received()
            yield request

    def count_responses(self, responses: Iterator[Any], finish: Callable[[], None]) -> Iterator[Any]:
        try:
            for response in responses:
                self.sent()
                yield response
        finally:
            finish()
