"""Shadow arms: queued after the primary answer, shed when full, compared exactly.

Fake models score a row with its first feature (a per-transaction numeric extra) plus
a fixed shift, so every primary and shadow score is known in advance.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.dataplane import DataPlane, DecisionSource, ScoreOptions, ScoreResult
from gateway.errors import BackendFailure, Overloaded
from gateway.features import dispatch, hashing
from gateway.features.columns import Transaction
from gateway.features.spec import parse_feature_spec
from gateway.grpc.converters import batch_from_transactions
from gateway.settings import ShadowSettings
from gateway.shadow import DIFF_EDGES, ShadowComparison, ShadowRunner, bucket_quantile
from gateway.telemetry.metrics import make_meter_provider, meter_of
from router.routes import Thresholds, load_table
from router.store import RouteStore

SPEC = parse_feature_spec(
    {
        "version": "t",
        "features": [{"name": "s", "transform": "identity", "source": "numeric_extras.s"}],
    }
)

Future = asyncio.Future[npt.NDArray[np.float64]]


def routes(decision: str = "decision: {review_at: 0.5, decline_at: 0.9}", **extra: str) -> str:
    fallback = extra.get("fallback", "{}")
    return f"""
routes:
  - name: r
    salt: s
    sticky_key: transaction_id
    arms: [{{model: a, version: 1, weight: 100}}]
    shadows: [{{model: b, version: 1, percent: 100}}]
    {decision}
    fallback: {fallback}
"""


class ShiftBatcher:
    """Scores each row as its first feature plus ``shift``, at once; records calls."""

    def __init__(self, shift: float = 0.0, queue_rows: int = 100) -> None:
        self.shift = shift
        self.calls: list[int] = []
        self.queued_rows = 0
        self.queue_rows = queue_rows

    def submit(
        self, rows: npt.NDArray[np.float32], deadline: float, times: list[int] | None = None
    ) -> Future:
        self.calls.append(rows.shape[0])
        future: Future = asyncio.get_running_loop().create_future()
        future.set_result(rows[:, 0].astype(np.float64) + self.shift)
        return future


class FailingBatcher(ShiftBatcher):
    def submit(
        self, rows: npt.NDArray[np.float32], deadline: float, times: list[int] | None = None
    ) -> Future:
        self.calls.append(rows.shape[0])
        future: Future = asyncio.get_running_loop().create_future()
        future.set_exception(BackendFailure("model b/1 failed: boom"))
        return future


class FullBatcher(ShiftBatcher):
    def submit(
        self, rows: npt.NDArray[np.float32], deadline: float, times: list[int] | None = None
    ) -> Future:
        self.calls.append(rows.shape[0])
        raise Overloaded("queue is full")


class HangingBatcher(ShiftBatcher):
    """Never answers: its futures stay pending until cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.futures: list[Future] = []

    def submit(
        self, rows: npt.NDArray[np.float32], deadline: float, times: list[int] | None = None
    ) -> Future:
        self.calls.append(rows.shape[0])
        future: Future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


@dataclass
class FakeModel:
    name: str
    batcher: ShiftBatcher
    thresholds: Thresholds
    encoder: dispatch.Encoder = field(default_factory=lambda: dispatch.make_encoder(SPEC, "python"))
    version: int = 1

    @property
    def card(self) -> Any:
        return SimpleNamespace(thresholds=self.thresholds)

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"


class FakeRepository:
    def __init__(self, primary: ShiftBatcher, shadow: ShiftBatcher) -> None:
        self.models = {
            ("a", 1): FakeModel("a", primary, Thresholds(review_at=0.5, decline_at=0.9)),
            ("b", 1): FakeModel("b", shadow, Thresholds(review_at=0.3, decline_at=0.6)),
        }

    def get(self, name: str, version: int | None) -> FakeModel:
        return self.models[(name, version or 1)]


def transactions(*scores: float) -> list[Transaction]:
    return [
        Transaction(
            transaction_id=f"tx{i}",
            account_id=f"acc{i}",
            currency="USD",
            amount_minor=100,
            timestamp_ms=1,
            numeric_extras={"s": s},
        )
        for i, s in enumerate(scores)
    ]


def make(
    repository: FakeRepository, table: str = "", **settings: Any
) -> tuple[DataPlane, ShadowRunner]:
    runner = ShadowRunner(repository, ShadowSettings(**settings), "python")  # type: ignore[arg-type]
    plane = DataPlane(
        repository,  # type: ignore[arg-type]
        RouteStore(load_table(table or routes())),
        hashing.bucket,
        runner,
    )
    return plane, runner


