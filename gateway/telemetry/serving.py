"""What the Scoring handlers record per call: stage latencies, counts, scores.

Two kinds of figure, two ways out, both on the one ``/metrics`` page:

- Counters and gauges (requests, errors, fallbacks, calls in flight) are plain ints
  bumped on the serving path and reported through OpenTelemetry *observable*
  instruments (``register_metrics``): the SDK reads them at collection time.
- Latency and score histograms are fixed-bucket histograms (the Cython ones of the
  glue module, or the numpy reference) recorded per call and exported by ``collect``
  as Prometheus histograms. OpenTelemetry's Python API has no asynchronous histogram,
  and its synchronous ``Histogram.record`` costs about 17 us a call on the 2-core VM
  (``python -m benchmarks.micro.telemetry``) against about 0.2 us here: six stages a
  call would have cost Score more than the 5% the telemetry may take.

Stages, per (route, model, version, arm): ``parse`` (frame to validated batch),
``encode`` (feature rows), ``queue`` (rows waiting in the batcher), ``infer`` (the
model call holding them), ``respond`` (results to response bytes) and ``total``
(frame to response bytes). A ScoreBatch call that spans several groups records its
call-wide stages (parse, respond, total) under each group it touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from prometheus_client.core import HistogramMetricFamily, Metric

from gateway.dataplane import DecisionSource, GroupStages, ScoreResult
from gateway.features.dispatch import EncoderMode
from gateway.telemetry.histogram import (
    FixedBucketHistogram,
    latency_edges_seconds,
    make_histogram,
    prometheus_buckets,
    score_edges,
)

METHODS = ("Score", "ScoreBatch", "ScoreStream")
STAGES = ("parse", "encode", "queue", "infer", "respond", "total")

_GroupKey = tuple[str, str, int, str]  # route, model, version, arm


class ScoringTelemetry:
    """Stage latencies, request/error/fallback counts and scores of the Scoring service.

    Args:
        mode: which histogram implementation records (``auto``: native when built).
        enabled: False records nothing (the handlers skip the stage timing too): the
            "telemetry off" side of ``benchmarks/load/compare.py``.
    """

    def __init__(self, mode: EncoderMode = "auto", enabled: bool = True) -> None:
        self.enabled = enabled
        self._mode = mode
        self._latency = {m: make_histogram(latency_edges_seconds(), mode) for m in METHODS}
        self._stages: dict[_GroupKey, tuple[FixedBucketHistogram, ...]] = {}
        self._scores: dict[tuple[str, int], FixedBucketHistogram] = {}
        self._requests: dict[tuple[str, str, str, int, str, str], int] = {}
        self._fallbacks: dict[tuple[str, str], int] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self.in_flight = 0
        """Scoring calls (stream messages included) being answered now."""

    def record(
        self,
        method: str,
        received_ns: int,
        parsed_ns: int,
        scored_ns: int,
        answered_ns: int,
        groups: Sequence[GroupStages],
        results: Sequence[ScoreResult],
    ) -> None:
        """One answered call: its stages (``perf_counter_ns`` stamps) and its results."""
        total = answered_ns - received_ns
        self._latency[method].record(total / 1e9)
        parse = (parsed_ns - received_ns) / 1e9
        respond = (answered_ns - scored_ns) / 1e9
        for g in groups:
            key = (g.route, g.model, g.version, g.arm)
            histograms = self._stages.get(key)
            if histograms is None:
                histograms = self._stages[key] = tuple(
                    make_histogram(latency_edges_seconds(), self._mode) for _ in STAGES
                )
            parse_h, encode_h, queue_h, infer_h, respond_h, total_h = histograms
            parse_h.record(parse)
            encode_h.record((g.encode_end - g.encode_start) / 1e9)
            if g.infer_end:
                queue_h.record((g.infer_start - g.encode_end) / 1e9)
                infer_h.record((g.infer_end - g.infer_start) / 1e9)
            respond_h.record(respond)
            total_h.record(total / 1e9)
        requests = self._requests
        for r in results:
            key6 = (method, r.route, r.model_name, r.model_version, r.arm, r.source)
            requests[key6] = requests.get(key6, 0) + 1
            if r.source is DecisionSource.MODEL:
                score_key = (r.model_name, r.model_version)
                histogram = self._scores.get(score_key)
                if histogram is None:
                    histogram = self._scores[score_key] = make_histogram(score_edges(), self._mode)
                histogram.record(r.score)
            else:
                reason = r.fallback_reason.value if r.fallback_reason is not None else ""
                fallback_key = (r.route, reason)
                self._fallbacks[fallback_key] = self._fallbacks.get(fallback_key, 0) + 1

    def record_error(self, method: str, code: str) -> None:
        """A call answered with a non-OK status (``code``: the gRPC status name)."""
        key = (method, code)
        self._errors[key] = self._errors.get(key, 0) + 1

    # --- export ----------------------------------------------------------------------

    def register_metrics(self, meter: Meter) -> None:
        """The counters as OpenTelemetry observable instruments on ``meter``."""
        meter.create_observable_counter(
            "riskwire.requests",
            [self._observe_requests],
            unit="{request}",
            description="Transactions answered, by method, route, model version, arm and "
            "decision source (MODEL or FALLBACK)",
        )
        meter.create_observable_counter(
            "riskwire.fallbacks",
            [self._observe_fallbacks],
            unit="{request}",
            description="Transactions answered by the route's fallback policy, by reason",
        )
        meter.create_observable_counter(
            "riskwire.errors",
            [self._observe_errors],
            unit="{call}",
            description="Scoring calls answered with a non-OK gRPC status, by code",
        )
        meter.create_observable_up_down_counter(
            "riskwire.inflight.requests",
            [lambda _: [Observation(self.in_flight)]],
            unit="{call}",
            description="Scoring calls being answered now",
        )

    def _observe_requests(self, _: CallbackOptions) -> Iterable[Observation]:
        for (method, route, model, version, arm, source), n in list(self._requests.items()):
            yield Observation(
                n,
                {
                    "method": method,
                    "route": route,
                    "model": model,
                    "version": str(version),
                    "arm": str(arm),
                    "decision_source": str(source),
                },
            )

    def _observe_fallbacks(self, _: CallbackOptions) -> Iterable[Observation]:
        for (route, reason), n in list(self._fallbacks.items()):
            yield Observation(n, {"route": route, "reason": reason})

    def _observe_errors(self, _: CallbackOptions) -> Iterable[Observation]:
        for (method, code), n in list(self._errors.items()):
            yield Observation(n, {"method": method, "code": code})

    def collect(self) -> Iterator[Metric]:
        """The histograms as Prometheus metric families (a prometheus_client Collector)."""
        latency = HistogramMetricFamily(
            "riskwire_server_latency_seconds",
            "Scoring calls' time in the server, from the request frame to the response bytes",
            labels=["method"],
        )
        for method, histogram in self._latency.items():
            latency.add_metric([method], *prometheus_buckets(histogram))
        stages = HistogramMetricFamily(
            "riskwire_stage_duration_seconds",
            "Time per stage of a scoring call (parse, encode, queue, infer, respond, total)",
            labels=["route", "model", "version", "arm", "stage"],
        )
        for (route, model, version, arm), histograms in sorted(self._stages.items()):
            for stage, histogram in zip(STAGES, histograms, strict=True):
                stages.add_metric(
                    [route, model, str(version), arm, stage], *prometheus_buckets(histogram)
                )
        scores = HistogramMetricFamily(
            "riskwire_model_score",
            "Model scores answered (decision_source MODEL)",
            labels=["model", "version"],
        )
        for (name, version), histogram in sorted(self._scores.items()):
            scores.add_metric([name, str(version)], *prometheus_buckets(histogram))
        yield latency
        yield stages
        yield scores
