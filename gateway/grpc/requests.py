"""Request bytes -> the data plane's TransactionBatch, with no protobuf object on the
native path.

The Scoring handlers are registered without a deserializer (scoring.py), so they get
the frame's bytes. `NativeRequestParser` reads them with the C++ wire parser
(native/cpp/wire.hpp): the transactions stay views into the bytes until the C++
encoder reads them. `ProtobufRequestParser` is the reference: the protobuf library
parses, and the same checks run over `fields_of` each transaction. Both give equal
batches and equal errors where the input is valid protobuf (tests/native/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from google.protobuf.message import DecodeError, Message

from gateway.dataplane import ScoreOptions, TransactionBatch, check_batch_size
from gateway.errors import invalid
from gateway.features.currency import CURRENCIES, UnknownCurrencyError
from gateway.features.dispatch import EncoderMode, Implementation, resolve_implementation
from gateway.features.transactions import CHANNEL_VALUES, CURRENCY_SCALES
from gateway.grpc.converters import (
    CHANNEL_NUMBERS,
    MAX_ID_CHARS,
    batch_from_transactions,
    check_fields,
)
from riskwire.v1 import scoring_pb2 as pb

if TYPE_CHECKING:
    from gateway._native import _encoder


@dataclass(frozen=True, slots=True)
class ScoringRequest:
    """A parsed, validated Score or ScoreBatch request."""

    batch: TransactionBatch
    options: ScoreOptions


class RequestParser(Protocol):
    """Parses Score and ScoreBatch request frames; errors are INVALID_ARGUMENT."""

    implementation: Implementation

    def score_request(self, data: bytes) -> ScoringRequest:
        """A ScoreRequest frame: a batch of one transaction, realtime options."""

    def score_batch_request(self, data: bytes) -> ScoringRequest:
        """A ScoreBatchRequest frame: at least one, at most max_batch_transactions."""


class ProtobufRequestParser:
    """The reference: protobuf's own parser, then `check_fields` per transaction."""

    implementation: Implementation = "python"

    def __init__(self, max_batch_transactions: int) -> None:
        self._max_batch = max_batch_transactions

    def score_request(self, data: bytes) -> ScoringRequest:
        request = _parse(pb.ScoreRequest, data)
        batch = batch_from_transactions([request.transaction], single=True)
        return ScoringRequest(batch, ScoreOptions(explain=request.explain, route=request.route))

    def score_batch_request(self, data: bytes) -> ScoringRequest:
        request = _parse(pb.ScoreBatchRequest, data)
        check_batch_size(len(request.transactions), self._max_batch)
        batch = batch_from_transactions(request.transactions)
        options = ScoreOptions(explain=request.explain, route=request.route, realtime=False)
        return ScoringRequest(batch, options)


M = TypeVar("M", bound=Message)


def _parse(message: type[M], data: bytes) -> M:
    try:
        return message.FromString(data)
    except DecodeError as exc:
        raise invalid(f"{message.DESCRIPTOR.name}: not a valid message ({exc})") from exc


class NativeRequestParser:
    """The C++ wire parser; the batch's transactions are its ParsedBatch."""

    implementation: Implementation = "native"

    def __init__(self, max_batch_transactions: int) -> None:
        from gateway._native import _encoder  # only where native resolved

        self._max_batch = max_batch_transactions
        self._wire_error = _encoder.WireError
        self._parser = _encoder.WireParser(CHANNEL_VALUES, max_batch_transactions)
        self._currencies = frozenset(CURRENCIES)
        # For routes that match on amount_usd: the encoders' own reading of the amount.
        self._amounts = _encoder.InputReader(
            [("amount_usd", "amount_minor")],
            [],
            CURRENCY_SCALES,
            CHANNEL_VALUES,
            UnknownCurrencyError,
        )

    def score_request(self, data: bytes) -> ScoringRequest:
        try:
            parsed = self._parser.parse_score_request(data)
        except self._wire_error as exc:
            raise invalid(str(exc)) from exc
        batch = self._batch(parsed, single=True)
        return ScoringRequest(batch, ScoreOptions(explain=parsed.explain, route=parsed.route))

    def score_batch_request(self, data: bytes) -> ScoringRequest:
        try:
            parsed = self._parser.parse_score_batch_request(data)
        except self._wire_error as exc:
            raise invalid(str(exc)) from exc
        # The parser already refused more than max_batch_transactions while reading.
        check_batch_size(len(parsed), self._max_batch)
        batch = self._batch(parsed, single=False)
        options = ScoreOptions(explain=parsed.explain, route=parsed.route, realtime=False)
        return ScoringRequest(batch, options)

    def _batch(self, parsed: _encoder.ParsedBatch, single: bool) -> TransactionBatch:
        bad = parsed.first_invalid(self._currencies, CHANNEL_NUMBERS, MAX_ID_CHARS)
        if bad >= 0:
            where = "transaction" if single else f"transactions[{bad}]"
            check_fields(parsed.transaction(bad), where)
            # check_fields words what first_invalid found; both apply the same checks.
            raise AssertionError(f"native and reference checks disagree on transaction {bad}")
        amounts = self._amounts
        return TransactionBatch(
            transaction_ids=parsed.transaction_ids(),
            routing_keys=parsed.routing_keys(),
            transactions=parsed,
            amounts_usd=lambda: amounts.read(parsed)[0][0].tolist(),
            monitoring_attributes=parsed.monitoring_attributes,
        )


def make_request_parser(mode: EncoderMode, max_batch_transactions: int) -> RequestParser:
    """The native parser where `mode` resolves to native, else the protobuf reference."""
    if resolve_implementation(mode) == "native":
        return NativeRequestParser(max_batch_transactions)
    return ProtobufRequestParser(max_batch_transactions)
