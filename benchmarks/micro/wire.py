"""Request bytes to model rows, native against the Python reference, side by side.

For 1, 64 and 1024 transactions per ScoreBatchRequest frame it times, per path:

- `reference`: protobuf parses the frame, `check_fields` and the routing keys per
  transaction (ProtobufRequestParser), then the numpy reference encoder;
- `glue`: the path before the native wire parser: protobuf parses and checks, then the
  Cython TransactionReader and the C++ encoder read the protobuf objects;
- `native`: the C++ wire parser (NativeRequestParser: parse, check, ids and routing
  keys), then the C++ encoder reads the parsed transactions;
- `parse+encode` (python / native): the parse and encode steps alone, without the
  checks and the routing keys' Python dicts: protobuf's FromString + the reference
  encoder, against WireParser + Program.encode_parsed;
- `encode` (python / native): the batch encoding alone, from transactions parsed
  beforehand (protobuf messages for the reference, a ParsedBatch for native).

Rows per second is the batch size over the median time per call. The frames come from
the synthetic generator (about 230 bytes a transaction). Calls cycle through
`--batches` distinct frames per size.

    .venv/bin/python -m benchmarks.micro.wire        # ~1 minute on 2 cores

Writes benchmarks/results/micro-wire-latest.json (machine, configuration, results).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.load.machine import REPO_ROOT, write_report
from benchmarks.micro.encode import SPEC, time_per_call
from gateway.data.synth import SynthOptions, generate
from gateway.features import dispatch
from gateway.features.columns import transactions_from_table
from gateway.features.spec import parse_feature_spec
from gateway.features.transactions import CHANNEL_VALUES
from gateway.grpc.requests import NativeRequestParser, ProtobufRequestParser
from riskwire.v1 import scoring_pb2 as pb

RESULTS = REPO_ROOT / "benchmarks" / "results" / "micro-wire-latest.json"


def frames(rows: int, count: int, seed: int) -> list[bytes]:
    """`count` distinct ScoreBatchRequest frames of `rows` synthetic transactions."""
    table = generate(max(rows * count, 1000), seed, SynthOptions())
    txns = transactions_from_table(table)
    return [
        pb.ScoreBatchRequest(transactions=txns[i * rows : (i + 1) * rows]).SerializeToString()
        for i in range(count)
    ]


def paths(max_batch: int, all_frames: Sequence[bytes]) -> dict[str, Callable[[bytes], object]]:
    """The timed calls, by name (see the module docstring)."""
    spec = parse_feature_spec(SPEC)
    python = dispatch.make_encoder(spec, "python")
    checked = ProtobufRequestParser(max_batch)
    messages = {f: pb.ScoreBatchRequest.FromString(f).transactions for f in all_frames}

    def reference(frame: bytes) -> object:
        return python.encode_transactions(checked.score_batch_request(frame).batch.transactions)

    def python_parse_encode(frame: bytes) -> object:
        return python.encode_transactions(pb.ScoreBatchRequest.FromString(frame).transactions)

    def python_encode(frame: bytes) -> object:
        return python.encode_transactions(messages[frame])

    calls: dict[str, Callable[[bytes], object]] = {
        "reference": reference,
        "parse+encode python": python_parse_encode,
        "encode python": python_encode,
    }
    if dispatch.resolve_implementation("auto") != "native":
        return calls
    from gateway._native import _encoder

    native = dispatch.make_encoder(spec, "native")
    assert isinstance(native, dispatch.NativeEncoder)
    wire = NativeRequestParser(max_batch)
    parser = _encoder.WireParser(CHANNEL_VALUES, max_batch)
    parsed = {f: parser.parse_score_batch_request(f) for f in all_frames}

    def glue(frame: bytes) -> object:
        return native.encode_transactions(checked.score_batch_request(frame).batch.transactions)

    def native_path(frame: bytes) -> object:
        return native.encode_transactions(wire.score_batch_request(frame).batch.transactions)

    def native_parse_encode(frame: bytes) -> object:
        return native.encode_transactions(parser.parse_score_batch_request(frame))

    def native_encode(frame: bytes) -> object:
        return native.encode_transactions(parsed[frame])

    calls.update(
        {
            "glue": glue,
            "native": native_path,
            "parse+encode native": native_parse_encode,
            "encode native": native_encode,
        }
    )
    return calls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batches", type=int, default=4, help="distinct frames per size")
    parser.add_argument("--run-ms", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    by_size = {n: frames(n, args.batches, args.seed) for n in args.rows}
    calls = paths(max(args.rows), [f for fs in by_size.values() for f in fs])
    if "native" not in calls:
        print(f"native extension not available, timing python only: {dispatch.native_error()}")
    results: list[dict[str, Any]] = []
    header = f"{'rows':>5} {'path':<20} {'median us':>11} {'min us':>11} {'rows/s':>12}"
    print(header)
    print("-" * len(header))
    for n in args.rows:
        batch_frames = by_size[n]
        frame_bytes = statistics.mean(len(f) for f in batch_frames)
        timed = time_per_call(calls, batch_frames, args.repeats, args.run_ms / 1000)
        for path, runs in timed.items():
            median = statistics.median(runs)
            print(
                f"{n:>5} {path:<20} {median * 1e6:>11.2f} {min(runs) * 1e6:>11.2f} "
                f"{n / median:>12,.0f}"
            )
            results.append(
                {
                    "rows": n,
                    "path": path,
                    "frame_bytes": round(frame_bytes),
                    "median_us": round(median * 1e6, 3),
                    "min_us": round(min(runs) * 1e6, 3),
                    "rows_per_s": round(n / median),
                    "runs_us": [round(r * 1e6, 3) for r in runs],
                }
            )
    by_key = {(r["rows"], r["path"]): r["median_us"] for r in results}
    if "native" in calls:
        print("\nnative against reference (medians):")
        for n in args.rows:
            for slow, fast in (
                ("reference", "native"),
                ("glue", "native"),
                ("parse+encode python", "parse+encode native"),
                ("encode python", "encode native"),
            ):
                ratio = by_key[(n, slow)] / by_key[(n, fast)]
                print(f"  {n:>5} rows: {slow:<20} / {fast:<20} = {ratio:6.1f}x")

    config = {
        "rows": args.rows,
        "repeats": args.repeats,
        "run_ms": args.run_ms,
        "batches_per_size": args.batches,
        "seed": args.seed,
        "spec_version": SPEC["version"],
        "statistic": "median over repeats of the mean time per call in a run",
    }
    write_report(args.out, "micro-wire", config, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
