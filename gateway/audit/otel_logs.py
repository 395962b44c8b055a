"""Audit records as OpenTelemetry log records, when an OTLP endpoint is configured.

The segments on disk stay the record of truth (the chain is verified there); this is
a copy for the log pipeline a fleet already runs (a collector, then Loki, Elastic or
a SIEM), so that an auditor can search records from every replica in one place, and
so that each record's digest also lives outside the machine that wrote it (an
external anchor: a tail cut off a segment on disk still shows up as missing there).

Each record becomes one log record: the body is the record's canonical line (entity
ids already keyed-hashed, so nothing leaves in clear), the timestamp its ``ts_ms``,
and attributes carry the kind, seq and worker for filtering. The writer thread calls
:meth:`OtelAuditLogs.emit` once a record is fsynced (the copy never holds a record the
disk may lose); the SDK's BatchLogRecordProcessor queues it
and exports from its own thread, so a slow collector never slows the chain (the SDK
drops, and counts, what its queue cannot hold: the disk has it anyway).

Wired here, not in library code (STYLE.md, "Telemetry in one place"): this is the
one place the logs SDK is set up, and only when the standard variables ask for it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

log = logging.getLogger("riskwire.audit")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class OtelAuditLogs:
    """Emits audit records through ``provider`` (its processors and exporters)."""

    def __init__(self, provider: LoggerProvider) -> None:
        self._provider = provider
        self._logger = provider.get_logger("riskwire.audit")
        self._failures = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> OtelAuditLogs | None:
        """An OTLP/gRPC exporter configured by the standard ``OTEL_*`` variables, or None
        when neither ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` nor
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""
        env = os.environ if environ is None else environ
        if not any(env.get(name) for name in ENDPOINT_VARIABLES):
            return None
        # Imported only when asked for: it loads grpc's OTLP stubs.
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        provider = LoggerProvider(resource=Resource.create({"service.name": "riskwire"}))
        # The exporter reads the endpoint, headers and TLS settings from the environment.
        provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
        return cls(provider)

    def emit(self, line: bytes, seq: int, ts_ms: int, kind: str, worker: int) -> None:
        """Emit one record (``line``: its canonical bytes, newline included). Never raises:
        the chain on disk must not stop for its copy."""
        try:
            self._logger.emit(
                LogRecord(
                    timestamp=ts_ms * 1_000_000,
                    observed_timestamp=time.time_ns(),
                    severity_number=SeverityNumber.INFO,
                    severity_text="INFO",
                    body=line.rstrip(b"\n").decode("ascii"),
                    attributes={
                        "riskwire.audit.kind": kind,
                        "riskwire.audit.seq": seq,
                        "riskwire.audit.worker": worker,
                    },
                )
            )
        except Exception:
            self._failures += 1
            if self._failures == 1:
                log.exception("audit: emitting an OpenTelemetry log record failed")

    def shutdown(self) -> None:
        """Export what is queued, then stop the processors."""
        self._provider.shutdown()
