"""The native encoder and hashes equal the pure-Python reference bit for bit.

Hypothesis draws random feature specs and random columns (NaN, +-inf, huge and negative
numbers, subnormals, empty and non-ASCII strings) and compares the float32 outputs as
uint32 bit patterns, so -0.0 vs 0.0 or a last-bit rounding difference fails.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.features import dispatch, hashing
from gateway.features.spec import FeatureSpec, parse_feature_spec, source_kind

NATIVE_ERROR = dispatch.native_error()
needs_native = pytest.mark.skipif(
    NATIVE_ERROR is not None,
    reason=f"native extension not built (pip install -e . or setup.py build_ext): {NATIVE_ERROR}",
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


@st.composite
def feature(draw: st.DrawFn, index: int) -> dict[str, Any]:
    # f<index>- then no "=" or "_": output names (x=V, x_sin) can never collide.
    letters = st.characters(exclude_categories=["Cs"], exclude_characters="=_")
    suffix = draw(st.text(letters, max_size=3))
    raw: dict[str, Any] = {"name": f"f{index}-{suffix}"}
    transform = draw(
        st.sampled_from(
            [
                "identity",
                "log1p",
                "standardize",
                "bucketize",
                "one_hot",
                "hash_bucket",
                "cyclical",
                "differs",
            ]
        )
    )
    raw["transform"] = transform
    if transform == "differs":
        raw["sources"] = draw(
            st.lists(st.sampled_from(CATEGORICAL_POOL), min_size=2, max_size=2, unique=True)
        )
        return raw
    if transform in ("one_hot", "hash_bucket"):
        raw["source"] = draw(st.sampled_from(CATEGORICAL_POOL))
    else:
        raw["source"] = draw(st.sampled_from(NUMERIC_POOL))
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
        vocabulary = draw(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=5))
        raw["vocabulary"] = list(dict.fromkeys(v for v in vocabulary if v != "<OOV>")) or ["X"]
    elif transform == "hash_bucket":
        raw["buckets"] = draw(st.one_of(st.integers(1, 100), st.integers(1, 1 << 24)))
    elif transform == "cyclical":
        raw["period"] = draw(st.sampled_from(["hour_of_day", "day_of_week"]))
    return raw


@st.composite
def spec_and_columns(draw: st.DrawFn) -> tuple[FeatureSpec, dict[str, npt.NDArray[Any]]]:
    count = draw(st.integers(1, 8))
    spec = parse_feature_spec(
        {"version": "hypothesis", "features": [draw(feature(i)) for i in range(count)]}
    )
    vocabulary = sorted(
        {v for f in spec.to_dict()["features"] for v in f.get("vocabulary", [])}  # type: ignore[attr-defined]
    )
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


def assert_bit_identical(native: npt.NDArray[np.float32], python: npt.NDArray[np.float32]) -> None:
    assert native.shape == python.shape
    different = np.nonzero(native.view(np.uint32) != python.view(np.uint32))
    assert different[0].size == 0, (
        f"native != python at (row, column) {list(zip(*different, strict=True))[:5]}: "
        f"{native[different][:5]!r} vs {python[different][:5]!r}"
    )


@needs_native
@EXAMPLES
@given(spec_and_columns())
def test_native_encoder_matches_reference(
    case: tuple[FeatureSpec, dict[str, npt.NDArray[Any]]],
) -> None:
    spec, columns = case
    native = dispatch.make_encoder(spec, "native")
    python = dispatch.make_encoder(spec, "python")
    assert (native.implementation, python.implementation) == ("native", "python")
    assert_bit_identical(native.encode(columns), python.encode(columns))


@needs_native
@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64))
def test_native_stable_hash64_matches(data: bytes) -> None:
    native = dispatch.make_hashing("native")
    assert native.implementation == "native"
    assert native.stable_hash64(data) == hashing.stable_hash64(data)


@needs_native
@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=12), st.text(max_size=24))
def test_native_bucket_matches(salt: str, key: str) -> None:
    assert dispatch.make_hashing("native").bucket(salt, key) == hashing.bucket(salt, key)


@needs_native
@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.just(""), st.text(max_size=10)), max_size=20), st.binary(max_size=8))
def test_native_hash_column_matches(values: list[str], prefix: bytes) -> None:
    array = np.array(values, dtype=object)
    native = dispatch.make_hashing("native").hash_column(array, prefix)
    assert native.dtype == np.uint64
    np.testing.assert_array_equal(native, hashing.hash_column(array, prefix))


@needs_native
def test_native_glue_rejects_non_str() -> None:
    native = dispatch.make_hashing("native")
    with pytest.raises(TypeError, match="must be str, got int"):
        native.hash_column(np.array(["a", 3], dtype=object))
    with pytest.raises(TypeError):
        native.bucket("salt", None)  # type: ignore[arg-type]


@needs_native
def test_program_validates_buffers() -> None:
    from gateway._native import _encoder

    program = _encoder.Program()
    program.add_identity(0, 0.0)
    program.add_differs(0, 1)
    x = np.zeros(3)
    h = np.zeros(3, dtype=np.uint64)
    out = np.zeros((3, 2), dtype=np.float32)
    program.encode([x], [h, h], out)
    with pytest.raises(TypeError, match=r"numeric\[0\] must have dtype float64, got float32"):
        program.encode([x.astype(np.float32)], [h, h], out)
    with pytest.raises(ValueError, match=r"hashes\[1\] has 2 rows, out has 3"):
        program.encode([x], [h, h[:2]], out)
    with pytest.raises(ValueError, match="expected 2 hash inputs, got 1"):
        program.encode([x], [h], out)
    with pytest.raises(ValueError, match=r"out must have shape \(n, 2\)"):
        program.encode([x], [h, h], np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        program.encode([x[::-1]], [h, h], out)
    read_only = np.zeros((3, 2), dtype=np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        program.encode([x], [h, h], read_only)
    with pytest.raises(ValueError, match="strictly increasing"):
        program.add_bucketize(0, [1.0, 1.0], 0.0)
    with pytest.raises(ValueError, match="distinct"):
        program.add_one_hot(0, [5, 5])


@needs_native
def test_native_encoder_is_thread_safe() -> None:
    spec = parse_feature_spec(
        {
            "version": "t",
            "features": [
                {"name": "a", "transform": "log1p", "source": "amount"},
                {"name": "h", "transform": "hash_bucket", "source": "country", "buckets": 97},
            ],
        }
    )
    rng = np.random.default_rng(1)
    columns = {
        "amount": rng.lognormal(3, 2, 50_000),
        "country": np.array([f"c{i}" for i in rng.integers(0, 300, 50_000)], dtype=object),
    }
    encoder = dispatch.make_encoder(spec, "native")
    expected = dispatch.make_encoder(spec, "python").encode(columns)
    results: list[npt.NDArray[np.float32]] = []

    def run() -> None:
        results.append(encoder.encode(columns))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for result in results:
        assert_bit_identical(result, expected)


# --- dispatch: runs with or without the extension ---------------------------------------

SPEC = parse_feature_spec(
    {"version": "t", "features": [{"name": "a", "transform": "identity", "source": "amount"}]}
)


@pytest.mark.parametrize("mode", ["auto", "native", "python"])
def test_pure_python_env_forces_python(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("RISKWIRE_PURE_PYTHON", "1")
    assert dispatch.resolve_implementation(mode) == "python"  # type: ignore[arg-type]
    assert dispatch.make_encoder(SPEC, mode).implementation == "python"  # type: ignore[arg-type]
    assert dispatch.make_hashing(mode).implementation == "python"  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["0", "", "false", "off"])
def test_pure_python_env_off_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RISKWIRE_PURE_PYTHON", value)
    assert not dispatch.pure_python_forced()
    expected = "python" if NATIVE_ERROR is not None else "native"
    assert dispatch.make_encoder(SPEC, "auto").implementation == expected


def test_missing_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RISKWIRE_PURE_PYTHON", raising=False)
    monkeypatch.setattr(
        dispatch, "_load_native", lambda: ImportError("No module named 'gateway._native._encoder'")
    )
    with pytest.raises(dispatch.NativeExtensionMissing, match="encoder: native, but") as info:
        dispatch.make_encoder(SPEC, "native")
    assert isinstance(info.value, ImportError)
    assert dispatch.make_encoder(SPEC, "auto").implementation == "python"
    assert dispatch.make_hashing("auto").implementation == "python"
    with pytest.raises(ValueError, match="auto, native or python"):
        dispatch.make_encoder(SPEC, "fast")  # type: ignore[arg-type]
