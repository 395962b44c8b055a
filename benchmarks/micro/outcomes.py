"""Outcome store: the label-join round trip, the serving path's enqueue, a report.

Against a fresh SQLite store holding `--predictions` (default 100,000) predictions in
a temporary directory, it times:

- `log_predictions`: the serving path's cost per prediction (a bounded in-memory
  append), in batches of `--batch` rows;
- `report_outcome`: one label's round trip as the gRPC handler sees it, from the call
  to the joined prediction: hand-off to the writer thread, its flush check, the
  lookup by transaction id and the upsert of the label in its own transaction
  (synchronous=NORMAL in WAL mode), back through the future. `--labels` calls on
  random ids, one at a time, median and p99 quoted;
- `report_outcome_async`: the same awaited on an event loop (asyncio.wrap_future);
- `performance`: one fresh rolling-performance report over every label joined.

    .venv/bin/python -m benchmarks.micro.outcomes      # ~20 seconds

Writes benchmarks/results/micro-outcomes-latest.json (machine, configuration, results).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.load.machine import REPO_ROOT, write_report
from gateway.dataplane import DecisionSource
from gateway.telemetry.outcomes import OutcomeSettings, OutcomeStore, PredictionRecord
from router.routes import ArmRole, Decision

RESULTS = REPO_ROOT / "benchmarks" / "results" / "micro-outcomes-latest.json"


def predictions(count: int, now: float) -> list[PredictionRecord]:
    rng = random.Random(7)
    records = []
    for i in range(count):
        score = rng.random()
        decision = (
            Decision.DECLINE
            if score > 0.9
            else Decision.REVIEW
            if score > 0.6
            else Decision.APPROVE
        )
        records.append(
            PredictionRecord(
                transaction_id=f"txn-{i:012d}-9f3c",
                route="cards",
                model="fraud-gbdt",
                version=1 + i % 2,
                arm=ArmRole.CHAMPION if i % 10 else ArmRole.CANARY,
                score=score,
                decision=decision,
                source=DecisionSource.MODEL,
                amount_usd=round(rng.lognormvariate(3.5, 1.2), 2),
                attributes={"age_band": rng.choice(["18-24", "25-34", "35-54", "55+"])},
                scored_at=now - rng.random() * 86_400 * 20,
            )
        )
    return records


def quantiles_us(samples_s: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "median_us": statistics.median(ordered) * 1e6,
        "p99_us": p99 * 1e6,
        "max_us": ordered[-1] * 1e6,
        "calls": len(ordered),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--labels", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    now = time.time()
    records = predictions(args.predictions, now)
    rng = random.Random(11)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = OutcomeSettings(
            path=Path(tmp) / "outcomes.sqlite3",
            queue_rows=max(65_536, args.predictions),
            window_labels=args.predictions,
        )
        with OutcomeStore(settings) as store:
            gc.disable()
            started = time.perf_counter()
            for i in range(0, len(records), args.batch):
                store.log_predictions(records[i : i + args.batch])
            enqueue_s = time.perf_counter() - started
            gc.enable()
            store.flush()
            per_row_ns = enqueue_s / len(records) * 1e9
            results.append({"name": "log_predictions", "per_row_ns": per_row_ns})
            print(
                f"log_predictions       {per_row_ns:8.0f} ns per prediction "
                f"(batches of {args.batch})"
            )

            samples = []
            for _ in range(args.labels):
                target = records[rng.randrange(len(records))]
                started = time.perf_counter()
                store.report_outcome(target.transaction_id, rng.random() < 0.05, None, now)
                samples.append(time.perf_counter() - started)
            sync = quantiles_us(samples)
            results.append({"name": "report_outcome", **sync})

            async def awaited() -> list[float]:
                times = []
                for _ in range(args.labels):
                    target = records[rng.randrange(len(records))]
                    started = time.perf_counter()
                    await store.report_outcome_async(
                        target.transaction_id, rng.random() < 0.05, None, now
                    )
                    times.append(time.perf_counter() - started)
                return times

            async_figures = quantiles_us(asyncio.run(awaited()))
            results.append({"name": "report_outcome_async", **async_figures})
            for name, figures in (
                ("report_outcome", sync),
                ("report_outcome_async", async_figures),
            ):
                print(
                    f"{name:21s} median {figures['median_us']:7.1f} us   "
                    f"p99 {figures['p99_us']:7.1f} us   max {figures['max_us']:8.1f} us   "
                    f"({figures['calls']} labels, {args.predictions} predictions stored)"
                )

            started = time.perf_counter()
            reports = store.performance()
            report_s = time.perf_counter() - started
            labelled = sum(r.labelled for r in reports)
            results.append({"name": "performance", "seconds": report_s, "labels": labelled})
            print(f"performance           {report_s * 1e3:8.1f} ms over {labelled} labels")
    if not args.no_write:
        config = {"predictions": args.predictions, "labels": args.labels, "batch": args.batch}
        write_report(RESULTS, "outcomes", config, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
