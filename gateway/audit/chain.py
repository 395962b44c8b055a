"""Segments on disk, and recovering a worker's chain after a crash.

Each worker writes its own chain (two processes never append to one file, so no
cross-process locking): ``<directory>/w<worker>-<index>.jsonl``, ``index`` counting
from 1. A segment's first record is a ``segment_start`` whose ``prev`` is the digest
of the last record of the segment before it, so the chain runs unbroken across
rotation and a missing or truncated middle segment breaks it.

Recovery is what the writer does before its first record. ``kill -9`` (or a power
cut) can leave the newest segment ending in a torn tail: a partial last line, or
lines that do not check out. Only the newest segment can be torn: the writer fsyncs a
segment whole before it starts the next. :func:`recover` finds the last whole record
that checks out, moves everything after it into ``<segment>.torn.<n>`` (kept for
forensics, never read back as part of the chain) and truncates the segment there; the
writer then appends a ``recovery`` record that links to that last whole record and
says what was cut.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit.records import RecordError, parse_record

log = logging.getLogger("riskwire.audit")

SEGMENT_RE = re.compile(r"^w(\d{3,})-(\d{8,})\.jsonl$")


def segment_name(worker: int, index: int) -> str:
    return f"w{worker:03d}-{index:08d}.jsonl"


@dataclass(frozen=True, slots=True, order=True)
class Segment:
    worker: int
    index: int
    path: Path


def list_segments(directory: Path) -> dict[int, list[Segment]]:
    """Every worker's segments, in index order; files of other names are ignored."""
    chains: dict[int, list[Segment]] = {}
    if not directory.is_dir():
        return chains
    for entry in directory.iterdir():
        match = SEGMENT_RE.match(entry.name)
        if match and entry.is_file():
            worker, index = int(match[1]), int(match[2])
            chains.setdefault(worker, []).append(Segment(worker, index, entry))
    for segments in chains.values():
        segments.sort()
    return dict(sorted(chains.items()))


def iter_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset, line bytes with its newline if it has one)."""
    offset = 0
    with path.open("rb") as source:
        for number, line in enumerate(source, 1):
            yield number, offset, line
            offset += len(line)


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last whole record of a chain: what the next record links to."""

    seq: int
    digest: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class RecoveredChain:
    """Where a worker's chain stands after :func:`recover`."""

    segment: Segment
    """The newest segment, truncated to its last whole record; writing resumes here."""
    size_bytes: int
    """Its size after the cut."""
    head: ChainHead | None
    """The last whole record of the chain (in ``segment``, or in the one before it when
    nothing of ``segment`` survived); None when the chain's only segment held nothing
    whole (a crash before its first record reached the disk): a new chain starts."""
    segment_started_ts_ms: int | None
    """``ts_ms`` of the segment's first record; None when the segment is empty now."""
    cut_bytes: int
    cut_lines: int
    """Lines (the last one maybe partial) moved to the torn file."""
    whole_records_cut: int
    """Cut lines that were whole, valid records on their own: a crash never leaves
    these after a bad line, so more than zero means the file was damaged otherwise."""
    cut_reason: str
    """The first problem found, e.g. ``torn_tail at line 12``; "" when nothing was cut."""
    torn_file: Path | None


class AuditRecoveryError(RuntimeError):
    """The chain cannot be resumed safely (damage beyond a crash's torn tail)."""


