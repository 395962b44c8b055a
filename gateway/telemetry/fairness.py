"""Fairness monitoring: decline and error rates per group of each monitoring attribute.

Transactions may carry protected attributes in ``monitoring_attributes`` (age band,
gender, region...). They never reach a model: the encoder reads only the feature
spec's sources, and no spec may name this map. They are kept with each logged
prediction in the outcome store (gateway/telemetry/outcomes.py), and this module is
their only reader: it aggregates them in SQL over the store's ``predictions`` and
``outcomes`` tables, per (route, model, version, arm, attribute, group):

- selection rate: the share of the group's MODEL decisions that were DECLINE (the
  adverse decision), labelled or not;
- true- and false-positive rates at decline, over the group's labelled predictions.

and per (route, model, version, arm, attribute), over groups large enough to say
anything (``min_group_size``):

- disparate-impact ratio: the lowest group selection rate over the highest. The
  four-fifths rule (US EEOC, 29 CFR 1607.4(D)) flags a ratio below 0.8;
- demographic-parity difference: highest minus lowest selection rate;
- equalized-odds difference: the larger of the TPR gap and the FPR gap (fairlearn's
  definition), over groups with ``min_group_size`` labels.

The window is the outcome store's: predictions scored in the last ``window_days``.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from gateway.telemetry.outcomes import OutcomeStore, Snapshot


class FairnessSettings(BaseModel):
    """Fairness reports over the outcome store (gateway/telemetry/fairness.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_group_size: int = Field(100, ge=1)
    """Decisions a group needs in the window to enter the selection-rate comparisons,
    and labels to enter the equalized-odds one; smaller groups are reported, not
    compared (their rates are noise)."""
    di_threshold: float = Field(0.8, gt=0.0, le=1.0)
    """Flag a disparate-impact ratio below this (the four-fifths rule: 0.8)."""
    eo_threshold: float = Field(0.1, ge=0.0, le=1.0)
    """Flag an equalized-odds difference above this."""


@dataclass(frozen=True, slots=True)
class GroupCounts:
    """One group's counts in the window, as the store's aggregate gives them."""

    route: str
    model: str
    version: int
    arm: str
    attribute: str
    group: str
    decisions: int
    declines: int
    positives: int
    """Labelled fraud."""
    true_positives: int
    """Labelled fraud, declined."""
    negatives: int
    """Labelled not fraud."""
    false_positives: int
    """Labelled not fraud, declined."""


@dataclass(frozen=True, slots=True)
class GroupRates:
    """One group's rates."""

    group: str
    decisions: int
    declines: int
    labelled: int
    selection_rate: float
    """Declines over decisions."""
    tpr: float | None
    """True-positive rate at decline; None without labelled fraud."""
    fpr: float | None
    """False-positive rate at decline; None without labelled non-fraud."""
    compared: bool
    """Large enough (``min_group_size`` decisions) to enter the selection comparisons."""


@dataclass(frozen=True, slots=True)
class FairnessReport:
    """One monitoring attribute of one (route, model, version, arm)."""

    route: str
    model: str
    version: int
    arm: str
    attribute: str
    groups: tuple[GroupRates, ...]
    disparate_impact_ratio: float | None
    """Lowest over highest selection rate among compared groups; None with fewer than
    two, or when none of them was declined."""
    demographic_parity_difference: float | None
    equalized_odds_difference: float | None
    four_fifths_violated: bool
    """The disparate-impact ratio is below ``di_threshold``."""
    equalized_odds_violated: bool
    """The equalized-odds difference is above ``eo_threshold``."""


# The only place monitoring attributes are read: one row per group, counted in SQL.
_GROUP_COUNTS = """
SELECT p.route, p.model, p.version, p.arm, a.key, CAST(a.value AS TEXT),
       COUNT(*),
       COALESCE(SUM(p.decision = 'DECLINE'), 0),
       COALESCE(SUM(o.label = 1), 0),
       COALESCE(SUM(o.label = 1 AND p.decision = 'DECLINE'), 0),
       COALESCE(SUM(o.label = 0), 0),
       COALESCE(SUM(o.label = 0 AND p.decision = 'DECLINE'), 0)
FROM predictions AS p
JOIN json_each(p.attributes) AS a
LEFT JOIN outcomes AS o ON o.transaction_id = p.transaction_id
WHERE p.scored_at >= ? AND p.source = 'MODEL' AND p.attributes != '{}'
GROUP BY p.route, p.model, p.version, p.arm, a.key, a.value
ORDER BY p.route, p.model, p.version, p.arm, a.key, a.value
"""


def group_counts(connection: sqlite3.Connection, since: float) -> list[GroupCounts]:
    """Every group's counts over predictions scored at or after ``since`` (epoch s)."""
    return [
        GroupCounts(str(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]), *r[6:])
        for r in connection.execute(_GROUP_COUNTS, (since,))
    ]


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _spread(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) - min(known) if len(known) >= 2 else None


