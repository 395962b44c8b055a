"""The floor: a bare grpc.aio server on uvloop that answers Scoring calls with no work.

It parses each request (so it pays the same protobuf decode a real server pays at
least) and returns a fixed ScoreResponse carrying the request's transaction_id.
riskwire's throughput and server CPU per request are quoted against this server.

Run from the repository root::

    python -m benchmarks.load.floor_server [--host 127.0.0.1] [--port 0]

Prints ``PORT <n>`` on stdout once serving; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc
import uvloop

from riskwire.v1 import scoring_pb2, scoring_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]

# Every field a real answer carries, so the reply costs as many bytes to encode.
_FIXED = scoring_pb2.ScoreResponse(
    score=0.0123,
    decision=scoring_pb2.APPROVE,
    model_name="floor",
    model_version="0",
    arm=scoring_pb2.CHAMPION,
    decision_source=scoring_pb2.MODEL,
    route="floor",
    config_version=1,
    audit_id="floor-0000000000000000",
    server_latency_us=0,
)


def _reply(transaction: scoring_pb2.Transaction) -> scoring_pb2.ScoreResponse:
    response = scoring_pb2.ScoreResponse()
    response.CopyFrom(_FIXED)
    response.transaction_id = transaction.transaction_id
    return response


class FloorScoring(scoring_pb2_grpc.ScoringServicer):
    """Scoring with no model, no routing, no telemetry: the gRPC framework's cost alone."""

    async def Score(
        self, request: scoring_pb2.ScoreRequest, context: Context
    ) -> scoring_pb2.ScoreResponse:
        return _reply(request.transaction)

    async def ScoreBatch(
        self, request: scoring_pb2.ScoreBatchRequest, context: Context
    ) -> scoring_pb2.ScoreBatchResponse:
        return scoring_pb2.ScoreBatchResponse(responses=[_reply(t) for t in request.transactions])

    async def ScoreStream(
        self,
        request_iterator: AsyncIterator[scoring_pb2.ScoreRequest],
        context: Context,
    ) -> AsyncIterator[scoring_pb2.ScoreResponse]:
        async for request in request_iterator:
            yield _reply(request.transaction)

    async def ReportOutcome(
        self, request: scoring_pb2.ReportOutcomeRequest, context: Context
    ) -> scoring_pb2.ReportOutcomeResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the floor keeps no predictions")
        raise AssertionError("unreachable")


async def serve(host: str, port: int, max_pending: tuple[int, int] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, announcing the bound port on stdout.

    ``max_pending``: gRPC core's bounds on received calls the loop has not taken
    (riskwire's ``grpc.max_pending_calls`` and ``_hard``); None keeps gRPC's defaults.
    """
    options = (
        []
        if max_pending is None
        else [
            ("grpc.server.max_pending_requests", max_pending[0]),
            ("grpc.server.max_pending_requests_hard_limit", max_pending[1]),
        ]
    )
    server = grpc.aio.server(options=options)
    scoring_pb2_grpc.add_ScoringServicer_to_server(FloorScoring(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The readiness signal callers wait on: the port is bound and the server started.
    print(f"PORT {bound}", flush=True)
    await stop.wait()
    await server.stop(grace=1.0)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve on uvloop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--max-pending-calls",
        type=int,
        nargs=2,
        metavar=("SOFT", "HARD"),
        help="gRPC core's bounds on calls not yet taken (default: gRPC's, 1000 3000)",
    )
    args = parser.parse_args(argv)
    pending = None if args.max_pending_calls is None else tuple(args.max_pending_calls)
    uvloop.run(serve(args.host, args.port, pending))


if __name__ == "__main__":
    main()
