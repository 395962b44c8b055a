"""The native encoder and hashes equal the pure-Python reference bit for bit.

Hypothesis draws random feature specs and random columns (NaN, +-inf, huge and negative
numbers, subnormals, empty and non-ASCII strings) and compares the float32 outputs as
uint32 bit patterns, so -0.0 vs 0.0 or a last-bit rounding difference fails.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.features import dispatch, hashing
from gateway.features.spec import FeatureSpec, parse_feature_spec
from tests.native.strategies import (
    EXAMPLES,
    NATIVE_ERROR,
    assert_bit_identical,
    needs_native,
    spec_and_columns,
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
    x = np.zeros((1, 3))
    h = np.zeros((2, 3), dtype=np.uint64)
    out = np.zeros((3, 2), dtype=np.float32)
    program.encode(x, h, out)
    with pytest.raises(TypeError, match="numeric must have dtype float64, got float32"):
        program.encode(x.astype(np.float32), h, out)
    with pytest.raises(TypeError, match="hashes must have dtype uint64, got int64"):
        program.encode(x, h.astype(np.int64), out)
    with pytest.raises(ValueError, match=r"hashes must have shape \(2, 3\), got \(2, 2\)"):
        program.encode(x, h[:, :2], out)
    with pytest.raises(ValueError, match=r"hashes must have shape \(2, 3\), got \(1, 3\)"):
        program.encode(x, h[:1], out)
    with pytest.raises(ValueError, match=r"numeric must have shape \(1, 3\), got \(3,\)"):
        program.encode(x[0], h, out)
    with pytest.raises(ValueError, match=r"out must have shape \(n, 2\)"):
        program.encode(x, h, np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="numeric must be C-contiguous"):
        program.encode(x[:, ::-1], h, out)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        program.encode([x[0]], h, out)  # type: ignore[arg-type]
    read_only = np.zeros((3, 2), dtype=np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        program.encode(x, h, read_only)
    with pytest.raises(ValueError, match="strictly increasing"):
        program.add_bucketize(0, [1.0, 1.0], 0.0)
    with pytest.raises(ValueError, match="distinct"):
        program.add_one_hot(0, [5, 5])


@needs_native
def test_program_releases_the_gil_for_large_batches_only() -> None:
    """Both sides of the GIL threshold compute the same rows."""
    spec = parse_feature_spec(
        {"version": "t", "features": [{"name": "a", "transform": "log1p", "source": "amount"}]}
    )
    rng = np.random.default_rng(3)
    for n in (1, 1 << 14, (1 << 14) + 1, 40_000):
        columns = {"amount": rng.lognormal(3, 2, n)}
        assert_bit_identical(
            dispatch.make_encoder(spec, "native").encode(columns),
            dispatch.make_encoder(spec, "python").encode(columns),
        )


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
