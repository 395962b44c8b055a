# cython: language_level=3, boundscheck=False, wraparound=False
"""Per-request hashing glue on the serving path (module gateway._native._glue).

The native twin of gateway/features/hashing.py, which is the reference: same contract
(CONTRACT.md, stable_hash64), same column-hash rule ("" -> 0, a present value whose hash
is 0 -> 1), tested equal in tests/native/.
"""

from libc.stdint cimport uint64_t

import numpy as np

cdef extern from "Python.h":
    # Returns the str's UTF-8 bytes, cached inside the str object (no copy for ASCII).
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL

cdef uint64_t FNV_OFFSET = 0xCBF29CE484222325ULL
cdef uint64_t FNV_PRIME = 0x100000001B3ULL
cdef uint64_t MISSING_HASH = 0
cdef uint64_t ZERO_HASH_STANDIN = 1
cdef uint64_t BUCKETS = 10000


cdef uint64_t fnv1a64_update(uint64_t state, const unsigned char* data,
                             Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(size):
        # uint64_t arithmetic wraps mod 2**64, which is what FNV specifies.
        state = (state ^ data[i]) * FNV_PRIME
    return state


cdef uint64_t splitmix64_finalize(uint64_t z) noexcept nogil:
    z ^= z >> 30
    z *= 0xBF58476D1CE4E5B9ULL
    z ^= z >> 27
    z *= 0x94D049BB133111EBULL
    z ^= z >> 31
    return z


cdef inline uint64_t _hash_str(object value, uint64_t state) except? 0:
    cdef Py_ssize_t size
    cdef const char* data = PyUnicode_AsUTF8AndSize(value, &size)
    return splitmix64_finalize(fnv1a64_update(state, <const unsigned char*>data, size))


cdef uint64_t column_hash(object value, uint64_t prefix_state) except? 0:
    if not isinstance(value, str):
        raise TypeError(f"categorical values must be str, got {type(value).__name__}")
    if len(<str>value) == 0:
        return MISSING_HASH
    cdef uint64_t h = _hash_str(value, prefix_state)
    return ZERO_HASH_STANDIN if h == MISSING_HASH else h


def stable_hash64(data):
    """Returns splitmix64(FNV-1a 64(data)) for bytes-like `data`, an int in [0, 2**64)."""
    cdef const unsigned char[::1] view = data
    cdef Py_ssize_t size = view.shape[0]
    if size == 0:
        return splitmix64_finalize(FNV_OFFSET)
    return splitmix64_finalize(fnv1a64_update(FNV_OFFSET, &view[0], size))


def bucket(str salt not None, str key not None):
    """Returns the router bucket in [0, 10000): stable_hash64(salt + "\\x00" + key) % 10000."""
    cdef Py_ssize_t size
    cdef const char* data = PyUnicode_AsUTF8AndSize(salt, &size)
    cdef unsigned char separator = 0
    cdef uint64_t state = fnv1a64_update(FNV_OFFSET, <const unsigned char*>data, size)
    state = fnv1a64_update(state, &separator, 1)
    return _hash_str(key, state) % BUCKETS


def hash_column(values, bytes prefix not None=b""):
    """Returns the uint64 column hashes of a 1-D sequence of str.

    Each value hashes to stable_hash64(prefix + utf8(value)); "" (missing) to 0, and a
    present value whose hash is 0 to 1, so 0 always means missing.
    """
    cdef list items = values.tolist() if hasattr(values, "tolist") else list(values)
    cdef Py_ssize_t n = len(items)
    cdef Py_ssize_t i
    cdef uint64_t state = fnv1a64_update(FNV_OFFSET, <const unsigned char*>prefix, len(prefix))
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] hashes = out
    for i in range(n):
        hashes[i] = column_hash(items[i], state)
    return out
