"""The differential oracle for the native wire parser: native against protobuf (upb).

`check(data)` parses `data` as a ScoreRequest and as a ScoreBatchRequest with
`gateway._native._encoder.WireParser` and with the generated protobuf classes, and
raises `Mismatch` where they disagree:

- one accepts and the other refuses, except where native refuses at one of its own
  documented limits (nesting deeper than 100, more than max_transactions transactions,
  more than max_map_entries map entries), which protobuf does not have;
- both accept and any field differs (floats compared bit for bit, NaN equal to NaN),
  including transaction_ids(), routing_keys() and first_invalid() against the
  reference checks in gateway/grpc/converters.py;
- a tightly limited parser gives a different result from a roomy one, other than a
  limit error, or lets more than max_transactions through;
- the native encoder's rows differ from the reference encoder's bit for bit, or only
  one of them raises UnknownCurrencyError (or they name different currencies);
- the audit record each transaction would get (a decision built from its fuzzed
  strings and numbers) differs between native sealing (gateway._native._audit) and
  the Python reference, byte for byte, or only one of them declines it.

Any exception from native other than WireError propagates as is (a WireError must
also read "<path>: <problem> at byte <offset>"). The fuzz target
(tests/fuzz/fuzz_wire.py) only wires atheris to `check`; the regression replay
(tests/native/test_fuzz_regressions.py) runs it over the committed corpora. Nothing
here imports atheris.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from gateway.audit import records
from gateway.audit.records import GENESIS, EntityHasher
from gateway.dataplane import ScoreResult
from gateway.decisions import DecisionSource
from gateway.errors import GatewayError
from gateway.explain import Reason
from gateway.features import dispatch
from gateway.features.currency import CURRENCIES, UnknownCurrencyError
from gateway.features.spec import FeatureSpec, parse_feature_spec
from gateway.features.transactions import CHANNEL_VALUES, TransactionSource
from gateway.grpc.converters import (
    CHANNEL_NUMBERS,
    MAX_ID_CHARS,
    check_fields,
    fields_of,
    routing_keys,
)
from riskwire.v1 import scoring_pb2 as pb
from router.routes import ArmRole, Decision
from tests.native.audit_reference import direct_payload, python_seal, python_seal_lines

if TYPE_CHECKING:
    from gateway._native import _encoder

ROOMY_TRANSACTIONS = 1 << 20
"""max_transactions of the parser compared with protobuf: above anything a fuzz input
of a few kilobytes holds, so only the depth limit can refuse valid protobuf."""

TIGHT_TRANSACTIONS = 3
TIGHT_MAP_ENTRIES = 3
"""Limits of the second parser, small enough that fuzz inputs cross them often."""

LIMIT_ERROR = re.compile(r"nesting deeper than \d+|more than \d+ entries")
"""The WireError problems that are native-only limits, not malformed input."""

WIRE_ERROR_FORM = re.compile(r"^(?P<path>\S[^:]*): (?P<problem>.+) at byte (?P<offset>\d+)$", re.S)
"""wire.hpp: what() is "<field path>: <problem> at byte <offset>"."""

# Reads every kind of source (int, tenure, amount, amount_usd, numeric_extra, str,
# channel, categorical_extra) through every transform, like benchmarks/micro/encode.py's
# SPEC; the map keys and vocabularies are in tests/fuzz/wire.dict.
_FEATURES: list[dict[str, Any]] = [
    {"name": "amount", "transform": "identity", "source": "amount", "default": -1.0},
    {"name": "amount_usd", "transform": "log1p", "source": "amount_usd"},
    {"name": "minor", "transform": "identity", "source": "amount_minor"},
    {
        "name": "tenure",
        "transform": "standardize",
        "source": "customer_tenure_days",
        "mean": 1600.0,
        "std": 1700.0,
        "default": -2.5,
    },
    {"name": "ratio", "transform": "log1p", "source": "numeric_extras.ratio"},
    {"name": "count", "transform": "identity", "source": "numeric_extras.count", "default": 7.0},
    {
        "name": "distance",
        "transform": "bucketize",
        "source": "numeric_extras.km",
        "edges": [-1.0, 0.0, 50.0, 3000.0],
        "default": -1.0,
    },
    {"name": "hour", "transform": "cyclical", "source": "timestamp_ms", "period": "hour_of_day"},
    {"name": "day", "transform": "cyclical", "source": "timestamp_ms", "period": "day_of_week"},
    {
        "name": "channel",
        "transform": "one_hot",
        "source": "channel",
        "vocabulary": ["ECOMMERCE", "CARD_PRESENT", "ATM"],
    },
    {
        "name": "entry",
        "transform": "one_hot",
        "source": "entry_mode",
        "vocabulary": ["CHIP", "MANUAL", "\u00e9"],
    },
    {
        "name": "card_type",
        "transform": "one_hot",
        "source": "categorical_extras.card_type",
        "vocabulary": ["DEBIT", "CREDIT"],
    },
    {"name": "merchant", "transform": "hash_bucket", "source": "merchant_id", "buckets": 64},
    {"name": "device", "transform": "hash_bucket", "source": "device_id", "buckets": 7},
    {"name": "geo", "transform": "differs", "sources": ["country", "ip_country"]},
    {
        "name": "abroad",
        "transform": "differs",
        "sources": ["ip_country", "categorical_extras.home"],
    },
]
_AMOUNT_SOURCES = frozenset({"amount", "amount_usd"})

SPEC: FeatureSpec = parse_feature_spec({"version": "fuzz-wire-1", "features": _FEATURES})
"""Every kind of source: encoding raises UnknownCurrencyError for unknown currencies."""

SPEC_NO_AMOUNT: FeatureSpec = parse_feature_spec(
    {
        "version": "fuzz-wire-1-no-amount",
        "features": [f for f in _FEATURES if f.get("source") not in _AMOUNT_SOURCES],
    }
)
"""The same minus the amount sources, so the rows of any currency get compared."""


class Mismatch(AssertionError):
    """Native and protobuf (or the native and reference encoders) disagree on an input."""


@dataclass(frozen=True)
class _EntryPoint:
    name: str
    native: Callable[[_encoder.WireParser, bytes], _encoder.ParsedBatch]
    protobuf: Callable[[bytes], pb.ScoreRequest | pb.ScoreBatchRequest]
    transactions: Callable[[Any], Sequence[pb.Transaction]]


ENTRY_POINTS = (
    _EntryPoint(
        "ScoreRequest",
        lambda parser, data: parser.parse_score_request(data),
        pb.ScoreRequest.FromString,
        lambda request: [request.transaction],
    ),
    _EntryPoint(
        "ScoreBatchRequest",
        lambda parser, data: parser.parse_score_batch_request(data),
        pb.ScoreBatchRequest.FromString,
        lambda request: list(request.transactions),
    ),
)


class _Native:
    """The native parsers and encoders, built once per process."""

    def __init__(self) -> None:
        error = dispatch.native_error()
        if error is not None:
            raise error
        from gateway._native import _encoder

        self.wire_error: type[Exception] = _encoder.WireError
        self.roomy = _encoder.WireParser(CHANNEL_VALUES, ROOMY_TRANSACTIONS)
        self.tight = _encoder.WireParser(CHANNEL_VALUES, TIGHT_TRANSACTIONS, TIGHT_MAP_ENTRIES)
        self.encoders = [
            (dispatch.make_encoder(spec, "native"), dispatch.make_encoder(spec, "python"))
            for spec in (SPEC, SPEC_NO_AMOUNT)
        ]
        self.currencies = frozenset(CURRENCIES)


@functools.cache
def _native() -> _Native:
    return _Native()


def check(data: bytes) -> None:
    """Raises Mismatch when native and protobuf disagree on `data` (see the module
    docstring); any other exception is a native failure too."""
    for entry in ENTRY_POINTS:
        try:
            _check_entry(entry, data)
        except Exception as exc:
            exc.add_note(f"entry point {entry.name}, input ({len(data)} bytes) {data[:256].hex()}")
            raise


def _check_entry(entry: _EntryPoint, data: bytes) -> None:
    native = _native()
    parsed = _parse_native(native, entry, native.roomy, data)
    try:
        request = entry.protobuf(data)
    except DecodeError as exc:
        if isinstance(parsed, str):
            pass  # both refuse
        else:
            raise Mismatch(f"native accepts what protobuf refuses ({exc})") from None
    else:
        if isinstance(parsed, str):
            if not LIMIT_ERROR.search(parsed):
                raise Mismatch(f"native refuses valid protobuf: {parsed}")
        else:
            _same((parsed.explain, parsed.route), (request.explain, request.route), "options")
            _compare(native, parsed, entry.transactions(request))

    tight = _parse_native(native, entry, native.tight, data)
    if isinstance(tight, str):
        if not (isinstance(parsed, str) or LIMIT_ERROR.search(tight)):
            raise Mismatch(f"the tight parser refuses what the roomy one accepts: {tight}")
    elif isinstance(parsed, str):
        raise Mismatch(f"the tight parser accepts what the roomy one refuses ({parsed})")
    else:
        if entry.name == "ScoreBatchRequest" and len(tight) > TIGHT_TRANSACTIONS:
            raise Mismatch(f"{len(tight)} transactions got past max_transactions")
        _same_batches(parsed, tight, "tight against roomy")


def _parse_native(
    native: _Native, entry: _EntryPoint, parser: _encoder.WireParser, data: bytes
) -> _encoder.ParsedBatch | str:
    """The ParsedBatch, or the WireError's message (checked for its form)."""
    try:
        return entry.native(parser, data)
    except native.wire_error as exc:
        message = str(exc)
        match = WIRE_ERROR_FORM.match(message)
        if match is None or int(match["offset"]) > len(data):
            raise Mismatch(f"WireError message out of form: {message!r}") from exc
        return message


