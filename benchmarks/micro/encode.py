"""Feature encoding on the serving path, native against the Python reference.

For 1, 16 and 256 transactions per call (Score, ScoreStream, ScoreBatch) it times, per
implementation:

- `columns`: `encoder.encode(columns_from_transactions(txns, spec.sources))`, the path
  serving took before `encode_transactions` (columns.py's definition of every source,
  then the encoder);
- `transactions`: `encoder.encode_transactions(txns)`, the serving path now;
- `read`: the reading step of that path alone (the Cython TransactionReader's matrices,
  or the Python TransactionColumns).

Transactions come from the synthetic generator, serialized and parsed as a server
receives them, and calls cycle through `--batches` distinct batches of each size. The
default (8) keeps a batch's objects about as warm in cache as a server finds them right
after parsing and validating a request; a large pool (`--batches 256`) shows the cold
case, up to twice the time per row. Each figure is the median over `--repeats` runs of
the mean time per call in a run of about `--run-ms`, with the garbage collector off (as
timeit does); min is quoted beside it.

    .venv/bin/python -m benchmarks.micro.encode                  # ~1 minute on 2 cores
    .venv/bin/python -m benchmarks.micro.encode --card var/models/fraud-mlp/1/card.yaml

Writes benchmarks/results/micro-encode-latest.json (machine, configuration, results).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.load.machine import REPO_ROOT, write_report
from gateway.data.synth import SynthOptions, generate
from gateway.features import dispatch
from gateway.features.columns import Transaction, columns_from_transactions, transactions_from_table
from gateway.features.spec import FeatureSpec, parse_feature_spec
from gateway.features.transactions import TransactionColumns
from gateway.models.card import ModelCard
from riskwire.v1 import scoring_pb2 as pb

RESULTS = REPO_ROOT / "benchmarks" / "results" / "micro-encode-latest.json"

B = TypeVar("B")
"""One call's argument: a batch of transactions, or a request frame."""

# Every transform, over the sources of the demo models (gateway/models/train.py), so
# the reader does the work a real card asks for: 18 sources, 42 output columns.
SPEC: dict[str, Any] = {
    "version": "micro-bench-1",
    "features": [
        {"name": "amount_log", "transform": "log1p", "source": "amount_usd"},
        {"name": "ratio", "transform": "log1p", "source": "numeric_extras.amount_to_avg_ratio"},
        {"name": "v1h", "transform": "identity", "source": "numeric_extras.txn_count_1h"},
        {"name": "v24h", "transform": "identity", "source": "numeric_extras.txn_count_24h"},
        {
            "name": "tenure",
            "transform": "standardize",
            "source": "customer_tenure_days",
            "mean": 1600.0,
            "std": 1700.0,
        },
        {
            "name": "merchant_age",
            "transform": "standardize",
            "source": "numeric_extras.merchant_age_days",
            "mean": 1900.0,
            "std": 2000.0,
        },
        {
            "name": "merchant_risk",
            "transform": "identity",
            "source": "numeric_extras.merchant_risk_score",
            "default": -1.0,
        },
        {
            "name": "device_age",
            "transform": "bucketize",
            "source": "numeric_extras.device_age_days",
            "edges": [1, 3, 7, 30, 180],
            "default": -1.0,
        },
        {
            "name": "distance",
            "transform": "bucketize",
            "source": "numeric_extras.distance_from_home_km",
            "edges": [50, 300, 1000, 3000, 8000],
            "default": -1.0,
        },
        {
            "name": "channel",
            "transform": "one_hot",
            "source": "channel",
            "vocabulary": ["ECOMMERCE", "CARD_PRESENT", "CARD_NOT_PRESENT", "ATM", "TRANSFER"],
        },
        {
            "name": "entry_mode",
            "transform": "one_hot",
            "source": "entry_mode",
            "vocabulary": ["CHIP", "CONTACTLESS", "MAGSTRIPE", "MANUAL", "CREDENTIAL_ON_FILE"],
        },
        {
            "name": "mcc",
            "transform": "one_hot",
            "source": "merchant_category_code",
            "vocabulary": ["7995", "5967", "4829", "6051", "5732", "5944", "5999", "6011"],
        },
        {
            "name": "card_type",
            "transform": "one_hot",
            "source": "categorical_extras.card_type",
            "vocabulary": ["DEBIT", "CREDIT", "PREPAID"],
        },
        {"name": "merchant", "transform": "hash_bucket", "source": "merchant_id", "buckets": 64},
        {"name": "geo_mismatch", "transform": "differs", "sources": ["country", "ip_country"]},
        {
            "name": "ip_abroad",
            "transform": "differs",
            "sources": ["ip_country", "categorical_extras.home_country"],
        },
        {
            "name": "country_abroad",
            "transform": "differs",
            "sources": ["country", "categorical_extras.home_country"],
        },
        {
            "name": "hour",
            "transform": "cyclical",
            "source": "timestamp_ms",
            "period": "hour_of_day",
        },
        {
            "name": "weekday",
            "transform": "cyclical",
            "source": "timestamp_ms",
            "period": "day_of_week",
        },
    ],
}


