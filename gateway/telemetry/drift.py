"""Drift monitoring: live feature and score distributions against the model card's.

Why frozen bins: the card's reference histograms (``reference.features`` and
``reference.score``) carry bin edges fixed at training time, 10 quantile bins with an
underflow and an overflow bin, and the share of training rows in each. Live rows are
binned on exactly those edges, so the Population Stability Index compares like with
like and a value beyond the training range shows up in an outer bin instead of being
absorbed by edges re-fitted to the live data.

Why ``observe`` only appends: it runs on the serving path after every model call, so it
keeps references to the batch's feature rows and scores in a bounded pending list (a
full list drops the batch and counts it) and nothing else. ``fold``, run every
``fold_interval_ms`` off the serving path, bins everything pending in one vectorized
pass per column (``np.searchsorted``) into cumulative per-bin counts, exported as
counters so that Prometheus can compute PSI across replicas (``promql_psi``), and into
a sliding window of time-stamped slice counts, so the window slides by time and by count
without keeping any row.

Why a minimum sample size: PSI of a finite sample is biased upwards. With N live rows
and k populated bins of unchanged traffic, N * PSI is close to a chi-square with k - 1
degrees of freedom, so PSI averages about (k - 1) / N: with 10 bins and 100 rows the
mean is 0.09 and "PSI > 0.1" fires on about 40% of unchanged windows for one feature,
and on nearly every window for a model of 47 features. Below ``min_samples`` the
monitor reports "insufficient" and exports no PSI (see ``DriftSettings.min_samples``).
"""

from __future__ import annotations

import asyncio
import enum
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.features.spec import Cyclical, feature_output_names
from gateway.models.card import Histogram, ModelCard

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
CountArray = npt.NDArray[np.int64]

PSI_EPSILON = 1e-4
"""Floor for both proportions in ``psi`` (and in ``promql_psi``): a bin empty on one
side would otherwise make ln(q / p) infinite. With 1e-4 an emptied reference decile
(p = 0.1, no live rows) adds 0.1 * ln(0.1 / 1e-4) = 0.69, and 1% of live rows beyond
the training range (an outer bin whose reference share is 0) adds about
0.01 * ln(0.01 / 1e-4) = 0.046: both are real shifts and both stay finite."""

SCORE = "score"
"""The ``feature`` name the score's histogram goes by in reports and metrics."""

WINDOW_SLICES = 64
"""The window is kept as slices of at most window_count / 64 rows and at most
window_seconds / 64 seconds each: the window's edges are that fine, and it holds at
most about 130 count vectors (one int64 per bin, ~400 bins) per model version, whatever
the traffic: 64 full slices by count, 65 by time."""


class DriftLevel(enum.StrEnum):
    """How far one distribution (or, for a model, its worst one) has moved."""

    INSUFFICIENT = "insufficient"
    """Fewer than ``min_samples`` rows in the window: no PSI yet."""
    OK = "ok"
    WATCH = "watch"
    ACT = "act"


_LEVEL_ORDER = {
    DriftLevel.INSUFFICIENT: 0,
    DriftLevel.OK: 1,
    DriftLevel.WATCH: 2,
    DriftLevel.ACT: 3,
}


def worst_level(levels: Iterable[DriftLevel]) -> DriftLevel:
    """The most severe level (act > watch > ok > insufficient); insufficient if none."""
    return max(levels, key=_LEVEL_ORDER.__getitem__, default=DriftLevel.INSUFFICIENT)


