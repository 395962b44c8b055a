"""Stage latencies, counters and traces of a real server, read the way operators read them.

Metrics: the /metrics page a Prometheus scrapes (tests/integration/test_prometheus.py
reads the same figures through a real Prometheus). Traces: a real OTLP/gRPC receiver
on 127.0.0.1 (the opentelemetry-proto collector service) that the server exports to
through the standard OTEL_* variables; the test is the caller and sends W3C
``traceparent`` metadata.
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client.parser import text_string_to_metric_families

from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import transactions_from_table
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from tests.integration.serverproc import ServerProcess, start_server, write_config

ROUTES = """
routes:
  - name: tight
    match: {channel: [NO_SUCH_CHANNEL]}
    salt: tight
    deadline_ms: 0.001
    arms: [{model: fraud-gbdt, version: 1, weight: 100}]
    fallback: {on: [timeout], decision: REVIEW}
  - name: default
    salt: telemetry
    deadline_ms: 5000
    arms:
      - {model: fraud-gbdt, version: 1, weight: 70, role: champion}
      - {model: fraud-mlp, version: 1, weight: 30, role: challenger}
"""

STAGES = ("parse", "encode", "queue", "infer", "respond", "total")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self.lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, int]]:
    receiver = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, port
    server.stop(0)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    model_repository: Path,
    collector: tuple[Collector, int],
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("telemetry")
    routes = directory / "routes.yaml"
    routes.write_text(ROUTES)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector[1]}",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "riskwire-test",
    }
    running = start_server(
        write_config(directory, model_repository, routes_file=str(routes)), env=env
    )
    yield running
    assert running.terminate() == 0, running.log()


def _metrics(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _sum(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **want: str
) -> float:
    return sum(
        value
        for (sample, labels), value in samples.items()
        if sample == name and all(dict(labels).get(k) == v for k, v in want.items())
    )


def test_stage_histograms_and_counters_count_every_call(server: ServerProcess) -> None:
    txns = transactions_from_table(generate(400, 21, SynthOptions()))
    before = _metrics(server)
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.ScoringStub(channel)
        answers = [stub.Score(pb.ScoreRequest(transaction=t), timeout=10) for t in txns[:200]]
        stub.ScoreBatch(pb.ScoreBatchRequest(transactions=txns[200:264]), timeout=30)
        for t in txns[264:274]:
            stub.Score(pb.ScoreRequest(transaction=t, route="tight"), timeout=10)
        bad = pb.Transaction()
        bad.CopyFrom(txns[300])
        bad.amount_minor = -1
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                stub.Score(pb.ScoreRequest(transaction=bad), timeout=10)
    after = _metrics(server)

    def delta(name: str, **labels: str) -> float:
        return _sum(after, name, **labels) - _sum(before, name, **labels)

    by_arm = {
        arm: sum(1 for a in answers if a.model_name == model)
        for arm, model in (("champion", "fraud-gbdt"), ("challenger", "fraud-mlp"))
    }
    assert by_arm["champion"] and by_arm["challenger"]  # both arms met
    for arm, model in (("champion", "fraud-gbdt"), ("challenger", "fraud-mlp")):
        score_calls = delta(
            "riskwire_requests_total", method="Score", route="default", arm=arm, model=model
        )
        assert score_calls == by_arm[arm]
        for stage in STAGES:
            count = delta(
                "riskwire_stage_duration_seconds_count",
                route="default",
                model=model,
                version="1",
                arm=arm,
                stage=stage,
            )
            # Score calls once each, plus the batch call once for each arm it touched.
            assert by_arm[arm] <= count <= by_arm[arm] + 1, (arm, stage, count)
    total_s = delta("riskwire_stage_duration_seconds_sum", route="default", stage="total")
    parts_s = sum(
        delta("riskwire_stage_duration_seconds_sum", route="default", stage=stage)
        for stage in ("parse", "encode", "queue", "infer", "respond")
    )
    assert 0 < parts_s <= total_s  # stages lie inside the call
    assert delta("riskwire_requests_total", method="ScoreBatch") == 64
    assert delta("riskwire_fallbacks_total", route="tight", reason="TIMEOUT") == 10
    assert delta("riskwire_requests_total", route="tight", decision_source="FALLBACK") == 10
    assert delta("riskwire_errors_total", method="Score", code="INVALID_ARGUMENT") == 3
    assert delta("riskwire_batch_rows_total", model="fraud-gbdt", version="1") >= by_arm["champion"]
    assert _sum(after, "riskwire_batch_size_count", model="fraud-gbdt") == _sum(
        after, "riskwire_batches_total", model="fraud-gbdt"
    )
    assert _sum(after, "riskwire_inflight_requests") == 0


def test_the_started_server_froze_its_startup_objects_and_times_collections(
    server: ServerProcess,
) -> None:
    samples = _metrics(server)
    # gc_freeze (on by default): models, sessions and modules are out of the
    # collector's reach, so a full collection does not walk them mid-traffic.
    assert _sum(samples, "riskwire_gc_frozen_objects") > 10_000
    # The collection made just before the freeze was timed like any other.
    assert _sum(samples, "riskwire_gc_collections_total", generation="2") >= 1
    assert _sum(samples, "riskwire_gc_pause_seconds_total", generation="2") > 0
    assert _sum(samples, "riskwire_gc_max_pause_seconds", generation="2") > 0


def _wait_for_spans(receiver: Collector, trace_id: bytes, at_least: int) -> list[trace_pb2.Span]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with receiver.lock:
            spans = [s for s in receiver.spans if s.trace_id == trace_id]
        if len(spans) >= at_least:
            return spans
        time.sleep(0.05)
    raise AssertionError(f"{len(spans)} spans of the trace arrived, wanted {at_least}")


def test_a_call_is_one_span_per_stage_under_the_callers_trace(
    server: ServerProcess, collector: tuple[Collector, int]
) -> None:
    receiver, _ = collector
    txn = transactions_from_table(generate(100, 22, SynthOptions()))[0]
    metadata = (("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01"),)
    with grpc.insecure_channel(server.target) as channel:
        answer = pb_grpc.ScoringStub(channel).Score(
            pb.ScoreRequest(transaction=txn), timeout=10, metadata=metadata
        )
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(5):
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    spans = _wait_for_spans(receiver, bytes.fromhex(TRACE_ID), 6)
    (call,) = [s for s in spans if s.name == "riskwire.v1.Scoring/Score"]
    assert call.parent_span_id == bytes.fromhex(PARENT_SPAN)
    assert call.kind == trace_pb2.Span.SPAN_KIND_SERVER
    attributes = {a.key: a.value for a in call.attributes}
    assert attributes["riskwire.model"].string_value == answer.model_name
    assert attributes["riskwire.route"].string_value == "default"
    children = {s.name: s for s in spans if s.parent_span_id == call.span_id}
    assert set(children) == {"parse", "encode", "queue", "infer", "respond"}
    ordered = [children[n] for n in ("parse", "encode", "queue", "infer", "respond")]
    for earlier, later in itertools.pairwise(ordered):
        assert earlier.end_time_unix_nano <= later.start_time_unix_nano
    assert call.start_time_unix_nano <= ordered[0].start_time_unix_nano
    assert ordered[-1].end_time_unix_nano <= call.end_time_unix_nano
    with receiver.lock:
        names = {s.name for s in receiver.spans}
    assert not any("Health" in n for n in names)  # health calls are not traced


def test_a_refused_call_is_an_error_span(
    server: ServerProcess, collector: tuple[Collector, int]
) -> None:
    receiver, _ = collector
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    txn = transactions_from_table(generate(100, 23, SynthOptions()))[0]
    txn.currency = "XYZ"
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError):
        pb_grpc.ScoringStub(channel).Score(
            pb.ScoreRequest(transaction=txn),
            timeout=10,
            metadata=(("traceparent", f"00-{trace_id}-b7ad6b7169203331-01"),),
        )
    (call,) = _wait_for_spans(receiver, bytes.fromhex(trace_id), 1)[:1]
    assert call.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert "INVALID_ARGUMENT" in call.status.message
