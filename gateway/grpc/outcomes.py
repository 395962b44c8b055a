"""riskwire.v1.Scoring/ReportOutcome: a delayed label, joined to its logged prediction.

Thin, like the other servicers: check and convert the request, await the outcome
store (its SQL runs on the store's writer thread, never on the event loop), convert
the joined prediction back. Unlike Score, the method is registered with protobuf's
deserializer and serializer: labels arrive at a trickle next to scoring, and the
native wire parser is for the hot path only. ``unary_errors`` maps the store's
``UnknownTransaction`` (a NOT_FOUND GatewayError) and the checks' INVALID_ARGUMENT.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from gateway.errors import ErrorKind, GatewayError, invalid
from gateway.features.currency import CURRENCIES, to_usd
from gateway.grpc.converters import ARM_NUMBERS, DECISION_NUMBERS, MAX_ID_CHARS, SOURCE_NUMBERS
from gateway.grpc.errors import unary_errors
from gateway.telemetry.outcomes import JoinedOutcome, OutcomeStore
from riskwire.v1 import scoring_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]

MAX_CLOCK_SKEW_S = 3600.0
"""How far past the server's clock a ``reported_at_ms`` may be: clocks differ, a label
from next week is a caller's bug."""


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    """A checked ReportOutcomeRequest, in the store's units."""

    transaction_id: str
    label: bool
    amount_usd: float | None
    reported_at: float
    """Unix epoch seconds."""


def outcome_report(request: pb.ReportOutcomeRequest, now: float) -> OutcomeReport:
    """Check ``request`` and convert it; ``now`` (epoch s) stands in for an unset time.

    Raises:
        GatewayError(INVALID_ARGUMENT): naming the field and the value.
    """
    transaction_id = request.transaction_id
    if not transaction_id:
        raise invalid("transaction_id is required")
    if len(transaction_id) > MAX_ID_CHARS:
        raise invalid(f"transaction_id is longer than {MAX_ID_CHARS} characters")
    amount_usd = None
    if request.HasField("amount_minor"):
        if request.amount_minor < 0:
            raise invalid(f"amount_minor must be >= 0, got {request.amount_minor}")
        if request.currency not in CURRENCIES:
            shown = request.currency or "(empty)"
            raise invalid(
                f"currency must be an ISO 4217 code riskwire knows when amount_minor is set, "
                f"got {shown!r}"
            )
        amount_usd = to_usd(request.amount_minor, request.currency)
    elif request.currency:
        raise invalid(f"currency is {request.currency!r} but amount_minor is not set")
    reported_at_ms = request.reported_at_ms
    if reported_at_ms < 0:
        raise invalid(f"reported_at_ms must be Unix epoch milliseconds, got {reported_at_ms}")
    if reported_at_ms > (now + MAX_CLOCK_SKEW_S) * 1000:
        raise invalid(
            f"reported_at_ms {reported_at_ms} is more than {MAX_CLOCK_SKEW_S:.0f} s after the "
            f"server's clock ({int(now * 1000)}): send Unix epoch milliseconds, UTC"
        )
    return OutcomeReport(
        transaction_id=transaction_id,
        label=request.label,
        amount_usd=amount_usd,
        reported_at=reported_at_ms / 1000 if reported_at_ms else now,
    )


def outcome_response(joined: JoinedOutcome) -> pb.ReportOutcomeResponse:
    prediction = joined.prediction
    return pb.ReportOutcomeResponse(
        transaction_id=joined.transaction_id,
        model_name=prediction.model,
        model_version=str(prediction.version),
        route=prediction.route,
        arm=ARM_NUMBERS[prediction.arm],
        score=prediction.score,
        decision=DECISION_NUMBERS[prediction.decision],
        decision_source=SOURCE_NUMBERS[prediction.source],
        updated=joined.updated,
    )


class OutcomeService:
    """The ReportOutcome method over one outcome store (None: the store is off)."""

    def __init__(self, store: OutcomeStore | None, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    @unary_errors
    async def ReportOutcome(
        self, request: pb.ReportOutcomeRequest, context: Context
    ) -> pb.ReportOutcomeResponse:
        if self._store is None:
            raise GatewayError(
                ErrorKind.FAILED_PRECONDITION,
                "outcome logging is off on this server (outcomes.enabled: false)",
            )
        report = outcome_report(request, self._clock())
        joined = await self._store.report_outcome_async(
            report.transaction_id, report.label, report.amount_usd, report.reported_at
        )
        return outcome_response(joined)


def outcome_method_handler(store: OutcomeStore | None) -> grpc.RpcMethodHandler[Any, Any]:
    """ReportOutcome for the Scoring service's generic handler (protobuf in and out)."""
    return grpc.unary_unary_rpc_method_handler(
        OutcomeService(store).ReportOutcome,
        request_deserializer=pb.ReportOutcomeRequest.FromString,
        response_serializer=pb.ReportOutcomeResponse.SerializeToString,
    )
