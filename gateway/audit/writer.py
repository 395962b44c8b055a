"""The audit writer: a bounded queue in front of one thread that owns the chain.

Why a thread, and why this shape:

- The event loop only appends to a deque under a lock (:meth:`AuditWriter.submit`,
  about a microsecond): no JSON, no hashing, no syscall on the call's path. Entity
  ids are even hashed on the writer thread (a queued item carries them raw, in memory
  only), and a batch call is one queued item however many records it becomes.
- One thread owns the file, the sequence number and the previous digest, so the
  chain needs no lock of its own and records land in the order they were accepted.
- Group commit: the thread takes everything queued at once, writes it with one
  ``write``, and fsyncs once ``fsync_every_records`` records or ``fsync_interval_ms``
  have passed since the first unsynced one, whichever comes first. A written but not
  yet fsynced record survives ``kill -9`` (it is in the page cache), not a power cut.
  :attr:`AuditWriter.committed_seq` is the last record known to be on disk.
- Nothing is dropped silently. A full queue raises :class:`AuditQueueFull` to the
  caller, after waiting up to ``block_ms`` for room in :meth:`submit_or_wait`, and
  counts it; the caller answers per ``on_full`` (fallback or error). A payload that
  cannot be serialized is still recorded, as an error record naming what it was. If
  the disk fails, the writer stops, counts what it could not write as lost, and every
  later submit raises :class:`AuditWriterFailed`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.audit.chain import (
    ChainHead,
    Segment,
    fsync_directory,
    recover,
    segment_name,
)
from gateway.audit.otel_logs import OtelAuditLogs
from gateway.audit.records import (
    GENESIS,
    CanonicalJSON,
    EntityHasher,
    RecordKind,
    key_id,
    load_key,
    seal,
    seal_lines,
)
from gateway.audit.settings import AuditSettings
from gateway.errors import ErrorKind, GatewayError
from gateway.threadnames import name_this_thread

log = logging.getLogger("riskwire.audit")

WRITE_CHUNK_BYTES = 1 << 20
"""Write the pending lines out once this many bytes are waiting, mid-batch."""

_EMPTY: Mapping[str, str] = MappingProxyType({})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class AuditUnavailable(GatewayError):
    """The audit log cannot take a record now; the call must not be answered as if it
    had been recorded."""


class AuditQueueFull(AuditUnavailable):
    """The writer's queue stayed full for the whole wait."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.RESOURCE_EXHAUSTED, message)


