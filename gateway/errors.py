"""Errors that know no transport.

Core code raises :class:`GatewayError` with a :class:`ErrorKind`; the gRPC layer
(``gateway.grpc.errors``) maps each kind to a status code. Messages are written
for the caller: they name the field and the value that was wrong.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """What went wrong, in terms a caller can act on."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    UNAVAILABLE = "unavailable"
    UNAUTHENTICATED = "unauthenticated"
    FAILED_PRECONDITION = "failed_precondition"
    INTERNAL = "internal"


class GatewayError(Exception):
    """An error with a kind and a caller-facing message."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"GatewayError({self.kind.name}, {self.message!r})"


def invalid(message: str) -> GatewayError:
    """An INVALID_ARGUMENT error."""
    return GatewayError(ErrorKind.INVALID_ARGUMENT, message)


def not_found(message: str) -> GatewayError:
    """A NOT_FOUND error."""
    return GatewayError(ErrorKind.NOT_FOUND, message)


class Overloaded(GatewayError):
    """A model's queue cannot take the request in time (shed)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.RESOURCE_EXHAUSTED, message)


class DeadlineExpired(GatewayError):
    """The request's deadline passed before the model could run it."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.DEADLINE_EXCEEDED, message)


class BackendFailure(GatewayError):
    """The model runtime raised while scoring."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.INTERNAL, message)
