"""ScoreResponse / ScoreBatchResponse writers equal protobuf's SerializeToString().

Hypothesis draws every field (empty, non-ASCII and astral strings, NaN with payloads,
-0.0, +-inf, uint64 extremes, negative and unknown enum numbers, 0..5 reason codes)
and checks, for the Cython writer and the protobuf-based reference alike, that the
bytes equal python protobuf's and decode back to the fields; invalid values raise the
exception protobuf raises. The reference runs under RISKWIRE_PURE_PYTHON=1 too.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.grpc.responses import (
    PythonResponseWriter,
    ReasonCodeFields,
    ResponseWriter,
    make_response_writer,
    varint,
)
from riskwire.v1 import scoring_pb2 as pb
from tests.native.strategies import EXAMPLES, needs_native

UINT64_MAX = 2**64 - 1
STRING_FIELDS = (
    "transaction_id",
    "model_name",
    "model_version",
    "route",
    "audit_id",
    "fallback_reason",
)
ENUM_FIELDS = ("decision", "arm", "decision_source")
UINT64_FIELDS = ("config_version", "server_latency_us")


def nan_with(bits: int) -> float:
    """The float64 with these bits (a NaN whose sign and payload the writer must keep)."""
    value: float = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value


def float_bits(value: float) -> int:
    bits: int = struct.unpack("<Q", struct.pack("<d", value))[0]
    return bits


# Lone surrogates (category Cs) are not valid strings: test_refuses_* covers them.
characters = st.characters(exclude_categories=["Cs"])
strings = st.one_of(
    st.just(""),
    st.text(characters, max_size=12),
    st.text(st.characters(min_codepoint=0x80, exclude_categories=["Cs"]), max_size=6),
    st.text(st.characters(min_codepoint=0x10000), max_size=3),  # astral: 4 UTF-8 bytes
    st.sampled_from(["tx-000123", "fraud-gbdt", "\u00e9t\u00e9", "\u4e2d\u6587", "a\x00b"]),
    st.text(characters, max_size=200).map(lambda s: s * 2),  # lengths past one varint byte
)
doubles = st.one_of(
    st.floats(),
    st.floats(min_value=0.0, max_value=1.0),
    st.sampled_from(
        [
            0.0,
            -0.0,
            math.inf,
            -math.inf,
            math.nan,
            nan_with(0xFFF8_0000_0000_0000),  # -NaN
            nan_with(0x7FF0_0000_0000_0001),  # signalling NaN
            nan_with(0x7FF8_0000_DEAD_BEEF),  # a payload
            5e-324,
        ]
    ),
)
KNOWN_ENUMS = sorted({*pb.Decision.values(), *pb.Arm.values(), *pb.DecisionSource.values()})
enums = st.one_of(
    st.sampled_from(KNOWN_ENUMS),
    st.integers(-(2**31), 2**31 - 1),  # unknown numbers: proto3 enums are open
    st.sampled_from([-1, -(2**31), 2**31 - 1, 127, 128]),
)
uint64s = st.one_of(
    st.integers(0, 10**7),
    st.integers(0, UINT64_MAX),
    st.sampled_from([0, 1, 127, 128, 2**14, 2**63, UINT64_MAX]),
)
reason_codes = st.builds(
    ReasonCodeFields, code=strings, feature=strings, contribution=doubles, description=strings
)


@st.composite
def response_fields(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {name: draw(strings) for name in STRING_FIELDS}
    fields |= {name: draw(enums) for name in ENUM_FIELDS}
    fields |= {name: draw(uint64s) for name in UINT64_FIELDS}
    fields["score"] = draw(doubles)
    fields["reason_codes"] = draw(st.lists(reason_codes, max_size=5))
    return fields


def protobuf_message(fields: dict[str, Any]) -> pb.ScoreResponse:
    values = dict(fields)
    values["reason_codes"] = [
        pb.ReasonCode(
            code=rc.code,
            feature=rc.feature,
            contribution=rc.contribution,
            description=rc.description,
        )
        for rc in values.get("reason_codes") or ()
    ]
    return pb.ScoreResponse(**values)


def assert_same_double(actual: float, expected: float) -> None:
    assert float_bits(actual) == float_bits(expected), f"{actual!r} != {expected!r}"


def assert_decodes_to(data: bytes, fields: dict[str, Any]) -> None:
    decoded = pb.ScoreResponse.FromString(data)
    for name in (*STRING_FIELDS, *ENUM_FIELDS, *UINT64_FIELDS):
        assert getattr(decoded, name) == fields[name], name
    assert_same_double(decoded.score, fields["score"])
    assert len(decoded.reason_codes) == len(fields["reason_codes"])
    for got, want in zip(decoded.reason_codes, fields["reason_codes"], strict=True):
        assert (got.code, got.feature, got.description) == (
            want.code,
            want.feature,
            want.description,
        )
        assert_same_double(got.contribution, want.contribution)


@pytest.fixture(scope="module", params=["python", pytest.param("native", marks=needs_native)])
def writer(request: pytest.FixtureRequest) -> ResponseWriter:
    mode = request.param
    made = make_response_writer(mode)
    assert made.implementation == mode
    return made


def test_python_mode_is_the_reference() -> None:
    assert isinstance(make_response_writer("python"), PythonResponseWriter)


@EXAMPLES
@given(fields=response_fields())
def test_score_response_equals_protobuf(writer: ResponseWriter, fields: dict[str, Any]) -> None:
    data = writer.score_response(**fields)
    assert data == protobuf_message(fields).SerializeToString()
    assert_decodes_to(data, fields)


@needs_native
@EXAMPLES
@given(fields=response_fields())
def test_native_equals_reference(fields: dict[str, Any]) -> None:
    native = make_response_writer("native")
    assert native.score_response(**fields) == PythonResponseWriter().score_response(**fields)


@EXAMPLES
@given(batch=st.lists(response_fields(), max_size=6))
def test_batch_response_equals_protobuf(
    writer: ResponseWriter, batch: list[dict[str, Any]]
) -> None:
    encoded = [writer.score_response(**fields) for fields in batch]
    data = writer.score_batch_response(encoded)
    messages = [protobuf_message(fields) for fields in batch]
    assert data == pb.ScoreBatchResponse(responses=messages).SerializeToString()
    decoded = pb.ScoreBatchResponse.FromString(data)
    assert [r.SerializeToString() for r in decoded.responses] == encoded


@needs_native
@EXAMPLES
@given(parts=st.lists(st.binary(max_size=300), max_size=8))
def test_native_batch_equals_reference_for_any_bytes(parts: list[bytes]) -> None:
    native = make_response_writer("native")
    assert native.score_batch_response(parts) == PythonResponseWriter().score_batch_response(parts)


def default_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict.fromkeys(STRING_FIELDS, "")
    fields |= dict.fromkeys((*ENUM_FIELDS, *UINT64_FIELDS), 0)
    fields |= {"score": 0.0, "reason_codes": ()}
    return fields | changes


# Bytes worked out from the encoding spec, not from protobuf: these pin protobuf's
# behaviour too (https://protobuf.dev/programming-guides/encoding/).
KNOWN_ANSWERS = [
    ("all defaults", {}, b""),
    ("-0.0 is written", {"score": -0.0}, b"\x11" + bytes(7) + b"\x80"),
    ("NaN keeps sign and payload", {"score": nan_with(0xFFF8_0000_0000_0001)},
     b"\x11\x01" + bytes(5) + b"\xf8\xff"),
    ("negative enum: 10 bytes", {"decision": -1}, b"\x18" + b"\xff" * 9 + b"\x01"),
    ("unknown enum", {"arm": 99}, b"\x30\x63"),
    ("uint64 max", {"config_version": UINT64_MAX}, b"\x50" + b"\xff" * 9 + b"\x01"),
    ("varint 128", {"server_latency_us": 128}, b"\x60\x80\x01"),
    ("astral UTF-8", {"route": "\U0001f600"}, b"\x4a\x04\xf0\x9f\x98\x80"),
    ("empty reason code is written", {"reason_codes": [ReasonCodeFields("", "", 0.0, "")]},
     b"\x42\x00"),
    (
        "field order: reason codes between decision_source and route",
        {
            "fallback_reason": "T",
            "route": "r",
            "decision_source": 2,
            "reason_codes": [ReasonCodeFields("R", "f", -0.0, "d")],
            "transaction_id": "t",
        },
        b"\x0a\x01t\x38\x02\x42\x12\x0a\x01R\x12\x01f\x19" + bytes(7) + b"\x80\x22\x01d"
        b"\x4a\x01r\x6a\x01T",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "expected"),
    [pytest.param(c, e, id=name) for name, c, e in KNOWN_ANSWERS],
)
def test_known_answers(writer: ResponseWriter, changes: dict[str, Any], expected: bytes) -> None:
    fields = default_fields(**changes)
    assert writer.score_response(**fields) == expected
    assert protobuf_message(fields).SerializeToString() == expected


class Index:
    """Not an int, but has __index__ (as numpy integers do)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


