"""What the Scoring handlers record per call: server latency and model scores.

Fixed-bucket histograms (gateway/telemetry/histogram.py, Cython twin in the glue
module) so that recording costs a binary search and an increment on the serving path;
the /metrics endpoint turns them into Prometheus histograms at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import HistogramMetricFamily, Metric

from gateway.dataplane import DecisionSource, ScoreResult
from gateway.features.dispatch import EncoderMode
from gateway.telemetry.histogram import (
    FixedBucketHistogram,
    latency_edges_seconds,
    make_histogram,
    score_edges,
)

METHODS = ("Score", "ScoreBatch", "ScoreStream")


class ScoringTelemetry:
    """Latency per method and score distribution per model version."""

    def __init__(self, mode: EncoderMode = "auto") -> None:
        self._mode = mode
        self._latency = {m: make_histogram(latency_edges_seconds(), mode) for m in METHODS}
        self._scores: dict[tuple[str, int], FixedBucketHistogram] = {}

    def record(self, method: str, latency_s: float, results: Sequence[ScoreResult]) -> None:
        """One answered call: its server-side latency and every model score in it."""
        self._latency[method].record(latency_s)
        for result in results:
            if result.source is not DecisionSource.MODEL:
                continue
            key = (result.model_name, result.model_version)
            histogram = self._scores.get(key)
            if histogram is None:
                histogram = self._scores[key] = make_histogram(score_edges(), self._mode)
            histogram.record(result.score)

    def collect(self) -> Iterator[Metric]:
        latency = HistogramMetricFamily(
            "riskwire_server_latency_seconds",
            "Scoring calls' time in the server, from the request frame to the response bytes",
            labels=["method"],
        )
        for method, histogram in self._latency.items():
            latency.add_metric([method], *_buckets(histogram))
        scores = HistogramMetricFamily(
            "riskwire_model_score",
            "Model scores answered (decision_source MODEL)",
            labels=["model", "version"],
        )
        for (name, version), histogram in sorted(self._scores.items()):
            scores.add_metric([name, str(version)], *_buckets(histogram))
        yield latency
        yield scores


def _buckets(histogram: FixedBucketHistogram) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs ending with +Inf, and the sum."""
    running = 0
    buckets = []
    counts = histogram.counts()
    for edge, count in zip([*histogram.edges, float("inf")], counts, strict=True):
        running += int(count)
        buckets.append(("+Inf" if edge == float("inf") else repr(float(edge)), float(running)))
    return buckets, histogram.sum
