"""What the gateway records, and how each event becomes an audit record.

:class:`ChainAuditSink` implements ``gateway.audit_sink.AuditSink`` (admin refusals,
configuration changes) over an :class:`AuditWriter`, and adds the data plane's events:
decisions, shadow scores, model loads, unloads and approvals.

The calling thread does as little as possible. A decision call queues one item that
holds the call's batch and results by reference; the writer thread turns it into one
record per transaction, hashing the ids and reading the raw inputs there. Only
:meth:`ChainAuditSink.config_changed` waits for the disk: a route table must not serve
before its record is durable (``RouteStore``'s listener contract), and such changes
are rare.

Payloads, by kind (entity ids are keyed hashes, see records.py; nothing else is):

- ``decision``: transaction_id, account_id, card_id, model, version, route, arm,
  config_version, score, decision, decision_source, fallback_reason, latency_us,
  inputs {amount_minor, currency, merchant_category_code, channel, country},
  reason_codes [{code, feature, contribution}] (when the answer carries them).
- ``shadow_score``: transaction_id, account_id, route, config_version, model,
  version, score, decision, and the primary's model, version, score, decision.
- ``config_change``: config_version, previous_version, change (apply, rollback,
  canary_*), actor, reason, diff, figures, restored_version, applied_at, the whole
  table in force and its SHA-256.
- ``model_load`` / ``model_unload`` / ``model_approval``: model, version, actor,
  reason, and for a load the card's kind, owner, approval and the SHA-256 of
  card.yaml and model.onnx (read on the writer thread).
- ``admin_refused``: method, peer, reason.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.audit.records import NATIVE, CanonicalJSON, RecordKind, canonical, json_string
from gateway.audit.writer import (
    AuditEvent,
    AuditUnavailable,
    AuditWriter,
    AuditWriterFailed,
    now_ms,
)

if TYPE_CHECKING:
    from gateway.dataplane import ScoreResult, TransactionBatch
    from gateway.models.repository import LoadedModel
    from router.store import ConfigChange

log = logging.getLogger("riskwire.audit")

DURABLE_TIMEOUT_S = 5.0
"""How long a configuration change waits for its record to reach the disk."""


def _number(value: float) -> float | str:
    """A float JSON can hold: NaN and infinities as their names (never a refused record)."""
    return value if math.isfinite(value) else str(value)


@dataclass(slots=True)
class DecisionRecords:
    """One scoring call's decisions: one ``decision`` record per transaction."""

    batch: TransactionBatch
    results: Sequence[ScoreResult]
    latency_us: int
    """Server-side time of the call, from the data plane's start to its answer."""
    ts_ms: int = field(default_factory=now_ms)

    @property
    def kind(self) -> RecordKind:
        return "decision"

    @property
    def record_count(self) -> int:
        return len(self.results)

    def _inputs_of(self) -> Callable[[int], tuple[Any, Any]]:
        """A transaction's amount_minor and currency by index: protobuf Transactions are
        read as attributes; the native parser's batch gives the two fields of one."""
        transactions = self.batch.transactions
        if isinstance(transactions, Sequence):
            return lambda i: (transactions[i].amount_minor, transactions[i].currency)
        return transactions.amount_and_currency

    def canonical_payloads(
        self, hash_entity: Callable[[str], str]
    ) -> tuple[int, list[bytes]] | None:
        """The item's timestamp and every record's payload, built natively, in order:
        what :meth:`expand` yields, for the writer to seal many to a call. None without
        the native builder, or where it declines a record: :meth:`expand` then builds
        them, through the reference where it must."""
        native = getattr(hash_entity, "native", None)
        if native is None or NATIVE is None:
            return None
        payload_of = NATIVE.decision_payload
        inputs_of = self._inputs_of()
        keys_of = self.batch.routing_keys
        latency_us = self.latency_us
        payloads: list[bytes] = []
        for i, result in enumerate(self.results):
            amount_minor, currency = inputs_of(i)
            payload = payload_of(native, result, keys_of[i], amount_minor, currency, latency_us)
            if payload is None:
                return None
            payloads.append(payload)
        return self.ts_ms, payloads

    def expand(
        self, hash_entity: Callable[[str], str]
    ) -> Iterator[tuple[int, Mapping[str, Any] | CanonicalJSON]]:
        inputs_of = self._inputs_of()
        keys_of = self.batch.routing_keys
        # The hasher's native twin: the whole payload in native code (records.NATIVE).
        native = getattr(hash_entity, "native", None)
        payload_of = None if native is None or NATIVE is None else NATIVE.decision_payload
        for i, result in enumerate(self.results):
            keys = keys_of[i]
            amount_minor, currency = inputs_of(i)
            if payload_of is not None:
                direct = payload_of(native, result, keys, amount_minor, currency, self.latency_us)
                if direct is not None:
                    yield self.ts_ms, CanonicalJSON(direct)
                    continue
            ids = entity_ids(hash_entity, result, keys)
            fast = decision_json(result, ids, amount_minor, currency, keys, self.latency_us)
            yield (
                self.ts_ms,
                (
                    fast
                    if fast is not None
                    else decision_payload(
                        result, ids, amount_minor, currency, keys, self.latency_us
                    )
                ),
            )


