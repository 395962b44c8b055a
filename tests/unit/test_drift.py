"""Drift monitoring: PSI, the card's frozen bins, the sliding window, the pending bound,
the minimum sample size's statistics, and the metrics as Prometheus sees them.

Live rows are real: synthetic transactions from ``gateway.data.synth`` (a seed other
than training's, and with amounts shifted), encoded by the serving encoder and scored
by the demo models' ONNX files, compared with the demo cards' reference histograms.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from gateway.data.synth import SynthOptions, generate
from gateway.data.table import Table
from gateway.features import dispatch
from gateway.features.columns import columns_from_table
from gateway.models.card import ModelCard
from gateway.telemetry.drift import (
    PSI_EPSILON,
    SCORE,
    DriftLevel,
    DriftMonitor,
    DriftMonitors,
    DriftReport,
    DriftSettings,
    bin_index,
    promql_psi,
    psi,
)

MODELS = ("fraud-gbdt", "fraud-mlp")
LIVE_SEED = 11  # not the demo models' training seed (7)
LIVE_ROWS = 20_000  # encoded and scored per table; drawn from a world of training size
AMOUNT_SHIFT = 3.0


@dataclass(frozen=True)
class Traffic:
    """Encoded rows and scores of one model, in time order."""

    card: ModelCard
    rows: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float64]
    shifted_rows: npt.NDArray[np.float32]
    shifted_scores: npt.NDArray[np.float64]


def _subset(table: Table, n: int, rng: np.random.Generator) -> Table:
    keep = np.sort(rng.choice(len(table["timestamp_ms"]), n, replace=False))
    return {name: column[keep] for name, column in table.items()}


def _encode_and_score(
    card: ModelCard, directory: Path, table: Table
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    spec = card.spec
    rows = dispatch.make_encoder(spec, "auto").encode(columns_from_table(table, spec.sources))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    (out,) = session.run([card.outputs.score.name], {card.inputs.name: rows})
    return rows, np.asarray(out)[:, card.outputs.score.column].astype(np.float64)


@pytest.fixture(scope="module")
def tables(model_repository: Path) -> tuple[Table, Table]:
    """Unshifted and amount-shifted traffic from a world as large as training's."""
    card = ModelCard.load(model_repository / MODELS[0] / "1" / "card.yaml")
    generator = card.lineage.generator
    assert generator is not None
    base = SynthOptions(**generator["options"])
    shifted = SynthOptions(**{**generator["options"], "amount_shift": AMOUNT_SHIFT})
    rows = int(generator["rows"])
    rng = np.random.default_rng(3)
    return (
        _subset(generate(rows, LIVE_SEED, base), LIVE_ROWS, rng),
        _subset(generate(rows, LIVE_SEED, shifted), LIVE_ROWS, rng),
    )


@pytest.fixture(scope="module", params=MODELS)
def traffic(request: pytest.FixtureRequest, model_repository: Path, tables: Any) -> Traffic:
    directory = model_repository / request.param / "1"
    card = ModelCard.load(directory / "card.yaml")
    rows, scores = _encode_and_score(card, directory, tables[0])
    shifted_rows, shifted_scores = _encode_and_score(card, directory, tables[1])
    return Traffic(card, rows, scores, shifted_rows, shifted_scores)


@pytest.fixture(scope="module")
def gbdt(model_repository: Path) -> ModelCard:
    return ModelCard.load(model_repository / "fraud-gbdt" / "1" / "card.yaml")


def _feed(monitor: DriftMonitor, rows: npt.NDArray[Any], scores: npt.NDArray[Any]) -> None:
    """Observe in batches of 64, as the batcher would hand them over."""
    for start in range(0, len(scores), 64):
        monitor.observe(rows[start : start + 64], scores[start : start + 64])


def _by_name(report: DriftReport) -> dict[str, Any]:
    return {d.name: d for d in report.distributions}


# --------------------------------------------------------------------------- psi and bins


def test_psi_matches_a_hand_computation() -> None:
    # q = (0.4, 0.4, 0.2) against p = (0.5, 0.3, 0.2)
    expected = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.4 - 0.3) * math.log(0.4 / 0.3)
    assert psi([0.5, 0.3, 0.2], [40, 40, 20]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.0510826, abs=1e-7)
    assert psi([0.5, 0.3, 0.2], [5, 3, 2]) == pytest.approx(0.0, abs=1e-15)


