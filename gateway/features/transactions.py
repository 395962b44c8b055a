"""Encoder inputs straight from protobuf Transactions: the serving path's reader.

`columns_from_transactions` (columns.py) stays the definition of every source: it lays
Transactions out as a Table and derives each source as training does. That generality
costs about a hundred microseconds per call in numpy overhead, more than the rest of a
request, so serving reads Transactions through readers compiled once per encoder:

- `TransactionColumns`, pure Python: one walk per source, Columns for the reference
  encoder (`PythonEncoder.encode_transactions`);
- `gateway._native._glue.TransactionReader`, its Cython twin: one walk per transaction
  straight into the native encoder's input matrices (`NativeEncoder.encode_transactions`),
  with the categorical values hashed on the way. `source_read` gives it the same plan.

Both are tested equal to `columns_from_transactions` bit for bit, over random specs and
Transactions (tests/native/test_serving_parity.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias

import numpy as np

from gateway.features import currency
from gateway.features.columns import CHANNEL_UNSPECIFIED, Columns, Transaction
from gateway.features.spec import (
    CATEGORICAL_EXTRAS_PREFIX,
    CATEGORICAL_SOURCES,
    NUMERIC_EXTRAS_PREFIX,
    NUMERIC_SOURCES,
    source_kind,
)
from riskwire.v1 import scoring_pb2

ReadOp: TypeAlias = Literal[
    "int", "tenure", "amount", "amount_usd", "numeric_extra", "str", "channel", "categorical_extra"
]


class SourceRead(NamedTuple):
    """How one source is read from one Transaction."""

    op: ReadOp
    """int, tenure, amount, amount_usd, numeric_extra (numeric sources); str, channel,
    categorical_extra (categorical sources)."""
    name: str
    """The Transaction field, or the key of the extras map."""


_BASE_READS: dict[str, SourceRead] = {
    "amount": SourceRead("amount", "amount_minor"),
    "amount_usd": SourceRead("amount_usd", "amount_minor"),
    "amount_minor": SourceRead("int", "amount_minor"),
    "timestamp_ms": SourceRead("int", "timestamp_ms"),
    "customer_tenure_days": SourceRead("tenure", "customer_tenure_days"),
    "channel": SourceRead("channel", "channel"),
    **{field: SourceRead("str", field) for field in sorted(CATEGORICAL_SOURCES - {"channel"})},
}
assert set(_BASE_READS) == NUMERIC_SOURCES | CATEGORICAL_SOURCES


def source_read(source: str) -> SourceRead:
    """Returns how `source` is read from a Transaction (the plan both readers follow).

    Raises:
        ValueError: `source` is not a source CONTRACT.md defines.
    """
    read = _BASE_READS.get(source)
    if read is not None:
        return read
    kind = source_kind(source)
    if kind == "numeric":
        return SourceRead("numeric_extra", source[len(NUMERIC_EXTRAS_PREFIX) :])
    if kind == "categorical":
        return SourceRead("categorical_extra", source[len(CATEGORICAL_EXTRAS_PREFIX) :])
    raise ValueError(f"unknown source {source!r}")


CHANNEL_VALUES: dict[int, str] = {
    number: "" if name == CHANNEL_UNSPECIFIED else name
    for name, number in scoring_pb2.Channel.items()
}
"""Channel number -> the `channel` source's value; any other number (proto3 enums are
open) is "" like CHANNEL_UNSPECIFIED, as in columns.py."""

CURRENCY_SCALES: dict[str, tuple[float, float]] = {
    code: (float(10 ** currency.minor_unit_exponent(code)), currency.usd_rate(code))
    for code in sorted(currency.CURRENCIES)
}
"""Code -> (10**exponent, USD rate), the factors of currency.amount_major and to_usd,
for the native reader."""


_Read: TypeAlias = Callable[[Transaction], Any]


def _reader(read: SourceRead) -> _Read:
    """Returns a function of one Transaction giving the source's value (float or str)."""
    name = read.name
    if read.op == "int":
        return lambda t: float(getattr(t, name))
    if read.op == "tenure":
        return lambda t: (
            float(t.customer_tenure_days) if t.HasField("customer_tenure_days") else math.nan
        )
    if read.op == "amount":
        return lambda t: currency.amount_major(t.amount_minor, t.currency)
    if read.op == "amount_usd":
        return lambda t: currency.to_usd(t.amount_minor, t.currency)
    if read.op == "numeric_extra":
        return lambda t: t.numeric_extras.get(name, math.nan)
    if read.op == "str":
        return lambda t: getattr(t, name)
    if read.op == "channel":
        return lambda t: CHANNEL_VALUES.get(t.channel, "")
    return lambda t: t.categorical_extras.get(name, "")


class TransactionColumns:
    """Columns of a fixed set of sources from Transactions, compiled once.

    `TransactionColumns(sources)(txns)` equals `columns_from_transactions(txns, sources)`.
    """

    def __init__(self, sources: Iterable[str]) -> None:
        self._sources = frozenset(sources)
        self._reads = tuple(
            (
                source,
                _reader(source_read(source)),
                np.float64 if source_kind(source) == "numeric" else object,
            )
            for source in sorted(self._sources)
        )

    def __call__(self, txns: Sequence[Transaction]) -> Columns:
        """Returns one array per source: float64 (NaN missing) or object str ("" missing).

        Raises:
            UnknownCurrencyError: An amount source meets a currency missing from the table.
        """
        # One list per source beats columns_from_transactions' numpy steps at every
        # batch size (benchmarks/micro/encode.py): a spec reads few sources.
        return {
            source: np.array([read(t) for t in txns], dtype=dtype)
            for source, read, dtype in self._reads
        }


class ParsedTransactions(Protocol):
    """Transactions read by the native wire parser (gateway._native._encoder.ParsedBatch)."""

    def __len__(self) -> int: ...

    def transaction(self, index: int) -> dict[str, Any]:
        """Every field of transaction `index` by its proto name (converters.fields_of)."""
        ...

    def amount_and_currency(self, index: int) -> tuple[int, str]:
        """Transaction `index`'s amount_minor and currency (its audit record's inputs)."""
        ...


TransactionSource: TypeAlias = Sequence[Transaction] | ParsedTransactions
"""What the encoders read: protobuf Transactions, or the native parser's batch."""


def protobuf_transactions(
    source: TransactionSource, rows: Sequence[int] | None = None
) -> Sequence[Transaction]:
    """`source`'s transactions (only `rows`, in that order, when given) as protobuf
    messages: how the reference encoder reads a native ParsedBatch."""
    if isinstance(source, Sequence):
        return source if rows is None else [source[i] for i in rows]
    indexes = range(len(source)) if rows is None else rows
    return [scoring_pb2.Transaction(**source.transaction(i)) for i in indexes]
