"""Fairness reports: hand-computed group rates and disparities, the four-fifths flag,
min_group_size, the same figures through a real outcome store, and the exported
metric names."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from gateway.dataplane import DecisionSource
from gateway.features.spec import FeatureSpecError, parse_feature_spec, source_kind
from gateway.grpc import admin
from gateway.telemetry.fairness import (
    FairnessReport,
    FairnessSettings,
    GroupCounts,
    fairness_reports,
)
from gateway.telemetry.outcomes import DAY_S, OutcomeSettings, OutcomeStore, PredictionRecord
from router.routes import ArmRole, Decision

NOW = 1_800_000_000.0
_ids = itertools.count()


def counts(
    group: str,
    decisions: int,
    declines: int,
    positives: int = 0,
    true_positives: int = 0,
    negatives: int = 0,
    false_positives: int = 0,
    attribute: str = "age_band",
) -> GroupCounts:
    return GroupCounts(
        route="cards",
        model="fraud-gbdt",
        version=1,
        arm="champion",
        attribute=attribute,
        group=group,
        decisions=decisions,
        declines=declines,
        positives=positives,
        true_positives=true_positives,
        negatives=negatives,
        false_positives=false_positives,
    )


SETTINGS = FairnessSettings(min_group_size=100, di_threshold=0.8, eo_threshold=0.1)


def only(reports: list[FairnessReport]) -> FairnessReport:
    assert len(reports) == 1
    return reports[0]


def test_hand_computed_groups() -> None:
    report = only(
        fairness_reports(
            [
                # decline rate 0.10; TPR 8/10, FPR 5/100
                counts(
                    "18-24",
                    200,
                    20,
                    positives=10,
                    true_positives=8,
                    negatives=100,
                    false_positives=5,
                ),
                # decline rate 0.15; TPR 6/10, FPR 9/100
                counts(
                    "25-34",
                    100,
                    15,
                    positives=10,
                    true_positives=6,
                    negatives=100,
                    false_positives=9,
                ),
                # under min_group_size: reported, never compared
                counts(
                    "65+", 50, 40, positives=5, true_positives=5, negatives=10, false_positives=9
                ),
            ],
            SETTINGS,
        )
    )

    assert [(g.group, g.selection_rate, g.tpr, g.fpr, g.compared) for g in report.groups] == [
        ("18-24", 0.10, 0.8, 0.05, True),
        ("25-34", 0.15, 0.6, 0.09, True),
        ("65+", 0.8, 1.0, 0.9, False),
    ]
    assert report.disparate_impact_ratio == pytest.approx(0.10 / 0.15)
    assert report.demographic_parity_difference == pytest.approx(0.05)
    # max(TPR gap 0.2, FPR gap 0.04)
    assert report.equalized_odds_difference == pytest.approx(0.2)
    assert report.four_fifths_violated
    assert report.equalized_odds_violated


def test_the_four_fifths_rule_passes_at_and_above_point_eight() -> None:
    report = only(
        fairness_reports(
            [counts("a", 1000, 100), counts("b", 1000, 120), counts("c", 500, 50)], SETTINGS
        )
    )

    assert report.disparate_impact_ratio == pytest.approx(100 / 120)
    assert report.demographic_parity_difference == pytest.approx(0.02)
    assert not report.four_fifths_violated
    assert report.equalized_odds_difference is None  # no labels yet
    assert not report.equalized_odds_violated


def test_min_group_size_leaves_nothing_to_compare_with_one_large_group() -> None:
    report = only(fairness_reports([counts("a", 500, 5), counts("b", 99, 50)], SETTINGS))

    assert [g.compared for g in report.groups] == [True, False]
    assert report.disparate_impact_ratio is None
    assert report.demographic_parity_difference is None
    assert not report.four_fifths_violated


def test_no_declines_at_all_is_no_disparity() -> None:
    report = only(fairness_reports([counts("a", 500, 0), counts("b", 300, 0)], SETTINGS))

    assert report.disparate_impact_ratio is None  # 0 / 0
    assert report.demographic_parity_difference == 0.0
    assert not report.four_fifths_violated


def test_equalized_odds_needs_min_group_size_labels() -> None:
    report = only(
        fairness_reports(
            [
                counts(
                    "a", 1000, 100, positives=60, true_positives=50, negatives=50, false_positives=1
                ),
                # many decisions, few labels: no part in equalized odds
                counts(
                    "b", 1000, 100, positives=5, true_positives=0, negatives=5, false_positives=5
                ),
            ],
            SETTINGS,
        )
    )

    assert report.equalized_odds_difference is None


def test_one_report_per_attribute_and_arm() -> None:
    reports = fairness_reports(
        [
            counts("f", 100, 10, attribute="gender"),
            counts("a", 100, 10),
            counts("m", 100, 10, attribute="gender"),
        ],
        SETTINGS,
    )

    assert [(r.attribute, [g.group for g in r.groups]) for r in reports] == [
        ("age_band", ["a"]),
        ("gender", ["f", "m"]),
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutcomeStore]:
    settings = OutcomeSettings(path=tmp_path / "outcomes.sqlite3", window_days=7)
    with OutcomeStore(settings, fairness=FairnessSettings(min_group_size=4)) as opened:
        yield opened


def prediction(
    attributes: dict[str, str],
    decision: Decision,
    scored_at: float = NOW,
    source: DecisionSource = DecisionSource.MODEL,
    arm: ArmRole = ArmRole.CHAMPION,
) -> PredictionRecord:
    return PredictionRecord(
        transaction_id=f"txn-{next(_ids)}",
        route="cards",
        model="fraud-gbdt",
        version=1,
        arm=arm,
        score=0.9 if decision is Decision.DECLINE else 0.1,
        decision=decision,
        source=source,
        amount_usd=10.0,
        attributes=attributes,
        scored_at=scored_at,
    )


def test_reports_from_the_store(store: OutcomeStore) -> None:
    decline, approve = Decision.DECLINE, Decision.APPROVE
    # group x: 4 decisions, 2 declines; labels: fraud declined, fraud approved, clean declined
    x = [prediction({"region": "x"}, d) for d in (decline, decline, approve, approve)]
    # group y: 5 decisions, 1 decline; labels: fraud declined, clean approved
    y = [prediction({"region": "y"}, d) for d in (decline, approve, approve, approve, approve)]
    ignored = [
        prediction({}, decline),  # no monitoring attributes
        prediction({"region": "x"}, decline, source=DecisionSource.FALLBACK),
        prediction({"region": "x"}, decline, scored_at=NOW - 8 * DAY_S),  # out of window
    ]
    store.log_predictions([*x, *y, *ignored])
    for record, label in ((x[0], True), (x[2], True), (x[1], False), (y[0], True), (y[1], False)):
        store.report_outcome(record.transaction_id, label, None, NOW + 1)

    report = only(store.fairness.reports(now=NOW + 2))

    assert (report.arm, report.attribute) == ("champion", "region")
    assert [
        (g.group, g.decisions, g.declines, g.labelled, g.selection_rate, g.tpr, g.fpr)
        for g in report.groups
    ] == [("x", 4, 2, 3, 0.5, 0.5, 1.0), ("y", 5, 1, 2, 0.2, 1.0, 0.0)]
    assert report.disparate_impact_ratio == pytest.approx(0.4)
    assert report.demographic_parity_difference == pytest.approx(0.3)
    assert report.four_fifths_violated
    assert report.equalized_odds_difference is None  # 3 and 2 labels < min_group_size 4
    assert store.fairness.reports(now=NOW + 2, route="other") == []


def test_fairness_gauges_under_their_prometheus_names(store: OutcomeStore) -> None:
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(
        registry=registry, scope_info_enabled=False, disable_target_info=True
    )
    provider = MeterProvider(metric_readers=[reader])
    try:
        store.register_metrics(provider.get_meter("riskwire.test"))
        now = time.time()
        store.log_predictions(
            [prediction({"region": "x"}, Decision.DECLINE, scored_at=now) for _ in range(2)]
            + [prediction({"region": "x"}, Decision.APPROVE, scored_at=now) for _ in range(2)]
            + [prediction({"region": "y"}, Decision.DECLINE, scored_at=now)]
            + [prediction({"region": "y"}, Decision.APPROVE, scored_at=now) for _ in range(3)]
        )
        store.refresh()

        text = generate_latest(registry).decode().splitlines()
    finally:
        provider.shutdown()

    report = {"arm": "champion", "attribute": "region", "model": "fraud-gbdt"}
    report |= {"route": "cards", "version": "1"}
    for line in (
        sample("riskwire_fairness_selection_rate", 0.5, **report, group="x"),
        sample("riskwire_fairness_selection_rate", 0.25, **report, group="y"),
        sample("riskwire_fairness_disparate_impact_ratio", 0.5, **report),
        sample("riskwire_fairness_demographic_parity_difference", 0.25, **report),
    ):
        assert line in text, line
    # Defined only once labels arrive: no sample yet.
    assert not any(line.startswith("riskwire_fairness_equalized_odds_difference{") for line in text)
    assert not any(line.startswith("riskwire_fairness_true_positive_rate{") for line in text)


def sample(name: str, value: float, **labels: str) -> str:
    """A Prometheus text-format sample line, labels sorted as the exporter writes them."""
    written = ",".join(f'{key}="{labels[key]}"' for key in sorted(labels))
    return f"{name}{{{written}}} {value}"


def test_monitoring_attributes_can_never_be_a_model_input() -> None:
    # The design note, checked where it is enforced: a feature spec reads only the
    # transaction's fields and its numeric/categorical extras, so a card that names a
    # monitoring attribute does not load; fairness.py reads them from the store only.
    assert source_kind("monitoring_attributes.age_band") is None
    spec = {
        "version": "leaky-1",
        "features": [
            {
                "name": "age",
                "transform": "one_hot",
                "source": "monitoring_attributes.age_band",
                "vocabulary": ["18-24"],
            },
        ],
    }
    with pytest.raises(FeatureSpecError):
        parse_feature_spec(spec)


def test_the_admin_fairness_message() -> None:
    reports = fairness_reports(
        [counts("a", 200, 20, positives=5, true_positives=5), counts("b", 100, 30)], SETTINGS
    )

    message = admin.fairness_response(SETTINGS, reports)

    (report,) = message.reports
    assert (report.attribute, report.four_fifths_violated) == ("age_band", True)
    assert report.disparate_impact_ratio == pytest.approx(1 / 3)
    assert not report.HasField("equalized_odds_difference")
    assert [(g.group, g.HasField("tpr"), g.HasField("fpr")) for g in report.groups] == [
        ("a", True, False),
        ("b", False, False),
    ]
    assert (message.min_group_size, message.di_threshold) == (100, 0.8)
