"""Shadow scoring: shadow arms score after the primary answer is sent, and are compared.

``router.decide`` picks each transaction's shadow arms (``Assignment.shadows``).
Once ``DataPlane.score`` has the primary results it calls :meth:`ShadowRunner.offer`,
which never awaits: it appends one work item per (transaction, shadow arm) to a
bounded in-memory queue and returns; when the queue is full the item is shed
(counted). The primary answer is returned (and written) while the work waits.

A consumer task on the same event loop, once woken, lets a round gather for
``max_delay_ms`` (shadow answers are not urgent; larger rounds cost less per
transaction), then takes up to ``round_rows`` items at a time, groups them by shadow
model, encodes each group with that model's own encoder (from
the request's transactions, which the queued batch keeps alive), and submits it to
that model's batcher with a generous deadline. Shed first: a group whose model's
batcher already holds more than ``shed_above_fraction`` of its queue (primary
traffic waiting) is dropped unrun, as is one the batcher refuses (Overloaded); both
count as shed. A model that raises or times out counts as errors. Rows whose primary
answer was a fallback are counted (``skipped``) and never scored: there is no model
answer to compare with.

Comparison, per (route, shadow model, shadow version):

- each side's decision is what the route would decide with that model as the primary
  arm: the route's ``decision`` thresholds when set (then both sides use the same
  ones), else each model card's own thresholds (models are calibrated differently;
  the primary's decision is the one it answered with);
- agreement: same decision; a flip is counted by kind, ``"APPROVE->DECLINE"`` meaning
  the primary approved and the shadow would have declined;
- the mean of (shadow score - primary score), and a fixed-bucket histogram of
  |shadow - primary| (``DIFF_EDGES``) whose quantiles are reported as the *upper
  bound of the bucket holding the rank* (``bucket_quantile``): an overestimate by
  at most one bucket width (0.01 above 0.01, finer below).

Every counter lives on the event-loop thread; the Admin API reads them through
:meth:`ShadowRunner.comparisons` and /metrics through :meth:`ShadowRunner.collect`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from prometheus_client.core import HistogramMetricFamily, Metric

from gateway.dataplane import DecisionSource, ScoreResult, TransactionBatch, decide_threshold
from gateway.errors import Overloaded
from gateway.features.dispatch import EncoderMode
from gateway.models.repository import LoadedModel, ModelRepository
from gateway.settings import ShadowSettings
from gateway.telemetry.histogram import FixedBucketHistogram, make_histogram, prometheus_buckets
from router.routes import Assignment, Decision, RouteSpec, ShadowSpec

if TYPE_CHECKING:
    from gateway.audit.sink import ChainAuditSink

log = logging.getLogger("riskwire.shadow")


@dataclass(frozen=True, slots=True)
class ShadowComparison:
    """How one shadow model compares with the primary answers of one route so far."""

    route: str
    shadow_model: str
    shadow_version: int
    compared: int
    """Transactions scored by both the primary and this shadow."""
    agreements: int
    """Of those, how many got the same decision at the route's thresholds."""
    flips: dict[str, int] = field(default_factory=dict)
    """Decision flips by kind, e.g. {"APPROVE->DECLINE": 3} (primary -> shadow)."""
    score_diff_mean: float = 0.0
    """Mean of shadow score minus primary score."""
    score_diff_quantiles: dict[str, float] = field(default_factory=dict)
    """Quantiles of |shadow - primary|: {"p50": ..., "p95": ..., "p99": ...}."""
    shed: int = 0
    """Shadow scorings dropped unrun (queue full or load), never blocking a primary."""
    errors: int = 0
    """Shadow scorings that failed (their model raised or timed out)."""
    skipped: int = 0
    """Transactions assigned to this shadow whose primary answer was a fallback: not
    scored by the shadow, since there is no model score to compare with."""

    @property
    def agreement_rate(self) -> float:
        return self.agreements / self.compared if self.compared else 0.0


DIFF_EDGES: tuple[float, ...] = (
    0.0,
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    *(round(i * 0.01, 2) for i in range(1, 101)),
)
"""Upper bounds of the |shadow - primary| buckets: exactly 0, five below 0.01, then
0.01 steps to 1.0 (the float64s nearest those decimals); larger differences (a model
scoring outside [0, 1]) land in +Inf."""

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}

