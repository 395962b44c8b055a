"""Wire messages <-> data-plane types, with the input checks a caller can act on.

Two request paths meet here: the native wire parser's ParsedBatch (gateway/grpc/
requests.py) and protobuf Transactions (the reference path). Both are checked by one
function, `check_fields`, over the same field mapping: `ParsedBatch.transaction(i)`
on the native path, `fields_of(txn)` on the protobuf one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from gateway.dataplane import DecisionSource, ScoreResult, TransactionBatch
from gateway.errors import invalid
from gateway.features.currency import CURRENCIES, to_usd
from gateway.features.transactions import CHANNEL_VALUES
from gateway.grpc.responses import ReasonCodeFields, ResponseWriter
from riskwire.v1 import scoring_pb2 as pb
from router.routes import ArmRole, Decision

MAX_ID_CHARS = 128

DECISION_NUMBERS = {
    Decision.APPROVE: pb.APPROVE,
    Decision.REVIEW: pb.REVIEW,
    Decision.DECLINE: pb.DECLINE,
}
ARM_NUMBERS = {
    ArmRole.CHAMPION: pb.CHAMPION,
    ArmRole.CHALLENGER: pb.CHALLENGER,
    ArmRole.CANARY: pb.CANARY,
}
SOURCE_NUMBERS = {DecisionSource.MODEL: pb.MODEL, DecisionSource.FALLBACK: pb.FALLBACK}
CHANNEL_NUMBERS = frozenset(pb.Channel.values())

_STRING_FIELDS = (
    "transaction_id",
    "account_id",
    "card_id",
    "merchant_id",
    "merchant_category_code",
    "currency",
    "country",
    "entry_mode",
    "device_id",
    "ip_country",
)


def fields_of(txn: pb.Transaction) -> dict[str, Any]:
    """Every field of ``txn`` as plain Python values, as ``ParsedBatch.transaction`` gives
    them: ``customer_tenure_days`` is None when unset, maps are dicts."""
    fields: dict[str, Any] = {name: getattr(txn, name) for name in _STRING_FIELDS}
    fields["amount_minor"] = txn.amount_minor
    fields["timestamp_ms"] = txn.timestamp_ms
    fields["channel"] = txn.channel
    fields["customer_tenure_days"] = (
        txn.customer_tenure_days if txn.HasField("customer_tenure_days") else None
    )
    fields["numeric_extras"] = dict(txn.numeric_extras)
    fields["categorical_extras"] = dict(txn.categorical_extras)
    fields["monitoring_attributes"] = dict(txn.monitoring_attributes)
    return fields


def check_fields(txn: Mapping[str, Any], where: str) -> None:
    """Raise INVALID_ARGUMENT naming the first field that a model cannot use.

    The native parser's ``first_invalid`` applies the same checks in the same order
    (tested equal); this function words the message.

    Args:
        txn: the transaction's fields (``fields_of`` or ``ParsedBatch.transaction``).
        where: its path in the request, e.g. ``transaction`` or ``transactions[3]``.
    """
    transaction_id: str = txn["transaction_id"]
    if not transaction_id:
        raise invalid(f"{where}.transaction_id is required")
    if len(transaction_id) > MAX_ID_CHARS:
        raise invalid(f"{where}.transaction_id is longer than {MAX_ID_CHARS} characters")
    if txn["amount_minor"] < 0:
        raise invalid(f"{where}.amount_minor must be >= 0, got {txn['amount_minor']}")
    if txn["currency"] not in CURRENCIES:
        shown = txn["currency"] or "(empty)"
        raise invalid(f"{where}.currency must be an ISO 4217 code riskwire knows, got {shown!r}")
    if txn["timestamp_ms"] <= 0:
        raise invalid(
            f"{where}.timestamp_ms must be Unix epoch milliseconds, got {txn['timestamp_ms']}"
        )
    if txn["channel"] not in CHANNEL_NUMBERS:
        raise invalid(f"{where}.channel {txn['channel']} is not a known Channel value")
    tenure = txn["customer_tenure_days"]
    if tenure is not None and tenure < 0:
        raise invalid(f"{where}.customer_tenure_days must be >= 0, got {tenure}")
    # Sorted: a map's order on the wire is not its order in a protobuf message.
    for key, value in sorted(txn["numeric_extras"].items()):
        if not math.isfinite(value):
            raise invalid(f"{where}.numeric_extras[{key!r}] must be finite, got {value}")


def routing_keys(txn: pb.Transaction) -> dict[str, str]:
    """What the router reads of one transaction (TransactionBatch.routing_keys)."""
    # Spelled out: a third faster than a loop over the names; a unit test checks that
    # it names every one.
    return {
        "channel": CHANNEL_VALUES.get(txn.channel, ""),
        "account_id": txn.account_id,
        "card_id": txn.card_id,
        "merchant_id": txn.merchant_id,
        "device_id": txn.device_id,
        "transaction_id": txn.transaction_id,
        "country": txn.country,
        "merchant_category_code": txn.merchant_category_code,
    }


def batch_from_transactions(
    txns: Sequence[pb.Transaction], single: bool = False
) -> TransactionBatch:
    """Validate protobuf ``txns`` and turn them into the data plane's batch."""
    items = list(txns)
    for i, txn in enumerate(items):
        check_fields(fields_of(txn), "transaction" if single else f"transactions[{i}]")
    return TransactionBatch(
        transaction_ids=[txn.transaction_id for txn in items],
        routing_keys=[routing_keys(txn) for txn in items],
        transactions=items,
        amounts_usd=lambda: [to_usd(txn.amount_minor, txn.currency) for txn in items],
        monitoring_attributes=lambda: [dict(txn.monitoring_attributes) for txn in items],
    )


def encode_result(writer: ResponseWriter, result: ScoreResult, received_ns: int) -> bytes:
    """ScoreResponse bytes, with the server-side latency measured up to now."""
    return writer.score_response(
        transaction_id=result.transaction_id,
        score=result.score,
        decision=DECISION_NUMBERS[result.decision],
        model_name=result.model_name,
        model_version=str(result.model_version),
        arm=ARM_NUMBERS[result.arm],
        decision_source=SOURCE_NUMBERS[result.source],
        route=result.route,
        config_version=result.config_version,
        audit_id="",
        server_latency_us=(time.perf_counter_ns() - received_ns) // 1000,
        fallback_reason=result.fallback_reason.value if result.fallback_reason else "",
        reason_codes=[
            ReasonCodeFields(r.code, r.feature, r.contribution, r.description)
            for r in result.reason_codes
        ]
        if result.reason_codes
        else (),
    )


def caller_deadline(context: grpc.aio.ServicerContext[object, object]) -> float | None:
    """The call's gRPC deadline as ``time.monotonic()`` seconds, None when unset."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + remaining
