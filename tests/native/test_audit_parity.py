"""Native audit sealing (native/cpp/audit.cpp) against its Python reference.

Every byte matters: a verifier recomputes each digest from the line, so one byte of
difference would be a broken chain. Hypothesis draws the decision's every field (any
text, lone surrogates included, NaN and infinities, ints past 64 bits, values of the
wrong type) and checks that the native code writes exactly what the reference writes,
and declines (None) exactly where the reference does not take its direct path, so
that the reference then writes, or refuses, the record as before.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from gateway.audit import records
from gateway.audit import writer as writer_module
from gateway.audit.chain import list_segments
from gateway.audit.otel_logs import OtelAuditLogs
from gateway.audit.records import (
    ENTITY_HASH_HEX,
    GENESIS,
    CanonicalJSON,
    EntityHasher,
    canonical,
    hash_entity,
    seal,
)
from gateway.audit.settings import AuditSettings
from gateway.audit.sink import ChainAuditSink, DecisionRecords
from gateway.audit.verify import verify
from gateway.audit.writer import AuditWriter
from gateway.dataplane import FallbackReason, ScoreResult, TransactionBatch
from gateway.decisions import DecisionSource
from gateway.explain import Reason
from router.routes import ArmRole, Decision
from tests.native.audit_reference import direct_payload, python_seal, python_seal_lines
from tests.native.strategies import needs_native

pytestmark = needs_native

KEY = b"parity-key-0123456789abcdef"

texts = st.text(st.characters(exclude_categories=()), max_size=24)  # lone surrogates too
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
ints = st.integers(min_value=-(2**70), max_value=2**70)
# What a caller bug could hand over instead: the native code must decline it.
odd = st.none() | st.booleans() | floats | st.binary(max_size=4)

reasons = st.builds(Reason, texts, texts, floats | odd, texts)
results = st.builds(
    ScoreResult,
    transaction_id=texts | odd,
    score=floats | ints,
    decision=st.sampled_from(list(Decision)),
    model_name=texts,
    model_version=ints | odd,
    arm=st.sampled_from(list(ArmRole)),
    source=st.sampled_from(list(DecisionSource)),
    route=texts,
    config_version=ints,
    fallback_reason=st.none() | st.sampled_from(list(FallbackReason)),
    reason_codes=st.lists(reasons, max_size=3).map(tuple),
)
key_names = ("merchant_category_code", "channel", "country", "account_id", "card_id")
routing_keys = st.fixed_dictionaries({}, optional={name: texts | odd for name in key_names})


def native() -> Any:
    assert records.NATIVE is not None
    return records.NATIVE


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=300))
def test_sha256_equals_hashlib(data: bytes) -> None:
    assert native().sha256_hex(data) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("portable", [False, True], ids=["cpu", "portable"])
def test_sha256_at_every_padding_boundary(portable: bool) -> None:
    """Both compressions: the CPU's SHA extensions (where it has them) and the portable
    code, which a machine without them runs."""
    native().use_portable_sha256(portable)
    try:
        if portable:
            assert native().sha256_implementation() == "portable"
        for n in [*range(0, 260), 1000, 4096, 65_537]:
            data = bytes(range(256))[: n % 256] * (1 + n // 256)
            assert native().sha256_hex(data) == hashlib.sha256(data).hexdigest(), n
            hasher = native().EntityHasher(data[:100], ENTITY_HASH_HEX)
            value = data.decode("latin-1")
            assert hasher(value) == hash_entity(data[:100], value), n
    finally:
        native().use_portable_sha256(False)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.text(st.characters(exclude_categories=["Cs"])))
def test_entity_hash_equals_hmac(key: bytes, value: str) -> None:
    hasher = native().EntityHasher(key, ENTITY_HASH_HEX)
    assert hasher(value) == hash_entity(key, value)


def test_entity_hash_keeps_any_number_of_hex_digits() -> None:
    full = hmac.digest(KEY, b"acct-42", "sha256").hex()
    for hex_chars in range(1, 65):
        assert native().EntityHasher(KEY, hex_chars)("acct-42") == full[:hex_chars]


def test_entity_hash_refuses_a_lone_surrogate_like_the_reference() -> None:
    hasher = native().EntityHasher(KEY, ENTITY_HASH_HEX)
    with pytest.raises(UnicodeEncodeError):
        hash_entity(KEY, "a\ud800")
    with pytest.raises(UnicodeEncodeError):
        hasher("a\ud800")
    with pytest.raises(ValueError, match="hex_chars"):
        native().EntityHasher(KEY, 65)


@settings(max_examples=1000, deadline=None)
@given(results, routing_keys, ints | odd, texts | odd, ints | odd)
def test_decision_payload_equals_the_reference(
    result: ScoreResult, keys: dict[str, Any], amount: Any, currency: Any, latency_us: Any
) -> None:
    hasher = EntityHasher(KEY)
    assert hasher.native is not None
    expected = direct_payload(hasher, result, keys, amount, currency, latency_us)
    got = native().decision_payload(hasher.native, result, keys, amount, currency, latency_us)
    assert got == expected


def test_decision_payload_declines_what_is_not_a_plain_dict() -> None:
    ok = ScoreResult(
        "tx-1", 0.5, Decision.APPROVE, "m", 1, ArmRole.CHAMPION, DecisionSource.MODEL, "r", 3
    )
    hasher = EntityHasher(KEY).native
    assert native().decision_payload(hasher, ok, {}, 1, "USD", 10) is not None
    assert native().decision_payload(hasher, ok, [("channel", "WEB")], 1, "USD", 10) is None
    assert native().decision_payload(hasher, object(), {}, 1, "USD", 10) is None


def sealable(key_id: Any, kind: Any, prev: Any, seq: Any, ts_ms: Any, worker: Any) -> bool:
    """Whether the native sealing takes these fields: str, and ints of 64 bits."""
    return all(isinstance(v, str) for v in (key_id, kind, prev)) and all(
        isinstance(v, int) and -(2**63) <= v < 2**63 for v in (seq, ts_ms, worker)
    )


payload_objects = st.dictionaries(
    texts,
    st.none() | st.booleans() | ints | texts | st.floats(allow_nan=False, allow_infinity=False),
    max_size=4,
)


@settings(max_examples=600, deadline=None)
@given(payload_objects, texts | odd, texts | odd, texts | odd, ints | odd, ints | odd, ints | odd)
def test_seal_line_equals_the_reference(
    payload: dict[str, Any],
    key_id: Any,
    kind: Any,
    prev: Any,
    seq: Any,
    ts_ms: Any,
    worker: Any,
) -> None:
    body = CanonicalJSON(canonical(payload))
    args = {
        "key_id": key_id,
        "kind": kind,
        "prev": prev,
        "seq": seq,
        "ts_ms": ts_ms,
        "worker": worker,
        "payload": body,
    }
    got = native().seal_line(key_id, kind, body, prev, seq, ts_ms, worker)
    try:
        expected: tuple[str, bytes] | None = python_seal(**args)
    except TypeError:
        expected = None
    if got is None:
        # Declined: only what is not a str or an int of 64 bits, which seal() then
        # writes or refuses itself.
        assert not sealable(key_id, kind, prev, seq, ts_ms, worker)
    else:
        assert got == expected
        assert seal(**args) == got  # and seal() itself takes the native path


@settings(max_examples=400, deadline=None)
@given(
    st.lists(payload_objects, max_size=5),
    texts | odd,
    texts | odd,
    texts | odd,
    ints | odd | st.sampled_from([2**63 - 1, 2**63 - 3]),
    ints | odd,
    ints | odd,
)
def test_seal_lines_equals_the_reference_chain(
    payloads: list[dict[str, Any]],
    key_id: Any,
    kind: Any,
    prev: Any,
    seq: Any,
    ts_ms: Any,
    worker: Any,
) -> None:
    bodies = [canonical(p) for p in payloads]
    got = native().seal_lines(key_id, kind, bodies, prev, seq, ts_ms, worker)
    fields = {"key_id": key_id, "kind": kind, "prev": prev, "seq": seq, "ts_ms": ts_ms}
    try:
        expected: tuple[str, bytes, list[int]] | None = python_seal_lines(
            **fields, worker=worker, payloads=bodies
        )
    except TypeError:
        expected = None
    if got is None:
        # Declined: only what seal_line declines, or a seq that runs past int64.
        assert not (
            sealable(key_id, kind, prev, seq, ts_ms, worker)
            and seq + max(len(bodies) - 1, 0) < 2**63
        )
    else:
        assert got == expected
        assert records.seal_lines(**fields, worker=worker, payloads=bodies) == got


def test_seal_lines_declines_what_is_not_a_list_of_bytes() -> None:
    args = ("k", "decision")
    assert native().seal_lines(*args, (b"{}",), GENESIS, 1, 2, 3) is None
    assert native().seal_lines(*args, [b"{}", "{}"], GENESIS, 1, 2, 3) is None
    assert native().seal_lines(*args, [], GENESIS, 1, 2, 3) == (GENESIS, b"", [])


def _decisions(n: int) -> DecisionRecords:
    rows = [
        ScoreResult(
            f"tx-{n}-{i}",
            i / 7,
            list(Decision)[i % 3],
            "fraud-gbdt",
            2,
            ArmRole.CHAMPION,
            DecisionSource.FALLBACK if i % 5 == 0 else DecisionSource.MODEL,
            "cards",
            9,
            fallback_reason=FallbackReason.OVERLOAD if i % 5 == 0 else None,
        )
        for i in range(n)
    ]

    class Parsed:
        def __len__(self) -> int:
            return n

        def amount_and_currency(self, i: int) -> tuple[int, str]:
            return 100 * i + 1, "EUR"

    batch = TransactionBatch(
        transaction_ids=[r.transaction_id for r in rows],
        routing_keys=[{"account_id": f"acct-{i % 4}", "card_id": f"card-{i}"} for i in range(n)],
        transactions=Parsed(),
        amounts_usd=lambda: [1.0] * n,
        monitoring_attributes=lambda: [{}] * n,
    )
    return DecisionRecords(batch, rows, latency_us=40 + n, ts_ms=1_764_000_000_000 + n)


@pytest.mark.parametrize("fsync_every", [7, 512])
def test_a_whole_item_sealed_at_once_writes_what_record_by_record_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync_every: int
) -> None:
    """The writer seals an item's decisions many to a native call (records.seal_lines):
    the segments, byte for byte, the group commits and the OpenTelemetry copies are
    those of sealing them one at a time, across group commits (every 7 records) and
    rotations (8 KiB segments) inside an item."""
    sizes = (40, 3, 100, 1)

    def run(directory: Path, at_once: bool) -> tuple[list[bytes], int, list[Any], list[int]]:
        exporter = InMemoryLogRecordExporter()
        provider = LoggerProvider()
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        audit = AuditSettings(
            directory=directory,
            key_file=tmp_path / "audit.key",
            fsync_every_records=fsync_every,
            fsync_interval_ms=600_000,
            segment_max_bytes=8192,
        )
        writer = AuditWriter(
            audit, key=KEY, clock=lambda: 1_764_000_000.5, otel=OtelAuditLogs(provider)
        )
        runs: list[int] = []

        def spy(**fields: Any) -> tuple[str, bytes, list[int]]:
            runs.append(len(fields["payloads"]))
            return records.seal_lines(**fields)

        with monkeypatch.context() as m:
            m.setattr(writer_module, "seal_lines", spy)
            if not at_once:
                m.setattr(DecisionRecords, "canonical_payloads", lambda self, hash_entity: None)
            writer.start()
            sink = ChainAuditSink(writer)
            for n in sizes:
                assert sink.offer_decisions(_decisions(n))
            writer.close_blocking()
        assert verify(directory).ok
        segments = [s.path.read_bytes() for s in list_segments(directory)[0]]
        bodies = [e.log_record.body for e in exporter.get_finished_logs()]
        return segments, writer.fsyncs, bodies, runs

    at_once = run(tmp_path / "at-once", True)
    one_by_one = run(tmp_path / "one-by-one", False)
    assert at_once[:3] == one_by_one[:3]
    segments, _, bodies, runs = at_once
    assert len(segments) > 2  # rotated inside items
    decisions = [line for s in segments for line in s.splitlines() if b'"kind":"decision"' in line]
    assert len(decisions) == sum(sizes) and len(bodies) == sum(sizes) + len(segments)
    assert runs and max(runs) <= fsync_every and sum(runs) <= sum(sizes)
    assert one_by_one[3] == []


def test_sealed_decisions_verify_and_equal_the_python_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A whole item through expand and seal, native and pure Python: the same lines."""
    rows = [
        ScoreResult(
            f"tx-{i}",
            i / 7,
            Decision.REVIEW,
            "fraud-gbdt",
            2,
            ArmRole.CANARY,
            DecisionSource.FALLBACK if i % 2 else DecisionSource.MODEL,
            "cards-é",
            9,
            fallback_reason=FallbackReason.OVERLOAD if i % 2 else None,
            reason_codes=(Reason("HIGH_AMOUNT", "amount_usd", 0.125, "a large amount"),)
            if i % 3 == 0
            else (),
        )
        for i in range(12)
    ]

    class Parsed:
        def __len__(self) -> int:
            return 12

        def transaction(self, i: int) -> dict[str, Any]:
            raise AssertionError("the audit record reads amount_and_currency only")

        def amount_and_currency(self, i: int) -> tuple[int, str]:
            return 100 * i, "EUR"

    keys = [{"account_id": f"acct-{i % 3}", "card_id": "", "channel": "WEB"} for i in range(12)]
    batch = TransactionBatch(
        transaction_ids=[r.transaction_id for r in rows],
        routing_keys=keys,
        transactions=Parsed(),
        amounts_usd=lambda: [1.0] * 12,
        monitoring_attributes=lambda: [{}] * 12,
    )
    item = DecisionRecords(batch, rows, latency_us=321, ts_ms=1_764_000_000_000)

    def chain() -> list[bytes]:
        prev, lines = GENESIS, []
        for seq, (ts_ms, payload) in enumerate(item.expand(EntityHasher(KEY))):
            digest, line = seal(
                seq=seq,
                ts_ms=ts_ms,
                kind="decision",
                worker=1,
                key_id="k",
                payload=payload,
                prev=prev,
            )
            prev = digest
            lines.append(line)
        return lines

    fast = chain()
    with monkeypatch.context() as m:
        m.setattr(records, "NATIVE", None)
        slow = chain()
    assert fast == slow
    prev = GENESIS
    for line in fast:
        parsed = records.parse_record(line.rstrip(b"\n"))  # canonical, digest matches
        assert parsed["prev"] == prev
        prev = parsed["digest"]
    first = records.parse_record(fast[0].rstrip(b"\n"))["payload"]
    assert first["account_id"] == hash_entity(KEY, "acct-0")
    assert first["card_id"] == ""
    assert first["reason_codes"] == [
        {"code": "HIGH_AMOUNT", "contribution": 0.125, "feature": "amount_usd"}
    ]


def test_pure_python_or_the_sealing_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKWIRE_PURE_PYTHON", "1")
    assert records.native_audit() is None
    monkeypatch.setenv("RISKWIRE_PURE_PYTHON", "0")
    assert records.native_audit() is not None
    monkeypatch.setenv("RISKWIRE_AUDIT_SEALING", "python")
    assert records.native_audit() is None