def test_psi_floors_empty_bins_at_epsilon_on_both_sides() -> None:
    # A live share where the reference has none (p = 0 -> epsilon).
    outside = (0.1 - PSI_EPSILON) * math.log(0.1 / PSI_EPSILON) + (0.5 - 0.6) * math.log(0.5 / 0.6)
    assert psi([0.0, 0.6, 0.4], [10, 50, 40]) == pytest.approx(outside, rel=1e-12)
    # An emptied reference bin (q = 0 -> epsilon): the same size of term, finite.
    emptied = (PSI_EPSILON - 0.1) * math.log(PSI_EPSILON / 0.1) + (0.6 - 0.5) * math.log(0.6 / 0.5)
    assert psi([0.1, 0.5, 0.4], [0, 60, 40]) == pytest.approx(emptied, rel=1e-12)
    assert math.isfinite(emptied) and emptied > 0.69
    # A larger epsilon shrinks the term.
    assert psi([0.1, 0.5, 0.4], [0, 60, 40], epsilon=1e-2) < emptied


def test_psi_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(ValueError, match="no live observations"):
        psi([0.5, 0.5], [0, 0])
    with pytest.raises(ValueError, match="must match"):
        psi([0.5, 0.5], [1, 2, 3])
    with pytest.raises(ValueError, match=">= 0"):
        psi([0.5, 0.5], [3, -1])


def test_bins_match_the_card_edges_at_their_boundaries(gbdt: ModelCard) -> None:
    edges = np.asarray(gbdt.reference.features["amount_log"].edges)
    k = len(edges)
    below = np.nextafter(edges, -np.inf)
    values = np.concatenate([edges, below, [np.nan, np.inf, -np.inf]])
    got = bin_index(edges, values)
    assert got.tolist() == np.searchsorted(edges, values, side="right").tolist()
    # [e_i, e_{i+1}) is bin i + 1: an edge opens its bin, the value below closes the one before.
    assert got[:k].tolist() == list(range(1, k + 1))
    assert got[k : 2 * k].tolist() == list(range(k))
    assert got[-3:].tolist() == [k, k, 0]  # NaN and +inf in overflow, -inf in underflow
    # One-hot columns: 0.0 and 1.0 each get a real bin of their own.
    onehot = gbdt.reference.features["channel=ECOMMERCE"].edges
    assert bin_index(onehot, np.array([0.0, 1.0], dtype=np.float32)).tolist() == [1, 2]


def test_the_training_maximum_stays_in_the_last_real_bin(gbdt: ModelCard) -> None:
    # The top edge is the float64 just above the (float32) training maximum. Compared in
    # float32 it would round onto that maximum and push it into overflow.
    edges = np.asarray(gbdt.reference.features["amount_log"].edges)
    maximum = np.array([edges[-1]], dtype=np.float32)
    assert bin_index(edges, maximum).tolist() == [len(edges) - 1]
    assert np.searchsorted(edges.astype(np.float32), maximum, side="right")[0] == len(edges)


# --------------------------------------------------------------------------- real traffic


def test_unshifted_traffic_stays_ok_and_shifted_amounts_reach_act(traffic: Traffic) -> None:
    settings = DriftSettings()
    n = settings.min_samples
    pick = np.sort(np.random.default_rng(5).choice(len(traffic.scores), n, replace=False))

    calm = DriftMonitor(traffic.card, settings)
    _feed(calm, traffic.rows[pick], traffic.scores[pick])
    assert calm.fold(now=0.0) == n
    report = calm.report(now=0.0)
    figures = {d.name: round(d.psi or 0.0, 4) for d in report.distributions}
    assert report.samples == n
    assert all(d.psi is not None and d.psi < settings.watch_psi for d in report.distributions), (
        figures
    )
    assert report.level == DriftLevel.OK

    shifted = DriftMonitor(traffic.card, settings)
    _feed(shifted, traffic.shifted_rows[pick], traffic.shifted_scores[pick])
    shifted.fold(now=0.0)
    shifted_report = shifted.report(now=0.0)
    amount = _by_name(shifted_report)["amount_log"]
    assert amount.psi is not None and amount.psi > settings.act_psi, amount
    assert amount.level == DriftLevel.ACT
    assert shifted_report.level == DriftLevel.ACT
    # Live shares are the window's own counts on the card's edges.
    column = traffic.card.feature_names.index("amount_log")
    counts = np.bincount(
        bin_index(amount.edges, traffic.shifted_rows[pick, column]),
        minlength=len(amount.reference_proportions),
    )
    assert amount.live_proportions == pytest.approx(counts / n)


