"""Native sealing of audit decision records (native/cpp/audit.cpp).

Each function writes exactly its Python reference's bytes (gateway/audit/records.py,
gateway/audit/sink.py), or answers None where the reference takes another path.
"""

from typing import Any

class EntityHasher:
    """records.EntityHasher: the first ``hex_chars`` hex digits of HMAC-SHA256."""

    def __init__(self, key: bytes, hex_chars: int) -> None: ...
    def __call__(self, value: str) -> str: ...
    @property
    def hex_chars(self) -> int: ...

def decision_payload(
    hasher: EntityHasher,
    result: Any,
    keys: Any,
    amount_minor: Any,
    currency: Any,
    latency_us: Any,
) -> bytes | None:
    """sink.decision_json's bytes with the three ids hashed by ``hasher``; None where
    the reference would not take its direct path."""

def seal_line(
    key_id: Any, kind: Any, payload: bytes, prev: Any, seq: Any, ts_ms: Any, worker: Any
) -> tuple[str, bytes] | None:
    """records.seal's (digest, line) for a canonical payload; None for anything but str
    and 64-bit int arguments."""

def seal_lines(
    key_id: Any,
    kind: Any,
    payloads: Any,
    prev: Any,
    seq: Any,
    ts_ms: Any,
    worker: Any,
) -> tuple[str, bytes, list[int]] | None:
    """records.seal_lines's (last digest, lines joined, each line's end) for a list of
    canonical payloads; None where seal_line would decline any of them."""

def use_portable_sha256(portable: bool) -> None:
    """The portable SHA-256 (True), or the CPU's SHA extensions where it has them."""

def sha256_implementation() -> str:
    """ "sha-ni" or "portable": the SHA-256 compression in use."""

def sha256_hex(data: bytes) -> str:
    """hashlib.sha256(data).hexdigest(), computed natively."""
