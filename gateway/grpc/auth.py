"""Bearer-token authentication for the admin plane, with every refusal reported."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import grpc

from gateway.audit_sink import AuditSink, LoggingAuditSink

if TYPE_CHECKING:  # generic only in the stubs
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor
    _Handler = grpc.RpcMethodHandler

ACTOR_METADATA = "x-riskwire-actor"
"""Metadata key naming who makes an admin call; the token itself names nobody."""
DEFAULT_ACTOR = "admin"


def actor_of(metadata: Any, auth_context: Mapping[str, Any] | None = None) -> str:
    """The caller's ``x-riskwire-actor`` value; else, over mutual TLS, ``cn:<common name>``
    of its certificate; else ``"admin"``."""
    for key, value in metadata or ():
        if key == ACTOR_METADATA:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            # One line, bounded: it lands in logs and history.
            text = " ".join(text.split())[:128]
            if text:
                return text
    names = (auth_context or {}).get("x509_common_name") or []
    if names:
        name = names[0].decode(errors="replace") if isinstance(names[0], bytes) else names[0]
        return "cn:" + " ".join(str(name).split())[:128]
    return DEFAULT_ACTOR


class BearerTokenInterceptor(_Interceptor):
    """Refuse every call without ``authorization: Bearer <token>`` (UNAUTHENTICATED).

    Each refusal goes to the audit sink with the method, the peer and why.
    """

    def __init__(
        self, token: str, audit: AuditSink | None = None, *, transport_authenticated: bool = False
    ) -> None:
        """``transport_authenticated``: the port runs mutual TLS that requires and
        verifies a client certificate, so every call that reaches us is authenticated
        and the token is not asked for."""
        if not token:
            raise ValueError("the admin token must not be empty")
        self._expected = f"Bearer {token}".encode()
        self._audit: AuditSink = audit or LoggingAuditSink()
        self._transport_authenticated = transport_authenticated

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        if self._transport_authenticated:
            return await continuation(handler_call_details)
        given: bytes | None = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                break
        if given is not None and hmac.compare_digest(given, self._expected):
            # Constant-time comparison: no timing oracle on the token.
            return await continuation(handler_call_details)
        if given is None:
            reason = "no authorization metadata"
        elif not given.startswith(b"Bearer "):
            reason = "authorization is not a bearer token"
        else:
            reason = "wrong bearer token"
        return self._refusal(handler_call_details.method, reason)

    def _refusal(self, method: str, reason: str) -> _Handler:
        audit = self._audit

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            # The peer is known only here, inside the call.
            audit.admin_refused(method, context.peer(), reason)
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"admin calls need metadata 'authorization: Bearer <token>' with the admin "
                f"token ({reason})",
            )

        return grpc.unary_unary_rpc_method_handler(refuse)
