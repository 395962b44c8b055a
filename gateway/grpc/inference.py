"""inference.GRPCInferenceService: the Open Inference Protocol v2 (KServe / Triton).

Field numbers follow Triton's published grpc_service.proto, so the official
``tritonclient[grpc]`` works unmodified against this port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np

import gateway
from gateway.dataplane import DataPlane, Tensor, decode_tensor, parse_version
from gateway.errors import GatewayError, invalid
from gateway.grpc.converters import caller_deadline
from gateway.grpc.errors import stream_errors, unary_errors
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

_CONTENTS_FIELD = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT64": "int64_contents",
    "INT32": "int_contents",
}


def tensors_from_request(request: pb.ModelInferRequest) -> list[Tensor]:
    """Decode the inputs, from raw_input_contents or the typed contents fields."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise invalid(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    tensors = []
    for i, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        if raw:
            tensors.append(decode_tensor(tensor.name, tensor.datatype, shape, raw[i]))
            continue
        field = _CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            raise invalid(f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported")
        values = np.asarray(getattr(tensor.contents, field))
        little = values.astype(values.dtype.newbyteorder("<"), copy=False)
        dtype = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}[
            tensor.datatype
        ]
        tensors.append(
            decode_tensor(
                tensor.name, tensor.datatype, shape, little.astype(dtype, copy=False).tobytes()
            )
        )
    return tensors


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane, is_ready: Callable[[], bool]) -> None:
        self._dataplane = dataplane
        self._is_ready = is_ready

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._is_ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        try:
            self._dataplane.repository.get(request.name, parse_version(request.version))
        except GatewayError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="riskwire", version=gateway.__version__, extensions=["model_repository"]
        )

    @unary_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        repo = self._dataplane.repository
        model = repo.get(request.name, parse_version(request.version))
        meta = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[str(m.version) for m in repo.loaded() if m.name == model.name],
            platform="onnxruntime_onnx",
            inputs=[
                meta(name=t.name, datatype=t.dtype, shape=t.shape) for t in model.runtime.inputs
            ],
            outputs=[
                meta(name=t.name, datatype=t.dtype, shape=t.shape) for t in model.runtime.outputs
            ],
        )

    @unary_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        return await self._infer(request, caller_deadline(context))

    @stream_errors
    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        # Triton's contract: a failed request answers with error_message and the
        # stream goes on.
        deadline = caller_deadline(context)
        async for request in request_iterator:
            try:
                response = await self._infer(request, deadline)
            except GatewayError as error:
                yield pb.ModelStreamInferResponse(error_message=error.message)
                continue
            yield pb.ModelStreamInferResponse(infer_response=response)

    @unary_errors
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        repo = self._dataplane.repository
        loaded = {(m.name, m.version) for m in repo.loaded()}
        index = pb.RepositoryIndexResponse.ModelIndex
        models = []
        for name, version in repo.available():
            ready = (name, version) in loaded
            if request.ready and not ready:
                continue
            models.append(
                index(
                    name=name,
                    version=str(version),
                    state="READY" if ready else "UNAVAILABLE",
                    reason="" if ready else "unloaded",
                )
            )
        return pb.RepositoryIndexResponse(models=models)

    @unary_errors
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        await self._dataplane.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @unary_errors
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        await self._dataplane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def _infer(
        self, request: pb.ModelInferRequest, deadline: float | None
    ) -> pb.ModelInferResponse:
        model, outputs = await self._dataplane.infer_tensors(
            request.model_name,
            request.model_version,
            tensors_from_request(request),
            [out.name for out in request.outputs],
            deadline,
        )
        out_meta = pb.ModelInferResponse.InferOutputTensor
        return pb.ModelInferResponse(
            model_name=model.name,
            model_version=str(model.version),
            id=request.id,
            outputs=[
                out_meta(name=t.name, datatype=t.datatype, shape=t.data.shape) for t in outputs
            ],
            raw_output_contents=[
                np.ascontiguousarray(t.data, dtype=t.data.dtype.newbyteorder("<")).tobytes()
                for t in outputs
            ],
        )