def entity_ids(
    hash_entity: Callable[[str], str], result: ScoreResult, keys: Mapping[str, str]
) -> tuple[str, str, str]:
    """A decision's transaction, account and card ids, hashed (raises as the hasher does)."""
    return (
        hash_entity(result.transaction_id),
        hash_entity(keys.get("account_id", "")),
        hash_entity(keys.get("card_id", "")),
    )


def decision_payload(
    result: ScoreResult,
    ids: tuple[str, str, str],
    amount_minor: Any,
    currency: Any,
    keys: Mapping[str, str],
    latency_us: int,
) -> dict[str, Any]:
    """One ``decision`` record's payload as an object (the reference form)."""
    fallback = result.fallback_reason
    payload: dict[str, Any] = {
        "transaction_id": ids[0],
        "account_id": ids[1],
        "card_id": ids[2],
        "model": result.model_name,
        "version": result.model_version,
        "route": result.route,
        "arm": str(result.arm),
        "config_version": result.config_version,
        "score": _number(result.score),
        "decision": str(result.decision),
        "decision_source": str(result.source),
        "fallback_reason": str(fallback) if fallback is not None else None,
        "latency_us": latency_us,
        "inputs": {
            "amount_minor": amount_minor,
            "currency": currency,
            "merchant_category_code": keys.get("merchant_category_code", ""),
            "channel": keys.get("channel", ""),
            "country": keys.get("country", ""),
        },
    }
    if result.reason_codes:
        payload["reason_codes"] = [
            {
                "code": reason.code,
                "feature": reason.feature,
                "contribution": _number(reason.contribution),
            }
            for reason in result.reason_codes
        ]
    return payload


def _json_float(value: object) -> str:
    """A float as canonical JSON writes :func:`_number` of it; TypeError otherwise."""
    if type(value) is not float:
        raise TypeError(f"not a float: {type(value).__name__}")
    return float.__repr__(value) if math.isfinite(value) else json_string(str(value))


def _json_int(value: object) -> str:
    if type(value) is not int:
        raise TypeError(f"not an int: {type(value).__name__}")
    return int.__repr__(value)


