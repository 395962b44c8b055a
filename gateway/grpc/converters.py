"""Wire messages <-> data-plane types, with the input checks a caller can act on."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import grpc

from gateway.dataplane import DecisionSource, ScoreResult, TransactionBatch
from gateway.errors import invalid
from gateway.features.currency import CURRENCIES
from gateway.features.transactions import CHANNEL_VALUES
from riskwire.v1 import scoring_pb2 as pb
from router.routes import ArmRole, Decision

MAX_ID_CHARS = 128

_DECISION = {
    Decision.APPROVE: pb.APPROVE,
    Decision.REVIEW: pb.REVIEW,
    Decision.DECLINE: pb.DECLINE,
}
_ARM = {ArmRole.CHAMPION: pb.CHAMPION, ArmRole.CHALLENGER: pb.CHALLENGER, ArmRole.CANARY: pb.CANARY}
_SOURCE = {DecisionSource.MODEL: pb.MODEL, DecisionSource.FALLBACK: pb.FALLBACK}
_CHANNELS = frozenset(pb.Channel.values())


def validate_transaction(txn: pb.Transaction, where: str) -> None:
    """Raise INVALID_ARGUMENT naming the first field that a model cannot use.

    Args:
        txn: the transaction as received.
        where: its path in the request, e.g. ``transaction`` or ``transactions[3]``.
    """
    if not txn.transaction_id:
        raise invalid(f"{where}.transaction_id is required")
    if len(txn.transaction_id) > MAX_ID_CHARS:
        raise invalid(f"{where}.transaction_id is longer than {MAX_ID_CHARS} characters")
    if txn.amount_minor < 0:
        raise invalid(f"{where}.amount_minor must be >= 0, got {txn.amount_minor}")
    if txn.currency not in CURRENCIES:
        shown = txn.currency or "(empty)"
        raise invalid(f"{where}.currency must be an ISO 4217 code riskwire knows, got {shown!r}")
    if txn.timestamp_ms <= 0:
        raise invalid(
            f"{where}.timestamp_ms must be Unix epoch milliseconds, got {txn.timestamp_ms}"
        )
    if txn.channel not in _CHANNELS:
        raise invalid(f"{where}.channel {txn.channel} is not a known Channel value")
    if txn.HasField("customer_tenure_days") and txn.customer_tenure_days < 0:
        raise invalid(f"{where}.customer_tenure_days must be >= 0, got {txn.customer_tenure_days}")
    for key, value in txn.numeric_extras.items():
        if not math.isfinite(value):
            raise invalid(f"{where}.numeric_extras[{key!r}] must be finite, got {value}")


def routing_keys(txn: pb.Transaction) -> dict[str, str]:
    """What the router reads of one transaction (TransactionBatch.routing_keys)."""
    # Spelled out: a third faster than a loop over STICKY_KEYS; a unit test checks that
    # it names every one.
    return {
        "channel": CHANNEL_VALUES.get(txn.channel, ""),
        "account_id": txn.account_id,
        "card_id": txn.card_id,
        "merchant_id": txn.merchant_id,
        "device_id": txn.device_id,
        "transaction_id": txn.transaction_id,
    }


def batch_from_transactions(
    txns: Sequence[pb.Transaction], single: bool = False
) -> TransactionBatch:
    """Validate ``txns`` and turn them into the data plane's batch."""
    items = list(txns)
    for i, txn in enumerate(items):
        validate_transaction(txn, "transaction" if single else f"transactions[{i}]")
    return TransactionBatch(
        transaction_ids=[txn.transaction_id for txn in items],
        routing_keys=[routing_keys(txn) for txn in items],
        transactions=items,
    )


def response_from_result(result: ScoreResult, received_ns: int) -> pb.ScoreResponse:
    """A ScoreResponse with the server-side latency measured up to now."""
    return pb.ScoreResponse(
        transaction_id=result.transaction_id,
        score=result.score,
        decision=_DECISION[result.decision],
        model_name=result.model_name,
        model_version=str(result.model_version),
        arm=_ARM[result.arm],
        decision_source=_SOURCE[result.source],
        route=result.route,
        config_version=result.config_version,
        server_latency_us=(time.perf_counter_ns() - received_ns) // 1000,
        fallback_reason=result.fallback_reason.value if result.fallback_reason else "",
    )


def caller_deadline(context: grpc.aio.ServicerContext[object, object]) -> float | None:
    """The call's gRPC deadline as ``time.monotonic()`` seconds, None when unset."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + remaining
