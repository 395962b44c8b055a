"""Columns (encoder input) from the generator's table and from protobuf Transactions.

Serving and training cannot drift because there is one derivation per source:
Transactions are first laid out as the raw fields of a Table (same column names and
dtypes as the CSV), and `columns_from_table` derives every source from that layout
with one function per source. `sources` restricts the work to what a spec reads, so
the serving path builds only the few raw fields a model needs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from gateway.features import currency
from gateway.features.spec import (
    CATEGORICAL_EXTRAS_PREFIX,
    CATEGORICAL_SOURCES,
    NUMERIC_EXTRAS_PREFIX,
    NUMERIC_SOURCES,
    source_kind,
)
from riskwire.v1 import scoring_pb2

Table: TypeAlias = Mapping[str, npt.NDArray[Any]]
Columns: TypeAlias = dict[str, npt.NDArray[Any]]

CHANNEL_UNSPECIFIED = "CHANNEL_UNSPECIFIED"
"""The proto3 zero value of Channel: the channel was not sent, so the source is ""."""

# Table columns holding int64 values, float64 values (NaN = missing), and str otherwise.
_INT_FIELDS = frozenset({"amount_minor", "timestamp_ms"})
_FLOAT_FIELDS = frozenset({"customer_tenure_days"})
_STR_FIELDS = (
    "transaction_id",
    "account_id",
    "card_id",
    "merchant_id",
    "merchant_category_code",
    "currency",
    "country",
    "channel",
    "entry_mode",
    "device_id",
    "ip_country",
)


# --- one function per source: Table -> column -------------------------------------------


def _amount(table: Table) -> npt.NDArray[np.float64]:
    return currency.amount_major_array(table["amount_minor"], table["currency"])


def _amount_usd(table: Table) -> npt.NDArray[np.float64]:
    return currency.to_usd_array(table["amount_minor"], table["currency"])


def _int_as_float(field: str) -> Callable[[Table], npt.NDArray[np.float64]]:
    def build(table: Table) -> npt.NDArray[np.float64]:
        return np.asarray(table[field], dtype=np.int64).astype(np.float64)

    return build


def _float(field: str) -> Callable[[Table], npt.NDArray[np.float64]]:
    def build(table: Table) -> npt.NDArray[np.float64]:
        return np.array(table[field], dtype=np.float64)

    return build


def _str(field: str) -> Callable[[Table], npt.NDArray[np.object_]]:
    def build(table: Table) -> npt.NDArray[np.object_]:
        return np.array(table[field], dtype=object)

    return build


def _channel(table: Table) -> npt.NDArray[np.object_]:
    channel = np.array(table["channel"], dtype=object)
    channel[channel == CHANNEL_UNSPECIFIED] = ""
    return channel


_Builder: TypeAlias = Callable[[Table], npt.NDArray[Any]]

# source -> (table columns it reads, builder)
_SOURCES: dict[str, tuple[tuple[str, ...], _Builder]] = {
    "amount": (("amount_minor", "currency"), _amount),
    "amount_usd": (("amount_minor", "currency"), _amount_usd),
    "amount_minor": (("amount_minor",), _int_as_float("amount_minor")),
    "timestamp_ms": (("timestamp_ms",), _int_as_float("timestamp_ms")),
    "customer_tenure_days": (("customer_tenure_days",), _float("customer_tenure_days")),
    "channel": (("channel",), _channel),
}
for _field in CATEGORICAL_SOURCES - {"channel"}:
    _SOURCES[_field] = ((_field,), _str(_field))
assert set(_SOURCES) == NUMERIC_SOURCES | CATEGORICAL_SOURCES


def _source_plan(source: str) -> tuple[tuple[str, ...], _Builder]:
    """Returns (table columns read, builder) for any source, extras included."""
    plan = _SOURCES.get(source)
    if plan is not None:
        return plan
    kind = source_kind(source)
    if kind == "numeric":
        column = "x_" + source[len(NUMERIC_EXTRAS_PREFIX) :]
        return (column,), _float(column)
    if kind == "categorical":
        column = "c_" + source[len(CATEGORICAL_EXTRAS_PREFIX) :]
        return (column,), _str(column)
    raise ValueError(f"unknown source {source!r}")


def _table_sources(table: Table) -> frozenset[str]:
    sources = set(_SOURCES)
    sources.update(NUMERIC_EXTRAS_PREFIX + c[2:] for c in table if c.startswith("x_") and c[2:])
    sources.update(CATEGORICAL_EXTRAS_PREFIX + c[2:] for c in table if c.startswith("c_") and c[2:])
    return frozenset(sources)


Transaction: TypeAlias = scoring_pb2.Transaction
_Extractor: TypeAlias = Callable[[Sequence[Transaction]], npt.NDArray[Any]]


@dataclass(frozen=True)
class _Plan:
    """What to build for a set of sources; cached, since a spec asks for the same set."""

    steps: tuple[tuple[str, tuple[str, ...], _Builder], ...]  # (source, table columns, builder)
    fields: tuple[tuple[str, _Extractor], ...]  # (table column, Transaction extractor)


@functools.lru_cache(maxsize=256)
def _plan(sources: frozenset[str]) -> _Plan:
    steps = tuple((source, *_source_plan(source)) for source in sorted(sources))
    fields = sorted({field for _, columns, _ in steps for field in columns})
    return _Plan(steps=steps, fields=tuple((f, _field_extractor(f)) for f in fields))


def _build(plan: _Plan, table: Table) -> Columns:
    columns: Columns = {}
    for source, fields, build in plan.steps:
        for field in fields:
            if field not in table:
                raise ValueError(f"source {source!r} needs table column {field!r}, absent")
        columns[source] = build(table)
    return columns


def columns_from_table(table: Table, sources: Iterable[str] | None = None) -> Columns:
    """Builds Columns from a Table (the generator's CSV as arrays).

    Args:
        table: Column name to array, as `gateway.data.table` reads it.
        sources: The sources to build (a spec's `sources`); all that the table can give
            when None.

    Raises:
        ValueError: A source needs a table column that is absent.
        UnknownCurrencyError: An amount source meets a currency missing from the table.
    """
    wanted = _table_sources(table) if sources is None else frozenset(sources)
    return _build(_plan(wanted), table)


# --- Transactions -> Table fields ---------------------------------------------------------


def _channel_name(value: int) -> str:
    try:
        return scoring_pb2.Channel.Name(value)
    except ValueError:
        # proto3 enums are open: an unknown number from a newer client is "no channel".
        return CHANNEL_UNSPECIFIED


def _field_extractor(field: str) -> _Extractor:
    """Returns a function giving one table column for Transactions, with the table's dtype."""
    if field in _INT_FIELDS:
        return lambda txns: np.fromiter(
            (getattr(t, field) for t in txns), dtype=np.int64, count=len(txns)
        )
    if field == "customer_tenure_days":
        return lambda txns: np.fromiter(
            (
                float(t.customer_tenure_days) if t.HasField("customer_tenure_days") else math.nan
                for t in txns
            ),
            dtype=np.float64,
            count=len(txns),
        )
    if field == "channel":
        return lambda txns: np.array([_channel_name(t.channel) for t in txns], dtype=object)
    if field in _STR_FIELDS:
        return lambda txns: np.array([getattr(t, field) for t in txns], dtype=object)
    key = field[2:]
    if field.startswith("x_"):
        return lambda txns: np.fromiter(
            (t.numeric_extras.get(key, math.nan) for t in txns), dtype=np.float64, count=len(txns)
        )
    if field.startswith("c_"):
        return lambda txns: np.array(
            [t.categorical_extras.get(key, "") for t in txns], dtype=object
        )
    raise ValueError(f"no Transaction field for table column {field!r}")


def columns_from_transactions(
    txns: Sequence[Transaction], sources: Iterable[str] | None = None
) -> Columns:
    """Builds Columns from protobuf Transactions, exactly as `columns_from_table` would.

    Args:
        txns: The transactions, one row each.
        sources: The sources to build (a spec's `sources`); when None, every base source
            and every extra key that any transaction carries.
    """
    if sources is None:
        wanted = set(_SOURCES)
        wanted.update(NUMERIC_EXTRAS_PREFIX + k for t in txns for k in t.numeric_extras)
        wanted.update(CATEGORICAL_EXTRAS_PREFIX + k for t in txns for k in t.categorical_extras)
        plan = _plan(frozenset(wanted))
    else:
        plan = _plan(frozenset(sources))
    return _build(plan, {field: extract(txns) for field, extract in plan.fields})


# --- Table -> Transactions ----------------------------------------------------------------


def transactions_from_table(table: Table) -> list[Transaction]:
    """Builds one protobuf Transaction per table row.

    x_<key> NaN and c_<key> "" are left out of the extras maps (missing), m_<key> go to
    monitoring_attributes, and label / fraud_pattern are dropped.
    """
    n = len(table["transaction_id"])
    numeric = {c[2:]: np.asarray(table[c], dtype=np.float64) for c in table if c.startswith("x_")}
    categorical = {c[2:]: table[c] for c in table if c.startswith("c_")}
    monitoring = {c[2:]: table[c] for c in table if c.startswith("m_")}
    strings = {f: table[f] for f in _STR_FIELDS if f != "channel" and f in table}
    tenure = table.get("customer_tenure_days")
    txns: list[Transaction] = []
    for i in range(n):
        txn = Transaction()
        for field, values in strings.items():
            setattr(txn, field, str(values[i]))
        for field in _INT_FIELDS:
            if field in table:
                setattr(txn, field, int(table[field][i]))
        if "channel" in table:
            name = str(table["channel"][i])
            txn.channel = scoring_pb2.Channel.Value(name or CHANNEL_UNSPECIFIED)  # type: ignore[assignment]
        if tenure is not None and not math.isnan(float(tenure[i])):
            txn.customer_tenure_days = int(tenure[i])
        for key, xs in numeric.items():
            if not math.isnan(xs[i]):
                txn.numeric_extras[key] = float(xs[i])
        for key, cs in categorical.items():
            if cs[i] != "":
                txn.categorical_extras[key] = str(cs[i])
        for key, ms in monitoring.items():
            if ms[i] != "":
                txn.monitoring_attributes[key] = str(ms[i])
        txns.append(txn)
    return txns
