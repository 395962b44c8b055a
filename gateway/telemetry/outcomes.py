"""Delayed labels: join reported outcomes to logged predictions, and watch performance.

Labels (chargebacks, confirmed fraud, cleared reviews) arrive days or weeks after the
decision, long after the request is gone. So every answered prediction is logged
with what the join and the reports need (route, model version, arm, score, decision,
amount, monitoring attributes), and ``ReportOutcome`` finds it by transaction id.
The store is SQLite: embedded, one file, it survives restarts, and in WAL mode the
worker processes of one host can share it (a label reported to one worker joins a
prediction another logged).

Nothing on the serving path touches the disk. ``log_predictions`` appends to a
bounded in-memory queue (a full queue drops the rows and counts them: the answer to
the caller matters more than the record of it). One writer thread owns the write
connection: it flushes the queue in one transaction per flush, and runs the joins
as jobs *after* a flush, so a label reported right after its score still finds it.
Reports (rolling performance, fairness) run on a second, read-only connection and
thread (WAL readers never wait for the writer), so a heavy report never holds up
flushes. The event loop awaits both through futures.

Semantics worth knowing:

- A transaction id scored twice keeps its newest prediction; a repeated report for
  an id replaces its label (the last report wins: corrections and chargeback
  reversals are reported again).
- Rolling figures cover MODEL decisions (a fallback answer is the route's policy,
  not the model's) scored in the last ``window_days``, at most the newest
  ``window_labels`` labelled ones per (route, model, version, arm).
- The confusion matrix reads the logged decision: DECLINE is the positive
  prediction, i.e. the decline threshold in force when the transaction was scored
  (the route's ``decision``, else the card's). The card's validation figures are at
  the card's threshold; a route that overrides it is judged at what it serves.
- Retention: predictions scored, and outcomes reported, more than
  ``retention_days`` ago are deleted, and outcomes go with their prediction; past
  ``max_rows`` the oldest predictions go first. A label that arrives after its
  prediction was deleted answers NOT_FOUND.
- A crash loses what was still queued (at most ``flush_interval_ms`` of traffic,
  or ``flush_rows`` rows); ``close`` flushes everything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.decisions import DecisionSource
from gateway.errors import ErrorKind, GatewayError, invalid
from gateway.models.card import CARD_FILE, CardError, Metrics, ModelCard
from gateway.telemetry.fairness import FairnessMonitor, FairnessSettings
from gateway.threadnames import name_this_thread
from router.routes import ArmRole, Decision

if TYPE_CHECKING:
    from gateway.dataplane import ScoreResult

log = logging.getLogger("riskwire.outcomes")

T = TypeVar("T")

DAY_S = 86_400.0
PRUNE_INTERVAL_S = 60.0
"""How often the writer thread applies retention and ``max_rows``."""
BUSY_TIMEOUT_MS = 5_000
"""How long a statement waits for another process's write lock (shared file)."""

CardFigures = Callable[[str, int], Metrics | None]
"""``(model, version) -> the card's validation metrics``, None when unknown."""

GroupKey = tuple[str, str, int, str]
"""(route, model, version, arm)."""


class OutcomeSettings(BaseModel):
    """The outcome store (gateway/telemetry/outcomes.py): predictions logged for the
    delayed-label join, rolling performance and its degradation alert."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    """Log predictions and serve ReportOutcome; false: no store (ReportOutcome answers
    FAILED_PRECONDITION, as do the Admin performance and fairness calls)."""
    path: Path | None = None
    """The SQLite file; its directory is created. Worker processes share it. Unset:
    ``outcomes.sqlite3`` in the server's ``state_dir``."""
    retention_days: float = Field(120.0, gt=0.0)
    """Predictions scored, and outcomes reported, longer ago are deleted. Longer than
    the slowest label you expect: card chargebacks can take 120 days."""
    max_rows: int = Field(5_000_000, ge=1)
    """Hard cap on stored predictions (about 200 bytes each); past it the oldest go."""
    flush_interval_ms: int = Field(200, ge=1, le=60_000)
    """Longest a logged prediction waits in memory before the writer thread stores it."""
    flush_rows: int = Field(1024, ge=1)
    """Queued predictions that wake the writer before ``flush_interval_ms``."""
    queue_rows: int = Field(65_536, ge=1)
    """Most predictions waiting for the writer; more are dropped and counted
    (riskwire_predictions_dropped_total), never waited for."""
    window_days: float = Field(30.0, gt=0.0)
    """Rolling performance and fairness cover predictions scored this recently."""
    window_labels: int = Field(100_000, ge=1)
    """At most this many of the newest labelled predictions per (route, model, version,
    arm) enter the rolling performance."""
    degradation_tolerance: float = Field(0.1, ge=0.0, le=1.0)
    """Degraded when rolling precision or recall at decline falls below the card's
    figure minus this, or AUC below the card's AUC minus this (absolute, in the
    figure's own units)."""
    min_labels: int = Field(500, ge=1)
    """Labels a group needs in the window before it can be called degraded (fraud is
    rare: 500 labels at 1% fraud hold about 5 frauds, so raise it for a firmer call)."""
    report_refresh_s: float = Field(30.0, gt=0.0)
    """The /metrics gauges show reports at most this old; a scrape never waits for SQL,
    it asks for a refresh in the background when the one it reads is older."""

    @model_validator(mode="after")
    def _consistent(self) -> OutcomeSettings:
        if self.flush_rows > self.queue_rows:
            raise ValueError(
                f"flush_rows ({self.flush_rows}) must not exceed queue_rows ({self.queue_rows})"
            )
        if self.window_days > self.retention_days:
            raise ValueError(
                f"window_days ({self.window_days}) must not exceed retention_days "
                f"({self.retention_days}): the window would reach deleted rows"
            )
        return self


