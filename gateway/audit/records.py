"""One audit record: its fields, its canonical bytes, its digest, and the keyed hash.

A record is one line of a segment: a JSON object serialized canonically (keys sorted,
no whitespace, ASCII only, no NaN), so that anyone can recompute its digest from the
line alone, in any language, with no knowledge of how it was written:

    {"digest":"<hex>","key_id":"<8 hex>","kind":"decision","payload":{...},
     "prev":"<hex>","seq":41,"ts_ms":1764358659123,"worker":0}

- ``seq``: per worker, 0 for the chain's first record, +1 per record, across segments.
- ``ts_ms``: when the event happened (or, for the writer's own records, when they were
  written), integer milliseconds since the Unix epoch, UTC. An integer rather than
  RFC 3339 text: exact, cheap to compare, no time zone to get wrong.
- ``prev``: the ``digest`` of the record before it in the worker's chain, whichever
  segment that is in; 64 zeros for the chain's first record.
- ``digest``: lowercase hex SHA-256 of the canonical serialization of the record
  *without* its ``digest`` field. Since ``prev`` is inside what is hashed, each digest
  covers the whole chain before it: altering, removing or reordering any record
  breaks every link after it.

A line is valid only if it is exactly the canonical serialization of what it parses
to: a line that parses to the same object through a different spelling (an escape's
hex case, spacing) is an altered line, not the same record.

Entity identifiers (transaction, account, card ids) never appear in clear: they are
stored as :func:`hash_entity` of the id, an HMAC-SHA256 keyed with a secret from the
``key_file`` setting. The key itself is never written anywhere; ``key_id`` (the
first 8 hex of SHA-256 of the key) says which key made a record's hashes.

The writer thread seals decision records through ``gateway._native._audit`` when it is
built (native/cpp/audit.cpp): the same bytes as the Python here, which stays the
reference and the path for anything the native code declines (tests/native/
test_audit_parity.py). ``RISKWIRE_PURE_PYTHON`` turns it off with the other native
code, ``RISKWIRE_AUDIT_SEALING=python`` alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal, TypeAlias, get_args

from gateway.features.dispatch import pure_python_forced

RecordKind: TypeAlias = Literal[
    "decision",
    "shadow_score",
    "config_change",
    "model_load",
    "model_unload",
    "model_approval",
    "admin_refused",
    "recovery",
    "segment_start",
]
RECORD_KINDS: Final[frozenset[str]] = frozenset(get_args(RecordKind))

GENESIS: Final = "0" * 64
"""``prev`` of a chain's first record."""

ENTITY_HASH_HEX: Final = 32
"""Hex characters kept of an entity's HMAC-SHA256: 128 bits, far beyond collisions
for any number of transactions, and half the bytes per record of the full digest."""

MIN_KEY_BYTES: Final = 16

FIELDS: Final = frozenset({"digest", "key_id", "kind", "payload", "prev", "seq", "ts_ms", "worker"})

_HEX = frozenset("0123456789abcdef")


SEALING_ENV: Final = "RISKWIRE_AUDIT_SEALING"
"""``python``: seal with the reference below even where the native module is built (an
A/B switch for benchmarks, or a way to rule the native code out)."""


def native_audit() -> ModuleType | None:
    """``gateway._native._audit``, or None when it is not built, pure Python is forced,
    or ``RISKWIRE_AUDIT_SEALING=python``."""
    if pure_python_forced() or os.environ.get(SEALING_ENV, "").strip().lower() == "python":
        return None
    try:
        from gateway._native import _audit
    except ImportError:
        return None
    return _audit


NATIVE: ModuleType | None = native_audit()
"""What :func:`seal` and the decision records use; None: the Python below alone."""


