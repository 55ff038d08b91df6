"""Errors that carry a gRPC status: raised anywhere in a servicer, answered by the bootstrap.

Servicers stay thin by raising these instead of threading `context.abort` through helpers; the
server interceptor (lambdascope.server) turns them into the status and message the client sees.
"""
from __future__ import annotations

import grpc


class ApiError(Exception):
    """retryable=False tells clients that retrying the same call cannot help (a quota), which
    their retry policy for UNAVAILABLE and RESOURCE_EXHAUSTED then respects. `reason` marks a
    denied call, for the audit trail and the denied-calls metric (no_key, bad_key, role,
    acting_team, read_only, quota, ...); it is not sent to the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, retryable: bool = True, reason: str = ""):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.reason = reason


class InvalidArgument(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ApiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class DataLoss(ApiError):
    code = grpc.StatusCode.DATA_LOSS


class ResourceExhausted(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ApiError):
    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self, message: str, *, reason: str = "bad_key"):
        super().__init__(message, reason=reason)


class PermissionDenied(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(self, message: str, *, reason: str = "permission_denied"):
        super().__init__(message, reason=reason)


def call_upstream(service: str, call, *args, **kwargs):
    """Call another lambdascope service: its NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED and
    UNAUTHENTICATED become ours, its absence UNAVAILABLE; anything else propagates."""
    try:
        return call(*args, **kwargs)
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.NOT_FOUND:
            raise NotFound(exc.details()) from None
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            raise InvalidArgument(exc.details()) from None
        if code == grpc.StatusCode.PERMISSION_DENIED:
            raise PermissionDenied(exc.details()) from None
        if code == grpc.StatusCode.UNAUTHENTICATED:
            raise Unauthenticated(exc.details()) from None
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise Unavailable(f"the {service} is unreachable: {exc.details()}") from None
        raise
