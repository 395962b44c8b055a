"""The tamper-evident audit log (DESIGN.md, "Audit records").

One hash chain of JSON-lines segments per worker (records.py: the record and its
digest; chain.py: segments and crash recovery), written off the event loop by one
thread behind a bounded queue with group commit (writer.py), fed by the gateway's
events (sink.py), checked by ``riskwire audit verify`` (verify.py) and read by
``riskwire audit query`` (query.py), and copied to OpenTelemetry logs when an OTLP
endpoint is configured (otel_logs.py).
"""

from gateway.audit.chain import AuditRecoveryError
from gateway.audit.query import QueryStats, query
from gateway.audit.records import RecordKind, hash_entity, key_id, load_key
from gateway.audit.settings import AuditSettings
from gateway.audit.sink import ChainAuditSink, DecisionRecords
from gateway.audit.verify import ChainReport, Problem, VerifyReport, verify
from gateway.audit.writer import (
    AuditEvent,
    AuditQueueFull,
    AuditStats,
    AuditUnavailable,
    AuditWriter,
    AuditWriterFailed,
    open_writer,
)

__all__ = [
    "AuditEvent",
    "AuditQueueFull",
    "AuditRecoveryError",
    "AuditSettings",
    "AuditStats",
    "AuditUnavailable",
    "AuditWriter",
    "AuditWriterFailed",
    "ChainAuditSink",
    "ChainReport",
    "DecisionRecords",
    "Problem",
    "QueryStats",
    "RecordKind",
    "VerifyReport",
    "hash_entity",
    "key_id",
    "load_key",
    "open_writer",
    "query",
    "verify",
]
