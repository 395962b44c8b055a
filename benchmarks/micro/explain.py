"""What reason codes add to a decision: the occlusion call, per model and rows per call.

Each demo model is loaded through the real repository (warmed, one intra-op thread,
as the server opens it). For `rows` = 1 (Score) and 64 (a ScoreBatch), over fresh
synthetic transactions, it times per call:

- `score`: the decision's own model call on those rows (``runtime.score``), for scale;
- `explain inline`: ``Explainers.explain`` on the event-loop thread: building the
  occlusion rows, the one ONNX Runtime call, the top-k reasons. This is the latency
  that `explain` adds to a Score answer;
- `explain worker`: the same with the model call on the model's worker thread
  (``batcher.run_in_worker``), on an idle loop: the hand-off alone. Under load the
  hand-off also waits for the GIL (up to ``sys.getswitchinterval()``, 5 ms), which an
  idle loop does not show; gateway/explain.py's INLINE_MAX_ROWS weighs the two.

p50 and p99 over `--calls` calls (a tenth of that at 64 rows), garbage collector off.

    .venv/bin/python -m benchmarks.micro.explain        # ~30 seconds

Writes benchmarks/results/micro-explain-latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.load.machine import REPO_ROOT, write_report
from gateway.data.synth import SynthOptions, generate
from gateway.explain import Explainers
from gateway.features.columns import columns_from_table
from gateway.features.reference import encode
from gateway.models.repository import LoadedModel, ModelRepository
from gateway.settings import BatchingSettings
from router.routes import DEFAULT_EXPLAIN_TOP_K

RESULTS = REPO_ROOT / "benchmarks" / "results" / "micro-explain-latest.json"
MODELS = ("fraud-gbdt", "fraud-mlp")
ROWS = (1, 64)


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    us = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99))}


async def time_calls(
    fn: Callable[[npt.NDArray[np.float32]], Awaitable[object]],
    chunks: list[npt.NDArray[np.float32]],
    calls: int,
) -> dict[str, float]:
    for chunk in chunks[:10]:  # warm caches and the worker thread
        await fn(chunk)
    samples = []
    gc.disable()
    try:
        for i in range(calls):
            chunk = chunks[i % len(chunks)]
            start = time.perf_counter_ns()
            await fn(chunk)
            samples.append(time.perf_counter_ns() - start)
    finally:
        gc.enable()
    return percentiles(samples)


async def measure_model(
    model: LoadedModel, features: npt.NDArray[np.float32], rows: int, calls: int
) -> dict[str, Any]:
    chunks = [features[i : i + rows] for i in range(0, len(features) - rows + 1, rows)]
    inline = Explainers(inline_max_rows=sys.maxsize)
    worker = Explainers(inline_max_rows=0)
    explainer = inline.get(model.card)
    occlusion = [explainer.occlusion_rows(c)[0].shape[0] for c in chunks]

    async def score(chunk: npt.NDArray[np.float32]) -> object:
        return model.runtime.score(chunk)

    async def explain_inline(chunk: npt.NDArray[np.float32]) -> object:
        return await inline.explain(model, chunk, DEFAULT_EXPLAIN_TOP_K)

    async def explain_worker(chunk: npt.NDArray[np.float32]) -> object:
        return await worker.explain(model, chunk, DEFAULT_EXPLAIN_TOP_K)

    return {
        "model": model.key,
        "rows": rows,
        "occlusion_rows_mean": float(np.mean(occlusion)),
        "features_explained": len(explainer.features),
        "score": await time_calls(score, chunks, calls),
        "explain_inline": await time_calls(explain_inline, chunks, calls),
        "explain_worker": await time_calls(explain_worker, chunks, calls),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    repository = ModelRepository(args.models, BatchingSettings(), "python")
    table = generate(4096, 2024, SynthOptions(fraud_rate=0.05))
    results = []
    try:
        for name in MODELS:
            model = await repository.load(name, 1)
            features = encode(model.spec, columns_from_table(table, model.spec.sources))
            for rows in ROWS:
                calls = args.calls if rows == 1 else max(args.calls // 10, 50)
                results.append(await measure_model(model, features, rows, calls))
    finally:
        await repository.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=lambda p: REPO_ROOT / p, default=REPO_ROOT / "var/models")
    parser.add_argument("--calls", type=int, default=3000, help="calls per figure at 1 row")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(
        f"{'model':<14}{'rows':>5}{'occl.rows':>10}"
        f"{'score p50':>11}{'p99':>9}{'inline p50':>12}{'p99':>9}{'worker p50':>12}{'p99':>9}"
    )
    for r in results:
        s, i, w = r["score"], r["explain_inline"], r["explain_worker"]
        print(
            f"{r['model']:<14}{r['rows']:>5}{r['occlusion_rows_mean']:>10.1f}"
            f"{s['p50_us']:>11.0f}{s['p99_us']:>9.0f}{i['p50_us']:>12.0f}{i['p99_us']:>9.0f}"
            f"{w['p50_us']:>12.0f}{w['p99_us']:>9.0f}"
        )
    print("(microseconds per call; explain = the latency reason codes add to a decision)")
    config = {"calls": args.calls, "top_k": DEFAULT_EXPLAIN_TOP_K, "models": str(args.models)}
    write_report(RESULTS, "explain", config, results)


if __name__ == "__main__":
    main()
