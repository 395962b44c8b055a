"""Hypothesis strategies and helpers shared by the native parity tests.

Random feature specs (every transform, awkward names, defaults and parameters), random
Columns for them (NaN, +-inf, huge and negative numbers, subnormals, empty and
non-ASCII strings), and the bit-for-bit comparison of float32 outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from gateway.features import dispatch
from gateway.features.spec import FeatureSpec, parse_feature_spec, source_kind

NATIVE_ERROR = dispatch.native_error()
needs_native = pytest.mark.skipif(
    NATIVE_ERROR is not None or dispatch.pure_python_forced(),
    reason=(
        f"{dispatch.PURE_PYTHON_ENV} is set"
        if dispatch.pure_python_forced()
        else f"native extension not built (pip install -e . or setup.py build_ext): {NATIVE_ERROR}"
    ),
)
EXAMPLES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NUMERIC_POOL = ("amount", "timestamp_ms", "customer_tenure_days", "numeric_extras.\u00e9")
CATEGORICAL_POOL = ("country", "ip_country", "channel", "categorical_extras.\u4e2d")
SPECIAL_FLOATS = (
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    3.4028235e38,
    3.4028236e38,
    1_700_000_000_000.0,
    -1.0,
    2.0**53 + 2,
    9.3e18,
)
numbers = st.one_of(
    st.floats(),
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(-(2**62), 2**62).map(float),
    st.integers(-(10**13), 10**13).map(float),  # millisecond timestamps, 1653 to 2286
    st.sampled_from(SPECIAL_FLOATS),
)
texts = st.text(max_size=6)
finite = st.floats(allow_nan=False, allow_infinity=False)
moderate = st.floats(min_value=-1e9, max_value=1e9)
vocabulary_words = st.text(min_size=1, max_size=5)
TRANSFORMS = (
    "identity",
    "log1p",
    "standardize",
    "bucketize",
    "one_hot",
    "hash_bucket",
    "cyclical",
    "differs",
)


@st.composite
def feature(
    draw: st.DrawFn,
    index: int,
    numeric_pool: Sequence[str] = NUMERIC_POOL,
    categorical_pool: Sequence[str] = CATEGORICAL_POOL,
    words: st.SearchStrategy[str] = vocabulary_words,
) -> dict[str, Any]:
    """One raw card.yaml feature over the given sources; `words` feed vocabularies."""
    # f<index>- then no "=" or "_": output names (x=V, x_sin) can never collide.
    letters = st.characters(exclude_categories=["Cs"], exclude_characters="=_")
    suffix = draw(st.text(letters, max_size=3))
    raw: dict[str, Any] = {"name": f"f{index}-{suffix}"}
    transform = draw(st.sampled_from(TRANSFORMS))
    raw["transform"] = transform
    if transform == "differs":
        raw["sources"] = draw(
            st.lists(st.sampled_from(categorical_pool), min_size=2, max_size=2, unique=True)
        )
        return raw
    if transform in ("one_hot", "hash_bucket"):
        raw["source"] = draw(st.sampled_from(categorical_pool))
    else:
        raw["source"] = draw(st.sampled_from(numeric_pool))
    if transform != "one_hot":
        raw["default"] = draw(st.one_of(finite, st.sampled_from([0.0, -0.0, 1e300, -1.5])))
    if transform == "standardize":
        raw["mean"] = draw(st.one_of(finite, moderate))
        raw["std"] = draw(
            st.one_of(
                st.floats(min_value=5e-324, allow_infinity=False),
                st.floats(min_value=1e-3, max_value=1e6),
            )
        )
    elif transform == "bucketize":
        edges = draw(st.lists(st.one_of(finite, moderate), min_size=1, max_size=8))
        raw["edges"] = sorted(set(edges))
    elif transform == "one_hot":
        vocabulary = draw(st.lists(words, min_size=1, max_size=5))
        raw["vocabulary"] = list(dict.fromkeys(v for v in vocabulary if v != "<OOV>")) or ["X"]
    elif transform == "hash_bucket":
        raw["buckets"] = draw(st.one_of(st.integers(1, 100), st.integers(1, 1 << 24)))
    elif transform == "cyclical":
        raw["period"] = draw(st.sampled_from(["hour_of_day", "day_of_week"]))
    return raw


@st.composite
def feature_specs(
    draw: st.DrawFn,
    numeric_pool: Sequence[str] = NUMERIC_POOL,
    categorical_pool: Sequence[str] = CATEGORICAL_POOL,
    words: st.SearchStrategy[str] = vocabulary_words,
    max_features: int = 8,
) -> FeatureSpec:
    """A valid spec of 1..max_features random features over the given sources."""
    count = draw(st.integers(1, max_features))
    features = [draw(feature(i, numeric_pool, categorical_pool, words)) for i in range(count)]
    return parse_feature_spec({"version": "hypothesis", "features": features})


def vocabulary_of(spec: FeatureSpec) -> list[str]:
    """Every one_hot vocabulary entry of `spec`, sorted: values worth drawing."""
    features: list[dict[str, Any]] = spec.to_dict()["features"]  # type: ignore[assignment]
    return sorted({v for f in features for v in f.get("vocabulary", [])})


@st.composite
def spec_and_columns(draw: st.DrawFn) -> tuple[FeatureSpec, dict[str, npt.NDArray[Any]]]:
    spec = draw(feature_specs())
    vocabulary = vocabulary_of(spec)
    categorical = st.one_of(
        st.just(""), texts, *([st.sampled_from(vocabulary)] if vocabulary else [])
    )
    n = draw(st.integers(0, 24))
    columns: dict[str, npt.NDArray[Any]] = {}
    for source in sorted(spec.sources):
        if source_kind(source) == "numeric":
            values = draw(st.lists(numbers, min_size=n, max_size=n))
            columns[source] = np.array(values, dtype=np.float64)
        else:
            values = draw(st.lists(categorical, min_size=n, max_size=n))
            columns[source] = np.array(values, dtype=object)
    return spec, columns


def assert_bit_identical(
    actual: npt.NDArray[np.float32], expected: npt.NDArray[np.float32]
) -> None:
    """Equal as uint32 bit patterns: -0.0 vs 0.0 or a last-bit difference fails."""
    assert actual.shape == expected.shape
    different = np.nonzero(actual.view(np.uint32) != expected.view(np.uint32))
    assert different[0].size == 0, (
        f"outputs differ at (row, column) {list(zip(*different, strict=True))[:5]}: "
        f"{actual[different][:5]!r} vs {expected[different][:5]!r}"
    )
