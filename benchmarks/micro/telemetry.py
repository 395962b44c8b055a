"""What recording one scoring call's telemetry costs, per way of recording it.

Times, per call of a Score (one group, six stages, one result):

- `otel histogram x6 + counter`: OpenTelemetry's synchronous instruments through the
  SDK (a Histogram.record per stage with the call's attributes, a Counter.add), the
  way a library would record if it used the API's synchronous instruments;
- `riskwire (native)` and `riskwire (reference)`: ``ScoringTelemetry.record`` as the
  handlers call it, with the Cython histograms or the numpy reference ones.

Each figure is the median over `--repeats` runs of the mean time per call in a run of
`--calls` calls, garbage collector off; min beside it. A Score call costs ~600 us of
server CPU at c=8 on the 2-core VM (benchmarks/results/latest.md), which is what the
5% budget of the telemetry issue is measured against.

    .venv/bin/python -m benchmarks.micro.telemetry        # ~20 seconds

Writes benchmarks/results/micro-telemetry-latest.json.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from prometheus_client import CollectorRegistry

from benchmarks.load.machine import REPO_ROOT, write_report
from gateway.dataplane import DecisionSource, GroupStages, ScoreResult
from gateway.features import dispatch
from gateway.telemetry.histogram import latency_edges_seconds
from gateway.telemetry.metrics import make_meter_provider
from gateway.telemetry.serving import STAGES, ScoringTelemetry
from router.routes import ArmRole, Decision

RESULTS = REPO_ROOT / "benchmarks" / "results" / "micro-telemetry-latest.json"


def _call() -> tuple[list[GroupStages], list[ScoreResult]]:
    t = time.perf_counter_ns()
    group = GroupStages(
        "default", "fraud-gbdt", 1, "champion", 1, t, t + 20_000, t + 30_000, t + 50_000
    )
    result = ScoreResult(
        "tx-1", 0.12, Decision.APPROVE, "fraud-gbdt", 1, ArmRole.CHAMPION,
        DecisionSource.MODEL, "default", 1,
    )  # fmt: skip
    return [group], [result]


def otel_recorder() -> Callable[[], None]:
    provider = MeterProvider(
        metric_readers=[],
        exemplar_filter=AlwaysOffExemplarFilter(),
        views=[
            View(
                instrument_name="riskwire.stage.duration",
                aggregation=ExplicitBucketHistogramAggregation(latency_edges_seconds()),
            )
        ],
    )
    meter = provider.get_meter("bench")
    histogram = meter.create_histogram("riskwire.stage.duration", unit="s")
    counter = meter.create_counter("riskwire.requests")
    base = {"route": "default", "model": "fraud-gbdt", "version": "1", "arm": "champion"}
    per_stage = [base | {"stage": s} for s in STAGES]
    counter_attrs = base | {"method": "Score", "decision_source": "MODEL"}

    def record() -> None:
        for attributes in per_stage:
            histogram.record(0.0003, attributes)
        counter.add(1, counter_attrs)

    return record


def riskwire_recorder(mode: str) -> Callable[[], None]:
    telemetry = ScoringTelemetry(mode, enabled=True)  # type: ignore[arg-type]
    provider = make_meter_provider(CollectorRegistry())
    telemetry.register_metrics(provider.get_meter("bench"))
    groups, results = _call()
    t = groups[0].encode_start

    def record() -> None:
        telemetry.record("Score", t - 10_000, t, t + 60_000, t + 70_000, groups, results)

    return record


def measure(fn: Callable[[], None], calls: int, repeats: int) -> dict[str, float]:
    runs = []
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            runs.append((time.perf_counter() - start) / calls * 1e6)
    finally:
        gc.enable()
    return {"median_us": statistics.median(runs), "min_us": min(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    recorders: dict[str, Callable[[], None]] = {
        "otel histogram x6 + counter": otel_recorder(),
        "riskwire (reference)": riskwire_recorder("python"),
    }
    if dispatch.native_error() is None:
        recorders["riskwire (native)"] = riskwire_recorder("native")
    results: list[dict[str, Any]] = []
    print(f"{'recorder':<30} {'median us/call':>15} {'min':>8}")
    for name, fn in recorders.items():
        figures = measure(fn, args.calls, args.repeats)
        results.append({"recorder": name, **figures})
        print(f"{name:<30} {figures['median_us']:>15.2f} {figures['min_us']:>8.2f}")
    write_report(RESULTS, "telemetry", vars(args), results)


if __name__ == "__main__":
    main()