DECISIONS = tuple(Decision)
FLIP_KINDS = tuple((a, b) for a in DECISIONS for b in DECISIONS if a is not b)
"""Every (primary, shadow) pair of different decisions: exported even while zero."""


def flip_name(primary: Decision, shadow: Decision) -> str:
    return f"{primary.value}->{shadow.value}"


def bucket_quantile(
    edges: Sequence[float], counts: Sequence[int] | npt.NDArray[np.uint64], q: float
) -> float:
    """The q-quantile of a fixed-bucket histogram as the upper bound of its bucket.

    The rank is ceil(q * count) (at least 1); the answer is the upper bound of the
    first bucket whose cumulative count reaches it, +inf for the overflow bucket.
    NaN when the histogram is empty.
    """
    total = int(sum(int(c) for c in counts))
    if total == 0:
        return math.nan
    rank = max(1, math.ceil(q * total - 1e-9))
    running = 0
    for edge, count in zip([*edges, math.inf], counts, strict=True):
        running += int(count)
        if running >= rank:
            return float(edge)
    return math.inf


@dataclass(slots=True)
class _Item:
    """One transaction for one shadow arm, waiting."""

    batch: TransactionBatch
    row: int
    route: RouteSpec
    shadow: ShadowSpec
    primary: ScoreResult


class _Stats:
    __slots__ = (
        "abs_diff",
        "agreements",
        "compared",
        "diff_sum",
        "errors",
        "flips",
        "shed",
        "skipped",
    )

    def __init__(self, histogram: FixedBucketHistogram) -> None:
        self.compared = 0
        self.agreements = 0
        self.flips: dict[tuple[Decision, Decision], int] = dict.fromkeys(FLIP_KINDS, 0)
        self.diff_sum = 0.0
        self.abs_diff = histogram
        self.shed = 0
        self.errors = 0
        self.skipped = 0