def _compare(native: _Native, parsed: _encoder.ParsedBatch, txns: Sequence[pb.Transaction]) -> None:
    if len(parsed) != len(txns):
        raise Mismatch(f"{len(parsed)} transactions, protobuf has {len(txns)}")
    reference = [fields_of(t) for t in txns]
    for i, expected in enumerate(reference):
        got = parsed.transaction(i)
        if not _equal_fields(got, expected):
            _same(got, expected, f"transaction({i})")
    # Lists of str and of dicts of str: == is exact (a str equals nothing but a str).
    ids, want_ids = parsed.transaction_ids(), [t.transaction_id for t in txns]
    if ids != want_ids:
        _same(ids, want_ids, "transaction_ids()")
    keys, want_keys = parsed.routing_keys(), [routing_keys(t) for t in txns]
    if keys != want_keys:
        _same(keys, want_keys, "routing_keys()")
    bad = parsed.first_invalid(native.currencies, CHANNEL_NUMBERS, MAX_ID_CHARS)
    _same(bad, _first_invalid(reference), "first_invalid()")
    _compare_encoders(native, parsed, txns)
    _compare_audit(parsed, txns, keys)


AUDIT_KEY = b"fuzz-audit-key-0123456789"


def _compare_audit(
    parsed: _encoder.ParsedBatch, txns: Sequence[pb.Transaction], keys: list[dict[str, str]]
) -> None:
    """Each transaction's decision record, sealed natively and by the reference: its
    ids, strings and numbers come from the input (route, model and reason codes from
    fields the fuzzer fills)."""
    native = records.NATIVE
    if native is None:
        return
    hasher = EntityHasher(AUDIT_KEY)
    payloads: list[bytes] = []
    for i, t in enumerate(txns):
        inputs = parsed.amount_and_currency(i)
        _same(inputs, (t.amount_minor, t.currency), f"amount_and_currency({i})")
        extras = list(t.numeric_extras.values())
        result = ScoreResult(
            transaction_id=t.transaction_id,
            score=extras[0] if extras else t.amount_minor / 7.0,
            decision=Decision.REVIEW,
            model_name=t.merchant_id,
            model_version=t.timestamp_ms,
            arm=ArmRole.CHALLENGER,
            source=DecisionSource.MODEL,
            route=t.device_id,
            config_version=t.customer_tenure_days,
            reason_codes=tuple(
                Reason(code, value, extras[j % len(extras)] if extras else 0.0, "")
                for j, (code, value) in enumerate(t.categorical_extras.items())
            ),
        )
        got = native.decision_payload(hasher.native, result, keys[i], *inputs, t.timestamp_ms)
        want = direct_payload(hasher, result, keys[i], *inputs, t.timestamp_ms)
        _same(got, want, f"audit decision_payload({i})")
        if got is None:
            continue
        payload = records.CanonicalJSON(got)
        sealed = native.seal_line("fuzz", "decision", payload, GENESIS, i, t.timestamp_ms, 0)
        reference = python_seal(
            seq=i,
            ts_ms=t.timestamp_ms,
            kind="decision",
            worker=0,
            key_id="fuzz",
            payload=payload,
            prev=GENESIS,
        )
        _same(sealed, reference, f"audit seal_line({i})")
        payloads.append(got)
    # The batch's records chained in one call, as the writer seals an item, against
    # the reference record by record.
    ts_ms = txns[0].timestamp_ms if txns else 0
    chained = native.seal_lines("fuzz", "decision", payloads, GENESIS, 1, ts_ms, 0)
    reference = python_seal_lines(
        key_id="fuzz",
        kind="decision",
        payloads=payloads,
        prev=GENESIS,
        seq=1,
        ts_ms=ts_ms,
        worker=0,
    )
    _same(chained, reference, "audit seal_lines")


