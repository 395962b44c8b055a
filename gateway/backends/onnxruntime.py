"""ONNX Runtime sessions with explicit options.

One session per model version, one intra-op thread by default: model libraries'
thread pools spin between calls, and a spinning pool halved a peer's throughput
per CPU (MEASURED.md). Batches come from :mod:`gateway.backends.batching`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

# Most preferred first; only those this onnxruntime build offers are used.
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One model input or output as ONNX Runtime reports it."""

    name: str
    dtype: str  # Open Inference Protocol datatype: FP32, INT64, ...
    shape: tuple[int, ...]  # -1 for a dynamic dimension


_ORT_TO_OIP = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(string)": "BYTES",
    "tensor(bool)": "BOOL",
}


def _tensor_info(arg: ort.NodeArg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorInfo(arg.name, _ORT_TO_OIP.get(arg.type, arg.type), shape)


class OrtModel:
    """An ONNX model loaded into an ONNX Runtime session.

    ``score`` runs the feature rows and returns the fraud probability column;
    ``run`` exposes the raw tensors for the Open Inference Protocol.
    """

    def __init__(
        self,
        path: Path,
        *,
        input_name: str,
        score_output: str,
        score_column: int,
        intra_op_threads: int = 1,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads would otherwise spin for the next call.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        self._session = ort.InferenceSession(str(path), options, providers=chosen)
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        self.inputs = tuple(_tensor_info(a) for a in self._session.get_inputs())
        self.outputs = tuple(_tensor_info(a) for a in self._session.get_outputs())
        names = [t.name for t in self.inputs]
        if input_name not in names:
            raise ValueError(f"{path}: no input named {input_name!r}; inputs are {names}")
        out_names = [t.name for t in self.outputs]
        if score_output not in out_names:
            raise ValueError(f"{path}: no output named {score_output!r}; outputs are {out_names}")
        self._input_name = input_name
        self._score_output = score_output
        self._score_column = score_column

    def score(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Fraud probabilities for ``rows`` (float32 [n, width]) as float64 [n]."""
        (out,) = self._session.run([self._score_output], {self._input_name: rows})
        scores = np.asarray(out)
        if scores.ndim == 2:
            scores = scores[:, self._score_column]
        return scores.astype(np.float64, copy=False)

    def run(
        self, inputs: Mapping[str, npt.NDArray[np.generic]], outputs: Sequence[str] = ()
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Run the model on named tensors; all outputs when ``outputs`` is empty."""
        names = list(outputs) or [t.name for t in self.outputs]
        results = self._session.run(names, dict(inputs))
        return {name: np.asarray(value) for name, value in zip(names, results, strict=True)}


def preferred_providers(use_gpu: bool) -> tuple[str, ...]:
    """Execution providers to ask for: GPU ones first when wanted and present."""
    if not use_gpu:
        return ("CPUExecutionProvider",)
    available = set(ort.get_available_providers())
    return (*[p for p in _GPU_PROVIDERS if p in available], "CPUExecutionProvider")