class ShadowRunner:
    """The shadow queue, its consumer task, the comparison counters and their metrics.

    Args:
        repository: where the shadow models are (loaded: the route table requires it).
        settings: the ``shadow`` settings section.
        histogram_mode: which histogram implementation records the score differences.
    """

    def __init__(
        self,
        repository: ModelRepository,
        settings: ShadowSettings,
        histogram_mode: EncoderMode = "auto",
    ) -> None:
        self._repository = repository
        self.settings = settings
        self._histogram_mode = histogram_mode
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: list[_Item] = []
        self._closing = False
        self._stats: dict[tuple[str, str, int], _Stats] = {}
        self.audit: ChainAuditSink | None = None
        """Records each shadow score beside its primary answer (never waits); None: off."""

    @property
    def queued(self) -> int:
        """Shadow scorings waiting in the queue now."""
        return len(self._queue)

    def start(self) -> None:
        """Start the consumer on the running loop."""
        if self._task is None and self.settings.enabled:
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(self._consume(), name="shadows")

    async def stop(self, grace: float | None = None) -> None:
        """Let queued work finish for up to ``grace`` s, then drop the rest (as shed)."""
        grace = self.settings.drain_grace_s if grace is None else grace
        self._closing = True
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                task.cancel()
                # The consumer counts what it held as shed when cancelled.
                await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                log.error("shadow consumer failed", exc_info=task.exception())
        while self._queue:
            self._count(self._queue.popleft(), "shed")

    def offer(
        self,
        batch: TransactionBatch,
        assignments: Sequence[Assignment],
        results: Sequence[ScoreResult],
    ) -> None:
        """Queue the shadow arms of ``batch``'s transactions; never waits.

        Called by ``DataPlane.score`` with the primary results, before they are
        returned. Costs a check per transaction and an append per shadow arm chosen;
        an item that finds the queue full (or the runner stopped) is counted as shed.
        """
        limit = self.settings.queue_rows if self._task is not None and not self._closing else 0
        queue = self._queue
        added = False
        for i, assignment in enumerate(assignments):
            if not assignment.shadows:
                continue
            primary = results[i]
            route = assignment.route
            if primary.source is not DecisionSource.MODEL:
                for shadow in assignment.shadows:
                    self._stats_for(route.name, shadow.model, shadow.version).skipped += 1
                continue
            for shadow in assignment.shadows:
                if len(queue) >= limit:
                    self._stats_for(route.name, shadow.model, shadow.version).shed += 1
                    continue
                queue.append(_Item(batch, i, route, shadow, primary))
                added = True
        if added:
            self._wakeup.set()

    def comparisons(self, route: str | None = None) -> list[ShadowComparison]:
        """Every (route, shadow model, version) seen so far, sorted; one route when named."""
        found = []
        for (route_name, model, version), stats in sorted(self._stats.items()):
            if route is not None and route_name != route:
                continue
            counts = stats.abs_diff.counts()
            edges = stats.abs_diff.edges
            found.append(
                ShadowComparison(
                    route=route_name,
                    shadow_model=model,
                    shadow_version=version,
                    compared=stats.compared,
                    agreements=stats.agreements,
                    flips={flip_name(a, b): n for (a, b), n in stats.flips.items() if n},
                    score_diff_mean=stats.diff_sum / stats.compared if stats.compared else 0.0,
                    score_diff_quantiles=(
                        {name: bucket_quantile(edges, counts, q) for name, q in QUANTILES.items()}
                        if stats.compared
                        else {}
                    ),
                    shed=stats.shed,
                    errors=stats.errors,
                    skipped=stats.skipped,
                )
            )
        return found

    # -- the consumer --------------------------------------------------------------

    async def _consume(self) -> None:
        queue = self._queue
        try:
            while True:
                if not queue:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    # Let a round gather (shadow answers are not urgent): one model
                    # call for many transactions, and the primary answers that queued
                    # the work are long out before any shadow runs.
                    if len(queue) < self.settings.round_rows and not self._closing:
                        await asyncio.sleep(self.settings.max_delay_ms / 1000.0)
                    continue
                take = min(len(queue), self.settings.round_rows)
                self._in_flight = [queue.popleft() for _ in range(take)]
                await self._round(self._in_flight)
                self._in_flight = []
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            for item in self._in_flight:
                self._count(item, "shed")
            self._in_flight = []
            raise

    async def _round(self, items: list[_Item]) -> None:
        groups: dict[tuple[str, int], list[_Item]] = {}
        for item in items:
            groups.setdefault((item.shadow.model, item.shadow.version), []).append(item)
        deadline = time.monotonic() + self.settings.deadline_ms / 1000.0
        waiting: list[tuple[LoadedModel, list[_Item], asyncio.Future[npt.NDArray[np.float64]]]]
        waiting = []
        for (name, version), group in groups.items():
            try:
                model = self._repository.get(name, version)
            except Exception:  # unloaded since the route table was checked
                self._count_all(group, "errors")
                continue
            batcher = model.batcher
            if batcher.queued_rows > self.settings.shed_above_fraction * batcher.queue_rows:
                self._count_all(group, "shed")  # primary traffic is waiting: it comes first
                continue
            try:
                features = _encode(model, group)
            except Exception:
                log.debug("shadow %s: encoding failed", model.key, exc_info=True)
                self._count_all(group, "errors")
                continue
            try:
                future = batcher.submit(features, deadline)
            except Overloaded:
                self._count_all(group, "shed")
                continue
            waiting.append((model, group, future))
        if not waiting:
            return
        if len(waiting) == 1:
            outcomes: list[npt.NDArray[np.float64] | BaseException] = []
            try:
                outcomes.append(await waiting[0][2])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outcomes.append(exc)
        else:
            outcomes = await asyncio.gather(*(w[2] for w in waiting), return_exceptions=True)
        for (model, group, _), outcome in zip(waiting, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.debug("shadow %s failed: %s", model.key, outcome)
                self._count_all(group, "errors")
            else:
                self._compare(model, group, outcome)

    def _compare(
        self, model: LoadedModel, group: list[_Item], scores: npt.NDArray[np.float64]
    ) -> None:
        for item, value in zip(group, scores.tolist(), strict=True):
            primary = item.primary
            thresholds = item.route.decision or model.card.thresholds
            decision = decide_threshold(value, thresholds)
            stats = self._stats_for(item.route.name, model.name, model.version)
            stats.compared += 1
            if decision is primary.decision:
                stats.agreements += 1
            else:
                stats.flips[(primary.decision, decision)] += 1
            diff = value - primary.score
            stats.diff_sum += diff
            stats.abs_diff.record(abs(diff))
            if self.audit is not None:
                self.audit.shadow_score(
                    primary,
                    item.batch.routing_keys[item.row],
                    model.name,
                    model.version,
                    value,
                    decision,
                )

    # -- counters ------------------------------------------------------------------

    def _stats_for(self, route: str, model: str, version: int) -> _Stats:
        key = (route, model, version)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = _Stats(make_histogram(DIFF_EDGES, self._histogram_mode))
        return stats

    def _count(self, item: _Item, what: str) -> None:
        stats = self._stats_for(item.route.name, item.shadow.model, item.shadow.version)
        setattr(stats, what, getattr(stats, what) + 1)

    def _count_all(self, items: list[_Item], what: str) -> None:
        for item in items:
            self._count(item, what)

    # -- /metrics ------------------------------------------------------------------

    def register_metrics(self, meter: Meter) -> None:
        """The comparison counters and the queue depth as OpenTelemetry instruments."""
        counters = {
            "riskwire.shadow.compared": "Transactions scored by a shadow model and compared "
            "with the primary answer",
            "riskwire.shadow.agreements": "Compared transactions where the shadow's decision "
            "equals the primary's",
            "riskwire.shadow.shed": "Shadow scorings dropped unrun: shadow queue full, or the "
            "shadow model loaded",
            "riskwire.shadow.errors": "Shadow scorings that failed: the shadow model raised "
            "or timed out",
            "riskwire.shadow.skipped": "Shadow scorings not run because the primary answered "
            "with a fallback",
        }
        for name, description in counters.items():
            meter.create_observable_counter(
                name, [self._observer(name.rsplit(".", 1)[1])], unit="", description=description
            )
        meter.create_observable_counter(
            "riskwire.shadow.flips",
            [self._observe_flips],
            unit="",
            description="Compared transactions whose decision differs, by primary (from) "
            "and shadow (to)",
        )
        meter.create_observable_gauge(
            "riskwire.shadow.score.diff.mean",
            [self._observe_mean],
            unit="",
            description="Mean of shadow score minus primary score over the compared transactions",
        )
        meter.create_observable_gauge(
            "riskwire.shadow.queue.items",
            [lambda _: [Observation(len(self._queue))]],
            unit="",
            description="Shadow scorings waiting in the shadow queue now",
        )

    def _observer(self, counter: str) -> Callable[[CallbackOptions], Iterator[Observation]]:
        def observe(_: CallbackOptions) -> Iterator[Observation]:
            for key, stats in sorted(self._stats.items()):
                yield Observation(getattr(stats, counter), _labels(key))

        return observe

    def _observe_flips(self, _: CallbackOptions) -> Iterator[Observation]:
        for key, stats in sorted(self._stats.items()):
            for (a, b), n in stats.flips.items():
                yield Observation(n, _labels(key) | {"from": a.value, "to": b.value})

    def _observe_mean(self, _: CallbackOptions) -> Iterator[Observation]:
        for key, stats in sorted(self._stats.items()):
            mean = stats.diff_sum / stats.compared if stats.compared else 0.0
            yield Observation(mean, _labels(key))

    def collect(self) -> Iterator[Metric]:
        """The score-difference histograms (a prometheus_client Collector; see
        gateway/telemetry/serving.py for why histograms are not OpenTelemetry ones)."""
        diff = HistogramMetricFamily(
            "riskwire_shadow_score_diff",
            "Absolute difference between the shadow score and the primary score",
            labels=["route", "model", "version"],
        )
        for (route, model, version), stats in sorted(self._stats.items()):
            diff.add_metric([route, model, str(version)], *prometheus_buckets(stats.abs_diff))
        yield diff


def _labels(key: tuple[str, str, int]) -> dict[str, str]:
    route, model, version = key
    return {"route": route, "model": model, "version": str(version)}


def _encode(model: LoadedModel, group: list[_Item]) -> npt.NDArray[np.float32]:
    """The group's feature rows for ``model``, one encoder call per request batch."""
    parts = []
    start = 0
    while start < len(group):
        batch = group[start].batch
        end = start + 1
        while end < len(group) and group[end].batch is batch:
            end += 1
        rows = [item.row for item in group[start:end]]
        # Rows of one batch are queued in increasing order: all of them means every row.
        selected = None if len(rows) == len(batch) else rows
        parts.append(model.encoder.encode_transactions(batch.transactions, rows=selected))
        start = end
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
