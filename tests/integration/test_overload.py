"""Shedding at the transport: beyond grpc.max_concurrent_calls, RESOURCE_EXHAUSTED at
once; beyond grpc.max_pending_calls (calls gRPC's core holds that the event loop has
not taken), gRPC's core refuses new calls with CANCELLED."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import transactions_from_table
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from tests.integration.serverproc import ServerProcess, start_server, write_config


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_repository: Path
) -> Iterator[ServerProcess]:
    config = write_config(
        tmp_path_factory.mktemp("overload"), model_repository, grpc={"max_concurrent_calls": 2}
    )
    running = start_server(config)
    yield running
    assert running.terminate() == 0, running.log()


def test_calls_beyond_the_limit_are_refused_and_the_rest_answered(server: ServerProcess) -> None:
    txns = transactions_from_table(generate(100, 51, SynthOptions()))

    async def run() -> tuple[grpc.StatusCode, list[str]]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            # Two open streams hold both slots while they stay open.
            streams = [stub.ScoreStream(timeout=30) for _ in range(2)]
            for i, stream in enumerate(streams):
                await stream.write(pb.ScoreRequest(transaction=txns[i]))
                await stream.read()
            try:
                await stub.Score(pb.ScoreRequest(transaction=txns[5]), timeout=10)
                refused = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                refused = error.code()
            for stream in streams:
                await stream.done_writing()
                assert await stream.code() == grpc.StatusCode.OK
            # Slots free again: answered.
            answers = [
                await stub.Score(pb.ScoreRequest(transaction=t), timeout=10) for t in txns[6:9]
            ]
            return refused, [a.transaction_id for a in answers]

    refused, answered = asyncio.run(run())
    assert refused == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert answered == [t.transaction_id for t in txns[6:9]]


@pytest.fixture(scope="module")
def tight_server(
    tmp_path_factory: pytest.TempPathFactory, model_repository: Path
) -> Iterator[ServerProcess]:
    config = write_config(
        tmp_path_factory.mktemp("pending"),
        model_repository,
        grpc={"max_pending_calls": 1, "max_pending_calls_hard": 2},
    )
    running = start_server(config)
    yield running
    assert running.terminate() == 0, running.log()


def test_a_burst_past_the_pending_bound_is_refused_at_once_and_the_rest_answered(
    tight_server: ServerProcess,
) -> None:
    txns = transactions_from_table(generate(300, 52, SynthOptions()))

    async def run() -> tuple[list[tuple[grpc.StatusCode, str]], list[str]]:
        async with grpc.aio.insecure_channel(tight_server.target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            await channel.channel_ready()

            async def one(t: pb.Transaction) -> tuple[grpc.StatusCode, str]:
                try:
                    reply = await stub.Score(pb.ScoreRequest(transaction=t), timeout=30)
                except grpc.aio.AioRpcError as error:
                    return error.code(), ""
                return grpc.StatusCode.OK, reply.transaction_id

            # 300 calls in one burst: the loop takes one call per turn, the rest wait
            # in gRPC's core, which holds 2 at most.
            burst = await asyncio.gather(*(one(t) for t in txns))
            after = [
                (await stub.Score(pb.ScoreRequest(transaction=t), timeout=10)).transaction_id
                for t in txns[:5]
            ]
            return burst, after

    burst, after = asyncio.run(run())
    codes = Counter(code for code, _ in burst)
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.CANCELLED}, codes
    # Every call the server took was answered, and answered for its own transaction.
    answered = [(tid, t.transaction_id) for (code, tid), t in zip(burst, txns, strict=True) if tid]
    assert answered and all(got == sent for got, sent in answered)
    # Past the burst the server answers as before: nothing stuck, nothing lost.
    assert after == [t.transaction_id for t in txns[:5]]
