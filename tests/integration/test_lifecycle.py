"""Health, readiness, metrics, admin auth, drain on SIGTERM and worker processes."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from gateway.data.synth import SynthOptions, generate
from gateway.features import dispatch
from gateway.features.columns import transactions_from_table
from gateway.telemetry.histogram import score_edges
from riskwire.admin.v1 import admin_pb2, admin_pb2_grpc
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from tests.integration.serverproc import ServerProcess, start_server, write_config


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_repository: Path
) -> Iterator[ServerProcess]:
    running = start_server(write_config(tmp_path_factory.mktemp("life"), model_repository))
    yield running
    assert running.terminate() == 0, running.log()


def test_health_readiness_and_metrics(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "riskwire.v1.Scoring", "inference.GRPCInferenceService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING, service
        txns = transactions_from_table(generate(100, 3, SynthOptions()))[:4]
        stub = pb_grpc.ScoringStub(channel)
        answer = stub.Score(pb.ScoreRequest(transaction=txns[0]), timeout=10)
        stub.ScoreBatch(pb.ScoreBatchRequest(transactions=txns[1:]), timeout=10)
    assert _get(server.metrics_port, "/healthz")[0] == 200
    assert _get(server.metrics_port, "/readyz")[0] == 200
    assert _get(server.metrics_port, "/nope")[0] == 404
    status, text = _get(server.metrics_port, "/metrics")
    assert status == 200
    assert _metric(text, "riskwire_batch_rows_total") >= 1
    # Every answered call is in the latency histogram of its method, every model score in
    # its model's score histogram (this module's server took no other scoring calls yet).
    samples = _samples(text)
    latency_count = "riskwire_server_latency_seconds_count"
    assert samples[(latency_count, (("method", "Score"),))] == 1
    assert samples[(latency_count, (("method", "ScoreBatch"),))] == 1
    model = (("model", answer.model_name), ("version", answer.model_version))
    assert samples[("riskwire_model_score_count", model)] == 4
    le = repr(next(edge for edge in score_edges() if answer.score <= edge))
    assert samples[("riskwire_model_score_bucket", (("le", le), *model))] >= 1


def test_reflection_lists_the_data_plane_services(server: ServerProcess) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {service.name for service in reply.list_services_response.service}
    assert {
        "riskwire.v1.Scoring",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
    } <= names
    assert "riskwire.admin.v1.Admin" not in names


def test_admin_needs_the_token(server: ServerProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.admin_port}") as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as caught:
            admin.GetStatus(
                admin_pb2.GetStatusRequest(), timeout=5, metadata=[("authorization", "Bearer no")]
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        status = admin.GetStatus(
            admin_pb2.GetStatusRequest(),
            timeout=5,
            metadata=[("authorization", f"Bearer {server.admin_token}")],
        )
    # The server reports what this build and environment resolve to.
    expected = dispatch.resolve_implementation("auto")
    assert (status.encoder, status.wire) == (expected, expected)
    assert {(m.name, m.version) for m in status.models} >= {("fraud-gbdt", "1"), ("fraud-mlp", "1")}
    assert status.config_version == 1


def test_admin_is_not_served_on_the_data_port(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            admin.GetStatus(
                admin_pb2.GetStatusRequest(),
                timeout=5,
                metadata=[("authorization", f"Bearer {server.admin_token}")],
            )
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_sigterm_drains_calls_in_flight(tmp_path: Path, model_repository: Path) -> None:
    """Calls queued when SIGTERM arrives are all answered by the model; none is lost."""
    # A long batching window holds the calls in the queue, where /metrics can see them;
    # a long route budget keeps them from turning into timeout fallbacks meanwhile.
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "routes:\n  - {name: default, salt: s, deadline_ms: 60000,\n"
        "     arms: [{model: fraud-gbdt, version: 1, weight: 100}]}\n"
    )
    config = write_config(
        tmp_path,
        model_repository,
        batching={"max_batch": 64, "max_delay_us": 1_000_000},
        drain_grace_s=20.0,
        routes_file=str(routes),
    )
    server = start_server(config)
    txns = transactions_from_table(generate(100, 5, SynthOptions()))
    calls = 24
    signalled: list[bool] = []

    async def run() -> list[pb.ScoreResponse]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            tasks = [
                asyncio.ensure_future(stub.Score(pb.ScoreRequest(transaction=t), timeout=30))
                for t in txns[:calls]
            ]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                _, text = await asyncio.to_thread(_get, server.metrics_port, "/metrics")
                if _metric(text, "riskwire_queue_rows") >= calls:
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError("calls never reached the queue")
            server.proc.send_signal(signal.SIGTERM)
            signalled.append(True)
            return list(await asyncio.gather(*tasks))

    try:
        responses = asyncio.run(run())
    finally:
        code = server.terminate(already_signalled=bool(signalled))
    assert code == 0, server.log()
    assert len(responses) == calls
    assert [r.transaction_id for r in responses] == [t.transaction_id for t in txns[:calls]]
    assert all(r.decision_source == pb.MODEL for r in responses)


def test_two_workers_share_the_port(tmp_path: Path, model_repository: Path) -> None:
    # No token file: the server makes one in its state dir, and both workers must use it.
    config = write_config(tmp_path, model_repository, admin={"token_file": None})
    server = start_server(config, "--workers", "2")
    server.admin_token = (tmp_path / "state" / "admin.token").read_text().strip()
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 60
        # SO_REUSEPORT spreads new connections across the workers by address hash.
        while len(pids) < 2 and time.monotonic() < deadline:
            with grpc.insecure_channel(f"127.0.0.1:{server.admin_port}") as channel:
                status = admin_pb2_grpc.AdminStub(channel).GetStatus(
                    admin_pb2.GetStatusRequest(),
                    timeout=5,
                    metadata=[("authorization", f"Bearer {server.admin_token}")],
                )
                pids.add(status.worker_pid)
        assert len(pids) == 2
        assert server.proc.pid not in pids
        txn = transactions_from_table(generate(100, 3, SynthOptions()))[0]
        with grpc.insecure_channel(server.target) as channel:
            reply = pb_grpc.ScoringStub(channel).Score(pb.ScoreRequest(transaction=txn), timeout=10)
        assert reply.decision_source == pb.MODEL
    finally:
        assert server.terminate() == 0, server.log()
