"""``verify`` finds every kind of damage at the exact file, line and record."""

from __future__ import annotations

import itertools
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.chain import list_segments
from gateway.audit.records import seal
from gateway.audit.settings import AuditSettings
from gateway.audit.verify import Problem, verify
from gateway.audit.writer import AuditEvent, AuditWriter

KEY = b"verify-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log of a few segments (30 records and their segment_starts), written once."""
    base = tmp_path_factory.mktemp("pristine")
    write(base, 30, worker=0)
    segments = list_segments(base / "audit")[0]
    assert len(segments) >= 3
    return base / "audit"


def write(base: Path, events: int, worker: int) -> None:
    settings = AuditSettings(
        directory=base / "audit",
        key_file=base / "audit.key",
        segment_max_bytes=4096,
        worker_id=worker,
    )
    writer = AuditWriter(settings, key=KEY)
    writer.start()
    for i in range(events):
        writer.submit(
            AuditEvent(
                "decision",
                {"i": i, "score": i / 30, "decision": "APPROVE", "model": "m", "version": 1},
                {"transaction_id": f"t-{i}", "account_id": f"a-{i % 3}"},
            )
        )
    writer.close_blocking()


@pytest.fixture
def log(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "audit"
    shutil.copytree(pristine, copy)
    return copy


def lines_of(directory: Path) -> list[tuple[Path, int, bytes]]:
    """(segment, 1-based line number, line with newline) for every line, in chain order."""
    return [
        (segment.path, number, line)
        for segment in list_segments(directory)[0]
        for number, line in enumerate(segment.path.read_bytes().splitlines(True), 1)
    ]


def problem_of(directory: Path) -> Problem:
    report = verify(directory)
    assert not report.ok
    (chain,) = report.chains
    assert chain.problem is not None
    return chain.problem


def test_an_intact_log_verifies(pristine: Path) -> None:
    report = verify(pristine)
    assert report.ok, report.render()
    (chain,) = report.chains
    n = len(list_segments(pristine)[0])
    assert (chain.worker, chain.segments, chain.records, chain.last_seq) == (0, n, 30 + n, 29 + n)
    assert chain.first_ts_ms is not None and chain.last_ts_ms is not None
    assert json.loads(lines_of(pristine)[-1][2])["digest"] == chain.head_digest
    assert f"ok, {30 + n} records in {n} segments" in report.render()


def test_one_flipped_byte_anywhere_is_found_at_its_line(log: Path) -> None:
    rng = random.Random(20261128)
    checked = 0
    for path, number, line in lines_of(log):
        original = path.read_bytes()
        start = sum(len(x) for x in original.splitlines(True)[: number - 1])
        # The first byte, the newline, and a few bytes in between, each flipped by a
        # random non-zero mask.
        positions = {0, len(line) - 1, *rng.sample(range(1, len(line) - 1), 4)}
        for position in sorted(positions):
            damaged = bytearray(original)
            damaged[start + position] ^= rng.randrange(1, 256)
            path.write_bytes(bytes(damaged))
            try:
                problem = problem_of(log)
            finally:
                path.write_bytes(original)
            where = (problem.file, problem.line)
            assert where == (str(path), number), (position, problem)
            assert problem.offset == start
            checked += 1
    assert checked >= len(lines_of(log)) * 5
    assert verify(log).ok


def test_flipped_value_is_reported_as_a_digest_mismatch_with_its_seq(log: Path) -> None:
    path, number, line = lines_of(log)[7]
    record = json.loads(line)
    altered = line.replace(b'"decision":"APPROVE"', b'"decision":"DECLINE"')
    path.write_bytes(path.read_bytes().replace(line, altered))
    problem = problem_of(log)
    assert (problem.kind, problem.line, problem.seq) == ("digest_mismatch", number, record["seq"])


def test_a_deleted_line_is_found_at_the_next_record(log: Path) -> None:
    lines = lines_of(log)
    # Every line but the newest: its deletion is the next test's case.
    for (path, number, _), following in itertools.pairwise(lines):
        following_seq = json.loads(following[2])["seq"]
        original = path.read_bytes()
        kept = original.splitlines(True)
        del kept[number - 1]
        path.write_bytes(b"".join(kept))
        try:
            problem = problem_of(log)
        finally:
            path.write_bytes(original)
        assert problem.kind == "seq_gap"
        assert problem.seq == following_seq
        expected_line = number if following[0] == path else 1
        assert (problem.file, problem.line) == (str(following[0]), expected_line)


def test_a_tail_cut_at_a_line_boundary_is_not_visible_in_the_chain_alone(log: Path) -> None:
    # The documented limit of a hash chain: the head digest (exported to OpenTelemetry
    # and compared with report.head_digest) is what shows this one.
    path, _, last = lines_of(log)[-1]
    path.write_bytes(path.read_bytes()[: -len(last)])
    report = verify(log)
    assert report.ok and report.chains[0].last_seq == json.loads(last)["seq"] - 1
    assert report.chains[0].head_digest != json.loads(last)["digest"]


def test_a_deleted_middle_segment_is_found(log: Path) -> None:
    _, middle, last, *_ = list_segments(log)[0]
    middle.path.unlink()
    problem = problem_of(log)
    assert (problem.kind, problem.file, problem.line) == ("segment_missing", str(last.path), 1)
    assert middle.path.name in problem.detail


def test_a_deleted_first_segment_is_found(log: Path) -> None:
    first, middle, *_ = list_segments(log)[0]
    first.path.unlink()
    problem = problem_of(log)
    assert (problem.kind, problem.file, problem.line) == ("segment_missing", str(middle.path), 1)


def test_a_truncated_middle_segment_breaks_the_next_segments_link(log: Path) -> None:
    _, middle, last, *_ = list_segments(log)[0]
    lines = middle.path.read_bytes().splitlines(True)
    middle.path.write_bytes(b"".join(lines[:-2]))
    problem = problem_of(log)
    assert (problem.kind, problem.file, problem.line) == ("seq_gap", str(last.path), 1)


def test_swapped_lines_are_found(log: Path) -> None:
    path, _, _ = lines_of(log)[0]
    lines = path.read_bytes().splitlines(True)
    lines[3], lines[4] = lines[4], lines[3]
    path.write_bytes(b"".join(lines))
    problem = problem_of(log)
    assert (problem.kind, problem.line) == ("seq_gap", 4)


def test_a_resealed_forgery_breaks_the_link_after_it(log: Path) -> None:
    # Whoever edits a record and recomputes its digest still cannot make the next
    # record point at it.
    lines = lines_of(log)
    path, number, line = lines[5]
    record: dict[str, Any] = json.loads(line)
    record["payload"]["decision"] = "DECLINE"
    _, forged = seal(
        seq=record["seq"],
        ts_ms=record["ts_ms"],
        kind=record["kind"],
        worker=record["worker"],
        key_id=record["key_id"],
        payload=record["payload"],
        prev=record["prev"],
    )
    path.write_bytes(path.read_bytes().replace(line, forged))
    problem = problem_of(log)
    assert (problem.kind, problem.file, problem.line) == ("prev_mismatch", str(path), number + 1)


def test_a_torn_tail_is_reported_at_the_last_line(log: Path) -> None:
    path, number, _ = lines_of(log)[-1]
    with path.open("ab") as out:
        out.write(b'{"digest":"ab')
    problem = problem_of(log)
    assert (problem.kind, problem.file, problem.line) == ("torn_tail", str(path), number + 1)


def test_a_record_of_another_worker_is_found(log: Path, tmp_path: Path) -> None:
    write(tmp_path / "other", 2, worker=1)
    stranger = (tmp_path / "other" / "audit" / "w001-00000001.jsonl").read_bytes().splitlines(True)
    path, number, _ = lines_of(log)[-1]
    path.write_bytes(path.read_bytes() + stranger[1])
    problem = problem_of(log)
    assert (problem.kind, problem.line) == ("wrong_worker", number + 1)


def test_each_worker_is_its_own_chain(log: Path, tmp_path: Path) -> None:
    write(tmp_path, 5, worker=1)  # tmp_path / "audit" is the copied log
    report = verify(log)
    assert report.ok and [c.worker for c in report.chains] == [0, 1]
    theirs = log / "w001-00000001.jsonl"
    lines = theirs.read_bytes().splitlines(True)
    theirs.write_bytes(b"".join(lines[:2] + lines[3:]))
    report = verify(log)
    ours, broken = report.chains
    assert ours.ok and not report.ok
    assert broken.problem is not None and broken.problem.line == 3
    assert report.to_json()["chains"][1]["problem"]["kind"] == "seq_gap"


def test_an_empty_directory_is_not_ok(tmp_path: Path) -> None:
    report = verify(tmp_path)
    assert not report.ok and "no audit segments" in report.render()
    with pytest.raises(FileNotFoundError):
        verify(tmp_path / "missing")
