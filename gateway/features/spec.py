"""Feature spec: the `feature_spec` section of card.yaml, parsed and validated.

The spec is parsed once into frozen dataclasses; both encoders (native and the
Python reference) compile from these objects, never from the raw dict, so a
typo in card.yaml fails at model load with a message that names the feature.
See CONTRACT.md for the semantics of each transform.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

NUMERIC_SOURCES: frozenset[str] = frozenset(
    {"amount", "amount_usd", "amount_minor", "timestamp_ms", "customer_tenure_days"}
)
CATEGORICAL_SOURCES: frozenset[str] = frozenset(
    {
        "account_id",
        "card_id",
        "merchant_id",
        "merchant_category_code",
        "currency",
        "country",
        "ip_country",
        "channel",
        "entry_mode",
        "device_id",
    }
)
NUMERIC_EXTRAS_PREFIX = "numeric_extras."
CATEGORICAL_EXTRAS_PREFIX = "categorical_extras."

OOV_LABEL = "<OOV>"
"""Name suffix of a one_hot feature's out-of-vocabulary (and missing) slot."""

MAX_HASH_BUCKETS = 1 << 24
"""Largest `buckets` allowed: bucket indices stay exact when written as float32."""

SourceKind: TypeAlias = Literal["numeric", "categorical"]
Period: TypeAlias = Literal["hour_of_day", "day_of_week"]


class FeatureSpecError(ValueError):
    """A feature spec that cannot be compiled; the message names the feature."""


def source_kind(source: str) -> SourceKind | None:
    """Returns whether `source` is a numeric or categorical source, None if unknown."""
    if source in NUMERIC_SOURCES:
        return "numeric"
    if source in CATEGORICAL_SOURCES:
        return "categorical"
    if source.startswith(NUMERIC_EXTRAS_PREFIX) and len(source) > len(NUMERIC_EXTRAS_PREFIX):
        return "numeric"
    if source.startswith(CATEGORICAL_EXTRAS_PREFIX) and len(source) > len(
        CATEGORICAL_EXTRAS_PREFIX
    ):
        return "categorical"
    return None


@dataclass(frozen=True)
class Identity:
    """x as is."""

    name: str
    source: str
    default: float = 0.0


@dataclass(frozen=True)
class Log1p:
    """log1p(max(x, 0))."""

    name: str
    source: str
    default: float = 0.0


@dataclass(frozen=True)
class Standardize:
    """(x - mean) / std."""

    name: str
    source: str
    mean: float
    std: float
    default: float = 0.0


@dataclass(frozen=True)
class Bucketize:
    """Index i such that edges[i-1] <= x < edges[i]."""

    name: str
    source: str
    edges: tuple[float, ...]
    default: float = 0.0


@dataclass(frozen=True)
class OneHot:
    """One slot per vocabulary entry plus a last slot for OOV and missing."""

    name: str
    source: str
    vocabulary: tuple[str, ...]
    default: float = 0.0


@dataclass(frozen=True)
class HashBucket:
    """stable_hash64(name + "\\x00" + value) % buckets."""

    name: str
    source: str
    buckets: int
    default: float = 0.0


@dataclass(frozen=True)
class Cyclical:
    """sin and cos of the hour of day or the day of week of a millisecond timestamp."""

    name: str
    source: str
    period: Period
    default: float = 0.0


@dataclass(frozen=True)
class Differs:
    """1.0 when both sources are present and unequal, else 0.0."""

    name: str
    sources: tuple[str, str]
    default: float = 0.0


Feature: TypeAlias = (
    Identity | Log1p | Standardize | Bucketize | OneHot | HashBucket | Cyclical | Differs
)


def feature_sources(feature: Feature) -> tuple[str, ...]:
    """Returns the source names a feature reads, in the order it reads them."""
    if isinstance(feature, Differs):
        return feature.sources
    return (feature.source,)


def feature_output_names(feature: Feature) -> tuple[str, ...]:
    """Returns the output column names of one feature (see CONTRACT.md)."""
    if isinstance(feature, OneHot):
        return (
            *(f"{feature.name}={v}" for v in feature.vocabulary),
            f"{feature.name}={OOV_LABEL}",
        )
    if isinstance(feature, Cyclical):
        return (f"{feature.name}_sin", f"{feature.name}_cos")
    return (feature.name,)


@dataclass(frozen=True)
class FeatureSpec:
    """An ordered, validated list of features with a version label."""

    version: str
    features: tuple[Feature, ...]

    @functools.cached_property
    def output_names(self) -> tuple[str, ...]:
        """Names of the output columns, in order."""
        return tuple(n for f in self.features for n in feature_output_names(f))

    @functools.cached_property
    def width(self) -> int:
        """Number of output columns (the model's input width F)."""
        return sum(len(feature_output_names(f)) for f in self.features)

    @functools.cached_property
    def sources(self) -> frozenset[str]:
        """The Columns this spec reads; build only these on the serving path."""
        return frozenset(s for f in self.features for s in feature_sources(f))

    def to_dict(self) -> dict[str, object]:
        """Returns the card.yaml form; `parse_feature_spec(spec.to_dict()) == spec`."""
        return {"version": self.version, "features": [_feature_to_dict(f) for f in self.features]}


