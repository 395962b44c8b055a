"""The pure-Python (numpy) reference encoder.

It defines the feature semantics of CONTRACT.md in vectorized numpy; the native encoder
must match it bit for bit. Everything is computed in float64 and cast to float32 once,
with only operations whose result IEEE 754 fixes exactly (+ - * /, floor, fmod,
comparisons) or that both sides take from the same place:
- log1p calls the C library's log1p through `math.log1p`, as the native code does.
  `np.log1p` may dispatch to SIMD approximations that differ in the last bit.
- sin and cos come from per-period tables built once with math.sin / math.cos and handed
  to the native code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from gateway.features import hashing
from gateway.features.spec import (
    Bucketize,
    Cyclical,
    Differs,
    Feature,
    FeatureSpec,
    HashBucket,
    Identity,
    Log1p,
    OneHot,
    Period,
    Standardize,
    feature_output_names,
    feature_sources,
)

Columns: TypeAlias = Mapping[str, npt.NDArray[Any]]
FloatArray: TypeAlias = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CyclicalTable:
    """How a cyclical period turns a millisecond timestamp into a table index.

    index k = fmod(floor(ts_ms / unit_ms) + offset, length), made non-negative; the
    feature is (sin[k], cos[k]). For integer |ts_ms| <= 2**53 the float64 floor(ts / unit)
    equals the contract's integer ts // unit (tested), and every step is exact, so the
    native code computes the same k.
    """

    unit_ms: float
    offset: float
    length: int
    sin: tuple[float, ...]
    cos: tuple[float, ...]


def _table(unit_ms: float, offset: float, length: int) -> CyclicalTable:
    angles = [2.0 * math.pi * k / length for k in range(length)]
    return CyclicalTable(
        unit_ms=unit_ms,
        offset=offset,
        length=length,
        sin=tuple(math.sin(a) for a in angles),
        cos=tuple(math.cos(a) for a in angles),
    )


# 1970-01-01 was a Thursday, so day 0 is index 3 when Monday is 0.
CYCLICAL_TABLES: dict[Period, CyclicalTable] = {
    "hour_of_day": _table(3_600_000.0, 0.0, 24),
    "day_of_week": _table(86_400_000.0, 3.0, 7),
}


def needed_sources(spec: FeatureSpec) -> tuple[tuple[str, str], ...]:
    """Returns (source, first feature reading it) pairs, for `count_rows`."""
    owners: dict[str, str] = {}
    for feature in spec.features:
        for source in feature_sources(feature):
            owners.setdefault(source, feature.name)
    return tuple(owners.items())


def count_rows(needed: tuple[tuple[str, str], ...], columns: Columns) -> int:
    """Returns the number of rows, checking every needed source is there and 1-D.

    Raises:
        ValueError: A source is absent, not 1-D, or of a different length than the others.
    """
    n = -1
    first = ""
    for source, owner in needed:
        if source not in columns:
            raise ValueError(f"columns lack source {source!r}, needed by feature {owner!r}")
        column = columns[source]
        shape = column.shape if isinstance(column, np.ndarray) else np.shape(column)
        if len(shape) != 1:
            raise ValueError(f"column {source!r} must be 1-D, got shape {shape}")
        if n < 0:
            n, first = shape[0], source
        elif shape[0] != n:
            raise ValueError(f"column {source!r} has {shape[0]} rows but column {first!r} has {n}")
    return n


def check_out(out: npt.NDArray[Any] | None, n: int, width: int) -> npt.NDArray[np.float32]:
    """Returns `out` after checking it is a writable float32 [n, width], or a new one."""
    if out is None:
        return np.empty((n, width), dtype=np.float32)
    if out.dtype != np.float32:
        raise ValueError(f"out must be float32, got {out.dtype}")
    if out.shape != (n, width):
        raise ValueError(f"out must have shape {(n, width)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out must be writable")
    return out


def encode(
    spec: FeatureSpec, columns: Columns, out: npt.NDArray[np.float32] | None = None
) -> npt.NDArray[np.float32]:
    """Encodes columns into feature rows.

    Args:
        spec: The feature spec.
        columns: Source name to 1-D array (float64 with NaN missing, or object str with ""
            missing); only `spec.sources` are read.
        out: Optional float32 [n, spec.width] buffer to write into.

    Returns:
        float32 [n, spec.width]: `out` when given.
    """
    n = count_rows(needed_sources(spec), columns)
    result = check_out(out, n, spec.width)
    start = 0
    # Overflow to inf (and float32 casts of huge values) is the defined result here,
    # the same in the native code; numpy's warnings about it are noise.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for feature in spec.features:
            width = len(feature_output_names(feature))
            _ENCODERS[type(feature)](feature, columns, result[:, start : start + width])
            start += width
    return result


def _numeric(columns: Columns, source: str) -> FloatArray:
    return np.asarray(columns[source], dtype=np.float64)


def _categorical(columns: Columns, source: str) -> list[Any]:
    items: list[Any] = np.asarray(columns[source], dtype=object).tolist()
    for value in set(items):
        if not isinstance(value, str):
            raise TypeError(
                f"column {source!r} must hold str, got {type(value).__name__} {value!r}"
            )
    return items


def _fill(
    out: npt.NDArray[np.float32], missing: npt.NDArray[np.bool_], values: FloatArray, default: float
) -> None:
    out[:, 0] = np.where(missing, default, values)


def _identity(feature: Feature, columns: Columns, out: npt.NDArray[np.float32]) -> None:
    assert isinstance(feature, Identity)
    x = _numeric(columns, feature.source)
    _fill(out, np.isnan(x), x, feature.default)


def _log1p(feature: Feature, columns: Columns, out: npt.NDArray[np.float32]) -> None:
    assert isinstance(feature, Log1p)
    x = _numeric(columns, feature.source)
    # `x > 0` also turns -0.0 into +0.0, so log1p never sees a negative zero.
    clipped = np.where(x > 0.0, x, 0.0)
    logs = np.fromiter(map(math.log1p, clipped.tolist()), dtype=np.float64, count=x.size)
    _fill(out, np.isnan(x), logs, feature.default)


def _standardize(feature: Feature, columns: Columns, out: npt.NDArray[np.float32]) -> None:
    assert isinstance(feature, Standardize)
    x = _numeric(columns, feature.source)
    _fill(out, np.isnan(x), (x - feature.mean) / feature.std, feature.default)


def _bucketize(feature: Feature, columns: Columns, out: npt.NDArray[np.float32]) -> None:
    assert isinstance(feature, Bucketize)
    x = _numeric(columns, feature.source)
    edges = np.asarray(feature.edges, dtype=np.float64)
    index = np.searchsorted(edges, x, side="right").astype(np.float64)
    _fill(out, np.isnan(x), index, feature.default)


def _cyclical(feature: Feature, columns: Columns, out: npt.NDArray[np.float32]) -> None:
    assert isinstance(feature, Cyclical)
    table = CYCLICAL_TABLES[feature.period]
    x = _numeric(columns, feature.source)
    # An infinite timestamp has no hour: treat it as missing, like NaN.
    present = np.isfinite(x)
    step = np.floor(np.where(present, x, 0.0) / table.unit_ms) + table.offset
    rem = np.fmod(step, float(table.length))
    index = np.where(rem < 0.0, rem + table.length, rem).astype(np.intp)
    sin = np.asarray(table.sin, dtype=np.float64)[index]
    cos = np.asarray(table.cos, dtype=np.float64)[index]
    out[:, 0] = np.where(present, sin, feature.default)
    out[:, 1] = np.where(present, cos, feature.default)


def _one_hot(feature: Feature, columns: Columns, out: npt.NDArray[np.float32]) -> None:
    assert isinstance(feature, OneHot)
    items = _categorical(columns, feature.source)
    oov = len(feature.vocabulary)
    slots = {value: i for i, value in enumerate(feature.vocabulary)}
    index = np.fromiter((slots.get(v, oov) for v in items), dtype=np.intp, count=len(items))
    out[:] = 0.0
    out[np.arange(len(items)), index] = 1.0


def _hash_bucket(feature: Feature, columns: Columns, out: npt.NDArray[np.float32]) -> None:
    assert isinstance(feature, HashBucket)
    values = np.asarray(_categorical(columns, feature.source), dtype=object)
    hashes = hashing.hash_column(values, prefix=feature.name.encode() + b"\x00")
    index = (hashes % np.uint64(feature.buckets)).astype(np.float64)
    _fill(out, hashes == hashing.MISSING_HASH, index, feature.default)


def _differs(feature: Feature, columns: Columns, out: npt.NDArray[np.float32]) -> None:
    assert isinstance(feature, Differs)
    a = np.asarray(_categorical(columns, feature.sources[0]), dtype=object)
    b = np.asarray(_categorical(columns, feature.sources[1]), dtype=object)
    differs = (a != "") & (b != "") & (a != b)
    out[:, 0] = np.asarray(differs, dtype=bool).astype(np.float64)


_ENCODERS: dict[type, Callable[[Feature, Columns, npt.NDArray[np.float32]], None]] = {
    Identity: _identity,
    Log1p: _log1p,
    Standardize: _standardize,
    Bucketize: _bucketize,
    Cyclical: _cyclical,
    OneHot: _one_hot,
    HashBucket: _hash_bucket,
    Differs: _differs,
}
