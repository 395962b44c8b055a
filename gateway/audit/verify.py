"""Verifying the audit log: every worker's chain, segment by segment, line by line.

What an auditor needs from a failed check is *where*: the file, the line, the record,
and what kind of break it is, because each kind means something different:

- ``digest_mismatch`` / ``not_canonical``: this record's content was altered.
- ``unparsable``: this line is not a record at all (altered, or garbage).
- ``seq_gap``: records are missing (a line deleted) or out of order just before this
  one; ``prev_mismatch``: this record does not link to the one before it (a record
  replaced or inserted, or the chain spliced).
- ``segment_missing``: the segment before this one is not there (deleted), or the
  chain does not start at segment 1.
- ``torn_tail``: the last line has no newline (a crash mid-write, not yet recovered);
  ``empty_segment``: a segment other than the newest holds nothing.
- ``wrong_worker``, ``segment_start_missing``, ``misplaced_segment_start``,
  ``segment_mismatch``: a record or a segment where it does not belong.

Checks stop at a chain's first problem: after a break, every later link is suspect,
and the first break is what needs explaining. The one thing a hash chain alone cannot
show is a tail cut off the newest segment at a line boundary; the OpenTelemetry copy
of each record (otel_logs.py) and ``committed_seq`` on /metrics are the anchors
outside the file for that.

Memory stays flat: segments are read line by line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.audit.chain import Segment, iter_lines, list_segments, segment_name
from gateway.audit.records import GENESIS, RecordError, parse_record


@dataclass(frozen=True, slots=True)
class Problem:
    """The first break found in one chain."""

    kind: str
    file: str
    """The segment's path."""
    line: int
    """1-based line number in ``file``."""
    offset: int
    """Byte offset of that line in ``file``."""
    seq: int | None
    """The record's seq (as the line claims it, for an altered one) when the line
    parses as JSON, else None."""
    detail: str

    def describe(self) -> str:
        record = f" (seq {self.seq})" if self.seq is not None else ""
        return f"{self.file} line {self.line}{record}: {self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ChainReport:
    """One worker's chain: what was checked and the first problem, if any."""

    worker: int
    segments: int
    records: int
    """Records checked (up to the problem, when there is one)."""
    first_ts_ms: int | None
    last_ts_ms: int | None
    last_seq: int | None
    head_digest: str | None
    """Digest of the last record checked: compare it with an external anchor."""
    torn_files: tuple[str, ...] = ()
    """Torn tails that recovery cut away and kept (``*.torn.<n>``), for forensics."""
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, slots=True)
class VerifyReport:
    directory: str
    chains: tuple[ChainReport, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when there is at least one chain and every chain checks out."""
        return bool(self.chains) and all(chain.ok for chain in self.chains)

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "ok": self.ok,
            "chains": [{**asdict(chain), "ok": chain.ok} for chain in self.chains],
        }

    def render(self) -> str:
        if not self.chains:
            return f"{self.directory}: no audit segments found"
        lines = []
        for chain in self.chains:
            name = f"worker {chain.worker}"
            if chain.problem is not None:
                lines.append(f"{name}: BROKEN at {chain.problem.describe()}")
                lines.append(f"  {chain.records} records checked before it")
            else:
                lines.append(
                    f"{name}: ok, {chain.records} records in {chain.segments} segments, "
                    f"seq 0..{chain.last_seq}, {_iso(chain.first_ts_ms)} .. "
                    f"{_iso(chain.last_ts_ms)}, head {chain.head_digest}"
                )
            for torn in chain.torn_files:
                lines.append(f"  torn tail kept by recovery: {torn}")
        return "\n".join(lines)


def _iso(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "-"
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")


def verify(directory: Path) -> VerifyReport:
    """Check every worker's chain under ``directory``.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
    """
    if not directory.is_dir():
        raise FileNotFoundError(f"no audit directory {directory}")
    chains = tuple(
        verify_chain(worker, segments) for worker, segments in list_segments(directory).items()
    )
    return VerifyReport(str(directory), chains)


class _Break(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def verify_chain(worker: int, segments: Iterable[Segment]) -> ChainReport:
    """Check one worker's segments, given in index order."""
    segments = list(segments)
    state = _ChainState()
    problem: Problem | None = None
    try:
        for position, segment in enumerate(segments):
            _check_segment(worker, segment, position == len(segments) - 1, state)
    except _Break as found:
        problem = found.problem
    torn = tuple(
        sorted(
            str(path)
            for segment in segments
            for path in segment.path.parent.glob(f"{segment.path.name}.torn.*")
        )
    )
    return ChainReport(
        worker=worker,
        segments=len(segments),
        records=state.records,
        first_ts_ms=state.first_ts_ms,
        last_ts_ms=state.last_ts_ms,
        last_seq=state.seq if state.records else None,
        head_digest=state.digest if state.records else None,
        torn_files=torn,
        problem=problem,
    )


@dataclass(slots=True)
class _ChainState:
    seq: int = -1
    digest: str = GENESIS
    records: int = 0
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    index: int = 0
    """Index of the last segment checked."""


def _check_segment(worker: int, segment: Segment, newest: bool, state: _ChainState) -> None:
    file = str(segment.path)

    def stop(kind: str, line: int, offset: int, seq: int | None, detail: str) -> _Break:
        return _Break(Problem(kind, file, line, offset, seq, detail))

    if segment.index != state.index + 1:
        missing = (
            segment_name(worker, state.index + 1)
            if segment.index == state.index + 2
            else f"segments {state.index + 1} to {segment.index - 1}"
        )
        raise stop("segment_missing", 1, 0, None, f"{missing} is missing before this segment")
    state.index = segment.index
    number = 0
    for number, offset, raw in iter_lines(segment.path):
        if not raw.endswith(b"\n"):
            raise stop(
                "torn_tail", number, offset, None, f"a partial last line of {len(raw)} bytes"
            )
        try:
            record = parse_record(raw[:-1])
        except RecordError as exc:
            raise stop(exc.problem, number, offset, _claimed_seq(raw), exc.detail) from None
        seq = record["seq"]
        if record["worker"] != worker:
            raise stop(
                "wrong_worker", number, offset, seq, f"a record of worker {record['worker']}"
            )
        if seq != state.seq + 1:
            gap = seq - state.seq - 1
            what = f"{gap} record(s) missing before it" if gap > 0 else "out of order"
            raise stop("seq_gap", number, offset, seq, f"expected seq {state.seq + 1}: {what}")
        if record["prev"] != state.digest:
            raise stop(
                "prev_mismatch",
                number,
                offset,
                seq,
                f"prev {record['prev'][:16]}… is not the digest of the record before it "
                f"({state.digest[:16]}…): the chain is broken here",
            )
        kind = record["kind"]
        if number == 1 and kind != "segment_start":
            raise stop("segment_start_missing", number, offset, seq, f"first record is {kind}")
        if number > 1 and kind == "segment_start":
            raise stop("misplaced_segment_start", number, offset, seq, "inside a segment")
        if kind == "segment_start" and record["payload"].get("segment") != segment.path.name:
            raise stop(
                "segment_mismatch",
                number,
                offset,
                seq,
                f"starts segment {record['payload'].get('segment')!r}, not this file",
            )
        state.seq = seq
        state.digest = record["digest"]
        state.records += 1
        ts_ms = record["ts_ms"]
        if state.first_ts_ms is None:
            state.first_ts_ms = ts_ms
        state.last_ts_ms = ts_ms
    if number == 0:
        if newest:
            raise stop("torn_tail", 1, 0, None, "the newest segment is empty (a crash at rotation)")
        raise stop("empty_segment", 1, 0, None, "a segment other than the newest holds nothing")


def _claimed_seq(raw: bytes) -> int | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    seq = record.get("seq") if isinstance(record, dict) else None
    return seq if type(seq) is int else None
