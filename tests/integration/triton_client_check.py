"""Drive a riskwire server with the official tritonclient[grpc]; print what it saw as JSON.

Run in its own process by test_open_inference.py: tritonclient registers its own
``inference.*`` protobuf symbols, which would collide with riskwire's generated
ones inside one process.

Usage: triton_client_check.py TARGET FEATURES.npy OUT_PROBABILITIES.npy
"""

from __future__ import annotations

import json
import queue
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def status_of(call: Any) -> str:
    try:
        call()
    except InferenceServerException as error:
        return f"{error.status()} {error.message()}"
    return "OK"


def main(target: str, features_path: str, out_path: str) -> None:
    client = triton.InferenceServerClient(url=target)
    seen: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server_name": client.get_server_metadata().name,
        "extensions": list(client.get_server_metadata().extensions),
        "model_ready": client.is_model_ready("fraud-gbdt", "1"),
    }
    meta = client.get_model_metadata("fraud-gbdt")
    seen["inputs"] = [(t.name, t.datatype, list(t.shape)) for t in meta.inputs]
    seen["outputs"] = [(t.name, t.datatype, list(t.shape)) for t in meta.outputs]

    rows = np.load(features_path)
    tensor = triton.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer(
        "fraud-gbdt",
        [tensor],
        model_version="1",
        outputs=[triton.InferRequestedOutput("probabilities")],
        request_id="req-1",
    )
    np.save(out_path, result.as_numpy("probabilities"))
    seen["infer_id"] = result.get_response().id

    # Streaming: each request answered on the stream.
    answers: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for i in range(3):
        client.async_stream_infer("fraud-gbdt", [tensor], request_id=f"s{i}")
    stream_ids = []
    for _ in range(3):
        res, err = answers.get(timeout=30)
        stream_ids.append(res.get_response().id if err is None else f"error {err}")
    client.stop_stream()
    seen["stream_ids"] = stream_ids

    seen["index_before"] = sorted(
        (m.name, m.version, m.state) for m in client.get_model_repository_index().models
    )
    seen["unload_mlp"] = status_of(lambda: client.unload_model("fraud-mlp"))
    seen["mlp_ready_after_unload"] = client.is_model_ready("fraud-mlp")
    seen["index_after_unload"] = sorted(
        (m.name, m.version, m.state) for m in client.get_model_repository_index().models
    )
    seen["load_mlp"] = status_of(lambda: client.load_model("fraud-mlp"))
    seen["mlp_ready_after_load"] = client.is_model_ready("fraud-mlp")
    seen["unload_champion"] = status_of(lambda: client.unload_model("fraud-gbdt"))
    seen["infer_unknown_model"] = status_of(lambda: client.infer("no-such-model", [tensor]))
    bad = triton.InferInput("features", [rows.shape[0], rows.shape[1] + 1], "FP32")
    bad.set_data_from_numpy(np.zeros((rows.shape[0], rows.shape[1] + 1), dtype=np.float32))
    seen["infer_bad_shape"] = status_of(lambda: client.infer("fraud-gbdt", [bad]))
    print(json.dumps(seen))


if __name__ == "__main__":
    main(*sys.argv[1:4])