class DriftSettings(BaseModel):
    """Drift monitoring of every loaded model version against its card's reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    """Monitor drift. False: the server builds no monitors, exports no drift metrics,
    and Admin GetDrift answers FAILED_PRECONDITION."""
    window_count: int = Field(10_000, ge=1)
    """The window holds at most the last this many observations (rows) per model
    version; it keeps between window_count * 63/64 and window_count of them once
    traffic fills it (it drops whole slices, see ``WINDOW_SLICES``)."""
    window_seconds: float = Field(3600.0, gt=0.0, allow_inf_nan=False)
    """...and only those of the last this many seconds (to a 1/64 of it)."""
    min_samples: int = Field(500, ge=1)
    """Rows the window needs before PSI is computed; fewer report "insufficient".

    Unchanged traffic gives N * PSI ~ chi-square with k - 1 degrees of freedom (PSI is
    close to Pearson's chi-square / N for small shifts). The cards have at most 10
    populated bins (df 9): one feature exceeds watch_psi = 0.1 in 1% of windows at
    N = 21.7 / 0.1 = 217, and a whole model of about 50 distributions does so in 1% of
    windows (Bonferroni, 0.02% each, chi-square 31.9) at N = 320. 500 leaves a margin for
    the heavier tail of small counts: drawn from the demo cards' own reference
    proportions, 500 rows put no distribution of either model over 0.1 in 2,000 windows
    (300 rows: 1 to 1.5% of windows). Lower watch_psi needs proportionally more:
    about 32 / watch_psi."""
    watch_psi: float = Field(0.1, gt=0.0, allow_inf_nan=False)
    """PSI from which a distribution is "watch": a moderate shift, look at it."""
    act_psi: float = Field(0.25, gt=0.0, allow_inf_nan=False)
    """PSI from which a distribution is "act": a major shift, retrain or roll back."""
    fold_interval_ms: int = Field(1000, ge=1)
    """How often pending observations are binned into the counts and the window (off
    the serving path); reports and metrics lag traffic by at most this."""
    max_pending_rows: int = Field(50_000, ge=1)
    """Rows waiting for the next fold, per model version, before further batches are
    dropped (and counted in ``dropped_rows``): about 9.4 MB of 47-wide float32 rows, five
    seconds of 10,000 rows/s if folding stalls."""
    skip_cyclical: bool = True
    """Leave cyclical outputs (hour of day, day of week sin/cos) unmonitored: a window
    shorter than their period never holds the training mix of hours or days, so they
    would alert on unchanged traffic."""

    @model_validator(mode="after")
    def _consistent(self) -> DriftSettings:
        if not self.watch_psi < self.act_psi:
            raise ValueError(f"watch_psi ({self.watch_psi}) must be below act_psi ({self.act_psi})")
        if self.min_samples > self.window_count:
            raise ValueError(
                f"min_samples ({self.min_samples}) must not exceed window_count "
                f"({self.window_count}): the window could never hold enough rows"
            )
        return self

    def level(self, psi_value: float | None) -> DriftLevel:
        """The level of one PSI (None: insufficient samples)."""
        if psi_value is None:
            return DriftLevel.INSUFFICIENT
        if psi_value >= self.act_psi:
            return DriftLevel.ACT
        if psi_value >= self.watch_psi:
            return DriftLevel.WATCH
        return DriftLevel.OK


# --------------------------------------------------------------------------- PSI


def bin_index(edges: npt.ArrayLike, values: npt.ArrayLike) -> IndexArray:
    """The card's bin of each value: 0 is underflow (x < e0), i is [e_{i-1}, e_i), and
    len(edges) is overflow (x >= e_last); ``np.searchsorted(edges, x, side="right")``.

    Values are compared in float64, as training built the reference (float32 rows cast
    to float64): the top edge is the float64 just above the training maximum, which a
    float32 comparison would round down onto the maximum and push it into overflow.
    NaN goes to the overflow bin (searchsorted orders NaN last), as it did in training.
    The encoder never emits NaN (a missing source becomes the feature's default, an
    out-of-range one +-inf, which lands in an outer bin); a NaN score is a model fault
    and shows as overflow.
    """
    return np.searchsorted(
        np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64), side="right"
    )


def psi(
    reference_proportions: npt.ArrayLike, live_counts: npt.ArrayLike, epsilon: float = PSI_EPSILON
) -> float:
    """Population Stability Index: sum of (q - p) * ln(q / p) over bins.

    p is the reference share of a bin and q = count / total its live share; both are
    floored at ``epsilon`` first (``max(x, epsilon)``, no renormalization, the same as
    ``clamp_min`` in ``promql_psi``), so a bin empty on either side adds a large but
    finite term instead of infinity (see ``PSI_EPSILON``).

    Raises:
        ValueError: the shapes differ, a count is negative, or there are no counts.
    """
    p = np.asarray(reference_proportions, dtype=np.float64)
    counts = np.asarray(live_counts, dtype=np.float64)
    if p.shape != counts.shape or p.ndim != 1:
        raise ValueError(
            f"reference has {p.shape} bins, live counts {counts.shape}: they must match"
        )
    if (counts < 0).any():
        raise ValueError("live counts must be >= 0")
    total = counts.sum()
    if total <= 0:
        raise ValueError("no live observations: PSI is undefined")
    p = np.maximum(p, epsilon)
    q = np.maximum(counts / total, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One distribution (a model input column, or the score) over the window."""

    name: str
    psi: float | None
    """None while the window holds fewer than ``min_samples`` rows."""
    samples: int
    level: DriftLevel
    edges: tuple[float, ...]
    reference_proportions: tuple[float, ...]
    live_proportions: tuple[float, ...]
    """The window's share per bin (all 0.0 when the window is empty)."""


@dataclass(frozen=True, slots=True)
class DriftReport:
    """One model version's drift over its window."""

    model: str
    version: int
    samples: int
    """Rows in the window (every distribution sees every row)."""
    level: DriftLevel
    """The worst level of ``features`` and ``score``."""
    features: tuple[FeatureDrift, ...]
    """Monitored input columns, in the card's order."""
    score: FeatureDrift
    observed_rows: int
    """Rows folded since the monitor started (the counters' total)."""
    dropped_rows: int
    """Rows dropped because the pending list was full."""
    unmonitored: tuple[str, ...]
    """Input columns left out: no reference histogram, or cyclical (``skip_cyclical``)."""

    @property
    def distributions(self) -> tuple[FeatureDrift, ...]:
        """The features, then the score."""
        return (*self.features, self.score)


@dataclass(frozen=True, slots=True)
class DriftOverview:
    """Reports of the monitored versions, with the thresholds they were judged by."""

    settings: DriftSettings
    reports: tuple[DriftReport, ...]


# --------------------------------------------------------------------------- monitor


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    index: int
    """Column of the feature rows; -1 for the score."""
    edges: FloatArray
    reference: tuple[float, ...]
    offset: int
    """Where its bins start in the flat count vectors."""

    @property
    def bins(self) -> int:
        return len(self.reference)


@dataclass(slots=True)
class _Slice:
    """Counts of the rows folded between ``first_s`` and ``newest_s``."""

    first_s: float
    newest_s: float
    rows: int
    counts: CountArray


def _histogram_column(name: str, index: int, hist: Histogram, offset: int) -> _Column:
    return _Column(
        name=name,
        index=index,
        edges=np.asarray(hist.edges, dtype=np.float64),
        reference=tuple(hist.proportions),
        offset=offset,
    )


class DriftMonitor:
    """Live distributions of one model version against its card's reference.

    ``observe`` is for the serving path (constant time, no numpy work); ``fold`` and
    ``report`` may run on another thread: a lock guards the pending list, another the
    counts.
    """

    def __init__(self, card: ModelCard, settings: DriftSettings) -> None:
        self.card = card
        self.settings = settings
        skipped: set[str] = set()
        if settings.skip_cyclical:
            skipped = {
                out
                for f in card.spec.features
                if isinstance(f, Cyclical)
                for out in feature_output_names(f)
            }
        columns: list[_Column] = []
        unmonitored: list[str] = []
        offset = 0
        for index, name in enumerate(card.feature_names):
            hist = card.reference.features.get(name)
            if hist is None or name in skipped:
                unmonitored.append(name)
                continue
            columns.append(_histogram_column(name, index, hist, offset))
            offset += columns[-1].bins
        self._features = tuple(columns)
        self._score = _histogram_column(SCORE, -1, card.reference.score, offset)
        self._columns = (*self._features, self._score)
        self._size = offset + self._score.bins
        self._width = card.inputs.width
        self.unmonitored = tuple(unmonitored)
        """Input columns not monitored (no reference histogram, or skipped cyclical)."""

        self._pending_lock = threading.Lock()
        self._pending: list[tuple[npt.NDArray[np.float32], FloatArray]] = []
        self._pending_rows = 0
        self._dropped_rows = 0

        self._state_lock = threading.Lock()
        self._total: CountArray = np.zeros(self._size, dtype=np.int64)
        self._observed_rows = 0
        self._window: CountArray = np.zeros(self._size, dtype=np.int64)
        self._window_rows = 0
        self._slices: deque[_Slice] = deque()
        self._slice_rows = max(1, math.ceil(settings.window_count / WINDOW_SLICES))
        self._slice_s = settings.window_seconds / WINDOW_SLICES

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> int:
        return self.card.version

    @property
    def monitored(self) -> tuple[str, ...]:
        """Monitored input columns, in the card's order (the score is always monitored)."""
        return tuple(c.name for c in self._features)

    @property
    def pending_rows(self) -> int:
        """Rows observed and not folded yet."""
        return self._pending_rows

    @property
    def dropped_rows(self) -> int:
        """Rows dropped because the pending list was full (since start)."""
        return self._dropped_rows

    # --- serving path --------------------------------------------------------------

    def observe(self, rows: npt.NDArray[np.float32], scores: FloatArray) -> None:
        """Queue one batch for the next fold: the arrays are kept, not copied, so the
        caller must not write to them afterwards.

        Args:
            rows: float32 [n, width], the encoded rows the model ran on.
            scores: float64 [n], its scores for them.

        Raises:
            ValueError: the shapes do not fit the card (a caller bug, caught here, in
                constant time, rather than in a fold that would lose other batches).
        """
        n = scores.shape[0]
        if rows.ndim != 2 or rows.shape[0] != n or rows.shape[1] != self._width:
            raise ValueError(
                f"{self.name} v{self.version}: rows {rows.shape} and scores {scores.shape} "
                f"must be [n, {self._width}] and [n]"
            )
        if n == 0:
            return
        with self._pending_lock:
            if self._pending_rows + n > self.settings.max_pending_rows:
                self._dropped_rows += n
                return
            self._pending.append((rows, scores))
            self._pending_rows += n

    # --- background ----------------------------------------------------------------

    def fold(self, now: float | None = None) -> int:
        """Bin every pending row into the counters and the window, then slide the window
        to ``now`` (``time.monotonic()`` seconds by default; the slices folded now are
        stamped with it). Returns the rows folded."""
        now = time.monotonic() if now is None else now
        with self._pending_lock:
            pending, self._pending = self._pending, []
            self._pending_rows = 0
        flat = self._bin(pending) if pending else None
        with self._state_lock:
            if flat is not None:
                self._total += np.bincount(flat.ravel(), minlength=self._size)
                self._observed_rows += len(flat)
                # Rows older than the last window_count can never be in the window.
                self._add_to_window(flat[-self.settings.window_count :], now)
            self._expire(now)
        return 0 if flat is None else len(flat)

    def _bin(self, pending: Sequence[tuple[npt.NDArray[np.float32], FloatArray]]) -> IndexArray:
        """Flat bin ids [n, columns]: column j's bin plus its offset, so that one
        bincount over all of them counts every column."""
        if len(pending) == 1:
            rows, scores = pending[0]
        else:
            rows = np.concatenate([r for r, _ in pending])
            scores = np.concatenate([s for _, s in pending])
        flat = np.empty((len(scores), len(self._columns)), dtype=np.intp)
        for j, column in enumerate(self._features):
            flat[:, j] = bin_index(column.edges, rows[:, column.index])
            flat[:, j] += column.offset
        flat[:, -1] = bin_index(self._score.edges, scores) + self._score.offset
        return flat

    def _add_to_window(self, flat: IndexArray, now: float) -> None:
        start = 0
        while start < len(flat):
            last = self._slices[-1] if self._slices else None
            if last is None or last.rows >= self._slice_rows or now - last.first_s >= self._slice_s:
                last = _Slice(now, now, 0, np.zeros(self._size, dtype=np.int64))
                self._slices.append(last)
            take = min(len(flat) - start, self._slice_rows - last.rows)
            counts = np.bincount(flat[start : start + take].ravel(), minlength=self._size)
            last.counts += counts
            last.rows += take
            last.newest_s = now
            self._window += counts
            self._window_rows += take
            start += take

    def _expire(self, now: float) -> None:
        """Drop the slices wholly older than window_seconds, then the oldest ones while
        the window holds more than window_count rows."""
        horizon = now - self.settings.window_seconds
        while self._slices and (
            self._slices[0].newest_s <= horizon or self._window_rows > self.settings.window_count
        ):
            oldest = self._slices.popleft()
            self._window -= oldest.counts
            self._window_rows -= oldest.rows

    # --- reading -------------------------------------------------------------------

    def report(self, now: float | None = None) -> DriftReport:
        """PSI and levels over the window as of ``now`` (``time.monotonic()`` seconds by
        default). Rows still pending are not in it: ``fold`` first for the latest."""
        now = time.monotonic() if now is None else now
        with self._state_lock:
            self._expire(now)
            window = self._window.copy()
            samples = self._window_rows
            observed = self._observed_rows
        enough = samples >= self.settings.min_samples
        drifts = []
        for column in self._columns:
            counts = window[column.offset : column.offset + column.bins]
            value = psi(column.reference, counts) if enough else None
            live = counts / samples if samples else np.zeros(column.bins)
            drifts.append(
                FeatureDrift(
                    name=column.name,
                    psi=value,
                    samples=samples,
                    level=self.settings.level(value),
                    edges=tuple(column.edges.tolist()),
                    reference_proportions=column.reference,
                    live_proportions=tuple(live.tolist()),
                )
            )
        return DriftReport(
            model=self.name,
            version=self.version,
            samples=samples,
            level=worst_level(d.level for d in drifts),
            features=tuple(drifts[:-1]),
            score=drifts[-1],
            observed_rows=observed,
            dropped_rows=self._dropped_rows,
            unmonitored=self.unmonitored,
        )

    def bin_totals(self) -> list[tuple[str, CountArray]]:
        """Per distribution (features, then ``score``), its cumulative bin counts."""
        with self._state_lock:
            total = self._total.copy()
        return [(c.name, total[c.offset : c.offset + c.bins]) for c in self._columns]

    def references(self) -> list[tuple[str, tuple[float, ...]]]:
        """Per distribution, its reference proportions."""
        return [(c.name, c.reference) for c in self._columns]


# --------------------------------------------------------------------------- all models


class DriftMonitors:
    """The monitors of every loaded model version, keyed by (model, version)."""

    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings
        self._monitors: dict[tuple[str, int], DriftMonitor] = {}
        self._lock = threading.Lock()

    def get_or_create(self, card: ModelCard) -> DriftMonitor:
        """The version's monitor, made on first use (a dict lookup after that)."""
        key = (card.name, card.version)
        monitor = self._monitors.get(key)
        if monitor is None:
            with self._lock:
                monitor = self._monitors.get(key)
                if monitor is None:
                    monitor = DriftMonitor(card, self.settings)
                    self._monitors = {**self._monitors, key: monitor}
        return monitor

    def get(self, name: str, version: int) -> DriftMonitor | None:
        return self._monitors.get((name, version))

    def observe(self, card: ModelCard, rows: npt.NDArray[np.float32], scores: FloatArray) -> None:
        """``get_or_create(card).observe(rows, scores)``: for the serving path."""
        self.get_or_create(card).observe(rows, scores)

    def remove(self, name: str, version: int) -> bool:
        """Forget a version (unloaded); its series leave /metrics. False if unknown."""
        with self._lock:
            if (name, version) not in self._monitors:
                return False
            self._monitors = {k: m for k, m in self._monitors.items() if k != (name, version)}
            return True

    def monitors(self) -> list[DriftMonitor]:
        """Every monitor, by model name and version."""
        return [self._monitors[k] for k in sorted(self._monitors)]

    def fold_all(self, now: float | None = None) -> int:
        """Fold every monitor; returns the rows folded."""
        return sum(m.fold(now) for m in self.monitors())

    async def fold_forever(self) -> None:
        """Fold every ``fold_interval_ms`` in a worker thread until cancelled (the
        server's background task)."""
        interval_s = self.settings.fold_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.to_thread(self.fold_all)

    def reports(
        self, model: str | None = None, version: int | None = None, now: float | None = None
    ) -> list[DriftReport]:
        """Reports of every monitored version, or of ``model`` (and ``version``)."""
        return [
            m.report(now)
            for m in self.monitors()
            if (model is None or m.name == model) and (version is None or m.version == version)
        ]

    def overview(
        self, model: str | None = None, version: int | None = None, now: float | None = None
    ) -> DriftOverview:
        """``reports`` with the settings that judged them."""
        return DriftOverview(self.settings, tuple(self.reports(model, version, now)))

    # --- metrics -------------------------------------------------------------------

    def register_metrics(self, meter: Meter) -> None:
        """Observable instruments on ``meter``, read at collection time.

        Prometheus names (the OpenTelemetry exporter's translation):
        ``riskwire_drift_bin_observations_total`` and ``riskwire_drift_reference_ratio``
        (model, version, feature, bin: "0" underflow .. "k" overflow), from which
        ``promql_psi`` computes PSI fleet-wide; ``riskwire_drift_psi`` (model, version,
        feature; only with enough samples) and ``riskwire_drift_window_samples`` (model,
        version): this process's window; ``riskwire_drift_dropped_rows_total``.
        """
        meter.create_observable_counter(
            "riskwire.drift.bin.observations",
            [self._observe_bins],
            unit="{observation}",
            description="Rows whose feature (or score) fell in each of the card's frozen "
            "bins, since start",
        )
        meter.create_observable_gauge(
            "riskwire.drift.reference.ratio",
            [self._observe_references],
            unit="1",
            description="Training share of each bin, from the model card",
        )
        meter.create_observable_gauge(
            "riskwire.drift.psi",
            [self._observe_psi],
            unit="1",
            description="PSI of the window against the card, per feature and the score "
            "(absent while the window holds fewer than min_samples rows)",
        )
        meter.create_observable_gauge(
            "riskwire.drift.window.samples",
            [self._observe_samples],
            unit="{observation}",
            description="Rows in this process's drift window",
        )
        meter.create_observable_counter(
            "riskwire.drift.dropped.rows",
            [self._observe_dropped],
            unit="{observation}",
            description="Rows not monitored because the pending list was full",
        )

    def _observe_bins(self, _: CallbackOptions) -> Iterable[Observation]:
        for m in self.monitors():
            for feature, counts in m.bin_totals():
                for i, n in enumerate(counts.tolist()):
                    yield Observation(n, _bin_attributes(m, feature, i))

    def _observe_references(self, _: CallbackOptions) -> Iterable[Observation]:
        for m in self.monitors():
            for feature, proportions in m.references():
                for i, p in enumerate(proportions):
                    yield Observation(p, _bin_attributes(m, feature, i))

    def _observe_psi(self, _: CallbackOptions) -> Iterable[Observation]:
        for m in self.monitors():
            for d in m.report().distributions:
                if d.psi is not None:
                    yield Observation(d.psi, {**_model_attributes(m), "feature": d.name})

    def _observe_samples(self, _: CallbackOptions) -> Iterable[Observation]:
        for m in self.monitors():
            yield Observation(m.report().samples, _model_attributes(m))

    def _observe_dropped(self, _: CallbackOptions) -> Iterable[Observation]:
        for m in self.monitors():
            yield Observation(m.dropped_rows, _model_attributes(m))


def _model_attributes(monitor: DriftMonitor) -> dict[str, Any]:
    return {"model": monitor.name, "version": str(monitor.version)}


def _bin_attributes(monitor: DriftMonitor, feature: str, index: int) -> dict[str, Any]:
    return {**_model_attributes(monitor), "feature": feature, "bin": str(index)}


# --------------------------------------------------------------------------- PromQL

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def promql_psi(window: str = "5m", min_samples: int = 1, epsilon: float = PSI_EPSILON) -> str:
    """A PromQL expression for PSI per (model, version, feature), fleet-wide, over
    ``window``, from ``riskwire_drift_bin_observations_total`` and
    ``riskwire_drift_reference_ratio``.

    Live share of a bin = increase of its counter over the window, summed over
    replicas, divided by the sum over the distribution's bins; distributions with fewer
    than ``min_samples`` rows in the window give no series (the filter ``>=`` drops
    them, idle ones included, rather than dividing by zero). The reference share is
    ``max`` over replicas (they all export the card's value). Both shares are floored
    at ``epsilon`` with ``clamp_min``, as ``psi`` floors them, so the two agree.

    Raises:
        ValueError: ``window`` is not a PromQL duration, or min_samples < 1.
    """
    if not _DURATION.match(window):
        raise ValueError(f"window must be a PromQL duration such as 5m or 1h30m, got {window!r}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    per_bin = "model, version, feature, bin"
    per_feature = "model, version, feature"
    increase = f"increase(riskwire_drift_bin_observations_total[{window}])"
    live = (
        f"sum by ({per_bin}) ({increase})\n"
        f"    / on ({per_feature}) group_left()\n"
        f"    (sum by ({per_feature}) ({increase}) >= {min_samples})"
    )
    reference = f"max by ({per_bin}) (riskwire_drift_reference_ratio)"
    q = f"clamp_min(\n    {live},\n    {epsilon!r}\n  )"
    p = f"clamp_min({reference}, {epsilon!r})"
    return f"sum by ({per_feature}) (\n  ({q} - {p})\n  * ln({q} / {p})\n)"
