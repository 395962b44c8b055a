"""The audit writer and sink: group commit, rotation, the full-queue policy, what each
event records, and the OpenTelemetry copy."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from prometheus_client import CollectorRegistry, generate_latest

from gateway.audit.chain import list_segments
from gateway.audit.otel_logs import OtelAuditLogs
from gateway.audit.records import RecordKind, hash_entity
from gateway.audit.settings import AuditSettings
from gateway.audit.sink import ChainAuditSink
from gateway.audit.verify import verify
from gateway.audit.writer import (
    AuditChainBusy,
    AuditEvent,
    AuditQueueFull,
    AuditWriter,
    AuditWriterFailed,
    now_ms,
)
from gateway.dataplane import FallbackReason, ScoreResult
from gateway.decisions import DecisionSource
from gateway.explain import Reason
from gateway.features.dispatch import resolve_implementation
from gateway.grpc.converters import batch_from_transactions
from gateway.grpc.requests import make_request_parser
from gateway.models.card import Approval
from riskwire.v1 import scoring_pb2 as pb
from router.routes import ArmRole, Decision, load_table
from router.store import RouteStore

KEY = b"writer-test-key-0123456789abcdef"


def settings(tmp_path: Path, **overrides: Any) -> AuditSettings:
    return AuditSettings(directory=tmp_path / "audit", key_file=tmp_path / "audit.key", **overrides)


def started(tmp_path: Path, **overrides: Any) -> AuditWriter:
    writer = AuditWriter(settings(tmp_path, **overrides), key=KEY)
    writer.start()
    return writer


def event(i: int, kind: RecordKind = "admin_refused") -> AuditEvent:
    return AuditEvent(kind, {"i": i})


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for segments in list_segments(tmp_path / "audit").values()
        for segment in segments
        for line in segment.path.read_bytes().splitlines()
    ]


def wait_until(condition: Callable[[], bool], limit_s: float = 10.0) -> None:
    """Wait for the writer thread to get somewhere (bounded, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "the writer thread did not get there"
        time.sleep(0.002)


class Blocker:
    """A queue item that holds the writer thread until released: a full queue on demand."""

    kind: RecordKind = "admin_refused"
    record_count = 1

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def expand(self, hash_entity: Callable[[str], str]) -> Iterator[tuple[int, dict[str, Any]]]:
        self.entered.set()
        self.release.wait(30)
        yield now_ms(), {"blocker": True}


def test_group_commit_fsyncs_every_n_records(tmp_path: Path) -> None:
    writer = started(tmp_path, fsync_every_records=10, fsync_interval_ms=600_000)
    assert writer.fsyncs == 1  # start() makes the segment_start durable
    for i in range(25):
        writer.submit(event(i))
    wait_until(lambda: writer.written == 25)
    # Two groups of ten are on disk; five wait for the interval, a flush or close.
    assert writer.committed == 20
    assert writer.fsyncs == 3
    assert writer.flush()
    assert writer.committed == 25 and writer.fsyncs == 4
    assert writer.committed_seq == 25  # segment_start is seq 0
    writer.close_blocking()


def test_group_commit_fsyncs_after_the_interval(tmp_path: Path) -> None:
    writer = started(tmp_path, fsync_every_records=100_000, fsync_interval_ms=20)
    for i in range(3):
        writer.submit(event(i))
    wait_until(lambda: writer.committed == 3)
    assert writer.fsyncs >= 2 and writer.committed_seq == 3
    writer.close_blocking()


def test_close_writes_and_fsyncs_everything_accepted(tmp_path: Path) -> None:
    writer = started(tmp_path, fsync_every_records=64)
    tickets = [writer.submit(event(i)) for i in range(2000)]
    assert tickets == list(range(1, 2001))
    asyncio.run(writer.close())
    stats = writer.stats()
    assert stats.accepted == stats.written == stats.committed == 2000
    assert [r["payload"]["i"] for r in records(tmp_path) if r["kind"] == "admin_refused"] == list(
        range(2000)
    )
    with pytest.raises(AuditWriterFailed, match="closed"):
        writer.submit(event(0))


def test_rotation_by_size_keeps_every_segment_under_the_limit(tmp_path: Path) -> None:
    writer = started(tmp_path, segment_max_bytes=4096)
    for i in range(100):
        writer.submit(event(i))
    writer.close_blocking()
    segments = list_segments(tmp_path / "audit")[0]
    assert len(segments) >= 5 and writer.stats().segments_started == len(segments)
    assert all(s.path.stat().st_size <= 4096 for s in segments)
    assert [s.index for s in segments] == list(range(1, len(segments) + 1))
    report = verify(tmp_path / "audit")
    assert report.ok and report.chains[0].records == 100 + len(segments)


def test_rotation_by_age_follows_the_clock(tmp_path: Path) -> None:
    now = [1_000_000.0]
    writer = AuditWriter(settings(tmp_path, segment_max_age_s=60), key=KEY, clock=lambda: now[0])
    writer.start()
    writer.submit(event(0))
    assert writer.flush()
    now[0] += 59
    writer.submit(event(1))
    assert writer.flush()
    assert len(list_segments(tmp_path / "audit")[0]) == 1
    now[0] += 2
    writer.submit(event(2))
    writer.close_blocking()
    first, second = list_segments(tmp_path / "audit")[0]
    last_of_first = json.loads(first.path.read_bytes().splitlines()[-1])
    start = json.loads(second.path.read_bytes().splitlines()[0])
    assert last_of_first["payload"] == {"i": 1}
    assert start["kind"] == "segment_start" and start["prev"] == last_of_first["digest"]
    assert start["ts_ms"] == 1_000_061_000
    assert verify(tmp_path / "audit").ok


def test_a_full_queue_waits_then_refuses_and_counts(tmp_path: Path) -> None:
    writer = started(tmp_path, queue_records=4, block_ms=20)
    blocker = Blocker()
    writer.submit(blocker)
    assert blocker.entered.wait(10)
    for i in range(4):
        writer.submit(event(i))
    assert writer.depth == 4
    with pytest.raises(AuditQueueFull):
        writer.submit(event(4))
    assert writer.queue_full == 1

    async def wait_in_vain() -> None:
        with pytest.raises(AuditQueueFull, match="stayed full for 20 ms"):
            await writer.submit_or_wait(event(5))

    asyncio.run(wait_in_vain())
    assert writer.queue_full == 2
    with pytest.raises(AuditQueueFull):
        writer.submit_blocking(event(6), timeout_ms=5)
    assert writer.queue_full == 3

    async def wait_for_room() -> None:
        waiting = asyncio.ensure_future(writer.submit_or_wait(event(7), timeout_ms=30_000))
        await asyncio.sleep(0)
        assert not waiting.done()
        blocker.release.set()  # the writer thread takes the queue and wakes us
        assert await waiting == 6

    asyncio.run(wait_for_room())
    writer.close_blocking()
    stats = writer.stats()
    assert stats.queue_full == 3 and stats.queue_full_by_kind == {"admin_refused": 3}
    assert stats.accepted == stats.committed == 6
    written = [r["payload"].get("i") for r in records(tmp_path) if r["kind"] == "admin_refused"]
    assert written == [None, 0, 1, 2, 3, 7]
    assert verify(tmp_path / "audit").ok


def test_a_batch_larger_than_the_queue_goes_in_when_the_queue_is_empty(tmp_path: Path) -> None:
    writer = started(tmp_path, queue_records=2)

    class Many:
        kind: RecordKind = "admin_refused"
        record_count = 5

        def expand(self, hash_entity: Callable[[str], str]) -> Iterator[tuple[int, dict[str, Any]]]:
            for i in range(5):
                yield now_ms(), {"i": i}

    writer.submit(Many())
    writer.close_blocking()
    assert writer.stats().committed == 5


def test_unserializable_and_failing_items_are_still_recorded(tmp_path: Path) -> None:
    writer = started(tmp_path)

    class Broken:
        kind: RecordKind = "model_load"
        record_count = 3

        def expand(self, hash_entity: Callable[[str], str]) -> Iterator[tuple[int, dict[str, Any]]]:
            yield now_ms(), {"ok": 1}
            raise RuntimeError("card unreadable")

    class Short:
        kind: RecordKind = "model_unload"
        record_count = 2

        def expand(self, hash_entity: Callable[[str], str]) -> Iterator[tuple[int, dict[str, Any]]]:
            yield now_ms(), {"ok": 2}

    writer.submit(AuditEvent("decision", {"score": float("nan"), "obj": object()}))
    writer.submit(Broken())
    writer.submit(Short())
    assert writer.flush()  # the counts add up although Short made one record too few
    writer.close_blocking()
    kinds = ("decision", "model_load", "model_unload")
    written = [r["payload"] for r in records(tmp_path) if r["kind"] in kinds]
    assert written[0]["error"] == "unserializable payload"
    assert written[1] == {"ok": 1}
    assert [p["detail"] for p in written[2:4]] == ["RuntimeError('card unreadable')"] * 2
    assert written[4] == {"ok": 2}
    assert written[5]["error"] == "the item produced fewer records than it declared"
    stats = writer.stats()
    assert stats.unserializable == 1 and stats.committed == 6 == stats.accepted
    assert verify(tmp_path / "audit").ok


def test_counters_are_prometheus_metrics(tmp_path: Path) -> None:
    writer = started(tmp_path)
    writer.submit(event(0))
    writer.close_blocking()
    registry = CollectorRegistry()
    registry.register(writer)
    text = generate_latest(registry).decode()
    assert "riskwire_audit_records_committed_total 1.0" in text
    assert "riskwire_audit_committed_seq 1.0" in text
    assert "riskwire_audit_writer_failed 0.0" in text


# -- the sink ------------------------------------------------------------------------


def transactions() -> list[pb.Transaction]:
    return [
        pb.Transaction(
            transaction_id=f"txn-{i}",
            account_id=f"acct-{i % 2}",
            card_id=f"card-{i}",
            merchant_id="m-1",
            merchant_category_code="5411",
            amount_minor=1000 + i,
            currency="EUR",
            country="DE",
            ip_country="DE",
            channel=pb.ECOMMERCE,
            timestamp_ms=1_764_000_000_000,
        )
        for i in range(3)
    ]


def results() -> list[ScoreResult]:
    common: dict[str, Any] = {
        "model_name": "fraud-gbdt",
        "model_version": 3,
        "arm": ArmRole.CHAMPION,
        "route": "cards",
        "config_version": 7,
    }
    return [
        ScoreResult("txn-0", 0.1, Decision.APPROVE, source=DecisionSource.MODEL, **common),
        ScoreResult(
            "txn-1",
            0.95,
            Decision.DECLINE,
            source=DecisionSource.MODEL,
            reason_codes=(Reason("R01", "amount_usd", 0.31, "a large amount"),),
            **common,
        ),
        ScoreResult(
            "txn-2",
            0.5,
            Decision.REVIEW,
            source=DecisionSource.FALLBACK,
            fallback_reason=FallbackReason.TIMEOUT,
            **common,
        ),
    ]


def _native_available() -> bool:
    try:
        return resolve_implementation("native") == "native"
    except Exception:
        return False


@pytest.mark.parametrize("wire", ["python", "native"])
def test_decisions_record_one_line_per_transaction(tmp_path: Path, wire: str) -> None:
    if wire == "native" and not _native_available():
        pytest.skip("the native extension is not built")
    if wire == "python":
        batch = batch_from_transactions(transactions())
    else:
        parser = make_request_parser("native", 64)
        data = pb.ScoreBatchRequest(transactions=transactions()).SerializeToString()
        batch = parser.score_batch_request(data).batch
    writer = started(tmp_path)
    sink = ChainAuditSink(writer)
    item = sink.decisions_item(batch, results(), latency_us=850)
    assert sink.offer_decisions(item)
    writer.close_blocking()
    decisions = [r["payload"] for r in records(tmp_path) if r["kind"] == "decision"]
    assert len(decisions) == 3
    assert decisions[2] == {
        "transaction_id": hash_entity(KEY, "txn-2"),
        "account_id": hash_entity(KEY, "acct-0"),
        "card_id": hash_entity(KEY, "card-2"),
        "model": "fraud-gbdt",
        "version": 3,
        "route": "cards",
        "arm": "champion",
        "config_version": 7,
        "score": 0.5,
        "decision": "REVIEW",
        "decision_source": "FALLBACK",
        "fallback_reason": "TIMEOUT",
        "latency_us": 850,
        "inputs": {
            "amount_minor": 1002,
            "currency": "EUR",
            "merchant_category_code": "5411",
            "channel": "ECOMMERCE",
            "country": "DE",
        },
    }
    assert [d["decision"] for d in decisions] == ["APPROVE", "DECLINE", "REVIEW"]
    assert decisions[1]["reason_codes"] == [
        {"code": "R01", "feature": "amount_usd", "contribution": 0.31}
    ]
    assert "reason_codes" not in decisions[0]


def test_record_decisions_raises_queue_full_after_block_ms(tmp_path: Path) -> None:
    writer = started(tmp_path, queue_records=2, block_ms=5)
    sink = ChainAuditSink(writer)
    blocker = Blocker()
    writer.submit(blocker)
    assert blocker.entered.wait(10)
    item = sink.decisions_item(batch_from_transactions(transactions()), results(), 10)
    writer.submit(event(0))
    assert not sink.offer_decisions(item)
    assert writer.queue_full == 0  # offering counts nothing: the caller waits next

    async def call() -> None:
        with pytest.raises(AuditQueueFull):
            await sink.record_decisions(item)

    asyncio.run(call())
    assert writer.stats().queue_full_by_kind == {"decision": 3}
    blocker.release.set()
    writer.close_blocking()


def test_a_config_change_is_durable_before_it_takes_effect(tmp_path: Path) -> None:
    writer = started(tmp_path, fsync_interval_ms=600_000, fsync_every_records=1000)
    sink = ChainAuditSink(writer)
    text = """
routes:
  - name: cards
    salt: s1
    arms: [{model: fraud-gbdt, version: 3, weight: 100}]
"""
    store = RouteStore(load_table(text), listener=sink.config_changed, actor="startup")
    # Returned: the record is fsynced although neither the count nor the interval is due.
    assert writer.committed == writer.accepted == 1
    store.replace(load_table(text.replace("s1", "s2")), actor="alice", reason="new salt")
    assert writer.committed == 2
    writer.close_blocking()
    changes = [r["payload"] for r in records(tmp_path) if r["kind"] == "config_change"]
    assert [c["config_version"] for c in changes] == [1, 2]
    assert changes[1]["actor"] == "alice" and changes[1]["reason"] == "new salt"
    assert changes[1]["change"] == "apply" and changes[1]["previous_version"] == 1
    assert changes[1]["table"]["routes"][0]["salt"] == "s2"
    assert changes[0]["table_sha256"] != changes[1]["table_sha256"]
    # A change that cannot be recorded is refused: version 2 stays in force.
    with pytest.raises(AuditWriterFailed):
        store.replace(load_table(text.replace("s1", "s3")), actor="bob")
    assert store.current.config_version == 2


def test_admin_shadow_and_model_events(tmp_path: Path) -> None:
    writer = started(tmp_path)
    sink = ChainAuditSink(writer)
    sink.admin_refused("/riskwire.admin.v1.Admin/ApplyRoutes", "ipv4:10.0.0.9:5555", "bad token")
    primary = results()[1]
    assert sink.shadow_score(primary, {"account_id": "acct-1"}, "fraud-mlp", 1, 0.42, "APPROVE")
    model_dir = tmp_path / "models" / "fraud-gbdt" / "3"
    model_dir.mkdir(parents=True)
    (model_dir / "card.yaml").write_text("name: fraud-gbdt\n")
    (model_dir / "model.onnx").write_bytes(b"onnx-bytes")
    card = SimpleNamespace(
        name="fraud-gbdt",
        version=3,
        kind="gbdt",
        owner="risk-ml",
        approval=Approval(status="approved", approver="carol", date="2026-11-01"),
    )
    sink.model_loaded(SimpleNamespace(card=card, path=model_dir), actor="ops")  # type: ignore[arg-type]
    sink.model_unloaded("fraud-gbdt", 2, actor="ops", reason="retired")
    sink.model_approval("fraud-mlp", 1, "approved", "dave", "2026-11-20", actor="governance")
    writer.close_blocking()
    by_kind = {r["kind"]: r["payload"] for r in records(tmp_path)}
    assert by_kind["admin_refused"] == {
        "method": "/riskwire.admin.v1.Admin/ApplyRoutes",
        "peer": "ipv4:10.0.0.9:5555",
        "reason": "bad token",
    }
    shadow = by_kind["shadow_score"]
    assert shadow["transaction_id"] == hash_entity(KEY, "txn-1")
    assert shadow["account_id"] == hash_entity(KEY, "acct-1")
    assert (shadow["model"], shadow["score"], shadow["primary_decision"]) == (
        "fraud-mlp",
        0.42,
        "DECLINE",
    )
    load = by_kind["model_load"]
    assert load["approval"] == {"status": "approved", "approver": "carol", "date": "2026-11-01"}
    assert load["model_sha256"] == hashlib.sha256(b"onnx-bytes").hexdigest()
    assert by_kind["model_unload"]["reason"] == "retired"
    assert by_kind["model_approval"]["approver"] == "dave"
    assert verify(tmp_path / "audit").ok


# -- OpenTelemetry ---------------------------------------------------------------------


def test_each_record_is_also_an_otel_log_record(tmp_path: Path) -> None:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    writer = AuditWriter(
        settings(tmp_path, fsync_every_records=1000, fsync_interval_ms=600_000),
        key=KEY,
        otel=OtelAuditLogs(provider),
    )
    writer.start()
    assert len(exporter.get_finished_logs()) == 1  # the segment_start, fsynced by start()
    writer.submit(AuditEvent("decision", {"score": 0.3}, {"account_id": "acct-secret"}))
    wait_until(lambda: writer.written == 1)
    # Written, not yet fsynced: not exported, the copy never runs ahead of the disk.
    assert len(exporter.get_finished_logs()) == 1
    writer.close_blocking()
    lines = [
        line.decode()
        for segment in list_segments(tmp_path / "audit")[0]
        for line in segment.path.read_bytes().splitlines()
    ]
    exported = exporter.get_finished_logs()
    assert [e.log_record.body for e in exported] == lines
    decision = exported[-1].log_record
    assert decision.attributes is not None
    assert decision.attributes["riskwire.audit.kind"] == "decision"
    assert decision.attributes["riskwire.audit.seq"] == 1
    assert decision.timestamp == json.loads(lines[-1])["ts_ms"] * 1_000_000
    assert "acct-secret" not in str(decision.body)


def test_otel_logs_are_off_without_an_endpoint() -> None:
    assert OtelAuditLogs.from_environment({}) is None
    otel = OtelAuditLogs.from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"})
    assert otel is not None
    otel.shutdown()


def test_a_second_writer_of_the_same_chain_is_refused(tmp_path: Path) -> None:
    first = AuditWriter(settings(tmp_path))
    first.start()
    try:
        with pytest.raises(AuditChainBusy, match="w000"):
            AuditWriter(settings(tmp_path)).start()
        other_worker = AuditWriter(settings(tmp_path, worker_id=1))
        other_worker.start()  # another worker's chain in the same directory is fine
        other_worker.close_blocking()
    finally:
        first.close_blocking()
    again = AuditWriter(settings(tmp_path))  # the lock went with the first writer
    again.start()
    again.close_blocking()
    assert verify(tmp_path / "audit").ok
