"""inference.GRPCInferenceService: the Open Inference Protocol v2 (KServe / Triton).

Field numbers follow Triton's published grpc_service.proto, so the official
``tritonclient[grpc]`` works unmodified against this port.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
import numpy as np

import gateway
from gateway.dataplane import DataPlane, Tensor, decode_tensor, parse_version
from gateway.errors import GatewayError, invalid
from gateway.grpc.converters import caller_deadline
from gateway.grpc.errors import stream_errors, unary_errors
from gateway.models.repository import ModelState
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


def versions_to_load(
    parameters: Mapping[str, pb.ModelRepositoryParameter], on_disk: list[int]
) -> list[int | None]:
    """The versions a RepositoryModelLoad asks for; ``[None]``: the newest on disk.

    Triton picks versions by the model config's ``version_policy``, which its
    clients send as the ``config`` parameter (JSON, e.g. ``tritonclient``'s
    ``load_model(name, config='{"version_policy": {"specific": {"versions": [2]}}}')``);
    ``latest`` (``num_versions``) and ``all`` work too. A ``version`` parameter
    (int64 or string) is riskwire's shorter form. Other config fields are ignored:
    the model card configures the model.
    """
    version = version_parameter(parameters)
    if version is not None:
        return [version]
    config = parameters.get("config")
    if config is None:
        return [None]
    text = config.string_param or config.bytes_param.decode("utf-8", "replace")
    try:
        policy = json.loads(text).get("version_policy") if text else None
    except (ValueError, AttributeError) as exc:
        raise invalid(f"parameter 'config' must be a JSON object: {exc}") from None
    if not policy:
        return [None]
    if not isinstance(policy, dict) or len(policy) != 1:
        raise invalid(f"config version_policy must name one of specific/latest/all: {policy}")
    if "specific" in policy:
        versions = (policy["specific"] or {}).get("versions") or []
        if not versions or not all(str(v).isdigit() and int(v) >= 1 for v in versions):
            raise invalid(f"version_policy.specific.versions must be positive integers: {versions}")
        return [int(v) for v in sorted({int(v) for v in versions})]
    if "latest" in policy:
        count = int((policy["latest"] or {}).get("num_versions", 1))
        if count < 1:
            raise invalid(f"version_policy.latest.num_versions must be >= 1, got {count}")
        newest = sorted(on_disk)[-count:]
        return list(newest) if newest else [None]
    if "all" in policy:
        return list(sorted(on_disk)) or [None]
    raise invalid(f"config version_policy must be specific, latest or all: {policy}")


def version_parameter(parameters: Mapping[str, pb.ModelRepositoryParameter]) -> int | None:
    """The ``version`` parameter of a repository request (riskwire's); None when absent."""
    param = parameters.get("version")
    if param is None:
        return None
    choice = param.WhichOneof("parameter_choice")
    if choice == "int64_param" and param.int64_param >= 1:
        return param.int64_param
    if choice == "string_param":
        if not param.string_param:
            return None
        parsed = parse_version(param.string_param)
        if parsed is not None:
            return parsed
    value = getattr(param, choice) if choice else "nothing"
    raise invalid(f"parameter 'version' must be a positive integer, got {value!r}")


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
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                index(name=s.name, version=str(s.version), state=s.state, reason=s.reason)
                for s in self._dataplane.repository.statuses()
                if s.state is ModelState.READY or not request.ready
            ]
        )

    @unary_errors
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        on_disk = [v for n, v in self._dataplane.repository.available() if n == request.model_name]
        for version in versions_to_load(request.parameters, on_disk):
            await self._dataplane.load_model(request.model_name, version)
        return pb.RepositoryModelLoadResponse()

    @unary_errors
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        # Triton's unload_dependents parameter has nothing to act on here: no ensembles.
        version = version_parameter(request.parameters)
        await self._dataplane.unload_model(request.model_name, version)
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