class PredictionRecord(NamedTuple):
    """One answered prediction, as the join and the reports need it (a NamedTuple:
    one is built per answered transaction on the serving path; see ScoreResult)."""

    transaction_id: str
    route: str
    model: str
    version: int
    arm: ArmRole
    score: float
    decision: Decision
    source: DecisionSource
    amount_usd: float
    attributes: Mapping[str, str]
    """The transaction's ``monitoring_attributes``: read by fairness reports only."""
    scored_at: float
    """Unix epoch seconds."""

    @classmethod
    def from_result(
        cls,
        result: ScoreResult,
        amount_usd: float,
        attributes: Mapping[str, str],
        scored_at: float,
    ) -> PredictionRecord:
        """The record of one data-plane answer."""
        # Positional, in field order: one per answered transaction on the serving path.
        return cls(
            result.transaction_id,
            result.route,
            result.model_name,
            result.model_version,
            result.arm,
            result.score,
            result.decision,
            result.source,
            amount_usd,
            attributes,
            scored_at,
        )


@dataclass(frozen=True, slots=True)
class JoinedOutcome:
    """A reported label and the prediction it joined."""

    transaction_id: str
    label: bool
    amount_usd: float
    """The reported amount, else the scored transaction's."""
    reported_at: float
    prediction: PredictionRecord
    updated: bool
    """An earlier report for this id existed; its label was replaced."""


class UnknownTransaction(GatewayError):
    """No logged prediction has this transaction id (never scored here, dropped from a
    full queue, or past retention)."""

    def __init__(self, transaction_id: str) -> None:
        super().__init__(
            ErrorKind.NOT_FOUND,
            f"no prediction logged for transaction_id {transaction_id!r}: never scored "
            "here, dropped under load, or older than the outcome store's retention",
        )
        self.transaction_id = transaction_id


class StoreClosed(GatewayError):
    """The store was closed (shutdown)."""

    def __init__(self) -> None:
        super().__init__(ErrorKind.UNAVAILABLE, "the outcome store is closed (shutting down)")


@dataclass(frozen=True, slots=True)
class Confusion:
    """Counts of one binary decision against the labels."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float | None:
        """tp / (tp + fp); None with no positive predictions."""
        flagged = self.tp + self.fp
        return self.tp / flagged if flagged else None

    @property
    def recall(self) -> float | None:
        """tp / (tp + fn); None with no positive labels."""
        positives = self.tp + self.fn
        return self.tp / positives if positives else None


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    """Rolling performance of one (route, model, version, arm) on labelled predictions."""

    route: str
    model: str
    version: int
    arm: str
    labelled: int
    positives: int
    decline: Confusion
    """Positive prediction: DECLINE (the decision threshold)."""
    flagged: Confusion
    """Positive prediction: REVIEW or DECLINE (the review threshold)."""
    auc: float | None
    """Rank-based (ties count half); None when the window holds one class only."""
    fraud_caught_usd: float
    """Labelled-fraud amount that was declined (true positives at decline)."""
    fraud_missed_usd: float
    """Labelled-fraud amount that was not declined (false negatives at decline)."""
    degraded: bool
    reasons: tuple[str, ...]
    """Why it is degraded: one line per figure below the card's."""
    card: Metrics | None
    """The card's validation figures compared with; None when unknown."""
    window_start: float
    """Unix epoch seconds: the oldest scoring time the window admits."""

    @property
    def precision(self) -> float | None:
        """Precision at decline."""
        return self.decline.precision

    @property
    def recall(self) -> float | None:
        """Recall at decline."""
        return self.decline.recall


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """What the store has counted since it started (this process only)."""

    predictions_logged: int
    predictions_dropped_queue_full: int
    predictions_dropped_write_error: int
    outcomes_joined: int
    outcomes_unknown: int
    fraud_caught_usd: Mapping[GroupKey, float] = field(default_factory=dict)
    fraud_missed_usd: Mapping[GroupKey, float] = field(default_factory=dict)