def test_cyclical_outputs_are_skipped_because_a_short_window_is_never_like_training(
    traffic: Traffic,
) -> None:
    cyclical = {"hour_sin", "hour_cos", "weekday_sin", "weekday_cos"}
    assert cyclical <= set(DriftMonitor(traffic.card, DriftSettings()).unmonitored)
    # The first 500 rows of unchanged traffic in time order span less than a day of 30.
    everything = DriftMonitor(traffic.card, DriftSettings(skip_cyclical=False))
    assert not cyclical & set(everything.unmonitored)
    _feed(everything, traffic.rows[:500], traffic.scores[:500])
    everything.fold(now=0.0)
    drifts = _by_name(everything.report(now=0.0))
    assert drifts["weekday_sin"].level == drifts["weekday_cos"].level == DriftLevel.ACT
    assert drifts["amount_log"].level == DriftLevel.OK


def test_min_samples_gates_psi(traffic: Traffic) -> None:
    monitor = DriftMonitor(traffic.card, DriftSettings(min_samples=300))
    _feed(monitor, traffic.rows[:299], traffic.scores[:299])
    monitor.fold(now=0.0)
    report = monitor.report(now=0.0)
    assert report.samples == 299
    assert {d.level for d in report.distributions} == {DriftLevel.INSUFFICIENT}
    assert all(d.psi is None for d in report.distributions)
    assert report.level == DriftLevel.INSUFFICIENT
    monitor.observe(traffic.rows[299:300], traffic.scores[299:300])
    monitor.fold(now=0.0)
    assert all(d.psi is not None for d in monitor.report(now=0.0).distributions)


# --------------------------------------------------------------------------- statistics


def _false_alarms(
    proportions: npt.NDArray[np.float64], n: int, windows: int, rng: np.random.Generator
) -> npt.NDArray[np.bool_]:
    """Per window of ``n`` rows drawn from the reference itself: PSI > 0.1?"""
    draws = rng.multinomial(n, proportions / proportions.sum(), size=windows)
    return np.array([psi(proportions, counts) > 0.1 for counts in draws])


def test_small_windows_alarm_on_unchanged_traffic() -> None:
    # The figure: 10 equal bins, 100 rows. PSI averages about (k - 1) / N = 0.09
    # and exceeds 0.1 in about 40% of windows for one distribution: many, if not "most".
    rng = np.random.default_rng(2026)
    uniform = np.full(10, 0.1)
    draws = rng.multinomial(100, uniform, size=500)
    values = np.array([psi(uniform, counts) for counts in draws])
    assert values.mean() == pytest.approx(0.09, abs=0.01)
    assert 0.3 < (values > 0.1).mean() < 0.5


def test_small_windows_alarm_on_most_windows_of_a_whole_model(gbdt: ModelCard) -> None:
    rng = np.random.default_rng(2027)
    monitor = DriftMonitor(gbdt, DriftSettings())
    any_alarm = np.zeros(500, dtype=bool)
    for _, reference in monitor.references():
        any_alarm |= _false_alarms(np.asarray(reference), 100, 500, rng)
    assert any_alarm.mean() > 0.9


@pytest.mark.parametrize("model", MODELS)
def test_default_min_samples_keeps_false_alarms_under_one_percent(
    model: str, model_repository: Path
) -> None:
    card = ModelCard.load(model_repository / model / "1" / "card.yaml")
    settings = DriftSettings()
    rng = np.random.default_rng(2028)
    monitor = DriftMonitor(card, settings)
    any_alarm = np.zeros(500, dtype=bool)
    for _, reference in monitor.references():
        any_alarm |= _false_alarms(np.asarray(reference), settings.min_samples, 500, rng)
    # Every distribution of the model at once, so per distribution it is far rarer.
    assert any_alarm.mean() < 0.01


# --------------------------------------------------------------------------- window


def _expected_shares(
    edges: tuple[float, ...], values: npt.NDArray[Any], bins: int
) -> npt.NDArray[np.float64]:
    return np.bincount(bin_index(edges, values), minlength=bins) / len(values)


