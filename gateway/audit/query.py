"""Reading the audit log: the records of one transaction, one account, one model
version, one time window or one decision, as JSON.

Identifiers are looked up the way they were stored: :func:`hash_entity` with the same
key, so the question ("what happened to account acct-42?") needs the key and the
answer never needs the id in clear. A record made under another key (``key_id``
differs) cannot match an id; :class:`QueryStats` counts those, so that a rotated key
shows up as "n records under other keys" rather than as silence.

Streaming: segments are read line by line and the workers' chains merged by
``ts_ms`` (each chain is already in time order, give or take a few ms between
threads), so memory stays flat however large the log. Reading does not verify the
chain (``riskwire audit verify`` does); lines that do not parse are skipped and
counted.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.audit.chain import Segment, iter_lines, list_segments
from gateway.audit.records import hash_entity, key_id


@dataclass(slots=True)
class QueryStats:
    """What a query read, for the summary a caller prints after the records."""

    scanned: int = 0
    matched: int = 0
    unparsable: int = 0
    other_keys: int = 0
    """Records whose entity hashes were made under a different key (when the query
    filters on an entity id)."""


def query(
    directory: Path,
    key: bytes,
    *,
    transaction_id: str | None = None,
    account: str | None = None,
    card: str | None = None,
    model: str | None = None,
    version: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    decision: str | None = None,
    kinds: Collection[str] | None = None,
    stats: QueryStats | None = None,
) -> Iterator[dict[str, Any]]:
    """The records that match every filter given, in ``ts_ms`` order across workers.

    Args:
        directory: the audit directory.
        key: the keyed-hash secret the records were written with.
        transaction_id, account, card: ids in clear; hashed here with ``key``.
        model, version: the model name and version (decision and shadow records).
        since, until: ``since <= ts < until``; naive datetimes are taken as UTC.
        decision: APPROVE, REVIEW or DECLINE.
        kinds: record kinds to keep; None: every kind.
        stats: filled in as the iterator is consumed.
    """
    stats = stats if stats is not None else QueryStats()
    wanted: dict[str, str] = {}
    for field_name, value in (
        ("transaction_id", transaction_id),
        ("account_id", account),
        ("card_id", card),
    ):
        if value is not None:
            wanted[field_name] = hash_entity(key, value)
    our_key = key_id(key)
    since_ms = _epoch_ms(since) if since is not None else None
    until_ms = _epoch_ms(until) if until is not None else None
    kind_set = frozenset(kinds) if kinds is not None else None
    decision_upper = decision.upper() if decision is not None else None

    chains = [_records(segments, stats) for segments in list_segments(directory).values()]
    for record in heapq.merge(*chains, key=lambda r: int(r["ts_ms"])):
        stats.scanned += 1
        if kind_set is not None and record["kind"] not in kind_set:
            continue
        ts_ms = record["ts_ms"]
        if since_ms is not None and ts_ms < since_ms:
            continue
        if until_ms is not None and ts_ms >= until_ms:
            continue
        payload = record["payload"]
        if wanted and any(payload.get(name) != hashed for name, hashed in wanted.items()):
            if record["key_id"] != our_key and any(name in payload for name in wanted):
                stats.other_keys += 1
            continue
        if model is not None and payload.get("model") != model:
            continue
        if version is not None and payload.get("version") != version:
            continue
        if decision_upper is not None and payload.get("decision") != decision_upper:
            continue
        stats.matched += 1
        yield record


def _records(segments: list[Segment], stats: QueryStats) -> Iterator[dict[str, Any]]:
    for segment in segments:
        for _, _, line in iter_lines(segment.path):
            try:
                record = json.loads(line)
            except ValueError:
                stats.unparsable += 1
                continue
            if not (
                isinstance(record, dict)
                and isinstance(record.get("payload"), dict)
                and isinstance(record.get("ts_ms"), int)
                and isinstance(record.get("kind"), str)
            ):
                stats.unparsable += 1
                continue
            yield record


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_time(text: str) -> datetime:
    """ISO 8601 (``2026-11-28T19:00:00Z``; no zone: UTC) or integer epoch milliseconds.

    Raises:
        ValueError: neither.
    """
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 time (2026-11-28T19:00:00Z) or epoch milliseconds"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