def rank_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float | None:
    """Area under the ROC curve by the Mann-Whitney U statistic, ties counted half.

    Returns None when ``labels`` holds only one class (AUC is undefined).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    positives = int(y.sum())
    negatives = int(y.size - positives)
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # The average 1-based rank of each distinct score: tied scores share it.
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = float(average_rank[inverse][y].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def _confusion(predicted: npt.NDArray[np.bool_], labels: npt.NDArray[np.bool_]) -> Confusion:
    tp = int(np.count_nonzero(predicted & labels))
    fp = int(np.count_nonzero(predicted & ~labels))
    fn = int(np.count_nonzero(~predicted & labels))
    return Confusion(tp=tp, fp=fp, tn=int(labels.size) - tp - fp - fn, fn=fn)


def degradation(
    decline: Confusion,
    auc: float | None,
    labelled: int,
    card: Metrics | None,
    settings: OutcomeSettings,
) -> tuple[str, ...]:
    """Why the rolling figures are worse than the card's; empty when they are not.

    Nothing is judged below ``settings.min_labels`` labels, nor a figure the window
    cannot define (no declines: no precision; no frauds: no recall).
    """
    if card is None or labelled < settings.min_labels:
        return ()
    tolerance = settings.degradation_tolerance
    checks = (
        ("precision at decline", decline.precision, card.precision_at_decline),
        ("recall at decline", decline.recall, card.recall_at_decline),
        ("auc", auc, card.auc),
    )
    return tuple(
        f"{name} {value:.4f} is below the card's {expected:.4f} - tolerance {tolerance:g} "
        f"over {labelled} labels"
        for name, value, expected in checks
        if value is not None and value < expected - tolerance
    )


def performance_report(
    key: GroupKey,
    scores: npt.ArrayLike,
    decisions: Sequence[str],
    labels: npt.ArrayLike,
    amounts_usd: npt.ArrayLike,
    card: Metrics | None,
    settings: OutcomeSettings,
    window_start: float,
) -> PerformanceReport:
    """The report of one group's labelled predictions (pure: no store needed)."""
    y = np.asarray(labels, dtype=bool)
    amounts = np.asarray(amounts_usd, dtype=np.float64)
    decided = np.asarray(decisions, dtype=object)
    declined = decided == Decision.DECLINE.value
    flagged = declined | (decided == Decision.REVIEW.value)
    decline = _confusion(declined, y)
    auc = rank_auc(scores, y)
    reasons = degradation(decline, auc, int(y.size), card, settings)
    route, model, version, arm = key
    return PerformanceReport(
        route=route,
        model=model,
        version=version,
        arm=arm,
        labelled=int(y.size),
        positives=int(y.sum()),
        decline=decline,
        flagged=_confusion(flagged, y),
        auc=auc,
        fraud_caught_usd=float(amounts[declined & y].sum()),
        fraud_missed_usd=float(amounts[~declined & y].sum()),
        degraded=bool(reasons),
        reasons=reasons,
        card=card,
        window_start=window_start,
    )


def card_figures_from(repository_root: Path) -> CardFigures:
    """Card metrics read from ``<root>/<model>/<version>/card.yaml``, cached per version.

    From disk rather than from the loaded models: it runs on the report thread, and
    a version's card never changes (a retrained model is a new version). A card that
    cannot be read gives None (no comparison), and is tried again next time.
    """
    cache: dict[tuple[str, int], Metrics] = {}

    def figures(model: str, version: int) -> Metrics | None:
        key = (model, version)
        if key not in cache:
            try:
                card = ModelCard.load(repository_root / model / str(version) / CARD_FILE)
            except CardError:
                return None
            cache[key] = card.metrics
        return cache[key]

    return figures


_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    transaction_id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    arm TEXT NOT NULL,
    score REAL NOT NULL,
    decision TEXT NOT NULL,
    source TEXT NOT NULL,
    amount_usd REAL NOT NULL,
    attributes TEXT NOT NULL,
    scored_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_scored_at ON predictions (scored_at);