def test_window_slides_by_count(traffic: Traffic) -> None:
    settings = DriftSettings(window_count=1000, min_samples=100)
    monitor = DriftMonitor(traffic.card, settings)
    column = traffic.card.feature_names.index("amount_log")
    _feed(monitor, traffic.shifted_rows[:1000], traffic.shifted_scores[:1000])
    monitor.fold(now=0.0)
    assert _by_name(monitor.report(now=0.0))["amount_log"].level == DriftLevel.ACT

    new_rows, new_scores = traffic.rows[:1000], traffic.scores[:1000]
    _feed(monitor, new_rows, new_scores)
    monitor.fold(now=1.0)
    report = monitor.report(now=1.0)
    # Whole slices of at most ceil(1000 / 64) = 16 rows leave: 985..1000 remain.
    assert 1000 - 16 < report.samples <= 1000
    amount = _by_name(report)["amount_log"]
    bins = len(amount.reference_proportions)
    recent = new_rows[-report.samples :, column]
    assert amount.live_proportions == pytest.approx(_expected_shares(amount.edges, recent, bins))
    assert amount.level == DriftLevel.OK
    assert report.observed_rows == 2000
    for _, counts in monitor.bin_totals():
        assert counts.sum() == 2000

    # One fold of more than window_count rows keeps only its newest.
    _feed(monitor, traffic.shifted_rows[:2500], traffic.shifted_scores[:2500])
    monitor.fold(now=2.0)
    report = monitor.report(now=2.0)
    assert 1000 - 16 < report.samples <= 1000
    recent = traffic.shifted_rows[2500 - report.samples : 2500, column]
    assert _by_name(report)["amount_log"].live_proportions == pytest.approx(
        _expected_shares(amount.edges, recent, bins)
    )


def test_window_slides_by_time(traffic: Traffic) -> None:
    settings = DriftSettings(window_seconds=60.0, min_samples=100)
    monitor = DriftMonitor(traffic.card, settings)
    column = traffic.card.feature_names.index("amount_log")
    _feed(monitor, traffic.shifted_rows[:300], traffic.shifted_scores[:300])
    monitor.fold(now=1000.0)
    _feed(monitor, traffic.rows[:300], traffic.scores[:300])
    monitor.fold(now=1030.0)
    assert monitor.report(now=1030.0).samples == 600
    assert monitor.report(now=1059.9).samples == 600

    later = monitor.report(now=1060.0)  # the first batch is 60 s old: out
    assert later.samples == 300
    amount = _by_name(later)["amount_log"]
    bins = len(amount.reference_proportions)
    expected = _expected_shares(amount.edges, traffic.rows[:300, column], bins)
    assert amount.live_proportions == pytest.approx(expected)

    empty = monitor.report(now=1090.0)
    assert empty.samples == 0
    assert empty.level == DriftLevel.INSUFFICIENT
    assert all(d.psi is None and sum(d.live_proportions) == 0.0 for d in empty.distributions)
    assert empty.observed_rows == 600  # the counters keep everything


def test_pending_rows_are_bounded_and_drops_counted(traffic: Traffic) -> None:
    monitor = DriftMonitor(traffic.card, DriftSettings(max_pending_rows=100, min_samples=10))
    rows, scores = traffic.rows, traffic.scores
    monitor.observe(rows[:60], scores[:60])
    monitor.observe(rows[60:120], scores[60:120])  # 120 > 100: dropped whole
    monitor.observe(rows[120:160], scores[120:160])
    assert monitor.pending_rows == 100
    assert monitor.dropped_rows == 60
    assert monitor.fold(now=0.0) == 100
    assert monitor.pending_rows == 0
    monitor.observe(rows[:60], scores[:60])  # room again after the fold
    assert monitor.dropped_rows == 60
    monitor.fold(now=0.0)
    report = monitor.report(now=0.0)
    assert report.samples == report.observed_rows == 160
    assert report.dropped_rows == 60


def test_observe_refuses_rows_that_do_not_fit_the_card(traffic: Traffic) -> None:
    monitor = DriftMonitor(traffic.card, DriftSettings())
    with pytest.raises(ValueError, match=r"must be \[n, "):
        monitor.observe(traffic.rows[:5, :-1], traffic.scores[:5])
    with pytest.raises(ValueError, match=r"must be \[n, "):
        monitor.observe(traffic.rows[:5], traffic.scores[:4])
    monitor.observe(traffic.rows[:0], traffic.scores[:0])
    assert monitor.pending_rows == 0


# --------------------------------------------------------------------------- settings


def test_settings_validate_what_must_hold_together() -> None:
    with pytest.raises(ValidationError, match="must be below act_psi"):
        DriftSettings(watch_psi=0.3, act_psi=0.25)
    with pytest.raises(ValidationError, match="must not exceed window_count"):
        DriftSettings(min_samples=2000, window_count=1000)
    with pytest.raises(ValidationError, match="Extra inputs"):
        DriftSettings.model_validate({"window_size": 10})
    settings = DriftSettings(watch_psi=0.05, act_psi=0.2)
    assert settings.level(0.049) == DriftLevel.OK
    assert settings.level(0.05) == DriftLevel.WATCH
    assert settings.level(0.2) == DriftLevel.ACT
    assert settings.level(None) == DriftLevel.INSUFFICIENT
    with pytest.raises(ValidationError):
        settings.watch_psi = 0.01  # type: ignore[misc]


# --------------------------------------------------------------------------- monitors, metrics