def fairness_report(counts: Sequence[GroupCounts], settings: FairnessSettings) -> FairnessReport:
    """The report of one attribute from its groups' counts (pure)."""
    first = counts[0]
    groups = tuple(
        GroupRates(
            group=c.group,
            decisions=c.decisions,
            declines=c.declines,
            labelled=c.positives + c.negatives,
            selection_rate=c.declines / c.decisions,
            tpr=_rate(c.true_positives, c.positives),
            fpr=_rate(c.false_positives, c.negatives),
            compared=c.decisions >= settings.min_group_size,
        )
        for c in counts
    )
    rates = [g.selection_rate for g in groups if g.compared]
    ratio = None
    parity = None
    if len(rates) >= 2:
        parity = max(rates) - min(rates)
        ratio = min(rates) / max(rates) if max(rates) > 0 else None
    labelled = [g for g in groups if g.labelled >= settings.min_group_size]
    gaps = [_spread([g.tpr for g in labelled]), _spread([g.fpr for g in labelled])]
    known = [gap for gap in gaps if gap is not None]
    odds = max(known) if known else None
    return FairnessReport(
        route=first.route,
        model=first.model,
        version=first.version,
        arm=first.arm,
        attribute=first.attribute,
        groups=groups,
        disparate_impact_ratio=ratio,
        demographic_parity_difference=parity,
        equalized_odds_difference=odds,
        four_fifths_violated=ratio is not None and ratio < settings.di_threshold,
        equalized_odds_violated=odds is not None and odds > settings.eo_threshold,
    )


def fairness_reports(
    counts: Iterable[GroupCounts], settings: FairnessSettings
) -> list[FairnessReport]:
    """One report per (route, model, version, arm, attribute), sorted."""
    ordered = sorted(
        counts, key=lambda c: (c.route, c.model, c.version, c.arm, c.attribute, c.group)
    )
    return [
        fairness_report(list(group), settings)
        for _, group in itertools.groupby(
            ordered, key=lambda c: (c.route, c.model, c.version, c.arm, c.attribute)
        )
    ]


class FairnessMonitor:
    """Fairness reports over an outcome store's predictions and labels."""

    def __init__(self, store: OutcomeStore, settings: FairnessSettings) -> None:
        self.settings = settings
        self._store = store
        self._cache: Snapshot[list[FairnessReport]] = store.snapshot(
            lambda c: self._compute(c, store.window_start()), []
        )

    def reports(self, now: float | None = None, route: str | None = None) -> list[FairnessReport]:
        """Fresh reports over the window ending ``now``; blocks the calling thread."""
        since = self._store.window_start(now)
        reports = self._store.read(lambda c: self._compute(c, since))
        if now is None:
            self._cache.set(reports)
        return [r for r in reports if route in (None, r.route)]

    async def reports_async(self, route: str | None = None) -> list[FairnessReport]:
        """:meth:`reports` for the event loop: the SQL runs on the store's report thread."""
        reports = await self._store.read_async(
            lambda c: self._compute(c, self._store.window_start())
        )
        self._cache.set(reports)
        return [r for r in reports if route in (None, r.route)]

    def cached(self) -> list[FairnessReport]:
        """The latest reports without waiting; refreshed in the background when stale."""
        return self._cache.get()

    def register_metrics(self, meter: Meter) -> None:
        """Observable gauges over the cached reports (OpenTelemetry API only)."""
        groups: tuple[tuple[str, str, Callable[[GroupRates], float | None]], ...] = (
            (
                "riskwire.fairness.selection.rate",
                "Share of a group's model decisions that were DECLINE, in the rolling window",
                lambda g: g.selection_rate,
            ),
            (
                "riskwire.fairness.true.positive.rate",
                "Share of a group's labelled fraud that was declined",
                lambda g: g.tpr,
            ),
            (
                "riskwire.fairness.false.positive.rate",
                "Share of a group's labelled non-fraud that was declined",
                lambda g: g.fpr,
            ),
        )
        for name, description, value in groups:
            meter.create_observable_gauge(
                name, callbacks=[self._group_gauge(value)], description=description
            )
        summaries: tuple[tuple[str, str, Callable[[FairnessReport], float | None]], ...] = (
            (
                "riskwire.fairness.disparate.impact.ratio",
                "Lowest over highest group decline rate of a monitoring attribute "
                "(four-fifths rule: flag below 0.8)",
                lambda r: r.disparate_impact_ratio,
            ),
            (
                "riskwire.fairness.demographic.parity.difference",
                "Highest minus lowest group decline rate of a monitoring attribute",
                lambda r: r.demographic_parity_difference,
            ),
            (
                "riskwire.fairness.equalized.odds.difference",
                "Larger of the TPR gap and the FPR gap between a monitoring attribute's groups",
                lambda r: r.equalized_odds_difference,
            ),
        )
        for name, description, figure in summaries:
            meter.create_observable_gauge(
                name, callbacks=[self._report_gauge(figure)], description=description
            )

    def _compute(self, connection: sqlite3.Connection, since: float) -> list[FairnessReport]:
        return fairness_reports(group_counts(connection, since), self.settings)

    def _group_gauge(
        self, value: Callable[[GroupRates], float | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            observations = []
            for report in self.cached():
                for group in report.groups:
                    figure = value(group)
                    if figure is not None:
                        attributes = {**_attributes(report), "group": group.group}
                        observations.append(Observation(figure, attributes))
            return observations

        return observe

    def _report_gauge(
        self, value: Callable[[FairnessReport], float | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(figure, _attributes(report))
                for report in self.cached()
                if (figure := value(report)) is not None
            ]

        return observe


def _attributes(report: FairnessReport) -> dict[str, str]:
    return {
        "route": report.route,
        "model": report.model,
        "version": str(report.version),
        "arm": report.arm,
        "attribute": report.attribute,
    }