def received_transactions(count: int, seed: int) -> list[Transaction]:
    """`count` transactions as a server holds them: parsed from the wire, one per request."""
    table = generate(max(count, 1000), seed, SynthOptions())  # it wants 100 rows or more
    wire = [
        pb.ScoreRequest(transaction=t).SerializeToString()
        for t in transactions_from_table(table)[:count]
    ]
    return [pb.ScoreRequest.FromString(raw).transaction for raw in wire]


def time_per_call(
    calls: Mapping[str, Callable[[B], object]],
    batches: Sequence[B],
    repeats: int,
    run_s: float,
) -> dict[str, list[float]]:
    """Returns, per call, the mean seconds per call of each of `repeats` runs of ~`run_s`.

    The calls take turns run by run, so a machine that drifts slows them alike.
    """
    loops = {}
    for name, call in calls.items():
        call(batches[0])  # warm: compile caches, first-touch allocations
        start = time.perf_counter()
        call(batches[1 % len(batches)])
        loops[name] = max(1, round(run_s / max(time.perf_counter() - start, 1e-7)))
    runs: dict[str, list[float]] = {name: [] for name in calls}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            for name, call in calls.items():
                count = loops[name]
                start = time.perf_counter()
                for i in range(count):
                    call(batches[(r * count + i) % len(batches)])
                runs[name].append((time.perf_counter() - start) / count)
    finally:
        if enabled:
            gc.enable()
    return runs


def paths(
    spec: FeatureSpec, encoder: dispatch.Encoder
) -> dict[str, Callable[[Sequence[Transaction]], object]]:
    """The timed calls for one encoder, by name (see the module docstring)."""

    def columns(txns: Sequence[Transaction]) -> object:
        return encoder.encode(columns_from_transactions(txns, spec.sources))

    read: Callable[[Sequence[Transaction]], object]
    if isinstance(encoder, dispatch.NativeEncoder):
        read = encoder.read_inputs
    else:
        read = TransactionColumns(spec.sources)
    return {"columns": columns, "transactions": encoder.encode_transactions, "read": read}


def load_spec(card: Path | None) -> FeatureSpec:
    if card is None:
        return parse_feature_spec(SPEC)
    return parse_feature_spec(ModelCard.load(card).feature_spec)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--batches", type=int, default=8, help="distinct batches per size")
    parser.add_argument("--run-ms", type=float, default=40.0)
    parser.add_argument("--card", type=Path, help="a model's card.yaml (default: built-in spec)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    spec = load_spec(args.card)
    txns = received_transactions(args.batches * max(args.rows), args.seed)
    implementations: list[dispatch.Implementation] = ["python"]
    if dispatch.native_error() is None:
        implementations.insert(0, "native")
    else:
        print(f"native extension not built, timing python only: {dispatch.native_error()}")

    results: list[dict[str, Any]] = []
    print(f"spec {spec.version}: {len(spec.sources)} sources, width {spec.width}")
    header = f"{'impl':<7} {'rows':>5} {'path':<13} {'median us':>10} {'min us':>10} {'us/row':>9}"
    print(header)
    print("-" * len(header))
    for name in implementations:
        encoder = dispatch.make_encoder(spec, name)
        for n in args.rows:
            batches: list[Sequence[Transaction]] = [
                txns[i * n : (i + 1) * n] for i in range(args.batches)
            ]
            timed = time_per_call(paths(spec, encoder), batches, args.repeats, args.run_ms / 1000)
            for path, runs in timed.items():
                median_us = statistics.median(runs) * 1e6
                min_us = min(runs) * 1e6
                print(
                    f"{name:<7} {n:>5} {path:<13} {median_us:>10.2f} {min_us:>10.2f} "
                    f"{median_us / n:>9.2f}"
                )
                results.append(
                    {
                        "implementation": name,
                        "rows": n,
                        "path": path,
                        "median_us": round(median_us, 3),
                        "min_us": round(min_us, 3),
                        "median_us_per_row": round(median_us / n, 3),
                        "runs_us": [round(r * 1e6, 3) for r in runs],
                    }
                )
    print()
    print("speed-up of `transactions` over `columns` (medians):")
    by_key = {(r["implementation"], r["rows"], r["path"]): r["median_us"] for r in results}
    for name in implementations:
        for n in args.rows:
            before, after = by_key[(name, n, "columns")], by_key[(name, n, "transactions")]
            ratio = before / after
            print(f"  {name:<7} {n:>5} rows: {before:10.2f} -> {after:9.2f} us  ({ratio:.1f}x)")

    config = {
        "rows": args.rows,
        "repeats": args.repeats,
        "run_ms": args.run_ms,
        "batches_per_size": args.batches,
        "seed": args.seed,
        "card": str(args.card) if args.card else None,
        "spec_version": spec.version,
        "spec_sources": len(spec.sources),
        "spec_width": spec.width,
        "statistic": "median over repeats of the mean time per call in a run",
    }
    write_report(args.out, "micro-encode", config, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