def canonical(value: Mapping[str, Any]) -> bytes:
    """The canonical serialization: sorted keys, compact separators, ASCII, no NaN.

    Raises:
        ValueError: a float is NaN or infinite.
        TypeError: a value JSON cannot represent.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


class CanonicalJSON(bytes):
    """A payload already in canonical form: exactly :func:`canonical`'s bytes for the
    object it stands for. :func:`seal` splices it into the record as it is; whoever
    builds one answers for that equality (tests/unit/test_audit_fast.py holds the
    decision records' builder to it)."""

    __slots__ = ()


json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii
"""A str as canonical JSON: quoted, escaped as ``json.dumps(ensure_ascii=True)``
escapes it (the same C function). TypeError for anything but a str."""


def record_digest(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical serialization of ``fields`` (the record less its
    ``digest``)."""
    return hashlib.sha256(canonical(fields)).hexdigest()


def seal(
    *,
    seq: int,
    ts_ms: int,
    kind: RecordKind,
    worker: int,
    key_id: str,
    payload: Mapping[str, Any] | CanonicalJSON,
    prev: str,
) -> tuple[str, bytes]:
    """The record's digest and its line (newline included).

    ``payload`` may come serialized already (:class:`CanonicalJSON`): the record's
    other fields are then written around it, in canonical order, with no second
    serialization.

    Raises:
        ValueError, TypeError: ``payload`` holds what :func:`canonical` refuses.
    """
    if isinstance(payload, CanonicalJSON):
        if NATIVE is not None:
            # The same bytes (native/cpp/audit.cpp), or None for what only this takes.
            sealed: tuple[str, bytes] | None = NATIVE.seal_line(
                key_id, kind, payload, prev, seq, ts_ms, worker
            )
            if sealed is not None:
                return sealed
        # Keys in canonical (sorted) order; int.__repr__ is how json writes an int,
        # and refuses anything else.
        body = b"".join(
            (
                f'{{"key_id":{json_string(key_id)},"kind":{json_string(kind)},"payload":'.encode(
                    "ascii"
                ),
                payload,
                f',"prev":{json_string(prev)},"seq":{int.__repr__(seq)},'
                f'"ts_ms":{int.__repr__(ts_ms)},"worker":{int.__repr__(worker)}}}'.encode("ascii"),
            )
        )
    else:
        fields: dict[str, Any] = {
            "key_id": key_id,
            "kind": kind,
            "payload": payload,
            "prev": prev,
            "seq": seq,
            "ts_ms": ts_ms,
            "worker": worker,
        }
        body = canonical(fields)
    digest = hashlib.sha256(body).hexdigest()
    # The canonical line is the body with "digest" spliced in first (it sorts first):
    # no second serialization of the payload.
    line = b'{"digest":"' + digest.encode("ascii") + b'",' + body[1:] + b"\n"
    return digest, line


def seal_lines(
    *,
    seq: int,
    ts_ms: int,
    kind: RecordKind,
    worker: int,
    key_id: str,
    payloads: list[bytes],
    prev: str,
) -> tuple[str, bytes, list[int]]:
    """:func:`seal` of each canonical payload in turn, chained: the lines' seqs run on
    from ``seq`` and each line's prev is the digest of the one before (the first's:
    ``prev``).

    Returns:
        The last line's digest (``prev`` when there are no payloads), the lines
        joined, and each line's end offset in them.

    Raises:
        ValueError, TypeError: as :func:`seal` does.
    """
    if NATIVE is not None:
        # The same bytes in one call (native/cpp/audit.cpp), or None: the loop below.
        sealed: tuple[str, bytes, list[int]] | None = NATIVE.seal_lines(
            key_id, kind, payloads, prev, seq, ts_ms, worker
        )
        if sealed is not None:
            return sealed
    lines: list[bytes] = []
    ends: list[int] = []
    end = 0
    for i, payload in enumerate(payloads):
        prev, line = seal(
            seq=seq + i,
            ts_ms=ts_ms,
            kind=kind,
            worker=worker,
            key_id=key_id,
            payload=CanonicalJSON(payload),
            prev=prev,
        )
        lines.append(line)
        end += len(line)
        ends.append(end)
    return prev, b"".join(lines), ends


class RecordError(ValueError):
    """A line that is not a valid record; ``problem`` names what is wrong."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"{problem}: {detail}")
        self.problem = problem
        self.detail = detail


def parse_record(line: bytes) -> dict[str, Any]:
    """Parse and check one line (without its newline): structure, canonical form, digest.

    Raises:
        RecordError: ``unparsable`` (not a JSON object with the record's fields and
            types), ``not_canonical`` (the bytes are not the canonical form of what
            they parse to) or ``digest_mismatch`` (the content is not what was sealed).
    """
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordError("unparsable", f"not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise RecordError("unparsable", "not a JSON object")
    if set(record) != FIELDS:
        raise RecordError("unparsable", f"fields {sorted(record)}, expected {sorted(FIELDS)}")
    seq, ts_ms, worker = record["seq"], record["ts_ms"], record["worker"]
    for name, value in (("seq", seq), ("ts_ms", ts_ms), ("worker", worker)):
        if type(value) is not int or value < 0:
            raise RecordError("unparsable", f"{name} is {value!r}, not an integer >= 0")
    if record["kind"] not in RECORD_KINDS:
        raise RecordError("unparsable", f"unknown kind {record['kind']!r}")
    if not isinstance(record["payload"], dict):
        raise RecordError("unparsable", "payload is not an object")
    for name in ("digest", "prev"):
        value = record[name]
        if not (isinstance(value, str) and len(value) == 64 and set(value) <= _HEX):
            raise RecordError("unparsable", f"{name} is not 64 lowercase hex digits")
    try:
        again = canonical(record)
    except (TypeError, ValueError) as exc:  # NaN read back from a "NaN" literal
        raise RecordError("not_canonical", str(exc)) from None
    if again != line:
        raise RecordError("not_canonical", "the line is not the canonical form of its content")
    digest = record.pop("digest")
    actual = record_digest(record)
    record["digest"] = digest
    if actual != digest:
        raise RecordError(
            "digest_mismatch", f"content hashes to {actual[:16]}…, record says {digest[:16]}…"
        )
    return record


def hash_entity(key: bytes, value: str) -> str:
    """The keyed hash under which an entity id is stored (and looked up): the first
    :data:`ENTITY_HASH_HEX` hex digits of HMAC-SHA256(key, UTF-8 of ``value``).

    An empty id stays empty: there is nothing to hide, and a constant hash would
    only make "no id" look like an id.
    """
    if not value:
        return ""
    return hmac.digest(key, value.encode("utf-8"), "sha256").hex()[:ENTITY_HASH_HEX]


class EntityHasher:
    """:func:`hash_entity` under one key, for the writer thread's many calls.

    HMAC's two padded-key SHA-256 states are computed once and copied per id (RFC
    2104), under half the cost of a one-shot ``hmac.digest``, which re-derives them
    every call (benchmarks/micro/audit.py). Equal to :func:`hash_entity` (tested).
    """

    __slots__ = ("_inner", "_outer", "native")

    def __init__(self, key: bytes) -> None:
        self.native: Any = None if NATIVE is None else NATIVE.EntityHasher(key, ENTITY_HASH_HEX)
        """The native twin (same hashes), which sink.DecisionRecords hands to native code."""
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def __call__(self, value: str) -> str:
        if not value:
            return ""
        inner = self._inner.copy()
        inner.update(value.encode("utf-8"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()[:ENTITY_HASH_HEX]


def key_id(key: bytes) -> str:
    """Which key made a record's hashes: the first 8 hex of SHA-256 of the key."""
    return hashlib.sha256(key).hexdigest()[:8]


def load_key(path: Path, *, create: bool = False) -> bytes:
    """Read the keyed-hash secret from ``path`` (surrounding whitespace stripped).

    Args:
        path: the key file.
        create: when ``path`` does not exist, make it: 32 random bytes as hex, mode
            0600, appearing atomically so that workers starting together agree.

    Raises:
        FileNotFoundError: no such file and ``create`` is false.
        ValueError: the key is shorter than 16 bytes.
    """
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a private name, then linked into place: the key file
        # appears with its content or not at all, and link() refuses to replace one a
        # sibling worker made meanwhile (then both read that one).
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            draft.unlink()
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        # The message names the file and the length, never the content.
        raise ValueError(
            f"audit key file {path} holds {len(key)} bytes; at least {MIN_KEY_BYTES} needed"
        )
    return key
