"""How long a full garbage collection stops a started riskwire server, with and without
``gc.freeze()`` (the ``gc_freeze`` setting).

A full (generation 2) collection walks every object the collector tracks, and the event
loop waits meanwhile: every call that arrives waits before its handler runs, which the
server's own latency stamps never show. The server here is the real one, started
in-process on port 0 with the demo models, metrics, drift, outcomes and the audit log
(scratch directories), exactly as ``riskwire serve`` builds it, with ``gc_freeze`` off;
then ``gc.collect()`` is timed ``--reps`` times, ``gc.freeze()`` is called (what
``gc_freeze`` does once the server is ready) and the collection timed again.

    .venv/bin/python -m benchmarks.micro.gc_pause        # ~15 seconds

Writes benchmarks/results/micro-gc-pause-latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.load.machine import REPO_ROOT, write_report
from gateway.server import Server
from gateway.settings import load_settings

RESULTS = REPO_ROOT / "benchmarks" / "results" / "micro-gc-pause-latest.json"


def time_full_collections(reps: int) -> dict[str, Any]:
    """Median and max of ``reps`` full collections, in ms, and what the collector tracks."""
    samples = []
    for _ in range(reps):
        start = time.perf_counter_ns()
        gc.collect()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return {
        "tracked_objects": len(gc.get_objects()),
        "frozen_objects": gc.get_freeze_count(),
        "median_ms": round(statistics.median(samples), 3),
        "max_ms": round(max(samples), 3),
    }


async def run(models: Path, reps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="riskwire-gc-") as tmp:
        scratch = Path(tmp)
        overrides: dict[str, Any] = {
            "grpc.port": 0,
            "admin.port": 0,
            "metrics.port": 0,
            "models.repository": models,
            "state_dir": scratch / "state",
            "audit.directory": scratch / "audit",
            "audit.key_file": scratch / "audit.key",
            "gc_freeze": False,
        }
        settings = load_settings(None, **overrides)
        server = Server(settings)
        await server.start()
        try:
            unfrozen = time_full_collections(reps)
            gc.freeze()
            try:
                frozen = time_full_collections(reps)
            finally:
                gc.unfreeze()
        finally:
            await server.stop(0)
    return {"without_freeze": unfrozen, "with_freeze": frozen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=lambda p: REPO_ROOT / p, default=REPO_ROOT / "var/models")
    parser.add_argument("--reps", type=int, default=7, help="full collections timed each way")
    args = parser.parse_args()
    result = asyncio.run(run(args.models, args.reps))
    print(f"{'':<16}{'tracked objects':>16}{'frozen':>10}{'median ms':>11}{'max ms':>9}")
    for name, r in result.items():
        print(
            f"{name:<16}{r['tracked_objects']:>16,}{r['frozen_objects']:>10,}"
            f"{r['median_ms']:>11.2f}{r['max_ms']:>9.2f}"
        )
    print("(one full collection: the event loop, and every call arriving, waits that long)")
    write_report(RESULTS, "gc_pause", {"reps": args.reps, "models": str(args.models)}, [result])


if __name__ == "__main__":
    main()
