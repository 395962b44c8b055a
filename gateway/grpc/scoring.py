"""riskwire.v1.Scoring: convert, call the data plane, convert back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway.dataplane import DataPlane, ScoreOptions, check_batch_size
from gateway.errors import GatewayError
from gateway.grpc.converters import batch_from_transactions, caller_deadline, response_from_result
from gateway.grpc.errors import stream_errors, unary_errors
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

STREAM_WINDOW = 256
"""Requests of one stream scored concurrently; more wait (flow control upstream)."""


class ScoringServicer(pb_grpc.ScoringServicer):
    def __init__(self, dataplane: DataPlane, max_batch_transactions: int) -> None:
        self._dataplane = dataplane
        self._max_batch = max_batch_transactions

    @unary_errors
    async def Score(self, request: pb.ScoreRequest, context: Context) -> pb.ScoreResponse:
        return await self._score_one(request, caller_deadline(context), time.perf_counter_ns())

    @unary_errors
    async def ScoreBatch(
        self, request: pb.ScoreBatchRequest, context: Context
    ) -> pb.ScoreBatchResponse:
        received_ns = time.perf_counter_ns()
        check_batch_size(len(request.transactions), self._max_batch)
        batch = batch_from_transactions(request.transactions)
        options = ScoreOptions(explain=request.explain, route=request.route, realtime=False)
        results = await self._dataplane.score(batch, options, caller_deadline(context))
        return pb.ScoreBatchResponse(
            responses=[response_from_result(r, received_ns) for r in results]
        )

    @stream_errors
    async def ScoreStream(
        self, request_iterator: AsyncIterator[pb.ScoreRequest], context: Context
    ) -> AsyncIterator[pb.ScoreResponse]:
        # Pipelined: score requests as they arrive, answer in request order.
        deadline = caller_deadline(context)
        pending: asyncio.Queue[asyncio.Task[pb.ScoreResponse] | None] = asyncio.Queue(STREAM_WINDOW)

        async def read() -> None:
            try:
                index = 0
                async for request in request_iterator:
                    task = asyncio.ensure_future(
                        self._score_one(request, deadline, time.perf_counter_ns(), index)
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
        request: pb.ScoreRequest,
        deadline: float | None,
        received_ns: int,
        stream_index: int | None = None,
    ) -> pb.ScoreResponse:
        try:
            batch = batch_from_transactions([request.transaction], single=True)
            options = ScoreOptions(explain=request.explain, route=request.route)
            (result,) = await self._dataplane.score(batch, options, deadline)
        except GatewayError as error:
            if stream_index is not None:
                error.message = f"stream message {stream_index}: {error.message}"
            raise
        return response_from_result(result, received_ns)
