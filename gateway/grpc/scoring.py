"""riskwire.v1.Scoring on raw frames: parse, call the data plane, write the answer.

The methods are registered with no deserializer and no serializer (`handler()`), so
each gets the request's bytes and returns the response's bytes: the native parser and
response writer build no protobuf object on the hot path (DESIGN.md, "One Score
call"). The reference parser and writer (`encoder: python`) use protobuf behind the
same interface.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway.dataplane import DataPlane
from gateway.errors import GatewayError
from gateway.grpc.converters import caller_deadline, encode_result
from gateway.grpc.errors import stream_errors, unary_errors
from gateway.grpc.requests import RequestParser
from gateway.grpc.responses import ResponseWriter
from gateway.telemetry.serving import ScoringTelemetry
from riskwire.v1 import scoring_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Scoring"].full_name

STREAM_WINDOW = 256
"""Requests of one stream scored concurrently; more wait (flow control upstream)."""


class ScoringService:
    def __init__(
        self,
        dataplane: DataPlane,
        requests: RequestParser,
        responses: ResponseWriter,
        telemetry: ScoringTelemetry,
    ) -> None:
        self._dataplane = dataplane
        self._requests = requests
        self._responses = responses
        self._telemetry = telemetry

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The service's methods on bytes in and bytes out."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Score": grpc.unary_unary_rpc_method_handler(self.Score),
                "ScoreBatch": grpc.unary_unary_rpc_method_handler(self.ScoreBatch),
                "ScoreStream": grpc.stream_stream_rpc_method_handler(self.ScoreStream),
            },
        )

    @unary_errors
    async def Score(self, request: bytes, context: Context) -> bytes:
        return await self._score_one(
            "Score", request, caller_deadline(context), time.perf_counter_ns()
        )

    @unary_errors
    async def ScoreBatch(self, request: bytes, context: Context) -> bytes:
        received_ns = time.perf_counter_ns()
        parsed = self._requests.score_batch_request(request)
        results = await self._dataplane.score(
            parsed.batch, parsed.options, caller_deadline(context)
        )
        write = self._responses
        answer = write.score_batch_response([encode_result(write, r, received_ns) for r in results])
        self._telemetry.record("ScoreBatch", (time.perf_counter_ns() - received_ns) / 1e9, results)
        return answer

    @stream_errors
    async def ScoreStream(
        self, request_iterator: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        # Pipelined: score requests as they arrive, answer in request order.
        deadline = caller_deadline(context)
        pending: asyncio.Queue[asyncio.Task[bytes] | None] = asyncio.Queue(STREAM_WINDOW)

        async def read() -> None:
            try:
                index = 0
                async for request in request_iterator:
                    task = asyncio.ensure_future(
                        self._score_one(
                            "ScoreStream", request, deadline, time.perf_counter_ns(), index
                        )
                    )
                    await pending.put(task)
                    index += 1
            finally:
                await pending.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await pending.get()) is not None:
                yield await task
            await reader
        finally:
            reader.cancel()
            while not pending.empty():
                leftover = pending.get_nowait()
                if leftover is not None:
                    leftover.cancel()

    async def _score_one(
        self,
        method: str,
        request: bytes,
        deadline: float | None,
        received_ns: int,
        stream_index: int | None = None,
    ) -> bytes:
        try:
            parsed = self._requests.score_request(request)
            (result,) = await self._dataplane.score(parsed.batch, parsed.options, deadline)
        except GatewayError as error:
            if stream_index is not None:
                error.message = f"stream message {stream_index}: {error.message}"
            raise
        answer = encode_result(self._responses, result, received_ns)
        self._telemetry.record(method, (time.perf_counter_ns() - received_ns) / 1e9, (result,))
        return answer