def run_scored(
    plane: DataPlane,
    runner: ShadowRunner,
    scores: tuple[float, ...],
    check: Callable[[list[ScoreResult]], None] | None = None,
    grace: float = 5.0,
) -> list[ScoreResult]:
    """Score one batch, run ``check`` right after score() returns, drain the shadows."""

    async def run() -> list[ScoreResult]:
        runner.start()
        results = await plane.score(batch_from_transactions(transactions(*scores)), ScoreOptions())
        if check is not None:
            check(results)
        await runner.stop(grace)
        return results

    return asyncio.run(run())


def only(runner: ShadowRunner) -> ShadowComparison:
    (comparison,) = runner.comparisons()
    assert (comparison.route, comparison.shadow_model, comparison.shadow_version) == ("r", "b", 1)
    return comparison


SCORES = (0.1, 0.45, 0.6, 0.85, 0.95)


def test_comparisons_are_exact_at_the_routes_thresholds() -> None:
    # Shadow = primary + 0.125 (exact in binary): primary A A R R D, shadow A R R D D
    # at the route's thresholds 0.5 / 0.9.
    repository = FakeRepository(ShiftBatcher(), ShiftBatcher(shift=0.125))
    plane, runner = make(repository)
    results = run_scored(plane, runner, SCORES)
    assert [r.decision.value for r in results] == [
        "APPROVE",
        "APPROVE",
        "REVIEW",
        "REVIEW",
        "DECLINE",
    ]
    c = only(runner)
    assert (c.compared, c.agreements, c.shed, c.errors, c.skipped) == (5, 3, 0, 0, 0)
    assert c.flips == {"APPROVE->REVIEW": 1, "REVIEW->DECLINE": 1}
    assert c.agreement_rate == pytest.approx(0.6)
    assert c.score_diff_mean == 0.125
    # |diff| = 0.125 lies in the (0.12, 0.13] bucket: every quantile is its upper bound.
    assert c.score_diff_quantiles == {"p50": 0.13, "p95": 0.13, "p99": 0.13}
    # Five transactions of one request: one encoder call and one submission.
    assert repository.models[("b", 1)].batcher.calls == [5]
    assert runner.comparisons(route="other") == []
    assert runner.comparisons(route="r") == [c]


def test_without_route_thresholds_each_model_decides_at_its_own_cards() -> None:
    # Shadow card: REVIEW from 0.3, DECLINE from 0.6; shadow scores 0.225 0.575 0.725
    # 0.975 1.075 -> A R D D D against the primary's A A R R D (its card: 0.5 / 0.9).
    repository = FakeRepository(ShiftBatcher(), ShiftBatcher(shift=0.125))
    plane, runner = make(repository, routes(decision=""))
    run_scored(plane, runner, SCORES)
    c = only(runner)
    assert (c.compared, c.agreements) == (5, 2)
    assert c.flips == {"APPROVE->REVIEW": 1, "REVIEW->DECLINE": 2}


def test_score_diff_mean_is_signed_and_quantiles_use_bucket_upper_bounds() -> None:
    repository = FakeRepository(ShiftBatcher(), ShiftBatcher(shift=-0.0625))
    plane, runner = make(repository)
    run_scored(plane, runner, SCORES)
    c = only(runner)
    assert c.score_diff_mean == -0.0625
    assert c.score_diff_quantiles == {"p50": 0.07, "p95": 0.07, "p99": 0.07}


def test_bucket_quantile_takes_the_bucket_holding_the_rank() -> None:
    edges = (0.0, 0.01, 0.02)
    counts = [50, 45, 4, 1]  # the last one in +Inf
    assert bucket_quantile(edges, counts, 0.5) == 0.0
    assert bucket_quantile(edges, counts, 0.51) == 0.01
    assert bucket_quantile(edges, counts, 0.95) == 0.01  # rank 95: exactly the 2nd bucket
    assert bucket_quantile(edges, counts, 0.99) == 0.02
    assert bucket_quantile(edges, counts, 1.0) == math.inf
    assert math.isnan(bucket_quantile(edges, [0, 0, 0, 0], 0.5))
    assert DIFF_EDGES[0] == 0.0 and DIFF_EDGES[-1] == 1.0 and len(DIFF_EDGES) == 106


def test_offer_never_blocks_and_sheds_when_the_queue_is_full() -> None:
    repository = FakeRepository(ShiftBatcher(), ShiftBatcher())
    plane, runner = make(repository, queue_rows=3)

    def right_after(results: list[ScoreResult]) -> None:
        # score() returned; nothing ran yet: three waiting, two shed.
        assert len(results) == 5 and runner.queued == 3
        assert repository.models[("b", 1)].batcher.calls == []
        assert only(runner).shed == 2

    run_scored(plane, runner, SCORES, right_after)
    c = only(runner)
    assert (c.compared, c.shed) == (3, 2)