# Keys each transform accepts besides name, transform and default.
_TRANSFORM_KEYS: dict[str, frozenset[str]] = {
    "identity": frozenset({"source"}),
    "log1p": frozenset({"source"}),
    "standardize": frozenset({"source", "mean", "std"}),
    "bucketize": frozenset({"source", "edges"}),
    "one_hot": frozenset({"source", "vocabulary"}),
    "hash_bucket": frozenset({"source", "buckets"}),
    "cyclical": frozenset({"source", "period"}),
    "differs": frozenset({"sources"}),
}
_TRANSFORM_KIND: dict[str, SourceKind] = {
    "identity": "numeric",
    "log1p": "numeric",
    "standardize": "numeric",
    "bucketize": "numeric",
    "cyclical": "numeric",
    "one_hot": "categorical",
    "hash_bucket": "categorical",
    "differs": "categorical",
}
# Transforms whose missing output is fixed by the contract, so `default` would be ignored.
_DEFAULT_UNUSED = frozenset({"one_hot", "differs"})
_PERIODS: tuple[Period, ...] = ("hour_of_day", "day_of_week")


def parse_feature_spec(raw: Mapping[str, object]) -> FeatureSpec:
    """Parses and validates the `feature_spec` mapping of a card.yaml.

    Args:
        raw: The mapping as loaded from YAML.

    Returns:
        The validated spec.

    Raises:
        FeatureSpecError: The spec is malformed; the message names the feature.
    """
    if not isinstance(raw, Mapping):
        raise FeatureSpecError(f"feature_spec must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - {"version", "features"}
    if unknown:
        raise FeatureSpecError(f"feature_spec has unknown keys {sorted(map(str, unknown))}")
    version = raw.get("version")
    if not isinstance(version, str) or not version:
        raise FeatureSpecError(f"feature_spec.version must be a non-empty string, got {version!r}")
    items = raw.get("features")
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)) or not items:
        raise FeatureSpecError("feature_spec.features must be a non-empty list")
    features = tuple(_parse_feature(i, item) for i, item in enumerate(items))

    seen: set[str] = set()
    for feature in features:
        if feature.name in seen:
            raise FeatureSpecError(f"feature {feature.name!r}: name is used twice")
        seen.add(feature.name)
    outputs: set[str] = set()
    for feature in features:
        for out in feature_output_names(feature):
            if out in outputs:
                raise FeatureSpecError(
                    f"feature {feature.name!r}: output name {out!r} collides with another output"
                )
            outputs.add(out)
    return FeatureSpec(version=version, features=features)


def _parse_feature(index: int, item: object) -> Feature:
    if not isinstance(item, Mapping):
        raise FeatureSpecError(f"feature_spec.features[{index}] must be a mapping, got {item!r}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise FeatureSpecError(
            f"feature_spec.features[{index}]: name must be a non-empty string, got {name!r}"
        )
    where = f"feature {name!r}"
    _require_utf8(where, "name", name)
    transform = item.get("transform")
    if not isinstance(transform, str) or transform not in _TRANSFORM_KEYS:
        raise FeatureSpecError(
            f"{where}: transform must be one of {sorted(_TRANSFORM_KEYS)}, got {transform!r}"
        )
    allowed = _TRANSFORM_KEYS[transform] | {"name", "transform", "default"}
    unknown = set(item) - allowed
    if unknown:
        raise FeatureSpecError(
            f"{where}: {transform} does not take {sorted(map(str, unknown))}; "
            f"allowed keys are {sorted(allowed)}"
        )
    missing = _TRANSFORM_KEYS[transform] - set(item)
    if missing:
        raise FeatureSpecError(f"{where}: {transform} requires {sorted(missing)}")

    default = _finite(where, "default", item.get("default", 0.0))
    if transform in _DEFAULT_UNUSED and default != 0.0:
        raise FeatureSpecError(
            f"{where}: {transform} does not use default (its missing output is fixed by the "
            f"contract), got {default!r}"
        )

    kind = _TRANSFORM_KIND[transform]
    if transform == "differs":
        pair = item["sources"]
        if not isinstance(pair, Sequence) or isinstance(pair, (str, bytes)) or len(pair) != 2:
            raise FeatureSpecError(f"{where}: sources must be a list of two sources, got {pair!r}")
        a, b = (_source(where, kind, s) for s in pair)
        if a == b:
            raise FeatureSpecError(f"{where}: sources must differ, got {a!r} twice")
        return Differs(name=name, sources=(a, b), default=default)

    source = _source(where, kind, item["source"])
    if transform == "identity":
        return Identity(name=name, source=source, default=default)
    if transform == "log1p":
        return Log1p(name=name, source=source, default=default)
    if transform == "standardize":
        mean = _finite(where, "mean", item["mean"])
        std = _finite(where, "std", item["std"])
        if std <= 0.0:
            raise FeatureSpecError(f"{where}: std must be > 0, got {std!r}")
        return Standardize(name=name, source=source, mean=mean, std=std, default=default)
    if transform == "bucketize":
        edges = _float_list(where, "edges", item["edges"])
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise FeatureSpecError(f"{where}: edges must be strictly increasing, got {list(edges)}")
        return Bucketize(name=name, source=source, edges=edges, default=default)
    if transform == "one_hot":
        return OneHot(
            name=name,
            source=source,
            vocabulary=_vocabulary(where, item["vocabulary"]),
            default=default,
        )
    if transform == "hash_bucket":
        buckets = item["buckets"]
        if isinstance(buckets, bool) or not isinstance(buckets, int):
            raise FeatureSpecError(f"{where}: buckets must be an integer, got {buckets!r}")
        if not 1 <= buckets <= MAX_HASH_BUCKETS:
            raise FeatureSpecError(
                f"{where}: buckets must be in [1, {MAX_HASH_BUCKETS}], got {buckets}"
            )
        return HashBucket(name=name, source=source, buckets=buckets, default=default)
    # cyclical: the only transform left.
    period = item["period"]
    if period not in _PERIODS:
        raise FeatureSpecError(f"{where}: period must be one of {list(_PERIODS)}, got {period!r}")
    return Cyclical(name=name, source=source, period=period, default=default)


