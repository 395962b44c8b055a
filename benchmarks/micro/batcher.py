"""The batcher's own cost per call: scoring an idle model's call on the spot against
the queue and the dispatcher task.

Callers on one uvloop loop submit one-row calls (a demo model's encoded rows, each
with a deadline, as Score's are), each call from a new loop step, and await them,
``--seconds`` per run, the two modes interleaved ``--repeats`` times; the figures are
medians of microseconds per call (wall time on one thread: the loop's cost per call).

- **callers 1**: one caller at a time, which is how calls reach the batcher behind
  the gRPC server (1.04 rows per model call in a 10x spike on the 2-core VM): each
  call meets an idle model.
- **callers 8**: eight callers submitting in the same loop step, the case where the
  queue does batch (8 rows per model call): what on-the-spot scoring gives up when
  calls do arrive together, as they do not behind gRPC.

Run from the repository root::

    python -m benchmarks.micro.batcher --models var/models

Writes benchmarks/results/micro-batcher-latest.json (machine, configuration, results).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import uvloop

from benchmarks.load.machine import REPO_ROOT, write_report
from gateway.backends.batching import DynamicBatcher
from gateway.backends.onnxruntime import OrtModel
from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import columns_from_table
from gateway.features.reference import encode
from gateway.features.spec import parse_feature_spec
from gateway.models.card import ModelCard

MODES = {"on the spot": True, "queued": False}
CALLERS = (1, 8)
DEADLINE_S = 1.0
"""Each call's deadline: armed as a loop timer when queued, as Score's is; long, so
that a stall of this shared machine never sheds a call mid-measurement."""


def demo_rows(model_dir: Path, n: int) -> tuple[OrtModel, npt.NDArray[np.float32]]:
    """The model's session, opened as the server opens it, and ``n`` encoded rows."""
    card = ModelCard.load(model_dir / "card.yaml")
    spec = parse_feature_spec(card.feature_spec)
    table = generate(n, 11, SynthOptions())
    rows = np.ascontiguousarray(encode(spec, columns_from_table(table, spec.sources)))
    model = OrtModel(
        model_dir / "model.onnx",
        input_name=card.inputs.name,
        score_output=card.outputs.score.name,
        score_column=card.outputs.score.column,
    )
    return model, rows.astype(np.float32, copy=False)


async def _run(
    model: OrtModel,
    rows: npt.NDArray[np.float32],
    score_idle_now: bool,
    callers: int,
    seconds: float,
) -> float:
    batcher = DynamicBatcher(
        "bench/1",
        model.score,
        max_batch=16,
        max_delay_us=0,
        queue_rows=4096,
        score_idle_now=score_idle_now,
    )
    batcher.start()
    n = rows.shape[0]
    calls = 0
    stop = time.perf_counter() + seconds

    async def caller(offset: int) -> None:
        nonlocal calls
        i = offset
        while time.perf_counter() < stop:
            # Each call starts on a loop step of its own, as behind the gRPC server
            # (both modes pay for it).
            await asyncio.sleep(0)
            row = rows[i % n : i % n + 1]
            await batcher.submit(row, time.monotonic() + DEADLINE_S)
            calls += 1
            i += callers

    started = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    elapsed = time.perf_counter() - started
    await batcher.close()
    return elapsed / calls * 1e6


def measure(
    model: OrtModel, rows: npt.NDArray[np.float32], repeats: int, seconds: float
) -> list[dict[str, Any]]:
    samples: dict[tuple[str, int], list[float]] = {(m, c): [] for m in MODES for c in CALLERS}
    for _ in range(repeats):
        for callers in CALLERS:
            for mode, now in MODES.items():
                us = uvloop.run(_run(model, rows, now, callers, seconds))
                samples[(mode, callers)].append(us)
    return [
        {
            "mode": mode,
            "callers": callers,
            "us_per_call_median": statistics.median(values),
            "us_per_call_min": min(values),
        }
        for (mode, callers), values in samples.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "var" / "models")
    parser.add_argument("--model", default="fraud-gbdt/1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per run")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "benchmarks" / "results" / "micro-batcher-latest.json",
    )
    args = parser.parse_args(argv)
    model, rows = demo_rows(args.models / args.model, 1024)
    results = measure(model, rows, args.repeats, args.seconds)
    print(f"{args.model}: loop microseconds per one-row call, median of {args.repeats} (min)")
    for r in results:
        print(
            f"  callers {r['callers']}  {r['mode']:12s}  {r['us_per_call_median']:7.1f} us"
            f"  ({r['us_per_call_min']:.1f})"
        )
    config = {"model": args.model, "repeats": args.repeats, "seconds": args.seconds}
    write_report(args.out, "micro-batcher", config, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
