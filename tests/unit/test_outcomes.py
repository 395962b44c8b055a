"""The outcome store on real SQLite files: the delayed-label join, retention, restarts,
rolling performance against hand-checked figures and the demo card, the exported
metric names, and ReportOutcome over a real in-process gRPC server."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from gateway.dataplane import DecisionSource, ScoreResult
from gateway.errors import ErrorKind, GatewayError
from gateway.grpc import admin
from gateway.grpc.outcomes import outcome_method_handler
from gateway.models.card import Metrics, ModelCard
from gateway.telemetry.outcomes import (
    DAY_S,
    INSERT_CHUNK_ROWS,
    Confusion,
    OutcomeSettings,
    OutcomeStore,
    PredictionRecord,
    StoreClosed,
    UnknownTransaction,
    card_figures_from,
    rank_auc,
)
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from router.routes import ArmRole, Decision

NOW = 1_800_000_000.0
_ids = itertools.count()


def record(
    transaction_id: str | None = None,
    *,
    score: float = 0.5,
    decision: Decision = Decision.APPROVE,
    amount_usd: float = 10.0,
    scored_at: float = NOW,
    route: str = "cards",
    model: str = "fraud-gbdt",
    version: int = 1,
    arm: ArmRole = ArmRole.CHAMPION,
    source: DecisionSource = DecisionSource.MODEL,
    attributes: dict[str, str] | None = None,
) -> PredictionRecord:
    return PredictionRecord(
        transaction_id=transaction_id or f"txn-{next(_ids)}",
        route=route,
        model=model,
        version=version,
        arm=arm,
        score=score,
        decision=decision,
        source=source,
        amount_usd=amount_usd,
        attributes=attributes or {},
        scored_at=scored_at,
    )


def settings(path: Path, **overrides: Any) -> OutcomeSettings:
    # A long flush interval: the writer stores rows only when asked, so the tests
    # exercise the join of a label that arrives while its prediction is still queued.
    values: dict[str, Any] = {"path": path, "flush_interval_ms": 60_000, **overrides}
    return OutcomeSettings(**values)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outcomes.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[OutcomeStore]:
    with OutcomeStore(settings(db)) as opened:
        yield opened


def test_a_label_reported_right_after_the_score_joins_its_prediction(
    store: OutcomeStore,
) -> None:
    logged = record(
        "txn-a", score=0.93, decision=Decision.DECLINE, amount_usd=120.0, arm=ArmRole.CANARY
    )
    assert store.log_predictions([logged, record("txn-b")]) == 2

    joined = store.report_outcome("txn-a", True, None, NOW + 5 * DAY_S)

    assert joined.prediction == logged
    assert joined.label is True
    assert joined.amount_usd == 120.0  # no amount reported: the scored one
    assert joined.reported_at == NOW + 5 * DAY_S
    assert not joined.updated
    counts = store.counts()
    assert (counts.predictions_logged, counts.outcomes_joined, counts.outcomes_unknown) == (2, 1, 0)
    key = ("cards", "fraud-gbdt", 1, "canary")
    assert counts.fraud_caught_usd == {key: 120.0}
    assert counts.fraud_missed_usd == {}


def test_stored_rows_span_whole_insert_chunks_and_the_rest_in_order(
    store: OutcomeStore, db: Path
) -> None:
    """Rows go in as multi-row INSERTs of INSERT_CHUNK_ROWS and the rest row by row: every
    row stored once, and a later prediction for an id replaces the earlier one, as one
    INSERT per row would."""
    n = 2 * INSERT_CHUNK_ROWS + 7
    first = [record(f"txn-chunk-{i}", score=i / n) for i in range(n)]
    again = record("txn-chunk-3", score=0.99, decision=Decision.DECLINE)  # in chunk 3
    store.log_predictions([*first, again])
    store.flush()

    with sqlite3.connect(db) as connection:
        stored = dict(connection.execute("SELECT transaction_id, score FROM predictions"))
        decision = connection.execute(
            "SELECT decision FROM predictions WHERE transaction_id = 'txn-chunk-3'"
        ).fetchone()
    assert len(stored) == n
    assert stored["txn-chunk-3"] == 0.99 and decision == ("DECLINE",)
    assert stored[f"txn-chunk-{n - 1}"] == (n - 1) / n  # the last, past the whole chunks
    assert stored[f"txn-chunk-{INSERT_CHUNK_ROWS}"] == INSERT_CHUNK_ROWS / n


def test_a_repeated_report_replaces_the_label(store: OutcomeStore) -> None:
    store.log_predictions([record("txn-r", decision=Decision.APPROVE, amount_usd=40.0)])

    first = store.report_outcome("txn-r", True, 25.0, NOW + 1)
    second = store.report_outcome("txn-r", False, None, NOW + 2)

    assert (first.updated, second.updated) == (False, True)
    (report,) = store.performance(now=NOW + 3)
    assert (report.labelled, report.positives) == (1, 0)
    # The counter took the first fraud label (a reported 25 USD missed) and keeps it.
    assert store.counts().fraud_missed_usd == {("cards", "fraud-gbdt", 1, "champion"): 25.0}
    assert store.counts().outcomes_joined == 2


def test_an_unknown_transaction_raises_not_found_and_is_counted(store: OutcomeStore) -> None:
    store.log_predictions([record("txn-known")])

    with pytest.raises(UnknownTransaction) as raised:
        store.report_outcome("txn-unknown", True, None, NOW)

    assert raised.value.kind is ErrorKind.NOT_FOUND
    assert "'txn-unknown'" in raised.value.message
    assert store.counts().outcomes_unknown == 1
    assert store.counts().outcomes_joined == 0


@pytest.mark.parametrize(
    ("transaction_id", "amount_usd", "reported_at", "field"),
    [
        ("", None, NOW, "transaction_id"),
        ("txn-1", -1.0, NOW, "amount_usd"),
        ("txn-1", math.inf, NOW, "amount_usd"),
        ("txn-1", None, math.nan, "reported_at"),
        ("txn-1", None, -5.0, "reported_at"),
    ],
)
def test_bad_reports_are_invalid_arguments(
    store: OutcomeStore,
    transaction_id: str,
    amount_usd: float | None,
    reported_at: float,
    field: str,
) -> None:
    with pytest.raises(GatewayError) as raised:
        store.report_outcome(transaction_id, True, amount_usd, reported_at)
    assert raised.value.kind is ErrorKind.INVALID_ARGUMENT
    assert field in raised.value.message


def test_a_full_queue_drops_predictions_and_counts_them(db: Path) -> None:
    with OutcomeStore(settings(db, queue_rows=4, flush_rows=4)) as store:
        records = [record(f"txn-{i}") for i in range(6)]

        assert store.log_predictions(records) == 4

        counts = store.counts()
        assert (counts.predictions_logged, counts.predictions_dropped_queue_full) == (4, 2)
        store.report_outcome("txn-3", False, None, NOW)
        with pytest.raises(UnknownTransaction):
            store.report_outcome("txn-4", False, None, NOW)
        assert store.stored_predictions() == 4


def test_retention_deletes_old_predictions_and_their_outcomes(db: Path) -> None:
    with OutcomeStore(settings(db, retention_days=90, window_days=30)) as store:
        store.log_predictions(
            [
                record("txn-old", scored_at=NOW - 100 * DAY_S),
                record("txn-recent", scored_at=NOW - 10 * DAY_S),
            ]
        )
        store.report_outcome("txn-old", True, None, NOW - 95 * DAY_S)
        store.report_outcome("txn-recent", True, None, NOW - 5 * DAY_S)

        assert store.prune(now=NOW) == 1

        assert store.stored_predictions() == 1
        outcomes = store.read(lambda c: c.execute("SELECT transaction_id FROM outcomes").fetchall())
        assert outcomes == [("txn-recent",)]
        with pytest.raises(UnknownTransaction):
            store.report_outcome("txn-old", False, None, NOW)


def test_max_rows_keeps_the_newest_predictions(db: Path) -> None:
    with OutcomeStore(settings(db, max_rows=3)) as store:
        store.log_predictions([record(f"txn-{i}", scored_at=NOW + i) for i in range(5)])

        assert store.prune(now=NOW + 10) == 2

        kept = store.read(
            lambda c: c.execute("SELECT transaction_id FROM predictions ORDER BY 1").fetchall()
        )
        assert kept == [("txn-2",), ("txn-3",), ("txn-4",)]


def test_predictions_and_outcomes_survive_a_restart(db: Path) -> None:
    with OutcomeStore(settings(db)) as first:
        first.log_predictions(
            [
                record("txn-1", score=0.9, decision=Decision.DECLINE),
                record("txn-2", score=0.1),
            ]
        )
        first.report_outcome("txn-1", True, None, NOW + 1)
    # Closed with txn-2 never flushed by a join: close stores what was queued.

    with OutcomeStore(settings(db)) as second:
        joined = second.report_outcome("txn-2", False, None, NOW + 2)
        assert joined.prediction.score == 0.1
        (report,) = second.performance(now=NOW + 3)
        assert (report.labelled, report.positives) == (2, 1)
        assert report.decline == Confusion(tp=1, fp=0, tn=1, fn=0)


def test_a_closed_store_refuses_calls_and_counts_late_predictions(db: Path) -> None:
    store = OutcomeStore(settings(db)).start()
    store.close()

    assert store.log_predictions([record()]) == 0
    assert store.counts().predictions_dropped_queue_full == 1
    with pytest.raises(StoreClosed):
        store.report_outcome("txn-1", True, None, NOW)


def test_rank_auc_matches_counting_pairs_with_ties() -> None:
    rng = np.random.default_rng(7)
    # Scores on a coarse grid: many ties between and within the classes.
    scores = rng.integers(0, 8, size=300) / 8.0
    labels = rng.random(300) < 0.3
    positives, negatives = scores[labels], scores[~labels]
    wins = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    expected = (wins + 0.5 * ties) / (positives.size * negatives.size)

    assert rank_auc(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert rank_auc([0.2, 0.9], [True, True]) is None


def test_performance_figures_on_a_hand_checked_example(store: OutcomeStore) -> None:
    # score, decision, label, amount USD
    rows = [
        (0.95, Decision.DECLINE, True, 100.0),  # TP
        (0.90, Decision.DECLINE, False, 10.0),  # FP
        (0.80, Decision.DECLINE, True, 50.0),  # TP
        (0.60, Decision.REVIEW, True, 30.0),  # FN at decline, TP when flagged
        (0.60, Decision.REVIEW, False, 20.0),  # TN at decline, FP when flagged; ties 0.60
        (0.20, Decision.APPROVE, True, 70.0),  # FN
        (0.10, Decision.APPROVE, False, 5.0),  # TN
        (0.05, Decision.APPROVE, False, 5.0),  # TN
    ]
    records = [
        record(f"txn-{i}", score=s, decision=d, amount_usd=a) for i, (s, d, _, a) in enumerate(rows)
    ]
    unlabelled = record("txn-unlabelled", score=0.99, decision=Decision.DECLINE)
    fallback = record("txn-fallback", source=DecisionSource.FALLBACK, decision=Decision.REVIEW)
    store.log_predictions([*records, unlabelled, fallback])
    for i, (_, _, label, _) in enumerate(rows):
        store.report_outcome(f"txn-{i}", label, None, NOW + 1)
    store.report_outcome("txn-fallback", True, None, NOW + 1)

    (report,) = store.performance(now=NOW + 2)

    assert (report.route, report.model, report.version, report.arm) == (
        "cards",
        "fraud-gbdt",
        1,
        "champion",
    )
    assert (report.labelled, report.positives) == (8, 4)  # the fallback answer is not counted
    assert report.decline == Confusion(tp=2, fp=1, tn=3, fn=2)
    assert report.flagged == Confusion(tp=3, fp=2, tn=2, fn=1)
    assert report.precision == pytest.approx(2 / 3)
    assert report.recall == pytest.approx(2 / 4)
    # Positive-negative pairs won: 0.95 beats all 4 negatives, 0.80 beats 3 (not 0.90),
    # 0.60 beats 2 and ties 1 (its twin), 0.20 beats 2: (4 + 3 + 2.5 + 2) / 16.
    assert report.auc == pytest.approx(11.5 / 16)
    assert report.fraud_caught_usd == pytest.approx(150.0)
    assert report.fraud_missed_usd == pytest.approx(100.0)
    assert report.window_start == NOW + 2 - 30 * DAY_S
    assert not report.degraded  # no card figures to compare with


def test_performance_is_per_arm_and_windowed(db: Path) -> None:
    with OutcomeStore(settings(db, window_days=7, window_labels=2)) as store:
        store.log_predictions(
            [
                record("c1", arm=ArmRole.CHAMPION, scored_at=NOW - 1),
                record("c2", arm=ArmRole.CHAMPION, scored_at=NOW - 2),
                record("c3", arm=ArmRole.CHAMPION, scored_at=NOW - 3),  # beyond window_labels
                record("k1", arm=ArmRole.CANARY, version=2, scored_at=NOW - 1),
                record("k2", arm=ArmRole.CANARY, version=2, scored_at=NOW - 8 * DAY_S),  # too old
            ]
        )
        for transaction_id in ("c1", "c2", "c3", "k1", "k2"):
            store.report_outcome(transaction_id, True, None, NOW)

        reports = store.performance(now=NOW)

        assert [(r.arm, r.version, r.labelled) for r in reports] == [
            ("champion", 1, 2),
            ("canary", 2, 1),
        ]
        assert store.performance(now=NOW, route="other") == []


@pytest.fixture(scope="module")
def demo_card(model_repository: Path) -> Metrics:
    return ModelCard.load(model_repository / "fraud-gbdt" / "1" / "card.yaml").metrics


def labelled_stream(
    true_positives: int, false_positives: int, false_negatives: int, true_negatives: int
) -> list[tuple[PredictionRecord, bool]]:
    """Declined fraud scores highest, then declined non-fraud, then missed fraud, then
    the rest: AUC = 1 - (FN x FP) / (positives x negatives)."""
    stream = []
    for i in range(true_positives):
        stream.append(
            (record(score=0.96 + 0.03 * i / true_positives, decision=Decision.DECLINE), True)
        )
    for _ in range(false_positives):
        stream.append((record(score=0.95, decision=Decision.DECLINE), False))
    for _ in range(false_negatives):
        stream.append((record(score=0.6, decision=Decision.REVIEW), True))
    for i in range(true_negatives):
        stream.append((record(score=0.5 * i / true_negatives), False))
    return stream


def replay(store: OutcomeStore, stream: Sequence[tuple[PredictionRecord, bool]]) -> None:
    store.log_predictions([r for r, _ in stream])
    for r, label in stream:
        store.report_outcome(r.transaction_id, label, None, NOW + DAY_S)


def counts_like(card: Metrics, positives: int, negatives: int) -> tuple[int, int, int, int]:
    """TP, FP, FN, TN giving the card's recall and precision at decline."""
    tp = round(card.recall_at_decline * positives)
    fp = round(tp * (1 - card.precision_at_decline) / card.precision_at_decline)
    return tp, fp, positives - tp, negatives - fp


