"""Pure-Python stable_hash64 and the router's bucket (the reference for the native glue).

stable_hash64 = splitmix64 finalizer over FNV-1a 64 of the bytes (CONTRACT.md). It is
stable across processes and machines, unlike Python's salted `hash()`, so the same
account always lands in the same route bucket and the same hash_bucket feature slot.

Column hashing (what the native encoder receives for categorical sources) maps ""
(missing) to 0, and a present value whose hash happens to be 0 to 1 (`MISSING_HASH`,
`ZERO_HASH_STANDIN`), so 0 can mark missing without a second array. The reference
encoder applies the same rule to hash_bucket, so both implementations agree even for
that value (one FNV state in 2**64 has a zero hash).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = 0xFFFFFFFFFFFFFFFF
BUCKETS = 10_000
MISSING_HASH = 0
"""Column hash of "" (missing)."""
ZERO_HASH_STANDIN = 1
"""Column hash of a present value whose stable_hash64 is 0."""


def fnv1a64(data: bytes, state: int = FNV_OFFSET) -> int:
    """Continues FNV-1a 64 from `state` over `data` (start from FNV_OFFSET)."""
    h = state
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & MASK64
    return h


def splitmix64_finalize(z: int) -> int:
    """The splitmix64 finalizer: mixes every input bit into every output bit."""
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & MASK64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return z


def stable_hash64(data: bytes) -> int:
    """Returns splitmix64(FNV-1a 64(data)), an int in [0, 2**64)."""
    return splitmix64_finalize(fnv1a64(data))


def bucket(salt: str, key: str) -> int:
    """Returns the router bucket in [0, 10000): stable_hash64(salt + "\\x00" + key) % 10000."""
    return stable_hash64(salt.encode() + b"\x00" + key.encode()) % BUCKETS


def column_hash(value: str, prefix: bytes = b"") -> int:
    """Returns the column hash of one categorical value (see the module docstring)."""
    if value == "":
        return MISSING_HASH
    h = stable_hash64(prefix + value.encode())
    return ZERO_HASH_STANDIN if h == MISSING_HASH else h


def hash_column(values: npt.NDArray[Any], prefix: bytes = b"") -> npt.NDArray[np.uint64]:
    """Returns column hashes of an object array of str, as uint64.

    Args:
        values: 1-D object array of str; "" is missing.
        prefix: Bytes hashed before each present value (hash_bucket uses name + b"\\x00").
    """
    items = np.asarray(values, dtype=object).tolist()
    # Hash each distinct value once: merchant, device and account ids repeat a lot.
    memo: dict[str, int] = {}
    for value in set(items):
        if not isinstance(value, str):
            raise TypeError(f"categorical values must be str, got {type(value).__name__}")
        memo[value] = column_hash(value, prefix)
    return np.fromiter((memo[v] for v in items), dtype=np.uint64, count=len(items))
