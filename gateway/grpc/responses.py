"""ScoreResponse and ScoreBatchResponse wire bytes, native or through protobuf.

A handler that returns bytes skips building protobuf objects. `make_response_writer`
picks the implementation like `dispatch.make_hashing` does: the Cython ResponseWriter
(gateway._native._glue) when it resolves to native, else `PythonResponseWriter`, the
reference, which builds the messages and calls protobuf's SerializeToString().

Both give the same bytes as SerializeToString() and take inputs as protobuf's
constructor does (tests/native/test_response_parity.py):

- a string field takes str (a lone surrogate raises UnicodeEncodeError), bytes holding
  UTF-8 (else UnicodeDecodeError), or None (unset); any other type is a TypeError;
- the score and contributions take what float() takes, written whenever their bits are
  not those of +0.0: -0.0 and NaN (sign and payload kept) are on the wire;
- enums take ints in int32 (unknown numbers too: proto3 enums are open; negative ones
  are 10-byte varints), config_version and server_latency_us ints in [0, 2**64) (or
  objects with __index__, as numpy integers); outside those ranges ValueError, a float,
  str or bool TypeError (protobuf 6 still takes a bool, with a DeprecationWarning).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.features.dispatch import EncoderMode, Implementation, resolve_implementation
from riskwire.v1 import scoring_pb2 as pb

BATCH_RESPONSES_TAG = b"\x0a"  # ScoreBatchResponse.responses: field 1, length-delimited


@dataclass(frozen=True, slots=True)
class ReasonCodeFields:
    """One riskwire.v1.ReasonCode's fields."""

    code: str
    feature: str
    contribution: float
    description: str


class ResponseWriter(Protocol):
    """Writes ScoreResponse and ScoreBatchResponse wire bytes."""

    @property
    def implementation(self) -> Implementation:
        """ "native" or "python": which code runs."""

    def score_response(
        self,
        transaction_id: str,
        score: float,
        decision: int,
        model_name: str,
        model_version: str,
        arm: int,
        decision_source: int,
        route: str,
        config_version: int,
        audit_id: str,
        server_latency_us: int,
        fallback_reason: str,
        reason_codes: Sequence[ReasonCodeFields] = (),
    ) -> bytes:
        """Returns the serialized ScoreResponse (enums as riskwire.v1 numbers).

        Raises:
            ValueError: An enum outside int32 or a uint64 outside [0, 2**64), or a
                string that is not valid Unicode (UnicodeError).
            TypeError: A value of a type the field does not take.
        """

    def score_batch_response(self, responses: Sequence[bytes]) -> bytes:
        """Returns the serialized ScoreBatchResponse holding `responses`, already
        serialized ScoreResponses, in order.

        Raises:
            TypeError: An item is not bytes.
        """


def varint(value: int) -> bytes:
    """The protobuf base-128 varint of `value` in [0, 2**64)."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _refuse_bools(**integers: object) -> None:
    # protobuf 6.33 takes a bool for an integer field with a DeprecationWarning (an
    # error from 7.34 on; where warnings are errors, upb raises a bare "Value out of
    # range: 1" ValueError instead): both writers refuse it now.
    for name, value in integers.items():
        if isinstance(value, bool):
            raise TypeError(f"{name} takes an int, got bool")


class PythonResponseWriter:
    """The reference: builds the protobuf messages and serializes them."""

    implementation: Implementation = "python"

    def score_response(
        self,
        transaction_id: str,
        score: float,
        decision: int,
        model_name: str,
        model_version: str,
        arm: int,
        decision_source: int,
        route: str,
        config_version: int,
        audit_id: str,
        server_latency_us: int,
        fallback_reason: str,
        reason_codes: Sequence[ReasonCodeFields] = (),
    ) -> bytes:
        """Returns the serialized ScoreResponse; see ResponseWriter."""
        integer_types = {type(decision), type(arm), type(decision_source)}
        if bool in integer_types | {type(config_version), type(server_latency_us)}:
            _refuse_bools(
                decision=decision,
                arm=arm,
                decision_source=decision_source,
                config_version=config_version,
                server_latency_us=server_latency_us,
            )
        message = pb.ScoreResponse(
            transaction_id=transaction_id,
            score=score,
            decision=decision,  # type: ignore[arg-type]  # open enum: any int32
            model_name=model_name,
            model_version=model_version,
            arm=arm,  # type: ignore[arg-type]
            decision_source=decision_source,  # type: ignore[arg-type]
            route=route,
            config_version=config_version,
            audit_id=audit_id,
            server_latency_us=server_latency_us,
            fallback_reason=fallback_reason,
        )
        if reason_codes:  # appended when present: an empty list costs a field set
            message.reason_codes.extend(
                pb.ReasonCode(
                    code=rc.code,
                    feature=rc.feature,
                    contribution=rc.contribution,
                    description=rc.description,
                )
                for rc in reason_codes
            )
        return message.SerializeToString()

    def score_batch_response(self, responses: Sequence[bytes]) -> bytes:
        """Returns the serialized ScoreBatchResponse; see ResponseWriter."""
        parts = []
        for i, response in enumerate(responses):
            if not isinstance(response, bytes):
                raise TypeError(
                    f"responses[{i}] must be bytes (an encoded ScoreResponse), "
                    f"got {type(response).__name__}"
                )
            parts.append(BATCH_RESPONSES_TAG + varint(len(response)) + response)
        return b"".join(parts)


def make_response_writer(mode: EncoderMode = "auto") -> ResponseWriter:
    """Returns the writer chosen like `dispatch.make_encoder` chooses the encoder.

    Raises:
        NativeExtensionMissing: `mode` is "native" and the extension cannot be loaded.
    """
    if resolve_implementation(mode) == "native":
        from gateway._native import _glue  # loadable: resolve_implementation checked

        return _glue.ResponseWriter()
    return PythonResponseWriter()
