"""The Score handler's cost per call in-process, with each recorder on and off.

A real server (``gateway.server.Server``, the demo models, the spike's route, metrics,
drift, the outcome store and the audit log in scratch directories) is started in a
fresh process per run, and its Scoring service's ``Score`` handler is awaited
directly with real request bytes, one call per event-loop step as calls arrive behind
gRPC: no transport, no client. Per call:

- `loop us/call`: wall time on the event-loop thread from the first call to the last,
  divided by the calls: what the loop spends on a call beside gRPC's own cost (the
  floor's, benchmarks/load/cpu_profile.py). It includes waiting for the GIL while the
  recorders' threads hold it;
- `process CPU us/call`: the process's CPU over the same calls, every thread: the
  recorders' writer threads included.

With ``--batch-size N`` the ``ScoreBatch`` handler is measured instead, N transactions a
call, and the figures are also given per transaction: what a bulk caller pays for each.

Variants (fresh process each, interleaved over ``--repeats``; medians quoted):
``all on`` (as ``riskwire serve`` runs), one recorder off at a time (``audit``,
``outcomes``, ``drift``, ``metrics``), ``all off``, and ``audit sealed in Python``
(all on, with the audit records sealed by the Python reference instead of
gateway._native._audit).

Run from the repository root::

    python -m benchmarks.micro.handler --models var/models     # ~1-2 minutes
    python -m benchmarks.micro.handler --batch-size 256 --calls 100 --warmup 10 \
        --variants "all on" "all off"

Writes benchmarks/results/micro-handler-latest.json (machine, configuration, results),
``micro-handler-batch<N>-latest.json`` with ``--batch-size``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from benchmarks.load.machine import REPO_ROOT, write_report

RESULTS = REPO_ROOT / "benchmarks" / "results" / "micro-handler-latest.json"
ROUTES = REPO_ROOT / "benchmarks" / "load" / "routes" / "spike.yaml"
OFF = {
    "audit": {"audit.enabled": False},
    "outcomes": {"outcomes.enabled": False},
    "drift": {"drift.enabled": False},
    "metrics": {"metrics.record": False},
}
VARIANTS: dict[str, dict[str, Any]] = {
    "all on": {},
    **{f"{name} off": overrides for name, overrides in OFF.items()},
    "all off": {k: v for overrides in OFF.values() for k, v in overrides.items()},
}
PYTHON_SEALING = "audit sealed in Python"
VARIANTS[PYTHON_SEALING] = {}


class _Context:
    """What the Score handler reads of a gRPC ServicerContext on the answered path."""

    def time_remaining(self) -> float:
        return 1.0

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


async def measure(
    models: Path, overrides: dict[str, Any], calls: int, warmup: int, batch_size: int = 0
) -> dict[str, Any]:
    """One variant in this process: loop and process time per Score call (per
    ScoreBatch call of ``batch_size`` transactions when it is not 0)."""
    from benchmarks.load.loadgen import build_pool
    from gateway.server import Server
    from gateway.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="riskwire-handler-") as tmp:
        scratch = Path(tmp)
        settings = load_settings(
            None,
            **{
                "grpc.port": 0,
                "admin.port": 0,
                "metrics.port": 0,
                "models.repository": models,
                "routes_file": ROUTES,
                "state_dir": scratch / "state",
                "audit.directory": scratch / "audit",
                "audit.key_file": scratch / "audit.key",
                **overrides,
            },
        )
        server = Server(settings)
        await server.start()
        try:
            if batch_size:
                score = server.scoring.ScoreBatch
                payloads = build_pool("batch", 7, 512, batch_size).payloads
            else:
                score = server.scoring.Score
                payloads = build_pool("score", 7, 512, 1).payloads
            context: Any = _Context()
            for i in range(warmup):
                await score(payloads[i % len(payloads)], context)
                await asyncio.sleep(0)
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(calls):
                await score(payloads[i % len(payloads)], context)
                # The next call on a step of its own, as behind the gRPC server.
                await asyncio.sleep(0)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            await server.stop(0)
    per = max(batch_size, 1)
    return {
        "loop_us_per_call": round(wall / calls * 1e6, 1),
        "process_cpu_us_per_call": round(cpu / calls * 1e6, 1),
        "loop_us_per_transaction": round(wall / calls / per * 1e6, 2),
        "process_cpu_us_per_transaction": round(cpu / calls / per * 1e6, 2),
    }


def run_variant(
    models: Path, name: str, calls: int, warmup: int, batch_size: int = 0
) -> dict[str, Any]:
    """``name`` measured in a fresh interpreter (no state carried between variants)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.micro.handler",
            "--models",
            str(models),
            "--calls",
            str(calls),
            "--warmup",
            str(warmup),
            "--batch-size",
            str(batch_size),
            "--one",
            name,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "var" / "models")
    parser.add_argument("--calls", type=int, default=3000, help="timed calls per run")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant, interleaved")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="ScoreBatch with this many transactions a call"
    )
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--one", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    models = args.models.resolve()
    if args.one is not None:
        if args.one == PYTHON_SEALING:
            from gateway.audit import records

            records.NATIVE = None  # before the server builds its audit writer
        one = uvloop.run(
            measure(models, VARIANTS[args.one], args.calls, args.warmup, args.batch_size)
        )
        print(json.dumps(one))
        return
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.variants}
    for repeat in range(args.repeats):
        for name in args.variants:
            runs[name].append(run_variant(models, name, args.calls, args.warmup, args.batch_size))
            print(f"repeat {repeat + 1}, {name}: {runs[name][-1]}", flush=True)
    results = []
    unit = "call" if not args.batch_size else "transaction"
    print(f"\n{'variant':<24}{'loop us/' + unit:>22}{'process CPU us/' + unit:>29}   (medians)")
    for name, figures in runs.items():
        row: dict[str, Any] = {"variant": name, "overrides": VARIANTS[name]}
        for key in figures[0]:
            row[key] = statistics.median(r[key] for r in figures)
        row["runs"] = figures
        results.append(row)
        loop, cpu = row[f"loop_us_per_{unit}"], row[f"process_cpu_us_per_{unit}"]
        print(f"{name:<24}{loop:>22.2f}{cpu:>29.2f}")
    config = {
        "calls": args.calls,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "models": str(args.models),
        "routes": str(ROUTES.relative_to(REPO_ROOT)),
    }
    out = RESULTS
    if args.batch_size:
        out = RESULTS.with_name(f"micro-handler-batch{args.batch_size}-latest.json")
    write_report(out, "handler", config, results)


if __name__ == "__main__":
    main()