def decision_json(
    result: ScoreResult,
    ids: tuple[str, str, str],
    amount_minor: Any,
    currency: Any,
    keys: Mapping[str, str],
    latency_us: int,
) -> CanonicalJSON | None:
    """:func:`decision_payload`'s canonical bytes, written directly (keys in sorted
    order, strings through json's own escaper, numbers as json writes them): about a
    third of the writer's time per record went to ``json.dumps``. None when a value is
    not of the plain type this writer knows (then the caller serializes the object).
    Equal to ``canonical(decision_payload(...))`` (tests/unit/test_audit_fast.py)."""
    s = json_string
    fallback = result.fallback_reason
    try:
        reasons = ""
        if result.reason_codes:
            reasons = (
                '"reason_codes":['
                + ",".join(
                    f'{{"code":{s(r.code)},"contribution":{_json_float(r.contribution)},'
                    f'"feature":{s(r.feature)}}}'
                    for r in result.reason_codes
                )
                + "],"
            )
        text = (
            f'{{"account_id":{s(ids[1])},"arm":{s(str(result.arm))},"card_id":{s(ids[2])},'
            f'"config_version":{_json_int(result.config_version)},'
            f'"decision":{s(str(result.decision))},"decision_source":{s(str(result.source))},'
            f'"fallback_reason":{"null" if fallback is None else s(str(fallback))},'
            f'"inputs":{{"amount_minor":{_json_int(amount_minor)},'
            f'"channel":{s(keys.get("channel", ""))},"country":{s(keys.get("country", ""))},'
            f'"currency":{s(currency)},'
            f'"merchant_category_code":{s(keys.get("merchant_category_code", ""))}}},'
            f'"latency_us":{_json_int(latency_us)},"model":{s(result.model_name)},{reasons}'
            f'"route":{s(result.route)},"score":{_json_float(result.score)},'
            f'"transaction_id":{s(ids[0])},"version":{_json_int(result.model_version)}}}'
        )
    except TypeError:
        return None
    return CanonicalJSON(text.encode("ascii"))


@dataclass(slots=True)
class LazyEvent:
    """One record whose payload is built on the writer thread (reads files, dumps tables)."""

    kind: RecordKind
    build: Callable[[Callable[[str], str]], dict[str, Any]]
    ts_ms: int = field(default_factory=now_ms)

    @property
    def record_count(self) -> int:
        return 1

    def expand(self, hash_entity: Callable[[str], str]) -> Iterator[tuple[int, dict[str, Any]]]:
        yield self.ts_ms, self.build(hash_entity)


