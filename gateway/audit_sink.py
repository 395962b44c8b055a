"""Where admin refusals and accepted config changes are reported.

A stand-in for the hash-chained audit log (DESIGN.md "Audit records"), which comes
later: it implements :class:`AuditSink` and replaces :class:`LoggingAuditSink` at
server assembly. Nothing else changes: the admin interceptor calls
``admin_refused``, and the route store's listener is ``config_changed``.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

from router.store import ConfigChange

log = logging.getLogger("riskwire.audit")


class AuditSink(Protocol):
    """Receives the admin plane's security and configuration events."""

    def admin_refused(self, method: str, peer: str, reason: str) -> None:
        """An admin call was refused before it ran (bad or missing credentials)."""

    def config_changed(self, change: ConfigChange) -> None:
        """A route table was accepted; called before it takes effect.

        Raising refuses the change (``RouteStore``'s listener contract): no table
        serves without its record.
        """


class LoggingAuditSink:
    """Writes each event as one structured log line (``key=value``, values JSON-quoted)."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger

    def admin_refused(self, method: str, peer: str, reason: str) -> None:
        self._log.warning(
            "admin refused: method=%s, peer=%s, reason=%s",
            json.dumps(method),
            json.dumps(peer),
            json.dumps(reason),
        )

    def config_changed(self, change: ConfigChange) -> None:
        self._log.info(
            "config change: config_version=%d, previous_version=%d, kind=%s, actor=%s, "
            "reason=%s, diff=%s, figures=%s",
            change.config_version,
            change.previous_version,
            change.kind,
            json.dumps(change.actor),
            json.dumps(change.reason),
            json.dumps(list(change.diff)),
            # A canary step's evidence: requests, p99s, error and decline rates, PSI.
            json.dumps(dict(change.figures), sort_keys=True, default=str),
        )


class TeeAuditSink:
    """The durable record first (which may refuse a change), then the server log line
    operators watch: both see every event."""

    def __init__(self, record: AuditSink, log_sink: AuditSink | None = None) -> None:
        self._record = record
        self._log = log_sink if log_sink is not None else LoggingAuditSink()

    def admin_refused(self, method: str, peer: str, reason: str) -> None:
        self._record.admin_refused(method, peer, reason)
        self._log.admin_refused(method, peer, reason)

    def config_changed(self, change: ConfigChange) -> None:
        self._record.config_changed(change)
        self._log.config_changed(change)