def test_a_stream_like_the_cards_validation_is_not_degraded(db: Path, demo_card: Metrics) -> None:
    figures = {("fraud-gbdt", 1): demo_card}
    with OutcomeStore(settings(db), lambda m, v: figures.get((m, v))) as store:
        replay(store, labelled_stream(*counts_like(demo_card, positives=200, negatives=1800)))

        (report,) = store.performance(now=NOW + 2 * DAY_S)

    assert report.card == demo_card
    assert report.recall == pytest.approx(demo_card.recall_at_decline, abs=0.01)
    assert report.precision == pytest.approx(demo_card.precision_at_decline, abs=0.01)
    assert report.auc is not None and report.auc > demo_card.auc - 0.1
    assert not report.degraded
    assert report.reasons == ()


def test_a_stream_that_misses_most_fraud_is_degraded(db: Path, demo_card: Metrics) -> None:
    figures = {("fraud-gbdt", 1): demo_card}
    tp, fp, _, tn = counts_like(demo_card, positives=200, negatives=1800)
    with OutcomeStore(settings(db), lambda m, v: figures.get((m, v))) as store:
        # A fifth of the fraud the card catches is still declined: recall and precision fall.
        replay(store, labelled_stream(tp // 5, fp, 200 - tp // 5, tn))

        (report,) = store.performance(now=NOW + 2 * DAY_S)

    assert report.degraded
    assert [reason.split(" 0.")[0] for reason in report.reasons] == [
        "precision at decline",
        "recall at decline",
    ]


def test_too_few_labels_are_never_called_degraded(db: Path, demo_card: Metrics) -> None:
    with OutcomeStore(settings(db, min_labels=500), lambda m, v: demo_card) as store:
        replay(store, labelled_stream(1, 20, 20, 100))  # 141 labels, recall 0.05

        (report,) = store.performance(now=NOW + 2 * DAY_S)

    assert report.recall == pytest.approx(1 / 21)
    assert not report.degraded


def test_a_record_from_a_score_result() -> None:
    result = ScoreResult(
        transaction_id="txn-s",
        score=0.7,
        decision=Decision.REVIEW,
        model_name="fraud-gbdt",
        model_version=3,
        arm=ArmRole.CHALLENGER,
        source=DecisionSource.MODEL,
        route="cards",
        config_version=12,
    )

    logged = PredictionRecord.from_result(result, 42.0, {"age_band": "25-34"}, NOW)

    assert (logged.model, logged.version, logged.arm, logged.decision) == (
        "fraud-gbdt",
        3,
        ArmRole.CHALLENGER,
        Decision.REVIEW,
    )
    assert (logged.amount_usd, logged.attributes, logged.scored_at) == (
        42.0,
        {"age_band": "25-34"},
        NOW,
    )


def test_metrics_are_exported_under_their_prometheus_names(store: OutcomeStore) -> None:
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(
        registry=registry, scope_info_enabled=False, disable_target_info=True
    )
    provider = MeterProvider(metric_readers=[reader])
    try:
        store.register_metrics(provider.get_meter("riskwire.test"))
        now = time.time()
        store.log_predictions(
            [
                record("m1", score=0.9, decision=Decision.DECLINE, amount_usd=80.0, scored_at=now),
                record("m2", score=0.1, amount_usd=20.0, scored_at=now),
                record("m3", score=0.2, amount_usd=5.0, scored_at=now),
            ]
        )
        store.report_outcome("m1", True, None, now)
        store.report_outcome("m2", True, None, now)
        store.report_outcome("m3", False, None, now)
        with pytest.raises(UnknownTransaction):
            store.report_outcome("m4", True, None, now)
        store.refresh()

        text = generate_latest(registry).decode()
    finally:
        provider.shutdown()

    labels = 'arm="champion",model="fraud-gbdt",route="cards",version="1"'
    for line in (
        'riskwire_outcomes_total{result="joined"} 3.0',
        'riskwire_outcomes_total{result="unknown"} 1.0',
        "riskwire_predictions_logged_total 3.0",
        'riskwire_predictions_dropped_total{reason="queue_full"} 0.0',
        f"riskwire_performance_precision{{{labels}}} 1.0",
        f"riskwire_performance_recall{{{labels}}} 0.5",
        f"riskwire_performance_auc{{{labels}}} 0.5",
        f"riskwire_performance_degraded{{{labels}}} 0.0",
        f"riskwire_performance_labels{{{labels}}} 3.0",
        f"riskwire_fraud_caught_amount_USD_total{{{labels}}} 80.0",
        f"riskwire_fraud_missed_amount_USD_total{{{labels}}} 20.0",
    ):
        assert line in text.splitlines(), line


# -- ReportOutcome over gRPC ------------------------------------------------------------


async def call_report_outcome(
    store: OutcomeStore | None, requests: Sequence[pb.ReportOutcomeRequest]
) -> list[pb.ReportOutcomeResponse | grpc.aio.AioRpcError]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "riskwire.v1.Scoring", {"ReportOutcome": outcome_method_handler(store)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    answers: list[pb.ReportOutcomeResponse | grpc.aio.AioRpcError] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ScoringStub(channel)
            for request in requests:
                try:
                    answers.append(await stub.ReportOutcome(request, timeout=10))
                except grpc.aio.AioRpcError as error:
                    answers.append(error)
    finally:
        await server.stop(None)
    return answers


def test_report_outcome_over_grpc(store: OutcomeStore) -> None:
    store.log_predictions(
        [
            record(
                "txn-g",
                score=0.91,
                decision=Decision.DECLINE,
                version=4,
                arm=ArmRole.CANARY,
                amount_usd=50.0,
            )
        ]
    )
    now_ms = int(time.time() * 1000)
    requests = [
        pb.ReportOutcomeRequest(
            transaction_id="txn-g", label=True, amount_minor=1250, currency="EUR"
        ),
        pb.ReportOutcomeRequest(transaction_id="txn-g", label=False, reported_at_ms=now_ms),
        pb.ReportOutcomeRequest(transaction_id="txn-missing", label=True),
        pb.ReportOutcomeRequest(transaction_id="", label=True),
        pb.ReportOutcomeRequest(
            transaction_id="txn-g", label=True, amount_minor=-5, currency="USD"
        ),
        pb.ReportOutcomeRequest(transaction_id="txn-g", label=True, amount_minor=5, currency="XXX"),
        pb.ReportOutcomeRequest(
            transaction_id="txn-g", label=True, reported_at_ms=now_ms + 30 * 86_400_000
        ),
    ]

    joined, updated, missing, *invalid = asyncio.run(call_report_outcome(store, requests))

    assert isinstance(joined, pb.ReportOutcomeResponse)
    assert joined == pb.ReportOutcomeResponse(
        transaction_id="txn-g",
        model_name="fraud-gbdt",
        model_version="4",
        route="cards",
        arm=pb.CANARY,
        score=0.91,
        decision=pb.DECLINE,
        decision_source=pb.MODEL,
        updated=False,
    )
    assert isinstance(updated, pb.ReportOutcomeResponse) and updated.updated
    # 12.50 EUR at the encoder's table: the fraud counter took the reported amount.
    assert store.counts().fraud_caught_usd == {
        ("cards", "fraud-gbdt", 4, "canary"): pytest.approx(14.5)
    }
    assert isinstance(missing, grpc.aio.AioRpcError)
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    assert "'txn-missing'" in (missing.details() or "")
    details = []
    for error in invalid:
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        details.append(error.details() or "")
    assert details[0] == "transaction_id is required"
    assert details[1] == "amount_minor must be >= 0, got -5"
    assert "'XXX'" in details[2]
    assert details[3].startswith(f"reported_at_ms {now_ms + 30 * 86_400_000} is more than")


def test_report_outcome_without_a_store_is_failed_precondition() -> None:
    (answer,) = asyncio.run(
        call_report_outcome(None, [pb.ReportOutcomeRequest(transaction_id="t", label=True)])
    )

    assert isinstance(answer, grpc.aio.AioRpcError)
    assert answer.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_the_admin_performance_message(db: Path, demo_card: Metrics) -> None:
    with OutcomeStore(settings(db), lambda m, v: demo_card) as store:
        store.log_predictions([record("p1", score=0.9, decision=Decision.DECLINE)])
        store.report_outcome("p1", True, None, NOW + 1)
        (report,) = store.performance(now=NOW + 2)

    message = admin.performance(report)

    assert (message.route, message.model, message.version, message.arm) == (
        "cards",
        "fraud-gbdt",
        1,
        "champion",
    )
    assert message.decline.true_positives == 1
    assert message.HasField("precision") and message.precision == 1.0
    assert not message.HasField("auc")  # one class only
    assert message.card_auc == demo_card.auc
    assert message.window_start == "2026-12-16T08:00:02.000+00:00"  # NOW + 2 s - 30 days


def test_card_figures_come_from_the_repository(model_repository: Path, demo_card: Metrics) -> None:
    figures = card_figures_from(model_repository)

    assert figures("fraud-gbdt", 1) == demo_card
    assert figures("fraud-gbdt", 999) is None


def test_the_attributes_column_is_the_same_json_whether_kept_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.telemetry import outcomes as store

    def reference(attributes: dict[str, Any]) -> str:
        return json.dumps(dict(sorted(attributes.items())), separators=(",", ":"))

    monkeypatch.setattr(store, "ATTRIBUTES_JSON_CACHE", 3)
    monkeypatch.setattr(store, "_attributes_json", {})
    sets: list[dict[str, Any]] = [
        {"region": "north", "age_band": "18-24"},
        {"age_band": "18-24", "region": "north"},  # the same set, other order
        {"region": 's\u00fcd "quoted"', "age_band": "65+"},
        {},
        {"region": "east"},
        {"tags": ["a", "b"]},  # unhashable: serialized every time, never kept
    ]
    for _ in range(2):
        for attributes in sets:
            assert store.attributes_json(attributes) == reference(attributes)
    assert len(store._attributes_json) <= 3  # bounded: full, it starts over
