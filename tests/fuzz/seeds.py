"""Writes the fuzzer's seed corpus and the hand-made hostile regression inputs.

    .venv/bin/python -m tests.fuzz.seeds      # rewrites tests/fuzz/{corpus,regressions}/wire

Deterministic: the same bytes every run, so the committed files only change when this
script does. Seeds (corpus/wire/) are valid frames that reach every field, map and wire
type; the hostile inputs (regressions/wire/hostile-*) are malformed or extreme frames
that the regression replay must always run. Crash inputs found by the fuzzer go to
regressions/wire/ beside them, under their own names (see tests/fuzz/README.md).
"""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path
from typing import cast

from riskwire.v1 import scoring_pb2 as pb

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS_DIR = FUZZ_DIR / "corpus" / "wire"
REGRESSIONS_DIR = FUZZ_DIR / "regressions" / "wire"


def varint(value: int) -> bytes:
    """`value` (taken mod 2^64) as a protobuf varint."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def delimited(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


def full_transaction(index: int = 0) -> pb.Transaction:
    """Every field set, the maps with the keys tests/fuzz/wire_check.py's spec reads."""
    return pb.Transaction(
        transaction_id=f"txn-{index:04d}",
        account_id="acct-\u00e9",
        card_id="card-1",
        merchant_id="m-42",
        merchant_category_code="5732",
        amount_minor=12_345 + index,
        currency="USD",
        country="US",
        channel=pb.ECOMMERCE,
        entry_mode="CHIP",
        timestamp_ms=1_700_000_000_000 + index,
        device_id="dev-\u4e2d",
        ip_country="FR",
        customer_tenure_days=400,
        numeric_extras={"ratio": 1.5, "count": 3.0, "km": 120.0},
        categorical_extras={"card_type": "DEBIT", "home": "US"},
        monitoring_attributes={"age_band": "30-39"},
    )


def unknown_fields() -> bytes:
    """One unknown field of every wire type, a group with a nested group included."""
    return (
        tag(20, 0)
        + varint(2**64 - 1)
        + tag(21, 1)
        + struct.pack("<d", math.pi)
        + delimited(22, b"any bytes \xff")
        + tag(23, 3)
        + tag(24, 3)
        + tag(1, 0)
        + varint(5)
        + tag(24, 4)
        + tag(23, 4)
        + tag(25, 5)
        + struct.pack("<f", 1.0)
    )


def seed_frames() -> dict[str, bytes]:
    """Valid ScoreRequest / ScoreBatchRequest frames, by file name."""
    full = full_transaction()
    odd = pb.Transaction(
        transaction_id="x" * 129,
        amount_minor=-5,
        currency="JPY",
        channel=cast(pb.Channel, 99),  # proto3 enums are open
        timestamp_ms=-1,
        customer_tenure_days=0,
        numeric_extras={"ratio": math.nan, "count": -0.0, "km": math.inf, "": 5e-324},
        categorical_extras={"card_type": "", "home": "\U0001f600"},
    )
    unknown_currency = pb.Transaction(transaction_id="t", currency="XXX", amount_minor=1)
    frames = {
        "score-empty.bin": b"",
        "score-full.bin": pb.ScoreRequest(
            transaction=full, explain=True, route="canary"
        ).SerializeToString(deterministic=True),
        "score-odd-values.bin": pb.ScoreRequest(transaction=odd).SerializeToString(
            deterministic=True
        ),
        "batch-three.bin": pb.ScoreBatchRequest(
            transactions=[full_transaction(1), odd, unknown_currency], route="r"
        ).SerializeToString(deterministic=True),
        "batch-known-and-unknown-currency.bin": pb.ScoreBatchRequest(
            transactions=[full_transaction(2), unknown_currency, full_transaction(3)]
        ).SerializeToString(deterministic=True),
    }
    # Hand-built: unknown fields everywhere, a repeated singular field, merged
    # transactions, duplicate map keys, map entries missing their key or value.
    txn = full.SerializeToString(deterministic=True)
    entries = (
        delimited(15, delimited(1, b"ratio") + tag(2, 1) + struct.pack("<d", 2.0))
        + delimited(15, delimited(1, b"ratio") + tag(2, 1) + struct.pack("<d", 9.0))
        + delimited(15, tag(2, 1) + struct.pack("<d", 4.0))
        + delimited(16, delimited(1, b"card_type"))
        + delimited(16, delimited(2, b"CREDIT") + delimited(1, b"card_type"))
        + delimited(17, b"")
    )
    frames["score-unknown-fields-merged.bin"] = (
        unknown_fields()
        + delimited(1, txn + unknown_fields())
        + tag(2, 0)
        + varint(1)
        + delimited(1, entries + tag(9, 0) + varint(2**64 - 2) + tag(14, 0) + varint(2**40 + 7))
        + delimited(3, b"first")
        + delimited(3, b"second")
    )
    frames["batch-unknown-fields.bin"] = (
        delimited(1, txn)
        + unknown_fields()
        + delimited(1, entries + unknown_fields())
        + delimited(1, b"")
        + tag(2, 0)
        + varint(300)
    )
    return frames