CREATE TABLE IF NOT EXISTS outcomes (
    transaction_id TEXT PRIMARY KEY,
    label INTEGER NOT NULL,
    amount_usd REAL,
    reported_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_reported_at ON outcomes (reported_at);
"""

_INSERT = "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_CHUNK_ROWS = 90
"""Rows per multi-row INSERT: 990 parameters, within the 999 of SQLite builds before
3.32. One statement step for 90 rows instead of 90: each step hands the GIL back and
forth with the event loop, and the handoffs cost the loop more than the inserts
(benchmarks/README.md, "Where the handler's time goes")."""
_INSERT_CHUNK = "INSERT OR REPLACE INTO predictions VALUES " + ",".join(
    ["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * INSERT_CHUNK_ROWS
)
_COLUMNS = (
    "transaction_id, route, model, version, arm, score, decision, source, amount_usd, "
    "attributes, scored_at"
)

# Newest `window_labels` labelled MODEL predictions per group, scored in the window.
# CROSS JOIN keeps SQLite from driving the join by the scored_at index: labels are
# usually far fewer than predictions, so scan them and look predictions up by id.
_LABELLED = """
SELECT route, model, version, arm, score, decision, label, amount FROM (
    SELECT p.route, p.model, p.version, p.arm, p.score, p.decision, o.label,
           COALESCE(o.amount_usd, p.amount_usd) AS amount,
           ROW_NUMBER() OVER (
               PARTITION BY p.route, p.model, p.version, p.arm ORDER BY p.scored_at DESC
           ) AS newest
    FROM outcomes AS o CROSS JOIN predictions AS p ON p.transaction_id = o.transaction_id
    WHERE p.scored_at >= ? AND p.source = 'MODEL'
)
WHERE newest <= ?
ORDER BY route, model, version, arm
"""


ATTRIBUTES_JSON_CACHE = 4096
"""Distinct monitoring-attribute sets whose JSON the writer keeps (then starts over)."""

_attributes_json: dict[tuple[tuple[str, str], ...], str] = {}


def attributes_json(attributes: Mapping[str, str]) -> str:
    """A row's ``attributes`` column: the mapping as compact JSON, keys sorted.

    Transactions carry few distinct attribute sets (a region, an age band), so each
    set's text is kept, not serialized again per prediction (~7 us a row on the
    writer thread).
    """
    key = tuple(sorted(attributes.items()))
    try:
        text = _attributes_json.get(key)
    except TypeError:  # an unhashable value: no caching, the same text
        return json.dumps(dict(key), separators=(",", ":"))
    if text is None:
        text = json.dumps(dict(key), separators=(",", ":"))
        if len(_attributes_json) >= ATTRIBUTES_JSON_CACHE:
            _attributes_json.clear()
        _attributes_json[key] = text
    return text


def _row(record: PredictionRecord) -> tuple[Any, ...]:
    attributes = attributes_json(record.attributes)
    return (
        record.transaction_id,
        record.route,
        record.model,
        record.version,
        str(record.arm),
        record.score,
        str(record.decision),
        str(record.source),
        record.amount_usd,
        attributes,
        record.scored_at,
    )


def _record(row: Sequence[Any]) -> PredictionRecord:
    return PredictionRecord(
        transaction_id=row[0],
        route=row[1],
        model=row[2],
        version=int(row[3]),
        arm=ArmRole(row[4]),
        score=float(row[5]),
        decision=Decision(row[6]),
        source=DecisionSource(row[7]),
        amount_usd=float(row[8]),
        attributes=json.loads(row[9]),
        scored_at=float(row[10]),
    )


_STOP = object()
_WAKE = object()


class _SqliteThread:
    """One thread, one sqlite3 connection, jobs run in order.

    sqlite3 connections are bound to the thread that made them; a job is a function
    of the connection, its result or exception delivered through a future.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        tick: Callable[[sqlite3.Connection], None] | None = None,
        tick_s: float | None = None,
    ) -> None:
        self._name = name
        self._connect = connect
        self._tick = tick
        self._tick_s = tick_s
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=self._name)
        self._thread.daemon = True
        self._thread.start()
        ready.wait()
        if self._failed is not None:
            self._thread.join()
            raise self._failed

    def submit(self, job: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((job, future))
        return future

    def wake(self) -> None:
        self._jobs.put(_WAKE)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._jobs.put(_STOP)
        self._thread.join()
        self._thread = None

    def _run(self, ready: threading.Event) -> None:
        name_this_thread()
        try:
            connection = self._connect()
        except BaseException as exc:
            self._failed = exc
            ready.set()
            return
        ready.set()
        try:
            while True:
                try:
                    item = self._jobs.get(timeout=self._tick_s)
                except queue.Empty:
                    item = None
                if self._tick is not None:
                    self._tick(connection)
                if item is _STOP:
                    break
                if item is None or item is _WAKE:
                    continue
                job, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(job(connection))
                except BaseException as exc:
                    future.set_exception(exc)
        finally:
            # Whatever was submitted after the stop: refused, never left waiting.
            while True:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, tuple) and item[1].set_running_or_notify_cancel():
                    item[1].set_exception(StoreClosed())
            connection.close()


