"""The HTTP side port: /healthz (alive), /readyz (models loaded and warmed), /metrics.

A deliberately small HTTP/1.1 responder on the server's own event loop: three
GET paths, no framework. Metrics are collected at scrape time into a registry owned
by this endpoint (no global instruments).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

MAX_REQUEST_BYTES = 8192


class HttpEndpoint:
    """Serves /healthz, /readyz and /metrics on one port."""

    def __init__(
        self,
        is_ready: Callable[[], bool],
        collectors: Sequence[Collector] = (),
    ) -> None:
        self._is_ready = is_ready
        self.registry = CollectorRegistry(auto_describe=True)
        """What /metrics serves: these collectors, and the OpenTelemetry metrics of the
        server's MeterProvider (gateway/telemetry/metrics.py), whose reader registers
        itself here."""
        for collector in collectors:
            self.registry.register(collector)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        self._server = await asyncio.start_server(
            self._handle, host, port, reuse_port=reuse_port or None
        )
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        if len(head) > MAX_REQUEST_BYTES:
            await self._reply(writer, 431, b"request header too large\n")
            return
        parts = head.split(b"\r\n", 1)[0].split()
        method, path = (parts[0], parts[1].split(b"?")[0]) if len(parts) >= 2 else (b"", b"")
        if method != b"GET":
            await self._reply(writer, 405, b"only GET\n")
        elif path == b"/healthz":
            await self._reply(writer, 200, b"ok\n")
        elif path == b"/readyz":
            ready = self._is_ready()
            await self._reply(
                writer, 200 if ready else 503, b"ready\n" if ready else b"not ready\n"
            )
        elif path == b"/metrics":
            body = generate_latest(self.registry)
            await self._reply(writer, 200, body, b"text/plain; version=0.0.4; charset=utf-8")
        else:
            await self._reply(writer, 404, b"not found\n")

    @staticmethod
    async def _reply(
        writer: asyncio.StreamWriter, status: int, body: bytes, content_type: bytes = b"text/plain"
    ) -> None:
        reason = {
            200: b"OK",
            404: b"Not Found",
            405: b"Method Not Allowed",
            431: b"Too Large",
            503: b"Service Unavailable",
        }[status]
        writer.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (status, reason, content_type, len(body))
        )
        writer.write(body)
        try:
            await writer.drain()
        finally:
            writer.close()