@pytest.fixture
def prometheus() -> Iterator[tuple[MeterProvider, CollectorRegistry]]:
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(
        registry=registry, scope_info_enabled=False, disable_target_info=True
    )
    provider = MeterProvider(metric_readers=[reader])
    yield provider, registry
    provider.shutdown()


def _samples(registry: CollectorRegistry) -> dict[str, list[Any]]:
    text = generate_latest(registry).decode()
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_monitors_per_version(model_repository: Path, traffic: Traffic) -> None:
    monitors = DriftMonitors(DriftSettings(min_samples=100))
    gbdt = ModelCard.load(model_repository / "fraud-gbdt" / "1" / "card.yaml")
    mlp = ModelCard.load(model_repository / "fraud-mlp" / "1" / "card.yaml")
    first = monitors.get_or_create(mlp)
    assert monitors.get_or_create(mlp) is first
    monitors.get_or_create(gbdt)
    monitors.observe(traffic.card, traffic.rows[:200], traffic.scores[:200])
    assert monitors.fold_all(now=0.0) == 200
    reports = monitors.reports(now=0.0)
    assert [(r.model, r.version) for r in reports] == [("fraud-gbdt", 1), ("fraud-mlp", 1)]
    assert {r.model: r.samples for r in reports} == {
        traffic.card.name: 200,
        ({"fraud-gbdt", "fraud-mlp"} - {traffic.card.name}).pop(): 0,
    }
    assert [r.model for r in monitors.reports(model="fraud-mlp", now=0.0)] == ["fraud-mlp"]
    assert monitors.reports(model="fraud-mlp", version=2, now=0.0) == []
    assert monitors.remove("fraud-mlp", 1)
    assert not monitors.remove("fraud-mlp", 1)
    assert [m.name for m in monitors.monitors()] == ["fraud-gbdt"]


def test_metrics_come_out_under_their_prometheus_names(
    prometheus: tuple[MeterProvider, CollectorRegistry], traffic: Traffic
) -> None:
    provider, registry = prometheus
    settings = DriftSettings(min_samples=200, max_pending_rows=300)
    monitors = DriftMonitors(settings)
    monitors.register_metrics(provider.get_meter("riskwire.drift"))
    card = traffic.card
    labels = {"model": card.name, "version": "1"}
    # Folded and read at time.monotonic(), as the collection callbacks read them.
    monitors.observe(card, traffic.rows[:150], traffic.scores[:150])
    monitors.fold_all()

    samples = _samples(registry)
    assert "riskwire_drift_psi" not in samples  # 150 < min_samples: no PSI yet
    (window,) = samples["riskwire_drift_window_samples"]
    assert window.labels == labels and window.value == 150

    monitors.observe(card, traffic.rows[150:400], traffic.scores[150:400])
    monitors.observe(card, traffic.rows[400:500], traffic.scores[400:500])  # over 300: dropped
    monitors.fold_all()
    samples = _samples(registry)
    report = monitors.reports()[0]
    distributions = {d.name: d for d in report.distributions}
    assert SCORE in distributions

    counts: dict[tuple[str, int], float] = {}
    for s in samples["riskwire_drift_bin_observations_total"]:
        assert {k: s.labels[k] for k in labels} == labels
        counts[(s.labels["feature"], int(s.labels["bin"]))] = s.value
    ratios = {
        (s.labels["feature"], int(s.labels["bin"])): s.value
        for s in samples["riskwire_drift_reference_ratio"]
    }
    assert set(counts) == set(ratios)
    for name, drift in distributions.items():
        bins = range(len(drift.reference_proportions))
        assert sum(counts[(name, b)] for b in bins) == 400
        assert [ratios[(name, b)] for b in bins] == pytest.approx(drift.reference_proportions)
    exported_psi = {s.labels["feature"]: s.value for s in samples["riskwire_drift_psi"]}
    assert exported_psi == pytest.approx({n: d.psi for n, d in distributions.items()})
    assert samples["riskwire_drift_window_samples"][0].value == 400
    assert samples["riskwire_drift_dropped_rows_total"][0].value == 100


def test_promql_psi_names_the_series_and_the_floor() -> None:
    query = promql_psi("10m", min_samples=500)
    assert query.count("increase(riskwire_drift_bin_observations_total[10m])") == 4
    assert query.count("riskwire_drift_reference_ratio") == 2
    assert query.count("clamp_min(") == 4 and query.count(repr(PSI_EPSILON)) == 4
    assert ">= 500" in query and "ln(" in query
    assert query.startswith("sum by (model, version, feature) (")
    with pytest.raises(ValueError, match="PromQL duration"):
        promql_psi("5 minutes")
