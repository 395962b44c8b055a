"""Feature spec validation, transform semantics, currency, hashing and Columns."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.features import columns as cols
from gateway.features import currency, dispatch, hashing, reference
from gateway.features.spec import FeatureSpec, FeatureSpecError, Standardize, parse_feature_spec
from riskwire.v1 import scoring_pb2

CONTRACT_SPEC: dict[str, Any] = {
    "version": "fraud-features-1",
    "features": [
        {"name": "amount_log", "transform": "log1p", "source": "amount_usd"},
        {
            "name": "tenure",
            "transform": "standardize",
            "source": "customer_tenure_days",
            "mean": 800.0,
            "std": 600.0,
            "default": 0.0,
        },
        {
            "name": "amount_band",
            "transform": "bucketize",
            "source": "amount_usd",
            "edges": [1, 5, 20, 100, 500, 2000],
        },
        {
            "name": "channel",
            "transform": "one_hot",
            "source": "channel",
            "vocabulary": ["ECOMMERCE", "CARD_PRESENT"],
        },
        {
            "name": "merchant_bucket",
            "transform": "hash_bucket",
            "source": "merchant_id",
            "buckets": 64,
        },
        {
            "name": "hour",
            "transform": "cyclical",
            "source": "timestamp_ms",
            "period": "hour_of_day",
        },
        {
            "name": "weekday",
            "transform": "cyclical",
            "source": "timestamp_ms",
            "period": "day_of_week",
        },
        {"name": "geo_mismatch", "transform": "differs", "sources": ["country", "ip_country"]},
        {
            "name": "velocity_1h",
            "transform": "identity",
            "source": "numeric_extras.txn_count_1h",
            "default": 0.0,
        },
    ],
}

NAN = math.nan
INF = math.inf


def one(feature: dict[str, Any]) -> FeatureSpec:
    return parse_feature_spec({"version": "t", "features": [feature]})


def num(*values: float) -> npt.NDArray[np.float64]:
    return np.array(values, dtype=np.float64)


def f32(values: Any) -> npt.NDArray[np.float32]:
    return np.array(values, dtype=np.float32)


def cat(*values: str) -> npt.NDArray[np.object_]:
    return np.array(values, dtype=object)


@pytest.fixture(params=["python", "native"])
def mode(request: pytest.FixtureRequest) -> dispatch.EncoderMode:
    """Runs a test over both encoders; native is skipped when the extension is not built
    or RISKWIRE_PURE_PYTHON forces python."""
    if request.param == "native" and dispatch.native_error() is not None:
        pytest.skip(f"native extension not built: {dispatch.native_error()}")
    if request.param == "native" and dispatch.pure_python_forced():
        pytest.skip(f"{dispatch.PURE_PYTHON_ENV} is set")
    if request.param == "native" and dispatch.pure_python_forced():
        pytest.skip("RISKWIRE_PURE_PYTHON=1: this run covers the reference only")
    return request.param  # type: ignore[no-any-return]


def encode(
    mode: dispatch.EncoderMode, spec: FeatureSpec, columns: reference.Columns
) -> npt.NDArray[np.float32]:
    encoder = dispatch.make_encoder(spec, mode)
    assert encoder.implementation == mode
    return encoder.encode(columns)


# --- spec --------------------------------------------------------------------------------


def test_contract_example_parses_with_names_width_sources() -> None:
    spec = parse_feature_spec(CONTRACT_SPEC)
    assert spec.output_names == (
        "amount_log",
        "tenure",
        "amount_band",
        "channel=ECOMMERCE",
        "channel=CARD_PRESENT",
        "channel=<OOV>",
        "merchant_bucket",
        "hour_sin",
        "hour_cos",
        "weekday_sin",
        "weekday_cos",
        "geo_mismatch",
        "velocity_1h",
    )
    assert spec.width == 13
    assert spec.sources == {
        "amount_usd",
        "customer_tenure_days",
        "channel",
        "merchant_id",
        "timestamp_ms",
        "country",
        "ip_country",
        "numeric_extras.txn_count_1h",
    }
    assert parse_feature_spec(spec.to_dict()) == spec


def _with(feature: dict[str, Any]) -> dict[str, Any]:
    return {"version": "t", "features": [feature]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"features": [{"name": "a", "transform": "identity", "source": "amount"}]}, "version"),
        ({"version": "t", "features": []}, "non-empty list"),
        (_with({"name": "a", "transform": "square", "source": "amount"}), "feature 'a': transform"),
        (
            _with({"name": "a", "transform": "standardize", "source": "amount", "mean": 1.0}),
            "feature 'a': standardize requires ['std']",
        ),
        (
            _with({"name": "a", "transform": "one_hot", "source": "channel", "vocab": ["X"]}),
            "feature 'a': one_hot does not take ['vocab']",
        ),
        (
            _with(
                {"name": "a", "transform": "standardize", "source": "amount", "mean": 0, "std": 0.0}
            ),
            "feature 'a': std must be > 0",
        ),
        (
            _with({"name": "a", "transform": "bucketize", "source": "amount", "edges": [1, 5, 5]}),
            "feature 'a': edges must be strictly increasing",
        ),
        (
            _with({"name": "a", "transform": "bucketize", "source": "amount", "edges": [1, NAN]}),
            "feature 'a': edges[1] must be finite",
        ),
        (
            _with({"name": "a", "transform": "identity", "source": "amount_eur"}),
            "feature 'a': unknown source 'amount_eur'",
        ),
        (
            _with({"name": "a", "transform": "identity", "source": "numeric_extras."}),
            "feature 'a': unknown source",
        ),
        (
            _with({"name": "a", "transform": "log1p", "source": "country"}),
            "feature 'a': needs a numeric source, got categorical source 'country'",
        ),
        (
            _with({"name": "a", "transform": "hash_bucket", "source": "amount", "buckets": 4}),
            "feature 'a': needs a categorical source",
        ),
        (
            _with({"name": "a", "transform": "one_hot", "source": "channel", "vocabulary": []}),
            "feature 'a': vocabulary must be a non-empty list",
        ),
        (
            _with(
                {"name": "a", "transform": "one_hot", "source": "channel", "vocabulary": ["X", ""]}
            ),
            "feature 'a': vocabulary[1] must be a non-empty string",
        ),
        (
            _with(
                {"name": "a", "transform": "one_hot", "source": "channel", "vocabulary": ["X", "X"]}
            ),
            "feature 'a': vocabulary has 'X' twice",
        ),
        (
            _with(
                {"name": "a", "transform": "one_hot", "source": "channel", "vocabulary": ["<OOV>"]}
            ),
            "feature 'a': vocabulary may not contain",
        ),
        (
            _with(
                {
                    "name": "a",
                    "transform": "one_hot",
                    "source": "channel",
                    "vocabulary": ["X"],
                    "default": 1.0,
                }
            ),
            "feature 'a': one_hot does not use default",
        ),
        (
            _with({"name": "a", "transform": "hash_bucket", "source": "merchant_id", "buckets": 0}),
            "feature 'a': buckets must be in [1, 16777216]",
        ),
        (
            _with(
                {"name": "a", "transform": "hash_bucket", "source": "merchant_id", "buckets": True}
            ),
            "feature 'a': buckets must be an integer",
        ),
        (
            _with(
                {"name": "a", "transform": "cyclical", "source": "timestamp_ms", "period": "month"}
            ),
            "feature 'a': period must be one of",
        ),
        (
            _with({"name": "a", "transform": "differs", "sources": ["country"]}),
            "feature 'a': sources must be a list of two",
        ),
        (
            _with({"name": "a", "transform": "differs", "sources": ["country", "country"]}),
            "feature 'a': sources must differ",
        ),
        (
            _with({"name": "a", "transform": "identity", "source": "amount", "default": INF}),
            "feature 'a': default must be finite",
        ),
        (
            _with({"name": "a", "transform": "identity", "source": "amount", "default": True}),
            "feature 'a': default must be a number",
        ),
        (
            _with({"name": "x\ud800", "transform": "identity", "source": "amount"}),
            "name is not valid Unicode text",
        ),
        (
            _with(
                {"name": "a", "transform": "one_hot", "source": "channel", "vocabulary": ["\udc80"]}
            ),
            "feature 'a': vocabulary[0] is not valid Unicode text",
        ),
        (
            _with({"name": "", "transform": "identity", "source": "amount"}),
            "features[0]: name must be a non-empty string",
        ),
        (
            {
                "version": "t",
                "features": [
                    {"name": "a", "transform": "identity", "source": "amount"},
                    {"name": "a", "transform": "log1p", "source": "amount"},
                ],
            },
            "feature 'a': name is used twice",
        ),
        (
            {
                "version": "t",
                "features": [
                    {"name": "c", "transform": "one_hot", "source": "channel", "vocabulary": ["X"]},
                    {"name": "c=X", "transform": "identity", "source": "amount"},
                ],
            },
            "output name 'c=X' collides",
        ),
    ],
)
def test_invalid_specs_name_the_problem(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(FeatureSpecError) as info:
        parse_feature_spec(raw)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_spec_accepts_extras_and_integer_parameters() -> None:
    spec = one(
        {
            "name": "v",
            "transform": "standardize",
            "source": "numeric_extras.v",
            "mean": 1,
            "std": 2,
            "default": -1,
        }
    )
    (feature,) = spec.features
    assert feature == Standardize(
        name="v", source="numeric_extras.v", mean=1.0, std=2.0, default=-1.0
    )


# --- transforms, over both implementations -----------------------------------------------


def test_identity_passes_values_and_defaults_missing(mode: dispatch.EncoderMode) -> None:
    spec = one({"name": "x", "transform": "identity", "source": "amount", "default": 7.0})
    out = encode(mode, spec, {"amount": num(1.5, NAN, INF, -2.0, 1e300)})
    np.testing.assert_array_equal(out[:, 0], f32([1.5, 7.0, INF, -2.0, INF]))
    assert out.dtype == np.float32


def test_log1p_clips_negatives(mode: dispatch.EncoderMode) -> None:
    spec = one({"name": "x", "transform": "log1p", "source": "amount", "default": -1.0})
    out = encode(mode, spec, {"amount": num(0.0, math.e - 1.0, -5.0, NAN, -0.0, INF)})
    np.testing.assert_array_equal(out[:, 0], f32([0.0, 1.0, 0.0, -1.0, 0.0, INF]))
    # -0.0 is clipped to +0.0, so the sign bit is clear.
    assert out[4, 0].view(np.uint32) == 0


def test_standardize(mode: dispatch.EncoderMode) -> None:
    spec = one(
        {
            "name": "x",
            "transform": "standardize",
            "source": "customer_tenure_days",
            "mean": 800.0,
            "std": 600.0,
            "default": 0.5,
        }
    )
    out = encode(mode, spec, {"customer_tenure_days": num(1400.0, 200.0, 800.0, NAN)})
    np.testing.assert_array_equal(out[:, 0], f32([1.0, -1.0, 0.0, 0.5]))


def test_bucketize_is_searchsorted_right(mode: dispatch.EncoderMode) -> None:
    spec = one(
        {
            "name": "x",
            "transform": "bucketize",
            "source": "amount_usd",
            "edges": [1, 5, 20],
            "default": 9.0,
        }
    )
    x = num(0.5, 1.0, 4.99, 5.0, 19.999, 20.0, 1000.0, NAN, -INF, INF)
    out = encode(mode, spec, {"amount_usd": x})
    np.testing.assert_array_equal(out[:, 0], f32([0, 1, 1, 2, 2, 3, 3, 9, 0, 3]))


def test_one_hot_with_oov_and_missing(mode: dispatch.EncoderMode) -> None:
    spec = one(
        {
            "name": "ch",
            "transform": "one_hot",
            "source": "channel",
            "vocabulary": ["ECOMMERCE", "CARD_PRESENT"],
        }
    )
    out = encode(mode, spec, {"channel": cat("CARD_PRESENT", "ATM", "", "ECOMMERCE", "ecommerce")})
    np.testing.assert_array_equal(
        out,
        f32([[0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 1]]),
    )


def test_hash_bucket_hashes_name_nul_value(mode: dispatch.EncoderMode) -> None:
    spec = one(
        {
            "name": "mb",
            "transform": "hash_bucket",
            "source": "merchant_id",
            "buckets": 64,
            "default": -1.0,
        }
    )
    out = encode(mode, spec, {"merchant_id": cat("m1", "", "m\u00e9rchant-\u4e2d")})
    expected = [
        hashing.stable_hash64(b"mb\x00m1") % 64,
        -1.0,
        hashing.stable_hash64("mb\x00m\u00e9rchant-\u4e2d".encode()) % 64,
    ]
    np.testing.assert_array_equal(out[:, 0], f32(expected))


def test_cyclical_hour_and_weekday(mode: dispatch.EncoderMode) -> None:
    spec = parse_feature_spec(
        {
            "version": "t",
            "features": [
                {
                    "name": "h",
                    "transform": "cyclical",
                    "source": "timestamp_ms",
                    "period": "hour_of_day",
                    "default": 5.0,
                },
                {
                    "name": "d",
                    "transform": "cyclical",
                    "source": "timestamp_ms",
                    "period": "day_of_week",
                },
            ],
        }
    )
    # 1970-01-01T00:00 was a Thursday (3); 2023-11-14T22:13:20Z a Tuesday (1);
    # -1 ms is Wednesday 23:59:59.999.
    ts = num(0.0, 1_700_000_000_000.0, -1.0, NAN, INF)
    out = encode(mode, spec, {"timestamp_ms": ts})

    def sc(k: int, period: int) -> list[float]:
        return [math.sin(2 * math.pi * k / period), math.cos(2 * math.pi * k / period)]

    expected = f32(
        [
            sc(0, 24) + sc(3, 7),
            sc(22, 24) + sc(1, 7),
            sc(23, 24) + sc(2, 7),
            [5.0, 5.0, 0.0, 0.0],
            [5.0, 5.0, 0.0, 0.0],
        ]
    )
    np.testing.assert_array_equal(out, expected)


MODES = [
    "python",
    pytest.param(
        "native",
        marks=pytest.mark.skipif(
            dispatch.native_error() is not None or dispatch.pure_python_forced(),
            reason="native extension not built, or RISKWIRE_PURE_PYTHON is set",
        ),
    ),
]
CYCLICAL_SPEC = parse_feature_spec(
    {
        "version": "t",
        "features": [
            {
                "name": "h",
                "transform": "cyclical",
                "source": "timestamp_ms",
                "period": "hour_of_day",
            },
            {
                "name": "d",
                "transform": "cyclical",
                "source": "timestamp_ms",
                "period": "day_of_week",
            },
        ],
    }
)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(2**53), 2**53), min_size=1, max_size=20))
def test_cyclical_equals_integer_floor_division(
    mode: dispatch.EncoderMode, timestamps: list[int]
) -> None:
    # The contract's k = (ts // 3600000) % 24 in exact integer arithmetic; the float64
    # floor(ts / unit) of the encoders must agree for every integer |ts| <= 2**53.
    out = encode(mode, CYCLICAL_SPEC, {"timestamp_ms": np.array(timestamps, dtype=np.float64)})
    hour = reference.CYCLICAL_TABLES["hour_of_day"]
    day = reference.CYCLICAL_TABLES["day_of_week"]
    expected = [
        [
            hour.sin[(ts // 3_600_000) % 24],
            hour.cos[(ts // 3_600_000) % 24],
            day.sin[(ts // 86_400_000 + 3) % 7],
            day.cos[(ts // 86_400_000 + 3) % 7],
        ]
        for ts in timestamps
    ]
    np.testing.assert_array_equal(out, f32(expected))


def test_differs(mode: dispatch.EncoderMode) -> None:
    spec = one({"name": "geo", "transform": "differs", "sources": ["country", "ip_country"]})
    out = encode(
        mode,
        spec,
        {
            "country": cat("US", "US", "", "", "\u00d6"),
            "ip_country": cat("US", "DE", "DE", "", "O"),
        },
    )
    np.testing.assert_array_equal(out[:, 0], f32([0, 1, 0, 0, 1]))


def test_full_contract_spec_writes_into_out(mode: dispatch.EncoderMode) -> None:
    spec = parse_feature_spec(CONTRACT_SPEC)
    columns = {
        "amount_usd": num(12.34, NAN),
        "customer_tenure_days": num(1400.0, NAN),
        "channel": cat("ECOMMERCE", ""),
        "merchant_id": cat("m1", ""),
        "timestamp_ms": num(0.0, NAN),
        "country": cat("US", "US"),
        "ip_country": cat("FR", ""),
        "numeric_extras.txn_count_1h": num(3.0, NAN),
    }
    out = np.full((2, spec.width), 99.0, dtype=np.float32)
    result = dispatch.make_encoder(spec, mode).encode(columns, out)
    assert result is out
    bucket = hashing.stable_hash64(b"merchant_bucket\x00m1") % 64
    s3, c3 = math.sin(2 * math.pi * 3 / 7), math.cos(2 * math.pi * 3 / 7)
    expected = f32(
        [
            [math.log1p(12.34), 1.0, 2.0, 1, 0, 0, bucket, 0.0, 1.0, s3, c3, 1.0, 3.0],
            [0.0, 0.0, 0.0, 0, 0, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    np.testing.assert_array_equal(out, expected)


def test_non_contiguous_out_is_filled(mode: dispatch.EncoderMode) -> None:
    spec = parse_feature_spec(CONTRACT_SPEC)
    columns = cols.columns_from_table(small_table(), spec.sources)
    dense = dispatch.make_encoder(spec, mode).encode(columns)
    strided = np.zeros((3, spec.width), dtype=np.float32, order="F")
    dispatch.make_encoder(spec, mode).encode(columns, strided)
    np.testing.assert_array_equal(strided, dense)


def test_zero_rows(mode: dispatch.EncoderMode) -> None:
    spec = parse_feature_spec(CONTRACT_SPEC)
    columns = cols.columns_from_table({k: v[:0] for k, v in small_table().items()}, spec.sources)
    assert dispatch.make_encoder(spec, mode).encode(columns).shape == (0, spec.width)


def test_bad_columns_and_out_raise(mode: dispatch.EncoderMode) -> None:
    spec = parse_feature_spec(CONTRACT_SPEC)
    encoder = dispatch.make_encoder(spec, mode)
    columns = cols.columns_from_table(small_table(), spec.sources)
    with pytest.raises(ValueError, match="lack source 'ip_country', needed by feature 'geo_m"):
        encoder.encode({k: v for k, v in columns.items() if k != "ip_country"})
    with pytest.raises(ValueError, match="'country' has 2 rows"):
        encoder.encode({**columns, "country": columns["country"][:2]})
    with pytest.raises(ValueError, match="out must have shape"):
        encoder.encode(columns, np.empty((3, spec.width + 1), dtype=np.float32))
    with pytest.raises(ValueError, match="out must be float32"):
        encoder.encode(columns, np.empty((3, spec.width), dtype=np.float64))
    with pytest.raises(TypeError, match="str"):
        encoder.encode({**columns, "country": np.array([1, 2, 3], dtype=object)})


# --- currency ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exponent"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("CLP", 0),
        ("BHD", 3),
        ("KWD", 3),
        ("TND", 3),
    ],
)
def test_minor_unit_exponents(code: str, exponent: int) -> None:
    assert currency.minor_unit_exponent(code) == exponent


def test_amounts_and_usd() -> None:
    assert currency.amount_major(1234, "USD") == 12.34
    assert currency.amount_major(500, "JPY") == 500.0
    assert currency.amount_major(1234, "BHD") == 1.234
    assert currency.to_usd(1234, "USD") == 12.34
    assert currency.to_usd(1000, "BHD") == currency.usd_rate("BHD")
    minors = np.array([1234, 500, 1234, 7], dtype=np.int64)
    codes = cat("USD", "JPY", "BHD", "EUR")
    np.testing.assert_array_equal(
        currency.amount_major_array(minors, codes),
        [currency.amount_major(int(m), c) for m, c in zip(minors, codes, strict=True)],
    )
    np.testing.assert_array_equal(
        currency.to_usd_array(minors, codes),
        [currency.to_usd(int(m), c) for m, c in zip(minors, codes, strict=True)],
    )


def test_currency_table_covers_common_codes() -> None:
    common = (
        "USD EUR GBP JPY CHF CAD AUD SEK NOK DKK PLN CZK HUF BRL MXN INR CNY HKD SGD KRW "
        "ZAR TRY AED SAR KWD BHD JOD OMR TND NZD ILS THB MYR IDR PHP CLP COP PEN ARS RON"
    )
    assert set(common.split()) <= currency.CURRENCIES
    assert all(currency.usd_rate(c) > 0 for c in currency.CURRENCIES)


@pytest.mark.parametrize("code", ["XYZ", "usd", ""])
def test_unknown_currency_raises(code: str) -> None:
    with pytest.raises(currency.UnknownCurrencyError, match=f"unknown currency {code!r}"):
        currency.amount_major(100, code)
    with pytest.raises(KeyError):
        currency.to_usd_array(np.array([1, 2]), cat("USD", code))


# --- hashing -----------------------------------------------------------------------------


def test_fnv_and_splitmix_known_answers() -> None:
    # FNV-1a 64 test vectors from the FNV reference (isthe.com/chongo/tech/comp/fnv).
    assert hashing.fnv1a64(b"") == 0xCBF29CE484222325
    assert hashing.fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert hashing.fnv1a64(b"foobar") == 0x85944171F73967E8
    # splitmix64 seeded with 0 first returns finalize(0x9E3779B97F4A7C15).
    assert hashing.splitmix64_finalize(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF
    assert hashing.stable_hash64(b"a") == hashing.splitmix64_finalize(0xAF63DC4C8601EC8C)
    # Continuing from a prefix state equals hashing the concatenation.
    assert hashing.fnv1a64(b"bar", hashing.fnv1a64(b"foo")) == hashing.fnv1a64(b"foobar")


def test_bucket_range_and_definition() -> None:
    buckets = [hashing.bucket("cards-2026-11", f"acct-{i}") for i in range(2000)]
    assert all(0 <= b < 10_000 for b in buckets)
    assert len(set(buckets)) > 1500  # spread, not a constant
    assert hashing.bucket("s", "k") == hashing.stable_hash64(b"s\x00k") % 10_000


def test_column_hash_missing_and_zero_standin(monkeypatch: pytest.MonkeyPatch) -> None:
    values = cat("", "a", "\u00e9")
    np.testing.assert_array_equal(
        hashing.hash_column(values),
        np.array(
            [0, hashing.stable_hash64(b"a"), hashing.stable_hash64("\u00e9".encode())],
            dtype=np.uint64,
        ),
    )
    monkeypatch.setattr(hashing, "stable_hash64", lambda data: 0)
    assert hashing.column_hash("x") == hashing.ZERO_HASH_STANDIN
    assert hashing.column_hash("") == hashing.MISSING_HASH


# --- columns -----------------------------------------------------------------------------


def small_table() -> dict[str, npt.NDArray[Any]]:
    return {
        "transaction_id": cat("t1", "t2", "t3"),
        "account_id": cat("a1", "a2", "a1"),
        "card_id": cat("c1", "c2", ""),
        "merchant_id": cat("m1", "m\u00fcnchen", ""),
        "merchant_category_code": cat("5411", "5999", "4829"),
        "amount_minor": np.array([1234, 500, 1250], dtype=np.int64),
        "currency": cat("USD", "JPY", "BHD"),
        "country": cat("US", "JP", "BH"),
        "channel": cat("ECOMMERCE", "CARD_PRESENT", "CHANNEL_UNSPECIFIED"),
        "entry_mode": cat("CHIP", "", "MANUAL"),
        "timestamp_ms": np.array([1_700_000_000_000, 1_700_003_600_000, 0], dtype=np.int64),
        "device_id": cat("d1", "", "d3"),
        "ip_country": cat("US", "", "FR"),
        "customer_tenure_days": num(100.0, NAN, 3.0),
        "x_txn_count_1h": num(3.0, NAN, 0.0),
        "c_wallet": cat("apple", "", "g\u00e9"),
        "m_age_band": cat("30-39", "", "60+"),
        "label": np.array([0, 1, 0], dtype=np.int64),
        "fraud_pattern": cat("none", "card_testing", "none"),
    }


def test_columns_from_table_values() -> None:
    c = cols.columns_from_table(small_table())
    np.testing.assert_array_equal(c["amount"], [12.34, 500.0, 1.25])
    np.testing.assert_array_equal(
        c["amount_usd"], [12.34, 500.0 * currency.usd_rate("JPY"), 1.25 * currency.usd_rate("BHD")]
    )
    np.testing.assert_array_equal(c["amount_minor"], [1234.0, 500.0, 1250.0])
    np.testing.assert_array_equal(c["timestamp_ms"], [1.7e12, 1.7000036e12, 0.0])
    assert c["timestamp_ms"].dtype == np.float64
    assert list(c["channel"]) == ["ECOMMERCE", "CARD_PRESENT", ""]
    assert list(c["categorical_extras.wallet"]) == ["apple", "", "g\u00e9"]
    np.testing.assert_array_equal(c["numeric_extras.txn_count_1h"], [3.0, NAN, 0.0])
    assert not any(k.startswith(("label", "fraud", "m_")) or "age_band" in k for k in c)


def test_columns_are_restricted_to_sources() -> None:
    c = cols.columns_from_table(small_table(), {"amount_usd", "ip_country"})
    assert set(c) == {"amount_usd", "ip_country"}
    with pytest.raises(ValueError, match="needs table column 'x_other'"):
        cols.columns_from_table(small_table(), {"numeric_extras.other"})


def test_unknown_currency_in_table_raises() -> None:
    table = small_table()
    table["currency"] = cat("USD", "XXX", "USD")
    with pytest.raises(currency.UnknownCurrencyError, match="'XXX'"):
        cols.columns_from_table(table, {"amount"})


def _assert_columns_equal(a: dict[str, npt.NDArray[Any]], b: dict[str, npt.NDArray[Any]]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        if a[key].dtype == np.float64:
            # Bit-level equality, NaN included.
            np.testing.assert_array_equal(a[key].view(np.uint64), b[key].view(np.uint64), key)
        else:
            assert a[key].tolist() == b[key].tolist(), key


def test_transactions_round_trip_to_the_same_columns() -> None:
    table = small_table()
    txns = cols.transactions_from_table(table)
    assert len(txns) == 3
    assert txns[1].channel == scoring_pb2.CARD_PRESENT
    assert not txns[1].HasField("customer_tenure_days")
    assert dict(txns[0].monitoring_attributes) == {"age_band": "30-39"}
    assert dict(txns[1].numeric_extras) == {}
    _assert_columns_equal(cols.columns_from_transactions(txns), cols.columns_from_table(table))
    spec = parse_feature_spec(CONTRACT_SPEC)
    _assert_columns_equal(
        cols.columns_from_transactions(txns, spec.sources),
        cols.columns_from_table(table, spec.sources),
    )


def test_unknown_channel_number_is_missing() -> None:
    txn = cols.Transaction(channel=99, currency="USD")  # type: ignore[arg-type]
    assert cols.columns_from_transactions([txn], {"channel"})["channel"].tolist() == [""]