# Values of other types that protobuf's constructor takes; the writers take them alike.
ACCEPTED = [
    ("transaction_id", None),
    ("route", "\u00e9t\u00e9".encode()),
    ("model_name", np.str_("numpy")),
    ("score", None),
    ("score", 1),
    ("score", True),
    ("score", np.float32(0.1)),
    ("score", Fraction(1, 3)),
    ("decision", None),
    ("arm", np.int64(-7)),
    ("decision_source", Index(5)),
    ("config_version", np.uint64(UINT64_MAX)),
    ("server_latency_us", Index(300)),
    ("config_version", None),
    ("reason_codes", None),
]


@pytest.mark.parametrize(("name", "value"), ACCEPTED)
def test_accepts_what_protobuf_accepts(writer: ResponseWriter, name: str, value: Any) -> None:
    fields = default_fields(**{"transaction_id": "t", name: value})
    assert writer.score_response(**fields) == protobuf_message(fields).SerializeToString()


# Values protobuf's constructor refuses, and what it raises.
REFUSED: list[tuple[str, Any, type[Exception]]] = [
    ("transaction_id", "a\ud800b", UnicodeEncodeError),  # a lone surrogate
    ("audit_id", b"\xff", UnicodeDecodeError),  # bytes that are not UTF-8
    ("model_name", 5, TypeError),
    ("route", bytearray(b"r"), TypeError),
    ("score", "0.5", TypeError),
    ("score", 10**400, OverflowError),
    ("decision", 2**31, ValueError),
    ("arm", -(2**31) - 1, ValueError),
    ("decision_source", 1.0, TypeError),
    ("config_version", -1, ValueError),
    ("config_version", 2**64, ValueError),
    ("server_latency_us", 1.5, TypeError),
    ("server_latency_us", np.float64(3.0), TypeError),
]