def test_fallback_rows_are_counted_not_compared() -> None:
    repository = FakeRepository(FullBatcher(), ShiftBatcher())
    plane, runner = make(repository, routes(fallback="{on: [overload], decision: REVIEW}"))
    results = run_scored(plane, runner, SCORES)
    assert {r.source for r in results} == {DecisionSource.FALLBACK}
    c = only(runner)
    assert (c.compared, c.skipped, c.shed, c.errors) == (0, 5, 0, 0)
    assert c.score_diff_quantiles == {}
    assert repository.models[("b", 1)].batcher.calls == []


def test_shadow_failures_are_errors_and_a_full_shadow_queue_sheds() -> None:
    failing = FakeRepository(ShiftBatcher(), FailingBatcher())
    plane, runner = make(failing)
    results = run_scored(plane, runner, SCORES)
    assert {r.source for r in results} == {DecisionSource.MODEL}
    c = only(runner)
    assert (c.compared, c.errors, c.shed) == (0, 5, 0)

    full = FakeRepository(ShiftBatcher(), FullBatcher())
    plane, runner = make(full)
    run_scored(plane, runner, SCORES)
    assert (only(runner).errors, only(runner).shed) == (0, 5)


def test_a_busy_shadow_model_is_shed_first() -> None:
    busy = ShiftBatcher(queue_rows=100)
    busy.queued_rows = 51  # over half its queue: primary traffic is waiting
    repository = FakeRepository(ShiftBatcher(), busy)
    plane, runner = make(repository, shed_above_fraction=0.5)
    run_scored(plane, runner, SCORES)
    assert (only(runner).compared, only(runner).shed) == (0, 5)
    assert busy.calls == []


def test_the_primary_answer_never_waits_for_a_shadow() -> None:
    hanging = HangingBatcher()
    repository = FakeRepository(ShiftBatcher(), hanging)
    plane, runner = make(repository)

    async def run() -> None:
        runner.start()
        batch = batch_from_transactions(transactions(*SCORES))
        results = await plane.score(batch, ScoreOptions())
        assert [r.score for r in results] == pytest.approx(SCORES)
        assert hanging.calls == []  # queued only: the shadow has not been submitted
        while not hanging.calls:  # the consumer submits later, on its own
            await asyncio.sleep(0)
        assert runner.queued == 0
        # The shadow never answers: stop gives up after the grace, counting it as shed.
        await runner.stop(grace=0.01)
        assert all(f.cancelled() for f in hanging.futures)

    asyncio.run(run())
    c = only(runner)
    assert (c.compared, c.shed, c.errors) == (0, 5, 0)


def test_after_stop_offers_are_shed() -> None:
    repository = FakeRepository(ShiftBatcher(), ShiftBatcher())
    plane, runner = make(repository)

    async def run() -> None:
        runner.start()
        await runner.stop()
        await plane.score(batch_from_transactions(transactions(*SCORES)), ScoreOptions())

    asyncio.run(run())
    assert (only(runner).shed, only(runner).compared) == (5, 0)


def test_metrics_follow_prometheus_names() -> None:
    repository = FakeRepository(ShiftBatcher(), ShiftBatcher(shift=0.125))
    plane, runner = make(repository)
    run_scored(plane, runner, SCORES)
    registry = CollectorRegistry()
    registry.register(runner)  # type: ignore[arg-type]
    provider = make_meter_provider(registry)  # the counters: OpenTelemetry instruments
    runner.register_metrics(meter_of(provider))
    text = generate_latest(registry).decode()
    provider.shutdown()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = (("model", "b"), ("route", "r"), ("version", "1"))
    assert samples[("riskwire_shadow_compared_total", key)] == 5
    assert samples[("riskwire_shadow_agreements_total", key)] == 3
    assert samples[("riskwire_shadow_shed_total", key)] == 0
    assert samples[("riskwire_shadow_errors_total", key)] == 0
    assert samples[("riskwire_shadow_skipped_total", key)] == 0
    flip = tuple(sorted((*key, ("from", "APPROVE"), ("to", "REVIEW"))))
    assert samples[("riskwire_shadow_flips_total", flip)] == 1
    never = tuple(sorted((*key, ("from", "DECLINE"), ("to", "APPROVE"))))
    assert samples[("riskwire_shadow_flips_total", never)] == 0
    assert samples[("riskwire_shadow_score_diff_count", key)] == 5
    assert samples[("riskwire_shadow_score_diff_sum", key)] == pytest.approx(0.625)
    below = tuple(sorted((*key, ("le", "0.12"))))
    holding = tuple(sorted((*key, ("le", "0.13"))))
    assert samples[("riskwire_shadow_score_diff_bucket", below)] == 0
    assert samples[("riskwire_shadow_score_diff_bucket", holding)] == 5
    assert samples[("riskwire_shadow_queue_items", ())] == 0