def hostile_frames() -> dict[str, bytes]:
    """Malformed or extreme frames, by file name (all start with "hostile-")."""

    def groups(depth: int) -> bytes:
        return tag(30, 3) * depth + tag(30, 4) * depth

    many_empty = delimited(1, b"") * 5000
    frames = {
        # Unknown groups 100 deep are accepted by upb; 101 and 2000 are not.
        "groups-100-deep.bin": groups(100),
        "groups-101-deep.bin": groups(101),
        "groups-2000-deep.bin": groups(2000),
        "groups-99-deep-in-transaction.bin": delimited(1, groups(99)),
        "groups-100-deep-in-transaction.bin": delimited(1, groups(100)),
        "groups-unclosed.bin": tag(30, 3) * 3 + tag(30, 4),
        "group-wrong-end.bin": tag(30, 3) + tag(31, 4),
        "end-group-at-top.bin": tag(30, 4),
        "length-2-63.bin": tag(1, 2) + varint(2**63),
        "length-2-64-minus-1.bin": tag(1, 2) + varint(2**64 - 1),
        "length-2-31-minus-1.bin": tag(3, 2) + varint(2**31 - 1) + b"x",
        "length-past-end.bin": delimited(1, delimited(1, b"abc"))[:-1],
        "inner-length-past-outer.bin": tag(1, 2) + varint(4) + tag(1, 2) + varint(10) + b"ab",
        "varint-truncated.bin": tag(2, 0) + b"\xff" * 5,
        "varint-11-bytes.bin": tag(2, 0) + b"\xff" * 10 + b"\x01",
        "varint-10-bytes-high-bits.bin": tag(2, 0) + b"\xff" * 9 + b"\x7f",
        "tag-truncated.bin": b"\x80\x80",
        "tag-6-bytes.bin": b"\x88\x80\x80\x80\x80\x00\x00",
        "tag-2-32.bin": varint(2**32 | 2) + varint(1),
        "field-zero.bin": tag(0, 0) + varint(1),
        "wire-type-6.bin": tag(5, 6),
        "wire-type-7-in-map-entry.bin": delimited(1, delimited(15, tag(3, 7))),
        "fixed64-truncated.bin": delimited(1, tag(21, 1) + b"\x00" * 7),
        "ff-run-64.bin": b"\xff" * 64,
        "ff-run-in-transaction.bin": delimited(1, b"\xff" * 32),
        "invalid-utf8-id.bin": delimited(1, delimited(1, b"\xc0\x80")),
        "surrogate-in-map-key.bin": delimited(1, delimited(16, delimited(1, b"\xed\xa0\x80"))),
        "invalid-utf8-in-unknown-field.bin": delimited(1, delimited(40, b"\xff\xfe")),
        "many-empty-transactions.bin": many_empty,
        "many-map-entries.bin": delimited(1, delimited(15, b"") * 5000),
    }
    return {f"hostile-{name}": data for name, data in frames.items()}


def write(directory: Path, frames: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in frames.items():
        (directory / name).write_bytes(data)


def main() -> int:
    write(CORPUS_DIR, seed_frames())
    write(REGRESSIONS_DIR, hostile_frames())
    print(f"wrote {CORPUS_DIR} and {REGRESSIONS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
