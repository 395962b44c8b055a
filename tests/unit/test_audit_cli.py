"""Reading the audit log: ``query`` filters, and ``riskwire audit verify|query``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.audit.query import QueryStats, parse_time, query
from gateway.audit.records import hash_entity
from gateway.audit.settings import AuditSettings
from gateway.audit.writer import AuditEvent, AuditWriter
from gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]
KEY_TEXT = "cli-test-key-0123456789abcdef0123"
KEY = KEY_TEXT.encode()
T0 = 1_764_356_400_000  # 2025-11-28T19:00:00Z


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """Twelve decisions: accounts a-0..a-2, two model versions, one per minute from T0,
    written by two workers; plus a config change."""
    (tmp_path / "audit.key").write_text(KEY_TEXT + "\n")
    for worker in (0, 1):
        settings = AuditSettings(
            directory=tmp_path / "audit", key_file=tmp_path / "audit.key", worker_id=worker
        )
        # The writer's own records (segment_start, recovery) a minute before T0: each
        # chain is in time order, as it is when events are recorded as they happen.
        writer = AuditWriter(settings, clock=lambda: T0 / 1000 - 60)
        writer.start()
        for i in range(worker, 12, 2):
            if i == 2:
                writer.submit(AuditEvent("config_change", {"config_version": 2}, ts_ms=T0 + 30_000))
            writer.submit(
                AuditEvent(
                    "decision",
                    {
                        "i": i,
                        "model": "fraud-gbdt",
                        "version": 3 if i < 8 else 4,
                        "decision": ["APPROVE", "REVIEW", "DECLINE"][i % 3],
                        "score": i / 12,
                    },
                    {"transaction_id": f"txn-{i}", "account_id": f"a-{i % 3}"},
                    ts_ms=T0 + i * 60_000,
                )
            )
        writer.close_blocking()
    return tmp_path / "audit"


def numbers(records: object) -> list[int]:
    return [r["payload"]["i"] for r in records]  # type: ignore[attr-defined]


def test_query_by_transaction_and_account_hashes_with_the_key(log: Path) -> None:
    assert numbers(query(log, KEY, transaction_id="txn-7")) == [7]
    assert numbers(query(log, KEY, account="a-1")) == [1, 4, 7, 10]
    assert numbers(query(log, KEY, account="a-1", transaction_id="txn-4")) == [4]
    assert list(query(log, KEY, account="a-9")) == []


def test_a_query_with_another_key_matches_nothing_and_says_so(log: Path) -> None:
    stats = QueryStats()
    assert list(query(log, b"another-key-0123456789", account="a-1", stats=stats)) == []
    assert stats.other_keys == 12 and stats.matched == 0


def test_query_by_model_version_decision_time_and_kind(log: Path) -> None:
    assert numbers(query(log, KEY, version=4)) == [8, 9, 10, 11]
    assert numbers(query(log, KEY, model="fraud-gbdt", decision="decline")) == [2, 5, 8, 11]
    since = datetime.fromtimestamp((T0 + 3 * 60_000) / 1000, UTC)
    until = datetime.fromtimestamp((T0 + 6 * 60_000) / 1000, UTC)
    assert numbers(query(log, KEY, since=since, until=until)) == [3, 4, 5]
    changes = list(query(log, KEY, kinds={"config_change"}))
    assert [c["payload"] for c in changes] == [{"config_version": 2}]
    # Both workers' chains merged in time order, each worker's own records included.
    every = list(query(log, KEY, kinds={"decision", "config_change"}))
    assert [r["ts_ms"] for r in every] == sorted(r["ts_ms"] for r in every)
    assert {r["worker"] for r in every} == {0, 1}


def test_parse_time_reads_iso_and_epoch_ms() -> None:
    assert parse_time("2025-11-28T19:00:00Z").timestamp() * 1000 == T0
    assert parse_time("2025-11-28T19:00:00").timestamp() * 1000 == T0
    assert parse_time(str(T0)).timestamp() * 1000 == T0
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


def test_cli_verify_exit_codes(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", str(log)]) == 0
    assert "worker 0: ok" in capsys.readouterr().out
    segment = log / "w001-00000001.jsonl"
    data = segment.read_bytes()
    segment.write_bytes(data.replace(b'"i":5', b'"i":6'))
    assert main(["audit", "verify", str(log), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    problem = report["chains"][1]["problem"]
    assert (problem["kind"], problem["file"], problem["line"]) == (
        "digest_mismatch",
        str(segment),
        4,
    )
    assert main(["audit", "verify", str(log / "missing")]) == 2
    with pytest.raises(SystemExit) as usage:
        main(["audit", "verify"])
    assert usage.value.code == 2


def test_cli_query_prints_json_lines(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = log.parent / "audit.key"
    code = main(
        [
            "audit",
            "query",
            str(log),
            "--key-file",
            str(key_file),
            "--account",
            "a-2",
            "--since",
            "2025-11-28T19:03:00Z",
            "--decision",
            "decline",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["payload"]["i"] for r in records] == [5, 8, 11]
    assert records[0]["payload"]["account_id"] == hash_entity(KEY, "a-2")
    assert '"matched": 3' in err
    assert main(["audit", "query", str(log), "--key-file", str(key_file), "--limit", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["audit", "query", str(log), "--key-file", str(log.parent / "nope")]) == 2
    bad_time = ["--key-file", str(key_file), "--since", "soon"]
    assert main(["audit", "query", str(log), *bad_time]) == 2


def test_the_riskwire_command_runs_verify(log: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify", str(log)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "worker 1: ok" in done.stdout