def _first_invalid(reference: Sequence[Mapping[str, Any]]) -> int:
    for i, fields in enumerate(reference):
        try:
            check_fields(fields, f"transactions[{i}]")
        except GatewayError:
            return i
    return -1


def _compare_encoders(
    native: _Native, parsed: _encoder.ParsedBatch, txns: Sequence[pb.Transaction]
) -> None:
    known = [i for i, t in enumerate(txns) if t.currency in native.currencies]
    for (native_encoder, python_encoder), spec in zip(
        native.encoders, (SPEC, SPEC_NO_AMOUNT), strict=True
    ):
        selections: list[list[int] | None] = [None]
        if spec is SPEC and 0 < len(known) < len(txns):
            selections.append(known)  # the rows= path, and values despite unknown ones
        for rows in selections:
            got = _encode(native_encoder, parsed, rows)
            want = _encode(python_encoder, txns, rows)
            where = f"encode({spec.version}, rows={'all' if rows is None else rows[:8]})"
            if isinstance(got, str) or isinstance(want, str):
                _same(got, want, where)
            else:
                _same_rows(got, want, where)


def _encode(
    encoder: dispatch.Encoder, txns: TransactionSource, rows: list[int] | None
) -> npt.NDArray[np.float32] | str:
    """The rows, or "UnknownCurrencyError(<currency>)"."""
    try:
        return encoder.encode_transactions(txns, rows=rows)
    except UnknownCurrencyError as exc:
        return f"UnknownCurrencyError({exc.currency!r})"