@pytest.mark.parametrize(("name", "value", "error"), REFUSED)
def test_refuses_what_protobuf_refuses(
    writer: ResponseWriter, name: str, value: Any, error: type[Exception]
) -> None:
    fields = default_fields(**{name: value})
    with pytest.raises(error):
        protobuf_message(fields)
    with pytest.raises(error):
        writer.score_response(**fields)


@pytest.mark.parametrize("name", [*ENUM_FIELDS, *UINT64_FIELDS])
def test_refuses_bools_for_integers(writer: ResponseWriter, name: str) -> None:
    # protobuf 6 still takes them, with a warning that they are refused from 7.34 on.
    fields = default_fields(**{name: True})
    with pytest.warns(DeprecationWarning, match="got a boolean"):
        protobuf_message(fields)
    with pytest.raises(TypeError, match=f"{name} takes an int, got bool"):
        writer.score_response(**fields)


@pytest.mark.parametrize(
    ("attribute", "value", "error"),
    [
        ("code", "\udfff", UnicodeEncodeError),
        ("feature", 1, TypeError),
        ("contribution", "x", TypeError),
        ("description", b"\xc3", UnicodeDecodeError),
    ],
)
def test_refuses_bad_reason_codes(
    writer: ResponseWriter, attribute: str, value: Any, error: type[Exception]
) -> None:
    good: dict[str, Any] = {"code": "R1", "feature": "f", "contribution": 0.5, "description": "d"}
    bad = ReasonCodeFields(**(good | {attribute: value}))
    with pytest.raises(error):
        writer.score_response(**default_fields(reason_codes=[ReasonCodeFields(**good), bad]))


class ComputedReasonCode:
    """Attributes built on each access: the writer must keep them alive while writing."""

    def __init__(self, i: int) -> None:
        self.i = i

    @property
    def code(self) -> str:
        return f"R{self.i:02d}"

    @property
    def feature(self) -> str:
        return "feature-\u00e9-" + "x" * self.i

    @property
    def contribution(self) -> float:
        return self.i / 7

    @property
    def description(self) -> str:
        return "".join(chr(0x4E00 + j) for j in range(self.i))


def test_reason_codes_from_any_objects_and_sequences(writer: ResponseWriter) -> None:
    computed: Sequence[Any] = [ComputedReasonCode(i) for i in range(40)]
    frozen = [
        ReasonCodeFields(rc.code, rc.feature, rc.contribution, rc.description) for rc in computed
    ]
    expected = writer.score_response(**default_fields(reason_codes=frozen))
    for form in (list, tuple, iter):
        reasons = form(computed)
        assert writer.score_response(**default_fields(reason_codes=reasons)) == expected
    assert_decodes_to(expected, default_fields(reason_codes=frozen))


def test_batch_refuses_non_bytes(writer: ResponseWriter) -> None:
    for bad in ("text", bytearray(b"x"), None):
        with pytest.raises(TypeError, match=r"responses\[1\]"):
            writer.score_batch_response([b"", bad])  # type: ignore[list-item]


def test_batch_takes_any_iterable_and_long_messages(writer: ResponseWriter) -> None:
    big = writer.score_response(**default_fields(audit_id="a" * 70_000))
    parts = [b"", big, b"\x0a\x01x"]
    expected = b"".join(b"\x0a" + varint(len(p)) + p for p in parts)
    assert writer.score_batch_response(iter(parts)) == expected  # type: ignore[arg-type]
    assert writer.score_batch_response(tuple(parts)) == expected
    assert writer.score_batch_response([]) == b""


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")],
)
def test_varint(value: int, encoded: bytes) -> None:
    assert varint(value) == encoded


def test_writers_have_no_state(writer: ResponseWriter) -> None:
    call: Callable[..., bytes] = writer.score_response
    first = call(**default_fields(transaction_id="one", score=0.5))
    call(**default_fields(transaction_id="two" * 50, reason_codes=[ComputedReasonCode(3)]))
    assert call(**default_fields(transaction_id="one", score=0.5)) == first
