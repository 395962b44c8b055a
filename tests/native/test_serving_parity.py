"""The serving path (`encode_transactions`) equals the definition of every source.

`columns_from_transactions` defines how each source comes from a Transaction (the path
training shares); serving reads Transactions through compiled readers instead
(gateway/features/transactions.py, the Cython TransactionReader). Hypothesis draws random
specs over every source and random Transactions (missing optional fields, extras,
empty and non-ASCII strings, unknown channel numbers, every known currency, any int64)
and checks, bit for bit, for the native and the python encoders:
`encode_transactions(txns) == reference encode(columns_from_transactions(txns, sources))`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.features import dispatch, hashing, reference, transactions
from gateway.features.columns import Transaction, columns_from_transactions
from gateway.features.currency import CURRENCIES, UnknownCurrencyError
from gateway.features.spec import (
    CATEGORICAL_SOURCES,
    NUMERIC_SOURCES,
    FeatureSpec,
    parse_feature_spec,
    source_kind,
)
from riskwire.v1 import scoring_pb2
from tests.native.strategies import (
    EXAMPLES,
    assert_bit_identical,
    feature_specs,
    needs_native,
    texts,
    vocabulary_of,
    vocabulary_words,
)

NUMERIC_EXTRA_KEYS = ("txn_count_1h", "\u00e9", "")
CATEGORICAL_EXTRA_KEYS = ("card_type", "\u4e2d", "")
ALL_NUMERIC = (*sorted(NUMERIC_SOURCES), *(f"numeric_extras.{k}" for k in NUMERIC_EXTRA_KEYS[:2]))
ALL_CATEGORICAL = (
    *sorted(CATEGORICAL_SOURCES),
    *(f"categorical_extras.{k}" for k in CATEGORICAL_EXTRA_KEYS[:2]),
)
CHANNEL_NAMES = tuple(scoring_pb2.Channel.keys())
CHANNEL_VALUES = transactions.CHANNEL_VALUES
CURRENCY_CODES = tuple(sorted(CURRENCIES))
INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
STRING_FIELDS = (*sorted(CATEGORICAL_SOURCES - {"channel", "currency"}), "transaction_id")

# Vocabularies drawn partly from values transactions carry, so one_hot slots get hits.
words = st.one_of(
    vocabulary_words,
    st.sampled_from(CHANNEL_NAMES + CURRENCY_CODES + ("US", "CHIP", "\u00e9t\u00e9")),
)
serving_specs = feature_specs(ALL_NUMERIC, ALL_CATEGORICAL, words)


@st.composite
def transaction(draw: st.DrawFn, vocabulary: list[str]) -> Transaction:
    strings = st.one_of(
        st.just(""),
        texts,
        st.sampled_from(["US", "CHIP", "\u00e9t\u00e9", "\u4e2d\u6587", "a\x00b"]),
        *([st.sampled_from(vocabulary)] if vocabulary else []),
    )
    txn = Transaction(
        amount_minor=draw(st.one_of(st.integers(0, 10**9), INT64)),
        currency=draw(st.sampled_from(CURRENCY_CODES)),
        timestamp_ms=draw(st.one_of(st.integers(0, 4 * 10**12), INT64)),
        # Known numbers, 0 (unset), and numbers no Channel has (open proto3 enum).
        channel=draw(st.one_of(st.sampled_from(sorted(CHANNEL_VALUES)), INT32)),  # type: ignore[arg-type]
        **{field: draw(strings) for field in STRING_FIELDS},
    )
    tenure = draw(st.one_of(st.none(), INT32))
    if tenure is not None:
        txn.customer_tenure_days = tenure
    numeric_keys = st.one_of(st.sampled_from(NUMERIC_EXTRA_KEYS), texts)
    for key, value in draw(
        st.dictionaries(numeric_keys, st.floats(allow_nan=False, allow_infinity=False))
    ).items():
        txn.numeric_extras[key] = value
    categorical_keys = st.one_of(st.sampled_from(CATEGORICAL_EXTRA_KEYS), texts)
    for key, text in draw(st.dictionaries(categorical_keys, strings)).items():
        txn.categorical_extras[key] = text
    for key, text in draw(st.dictionaries(texts, texts, max_size=2)).items():
        txn.monitoring_attributes[key] = text
    return txn


@st.composite
def spec_and_transactions(draw: st.DrawFn) -> tuple[FeatureSpec, list[Transaction]]:
    spec = draw(serving_specs)
    txns = draw(st.lists(transaction(vocabulary_of(spec)), max_size=20))
    return spec, txns


def reference_rows(spec: FeatureSpec, txns: list[Transaction]) -> npt.NDArray[np.float32]:
    """The definition: the reference encoder over columns_from_transactions."""
    return reference.encode(spec, columns_from_transactions(txns, spec.sources))


def assert_columns_identical(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual.keys() == expected.keys()
    for source, values in expected.items():
        assert actual[source].dtype == values.dtype, source
        assert actual[source].shape == values.shape, source
        if values.dtype == np.float64:
            np.testing.assert_array_equal(
                actual[source].view(np.uint64), values.view(np.uint64), source
            )
        else:
            assert actual[source].tolist() == values.tolist(), source


# --- encoders --------------------------------------------------------------------------


@EXAMPLES
@given(spec_and_transactions())
def test_python_encode_transactions_matches_columns(
    case: tuple[FeatureSpec, list[Transaction]],
) -> None:
    spec, txns = case
    encoder = dispatch.make_encoder(spec, "python")
    assert_bit_identical(encoder.encode_transactions(txns), reference_rows(spec, txns))


@needs_native
@EXAMPLES
@given(spec_and_transactions())
def test_native_encode_transactions_matches_columns(
    case: tuple[FeatureSpec, list[Transaction]],
) -> None:
    spec, txns = case
    encoder = dispatch.make_encoder(spec, "native")
    assert encoder.implementation == "native"
    assert_bit_identical(encoder.encode_transactions(txns), reference_rows(spec, txns))


# --- readers: the encoders' inputs, before any transform could hide a difference -------


@EXAMPLES
@given(spec_and_transactions())
def test_python_reader_matches_columns(case: tuple[FeatureSpec, list[Transaction]]) -> None:
    spec, txns = case
    read = transactions.TransactionColumns(spec.sources)
    assert_columns_identical(read(txns), columns_from_transactions(txns, spec.sources))


@needs_native
@EXAMPLES
@given(spec_and_transactions())
def test_native_reader_matches_columns(case: tuple[FeatureSpec, list[Transaction]]) -> None:
    spec, txns = case
    encoder = dispatch.make_encoder(spec, "native")
    assert isinstance(encoder, dispatch.NativeEncoder)
    columns = columns_from_transactions(txns, spec.sources)
    numeric, hashes = encoder.read_inputs(txns)
    numeric_sources, hashed_sources = encoder.input_sources
    assert numeric.dtype == np.float64 and numeric.shape == (len(numeric_sources), len(txns))
    assert hashes.dtype == np.uint64 and hashes.shape == (len(hashed_sources), len(txns))
    assert numeric.flags.c_contiguous and hashes.flags.c_contiguous
    for row, source in zip(numeric, numeric_sources, strict=True):
        np.testing.assert_array_equal(row.view(np.uint64), columns[source].view(np.uint64))
    for row, (source, prefix) in zip(hashes, hashed_sources, strict=True):
        np.testing.assert_array_equal(row, hashing.hash_column(columns[source], prefix))


def test_every_source_has_a_read() -> None:
    for source in (*ALL_NUMERIC, *ALL_CATEGORICAL):
        read = transactions.source_read(source)
        numeric = read.op in ("int", "tenure", "amount", "amount_usd", "numeric_extra")
        assert numeric == (source_kind(source) == "numeric"), source
    with pytest.raises(ValueError, match="unknown source 'nope'"):
        transactions.source_read("nope")


# --- edges -----------------------------------------------------------------------------

AMOUNT_SPEC = parse_feature_spec(
    {
        "version": "t",
        "features": [
            {"name": "usd", "transform": "identity", "source": "amount_usd"},
            {"name": "major", "transform": "identity", "source": "amount"},
            {"name": "cur", "transform": "hash_bucket", "source": "currency", "buckets": 7},
        ],
    }
)
MODES = [
    pytest.param("python"),
    pytest.param("native", marks=needs_native),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", ["XXX", "", "usd"])
def test_unknown_currency_raises(mode: dispatch.EncoderMode, code: str) -> None:
    encoder = dispatch.make_encoder(AMOUNT_SPEC, mode)
    txns = [Transaction(currency="USD", amount_minor=1), Transaction(currency=code)]
    with pytest.raises(UnknownCurrencyError) as info:
        encoder.encode_transactions(txns)
    assert info.value.currency == code
    assert "unknown currency" in str(info.value)
    # A spec that reads no amount never looks the currency up, like the columns path.
    only_hash = parse_feature_spec(
        {"version": "t", "features": [AMOUNT_SPEC.to_dict()["features"][2]]}  # type: ignore[index]
    )
    rows = dispatch.make_encoder(only_hash, mode).encode_transactions(txns)
    assert_bit_identical(rows, reference_rows(only_hash, txns))


@pytest.mark.parametrize("mode", MODES)
def test_amounts_equal_the_scalar_currency_functions(mode: dispatch.EncoderMode) -> None:
    from gateway.features import currency

    encoder = dispatch.make_encoder(AMOUNT_SPEC, mode)
    minors = [0, 1, 7, 99, 12345, 10**15 + 1, 2**53 + 1, 2**63 - 1, -5]
    txns = [Transaction(currency=c, amount_minor=m) for c in CURRENCY_CODES for m in minors]
    rows = encoder.encode_transactions(txns)
    usd = np.array([currency.to_usd(t.amount_minor, t.currency) for t in txns], np.float32)
    major = np.array([currency.amount_major(t.amount_minor, t.currency) for t in txns], np.float32)
    assert_bit_identical(np.ascontiguousarray(rows[:, 0]), usd)
    assert_bit_identical(np.ascontiguousarray(rows[:, 1]), major)


@pytest.mark.parametrize("mode", MODES)
def test_encode_transactions_takes_repeated_fields_and_out(mode: dispatch.EncoderMode) -> None:
    spec = AMOUNT_SPEC
    request = scoring_pb2.ScoreBatchRequest(
        transactions=[Transaction(currency="EUR", amount_minor=m) for m in (1, 250, 99)]
    )
    encoder = dispatch.make_encoder(spec, mode)
    expected = reference_rows(spec, list(request.transactions))
    assert_bit_identical(encoder.encode_transactions(request.transactions), expected)
    out = np.full((3, spec.width), np.nan, dtype=np.float32)
    assert encoder.encode_transactions(request.transactions, out) is out
    assert_bit_identical(out, expected)
    strided = np.zeros((3, 2 * spec.width), dtype=np.float32)[:, ::2]
    assert encoder.encode_transactions(request.transactions, strided) is strided
    assert_bit_identical(np.ascontiguousarray(strided), expected)
    with pytest.raises(ValueError, match="out must have shape"):
        encoder.encode_transactions(request.transactions, np.zeros((2, spec.width), np.float32))
    assert encoder.encode_transactions([]).shape == (0, spec.width)


@needs_native
def test_native_reader_refuses_a_bad_plan() -> None:
    from gateway._native import _glue

    args = (transactions.CURRENCY_SCALES, transactions.CHANNEL_VALUES, UnknownCurrencyError)
    with pytest.raises(ValueError, match=r"numeric\[0\]: unknown read 'str'"):
        _glue.TransactionReader([("str", "country")], [], *args)
    with pytest.raises(ValueError, match=r"hashed\[1\]: unknown read 'int'"):
        _glue.TransactionReader([], [("str", "country", b""), ("int", "x", b"")], *args)
    reader = _glue.TransactionReader([("int", "amount_minor")], [], *args)
    with pytest.raises(AttributeError):
        reader.read([object()])


# --- RISKWIRE_PURE_PYTHON ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "native", "python"])
def test_pure_python_env_serves_with_the_python_reader(
    monkeypatch: pytest.MonkeyPatch, mode: dispatch.EncoderMode
) -> None:
    monkeypatch.setenv("RISKWIRE_PURE_PYTHON", "1")

    def no_native() -> ImportError:
        raise AssertionError("RISKWIRE_PURE_PYTHON=1 must not load the native extension")

    monkeypatch.setattr(dispatch, "_load_native", no_native)
    calls: list[int] = []
    python_read = transactions.TransactionColumns.__call__

    def spy(self: transactions.TransactionColumns, txns: Any) -> Any:
        calls.append(len(txns))
        return python_read(self, txns)

    monkeypatch.setattr(transactions.TransactionColumns, "__call__", spy)
    encoder = dispatch.make_encoder(AMOUNT_SPEC, mode)
    assert encoder.implementation == "python"
    assert isinstance(encoder, dispatch.PythonEncoder)
    txns = [Transaction(currency="JPY", amount_minor=500), Transaction(currency="BHD")]
    assert_bit_identical(encoder.encode_transactions(txns), reference_rows(AMOUNT_SPEC, txns))
    assert calls == [2]


def test_channel_values_follow_columns() -> None:
    numbers = [*CHANNEL_VALUES, 99, -1]
    txns = [Transaction(channel=n, currency="USD") for n in numbers]  # type: ignore[arg-type]
    expected = columns_from_transactions(txns, {"channel"})["channel"].tolist()
    assert [CHANNEL_VALUES.get(n, "") for n in numbers] == expected
    assert expected[0] == "" and expected[-2:] == ["", ""]
