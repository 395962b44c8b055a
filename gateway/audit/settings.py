"""The ``audit`` settings section: where the hash-chained audit log goes and how hard
the gateway tries to keep every record.

A section of its own (``Settings.audit``) so that the log's durability trade-offs are
named and documented in one place: group commit (``fsync_every_records`` and
``fsync_interval_ms``: how many records a power cut may take) and the full-queue
policy (``on_full`` and ``block_ms``: what a call gets when the writer cannot keep
up). A call is never answered as if it had been recorded when it was not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AuditSettings(BaseModel):
    """The hash-chained audit log (gateway/audit/): one JSON-lines chain per worker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """Write the audit log; false: no record is kept (development only)."""
    directory: Path | None = None
    """Where the segments go: ``w<worker>-<index>.jsonl``, one chain per worker.
    Unset: ``<state_dir>/audit``."""
    key_file: Path | None = None
    """The secret key of the keyed hash (HMAC-SHA256) applied to entity identifiers
    (transaction, account and card ids). Its bytes are read once at start and never
    logged or written into a record; records carry its key id (the first 8 hex of its
    SHA-256) so that a key rotation is traceable. Must lie outside ``directory``.
    Unset: ``<state_dir>/audit.key``."""
    create_key: bool = True
    """Make a random 32-byte key (mode 0600) when ``key_file`` does not exist; false: a
    missing key file is an error (production: the key comes from a secret store)."""
    worker_id: int | None = Field(None, ge=0, le=999)
    """The chain this process writes. Unset: the server's worker index (0 .. workers-1),
    which stays the same across restarts, unlike a pid, so a restarted worker resumes
    its own chain."""
    segment_max_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    """Start a new segment before a record would take the current one past this size."""
    segment_max_age_s: float = Field(3600.0, gt=0.0)
    """Start a new segment once the current one is this old (by its first record)."""
    queue_records: int = Field(65_536, ge=1)
    """Records waiting for the writer thread at most; a batch call counts one per
    transaction. Beyond it, ``on_full`` applies."""
    fsync_every_records: int = Field(512, ge=1)
    """Group commit: fsync once this many records have been written since the last
    fsync, ..."""
    fsync_interval_ms: float = Field(50.0, gt=0.0)
    """... or once the oldest record not yet fsynced was written this long ago,
    whichever comes first. A power cut loses at most what was written since."""
    on_full: Literal["block_then_fallback", "block_then_error"] = "block_then_fallback"
    """When the queue is full, a call waits up to ``block_ms`` for room; then it is
    answered with its route's fallback decision (block_then_fallback) or refused with
    RESOURCE_EXHAUSTED (block_then_error). Either way it is counted
    (riskwire_audit_queue_full)."""
    block_ms: float = Field(5.0, ge=0.0, le=10_000.0)
    """How long a call waits for room in a full queue before ``on_full`` applies."""

    def resolved(self, state_dir: Path) -> AuditSettings:
        """These settings with ``directory`` and ``key_file`` filled in from ``state_dir``
        where unset (what :class:`~gateway.audit.writer.AuditWriter` needs)."""
        data = self.model_dump()
        if self.directory is None:
            data["directory"] = state_dir / "audit"
        if self.key_file is None:
            data["key_file"] = state_dir / "audit.key"
        return AuditSettings.model_validate(data)

    @model_validator(mode="after")
    def _key_outside_directory(self) -> AuditSettings:
        if self.directory is None or self.key_file is None:
            return self
        directory = self.directory.resolve()
        key = self.key_file.resolve()
        if key == directory or directory in key.parents:
            raise ValueError(
                f"audit.key_file {self.key_file} must lie outside audit.directory "
                f"{self.directory}: the key must never sit beside the records it protects"
            )
        return self