def file_sha256(path: Path) -> str | None:
    """SHA-256 of a file's bytes, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


class ChainAuditSink:
    """The gateway's audit events, recorded on the hash chain of ``writer``.

    Implements ``gateway.audit_sink.AuditSink``; replaces ``LoggingAuditSink`` at
    server assembly.
    """

    def __init__(self, writer: AuditWriter, durable_timeout_s: float = DURABLE_TIMEOUT_S) -> None:
        self.writer = writer
        self._durable_timeout_s = durable_timeout_s

    # -- AuditSink -----------------------------------------------------------------

    def admin_refused(self, method: str, peer: str, reason: str) -> None:
        """Record a refused admin call. The call is refused whatever happens here, so a
        full queue (after ``block_ms``) is counted and logged, not raised."""
        event = AuditEvent("admin_refused", {"method": method, "peer": peer, "reason": reason})
        try:
            self.writer.submit_blocking(event)
        except AuditUnavailable as exc:
            log.error("admin refusal of %s from %s not recorded: %s", method, peer, exc)

    def config_changed(self, change: ConfigChange) -> None:
        """Record an accepted route table and wait until the record is on disk.

        Raises:
            AuditUnavailable: the record could not be queued or made durable in time:
                the route store then refuses the change.
        """

        def build(_hash: Callable[[str], str]) -> dict[str, Any]:
            table = change.table.model_dump(mode="json", exclude_none=True)
            return {
                "config_version": change.config_version,
                "previous_version": change.previous_version,
                "change": str(change.kind),
                "actor": change.actor,
                "reason": change.reason,
                "diff": list(change.diff),
                "figures": {k: _number(float(v)) for k, v in sorted(change.figures.items())},
                "restored_version": change.restored_version,
                "applied_at": change.applied_at.isoformat(),
                "table": table,
                "table_sha256": hashlib.sha256(canonical(table)).hexdigest(),
            }

        self._record_durably(LazyEvent("config_change", build))

    # -- the data plane ------------------------------------------------------------

    def decisions_item(
        self, batch: TransactionBatch, results: Sequence[ScoreResult], latency_us: int
    ) -> DecisionRecords:
        """The queue item of one call's decisions (see :meth:`record_decisions`)."""
        return DecisionRecords(batch, results, latency_us)

    def offer_decisions(self, item: DecisionRecords) -> bool:
        """Queue a call's decisions without waiting: True when queued, False when the
        queue is full (then await :meth:`record_decisions`; nothing counted yet).

        Raises:
            AuditWriterFailed: the writer has stopped.
        """
        return self.writer.try_submit(item) > 0

    async def record_decisions(self, item: DecisionRecords) -> None:
        """Queue a call's decisions, waiting up to ``block_ms`` for room.

        Raises:
            AuditQueueFull: the queue stayed full (counted): answer per ``on_full``.
            AuditWriterFailed: the writer has stopped.
        """
        await self.writer.submit_or_wait(item)

    def shadow_score(
        self,
        primary: ScoreResult,
        routing_keys: Mapping[str, str],
        model: str,
        version: int,
        score: float,
        decision: str,
    ) -> bool:
        """Record one shadow arm's score beside its primary answer, without waiting.

        Shadow work is shed first under load: a full queue refuses the record (counted
        as queue_full{kind="shadow_score"}) and this returns False.
        """
        event = AuditEvent(
            "shadow_score",
            {
                "route": primary.route,
                "config_version": primary.config_version,
                "model": model,
                "version": version,
                "score": _number(score),
                "decision": str(decision),
                "primary_model": primary.model_name,
                "primary_version": primary.model_version,
                "primary_score": _number(primary.score),
                "primary_decision": str(primary.decision),
            },
            {
                "transaction_id": primary.transaction_id,
                "account_id": routing_keys.get("account_id", ""),
            },
        )
        try:
            self.writer.submit(event)
        except AuditUnavailable:
            return False
        return True

    def model_loaded(self, model: LoadedModel, actor: str = "", reason: str = "") -> None:
        """Record a model version loaded (and warmed), with what was loaded: the card's
        approval and the digests of its files.

        Raises:
            AuditUnavailable: the queue stayed full for ``block_ms``, or the writer stopped.
        """
        card, path = model.card, model.path

        def build(_hash: Callable[[str], str]) -> dict[str, Any]:
            return {
                "model": card.name,
                "version": card.version,
                "actor": actor,
                "reason": reason,
                "model_kind": card.kind,
                "owner": card.owner,
                "approval": card.approval.model_dump(mode="json"),
                "path": str(path),
                "card_sha256": file_sha256(path / "card.yaml"),
                "model_sha256": file_sha256(path / "model.onnx"),
            }

        self.writer.submit_blocking(LazyEvent("model_load", build))

    def model_unloaded(self, name: str, version: int, actor: str = "", reason: str = "") -> None:
        """Record a model version unloaded (raises as :meth:`model_loaded`)."""
        payload = {"model": name, "version": version, "actor": actor, "reason": reason}
        self.writer.submit_blocking(AuditEvent("model_unload", payload))

    def model_approval(
        self,
        name: str,
        version: int,
        status: str,
        approver: str | None,
        date: str | None,
        actor: str = "",
        reason: str = "",
    ) -> None:
        """Record a governance decision on a model version: approved, pending, rejected
        (raises as :meth:`model_loaded`)."""
        payload = {
            "model": name,
            "version": version,
            "status": status,
            "approver": approver,
            "date": date,
            "actor": actor,
            "reason": reason,
        }
        self.writer.submit_blocking(AuditEvent("model_approval", payload))

    # -- internals -----------------------------------------------------------------

    def _record_durably(self, item: LazyEvent) -> None:
        self.writer.submit_blocking(item)
        if not self.writer.flush(self._durable_timeout_s):
            raise AuditWriterFailed(
                f"the {item.kind} record did not reach the disk within "
                f"{self._durable_timeout_s:g} s",
            )
