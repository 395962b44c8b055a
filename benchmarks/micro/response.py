"""ScoreResponse wire bytes: protobuf's serializer against the Cython writer, side by side.

Per implementation it times:

- `ScoreResponse`: one response with typical values and no reason codes, from the
  fields to bytes: protobuf builds `ScoreResponse(...)` and calls SerializeToString()
  (what a handler returning a message costs; grpc serializes it the same way);
  `reference` is gateway.grpc.responses.PythonResponseWriter (the same, plus its
  checks); `cython` is the native ResponseWriter.score_response;
- `ScoreBatchResponse x N` (default 256): N responses from their fields to the batch's
  bytes: protobuf builds N messages and serializes a ScoreBatchResponse of them; the
  writers encode each response and then the batch around their bytes;
- `batch framing x N`: the last step alone, N encoded responses to the batch's bytes.

Calls cycle through `--pool` distinct inputs (transaction and audit ids differ). Each
figure is the median over `--repeats` runs of the mean time per call in a run of about
`--run-ms`, with the garbage collector off (as timeit does); min is quoted beside it.

    .venv/bin/python -m benchmarks.micro.response        # ~15 seconds

Writes benchmarks/results/micro-response-latest.json (machine, configuration, results).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.load.machine import REPO_ROOT, write_report
from gateway.features import dispatch
from gateway.grpc.responses import PythonResponseWriter, ResponseWriter, make_response_writer
from riskwire.v1 import scoring_pb2 as pb

RESULTS = REPO_ROOT / "benchmarks" / "results" / "micro-response-latest.json"

Fields = dict[str, Any]


def typical_fields(count: int) -> list[Fields]:
    """`count` ScoreResponses as the gateway fills them: a model decision, no reasons."""
    return [
        {
            "transaction_id": f"txn-{i:012d}-9f3c",
            "score": 0.0731 + i * 1e-6,
            "decision": pb.APPROVE,
            "model_name": "fraud-gbdt",
            "model_version": "3",
            "arm": pb.CHAMPION,
            "decision_source": pb.MODEL,
            "route": "default",
            "config_version": 42,
            "audit_id": f"{i:08x}-5b1e-4c6a-9d2f-3e8a7c1b0f42",
            "server_latency_us": 800 + i % 400,
            "fallback_reason": "",
        }
        for i in range(count)
    ]


def time_per_call(
    calls: dict[str, Callable[[int], object]], pool: int, repeats: int, run_s: float
) -> dict[str, list[float]]:
    """Returns, per call, the mean seconds per call of each of `repeats` runs of ~`run_s`.

    A call takes the index of its input in the pool. The calls take turns run by run,
    so a machine that drifts slows them alike.
    """
    loops = {}
    for name, call in calls.items():
        call(0)  # warm: caches, first-touch allocations
        start = time.perf_counter()
        for i in range(pool):
            call(i)
        loops[name] = max(pool, round(run_s / max((time.perf_counter() - start) / pool, 1e-9)))
    runs: dict[str, list[float]] = {name: [] for name in calls}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, call in calls.items():
                count = loops[name]
                start = time.perf_counter()
                for i in range(count):
                    call(i % pool)
                runs[name].append((time.perf_counter() - start) / count)
    finally:
        if enabled:
            gc.enable()
    return runs


def single_bytes(fields: Fields) -> bytes:
    return pb.ScoreResponse(**fields).SerializeToString()


def protobuf_calls(pool: Sequence[Fields], batches: Sequence[Sequence[Fields]]) -> dict[str, Any]:
    # No framing path: protobuf cannot wrap bytes it did not build without parsing them.
    def single(i: int) -> bytes:
        return pb.ScoreResponse(**pool[i]).SerializeToString()

    def batch(i: int) -> bytes:
        messages = [pb.ScoreResponse(**fields) for fields in batches[i]]
        return pb.ScoreBatchResponse(responses=messages).SerializeToString()

    return {"single": single, "batch": batch}


def writer_calls(
    writer: ResponseWriter, pool: Sequence[Fields], batches: Sequence[Sequence[Fields]]
) -> dict[str, Any]:
    # Positional arguments in field order, as a handler would pass them.
    pool_args = [tuple(f.values()) for f in pool]
    batch_args = [[tuple(f.values()) for f in b] for b in batches]
    encoded_batches = [[writer.score_response(*a) for a in b] for b in batch_args]
    score_response = writer.score_response
    score_batch_response = writer.score_batch_response

    def single(i: int) -> bytes:
        return score_response(*pool_args[i])

    def batch(i: int) -> bytes:
        return score_batch_response([score_response(*a) for a in batch_args[i]])

    def framing(i: int) -> bytes:
        return score_batch_response(encoded_batches[i])

    return {"single": single, "batch": batch, "framing": framing}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256, help="responses per batch")
    parser.add_argument("--pool", type=int, default=8, help="distinct inputs per message")
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--run-ms", type=float, default=40.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    fields = typical_fields(args.pool * max(args.batch, 1))
    pool = fields[: args.pool]
    batches = [fields[i * args.batch : (i + 1) * args.batch] for i in range(args.pool)]
    # The bytes are the same whichever way they are made (tests/native/ check it in
    # depth); a benchmark of different outputs would be meaningless.
    reference = PythonResponseWriter()
    expected = single_bytes(pool[0])
    assert reference.score_response(**pool[0]) == expected

    implementations: dict[str, dict[str, Any]] = {
        "protobuf": protobuf_calls(pool, batches),
        "reference": writer_calls(reference, pool, batches),
    }
    if dispatch.native_error() is None:
        native = make_response_writer("native")
        assert native.score_response(**pool[0]) == expected
        implementations["cython"] = writer_calls(native, pool, batches)
    else:
        print(f"native extension not built, timing protobuf only: {dispatch.native_error()}")

    paths = {
        "single": "ScoreResponse",
        "batch": f"ScoreBatchResponse x {args.batch}",
        "framing": f"batch framing x {args.batch}",
    }
    calls = {
        f"{impl}/{path}": call
        for impl, by_path in implementations.items()
        for path, call in by_path.items()
    }
    timed = time_per_call(calls, args.pool, args.repeats, args.run_ms / 1000)

    results: list[dict[str, Any]] = []
    for key, runs in timed.items():
        impl, path = key.split("/")
        results.append(
            {
                "implementation": impl,
                "message": paths[path],
                "median_ns": round(statistics.median(runs) * 1e9, 1),
                "min_ns": round(min(runs) * 1e9, 1),
                "runs_ns": [round(r * 1e9, 1) for r in runs],
            }
        )
    by_key = {(r["implementation"], r["message"]): r["median_ns"] for r in results}
    min_by_key = {(r["implementation"], r["message"]): r["min_ns"] for r in results}
    names = list(implementations)
    columns = ["message", *(f"{n} median ns (min)" for n in names)]
    if "cython" in implementations:
        columns.append("speed-up of cython")
    print("| " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * (len(columns) - 1))
    for message in paths.values():
        cells = [
            f"{by_key[(n, message)]:,.0f} ({min_by_key[(n, message)]:,.0f})"
            if (n, message) in by_key
            else "-"
            for n in names
        ]
        if "cython" in implementations:
            base = "protobuf" if ("protobuf", message) in by_key else "reference"
            ratio = by_key[(base, message)] / by_key[("cython", message)]
            cells.append(f"{ratio:.1f}x over {base}")
        print(f"| {message} | " + " | ".join(cells) + " |")

    config = {
        "batch": args.batch,
        "pool": args.pool,
        "repeats": args.repeats,
        "run_ms": args.run_ms,
        "response_bytes": len(expected),
        "statistic": "median over repeats of the mean time per call in a run",
    }
    write_report(args.out, "micro-response", config, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
