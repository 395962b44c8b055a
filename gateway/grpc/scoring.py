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
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from gateway.dataplane import DataPlane, GroupStages, ScoreResult
from gateway.errors import GatewayError
from gateway.grpc.converters import caller_deadline, encode_result
from gateway.grpc.errors import STATUS_OF_KIND, stream_errors, unary_errors
from gateway.grpc.outcomes import outcome_method_handler
from gateway.grpc.requests import RequestParser, ScoringRequest
from gateway.grpc.responses import ResponseWriter
from gateway.telemetry.serving import ScoringTelemetry
from gateway.telemetry.tracing import CallTracer
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
        tracer: CallTracer | None = None,
    ) -> None:
        self._dataplane = dataplane
        self._requests = requests
        self._responses = responses
        self._telemetry = telemetry
        self._tracer = tracer
        self._timed = telemetry.enabled or tracer is not None
        """Stamp the stages: for the histograms, the traces or both."""

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The service's methods on bytes in and bytes out."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Score": grpc.unary_unary_rpc_method_handler(self.Score),
                "ScoreBatch": grpc.unary_unary_rpc_method_handler(self.ScoreBatch),
                "ScoreStream": grpc.stream_stream_rpc_method_handler(self.ScoreStream),
                "ReportOutcome": outcome_method_handler(self._dataplane.outcomes),
            },
        )

    @unary_errors
    async def Score(self, request: bytes, context: Context) -> bytes:
        return await self._score_one(
            "Score", request, context, caller_deadline(context), time.perf_counter_ns()
        )

    @unary_errors
    async def ScoreBatch(self, request: bytes, context: Context) -> bytes:
        return await self._score(
            "ScoreBatch",
            request,
            context,
            caller_deadline(context),
            time.perf_counter_ns(),
            self._requests.score_batch_request,
            self._batch_answer,
        )

    def _batch_answer(self, results: list[ScoreResult], received_ns: int) -> bytes:
        write = self._responses
        return write.score_batch_response([encode_result(write, r, received_ns) for r in results])

    def _one_answer(self, results: list[ScoreResult], received_ns: int) -> bytes:
        (result,) = results
        return encode_result(self._responses, result, received_ns)

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
                            "ScoreStream",
                            request,
                            context,
                            deadline,
                            time.perf_counter_ns(),
                            index,
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
        context: Context,
        deadline: float | None,
        received_ns: int,
        stream_index: int | None = None,
    ) -> bytes:
        return await self._score(
            method,
            request,
            context,
            deadline,
            received_ns,
            self._requests.score_request,
            self._one_answer,
            stream_index,
        )

    async def _score(
        self,
        method: str,
        request: bytes,
        context: Context,
        deadline: float | None,
        received_ns: int,
        parse: Callable[[bytes], ScoringRequest],
        answer_of: Callable[[list[ScoreResult], int], bytes],
        stream_index: int | None = None,
    ) -> bytes:
        """Parse, score and answer one call (a stream message is one), timing its
        stages for the histograms and traces when either is on."""
        timed = self._timed
        groups: list[GroupStages] | None = [] if timed else None
        stamps = [received_ns, 0, 0]
        if timed:
            self._telemetry.in_flight += 1
        try:
            parsed = parse(request)
            if timed:
                stamps[1] = time.perf_counter_ns()
            results = await self._dataplane.score(parsed.batch, parsed.options, deadline, groups)
            if timed:
                stamps[2] = time.perf_counter_ns()
            answer = answer_of(results, received_ns)
        except GatewayError as error:
            _name_message(error, stream_index)
            if groups is not None:
                self._failed(method, context, stamps, groups, error)
            raise
        finally:
            if timed:
                self._telemetry.in_flight -= 1
        if groups is not None:
            self._answered(method, context, stamps, groups, results)
        return answer

    def _answered(
        self,
        method: str,
        context: Context,
        stamps: list[int],
        groups: list[GroupStages],
        results: Sequence[ScoreResult],
    ) -> None:
        answered_ns = time.perf_counter_ns()
        received_ns, parsed_ns, scored_ns = stamps
        if self._telemetry.enabled:
            self._telemetry.record(
                method, received_ns, parsed_ns, scored_ns, answered_ns, groups, results
            )
        if self._tracer is not None:
            self._tracer.trace(
                method,
                context.invocation_metadata(),
                received_ns,
                parsed_ns,
                scored_ns,
                answered_ns,
                groups,
                results,
            )

    def _failed(
        self,
        method: str,
        context: Context,
        stamps: list[int],
        groups: list[GroupStages],
        error: GatewayError,
    ) -> None:
        code = STATUS_OF_KIND[error.kind].name
        if self._telemetry.enabled:
            self._telemetry.record_error(method, code)
        if self._tracer is not None:
            received_ns, parsed_ns, scored_ns = stamps
            self._tracer.trace(
                method,
                context.invocation_metadata(),
                received_ns,
                parsed_ns,
                scored_ns,
                time.perf_counter_ns(),
                groups,
                (),
                error=(code, error.message),
            )


def _name_message(error: GatewayError, stream_index: int | None) -> None:
    if stream_index is not None:
        error.message = f"stream message {stream_index}: {error.message}"
