"""Traces of scoring calls: a span per call, a child span per stage, W3C context in.

Tracing is on only when OpenTelemetry's standard settings ask for an exporter:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set, or
``OTEL_TRACES_EXPORTER=console``; ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` turn it off. The SDK reads the rest itself:
``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` (default parent-based always-on),
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*`` for batching and the
OTLP exporter's own endpoint, headers and TLS variables.

Spans are made after the call has answered, from the ``perf_counter_ns`` stamps the
handlers take anyway for the stage histograms: nothing is traced on the response path,
and with tracing off the handlers pay one ``is None`` test. The incoming ``traceparent``
and ``tracestate`` metadata (W3C Trace Context, through the globally configured
propagator, ``OTEL_PROPAGATORS``) make the call span a child of the caller's span.
Health checks and the admin plane are not traced: only the Scoring handlers call this.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence

from opentelemetry import propagate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, set_span_in_context

import gateway
from gateway.dataplane import GroupStages, ScoreResult

log = logging.getLogger("riskwire.tracing")

SERVICE = "riskwire.v1.Scoring"


def tracing_requested(environ: dict[str, str] | None = None) -> str | None:
    """Which exporter the standard variables ask for: "otlp", "console" or None (off)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    if "none" in exporters:
        return None
    if "console" in exporters:
        return "console"
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if endpoint or "otlp" in exporters:
        return "otlp"
    return None


def make_tracer_provider(environ: dict[str, str] | None = None) -> TracerProvider | None:
    """A TracerProvider exporting as the environment asks, or None when tracing is off."""
    exporter_kind = tracing_requested(environ)
    if exporter_kind is None:
        return None
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or "riskwire"}
        | {"service.version": gateway.__version__}
    )
    provider = TracerProvider(resource=resource)
    exporter: SpanExporter
    if exporter_kind == "console":
        exporter = ConsoleSpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info("tracing on: %s exporter", exporter_kind)
    return provider


class CallTracer:
    """Turns a scoring call's stage stamps into a span tree."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer: Tracer = provider.get_tracer("riskwire.gateway", gateway.__version__)
        # perf_counter_ns -> wall-clock ns; both clocks tick alike over a process's life.
        self._offset_ns = time.time_ns() - time.perf_counter_ns()

    def trace(
        self,
        method: str,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        received_ns: int,
        parsed_ns: int,
        scored_ns: int,
        answered_ns: int,
        groups: Sequence[GroupStages],
        results: Sequence[ScoreResult],
        error: tuple[str, str] | None = None,
    ) -> None:
        """Record one call. ``error``: (gRPC status name, message) when it failed."""
        carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
        parent = propagate.extract(carrier) if carrier else None
        off = self._offset_ns
        attributes: dict[str, str | int] = {
            "rpc.system": "grpc",
            "rpc.service": SERVICE,
            "rpc.method": method,
            "riskwire.transactions": len(results),
        }
        if len(results) == 1:
            (r,) = results
            attributes |= {
                "riskwire.route": r.route,
                "riskwire.model": r.model_name,
                "riskwire.model_version": r.model_version,
                "riskwire.arm": str(r.arm),
                "riskwire.decision_source": str(r.source),
                "riskwire.config_version": r.config_version,
            }
        span = self._tracer.start_span(
            f"{SERVICE}/{method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=received_ns + off,
        )
        if not span.is_recording():
            return
        if error is not None:
            span.set_attribute("rpc.grpc.status_code", error[0])
            span.set_status(Status(StatusCode.ERROR, f"{error[0]}: {error[1]}"))
        inside = set_span_in_context(span)

        def child(name: str, start: int, end: int, extra: dict[str, str | int]) -> None:
            if end <= 0 or start <= 0:
                return
            self._tracer.start_span(
                name, context=inside, attributes=extra, start_time=start + off
            ).end(end_time=end + off)

        if parsed_ns:
            child("parse", received_ns, parsed_ns, {})
        for g in groups:
            where: dict[str, str | int] = {
                "riskwire.route": g.route,
                "riskwire.model": g.model,
                "riskwire.model_version": g.version,
                "riskwire.arm": g.arm,
                "riskwire.rows": g.rows,
            }
            child("encode", g.encode_start, g.encode_end, where)
            if g.infer_end:
                child("queue", g.encode_end, g.infer_start, where)
                child("infer", g.infer_start, g.infer_end, where)
        if scored_ns and answered_ns:
            child("respond", scored_ns, answered_ns, {})
        span.end(end_time=(answered_ns or time.perf_counter_ns()) + off)