def recover(directory: Path, worker: int) -> RecoveredChain | None:
    """Find ``worker``'s last whole record and cut away any torn tail after it.

    Returns None when the worker has no chain yet.

    Raises:
        AuditRecoveryError: the newest segment holds nothing whole and the segment
            before it does not end in a valid record.
    """
    segments = list_segments(directory).get(worker, [])
    if not segments:
        return None
    newest = segments[-1]
    head: ChainHead | None = None
    started: int | None = None
    good_bytes = 0
    problem = ""
    for number, offset, line in iter_lines(newest.path):
        if not line.endswith(b"\n"):
            problem = f"torn_tail at line {number}"
            break
        try:
            record = parse_record(line[:-1])
        except RecordError as exc:
            problem = f"{exc.problem} at line {number}"
            break
        if head is not None and (record["seq"] != head.seq + 1 or record["prev"] != head.digest):
            problem = f"broken link at line {number}"
            break
        if record["worker"] != worker:
            problem = f"record of worker {record['worker']} at line {number}"
            break
        head = ChainHead(record["seq"], record["digest"], record["ts_ms"])
        if started is None:
            started = record["ts_ms"]
        good_bytes = offset + len(line)

    size = newest.path.stat().st_size
    torn_file: Path | None = None
    cut_lines = whole_cut = 0
    if size > good_bytes:
        torn_file, cut_lines, whole_cut = _cut(newest.path, good_bytes)
        level = logging.ERROR if whole_cut else logging.WARNING
        log.log(
            level,
            "audit segment %s: %s; cut %d bytes (%d lines, %d of them whole records) into %s",
            newest.path,
            problem,
            size - good_bytes,
            cut_lines,
            whole_cut,
            torn_file.name,
        )
    if head is None and len(segments) > 1:
        head = _last_record_of(segments[:-1], worker)
    return RecoveredChain(
        segment=newest,
        size_bytes=good_bytes,
        head=head,
        segment_started_ts_ms=started,
        cut_bytes=size - good_bytes,
        cut_lines=cut_lines,
        whole_records_cut=whole_cut,
        cut_reason=problem,
        torn_file=torn_file,
    )


def _cut(path: Path, keep_bytes: int) -> tuple[Path, int, int]:
    """Move ``path``'s bytes past ``keep_bytes`` to a new torn file; truncate ``path``."""
    with path.open("rb") as source:
        source.seek(keep_bytes)
        tail = source.read()
    n = 1
    while (torn := path.with_name(f"{path.name}.torn.{n}")).exists():
        n += 1
    # The copy is durable before the original shrinks: a crash in between leaves the
    # bytes in both places, never in neither.
    fd = os.open(torn, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, tail)
        os.fsync(fd)
    finally:
        os.close(fd)
    with path.open("r+b") as target:
        target.truncate(keep_bytes)
        target.flush()
        os.fsync(target.fileno())
    fsync_directory(path.parent)
    *complete, partial = tail.split(b"\n")
    whole = sum(1 for line in complete if _is_record(line))
    return torn, len(complete) + (1 if partial else 0), whole


def _is_record(line: bytes) -> bool:
    try:
        parse_record(line)
    except RecordError:
        return False
    return True


def _last_record_of(segments: list[Segment], worker: int) -> ChainHead:
    """The last record of the newest non-empty segment among ``segments``."""
    for segment in reversed(segments):
        line = _last_line(segment.path)
        if line is None:
            continue
        try:
            record: dict[str, Any] = parse_record(line)
        except RecordError as exc:
            raise AuditRecoveryError(
                f"audit segment {segment.path} does not end in a whole record ({exc}); "
                "only the newest segment can be torn by a crash: run `riskwire audit "
                "verify` and move the damaged chain aside"
            ) from None
        if record["worker"] != worker:
            raise AuditRecoveryError(f"{segment.path} ends in a record of another worker")
        return ChainHead(record["seq"], record["digest"], record["ts_ms"])
    raise AuditRecoveryError(
        f"worker {worker}'s audit segments hold no whole record to resume from; move "
        "them aside to start a new chain"
    )


def _last_line(path: Path) -> bytes | None:
    """The last newline-terminated line of ``path`` (without the newline), or None."""
    with path.open("rb") as source:
        source.seek(0, os.SEEK_END)
        end = source.tell()
        if end == 0:
            return None
        block = 64 * 1024
        data = b""
        position = end
        while position > 0:
            step = min(block, position)
            position -= step
            source.seek(position)
            data = source.read(step) + data
            # Look for the newline before the final one.
            if data.count(b"\n") >= 2 or position == 0:
                break
    if not data.endswith(b"\n"):
        return None
    body = data[:-1]
    return body[body.rfind(b"\n") + 1 :]


def fsync_directory(directory: Path) -> None:
    """Make a file's creation, rename or truncation in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
