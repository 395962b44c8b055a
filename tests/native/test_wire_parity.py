"""The native wire parser reads requests exactly as the protobuf library does.

gateway._native._encoder.WireParser (native/cpp/wire.hpp) parses ScoreRequest and
ScoreBatchRequest bytes with no protobuf object; Program.encode_parsed encodes its
ParsedBatch through an InputReader (native/cpp/reader.hpp). Checked here:
1. protobuf-serialized requests with awkward values parse to the same fields;
2. hand-built wire bytes (unknown fields of every wire type, nested groups, shuffled and
   repeated fields, merged sub-messages, wrong wire types, odd map entries, invalid
   UTF-8, truncations, byte flips, random bytes): the parser accepts exactly what
   `FromString` accepts, and then gives the same fields;
3. encode_parsed rows are bit-identical to the reference and the Cython encoders;
4. first_invalid agrees with converters.check_fields;
5. errors name the field path and byte offset; limits are refused; nothing crashes.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.features import dispatch, transactions
from gateway.features.currency import CURRENCIES, UnknownCurrencyError
from gateway.features.spec import CATEGORICAL_SOURCES, NUMERIC_SOURCES, FeatureSpec
from gateway.features.transactions import CHANNEL_VALUES
from gateway.grpc.converters import CHANNEL_NUMBERS, MAX_ID_CHARS, check_fields, fields_of
from riskwire.v1 import scoring_pb2
from tests.native import wire_strategies as ws
from tests.native.strategies import (
    EXAMPLES,
    NATIVE_ERROR,
    assert_bit_identical,
    feature_specs,
    needs_native,
    vocabulary_of,
    vocabulary_words,
)

if NATIVE_ERROR is None:
    from gateway._native import _encoder

pytestmark = needs_native

Transaction = scoring_pb2.Transaction
BIG = 10**6  # limits no test input reaches, for the differential tests


@functools.cache
def parser(max_transactions: int = BIG, max_map_entries: int = BIG) -> Any:
    return _encoder.WireParser(CHANNEL_VALUES, max_transactions, max_map_entries)


def assert_batch_equal(parsed: Any, txns: list[Transaction], explain: bool, route: str) -> None:
    assert len(parsed) == len(txns)
    assert parsed.explain is explain
    assert parsed.route == route
    assert parsed.transaction_ids() == [t.transaction_id for t in txns]
    assert parsed.routing_keys() == [ws.expected_routing_keys(t) for t in txns]
    assert parsed.monitoring_attributes() == [dict(t.monitoring_attributes) for t in txns]
    for i, txn in enumerate(txns):
        ws.assert_fields_equal(parsed.transaction(i), ws.expected_fields(txn))
    for index in (len(txns), -1, 2**40):
        with pytest.raises(IndexError):
            parsed.transaction(index)


def check_differential(data: bytes, batch: bool = True) -> bool:
    """Native accepts `data` iff protobuf does, then with equal fields; returns whether
    both accepted it."""
    message = scoring_pb2.ScoreBatchRequest if batch else scoring_pb2.ScoreRequest
    try:
        expected = message.FromString(data)
    except DecodeError:
        expected = None
    parse = parser().parse_score_batch_request if batch else parser().parse_score_request
    try:
        parsed = parse(data)
    except _encoder.WireError as exc:
        assert expected is None, f"native refuses what protobuf accepts: {exc}"
        assert " at byte " in str(exc)
        return False
    assert expected is not None, "native accepts what protobuf refuses"
    if isinstance(expected, scoring_pb2.ScoreBatchRequest):
        txns = list(expected.transactions)
    else:
        txns = [expected.transaction]
    assert_batch_equal(parsed, txns, expected.explain, expected.route)
    return True


# --- 1. protobuf-serialized requests ----------------------------------------------------


@EXAMPLES
@given(ws.score_batch_requests())
def test_serialized_batch_requests_parse_equal(request: scoring_pb2.ScoreBatchRequest) -> None:
    parsed = parser().parse_score_batch_request(request.SerializeToString())
    assert_batch_equal(parsed, list(request.transactions), request.explain, request.route)


@EXAMPLES
@given(ws.score_requests())
def test_serialized_score_requests_parse_equal(request: scoring_pb2.ScoreRequest) -> None:
    parsed = parser().parse_score_request(request.SerializeToString())
    assert_batch_equal(parsed, [request.transaction], request.explain, request.route)


def test_empty_requests() -> None:
    single = parser().parse_score_request(b"")
    assert_batch_equal(single, [Transaction()], False, "")
    batch = parser().parse_score_batch_request(b"")
    assert_batch_equal(batch, [], False, "")
    assert batch.transaction_ids() == [] and batch.routing_keys() == []


def test_any_buffer_is_accepted_and_bytes_are_kept_alive() -> None:
    request = scoring_pb2.ScoreBatchRequest(
        transactions=[Transaction(transaction_id="t\u00e9", currency="EUR")], route="r"
    )
    data = bytearray(request.SerializeToString())
    parsed = parser().parse_score_batch_request(data)
    data[:] = b"\x00" * len(data)  # a copy was parsed: changing the buffer changes nothing
    assert parsed.transaction_ids() == ["t\u00e9"] and parsed.route == "r"
    parsed = parser().parse_score_batch_request(memoryview(request.SerializeToString()))
    assert parsed.transaction(0)["currency"] == "EUR"
    parsed = parser().parse_score_batch_request(request.SerializeToString())
    del request  # ParsedBatch holds the bytes; the views stay valid
    assert parsed.transaction_ids() == ["t\u00e9"]
    with pytest.raises(TypeError):
        parser().parse_score_batch_request("not bytes")
    with pytest.raises(TypeError):
        _encoder.ParsedBatch()


# --- 2. hand-built wire bytes, differential against protobuf ----------------------------


@EXAMPLES
@given(ws.raw_score_batch_requests())
def test_raw_batch_requests_match_protobuf(data: bytes) -> None:
    check_differential(data, batch=True)


@EXAMPLES
@given(ws.raw_score_requests())
def test_raw_score_requests_match_protobuf(data: bytes) -> None:
    check_differential(data, batch=False)


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        ws.score_batch_requests().map(lambda r: r.SerializeToString()),
        ws.raw_score_batch_requests(),
    )
)
def test_every_truncation_matches_protobuf(data: bytes) -> None:
    for end in range(len(data)):
        check_differential(data[:end], batch=True)
        check_differential(data[:end], batch=False)


@EXAMPLES
@given(
    st.one_of(
        ws.score_batch_requests().map(lambda r: r.SerializeToString()),
        ws.raw_score_batch_requests(),
    ),
    st.lists(st.tuples(st.integers(0, 2**16), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_byte_flips_match_protobuf(data: bytes, flips: list[tuple[int, int]]) -> None:
    if not data:
        return
    flipped = bytearray(data)
    for position, mask in flips:
        flipped[position % len(flipped)] ^= mask
    check_differential(bytes(flipped), batch=True)
    check_differential(bytes(flipped), batch=False)


def test_random_bytes_match_protobuf() -> None:
    rng = random.Random(20240607)
    accepted = 0
    for _ in range(10_000):
        data = rng.randbytes(rng.randint(0, 48))
        accepted += check_differential(data, batch=True)
        check_differential(data, batch=False)
    assert accepted > 0  # some random bytes are valid (unknown fields only)


# Fields whose string payload is checked, and how to put `payload` there.
STRING_SITES: dict[str, Any] = {
    **{
        f"transactions[0].{name}": functools.partial(
            lambda number, p: ws.len_field(1, ws.len_field(number, p)), number
        )
        for name, number in ws.STRING_NUMBERS.items()
    },
    "route": lambda p: ws.len_field(3, p),
    "transactions[0].numeric_extras[entry 0].key": lambda p: ws.len_field(
        1, ws.len_field(15, ws.len_field(1, p))
    ),
    "transactions[0].categorical_extras[entry 0].key": lambda p: ws.len_field(
        1, ws.len_field(16, ws.len_field(1, p))
    ),
    "transactions[0].categorical_extras[entry 0].value": lambda p: ws.len_field(
        1, ws.len_field(16, ws.len_field(2, p))
    ),
    "transactions[0].monitoring_attributes[entry 0].value": lambda p: ws.len_field(
        1, ws.len_field(17, ws.len_field(1, b"k") + ws.len_field(2, p))
    ),
}


@pytest.mark.parametrize("site", sorted(STRING_SITES))
@pytest.mark.parametrize("payload", ws.INVALID_UTF8, ids=repr)
def test_invalid_utf8_is_refused_naming_the_field(site: str, payload: bytes) -> None:
    data = STRING_SITES[site](payload)
    with pytest.raises(DecodeError):
        scoring_pb2.ScoreBatchRequest.FromString(data)
    with pytest.raises(_encoder.WireError) as info:
        parser().parse_score_batch_request(data)
    with pytest.raises(UnicodeDecodeError) as python:
        payload.decode()
    # The payload is the last thing in the message: the bad byte's offset follows.
    at = len(data) - len(payload) + python.value.start
    assert str(info.value) == f"ScoreBatchRequest.{site}: invalid UTF-8 at byte {at}"


@pytest.mark.parametrize("payload", ws.EDGE_UTF8, ids=repr)
def test_edge_utf8_is_accepted(payload: bytes) -> None:
    for site in STRING_SITES.values():
        assert check_differential(site(payload))


def test_unknown_fields_in_map_entries_drop_the_entry_like_upb() -> None:
    key = ws.len_field(1, b"k")
    entries = [
        key + ws.double_field(2, 1.5),  # kept
        key + ws.varint_field(2, 7),  # value with the wrong wire type: an unknown field
        key + ws.double_field(2, 2.5) + ws.varint_field(3, 1),  # an unknown field
        key + ws.double_field(2, 3.5) + ws.group(9, ws.group(10)),  # an unknown group
        ws.len_field(1, b"j"),  # no value: 0.0
        ws.double_field(2, 4.5),  # no key: ""
        ws.len_field(1, b"a") + ws.len_field(1, b"b") + ws.double_field(2, 5.5),  # key "b"
    ]
    data = ws.len_field(1, b"".join(ws.len_field(15, e) for e in entries))
    assert check_differential(data)
    fields = parser().parse_score_batch_request(data).transaction(0)
    assert fields["numeric_extras"] == {"k": 1.5, "j": 0.0, "": 4.5, "b": 5.5}


def test_repeated_fields_last_wins_and_transaction_merges() -> None:
    first = ws.len_field(1, b"a") + ws.varint_field(14, 5) + ws.len_field(16, ws.len_field(1, b"k"))
    second = (
        ws.len_field(1, b"b")
        + ws.varint_field(6, 9)
        + ws.len_field(16, ws.len_field(1, b"k") + ws.len_field(2, b"v"))
    )
    data = ws.len_field(1, first) + ws.varint_field(2, 1) + ws.len_field(1, second)
    assert check_differential(data, batch=False)
    fields = parser().parse_score_request(data).transaction(0)
    assert fields["transaction_id"] == "b" and fields["customer_tenure_days"] == 5
    assert fields["amount_minor"] == 9 and fields["categorical_extras"] == {"k": "v"}
    # In a batch each `transactions` entry is its own transaction.
    batch = parser().parse_score_batch_request(data)
    assert batch.transaction_ids() == ["a", "b"] and batch.explain


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (ws.tag(12, 7), "ScoreBatchRequest: invalid wire type 7 (field 12) at byte 0"),
        (ws.tag(12, 6), "ScoreBatchRequest: invalid wire type 6 (field 12) at byte 0"),
        (
            ws.varint_field(2, 1) + ws.len_field(1, ws.tag(6, 0) + b"\x80"),
            "ScoreBatchRequest.transactions[0].amount_minor: truncated varint at byte 5",
        ),
        (
            ws.tag(2, 0) + b"\xff" * 10 + b"\x01",
            "ScoreBatchRequest.explain: varint longer than 10 bytes at byte 1",
        ),
        (ws.tag(0, 0) + b"\x00", "ScoreBatchRequest: field number 0 at byte 0"),
        (b"\x88\x80\x80\x80\x80\x00", "ScoreBatchRequest: tag longer than 5 bytes at byte 0"),
        (b"\x88\x80\x80\x80\x10", "ScoreBatchRequest: tag above 2^32-1 at byte 0"),
        (b"\x88", "ScoreBatchRequest: truncated tag at byte 0"),
        (
            ws.len_field(1, b"") + ws.tag(3, 2) + b"\x05ab",
            "ScoreBatchRequest.route: length 5 exceeds the 2 bytes left at byte 3",
        ),
        (
            ws.len_field(1, b"") + ws.tag(1, 2) + b"\x05ab",
            "ScoreBatchRequest.transactions[1]: length 5 exceeds the 2 bytes left at byte 3",
        ),
        (
            ws.tag(1, 2) + b"\xff\xff\xff\xff\x07",
            "ScoreBatchRequest.transactions[0]: length 2147483647 too large at byte 1",
        ),
        (
            ws.tag(5, 3) + ws.tag(6, 4),
            "ScoreBatchRequest.<field 5>: end-group for field 6 inside the group of field 5 "
            "at byte 1",
        ),
        (
            ws.tag(5, 3) + ws.varint_field(7, 1),
            "ScoreBatchRequest.<field 5>: group without an end-group at byte 0",
        ),
        (
            ws.tag(5, 4),
            "ScoreBatchRequest: end-group for field 5 without a matching start-group at byte 0",
        ),
        (
            ws.len_field(1, ws.len_field(15, ws.tag(2, 1) + b"\x00")),
            "ScoreBatchRequest.transactions[0].numeric_extras[entry 0].value: truncated fixed64 "
            "at byte 5",
        ),
        (
            ws.len_field(1, ws.tag(40, 5) + b"\x00"),
            "ScoreBatchRequest.transactions[0].<field 40>: truncated fixed32 at byte 4",
        ),
    ],
)
def test_error_messages_name_the_field_and_byte(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError):
        scoring_pb2.ScoreBatchRequest.FromString(data)
    with pytest.raises(_encoder.WireError) as info:
        parser().parse_score_batch_request(data)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_score_request_errors_name_its_path() -> None:
    data = ws.len_field(1, ws.tag(6, 0) + b"\x80")
    with pytest.raises(
        _encoder.WireError,
        match=r"^ScoreRequest\.transaction\.amount_minor: "
        r"truncated varint at byte 3$",
    ):
        parser().parse_score_request(data)
    data = ws.len_field(1, ws.len_field(7, b"\xff"))
    with pytest.raises(
        _encoder.WireError,
        match=r"^ScoreRequest\.transaction\.currency: "
        r"invalid UTF-8 at byte 4$",
    ):
        parser().parse_score_request(data)


def nested_groups(count: int) -> bytes:
    return ws.tag(5, 3) * count + ws.tag(5, 4) * count


@pytest.mark.parametrize(
    ("wrap", "deepest"),
    [
        (lambda body: body, 100),  # top level: depth 0
        (lambda body: ws.len_field(1, body), 99),  # in a transaction: depth 1
        (lambda body: ws.len_field(1, ws.len_field(16, body)), 98),  # in a map entry: 2
    ],
)
@pytest.mark.parametrize("batch", [True, False])
def test_depth_limit_is_upbs(wrap: Any, deepest: int, batch: bool) -> None:
    assert check_differential(wrap(nested_groups(deepest)), batch)
    too_deep = wrap(nested_groups(deepest + 1))
    assert not check_differential(too_deep, batch)
    parse = parser().parse_score_batch_request if batch else parser().parse_score_request
    with pytest.raises(_encoder.WireError, match="nesting deeper than 100 at byte"):
        parse(too_deep)


def test_max_transactions() -> None:
    limited = _encoder.WireParser(CHANNEL_VALUES, 2)
    two = ws.len_field(1, ws.len_field(1, b"a")) * 2
    assert len(limited.parse_score_batch_request(two)) == 2
    with pytest.raises(
        _encoder.WireError,
        match=r"^ScoreBatchRequest\.transactions: more than 2 entries at byte 10$",
    ):
        limited.parse_score_batch_request(two + ws.len_field(1, b""))
    with pytest.raises(_encoder.WireError, match="more than 0 entries"):
        _encoder.WireParser(CHANNEL_VALUES, 0).parse_score_batch_request(ws.len_field(1, b""))
    # A ScoreRequest holds one transaction however often it is sent.
    assert len(limited.parse_score_request(two * 3)) == 1


def test_max_map_entries_per_map_per_transaction() -> None:
    limited = _encoder.WireParser(CHANNEL_VALUES, 10, max_map_entries=3)

    def entries(number: int, count: int) -> bytes:
        return b"".join(ws.len_field(number, ws.len_field(1, b"k%d" % i)) for i in range(count))

    full = entries(15, 3) + entries(16, 3) + entries(17, 3)
    parsed = limited.parse_score_batch_request(ws.len_field(1, full) * 2)
    assert len(parsed) == 2 and len(parsed.transaction(1)["numeric_extras"]) == 3
    for number, name in (
        (15, "numeric_extras"),
        (16, "categorical_extras"),
        (17, "monitoring_attributes"),
    ):
        data = ws.len_field(1, full) + ws.len_field(1, entries(number, 4))
        with pytest.raises(
            _encoder.WireError,
            match=rf"^ScoreBatchRequest\.transactions\[1\]\.{name}: more than 3 entries at byte",
        ):
            limited.parse_score_batch_request(data)
    # Duplicate keys count, and a merged ScoreRequest.transaction counts as one.
    with pytest.raises(_encoder.WireError, match="more than 3 entries"):
        limited.parse_score_request(ws.len_field(1, entries(16, 2)) * 2)
    assert (
        _encoder.WireParser(CHANNEL_VALUES, 1)
        .parse_score_request(ws.len_field(1, entries(15, 4096)))
        .transaction(0)["numeric_extras"]
    )


def test_channel_names_of_the_parser() -> None:
    names = {0: "", 1: "WEB", 2**40: "HUGE", -3: "NEG"}
    custom = _encoder.WireParser(names, 10)
    data = b"".join(ws.len_field(1, ws.varint_field(9, c)) for c in (1, -3, 2, 0, 2**40))
    assert [k["channel"] for k in custom.parse_score_batch_request(data).routing_keys()] == [
        "WEB",
        "NEG",
        "",
        "",
        "",
    ]
    with pytest.raises(TypeError):
        _encoder.WireParser({1: 2}, 10)


# --- 3. encode_parsed equals the reference and the Cython encoders ----------------------

ALL_NUMERIC = (
    *sorted(NUMERIC_SOURCES),
    "numeric_extras.txn_count_1h",
    "numeric_extras.\u00e9",
)
ALL_CATEGORICAL = (
    *sorted(CATEGORICAL_SOURCES),
    "categorical_extras.card_type",
    "categorical_extras.\u4e2d",
)
CHANNEL_NAMES = tuple(scoring_pb2.Channel.keys())
CURRENCY_CODES = tuple(sorted(CURRENCIES))
words = st.one_of(
    vocabulary_words,
    st.sampled_from(CHANNEL_NAMES + CURRENCY_CODES + ("US", "CHIP", "\u00e9t\u00e9")),
)
serving_specs = feature_specs(ALL_NUMERIC, ALL_CATEGORICAL, words)


def input_reader(encoder: dispatch.NativeEncoder) -> Any:
    """An InputReader with the plan NativeEncoder gives its Cython TransactionReader."""
    numeric, hashed = encoder.input_sources
    return _encoder.InputReader(
        [transactions.source_read(s) for s in numeric],
        [(*transactions.source_read(s), prefix) for s, prefix in hashed],
        transactions.CURRENCY_SCALES,
        transactions.CHANNEL_VALUES,
        UnknownCurrencyError,
    )


@st.composite
def encode_cases(
    draw: st.DrawFn,
) -> tuple[FeatureSpec, list[Transaction], list[int] | None]:
    spec = draw(serving_specs)
    # Mostly known currencies; now and then one the table lacks.
    currencies = (
        (*CURRENCY_CODES, "XXX", "", "usd") if draw(st.integers(0, 9)) == 0 else CURRENCY_CODES
    )
    txns = draw(st.lists(ws.pb_transactions(currencies, tuple(vocabulary_of(spec))), max_size=12))
    rows: list[int] | None = None
    if draw(st.booleans()):
        rows = draw(st.lists(st.integers(0, len(txns) - 1), max_size=15)) if txns else []
    return spec, txns, rows


def encode_or_error(encode: Any) -> npt.NDArray[np.float32] | str:
    try:
        result: npt.NDArray[np.float32] = encode()
    except UnknownCurrencyError as exc:
        return f"unknown currency {exc.currency!r}"
    return result


@EXAMPLES
@given(encode_cases())
def test_encode_parsed_matches_the_encoders(
    case: tuple[FeatureSpec, list[Transaction], list[int] | None],
) -> None:
    spec, txns, rows = case
    native = dispatch.NativeEncoder(spec)
    python = dispatch.PythonEncoder(spec)
    reader = input_reader(native)
    data = scoring_pb2.ScoreBatchRequest(transactions=txns).SerializeToString()
    parsed = parser().parse_score_batch_request(data)
    selected = txns if rows is None else [txns[i] for i in rows]
    selection = None if rows is None else np.array(rows, dtype=np.int64)

    def encode_parsed() -> npt.NDArray[np.float32]:
        out = np.full((len(selected), spec.width), np.nan, dtype=np.float32)
        native._program.encode_parsed(reader, parsed, selection, out)
        return out

    actual = encode_or_error(encode_parsed)
    for expected in (
        encode_or_error(lambda: python.encode_transactions(selected)),
        encode_or_error(lambda: native.encode_transactions(selected)),
    ):
        if isinstance(expected, str) or isinstance(actual, str):
            assert actual == expected
        else:
            assert_bit_identical(actual, expected)
    # The inputs themselves, before any transform could hide a difference.
    inputs = encode_or_error(lambda: reader.read(parsed, selection))
    reference = encode_or_error(lambda: native.read_inputs(selected))
    if isinstance(inputs, str) or isinstance(reference, str):
        assert inputs == reference
    else:
        for got, want in zip(inputs, reference, strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.flags.c_contiguous
            np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))


WIDE_SPEC = {
    "version": "t",
    "features": [
        {"name": "usd", "transform": "log1p", "source": "amount_usd"},
        {"name": "major", "transform": "identity", "source": "amount"},
        {
            "name": "tenure",
            "transform": "standardize",
            "source": "customer_tenure_days",
            "mean": 800.0,
            "std": 600.0,
        },
        {
            "name": "channel",
            "transform": "one_hot",
            "source": "channel",
            "vocabulary": ["ECOMMERCE", "ATM"],
        },
        {"name": "merchant", "transform": "hash_bucket", "source": "merchant_id", "buckets": 64},
        {
            "name": "hour",
            "transform": "cyclical",
            "source": "timestamp_ms",
            "period": "hour_of_day",
        },
        {"name": "geo", "transform": "differs", "sources": ["country", "ip_country"]},
        {
            "name": "velocity",
            "transform": "identity",
            "source": "numeric_extras.txn_count_1h",
            "default": -1.0,
        },
        {
            "name": "card",
            "transform": "hash_bucket",
            "source": "categorical_extras.card_type",
            "buckets": 7,
        },
    ],
}


def wide_batch(count: int, bad_currency_at: int | None = None) -> list[Transaction]:
    rng = random.Random(count)
    txns = []
    for i in range(count):
        txn = Transaction(
            transaction_id=f"t{i}",
            account_id=f"acct-{rng.randrange(500)}",
            merchant_id=f"m-{rng.randrange(50)}",
            amount_minor=rng.randrange(10**7),
            currency="XXX" if i == bad_currency_at else rng.choice(CURRENCY_CODES),
            country=rng.choice(["US", "FR", ""]),
            ip_country=rng.choice(["US", "DE", ""]),
            channel=rng.choice([0, 1, 2, 4, 99]),  # type: ignore[arg-type]
            timestamp_ms=1_700_000_000_000 + rng.randrange(10**9),
        )
        if rng.random() < 0.7:
            txn.customer_tenure_days = rng.randrange(3000)
        if rng.random() < 0.5:
            txn.numeric_extras["txn_count_1h"] = float(rng.randrange(20))
        txn.categorical_extras["card_type"] = rng.choice(["debit", "credit", ""])
        txns.append(txn)
    return txns


def test_encode_parsed_large_batch_releases_the_gil_and_still_matches() -> None:
    from gateway.features.spec import parse_feature_spec

    spec = parse_feature_spec(WIDE_SPEC)
    native = dispatch.NativeEncoder(spec)
    reader = input_reader(native)
    txns = wide_batch(3000)
    assert len(txns) * spec.width >= 1 << 14  # the GIL-releasing path
    parsed = parser().parse_score_batch_request(
        scoring_pb2.ScoreBatchRequest(transactions=txns).SerializeToString()
    )
    out = np.empty((len(txns), spec.width), dtype=np.float32)
    native._program.encode_parsed(reader, parsed, None, out)
    assert_bit_identical(out, dispatch.PythonEncoder(spec).encode_transactions(txns))
    rows = np.arange(len(txns) - 1, -1, -2, dtype=np.int64)
    out = np.empty((len(rows), spec.width), dtype=np.float32)
    native._program.encode_parsed(reader, parsed, rows, out)
    assert_bit_identical(out, native.encode_transactions([txns[i] for i in rows]))
    # An unknown currency is raised after the GIL comes back, out left alone.
    bad = wide_batch(3000, bad_currency_at=1234)
    parsed = parser().parse_score_batch_request(
        scoring_pb2.ScoreBatchRequest(transactions=bad).SerializeToString()
    )
    out = np.zeros((len(bad), spec.width), dtype=np.float32)
    with pytest.raises(UnknownCurrencyError) as info:
        native._program.encode_parsed(reader, parsed, None, out)
    assert info.value.currency == "XXX" and not out.any()


def test_encode_parsed_checks_its_arguments() -> None:
    from gateway.features.spec import parse_feature_spec

    spec = parse_feature_spec(WIDE_SPEC)
    native = dispatch.NativeEncoder(spec)
    program = native._program
    reader = input_reader(native)
    parsed = parser().parse_score_batch_request(
        scoring_pb2.ScoreBatchRequest(transactions=wide_batch(4)).SerializeToString()
    )
    width = spec.width
    with pytest.raises(ValueError, match=r"out must have shape \(4, "):
        program.encode_parsed(reader, parsed, None, np.empty((3, width), np.float32))
    with pytest.raises(ValueError, match=r"out must have shape \(2, "):
        program.encode_parsed(
            reader, parsed, np.array([0, 1], np.int64), np.empty((4, width), np.float32)
        )
    with pytest.raises(TypeError, match="float32"):
        program.encode_parsed(reader, parsed, None, np.empty((4, width), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        program.encode_parsed(reader, parsed, None, np.empty((4, 2 * width), np.float32)[:, ::2])
    readonly = np.empty((4, width), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        program.encode_parsed(reader, parsed, None, readonly)
    for rows in ([4], [-1], [0, 2**40]):
        with pytest.raises(IndexError, match="out of range for a batch of 4"):
            program.encode_parsed(
                reader, parsed, np.array(rows, np.int64), np.empty((len(rows), width), np.float32)
            )
        with pytest.raises(IndexError):
            reader.read(parsed, np.array(rows, np.int64))
    with pytest.raises(TypeError, match="int64"):
        program.encode_parsed(
            reader, parsed, np.array([0], np.int32), np.empty((1, width), np.float32)
        )
    with pytest.raises(TypeError):
        program.encode_parsed(reader, parsed, [0], np.empty((1, width), np.float32))
    other = input_reader(
        dispatch.NativeEncoder(
            parse_feature_spec(
                {
                    "version": "t",
                    "features": [{"name": "a", "transform": "identity", "source": "amount"}],
                }
            )
        )
    )
    with pytest.raises(ValueError, match="reader has 1 numeric and 0 hash inputs"):
        program.encode_parsed(other, parsed, None, np.empty((4, width), np.float32))
    # Strided rows are fine; an empty selection writes nothing.
    rows = np.array([3, 0, 3, 1], np.int64)[::2]
    out = np.empty((2, width), np.float32)
    program.encode_parsed(reader, parsed, rows, out)
    assert_bit_identical(
        out, dispatch.PythonEncoder(spec).encode_transactions([wide_batch(4)[3], wide_batch(4)[3]])
    )
    program.encode_parsed(reader, parsed, np.array([], np.int64), np.empty((0, width), np.float32))


def test_input_reader_refuses_a_bad_plan_like_the_cython_one() -> None:
    from gateway._native import _glue

    args = (transactions.CURRENCY_SCALES, transactions.CHANNEL_VALUES, UnknownCurrencyError)
    for numeric, hashed in (
        ([("str", "country")], []),
        ([], [("str", "country", b""), ("int", "x", b"")]),
        ([(1, "x")], []),
    ):
        with pytest.raises(ValueError) as cython:
            _glue.TransactionReader(numeric, hashed, *args)
        with pytest.raises(ValueError) as native:
            _encoder.InputReader(numeric, hashed, *args)
        assert str(native.value) == str(cython.value)
    with pytest.raises(ValueError, match=r"numeric\[0\]: int reads no Transaction field 'nope'"):
        _encoder.InputReader([("int", "nope")], [], *args)
    with pytest.raises(
        ValueError, match=r"hashed\[0\]: str reads no Transaction field 'amount_minor'"
    ):
        _encoder.InputReader([], [("str", "amount_minor", b"")], *args)
    with pytest.raises(TypeError, match="bytes"):
        _encoder.InputReader([], [("str", "country", "x")], *args)
    reader = _encoder.InputReader(
        [("int", "amount_minor"), ("tenure", "")], [("channel", "channel", b"p")], *args
    )
    assert (reader.numeric_inputs, reader.hash_inputs) == (2, 1)


# --- 4. first_invalid agrees with check_fields ------------------------------------------

IDS = st.one_of(
    st.text(min_size=1, max_size=10),
    st.sampled_from(
        [
            "",
            "x" * MAX_ID_CHARS,
            "x" * (MAX_ID_CHARS + 1),
            "\U0001f600" * MAX_ID_CHARS,  # 512 bytes, 128 code points: fine
            "\U0001f600" * (MAX_ID_CHARS + 1),
            "\u00e9" * (MAX_ID_CHARS - 1) + "x",
        ]
    ),
)


@st.composite
def checked_transaction(draw: st.DrawFn) -> bytes:
    """A transaction's bytes: valid, or breaking one or more of check_fields' rules, with
    duplicate numeric_extras keys (the last value counts) now and then."""
    txn = Transaction(
        transaction_id=draw(IDS),
        amount_minor=draw(st.one_of(st.integers(0, 10**9), st.integers(-(2**63), 0))),
        currency=draw(
            st.one_of(st.sampled_from(CURRENCY_CODES), st.sampled_from(["", "XXX", "usd"]))
        ),
        timestamp_ms=draw(st.one_of(st.integers(1, 4 * 10**12), st.integers(-(2**63), 0))),
        channel=draw(st.one_of(st.sampled_from(sorted(CHANNEL_NUMBERS)), ws.INT32)),  # type: ignore[arg-type]
    )
    tenure = draw(st.one_of(st.none(), st.integers(0, 10**4), ws.INT32))
    if tenure is not None:
        txn.customer_tenure_days = tenure
    keys = st.sampled_from(["a", "b", "\u00e9"])
    finite = st.floats(allow_nan=False, allow_infinity=False)
    for key, value in draw(
        st.dictionaries(keys, st.one_of(finite, ws.doubles), max_size=3)
    ).items():
        txn.numeric_extras[key] = value
    extra = b"".join(
        ws.len_field(15, ws.len_field(1, k.encode()) + ws.double_field(2, v))
        for k, v in draw(st.lists(st.tuples(keys, st.one_of(finite, ws.doubles)), max_size=3))
    )
    return txn.SerializeToString() + extra


@EXAMPLES
@given(st.lists(checked_transaction(), max_size=8), st.booleans())
def test_first_invalid_agrees_with_check_fields(txns: list[bytes], as_set: bool) -> None:
    data = b"".join(ws.len_field(1, t) for t in txns)
    request = scoring_pb2.ScoreBatchRequest.FromString(data)
    expected = -1
    for i, txn in enumerate(request.transactions):
        try:
            check_fields(fields_of(txn), f"transactions[{i}]")
        except GatewayError:
            expected = i
            break
    parsed = parser().parse_score_batch_request(data)
    currencies = set(CURRENCIES) if as_set else frozenset(CURRENCIES)
    channels = set(CHANNEL_NUMBERS) if as_set else CHANNEL_NUMBERS
    assert parsed.first_invalid(currencies, channels, MAX_ID_CHARS) == expected
    if expected >= 0:  # the native fields are refused the same way
        with pytest.raises(GatewayError):
            check_fields(parsed.transaction(expected), "x")


def test_first_invalid_counts_code_points() -> None:
    # 2, 2 (6 bytes) and 3 (12 bytes) code points.
    ids = ["ab", "\U0001f600\u00e9", "\U0001f600" * 3]
    data = b"".join(
        ws.len_field(
            1, Transaction(transaction_id=i, currency="USD", timestamp_ms=1).SerializeToString()
        )
        for i in ids
    )
    parsed = parser().parse_score_batch_request(data)
    usd, channels = frozenset({"USD"}), frozenset({0})
    assert parsed.first_invalid(usd, channels, 3) == -1
    assert parsed.first_invalid(usd, channels, 2) == 2
    assert parsed.first_invalid(usd, channels, 1) == 0
    assert parsed.first_invalid(usd, channels, -1) == 0
    assert parsed.first_invalid(usd, frozenset({1}), 3) == 0
    assert parsed.first_invalid(frozenset(), channels, 3) == 0
    assert parser().parse_score_batch_request(b"").first_invalid(usd, channels, 3) == -1
