"""Hypothesis strategies and helpers for the native wire parser's tests.

Two sources of requests:
- protobuf messages (`pb_transactions`, `score_batch_requests`): every Transaction field
  with awkward values (NaN, +-inf, extreme and negative ints, empty, non-ASCII and
  astral-plane strings, unset and zero tenure, unknown channel numbers, several map
  keys), serialized by the protobuf library;
- hand-built wire bytes (`raw_score_batch_requests`, `raw_score_requests`): fields in any
  order, repeated, with the wrong wire type, padded varints, unknown fields of every
  wire type (nested groups included) anywhere, map entries missing their key or value or
  holding unknown fields, duplicate map keys, strings that are not UTF-8.

And the expected view of a protobuf message: what `ParsedBatch` must give for it.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from hypothesis import strategies as st

from gateway.features.transactions import CHANNEL_VALUES
from riskwire.v1 import scoring_pb2

Transaction = scoring_pb2.Transaction

STRING_FIELDS = (
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
STRING_NUMBERS = dict(zip(STRING_FIELDS, (1, 2, 3, 4, 5, 7, 8, 10, 12, 13), strict=True))
MAP_NUMBERS = {"numeric_extras": 15, "categorical_extras": 16, "monitoring_attributes": 17}
ROUTING_FIELDS = (
    "account_id",
    "card_id",
    "merchant_id",
    "device_id",
    "transaction_id",
    "country",
    "merchant_category_code",
)
INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
UINT64 = st.integers(0, 2**64 - 1)
CURRENCY_CODES = ("USD", "EUR", "JPY", "BHD", "KWD", "GBP")

# --- wire encoding ----------------------------------------------------------------------

VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32 = range(6)


def varint(value: int, pad: int = 0) -> bytes:
    """The varint of value mod 2**64, with `pad` redundant continuation bytes (as long
    as the result stays within 10 bytes, which upb accepts)."""
    value &= 2**64 - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            break
    pad = min(pad, 10 - len(out))
    if pad > 0:
        out[-1] |= 0x80
        out += b"\x80" * (pad - 1) + b"\x00"
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def len_field(field: int, payload: bytes) -> bytes:
    return tag(field, LEN) + varint(len(payload)) + payload


def varint_field(field: int, value: int, pad: int = 0) -> bytes:
    return tag(field, VARINT) + varint(value, pad)


def double_field(field: int, value: float) -> bytes:
    return tag(field, FIXED64) + struct.pack("<d", value)


def group(field: int, body: bytes = b"") -> bytes:
    return tag(field, START_GROUP) + body + tag(field, END_GROUP)


# --- awkward values ---------------------------------------------------------------------

SPECIAL_DOUBLES = (
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    5e-324,
    1.7976931348623157e308,
    -1.5,
)
doubles = st.one_of(st.floats(), st.sampled_from(SPECIAL_DOUBLES))
# Astral-plane characters (emoji, CJK extension B) take 4 UTF-8 bytes.
strings = st.one_of(
    st.just(""),
    st.text(max_size=8),
    st.sampled_from(
        ["US", "USD", "\u00e9t\u00e9", "\u4e2d\u6587", "a\x00b", "\U0001f600", "\U00020000x"]
    ),
)
INVALID_UTF8 = (
    b"\xff",
    b"\x80",
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",
    b"\xe0\x80\xaf",  # overlong /
    b"\xed\xa0\x80",  # surrogate U+D800
    b"\xed\xbf\xbf",  # surrogate U+DFFF
    b"\xf4\x90\x80\x80",  # U+110000
    b"\xf5\x80\x80\x80",
    b"\xe4\xb8",  # truncated
    b"\xf0\x9f\x98",
    b"a\xc3",
)
EDGE_UTF8 = (
    b"\xed\x9f\xbf",  # U+D7FF
    b"\xee\x80\x80",  # U+E000
    b"\xef\xbf\xbf",  # U+FFFF
    b"\xf0\x90\x80\x80",  # U+10000
    b"\xf4\x8f\xbf\xbf",  # U+10FFFF
    b"\xc2\x80",
)
# Raw string payloads: valid UTF-8 (edge code points included), and ones that mostly are
# not (where protobuf must refuse the whole message, so drawn sparingly).
string_bytes = st.one_of(strings.map(lambda s: s.encode()), st.sampled_from(EDGE_UTF8))
odd_string_bytes = st.one_of(st.sampled_from(INVALID_UTF8), st.binary(min_size=1, max_size=6))


@st.composite
def rarely_odd_string_bytes(draw: st.DrawFn) -> bytes:
    return draw(odd_string_bytes if draw(st.integers(0, 9)) == 0 else string_bytes)


channels = st.one_of(st.sampled_from(sorted(CHANNEL_VALUES)), INT32)


EXTRA_KEYS = ("txn_count_1h", "card_type", "\u00e9", "\u4e2d", "", "\U0001f600")


@st.composite
def pb_transactions(
    draw: st.DrawFn, currencies: tuple[str, ...] = (), words: tuple[str, ...] = ()
) -> Transaction:
    """A protobuf Transaction with every field drawn (strings, ints, maps, tenure).

    `currencies`: the codes to draw from (any string when empty); `words`: more values
    for the string fields (a spec's vocabulary, so one_hot slots get hits).
    """
    values = st.one_of(strings, st.sampled_from(words)) if words else strings
    currency = st.sampled_from(currencies) if currencies else strings
    txn = Transaction(
        amount_minor=draw(st.one_of(st.integers(0, 10**9), INT64)),
        timestamp_ms=draw(st.one_of(st.integers(0, 4 * 10**12), INT64)),
        channel=draw(channels),  # type: ignore[arg-type]
        currency=draw(currency),
        **{field: draw(values) for field in STRING_FIELDS if field != "currency"},
    )
    tenure = draw(st.one_of(st.none(), st.just(0), INT32))
    if tenure is not None:
        txn.customer_tenure_days = tenure
    keys = st.one_of(st.sampled_from(EXTRA_KEYS), strings)
    for key, value in draw(st.dictionaries(keys, doubles, max_size=4)).items():
        txn.numeric_extras[key] = value
    for key, text in draw(st.dictionaries(keys, values, max_size=4)).items():
        txn.categorical_extras[key] = text
    for key, text in draw(st.dictionaries(strings, strings, max_size=2)).items():
        txn.monitoring_attributes[key] = text
    return txn


@st.composite
def score_batch_requests(draw: st.DrawFn) -> scoring_pb2.ScoreBatchRequest:
    return scoring_pb2.ScoreBatchRequest(
        transactions=draw(st.lists(pb_transactions(), max_size=5)),
        explain=draw(st.booleans()),
        route=draw(strings),
    )


@st.composite
def score_requests(draw: st.DrawFn) -> scoring_pb2.ScoreRequest:
    request = scoring_pb2.ScoreRequest(explain=draw(st.booleans()), route=draw(strings))
    if draw(st.booleans()):
        request.transaction.CopyFrom(draw(pb_transactions()))
    return request


# --- hand-built wire bytes --------------------------------------------------------------


@st.composite
def unknown_field(draw: st.DrawFn, depth: int = 0, numbers: tuple[int, ...] = ()) -> bytes:
    """One field of any wire type under a number the message does not declare (or under
    `numbers`, declared ones, where the caller wants wrong wire types); groups nest."""
    number = draw(
        st.one_of(
            st.integers(18, 40),
            st.integers(1000, 2**29 - 1),
            *([st.sampled_from(numbers)] if numbers else []),
        )
    )
    wire_type = draw(st.sampled_from([VARINT, FIXED64, LEN, START_GROUP, FIXED32]))
    if wire_type == VARINT:
        return varint_field(number, draw(UINT64), draw(st.integers(0, 3)))
    if wire_type == FIXED64:
        return tag(number, FIXED64) + draw(st.binary(min_size=8, max_size=8))
    if wire_type == FIXED32:
        return tag(number, FIXED32) + draw(st.binary(min_size=4, max_size=4))
    if wire_type == LEN:
        # Arbitrary bytes, a packed run of varints, or invalid UTF-8: never looked at.
        payload = draw(
            st.one_of(
                st.binary(max_size=8),
                st.lists(UINT64, max_size=4).map(lambda vs: b"".join(varint(v) for v in vs)),
                st.sampled_from(INVALID_UTF8),
            )
        )
        return len_field(number, payload)
    inner = draw(st.lists(unknown_field(depth + 1), max_size=2)) if depth < 3 else []
    return group(number, b"".join(inner))


def _wrong_wire_type(draw: st.DrawFn, number: int, right: int) -> bytes:
    """Field `number` sent with a wire type other than `right`: an unknown field."""
    wire_type = draw(st.sampled_from([w for w in (VARINT, FIXED64, LEN, FIXED32) if w != right]))
    if wire_type == VARINT:
        return varint_field(number, draw(UINT64))
    if wire_type == FIXED64:
        return tag(number, FIXED64) + draw(st.binary(min_size=8, max_size=8))
    if wire_type == FIXED32:
        return tag(number, FIXED32) + draw(st.binary(min_size=4, max_size=4))
    return len_field(number, draw(string_bytes))


@st.composite
def map_entry(draw: st.DrawFn, numeric: bool) -> bytes:
    """One map entry's payload: key and value each absent, present or repeated, shuffled,
    sometimes with an unknown field or a wrong wire type (upb then drops the entry)."""
    keys = st.one_of(st.sampled_from([b"k", b"txn_count_1h", b"\xc3\xa9", b""]), string_bytes)
    chunks: list[bytes] = []
    for _ in range(draw(st.integers(0, 2))):
        chunks.append(len_field(1, draw(keys)))
    for _ in range(draw(st.integers(0, 2))):
        if numeric:
            chunks.append(double_field(2, draw(doubles)))
        else:
            chunks.append(len_field(2, draw(string_bytes)))
    if draw(st.integers(0, 5)) == 0:
        chunks.append(draw(unknown_field(numbers=(1, 2))))
    if draw(st.integers(0, 7)) == 0:
        number = draw(st.sampled_from([1, 2]))
        chunks.append(_wrong_wire_type(draw, number, FIXED64 if numeric and number == 2 else LEN))
    return b"".join(draw(st.permutations(chunks)))


@st.composite
def raw_transaction(draw: st.DrawFn) -> bytes:
    """A Transaction's wire bytes: each field 0-2 times (the last wins), shuffled, with
    wrong wire types, padded varints and unknown fields among them."""
    chunks: list[bytes] = []
    for field, number in STRING_NUMBERS.items():
        for _ in range(draw(st.integers(0, 2))):
            payload = draw(
                st.sampled_from(CURRENCY_CODES).map(str.encode)
                if field == "currency"
                else string_bytes
            )
            chunks.append(len_field(number, payload))
    for number, values in (
        (6, INT64),
        (11, INT64),
        (9, st.one_of(channels, INT64)),
        (14, st.one_of(INT32, INT64)),
    ):
        for _ in range(draw(st.integers(0, 2))):
            chunks.append(varint_field(number, draw(values), draw(st.integers(0, 2))))
    for number in MAP_NUMBERS.values():
        for _ in range(draw(st.integers(0, 3))):
            chunks.append(len_field(number, draw(map_entry(numeric=number == 15))))
    for _ in range(draw(st.integers(0, 3))):
        chunks.append(draw(unknown_field()))
    if draw(st.integers(0, 3)) == 0:
        number = draw(st.sampled_from([1, 6, 9, 11, 14, 15, 16]))
        chunks.append(_wrong_wire_type(draw, number, LEN if number in (1, 15, 16) else VARINT))
    if draw(st.integers(0, 7)) == 0:
        # One string that is probably not UTF-8: in a field, a map key or a map value.
        odd = draw(odd_string_bytes)
        chunks.append(
            draw(
                st.sampled_from(
                    [
                        len_field(draw(st.sampled_from(sorted(STRING_NUMBERS.values()))), odd),
                        len_field(draw(st.sampled_from([15, 16, 17])), len_field(1, odd)),
                        len_field(draw(st.sampled_from([16, 17])), len_field(2, odd)),
                    ]
                )
            )
        )
    return b"".join(draw(st.permutations(chunks)))


@st.composite
def raw_score_batch_requests(draw: st.DrawFn) -> bytes:
    chunks = [len_field(1, draw(raw_transaction())) for _ in range(draw(st.integers(0, 4)))]
    options = [varint_field(2, draw(st.sampled_from([0, 1, 2, 2**63, 2**64 - 1])))] * draw(
        st.integers(0, 2)
    )
    options += [
        len_field(3, draw(rarely_odd_string_bytes())) for _ in range(draw(st.integers(0, 2)))
    ]
    options += [draw(unknown_field(numbers=(1, 2, 3))) for _ in range(draw(st.integers(0, 3)))]
    # Options anywhere, but the transactions keep their order (their index is their id).
    for option in options:
        chunks.insert(draw(st.integers(0, len(chunks))), option)
    return b"".join(chunks)


@st.composite
def raw_score_requests(draw: st.DrawFn) -> bytes:
    """A ScoreRequest, its `transaction` 0-3 times: protobuf merges the occurrences."""
    chunks = [len_field(1, draw(raw_transaction())) for _ in range(draw(st.integers(0, 3)))]
    chunks += [varint_field(2, draw(UINT64)) for _ in range(draw(st.integers(0, 1)))]
    chunks += [
        len_field(3, draw(rarely_odd_string_bytes())) for _ in range(draw(st.integers(0, 1)))
    ]
    chunks += [draw(unknown_field(numbers=(1, 2, 3))) for _ in range(draw(st.integers(0, 2)))]
    return b"".join(draw(st.permutations(chunks)))


# --- what ParsedBatch must give ---------------------------------------------------------


def expected_fields(txn: Transaction) -> dict[str, Any]:
    """Every field of a protobuf Transaction as ParsedBatch.transaction gives it."""
    fields: dict[str, Any] = {name: getattr(txn, name) for name in STRING_FIELDS}
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


def expected_routing_keys(txn: Transaction) -> dict[str, str]:
    keys = {"channel": CHANNEL_VALUES.get(txn.channel, "")}
    keys.update({name: getattr(txn, name) for name in ROUTING_FIELDS})
    return keys


def float_bits(value: float) -> int:
    return int.from_bytes(struct.pack("<d", value), "little")


def assert_fields_equal(actual: dict[str, object], expected: dict[str, Any]) -> None:
    """Equal field by field; floats as bit patterns (NaN == NaN, -0.0 != 0.0)."""
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        got = actual[name]
        if name == "numeric_extras":
            assert isinstance(got, dict)
            assert got.keys() == value.keys(), name
            for key, number in value.items():
                assert type(got[key]) is float, (name, key)
                assert float_bits(got[key]) == float_bits(number), (name, key, got[key], number)
        else:
            assert type(got) is type(value), (name, got, value)
            assert got == value, (name, got, value)
