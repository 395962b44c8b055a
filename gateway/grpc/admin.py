"""riskwire.admin.v1.Admin: read-only status for now; the router issue adds writes."""

from __future__ import annotations

import os
from typing import Any

import grpc

import gateway
from gateway.dataplane import DataPlane
from gateway.grpc.errors import unary_errors
from riskwire.admin.v1 import admin_pb2 as pb
from riskwire.admin.v1 import admin_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(
        self, dataplane: DataPlane, encoder_implementation: str, wire_implementation: str
    ) -> None:
        self._dataplane = dataplane
        self._encoder = encoder_implementation
        self._wire = wire_implementation

    @unary_errors
    async def GetStatus(
        self, request: pb.GetStatusRequest, context: Context
    ) -> pb.GetStatusResponse:
        models = [
            pb.ModelStatus(
                name=m.name,
                version=str(m.version),
                kind=m.card.kind,
                ready=True,
                approval_status=m.card.approval.status,
                feature_spec_version=m.spec.version,
                max_batch=m.batcher.max_batch,
                queue_depth=m.batcher.queued_rows,
            )
            for m in self._dataplane.repository.loaded()
        ]
        return pb.GetStatusResponse(
            server_version=gateway.__version__,
            encoder=self._encoder,
            wire=self._wire,
            config_version=self._dataplane.routes.current.config_version,
            models=models,
            worker_pid=os.getpid(),
        )

    @unary_errors
    async def GetRoutes(
        self, request: pb.GetRoutesRequest, context: Context
    ) -> pb.GetRoutesResponse:
        current = self._dataplane.routes.current
        return pb.GetRoutesResponse(
            config_version=current.config_version, routes_yaml=current.table.to_yaml()
        )
