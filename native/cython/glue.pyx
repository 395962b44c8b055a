# cython: language_level=3, boundscheck=False, wraparound=False
"""Per-request glue on the serving path (module gateway._native._glue).

- Hashing: the native twin of gateway/features/hashing.py, which is the reference: same
  contract (CONTRACT.md, stable_hash64), same column-hash rule ("" -> 0, a present value
  whose hash is 0 -> 1), tested equal in tests/native/.
- TransactionReader: the native twin of gateway/features/transactions.py; it reads
  protobuf Transactions straight into the encoder's input matrices, tested equal to
  gateway.features.columns.columns_from_transactions in tests/native/.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport NAN
from libc.stdint cimport int64_t, uint64_t

cimport numpy as cnp

import numpy as np

cnp.import_array()

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


# How a TransactionReader input reads one Transaction (gateway/features/transactions.py
# names them; these are the same operations).
cdef enum ReadKind:
    READ_INT             # float(txn.<name>), an int64 field
    READ_TENURE          # float(txn.customer_tenure_days), NaN when unset
    READ_AMOUNT          # amount_minor / 10**exponent of txn.currency
    READ_AMOUNT_USD      # the same, times the currency's USD rate
    READ_NUMERIC_EXTRA   # txn.numeric_extras[<name>], NaN when absent
    READ_STR             # column hash of txn.<name>, a string field
    READ_CHANNEL         # column hash of the channel's enum name, "" for 0 and unknown
    READ_CATEGORICAL_EXTRA  # column hash of txn.categorical_extras[<name>], "" when absent

_NUMERIC_KINDS = {
    "int": READ_INT,
    "tenure": READ_TENURE,
    "amount": READ_AMOUNT,
    "amount_usd": READ_AMOUNT_USD,
    "numeric_extra": READ_NUMERIC_EXTRA,
}
_HASH_KINDS = {
    "str": READ_STR,
    "channel": READ_CHANNEL,
    "categorical_extra": READ_CATEGORICAL_EXTRA,
}


cdef int* _kinds(list reads, dict known, str what) except NULL:
    cdef Py_ssize_t i
    cdef int* kinds = <int*>PyMem_Malloc(max(len(reads), 1) * sizeof(int))
    if kinds == NULL:
        raise MemoryError()
    for i in range(len(reads)):
        op = reads[i][0]
        if op not in known:
            PyMem_Free(kinds)
            raise ValueError(f"{what}[{i}]: unknown read {op!r}; expected one of {sorted(known)}")
        kinds[i] = known[op]
    return kinds


cdef class TransactionReader:
    """Reads protobuf Transactions into an encoder's input matrices, in one pass.

    Built once per encoder from its inputs (see gateway/features/transactions.py):
    `numeric` lists (read, name) pairs and `hashed` (read, name, prefix) triples, where
    read is one of int, tenure, amount, amount_usd, numeric_extra (numeric) or str,
    channel, categorical_extra (hashed) and name the Transaction field or extras key.
    `currencies` maps each known code to (10**exponent, USD rate) as floats,
    `channel_names` each Channel number to the source value ("" for none), and
    `unknown_currency` is the exception raised, with the code, for any other currency.
    """

    cdef readonly Py_ssize_t numeric_inputs
    cdef readonly Py_ssize_t hash_inputs
    cdef int* _numeric_kinds
    cdef int* _hash_kinds
    cdef uint64_t* _prefix_states
    cdef tuple _numeric_names
    cdef tuple _hash_names
    cdef tuple _channel_hashes  # per hash input: {Channel number: column hash}, or None
    cdef dict _currencies
    cdef object _unknown_currency

    def __cinit__(self, numeric, hashed, dict currencies not None,
                  dict channel_names not None, unknown_currency):
        cdef list numeric_reads = list(numeric)
        cdef list hash_reads = list(hashed)
        cdef Py_ssize_t i
        cdef bytes prefix
        self.numeric_inputs = len(numeric_reads)
        self.hash_inputs = len(hash_reads)
        self._numeric_kinds = _kinds(numeric_reads, _NUMERIC_KINDS, "numeric")
        self._hash_kinds = _kinds(hash_reads, _HASH_KINDS, "hashed")
        self._prefix_states = <uint64_t*>PyMem_Malloc(max(self.hash_inputs, 1) * sizeof(uint64_t))
        if self._prefix_states == NULL:
            raise MemoryError()
        self._numeric_names = tuple(str(read[1]) for read in numeric_reads)
        self._hash_names = tuple(str(read[1]) for read in hash_reads)
        channel_hashes = []
        for i in range(self.hash_inputs):
            prefix = hash_reads[i][2]
            self._prefix_states[i] = fnv1a64_update(
                FNV_OFFSET, <const unsigned char*>prefix, len(prefix)
            )
            if self._hash_kinds[i] == READ_CHANNEL:
                channel_hashes.append({
                    int(number): column_hash(name, self._prefix_states[i])
                    for number, name in channel_names.items()
                })
            else:
                channel_hashes.append(None)
        self._channel_hashes = tuple(channel_hashes)
        self._currencies = {
            str(code): (float(entry[0]), float(entry[1])) for code, entry in currencies.items()
        }
        self._unknown_currency = unknown_currency

    def __dealloc__(self):
        PyMem_Free(self._numeric_kinds)
        PyMem_Free(self._hash_kinds)
        PyMem_Free(self._prefix_states)

    def read(self, txns):
        """Returns (numeric, hashes) for a sequence of n Transactions.

        numeric is float64 [numeric_inputs, n] (NaN = missing), hashes uint64
        [hash_inputs, n] (0 = missing), both C-contiguous, one row per input: what
        gateway._native._encoder.Program.encode takes.
        """
        cdef list items = txns if type(txns) is list else list(txns)
        cdef Py_ssize_t n = len(items)
        cdef cnp.npy_intp dims[2]
        dims[0] = self.numeric_inputs
        dims[1] = n
        numeric = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT64, 0)
        dims[0] = self.hash_inputs
        hashes = cnp.PyArray_EMPTY(2, dims, cnp.NPY_UINT64, 0)
        cdef double* x = <double*>cnp.PyArray_DATA(<cnp.ndarray>numeric)
        cdef uint64_t* h = <uint64_t*>cnp.PyArray_DATA(<cnp.ndarray>hashes)
        cdef Py_ssize_t r, j
        cdef int kind
        cdef double value
        cdef uint64_t hashed
        cdef object txn, name, item, extras, entry
        for r in range(n):
            txn = items[r]
            extras = None  # txn.numeric_extras, fetched once per transaction
            for j in range(self.numeric_inputs):
                kind = self._numeric_kinds[j]
                name = self._numeric_names[j]
                if kind == READ_NUMERIC_EXTRA:
                    if extras is None:
                        extras = txn.numeric_extras
                    # `in` then `[]` (slot calls) costs half of `.get` (a method call);
                    # `[]` alone would insert the missing key into the message.
                    value = <double>extras[name] if name in extras else NAN
                elif kind == READ_INT:
                    value = <double>(<int64_t>getattr(txn, name))
                elif kind == READ_TENURE:
                    if txn.HasField("customer_tenure_days"):
                        value = <double>(<int64_t>txn.customer_tenure_days)
                    else:
                        value = NAN
                else:
                    # currency.amount_major / to_usd: float(minor) / float(10**e) [* rate],
                    # each step one IEEE 754 operation, so the result is bit-identical.
                    item = txn.currency
                    entry = self._currencies.get(item)
                    if entry is None:
                        raise self._unknown_currency(item)
                    value = <double>(<int64_t>txn.amount_minor) / <double>(<tuple>entry)[0]
                    if kind == READ_AMOUNT_USD:
                        value = value * <double>(<tuple>entry)[1]
                x[j * n + r] = value
            extras = None  # txn.categorical_extras, fetched once per transaction
            for j in range(self.hash_inputs):
                kind = self._hash_kinds[j]
                name = self._hash_names[j]
                if kind == READ_STR:
                    hashed = column_hash(getattr(txn, name), self._prefix_states[j])
                elif kind == READ_CHANNEL:
                    # Unknown numbers (proto3 enums are open) are "no channel", like 0.
                    item = (<dict>self._channel_hashes[j]).get(txn.channel)
                    hashed = MISSING_HASH if item is None else <uint64_t>item
                else:
                    if extras is None:
                        extras = txn.categorical_extras
                    if name in extras:
                        hashed = column_hash(extras[name], self._prefix_states[j])
                    else:
                        hashed = MISSING_HASH
                h[j * n + r] = hashed
        return numeric, hashes