class Snapshot(Generic[T]):
    """A report computed in the background, at most every ``refresh_s``.

    ``get`` never waits: it returns the latest value (``empty`` before the first) and,
    when that is older than ``refresh_s``, asks for a new one. /metrics is served on
    the event loop, so a scrape must never run SQL itself.
    """

    def __init__(
        self,
        submit: Callable[[Callable[[sqlite3.Connection], T]], concurrent.futures.Future[T]],
        compute: Callable[[sqlite3.Connection], T],
        empty: T,
        refresh_s: float,
    ) -> None:
        self._submit = submit
        self._compute = compute
        self._value = empty
        self._refresh_s = refresh_s
        self._computed_at = -math.inf
        self._pending = False
        self._lock = threading.Lock()

    def get(self) -> T:
        """The latest value; a refresh is requested in the background when stale."""
        with self._lock:
            stale = time.monotonic() - self._computed_at >= self._refresh_s
            request = stale and not self._pending
            if request:
                self._pending = True
        if request:
            try:
                future = self._submit(self._compute)
            except StoreClosed:
                with self._lock:
                    self._pending = False
            else:
                future.add_done_callback(self._done)
        return self._value

    def set(self, value: T) -> T:
        """Store a value computed elsewhere (a synchronous refresh)."""
        with self._lock:
            self._value = value
            self._computed_at = time.monotonic()
        return value

    def _done(self, future: concurrent.futures.Future[T]) -> None:
        with self._lock:
            self._pending = False
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            if not isinstance(error, StoreClosed):
                log.error("outcome report refresh failed: %s", error)
            return
        self.set(future.result())


