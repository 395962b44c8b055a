"""The Open Inference Protocol through the official tritonclient[grpc], unmodified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import columns_from_table
from gateway.features.reference import encode
from gateway.features.spec import parse_feature_spec
from gateway.models.card import ModelCard
from tests.integration.serverproc import start_server, write_config

HERE = Path(__file__).resolve().parent


def test_tritonclient_works_unmodified(tmp_path: Path, model_repository: Path) -> None:
    card = ModelCard.load(model_repository / "fraud-gbdt" / "1" / "card.yaml")
    spec = parse_feature_spec(card.feature_spec)
    rows = encode(spec, columns_from_table(generate(100, 99, SynthOptions()), spec.sources))
    np.save(tmp_path / "features.npy", rows)
    session = ort.InferenceSession(
        str(model_repository / "fraud-gbdt" / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    (expected,) = session.run(["probabilities"], {"features": rows})

    server = start_server(write_config(tmp_path, model_repository))
    try:
        done = subprocess.run(
            [
                sys.executable,
                str(HERE / "triton_client_check.py"),
                server.target,
                str(tmp_path / "features.npy"),
                str(tmp_path / "out.npy"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        assert server.terminate() == 0, server.log()
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert seen["server_name"] == "riskwire"
    assert "model_repository" in seen["extensions"]
    assert seen["inputs"] == [["features", "FP32", [-1, spec.width]]]
    assert ["probabilities", "FP32", [-1, 2]] in seen["outputs"]
    # Same model and rows; ONNX Runtime's thread settings differ (the server runs one
    # intra-op thread), which may change float summation order by an ulp.
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=0, atol=1e-6)
    assert seen["infer_id"] == "req-1"
    assert seen["stream_ids"] == ["s0", "s1", "s2"]
    assert ["fraud-mlp", "1", "READY"] in seen["index_before"]
    assert seen["unload_mlp"] == "OK"
    assert seen["mlp_ready_after_unload"] is False
    assert ["fraud-mlp", "1", "UNAVAILABLE"] in seen["index_after_unload"]
    assert seen["load_mlp"] == "OK" and seen["mlp_ready_after_load"] is True
    assert seen["unload_champion"].startswith("StatusCode.FAILED_PRECONDITION")
    assert seen["infer_unknown_model"].startswith("StatusCode.NOT_FOUND")
    assert seen["infer_bad_shape"].startswith("StatusCode.INVALID_ARGUMENT")
