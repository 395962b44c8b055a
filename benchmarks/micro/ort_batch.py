"""ONNX Runtime cost per call and per row by batch size, for each demo model.

The batcher's ``max_batch`` comes from this table: tree ensembles get dearer per row
past a few dozen rows, MLPs keep getting cheaper. Sessions are opened exactly as the
server opens them (gateway.backends.onnxruntime.OrtModel, one intra-op thread).

Run from the repository root::

    python -m benchmarks.micro.ort_batch --models var/models
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load import machine
from gateway.backends.onnxruntime import OrtModel
from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import columns_from_table
from gateway.features.reference import encode
from gateway.features.spec import parse_feature_spec
from gateway.models.card import ModelCard

SIZES = (1, 2, 4, 8, 16, 32, 48, 64, 128, 256)
RESULTS = Path(__file__).resolve().parents[1] / "results"


def time_call(model: OrtModel, rows: np.ndarray, repeats: int, budget_s: float) -> float:
    """Median microseconds per ``model.score(rows)`` over ``repeats`` timed loops."""
    model.score(rows)
    samples = []
    for _ in range(repeats):
        calls = 0
        start = time.perf_counter()
        while True:
            model.score(rows)
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= budget_s / repeats:
                break
        samples.append(elapsed / calls * 1e6)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("var/models"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=1.0, help="seconds per batch size")
    parser.add_argument("--out", type=Path, default=RESULTS / "micro-ort-batch-latest.json")
    args = parser.parse_args(argv)

    table = generate(max(SIZES) * 4, 11, SynthOptions())
    results: dict[str, Any] = {"machine": machine.describe(), "models": {}}
    print(f"{'model':<14}{'rows':>6}{'us/call':>10}{'us/row':>9}{'rows/s':>12}")
    for card_path in sorted(args.models.glob("*/*/card.yaml")):
        card = ModelCard.load(card_path)
        spec = parse_feature_spec(card.feature_spec)
        features = encode(spec, columns_from_table(table, spec.sources))
        model = OrtModel(
            card_path.parent / "model.onnx",
            input_name=card.inputs.name,
            score_output=card.outputs.score.name,
            score_column=card.outputs.score.column,
        )
        rows_out = []
        for size in SIZES:
            batch = np.ascontiguousarray(features[:size])
            us = time_call(model, batch, args.repeats, args.budget_s)
            rows_out.append({"rows": size, "us_per_call": us, "us_per_row": us / size})
            print(f"{card.name:<14}{size:>6}{us:>10.1f}{us / size:>9.2f}{size / us * 1e6:>12,.0f}")
        results["models"][f"{card.name}/{card.version}"] = rows_out
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
