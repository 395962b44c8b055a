"""The audit record and its chain: canonical lines, digests, links, keyed hashes,
and recovery of a torn tail."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.chain import list_segments, recover
from gateway.audit.records import (
    GENESIS,
    EntityHasher,
    RecordError,
    canonical,
    hash_entity,
    key_id,
    load_key,
    parse_record,
    seal,
)
from gateway.audit.settings import AuditSettings
from gateway.audit.verify import verify
from gateway.audit.writer import AuditEvent, AuditWriter

KEY = b"0123456789abcdef-test-key-material"


def settings(tmp_path: Path, **overrides: Any) -> AuditSettings:
    return AuditSettings(directory=tmp_path / "audit", key_file=tmp_path / "audit.key", **overrides)


def write_log(tmp_path: Path, events: int, **overrides: Any) -> AuditWriter:
    writer = AuditWriter(settings(tmp_path, **overrides), key=KEY)
    writer.start()
    for i in range(events):
        writer.submit(
            AuditEvent("admin_refused", {"i": i, "method": "/m"}, {"transaction_id": f"t-{i}"})
        )
    writer.close_blocking()
    return writer


def read_records(directory: Path, worker: int = 0) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for segment in list_segments(directory)[worker]
        for line in segment.path.read_bytes().splitlines()
    ]


def test_the_digest_is_sha256_of_the_canonical_record_without_it() -> None:
    digest, line = seal(
        seq=7,
        ts_ms=1_764_358_659_123,
        kind="decision",
        worker=2,
        key_id="abcd0123",
        payload={"score": 0.25, "b": [1, "é"], "a": None},
        prev="f" * 64,
    )
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = json.loads(line)
    assert record["digest"] == digest
    # Recomputed from the documented definition, independently of the writer.
    body = {k: v for k, v in record.items() if k != "digest"}
    expected = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    ).hexdigest()
    assert digest == expected
    assert line[:-1] == canonical(record)
    assert parse_record(line[:-1]) == record


def test_a_line_that_parses_to_the_same_record_in_another_spelling_is_refused() -> None:
    _, line = seal(
        seq=0, ts_ms=1, kind="decision", worker=0, key_id="k", payload={"x": "é"}, prev=GENESIS
    )
    assert b"\\u00e9" in line
    with pytest.raises(RecordError) as caught:
        parse_record(line[:-1].replace(b"\\u00e9", b"\\u00E9"))
    assert caught.value.problem == "not_canonical"
    with pytest.raises(RecordError) as caught:
        parse_record(line[:-1].replace(b'"x":', b'"x": '))
    assert caught.value.problem == "not_canonical"


def test_an_altered_value_fails_the_digest() -> None:
    _, line = seal(
        seq=3, ts_ms=1, kind="decision", worker=0, key_id="k", payload={"score": 0.5}, prev=GENESIS
    )
    with pytest.raises(RecordError) as caught:
        parse_record(line[:-1].replace(b'"score":0.5', b'"score":0.4'))
    assert caught.value.problem == "digest_mismatch"


def test_non_finite_numbers_are_refused_at_sealing() -> None:
    with pytest.raises(ValueError):
        seal(
            seq=0,
            ts_ms=1,
            kind="decision",
            worker=0,
            key_id="k",
            payload={"score": float("nan")},
            prev=GENESIS,
        )


def test_hash_entity_is_hmac_sha256_under_the_key() -> None:
    expected = hmac.new(KEY, b"acct-42", hashlib.sha256).hexdigest()[:32]
    assert hash_entity(KEY, "acct-42") == expected
    assert hash_entity(KEY, "acct-42") != hash_entity(KEY + b"x", "acct-42")
    assert hash_entity(KEY, "acct-42") != hash_entity(KEY, "acct-43")
    assert hash_entity(KEY, "") == ""
    for key in (KEY, b"k" * 64, b"long" * 40):
        hasher = EntityHasher(key)
        for value in ("acct-42", "é-ü-✓", "x" * 500, ""):
            assert hasher(value) == hash_entity(key, value)
    assert key_id(KEY) == hashlib.sha256(KEY).hexdigest()[:8]


def test_load_key_makes_one_private_key_and_refuses_a_short_one(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit.key"
    key = load_key(path, create=True)
    assert len(key) >= 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key(path, create=True) == key
    (tmp_path / "short").write_bytes(b"tooshort\n")
    with pytest.raises(ValueError, match="at least 16") as caught:
        load_key(tmp_path / "short")
    assert "tooshort" not in str(caught.value)
    with pytest.raises(FileNotFoundError):
        load_key(tmp_path / "missing")


def test_workers_making_the_key_at_once_all_get_the_same_one(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit.key"
    start = threading.Barrier(8)
    keys: list[bytes] = []

    def make() -> None:
        start.wait()
        keys.append(load_key(path, create=True))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert [p.name for p in path.parent.iterdir()] == ["audit.key"]


def test_the_key_file_may_not_live_inside_the_audit_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        AuditSettings(directory=tmp_path / "audit", key_file=tmp_path / "audit" / "k")
    with pytest.raises(ValueError, match="outside"):
        AuditSettings(key_file=tmp_path / "audit" / "k").resolved(tmp_path)


def test_unset_paths_default_to_the_state_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="resolve"):
        AuditWriter(AuditSettings())
    resolved = AuditSettings(block_ms=2).resolved(tmp_path / "state")
    assert resolved.directory == tmp_path / "state" / "audit"
    assert resolved.key_file == tmp_path / "state" / "audit.key"
    assert resolved.block_ms == 2
    writer = AuditWriter(resolved)  # creates the key (create_key defaults to true)
    writer.start()
    writer.close_blocking()
    assert (tmp_path / "state" / "audit.key").stat().st_mode & 0o777 == 0o600
    assert verify(tmp_path / "state" / "audit").ok


def test_records_link_across_segments(tmp_path: Path) -> None:
    write_log(tmp_path, 60, segment_max_bytes=4096)
    segments = list_segments(tmp_path / "audit")[0]
    assert len(segments) > 2
    prev, seq = GENESIS, -1
    for segment in segments:
        lines = segment.path.read_bytes().splitlines()
        first = json.loads(lines[0])
        assert first["kind"] == "segment_start"
        assert first["payload"]["segment"] == segment.path.name
        assert segment.path.stat().st_size <= 4096
        for line in lines:
            record = parse_record(line)
            assert record["seq"] == seq + 1
            assert record["prev"] == prev
            seq, prev = record["seq"], record["digest"]
    kinds = [r["kind"] for r in read_records(tmp_path / "audit")]
    assert kinds.count("admin_refused") == 60
    assert verify(tmp_path / "audit").ok


def test_entity_ids_are_stored_hashed_and_the_key_appears_nowhere(tmp_path: Path) -> None:
    key_text = "4f1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c-secret"
    (tmp_path / "audit.key").write_text(key_text + "\n")
    writer = AuditWriter(settings(tmp_path))
    writer.start()
    writer.submit(
        AuditEvent(
            "decision",
            {"model": "m"},
            {"transaction_id": "txn-clear-1", "account_id": "acct-clear-1", "card_id": "c-1"},
        )
    )
    writer.close_blocking()
    records = read_records(tmp_path / "audit")
    decision = next(r for r in records if r["kind"] == "decision")
    key = key_text.encode()
    assert decision["payload"]["account_id"] == hash_entity(key, "acct-clear-1")
    assert decision["key_id"] == key_id(key)
    files = [p for p in (tmp_path / "audit").rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for secret in (key, key.hex().encode(), b"txn-clear-1", b"acct-clear-1"):
            assert secret not in data, f"{secret!r} found in {path}"


def _torn_log(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    """A log whose newest segment ends in a partial line; returns (segment, kept, torn)."""
    write_log(tmp_path, 10)
    segment = list_segments(tmp_path / "audit")[0][-1].path
    data = segment.read_bytes()
    torn = b'{"digest":"0123456789abcdef","key_id":"c3dc8b'
    segment.write_bytes(data + torn)
    return segment, data, torn


def test_recover_cuts_a_torn_tail_and_keeps_it(tmp_path: Path) -> None:
    segment, kept, torn = _torn_log(tmp_path)
    last = json.loads(kept.splitlines()[-1])
    recovered = recover(tmp_path / "audit", 0)
    assert recovered is not None and recovered.head is not None
    assert recovered.head.seq == last["seq"] and recovered.head.digest == last["digest"]
    assert recovered.cut_bytes == len(torn)
    assert recovered.cut_lines == 1 and recovered.whole_records_cut == 0
    assert recovered.cut_reason == f"torn_tail at line {len(kept.splitlines()) + 1}"
    assert segment.read_bytes() == kept
    assert recovered.torn_file is not None and recovered.torn_file.read_bytes() == torn


def test_the_next_writer_links_a_recovery_record_to_the_last_whole_record(
    tmp_path: Path,
) -> None:
    segment, kept, torn = _torn_log(tmp_path)
    last = json.loads(kept.splitlines()[-1])
    assert not verify(tmp_path / "audit").ok
    write_log(tmp_path, 3)
    records = read_records(tmp_path / "audit")
    recovery = next(r for r in records if r["kind"] == "recovery")
    assert recovery["prev"] == last["digest"] and recovery["seq"] == last["seq"] + 1
    assert recovery["payload"]["cut_bytes"] == len(torn)
    assert recovery["payload"]["torn_file"] == f"{segment.name}.torn.1"
    assert recovery["payload"]["resumed_after_seq"] == last["seq"]
    report = verify(tmp_path / "audit")
    assert report.ok, report.render()
    assert report.chains[0].torn_files == (str(segment) + ".torn.1",)
    assert [r["kind"] for r in records].count("admin_refused") == 13


def test_a_garbage_line_after_whole_records_is_cut_too(tmp_path: Path) -> None:
    write_log(tmp_path, 4)
    segment = list_segments(tmp_path / "audit")[0][-1].path
    kept = segment.read_bytes()
    segment.write_bytes(kept + b"\x00" * 100 + b"\n")
    recovered = recover(tmp_path / "audit", 0)
    assert recovered is not None
    assert recovered.cut_bytes == 101 and recovered.cut_reason.startswith("unparsable at line")
    assert segment.read_bytes() == kept


def test_an_empty_newest_segment_resumes_from_the_one_before(tmp_path: Path) -> None:
    write_log(tmp_path, 4)
    old = list_segments(tmp_path / "audit")[0][-1].path
    last = json.loads(old.read_bytes().splitlines()[-1])
    empty = tmp_path / "audit" / "w000-00000002.jsonl"
    empty.touch()  # a crash right after rotation created the file
    assert verify(tmp_path / "audit").chains[0].problem is not None
    write_log(tmp_path, 2)
    lines = empty.read_bytes().splitlines()
    start, recovery = json.loads(lines[0]), json.loads(lines[1])
    assert start["kind"] == "segment_start" and start["prev"] == last["digest"]
    assert recovery["kind"] == "recovery"
    assert verify(tmp_path / "audit").ok


def test_a_clean_restart_resumes_the_chain(tmp_path: Path) -> None:
    write_log(tmp_path, 5)
    write_log(tmp_path, 5)
    records = read_records(tmp_path / "audit")
    assert [r["seq"] for r in records] == list(range(len(records)))
    recovery = [r for r in records if r["kind"] == "recovery"]
    assert len(recovery) == 1 and recovery[0]["payload"]["cut_bytes"] == 0
    assert verify(tmp_path / "audit").ok
