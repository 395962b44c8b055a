"""Fixed-bucket histograms for per-request telemetry (latency, score).

Buckets follow Prometheus' `le` rule: bucket i counts values <= edges[i] and one more
bucket (+Inf) the values above the last edge, +inf included; -inf lands in bucket 0.
NaN lands in no bucket: it is counted in `nan_count` and left out of `count` and `sum`.
`sum` is the float64 sum of the counted values, added in record order (so it is inf or
NaN once +-inf were recorded, as in Prometheus).

`Histogram` here is the reference; gateway._native._glue.Histogram is its Cython twin
(a binary search over a C array, a few tens of ns per record() call), equal to it in
counts and bit for bit in `sum` (tests/unit/test_histogram.py). `make_histogram` picks
one like `dispatch.make_encoder` picks the encoder. Neither is a metric instrument: an
exporter reads `counts()` and turns them cumulative.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from gateway.features.dispatch import EncoderMode, Implementation, resolve_implementation

# Latency bucket upper bounds in seconds, 50 us to 1 s, about three per decade on the
# 1-2.5-5 series. Each is the float64 nearest the decimal written here.
LATENCY_EDGES_SECONDS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
# Score bucket upper bounds: the float64s nearest 0.05, 0.10, ..., 1.00 (not i * 0.05,
# which gives 0.15000000000000002 and would move a score of exactly 0.15 up a bucket).
SCORE_EDGES = tuple(round(i * 0.05, 2) for i in range(1, 21))


def latency_edges_seconds() -> tuple[float, ...]:
    """Latency bucket edges in seconds: 50us 100us 250us 500us 1ms 2.5ms ... 500ms 1s."""
    return LATENCY_EDGES_SECONDS


def score_edges() -> tuple[float, ...]:
    """Score bucket edges: 0.05, 0.10, ..., 1.00 (20 edges; a score is in [0, 1])."""
    return SCORE_EDGES


def checked_edges(edges: Iterable[float]) -> tuple[float, ...]:
    """Returns `edges` as floats.

    Raises:
        ValueError: An edge is not finite, or not greater than the one before.
    """
    values = tuple(float(e) for e in edges)
    for i, edge in enumerate(values):
        if not math.isfinite(edge):
            raise ValueError(f"histogram edges must be finite, got {edge!r} at [{i}]")
        if i and not edge > values[i - 1]:
            raise ValueError(
                f"histogram edges must be strictly increasing, got {values[i - 1]!r} then "
                f"{edge!r} at [{i}]"
            )
    return values


class FixedBucketHistogram(Protocol):
    """What both histograms offer (the reference below and the Cython twin)."""

    @property
    def implementation(self) -> Implementation:
        """ "native" or "python": which code runs."""

    @property
    def edges(self) -> tuple[float, ...]:
        """The finite upper bounds, increasing (the +Inf bucket is implied)."""

    @property
    def count(self) -> int:
        """Values recorded, NaN excluded."""

    @property
    def sum(self) -> float:
        """The float64 sum of the values counted, accumulated in record order."""

    @property
    def nan_count(self) -> int:
        """NaN values recorded (in no bucket)."""

    def record(self, value: float) -> None:
        """Counts one value."""

    def record_many(self, values: npt.ArrayLike) -> None:
        """Counts each value of a 1-D float64 array, in order (== record() for each)."""

    def counts(self) -> npt.NDArray[np.uint64]:
        """Returns the per-bucket counts, uint64 [len(edges) + 1], not cumulative."""

    def reset(self) -> None:
        """Zeroes every count and the sum."""


class Histogram:
    """The reference fixed-bucket histogram (see the module docstring)."""

    implementation: Implementation = "python"

    def __init__(self, edges: Iterable[float]) -> None:
        self._edges = checked_edges(edges)
        self._counts = [0] * (len(self._edges) + 1)
        self._count = 0
        self._nan_count = 0
        self._sum = 0.0

    @property
    def edges(self) -> tuple[float, ...]:
        """The finite upper bounds, increasing (the +Inf bucket is implied)."""
        return self._edges

    @property
    def count(self) -> int:
        """Values recorded, NaN excluded."""
        return self._count

    @property
    def sum(self) -> float:
        """The float64 sum of the values counted, accumulated in record order."""
        return self._sum

    @property
    def nan_count(self) -> int:
        """NaN values recorded (in no bucket)."""
        return self._nan_count

    def record(self, value: float) -> None:
        """Counts one value."""
        value = float(value)
        if math.isnan(value):
            self._nan_count += 1
            return
        # The first edge >= value: le buckets (-0.0 == 0.0); past the last one, +Inf.
        self._counts[bisect.bisect_left(self._edges, value)] += 1
        self._count += 1
        self._sum += value

    def record_many(self, values: npt.ArrayLike) -> None:
        """Counts each value of a 1-D float64 array, in order (== record() for each)."""
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"record_many takes a 1-D array, got {array.ndim} dimensions")
        kept = array[~np.isnan(array)]
        self._nan_count += array.size - kept.size
        if kept.size == 0:
            return
        buckets = np.searchsorted(np.asarray(self._edges, dtype=np.float64), kept, side="left")
        for i, n in enumerate(np.bincount(buckets, minlength=len(self._counts)).tolist()):
            self._counts[i] += n
        self._count += int(kept.size)
        # add.accumulate adds one value at a time, in order (np.sum adds pairwise); inf
        # and NaN sums are results here, not errors.
        with np.errstate(all="ignore"):
            self._sum = float(np.add.accumulate(np.concatenate(([self._sum], kept)))[-1])

    def counts(self) -> npt.NDArray[np.uint64]:
        """Returns the per-bucket counts, uint64 [len(edges) + 1], not cumulative."""
        return np.array(self._counts, dtype=np.uint64)

    def reset(self) -> None:
        """Zeroes every count and the sum."""
        self._counts = [0] * (len(self._edges) + 1)
        self._count = 0
        self._nan_count = 0
        self._sum = 0.0

    def __repr__(self) -> str:
        return f"Histogram(edges={self._edges!r}, count={self._count})"


def make_histogram(edges: Iterable[float], mode: EncoderMode = "auto") -> FixedBucketHistogram:
    """Returns a histogram over `edges` from the implementation `mode` resolves to.

    Raises:
        ValueError: `edges` are not finite and strictly increasing.
        NativeExtensionMissing: `mode` is "native" and the extension cannot be loaded.
    """
    if resolve_implementation(mode) == "native":
        from gateway._native import _glue  # loadable: resolve_implementation checked

        return _glue.Histogram(edges)
    return Histogram(edges)


def prometheus_buckets(histogram: FixedBucketHistogram) -> tuple[list[tuple[str, float]], float]:
    """A histogram as prometheus_client's HistogramMetricFamily takes it: cumulative
    (le, count) pairs ending with +Inf, and the sum."""
    running = 0
    buckets = []
    for edge, count in zip([*histogram.edges, math.inf], histogram.counts(), strict=True):
        running += int(count)
        buckets.append(("+Inf" if edge == math.inf else repr(float(edge)), float(running)))
    return buckets, histogram.sum
