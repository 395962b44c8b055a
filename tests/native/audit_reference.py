"""The Python reference of native audit sealing, as the parity tests and the wire fuzz
oracle (tests/fuzz/wire_check.py) both hold gateway._native._audit to it."""

from __future__ import annotations

from typing import Any

from gateway.audit import records
from gateway.audit.records import EntityHasher, seal, seal_lines
from gateway.audit.sink import decision_json, entity_ids
from gateway.dataplane import ScoreResult


def direct_payload(
    hasher: EntityHasher,
    result: ScoreResult,
    keys: Any,
    amount: Any,
    currency: Any,
    latency_us: Any,
) -> bytes | None:
    """What DecisionRecords.expand writes on its direct path: None where it takes
    another (decision_json declines, or hashing an id raises: an error record)."""
    try:
        ids = entity_ids(hasher, result, keys)
    except (AttributeError, UnicodeEncodeError):
        return None
    direct = decision_json(result, ids, amount, currency, keys, latency_us)
    return None if direct is None else bytes(direct)


def python_seal(**fields: Any) -> tuple[str, bytes]:
    """records.seal(**fields) with the native module out of the way (raises as it does)."""
    saved, records.NATIVE = records.NATIVE, None
    try:
        return seal(**fields)
    finally:
        records.NATIVE = saved


def python_seal_lines(**fields: Any) -> tuple[str, bytes, list[int]]:
    """records.seal_lines(**fields) with the native module out of the way: python_seal
    over the payloads, chained (raises as it does)."""
    saved, records.NATIVE = records.NATIVE, None
    try:
        return seal_lines(**fields)
    finally:
        records.NATIVE = saved