def _same_rows(got: npt.NDArray[np.float32], want: npt.NDArray[np.float32], where: str) -> None:
    if got.shape != want.shape:
        raise Mismatch(f"{where}: shape {got.shape}, reference {want.shape}")
    different = np.argwhere(got.view(np.uint32) != want.view(np.uint32))
    if different.size:
        row, column = (int(v) for v in different[0])
        raise Mismatch(
            f"{where}: {len(different)} values differ, first at row {row} column {column}: "
            f"{got[row, column]!r} against {want[row, column]!r}"
        )


def _same_batches(a: _encoder.ParsedBatch, b: _encoder.ParsedBatch, where: str) -> None:
    _same(len(a), len(b), f"{where}: len")
    _same((a.explain, a.route), (b.explain, b.route), f"{where}: explain, route")
    for i in range(len(a)):
        got, want = a.transaction(i), b.transaction(i)
        if not _equal_fields(got, want):
            _same(got, want, f"{where}: transaction({i})")


def _same(got: object, want: object, where: str) -> None:
    if not _equal(got, want):
        raise Mismatch(f"{where}: native {_show(got)}, reference {_show(want)}")


def _equal_fields(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """`_equal` for transaction(i) dicts, fast where they are equal (the common case):
    == on the dicts, then the types of the fields and the bits of numeric_extras."""
    if got != want:
        return _equal(got, want)  # NaN != NaN: decide slowly
    extras_got, extras_want = got["numeric_extras"], want["numeric_extras"]
    return all(type(got[k]) is type(v) for k, v in want.items()) and all(
        type(v) is float and _bits(v) == _bits(extras_want[k]) for k, v in extras_got.items()
    )


def _equal(a: object, b: object) -> bool:
    """Equal values of equal types; floats bit for bit except that NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        return (math.isnan(a) and math.isnan(b)) or _bits(a) == _bits(b)
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        assert isinstance(b, list | tuple)
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _bits(value: float) -> int:
    bits: int = struct.unpack("<Q", struct.pack("<d", value))[0]
    return bits


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value!r} (0x{_bits(value):016x})"
    text = repr(value)
    return text if len(text) <= 600 else text[:600] + "..."
