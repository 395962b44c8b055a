"""The generator's CSV table: one row per transaction, exact dtypes, lossless round trip.

The layout is fixed by ``gateway/features/CONTRACT.md``: the Transaction fields in
proto order, then ``x_<key>`` numeric extras, ``c_<key>`` categorical extras,
``m_<key>`` monitoring attributes, then ``label`` and ``fraud_pattern``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Table = dict[str, npt.NDArray[Any]]
"""Column name -> array; every array has the same length."""

BASE_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "account_id",
    "card_id",
    "merchant_id",
    "merchant_category_code",
    "amount_minor",
    "currency",
    "country",
    "channel",
    "entry_mode",
    "timestamp_ms",
    "device_id",
    "ip_country",
    "customer_tenure_days",
)
TRAILING_COLUMNS: tuple[str, ...] = ("label", "fraud_pattern")
INT_COLUMNS = frozenset({"amount_minor", "timestamp_ms", "label"})
FRAUD_PATTERNS: tuple[str, ...] = (
    "none",
    "card_testing",
    "account_takeover",
    "high_value_risky_mcc",
    "geo_mismatch",
)
_GROUP_PREFIXES = ("x_", "c_", "m_")


def column_kind(name: str) -> str:
    """The dtype kind of a column by name: ``"int"``, ``"float"`` or ``"str"``."""
    if name in INT_COLUMNS:
        return "int"
    if name == "customer_tenure_days" or name.startswith("x_"):
        return "float"
    return "str"


def canonical_order(names: Iterable[str]) -> list[str]:
    """Column names in the contract's order, keeping the given order within a group.

    Raises:
        ValueError: a base column is missing or a name fits no group.
    """
    names = list(names)
    missing = [c for c in BASE_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"table lacks required columns {missing}")
    groups: dict[str, list[str]] = {p: [] for p in _GROUP_PREFIXES}
    for name in names:
        if name in BASE_COLUMNS or name in TRAILING_COLUMNS:
            continue
        prefix = name[:2]
        if prefix not in groups or len(name) == 2:
            raise ValueError(
                f"column {name!r} is not a Transaction field, x_/c_/m_ extra, label or "
                "fraud_pattern"
            )
        groups[prefix].append(name)
    ordered = list(BASE_COLUMNS)
    for prefix in _GROUP_PREFIXES:
        ordered.extend(groups[prefix])
    ordered.extend(c for c in TRAILING_COLUMNS if c in names)
    return ordered


def validate_table(table: Mapping[str, npt.NDArray[Any]]) -> int:
    """Check names, lengths and dtypes; returns the row count.

    Raises:
        ValueError: with the offending column named.
    """
    canonical_order(table)
    lengths = {name: len(col) for name, col in table.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"table columns differ in length: {lengths}")
    for name, col in table.items():
        kind = column_kind(name)
        if col.ndim != 1:
            raise ValueError(f"column {name!r} must be 1-D, got shape {col.shape}")
        if kind == "int" and col.dtype != np.int64:
            raise ValueError(f"column {name!r} must be int64, got {col.dtype}")
        if kind == "float" and col.dtype != np.float64:
            raise ValueError(f"column {name!r} must be float64, got {col.dtype}")
        if kind == "str" and col.dtype != np.object_:
            raise ValueError(f"column {name!r} must be an object array of str, got {col.dtype}")
    return next(iter(lengths.values()), 0)


def _format_column(name: str, col: npt.NDArray[Any]) -> list[str]:
    kind = column_kind(name)
    if kind == "int":
        return [str(v) for v in col.tolist()]
    if kind == "float":
        # repr() is the shortest string that parses back to the same float64, so the
        # round trip is lossless; NaN (missing) is written as an empty field.
        return ["" if math.isnan(v) else repr(v) for v in col.tolist()]
    values: list[str] = col.tolist()
    for v in values:
        if not isinstance(v, str):
            raise ValueError(f"column {name!r} holds a non-str value {v!r}")
    return values


_SPECIAL = frozenset(',"\r\n')


def _needs_quoting(columns: list[list[str]]) -> bool:
    return any(not _SPECIAL.isdisjoint(v) for col in columns for v in set(col))


def table_to_csv_bytes(table: Mapping[str, npt.NDArray[Any]]) -> bytes:
    """The exact bytes :func:`write_table` writes (UTF-8, ``\\n`` line ends, RFC 4180)."""
    validate_table(table)
    order = canonical_order(table)
    columns = [_format_column(name, table[name]) for name in order]
    if _needs_quoting(columns) or not _SPECIAL.isdisjoint("".join(order)):
        buf = io.StringIO(newline="")
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(order)
        writer.writerows(zip(*columns, strict=True))
        return buf.getvalue().encode("utf-8")
    # Nothing to quote: interleave the columns directly, which gives the csv module's
    # bytes several times faster than its writer does on 200k-row tables.
    n_rows, width = len(columns[0]), 2 * len(columns)
    parts: list[str] = [""] * (n_rows * width)
    for j, col in enumerate(columns):
        parts[2 * j :: width] = col
        parts[2 * j + 1 :: width] = ["\n" if j == len(columns) - 1 else ","] * n_rows
    return (",".join(order) + "\n" + "".join(parts)).encode("utf-8")


def write_table(table: Mapping[str, npt.NDArray[Any]], path: str | Path) -> None:
    """Write a table as CSV in the contract's column order."""
    Path(path).write_bytes(table_to_csv_bytes(table))