def _source(where: str, kind: SourceKind, value: object) -> str:
    if not isinstance(value, str):
        raise FeatureSpecError(f"{where}: source must be a string, got {value!r}")
    actual = source_kind(value)
    if actual is None:
        raise FeatureSpecError(f"{where}: unknown source {value!r}")
    if actual != kind:
        raise FeatureSpecError(f"{where}: needs a {kind} source, got {actual} source {value!r}")
    return value


def _require_utf8(where: str, key: str, value: str) -> None:
    # Hashes are over UTF-8 bytes; a lone surrogate has none.
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise FeatureSpecError(f"{where}: {key} is not valid Unicode text ({exc.reason})") from None


def _finite(where: str, key: str, value: object) -> float:
    # bool is an int subclass; `default: true` is a typo, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FeatureSpecError(f"{where}: {key} must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise FeatureSpecError(f"{where}: {key} must be finite, got {value!r}")
    return result


def _float_list(where: str, key: str, value: object) -> tuple[float, ...]:
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or not value:
        raise FeatureSpecError(f"{where}: {key} must be a non-empty list, got {value!r}")
    return tuple(_finite(where, f"{key}[{i}]", v) for i, v in enumerate(value))


def _vocabulary(where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or not value:
        raise FeatureSpecError(f"{where}: vocabulary must be a non-empty list, got {value!r}")
    vocabulary: list[str] = []
    for i, entry in enumerate(value):
        # "" is the missing value, so it can only ever land in the OOV slot.
        if not isinstance(entry, str) or not entry:
            raise FeatureSpecError(
                f"{where}: vocabulary[{i}] must be a non-empty string, got {entry!r}"
            )
        _require_utf8(where, f"vocabulary[{i}]", entry)
        if entry == OOV_LABEL:
            raise FeatureSpecError(f"{where}: vocabulary may not contain {OOV_LABEL!r}")
        if entry in vocabulary:
            raise FeatureSpecError(f"{where}: vocabulary has {entry!r} twice")
        vocabulary.append(entry)
    return tuple(vocabulary)


def _feature_to_dict(feature: Feature) -> dict[str, object]:
    out: dict[str, object] = {"name": feature.name}
    if isinstance(feature, Identity):
        out.update(transform="identity", source=feature.source)
    elif isinstance(feature, Log1p):
        out.update(transform="log1p", source=feature.source)
    elif isinstance(feature, Standardize):
        out.update(
            transform="standardize", source=feature.source, mean=feature.mean, std=feature.std
        )
    elif isinstance(feature, Bucketize):
        out.update(transform="bucketize", source=feature.source, edges=list(feature.edges))
    elif isinstance(feature, OneHot):
        out.update(transform="one_hot", source=feature.source, vocabulary=list(feature.vocabulary))
    elif isinstance(feature, HashBucket):
        out.update(transform="hash_bucket", source=feature.source, buckets=feature.buckets)
    elif isinstance(feature, Cyclical):
        out.update(transform="cyclical", source=feature.source, period=feature.period)
    else:
        out.update(transform="differs", sources=list(feature.sources))
    if not isinstance(feature, (OneHot, Differs)):
        out["default"] = feature.default
    return out