class AuditWriterFailed(AuditUnavailable):
    """The writer stopped (a disk error) or was closed; nothing more can be recorded."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.UNAVAILABLE, message)


class PendingRecords(Protocol):
    """What the queue holds: one or more records, built on the writer thread."""

    @property
    def kind(self) -> RecordKind:
        """The kind of the records it becomes (for the counters and error records)."""

    @property
    def record_count(self) -> int:
        """How many records it becomes (what it takes of the queue's room)."""

    def expand(
        self, hash_entity: Callable[[str], str]
    ) -> Iterable[tuple[int, Mapping[str, Any] | CanonicalJSON]]:
        """Its records' ``(ts_ms, payload)``, exactly ``record_count`` of them, entity
        ids hashed with ``hash_entity``; a payload may come serialized already
        (:class:`CanonicalJSON`). Runs on the writer thread."""


@dataclass(slots=True)
class AuditEvent:
    """One record: ``payload``, plus raw entity ids hashed into it on the writer thread."""

    kind: RecordKind
    payload: Mapping[str, Any]
    entities: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """payload field -> raw id; the record holds ``hash_entity(id)`` under that field."""
    ts_ms: int = field(default_factory=now_ms)

    @property
    def record_count(self) -> int:
        return 1

    def expand(self, hash_entity: Callable[[str], str]) -> Iterator[tuple[int, dict[str, Any]]]:
        payload = dict(self.payload)
        for name, value in self.entities.items():
            payload[name] = hash_entity(value)
        yield self.ts_ms, payload


@dataclass(frozen=True, slots=True)
class AuditStats:
    """A snapshot of the writer's counters (records, unless named otherwise)."""

    accepted: int
    """Taken into the queue."""
    written: int
    """Written to a segment (the writer's own segment_start / recovery not counted)."""
    committed: int
    """Of ``written``, fsynced."""
    committed_seq: int
    """seq of the last fsynced record (any kind); -1 before the first."""
    fsyncs: int
    queue_full: int
    """Refused: the queue stayed full (see ``queue_full_by_kind``)."""
    queue_full_by_kind: Mapping[str, int]
    depth: int
    """Waiting in the queue now."""
    segments_started: int
    unserializable: int
    """Recorded as error records because their payload was not serializable."""
    lost: int
    """Accepted but never written because the writer failed."""
    failed: bool


class AuditWriter:
    """Owns one worker's chain: recovery at start, the queue, the writer thread.

    Args:
        settings: the ``audit`` section, resolved (``AuditSettings.resolved``).
        worker_index: the chain to write when ``settings.worker_id`` is unset: the
            server's index of this worker process (0 .. workers-1), stable across
            restarts.
        key: the keyed-hash secret; None: read from ``settings.key_file``.
        clock: wall-clock seconds for the writer's own records and segment ages
            (tests pass a fake one).
        otel: also emit each record as an OpenTelemetry log record; None: off.
    """

    def __init__(
        self,
        settings: AuditSettings,
        worker_index: int = 0,
        *,
        key: bytes | None = None,
        clock: Callable[[], float] = time.time,
        otel: OtelAuditLogs | None = None,
    ) -> None:
        if settings.directory is None or (key is None and settings.key_file is None):
            raise ValueError("audit settings without a directory or key file: resolve them")
        self.settings = settings
        self.directory: Path = settings.directory
        self.worker_id = settings.worker_id if settings.worker_id is not None else worker_index
        if key is None:
            assert settings.key_file is not None
            key = load_key(settings.key_file, create=settings.create_key)
        self.key_id = key_id(key)
        # The key itself is not kept: only the hasher's padded-key states.
        self._hash = EntityHasher(key)
        self._clock = clock
        self._otel = otel
        self._capacity = settings.queue_records
        self._wake_depth = max(1, min(settings.fsync_every_records, settings.queue_records // 2))
        """Queued records that wake the writer at once; fewer wait up to ``_gather_s``."""
        self._gather_s = min(settings.fsync_interval_ms, GATHER_MS) / 1000.0
        """How long a queued record may wait for the writer to take it (the group
        commit's interval, at most GATHER_MS): the writer wakes on this clock, or when a batch of
        ``_wake_depth`` records is queued, never per record. Waking the writer per
        record cost ~400 us of server CPU per Score call on 2 cores, the two threads
        trading the GIL, against ~150 us waking every 5 ms (py-spy, Score c=8)."""

        self._lock_fd = -1
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._durable = threading.Condition(self._lock)
        # -- guarded by _lock ---------------------------------------------------------
        self._queue: collections.deque[PendingRecords] = collections.deque()
        self._queued_since = 0.0
        self._depth = 0
        self._accepted = 0
        self._queue_full = 0
        self._queue_full_by_kind: dict[str, int] = {}
        self._writer_waiting = False
        self._closing = False
        self._flush_wanted = 0
        self._room_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._failure: BaseException | None = None
        self._lost = 0
        self._committed = 0
        self._committed_seq = -1
        self._fsyncs = 0
        # -- the writer thread's own (before start(): the caller's) ------------------
        self._fd = -1
        self._segment: Segment | None = None
        self._segment_bytes = 0
        self._segment_records = 0
        self._segment_started_s = 0.0
        self._seq = -1
        self._prev = GENESIS
        self._buffer = bytearray()
        self._written = 0
        self._unsynced = 0
        self._unsynced_since = 0.0
        self._user_unsynced = 0
        self._otel_pending: list[tuple[bytes, int, int, RecordKind]] = []
        self._segments_started = 0
        self._unserializable = 0
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Recover the chain (cut a torn tail, then a ``recovery`` record), make it
        durable, then start the writer thread. Blocking: call before serving.

        Raises:
            AuditRecoveryError: the chain is damaged beyond a crash's torn tail.
            OSError: the directory cannot be written.
        """
        if self._thread is not None:
            raise RuntimeError("the audit writer is already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_chain()
        recovered = recover(self.directory, self.worker_id)
        if recovered is None:
            self._open_segment(1, None)
        else:
            self._resume(recovered.segment, recovered.size_bytes, recovered.head)
            if recovered.segment_started_ts_ms is None:
                self._write_segment_start(recovered.head)
            else:
                self._segment_started_s = recovered.segment_started_ts_ms / 1000.0
            torn = recovered.torn_file
            self._append(
                "recovery",
                self._now_ms(),
                {
                    "segment": recovered.segment.path.name,
                    "resumed_after_seq": recovered.head.seq if recovered.head else None,
                    "cut_bytes": recovered.cut_bytes,
                    "cut_lines": recovered.cut_lines,
                    "whole_records_cut": recovered.whole_records_cut,
                    "cut_reason": recovered.cut_reason,
                    "torn_file": torn.name if torn is not None else None,
                },
            )
        self._commit()
        self._thread = threading.Thread(
            target=self._run, name=f"audit-writer-{self.worker_id}", daemon=True
        )
        self._thread.start()

    async def close(self) -> None:
        """Write and fsync everything accepted, then stop the thread (off the loop)."""
        await asyncio.to_thread(self.close_blocking)

    def close_blocking(self, timeout_s: float | None = None) -> None:
        """:meth:`close` for synchronous callers."""
        with self._lock:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("audit writer did not finish within %s s", timeout_s)
                return
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the chain's lock
            self._lock_fd = -1
        if self._otel is not None:
            self._otel.shutdown()

    def _lock_chain(self) -> None:
        """Hold ``w<worker>.lock`` for the writer's life: two processes appending to one
        chain would interleave records and break it, so the second one fails to start.
        The kernel drops the lock when the process dies, kill -9 included."""
        path = self.directory / f"w{self.worker_id:03d}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditChainBusy(
                f"another process writes audit chain w{self.worker_id:03d} in "
                f"{self.directory} (give each server its own audit.directory or "
                "audit.worker_id)"
            ) from None
        self._lock_fd = fd

    # -- submitting --------------------------------------------------------------------

    def submit(self, item: PendingRecords) -> int:
        """Queue ``item`` if there is room; never blocks.

        Returns:
            Its ticket: :meth:`flush` / :attr:`committed` reaching it means it is durable.

        Raises:
            AuditQueueFull: no room (counted).
            AuditWriterFailed: the writer failed or is closed.
        """
        with self._lock:
            ticket = self._put_locked(item)
            if ticket:
                return ticket
            self._count_full_locked(item)
        raise AuditQueueFull(self._full_message(0.0))

    def try_submit(self, item: PendingRecords) -> int:
        """:meth:`submit` that answers 0 instead of raising when the queue is full, and
        counts nothing: for a caller that will wait next (:meth:`submit_or_wait`).

        Raises:
            AuditWriterFailed: the writer failed or is closed.
        """
        with self._lock:
            return self._put_locked(item)

    async def submit_or_wait(self, item: PendingRecords, timeout_ms: float | None = None) -> int:
        """Queue ``item``, waiting up to ``timeout_ms`` (default ``block_ms``) for room.

        Returns its ticket as :meth:`submit` does. Waiting parks the coroutine, never
        the loop: the writer thread wakes it when it takes the queue.

        Raises:
            AuditQueueFull: still no room after the wait (counted).
            AuditWriterFailed: the writer failed or is closed.
        """
        with self._lock:
            ticket = self._put_locked(item)
        if ticket:
            return ticket
        wait_ms = self.settings.block_ms if timeout_ms is None else timeout_ms
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000.0
        while True:
            room: asyncio.Future[None] = loop.create_future()
            with self._lock:
                ticket = self._put_locked(item)
                if ticket:
                    return ticket
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self._count_full_locked(item)
                    break
                self._room_waiters.append((loop, room))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(room, remaining)
        raise AuditQueueFull(self._full_message(wait_ms))

    def submit_blocking(self, item: PendingRecords, timeout_ms: float | None = None) -> int:
        """:meth:`submit_or_wait` for synchronous callers (blocks the calling thread)."""
        wait_s = (self.settings.block_ms if timeout_ms is None else timeout_ms) / 1000.0
        deadline = time.monotonic() + wait_s
        with self._lock:
            while True:
                ticket = self._put_locked(item)
                if ticket:
                    return ticket
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._count_full_locked(item)
                    break
                self._room.wait(remaining)
        raise AuditQueueFull(self._full_message(wait_s * 1000.0))

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Have everything accepted so far written and fsynced now; wait for it.

        Returns:
            True when it is durable, False on timeout or when the writer has failed.
        """
        with self._lock:
            target = self._accepted
            if self._committed >= target:
                return True
            self._flush_wanted = max(self._flush_wanted, target)
            self._wake.notify()
            ok = self._durable.wait_for(
                lambda: self._committed >= target or self._failure is not None, timeout_s
            )
            return bool(ok) and self._committed >= target

    def _put_locked(self, item: PendingRecords) -> int:
        if self._failure is not None or self._closing:
            raise AuditWriterFailed(self._failed_message())
        n = item.record_count
        # An item bigger than the whole queue still goes in when the queue is empty.
        if self._depth and self._depth + n > self._capacity:
            return 0
        if not self._queue:
            self._queued_since = time.monotonic()
        self._queue.append(item)
        self._depth += n
        self._accepted += n
        if self._writer_waiting and self._depth >= self._wake_depth:
            self._writer_waiting = False
            self._wake.notify()  # a full batch; otherwise the writer's clock takes it
        return self._accepted

    def _count_full_locked(self, item: PendingRecords) -> None:
        n = item.record_count
        self._queue_full += n
        self._queue_full_by_kind[item.kind] = self._queue_full_by_kind.get(item.kind, 0) + n

    def _full_message(self, waited_ms: float) -> str:
        return (
            f"the audit log's queue ({self._capacity} records) stayed full for "
            f"{waited_ms:g} ms: the writer is behind the traffic"
        )

    def _failed_message(self) -> str:
        if self._failure is not None:
            return f"the audit writer has stopped: {self._failure!r}"
        return "the audit writer is closed"

    # -- counters ----------------------------------------------------------------------

    @property
    def accepted(self) -> int:
        return self._accepted

    @property
    def written(self) -> int:
        return self._written

    @property
    def committed(self) -> int:
        """Records accepted and fsynced (the ticket :meth:`submit` returned reached)."""
        return self._committed

    @property
    def committed_seq(self) -> int:
        """seq of the last record known to be on disk (fsynced); -1 before the first."""
        return self._committed_seq

    @property
    def fsyncs(self) -> int:
        return self._fsyncs

    @property
    def queue_full(self) -> int:
        return self._queue_full

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def stats(self) -> AuditStats:
        with self._lock:
            return AuditStats(
                accepted=self._accepted,
                written=self._written,
                committed=self._committed,
                committed_seq=self._committed_seq,
                fsyncs=self._fsyncs,
                queue_full=self._queue_full,
                queue_full_by_kind=dict(self._queue_full_by_kind),
                depth=self._depth,
                segments_started=self._segments_started,
                unserializable=self._unserializable,
                lost=self._lost,
                failed=self._failure is not None,
            )

    def collect(self) -> Iterator[Metric]:
        """The writer's counters as Prometheus metrics (a prometheus_client Collector)."""
        s = self.stats()
        for name, doc, value in (
            ("riskwire_audit_records_accepted", "Audit records taken into the queue", s.accepted),
            ("riskwire_audit_records_written", "Audit records written to a segment", s.written),
            ("riskwire_audit_records_committed", "Audit records written and fsynced", s.committed),
            ("riskwire_audit_fsyncs", "fsync calls of the audit writer (group commits)", s.fsyncs),
            ("riskwire_audit_segments_started", "Audit segments started", s.segments_started),
            (
                "riskwire_audit_records_unserializable",
                "Audit records written as error records: the payload was not serializable",
                s.unserializable,
            ),
            (
                "riskwire_audit_records_lost",
                "Audit records accepted but never written: the writer failed",
                s.lost,
            ),
        ):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], value)
            yield counter
        full = CounterMetricFamily(
            "riskwire_audit_queue_full",
            "Audit records refused because the queue stayed full (the call got on_full)",
            labels=["kind"],
        )
        for kind, n in sorted(s.queue_full_by_kind.items()):
            full.add_metric([kind], n)
        yield full
        for name, doc, gauge_value in (
            ("riskwire_audit_queue_records", "Audit records waiting for the writer", s.depth),
            (
                "riskwire_audit_committed_seq",
                "seq of the last fsynced audit record",
                s.committed_seq,
            ),
            ("riskwire_audit_writer_failed", "1 when the audit writer has stopped", int(s.failed)),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], gauge_value)
            yield gauge

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        name_this_thread()
        try:
            while self._cycle():
                pass
        except BaseException as exc:
            self._fail(exc)

    def _cycle(self) -> bool:
        """Take the queue, write it, commit when due; False once closed and drained."""
        with self._lock:
            while not (self._closing or self._flush_wanted > self._committed):
                if self._depth >= self._wake_depth:
                    break
                timeout = self._gather_s
                if self._queue:
                    timeout = self._queued_since + self._gather_s - time.monotonic()
                due = self._commit_due_in()
                if due is not None:
                    timeout = min(timeout, due)
                if timeout <= 0:
                    break
                self._writer_waiting = True
                self._wake.wait(timeout)
                self._writer_waiting = False
            items = self._queue
            self._queue = collections.deque()
            self._depth = 0
            closing = self._closing
            waiters = self._room_waiters
            self._room_waiters = []
            if items:
                self._room.notify_all()
        _wake_all(waiters)
        while items:
            self._write_item(items[0])
            items.popleft()
        self._write_out()
        if self._unsynced:
            due = self._commit_due_in()
            if closing or self._flush_wanted > self._committed or (due is not None and due <= 0):
                self._commit()
        if closing:
            with self._lock:
                if not self._queue:
                    return False
        return True

    def _commit_due_in(self) -> float | None:
        """Seconds until the interval forces an fsync; None when nothing is unsynced."""
        if not self._unsynced:
            return None
        interval_s = self.settings.fsync_interval_ms / 1000.0
        return self._unsynced_since + interval_s - time.monotonic()

    def _write_item(self, item: PendingRecords) -> None:
        built = getattr(item, "canonical_payloads", None)
        if built is not None:
            try:
                payloads = built(self._hash)
            except Exception:  # the record-by-record path below records it
                payloads = None
            if payloads is not None and len(payloads[1]) == item.record_count:
                self._append_payloads(item.kind, *payloads)
                return
        made = 0
        produced = iter(item.expand(self._hash))
        while True:
            # Only building a record is caught here; a write error stops the writer.
            try:
                ts_ms, payload = next(produced)
            except StopIteration:
                # Fewer than declared: the missing ones are recorded as such, so that
                # the counts (and flush()) still add up.
                error = {"error": "the item produced fewer records than it declared"}
                for _ in range(item.record_count - made):
                    self._append(item.kind, self._now_ms(), error, user=True)
                return
            except Exception as exc:
                log.exception("audit: building %s records failed", item.kind)
                error = {"error": "the record could not be built", "detail": repr(exc)[:2000]}
                for _ in range(item.record_count - made):
                    self._append(item.kind, self._now_ms(), error, user=True)
                return
            self._append(item.kind, ts_ms, payload, user=True)
            made += 1

    def _append(
        self,
        kind: RecordKind,
        ts_ms: int,
        payload: Mapping[str, Any] | CanonicalJSON,
        *,
        user: bool = False,
    ) -> None:
        """Seal one record onto the chain (rotating first when due) and buffer its line.

        ``user``: a submitted record (counted in written / committed), not one of the
        writer's own (segment_start, recovery).
        """
        if self._segment_aged():
            self._rotate()
        digest, line = self._seal(kind, ts_ms, payload)
        if (
            self._segment_records > 1
            and self._segment_bytes + len(line) > self.settings.segment_max_bytes
        ):
            self._rotate()
            digest, line = self._seal(kind, ts_ms, payload)
        self._buffer_lines(kind, ts_ms, digest, line, [len(line)], user=user)

    def _segment_aged(self) -> bool:
        """Whether the open segment is due to rotate by age."""
        return bool(self._segment_records) and (
            self._clock() - self._segment_started_s >= self.settings.segment_max_age_s
        )

    def _buffer_lines(
        self,
        kind: RecordKind,
        ts_ms: int,
        digest: str,
        lines: bytes,
        ends: list[int],
        *,
        user: bool,
    ) -> None:
        """Take sealed lines onto the chain (``ends``: each one's end in ``lines``; the
        last one's ``digest``): seq, prev, the buffer, the segment's size and the
        unsynced count move on; then the group commit or a write when due."""
        first_seq = self._seq + 1
        n = len(ends)
        self._seq += n
        self._prev = digest
        self._buffer += lines
        self._segment_bytes += len(lines)
        self._segment_records += n
        if not self._unsynced:
            self._unsynced_since = time.monotonic()
        self._unsynced += n
        if user:
            self._written += n
            self._user_unsynced += n
        if self._otel is not None:
            start = 0
            for i, end in enumerate(ends):
                self._otel_pending.append((lines[start:end], first_seq + i, ts_ms, kind))
                start = end
        if self._unsynced >= self.settings.fsync_every_records:
            self._commit()
        elif len(self._buffer) >= WRITE_CHUNK_BYTES:
            self._write_out()

    def _append_payloads(self, kind: RecordKind, ts_ms: int, payloads: list[bytes]) -> None:
        """:meth:`_append` of each canonical payload as a submitted record, sealed many to
        a call (records.seal_lines): the same lines, commits and rotations. Runs of up
        to the next group commit are sealed at once; from where a segment would rotate
        (or a payload is refused) on, record by record."""
        settings = self.settings
        done = 0
        while done < len(payloads):
            if self._segment_aged():
                break
            run = payloads[done : done + max(settings.fsync_every_records - self._unsynced, 1)]
            try:
                digest, lines, ends = seal_lines(
                    seq=self._seq + 1,
                    ts_ms=ts_ms,
                    kind=kind,
                    worker=self.worker_id,
                    key_id=self.key_id,
                    payloads=run,
                    prev=self._prev,
                )
            except (TypeError, ValueError):
                break
            if self._segment_bytes + len(lines) > settings.segment_max_bytes:
                break  # a rotation inside the run: _append finds where
            self._buffer_lines(kind, ts_ms, digest, lines, ends, user=True)
            done += len(run)
        for payload in payloads[done:]:
            self._append(kind, ts_ms, CanonicalJSON(payload), user=True)

    def _seal(
        self, kind: RecordKind, ts_ms: int, payload: Mapping[str, Any] | CanonicalJSON
    ) -> tuple[str, bytes]:
        def sealed(body: Mapping[str, Any] | CanonicalJSON) -> tuple[str, bytes]:
            return seal(
                seq=self._seq + 1,
                ts_ms=ts_ms,
                kind=kind,
                worker=self.worker_id,
                key_id=self.key_id,
                payload=body,
                prev=self._prev,
            )

        try:
            return sealed(payload)
        except (TypeError, ValueError) as exc:
            self._unserializable += 1
            return sealed(
                {
                    "error": "unserializable payload",
                    "detail": str(exc)[:500],
                    "repr": repr(payload)[:4000],
                }
            )

    def _write_out(self) -> None:
        view = memoryview(self._buffer)
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        finally:
            view.release()
            del self._buffer[:done]

    def _commit(self) -> None:
        self._write_out()
        os.fsync(self._fd)
        self._unsynced = 0
        with self._lock:
            self._fsyncs += 1
            self._committed_seq = self._seq
            self._committed += self._user_unsynced
            self._user_unsynced = 0
            self._durable.notify_all()
        if self._otel is not None:
            # Only durable records leave: the copy never runs ahead of the disk.
            for line, seq, ts_ms, kind in self._otel_pending:
                self._otel.emit(line, seq, ts_ms, kind, self.worker_id)
            self._otel_pending.clear()

    def _rotate(self) -> None:
        """Close the segment durably, open the next, link it to the chain's head."""
        assert self._segment is not None
        self._commit()
        os.close(self._fd)
        self._fd = -1
        self._open_segment(self._segment.index + 1, ChainHead(self._seq, self._prev, 0))

    def _open_segment(self, index: int, head: ChainHead | None) -> None:
        path = self.directory / segment_name(self.worker_id, index)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fsync_directory(self.directory)
        self._segment = Segment(self.worker_id, index, path)
        self._segment_bytes = 0
        self._segment_records = 0
        self._write_segment_start(head)

    def _resume(self, segment: Segment, size_bytes: int, head: ChainHead | None) -> None:
        self._fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND)
        self._segment = segment
        self._segment_bytes = size_bytes
        self._segment_records = 0 if size_bytes == 0 else 2  # not empty: may rotate
        if head is not None:
            self._seq = head.seq
            self._prev = head.digest

    def _write_segment_start(self, head: ChainHead | None) -> None:
        assert self._segment is not None
        if head is None:
            self._seq, self._prev = -1, GENESIS
        self._segment_started_s = self._clock()
        self._segments_started += 1
        previous = (
            segment_name(self.worker_id, self._segment.index - 1)
            if self._segment.index > 1
            else None
        )
        self._append(
            "segment_start",
            int(self._segment_started_s * 1000),
            {
                "segment": self._segment.path.name,
                "index": self._segment.index,
                "previous_segment": previous,
            },
        )

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _fail(self, exc: BaseException) -> None:
        log.critical("audit writer stopped: %r; nothing more will be recorded", exc, exc_info=exc)
        with self._lock:
            self._failure = exc
            self._lost += self._accepted - self._written
            self._queue.clear()
            self._depth = 0
            waiters = self._room_waiters
            self._room_waiters = []
            self._room.notify_all()
            self._durable.notify_all()
        _wake_all(waiters)


def _wake_future(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _wake_all(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    """Wake coroutines waiting for room, each on its own loop (from the writer thread)."""
    for loop, room in waiters:
        # A closed loop raises RuntimeError: nobody is waiting there any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_wake_future, room)


GATHER_MS = 50
"""Longest a queued record waits for the writer (the default fsync interval)."""


class AuditChainBusy(OSError):
    """The worker's chain is already being written by another live process."""


def open_writer(
    settings: AuditSettings, worker_index: int = 0, *, otel: OtelAuditLogs | None = None
) -> AuditWriter:
    """An :class:`AuditWriter` for ``settings``, with OpenTelemetry logs when an OTLP
    endpoint is configured in the environment (``otel`` overrides), not yet started."""
    if otel is None:
        otel = OtelAuditLogs.from_environment()
    return AuditWriter(settings, worker_index, otel=otel)


__all__ = [
    "AuditChainBusy",
    "AuditEvent",
    "AuditQueueFull",
    "AuditStats",
    "AuditUnavailable",
    "AuditWriter",
    "AuditWriterFailed",
    "PendingRecords",
    "now_ms",
    "open_writer",
]