class OutcomeStore:
    """Predictions logged for the delayed-label join, and the reports over them.

    Lifecycle: ``start()`` (opens the file, creates the tables, starts the threads),
    then ``close()`` (flushes everything). Also a context manager.
    """

    def __init__(
        self,
        settings: OutcomeSettings,
        card_figures: CardFigures | None = None,
        *,
        fairness: FairnessSettings | None = None,
    ) -> None:
        self.settings = settings
        self.path = settings.path if settings.path is not None else Path("outcomes.sqlite3")
        """The SQLite file (the server passes one under its state_dir)."""
        self._card_figures: CardFigures = card_figures or (lambda model, version: None)
        self._lock = threading.Lock()
        self._pending: list[PredictionRecord] = []
        self._wake_requested = False
        self._started = False
        self._closed = False
        self._logged = 0
        self._dropped_full = 0
        self._dropped_error = 0
        self._joined = 0
        self._unknown = 0
        self._caught: dict[GroupKey, float] = {}
        self._missed: dict[GroupKey, float] = {}
        self._next_prune = time.monotonic() + PRUNE_INTERVAL_S
        self._writer = _SqliteThread(
            "riskwire-outcomes-writer",
            self._connect_writer,
            tick=self._writer_tick,
            tick_s=settings.flush_interval_ms / 1000.0,
        )
        self._reader = _SqliteThread("riskwire-outcomes-reports", self._connect_reader)
        self._performance: Snapshot[list[PerformanceReport]] = Snapshot(
            self._submit_read, self._compute_performance, [], settings.report_refresh_s
        )
        self.fairness = FairnessMonitor(self, fairness or FairnessSettings())
        """Fairness reports over the same predictions and labels."""

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> OutcomeStore:
        """Open (or create) the file and start the writer and report threads.

        Raises:
            sqlite3.Error, OSError: the file cannot be opened or is not a store.
        """
        with self._lock:
            if self._started:
                return self
            self._started = True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer.start()
            try:
                self._reader.start()
            except BaseException:
                self._writer.stop()
                raise
        except BaseException:
            with self._lock:
                self._closed = True  # refuse calls rather than queue them for no thread
            raise
        return self

    def close(self) -> None:
        """Store everything still queued and stop the threads; later calls are refused."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if started:
            self._reader.stop()
            self._writer.stop()  # its last tick flushes the queue

    def __enter__(self) -> OutcomeStore:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the serving path --------------------------------------------------------------

    def log_predictions(self, records: Sequence[PredictionRecord]) -> int:
        """Queue predictions for storage; never blocks and never raises.

        Returns:
            How many were queued; the rest (queue full, or the store closed) are
            dropped and counted.
        """
        wake = False
        with self._lock:
            room = 0 if self._closed else self.settings.queue_rows - len(self._pending)
            taken = len(records) if len(records) <= room else max(room, 0)
            if taken:
                self._pending.extend(records[:taken] if taken < len(records) else records)
            self._logged += taken
            self._dropped_full += len(records) - taken
            if len(self._pending) >= self.settings.flush_rows and not self._wake_requested:
                self._wake_requested = wake = True
        if wake:
            self._writer.wake()
        return taken

    # -- labels ------------------------------------------------------------------------

    def report_outcome(
        self,
        transaction_id: str,
        label: bool,
        amount_usd: float | None,
        reported_at: float,
    ) -> JoinedOutcome:
        """Join a label to its logged prediction (blocks the calling thread on SQL).

        A repeated report for the same id replaces the label, amount and time.

        Args:
            transaction_id: the scored transaction's id.
            label: True for fraud.
            amount_usd: the amount the label concerns (e.g. the chargeback); None: the
                scored transaction's amount.
            reported_at: Unix epoch seconds.

        Raises:
            UnknownTransaction: no prediction with this id is stored or queued.
            GatewayError: INVALID_ARGUMENT for an empty id, a negative or non-finite
                amount or time; UNAVAILABLE once closed.
        """
        job = self._join_job(transaction_id, label, amount_usd, reported_at)
        return self._submit_write(job).result()

    async def report_outcome_async(
        self,
        transaction_id: str,
        label: bool,
        amount_usd: float | None,
        reported_at: float,
    ) -> JoinedOutcome:
        """:meth:`report_outcome` for the event loop: the SQL runs on the writer thread."""
        job = self._join_job(transaction_id, label, amount_usd, reported_at)
        return await asyncio.wrap_future(self._submit_write(job))

    # -- reports -----------------------------------------------------------------------

    def performance(
        self, now: float | None = None, route: str | None = None
    ) -> list[PerformanceReport]:
        """Rolling performance per (route, model, version, arm), sorted; fresh.

        Sees every prediction logged before the call. Blocks the calling thread.
        """
        self.flush()
        reports = self._submit_read(lambda c: self._compute_performance(c, now)).result()
        if now is None:
            self._performance.set(reports)
        return [r for r in reports if route in (None, r.route)]

    async def performance_async(self, route: str | None = None) -> list[PerformanceReport]:
        """:meth:`performance` for the event loop (the SQL runs on the report thread)."""
        await asyncio.wrap_future(self._submit_write(lambda c: None))
        reports = await asyncio.wrap_future(self._submit_read(self._compute_performance))
        self._performance.set(reports)
        return [r for r in reports if route in (None, r.route)]

    def cached_performance(self) -> list[PerformanceReport]:
        """The latest performance reports without waiting (see ``report_refresh_s``)."""
        return self._performance.get()

    def refresh(self) -> None:
        """Recompute the cached reports now (performance and fairness), waiting for them."""
        self.performance()
        self.fairness.reports()

    # -- plumbing for reports over the store (fairness) ---------------------------------

    def window_start(self, now: float | None = None) -> float:
        """The oldest scoring time (epoch s) the rolling window admits at ``now``."""
        return (time.time() if now is None else now) - self.settings.window_days * DAY_S

    def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``query`` on the read-only report connection, after a flush; blocks."""
        self.flush()
        return self._submit_read(query).result()

    async def read_async(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`read` for the event loop."""
        await asyncio.wrap_future(self._submit_write(lambda c: None))
        return await asyncio.wrap_future(self._submit_read(query))

    def snapshot(self, compute: Callable[[sqlite3.Connection], T], empty: T) -> Snapshot[T]:
        """A background-refreshed report over the read connection (for /metrics)."""
        return Snapshot(self._submit_read, compute, empty, self.settings.report_refresh_s)

    # -- housekeeping ------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until every prediction queued before this call is stored."""
        self._submit_write(lambda c: None).result()

    def prune(self, now: float | None = None) -> int:
        """Apply retention and ``max_rows`` now; returns the predictions deleted."""
        when = time.time() if now is None else now
        return self._submit_write(lambda c: self._prune(c, when)).result()

    def counts(self) -> StoreCounts:
        """The counters, as of now."""
        with self._lock:
            return StoreCounts(
                predictions_logged=self._logged,
                predictions_dropped_queue_full=self._dropped_full,
                predictions_dropped_write_error=self._dropped_error,
                outcomes_joined=self._joined,
                outcomes_unknown=self._unknown,
                fraud_caught_usd=dict(self._caught),
                fraud_missed_usd=dict(self._missed),
            )

    def stored_predictions(self) -> int:
        """Predictions in the file now (after a flush)."""
        return self.read(lambda c: int(c.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]))

    # -- metrics -----------------------------------------------------------------------

    def register_metrics(self, meter: Meter) -> None:
        """Observable instruments for the counters and the cached reports, fairness's too.

        Counters are this process's since start (Prometheus sums them across workers);
        the gauges read the cached reports (``report_refresh_s``), never the file.
        """
        meter.create_observable_counter(
            "riskwire.outcomes",
            callbacks=[self._observe_outcomes],
            description="ReportOutcome calls by result: joined to a logged prediction, or "
            "unknown transaction id (NOT_FOUND)",
        )
        meter.create_observable_counter(
            "riskwire.predictions.logged",
            callbacks=[lambda _: [Observation(self.counts().predictions_logged)]],
            description="Predictions queued for the outcome store",
        )
        meter.create_observable_counter(
            "riskwire.predictions.dropped",
            callbacks=[self._observe_dropped],
            description="Predictions not stored: the queue was full (reason queue_full) or "
            "the write failed (write_error); their labels will answer NOT_FOUND",
        )
        meter.create_observable_counter(
            "riskwire.fraud.caught.amount",
            unit="USD",
            callbacks=[lambda _: self._observe_amounts(self.counts().fraud_caught_usd)],
            description="Amount of transactions labelled fraud that the model declined, "
            "counted when the label arrives",
        )
        meter.create_observable_counter(
            "riskwire.fraud.missed.amount",
            unit="USD",
            callbacks=[lambda _: self._observe_amounts(self.counts().fraud_missed_usd)],
            description="Amount of transactions labelled fraud that the model did not "
            "decline, counted when the label arrives",
        )
        gauges: tuple[tuple[str, str, Callable[[PerformanceReport], float | None]], ...] = (
            (
                "riskwire.performance.precision",
                "Rolling precision at decline over labelled predictions",
                lambda r: r.precision,
            ),
            (
                "riskwire.performance.recall",
                "Rolling recall at decline over labelled predictions",
                lambda r: r.recall,
            ),
            (
                "riskwire.performance.auc",
                "Rolling ROC AUC over labelled predictions",
                lambda r: r.auc,
            ),
            (
                "riskwire.performance.degraded",
                "1 when rolling precision, recall or AUC fell below the model card's "
                "figures minus the tolerance (concept drift)",
                lambda r: float(r.degraded),
            ),
            (
                "riskwire.performance.labels",
                "Labelled predictions in the rolling window",
                lambda r: float(r.labelled),
            ),
        )
        for name, description, value in gauges:
            meter.create_observable_gauge(
                name, callbacks=[self._gauge(value)], description=description
            )
        self.fairness.register_metrics(meter)

    def _observe_outcomes(self, _: CallbackOptions) -> Iterable[Observation]:
        counts = self.counts()
        return [
            Observation(counts.outcomes_joined, {"result": "joined"}),
            Observation(counts.outcomes_unknown, {"result": "unknown"}),
        ]

    def _observe_dropped(self, _: CallbackOptions) -> Iterable[Observation]:
        counts = self.counts()
        return [
            Observation(counts.predictions_dropped_queue_full, {"reason": "queue_full"}),
            Observation(counts.predictions_dropped_write_error, {"reason": "write_error"}),
        ]

    @staticmethod
    def _observe_amounts(amounts: Mapping[GroupKey, float]) -> Iterable[Observation]:
        return [Observation(amount, _attributes(key)) for key, amount in sorted(amounts.items())]

    def _gauge(
        self, value: Callable[[PerformanceReport], float | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            observations = []
            for report in self.cached_performance():
                figure = value(report)
                if figure is not None:
                    key = (report.route, report.model, report.version, report.arm)
                    observations.append(Observation(figure, _attributes(key)))
            return observations

        return observe

    # -- the threads' side -------------------------------------------------------------

    def _submit_write(self, job: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        with self._lock:  # with `close`: nothing is queued behind the stop
            self._check_open()
            return self._writer.submit(job)

    def _submit_read(self, job: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        with self._lock:
            self._check_open()
            return self._reader.submit(job)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed()
        if not self._started:
            raise GatewayError(ErrorKind.UNAVAILABLE, "the outcome store is not started yet")

    def _connect_writer(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a power cut may lose the last transactions, never corrupt.
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.executescript(_SCHEMA)
        return connection

    def _connect_reader(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA query_only = 1")
        return connection

    def _writer_tick(self, connection: sqlite3.Connection) -> None:
        self._flush(connection)
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_INTERVAL_S
            try:
                self._prune(connection, time.time())
            except sqlite3.Error:
                log.exception("outcome store: pruning failed; retrying in %.0f s", PRUNE_INTERVAL_S)

    def _flush(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._wake_requested = False
        if not batch:
            return
        rows = [_row(r) for r in batch]
        whole = len(rows) - len(rows) % INSERT_CHUNK_ROWS
        try:
            connection.execute("BEGIN")
            # In order, as executemany would: a later row for an id replaces an earlier.
            for start in range(0, whole, INSERT_CHUNK_ROWS):
                chunk = rows[start : start + INSERT_CHUNK_ROWS]
                connection.execute(_INSERT_CHUNK, list(itertools.chain.from_iterable(chunk)))
            connection.executemany(_INSERT, rows[whole:])
            connection.execute("COMMIT")
        except sqlite3.Error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            log.exception("outcome store: %d predictions could not be stored", len(batch))
            with self._lock:
                self._dropped_error += len(batch)

    def _prune(self, connection: sqlite3.Connection, now: float) -> int:
        cutoff = now - self.settings.retention_days * DAY_S
        connection.execute("BEGIN")
        try:
            deleted = connection.execute(
                "DELETE FROM predictions WHERE scored_at < ?", (cutoff,)
            ).rowcount
            over = (
                connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
                - self.settings.max_rows
            )
            if over > 0:
                deleted += connection.execute(
                    "DELETE FROM predictions WHERE transaction_id IN "
                    "(SELECT transaction_id FROM predictions ORDER BY scored_at LIMIT ?)",
                    (over,),
                ).rowcount
            connection.execute(
                "DELETE FROM outcomes WHERE reported_at < ? OR transaction_id NOT IN "
                "(SELECT transaction_id FROM predictions)",
                (cutoff,),
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return int(deleted)

    def _join_job(
        self, transaction_id: str, label: bool, amount_usd: float | None, reported_at: float
    ) -> Callable[[sqlite3.Connection], JoinedOutcome]:
        if not transaction_id:
            raise invalid("transaction_id is required")
        if amount_usd is not None and not (math.isfinite(amount_usd) and amount_usd >= 0):
            raise invalid(f"amount_usd must be a finite amount >= 0, got {amount_usd}")
        if not (math.isfinite(reported_at) and reported_at >= 0):
            raise invalid(f"reported_at must be finite Unix epoch seconds, got {reported_at}")

        def join(connection: sqlite3.Connection) -> JoinedOutcome:
            return self._join(connection, transaction_id, bool(label), amount_usd, reported_at)

        return join

    def _join(
        self,
        connection: sqlite3.Connection,
        transaction_id: str,
        label: bool,
        amount_usd: float | None,
        reported_at: float,
    ) -> JoinedOutcome:
        row = connection.execute(
            f"SELECT {_COLUMNS} FROM predictions WHERE transaction_id = ?", (transaction_id,)
        ).fetchone()
        if row is None:
            with self._lock:
                self._unknown += 1
            raise UnknownTransaction(transaction_id)
        prediction = _record(row)
        connection.execute("BEGIN")
        try:
            before = connection.execute(
                "SELECT label FROM outcomes WHERE transaction_id = ?", (transaction_id,)
            ).fetchone()
            connection.execute(
                "INSERT INTO outcomes (transaction_id, label, amount_usd, reported_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (transaction_id) DO UPDATE SET "
                "label = excluded.label, amount_usd = excluded.amount_usd, "
                "reported_at = excluded.reported_at",
                (transaction_id, int(label), amount_usd, reported_at),
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        amount = prediction.amount_usd if amount_usd is None else amount_usd
        with self._lock:
            self._joined += 1
            # Fraud dollars are counted once, when an id is first labelled fraud: a
            # counter cannot take back a later reversal (the rolling report does).
            first_fraud = label and (before is None or not before[0])
            if first_fraud and prediction.source is DecisionSource.MODEL:
                key = (prediction.route, prediction.model, prediction.version, str(prediction.arm))
                sums = self._caught if prediction.decision is Decision.DECLINE else self._missed
                sums[key] = sums.get(key, 0.0) + amount
        return JoinedOutcome(
            transaction_id=transaction_id,
            label=label,
            amount_usd=amount,
            reported_at=reported_at,
            prediction=prediction,
            updated=before is not None,
        )

    def _compute_performance(
        self, connection: sqlite3.Connection, now: float | None = None
    ) -> list[PerformanceReport]:
        start = self.window_start(now)
        rows = connection.execute(_LABELLED, (start, self.settings.window_labels)).fetchall()
        reports = []
        # The query orders rows by group.
        for key, grouped in itertools.groupby(rows, key=_group_key):
            group = list(grouped)
            reports.append(
                performance_report(
                    key=key,
                    scores=[r[4] for r in group],
                    decisions=[r[5] for r in group],
                    labels=[r[6] for r in group],
                    amounts_usd=[r[7] for r in group],
                    card=self._card_figures(key[1], key[2]),
                    settings=self.settings,
                    window_start=start,
                )
            )
        return reports


def _group_key(row: Sequence[Any]) -> GroupKey:
    return (str(row[0]), str(row[1]), int(row[2]), str(row[3]))


def _attributes(key: GroupKey) -> dict[str, str]:
    route, model, version, arm = key
    return {"route": route, "model": model, "version": str(version), "arm": arm}