def _parse_column(name: str, values: Sequence[str]) -> npt.NDArray[Any]:
    kind = column_kind(name)
    try:
        if kind == "int":
            return np.array([int(v) for v in values], dtype=np.int64)
        if kind == "float":
            return np.array([float(v) if v else math.nan for v in values], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"column {name!r}: {exc}") from None
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _split_plain(text: str, n_cols: int) -> list[list[str]] | None:
    """Columns of a CSV body with no quoting, or None when it needs the csv module."""
    if '"' in text or "\r" in text:
        return None
    body = text[:-1] if text.endswith("\n") else text
    if not body:
        return [[] for _ in range(n_cols)]
    lines = body.split("\n")
    for i, line in enumerate(lines):
        if line.count(",") != n_cols - 1:
            raise ValueError(
                f"table CSV line {i + 2} has {line.count(',') + 1} fields, header has {n_cols}"
            )
    flat = body.replace("\n", ",").split(",")
    return [flat[j::n_cols] for j in range(n_cols)]


def table_from_csv_bytes(data: bytes) -> Table:
    """Parse CSV bytes written by :func:`table_to_csv_bytes`."""
    text = data.decode("utf-8")
    head, _, body = text.partition("\n")
    head = head.removesuffix("\r")  # CRLF files: the csv module handles the body
    header = next(csv.reader([head])) if head else []
    if not header:
        raise ValueError("table CSV is empty (no header)")
    canonical_order(header)
    if len(set(header)) != len(header):
        raise ValueError(f"table CSV repeats a column name: {header}")
    columns: list[Sequence[str]] | None = None
    if '"' not in head:
        plain = _split_plain(body, len(header))
        columns = list(plain) if plain is not None else None
    if columns is None:
        rows = list(csv.reader(io.StringIO(body, newline="")))
        for i, row in enumerate(rows):
            if len(row) != len(header):
                raise ValueError(
                    f"table CSV line {i + 2} has {len(row)} fields, header has {len(header)}"
                )
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    return {name: _parse_column(name, col) for name, col in zip(header, columns, strict=True)}


def read_table(path: str | Path) -> Table:
    """Read a table CSV with the contract's dtypes.

    Raises:
        ValueError: the header or a value does not fit the layout.
    """
    return table_from_csv_bytes(Path(path).read_bytes())


def data_digest(data: bytes) -> str:
    """``sha256:<hex>`` of a table's CSV bytes: the lineage key of training data."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
