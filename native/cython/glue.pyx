# cython: language_level=3, boundscheck=False, wraparound=False
"""Per-request glue on the serving path (module gateway._native._glue).

- Hashing: the native twin of gateway/features/hashing.py, which is the reference: same
  contract (CONTRACT.md, stable_hash64), same column-hash rule ("" -> 0, a present value
  whose hash is 0 -> 1), tested equal in tests/native/.
- TransactionReader: the native twin of gateway/features/transactions.py; it reads
  protobuf Transactions straight into the encoder's input matrices, tested equal to
  gateway.features.columns.columns_from_transactions in tests/native/.
- ResponseWriter: riskwire.v1.ScoreResponse / ScoreBatchResponse wire bytes, equal to
  python protobuf's SerializeToString() (gateway/grpc/responses.py is the reference),
  tested equal in tests/native/test_response_parity.py.
- Histogram: the native twin of gateway/telemetry/histogram.py's fixed-bucket
  histogram, tested equal in tests/unit/test_histogram.py.
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


# --- ScoreResponse / ScoreBatchResponse wire bytes ----------------------------------
#
# The writer emits exactly what python protobuf's SerializeToString() emits for the
# same riskwire.v1.ScoreResponse (gateway/grpc/responses.py is the reference; tests in
# tests/native/test_response_parity.py): known fields in field-number order; proto3
# defaults omitted (0, "", and +0.0 only: -0.0 and NaNs have bits and are written, with
# their sign and payload); enums as int32 varints (negative ones sign-extended to 10
# bytes); uint64 as varints; a repeated message always written, even when empty.
# https://protobuf.dev/programming-guides/encoding/
#
# Inputs are taken as protobuf's constructor takes them: a string field accepts str,
# bytes holding UTF-8, or None (unset); numbers accept what float() / __index__ give,
# except bools for integer fields (TypeError; see _refuse_bool).
# Out-of-range integers raise ValueError, a str with lone surrogates UnicodeEncodeError,
# invalid UTF-8 bytes UnicodeDecodeError, other types TypeError, as protobuf does.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from cpython.number cimport PyNumber_Index
from libc.stdint cimport INT32_MAX, INT32_MIN, int32_t
from libc.math cimport INFINITY, isfinite
from libc.string cimport memcpy

cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char* data, Py_ssize_t size, const char* errors)

# Tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited).
cdef enum:
    TAG_TRANSACTION_ID = 0x0A
    TAG_SCORE = 0x11
    TAG_DECISION = 0x18
    TAG_MODEL_NAME = 0x22
    TAG_MODEL_VERSION = 0x2A
    TAG_ARM = 0x30
    TAG_DECISION_SOURCE = 0x38
    TAG_REASON_CODES = 0x42
    TAG_ROUTE = 0x4A
    TAG_CONFIG_VERSION = 0x50
    TAG_AUDIT_ID = 0x5A
    TAG_SERVER_LATENCY_US = 0x60
    TAG_FALLBACK_REASON = 0x6A
    TAG_RC_CODE = 0x0A
    TAG_RC_FEATURE = 0x12
    TAG_RC_CONTRIBUTION = 0x19
    TAG_RC_DESCRIPTION = 0x22
    TAG_BATCH_RESPONSES = 0x0A


cdef struct Utf8:
    const char* data
    Py_ssize_t size


cdef struct ReasonCodeWire:
    Utf8 code
    Utf8 feature
    Utf8 description
    uint64_t contribution_bits
    Py_ssize_t body_size


cdef int _utf8(object value, Utf8* out) except -1:
    # Points `out` at the UTF-8 of a string field's value; the caller keeps `value` alive.
    if isinstance(value, str):
        # Raises UnicodeEncodeError for lone surrogates, as protobuf does.
        out.data = PyUnicode_AsUTF8AndSize(value, &out.size)
    elif value is None:
        out.data = NULL
        out.size = 0
    elif isinstance(value, bytes):
        out.data = PyBytes_AS_STRING(value)
        out.size = PyBytes_GET_SIZE(value)
        PyUnicode_DecodeUTF8(out.data, out.size, NULL)  # UnicodeDecodeError, like protobuf
    else:
        raise TypeError(f"a string field takes str, got {type(value).__name__}")
    return 0


cdef double _double(object value) except? -1.0:
    if value is None:
        return 0.0
    return value  # float() rules: TypeError for str, OverflowError for a huge int


cdef int _refuse_bool(object value, str field) except -1:
    # protobuf 6.33 takes a bool for an integer field with a DeprecationWarning (an
    # error from 7.34 on, and a bare "Value out of range: 1" ValueError where warnings
    # are errors): refused here, and by the reference, now.
    raise TypeError(f"{field} takes an int, got bool")


cdef uint64_t _uint64(object value, str field) except? 0xFFFFFFFFFFFFFFFF:
    cdef int overflow
    cdef long long number
    if value is None:
        return 0
    if value is True or value is False:
        _refuse_bool(value, field)
    if not isinstance(value, int):
        value = PyNumber_Index(value)  # TypeError for float, like protobuf
    number = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow == 0 and number >= 0:
        return <uint64_t>number
    if overflow == 1:  # >= 2**63: rare, so the slower checked conversion
        try:
            return PyLong_AsUnsignedLongLong(value)
        except OverflowError:
            pass
    raise ValueError(f"Value out of range: {field} is uint64, got {value}")


cdef int32_t _enum(object value, str field) except? -1:
    cdef int overflow
    cdef long long number
    if value is None:
        return 0
    if value is True or value is False:
        _refuse_bool(value, field)
    if not isinstance(value, int):
        value = PyNumber_Index(value)
    number = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or number < INT32_MIN or number > INT32_MAX:
        raise ValueError(f"Value out of range: {field} is an int32 enum, got {value}")
    return <int32_t>number


cdef inline uint64_t _double_bits(double value) noexcept nogil:
    cdef uint64_t bits
    memcpy(&bits, &value, 8)
    return bits


cdef inline Py_ssize_t _varint_size(uint64_t value) noexcept nogil:
    cdef Py_ssize_t size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


cdef inline Py_ssize_t _string_field_size(Py_ssize_t size) noexcept nogil:
    return 0 if size == 0 else 1 + _varint_size(<uint64_t>size) + size


cdef inline Py_ssize_t _varint_field_size(uint64_t value) noexcept nogil:
    return 0 if value == 0 else 1 + _varint_size(value)


cdef inline unsigned char* _put_varint(unsigned char* p, uint64_t value) noexcept nogil:
    while value >= 0x80:
        p[0] = <unsigned char>(value | 0x80)
        value >>= 7
        p += 1
    p[0] = <unsigned char>value
    return p + 1


cdef inline unsigned char* _put_varint_field(unsigned char* p, unsigned char tag,
                                             uint64_t value) noexcept nogil:
    if value == 0:
        return p
    p[0] = tag
    return _put_varint(p + 1, value)


cdef inline unsigned char* _put_string(unsigned char* p, unsigned char tag,
                                       Utf8 value) noexcept nogil:
    if value.size == 0:
        return p
    p[0] = tag
    p = _put_varint(p + 1, <uint64_t>value.size)
    memcpy(p, value.data, value.size)
    return p + value.size


cdef inline unsigned char* _put_double(unsigned char* p, unsigned char tag,
                                       uint64_t bits) noexcept nogil:
    # Only +0.0 (all bits zero) is the default; byte by byte is little-endian anywhere.
    cdef int i
    if bits == 0:
        return p
    p[0] = tag
    for i in range(8):
        p[1 + i] = <unsigned char>(bits >> (8 * i))
    return p + 9


@cython.final
cdef class ResponseWriter:
    """Writes riskwire.v1.ScoreResponse / ScoreBatchResponse wire bytes directly.

    The bytes equal python protobuf's SerializeToString() of the same message, so a
    gRPC handler can return them without building protobuf objects.
    """

    implementation = "native"

    def score_response(self, transaction_id, score, decision, model_name, model_version,
                       arm, decision_source, route, config_version, audit_id,
                       server_latency_us, fallback_reason, reason_codes=()):
        """Returns the ScoreResponse's bytes; reason_codes are objects with code,
        feature, contribution and description attributes (ReasonCodeFields)."""
        cdef Utf8 s_transaction_id, s_model_name, s_model_version, s_route, s_audit_id
        cdef Utf8 s_fallback_reason
        cdef uint64_t score_bits, v_decision, v_arm, v_decision_source
        cdef uint64_t v_config_version, v_server_latency_us
        cdef Py_ssize_t size, i, count = 0
        cdef ReasonCodeWire* codes = NULL
        cdef ReasonCodeWire* rc
        cdef tuple items = None
        cdef list keep = None
        cdef unsigned char* p
        cdef unsigned char* start
        # Convert (and validate) everything first: Python code may run here (__index__,
        # __float__, attribute lookups), none once writing starts.
        _utf8(transaction_id, &s_transaction_id)
        score_bits = _double_bits(_double(score))
        v_decision = <uint64_t><int64_t>_enum(decision, "decision")
        _utf8(model_name, &s_model_name)
        _utf8(model_version, &s_model_version)
        v_arm = <uint64_t><int64_t>_enum(arm, "arm")
        v_decision_source = <uint64_t><int64_t>_enum(decision_source, "decision_source")
        _utf8(route, &s_route)
        v_config_version = _uint64(config_version, "config_version")
        _utf8(audit_id, &s_audit_id)
        v_server_latency_us = _uint64(server_latency_us, "server_latency_us")
        _utf8(fallback_reason, &s_fallback_reason)
        size = (
            _string_field_size(s_transaction_id.size)
            + (0 if score_bits == 0 else 9)
            + _varint_field_size(v_decision)
            + _string_field_size(s_model_name.size)
            + _string_field_size(s_model_version.size)
            + _varint_field_size(v_arm)
            + _varint_field_size(v_decision_source)
            + _string_field_size(s_route.size)
            + _varint_field_size(v_config_version)
            + _string_field_size(s_audit_id.size)
            + _varint_field_size(v_server_latency_us)
            + _string_field_size(s_fallback_reason.size)
        )
        if reason_codes is not None:
            items = tuple(reason_codes)  # a snapshot: the caller's list may change
            count = len(items)
        try:
            if count:
                codes = <ReasonCodeWire*>PyMem_Malloc(count * sizeof(ReasonCodeWire))
                if codes == NULL:
                    raise MemoryError()
                keep = []  # owns the attribute values whose UTF-8 `codes` points into
                for i in range(count):
                    item = items[i]
                    rc = &codes[i]
                    value = item.code
                    keep.append(value)
                    _utf8(value, &rc.code)
                    value = item.feature
                    keep.append(value)
                    _utf8(value, &rc.feature)
                    rc.contribution_bits = _double_bits(_double(item.contribution))
                    value = item.description
                    keep.append(value)
                    _utf8(value, &rc.description)
                    rc.body_size = (
                        _string_field_size(rc.code.size)
                        + _string_field_size(rc.feature.size)
                        + (0 if rc.contribution_bits == 0 else 9)
                        + _string_field_size(rc.description.size)
                    )
                    size += 1 + _varint_size(<uint64_t>rc.body_size) + rc.body_size
            out = PyBytes_FromStringAndSize(NULL, size)
            start = <unsigned char*>PyBytes_AS_STRING(out)
            p = _put_string(start, TAG_TRANSACTION_ID, s_transaction_id)
            p = _put_double(p, TAG_SCORE, score_bits)
            p = _put_varint_field(p, TAG_DECISION, v_decision)
            p = _put_string(p, TAG_MODEL_NAME, s_model_name)
            p = _put_string(p, TAG_MODEL_VERSION, s_model_version)
            p = _put_varint_field(p, TAG_ARM, v_arm)
            p = _put_varint_field(p, TAG_DECISION_SOURCE, v_decision_source)
            for i in range(count):
                rc = &codes[i]
                p[0] = TAG_REASON_CODES
                p = _put_varint(p + 1, <uint64_t>rc.body_size)
                p = _put_string(p, TAG_RC_CODE, rc.code)
                p = _put_string(p, TAG_RC_FEATURE, rc.feature)
                p = _put_double(p, TAG_RC_CONTRIBUTION, rc.contribution_bits)
                p = _put_string(p, TAG_RC_DESCRIPTION, rc.description)
            p = _put_string(p, TAG_ROUTE, s_route)
            p = _put_varint_field(p, TAG_CONFIG_VERSION, v_config_version)
            p = _put_string(p, TAG_AUDIT_ID, s_audit_id)
            p = _put_varint_field(p, TAG_SERVER_LATENCY_US, v_server_latency_us)
            p = _put_string(p, TAG_FALLBACK_REASON, s_fallback_reason)
        finally:
            PyMem_Free(codes)
        if p - start != size:  # pragma: no cover - a bug in the size pass
            raise AssertionError(f"ScoreResponse writer wrote {p - start} of {size} bytes")
        return out

    def score_batch_response(self, responses):
        """Returns a ScoreBatchResponse's bytes from already-encoded ScoreResponse bytes,
        in order (field 1, each one length-delimited)."""
        cdef tuple items = tuple(responses)  # a snapshot: the caller's list may change
        cdef Py_ssize_t count = len(items)
        cdef Py_ssize_t size = 0, length, i
        cdef unsigned char* p
        cdef unsigned char* start
        for i in range(count):
            item = items[i]
            if not isinstance(item, bytes):
                raise TypeError(
                    f"responses[{i}] must be bytes (an encoded ScoreResponse), "
                    f"got {type(item).__name__}"
                )
            length = PyBytes_GET_SIZE(item)
            size += 1 + _varint_size(<uint64_t>length) + length
        out = PyBytes_FromStringAndSize(NULL, size)
        start = <unsigned char*>PyBytes_AS_STRING(out)
        p = start
        for i in range(count):
            item = items[i]
            length = PyBytes_GET_SIZE(item)
            p[0] = TAG_BATCH_RESPONSES
            p = _put_varint(p + 1, <uint64_t>length)
            memcpy(p, PyBytes_AS_STRING(item), length)
            p += length
        return out


# --- Fixed-bucket histogram -----------------------------------------------------------

@cython.final
cdef class Histogram:
    """A fixed-bucket histogram with Prometheus `le` buckets, recorded per request.

    The native twin of gateway/telemetry/histogram.py's Histogram (the reference; same
    API and semantics, tested equal in tests/unit/test_histogram.py): bucket i counts
    values <= edges[i], one more bucket counts the rest (+Inf); NaN is counted in
    nan_count only. record() never releases the GIL, so a histogram shared by threads
    stays consistent.
    """

    cdef double* _edges
    cdef uint64_t* _counts
    cdef Py_ssize_t _n  # edges; _counts has _n + 1 slots
    cdef uint64_t _count
    cdef uint64_t _nan_count
    cdef double _sum
    cdef tuple _edge_values

    implementation = "native"

    def __cinit__(self, edges):
        cdef tuple values = tuple([float(e) for e in edges])
        cdef Py_ssize_t i
        cdef double previous = -INFINITY
        cdef double edge
        for i in range(len(values)):
            edge = values[i]
            if not isfinite(edge):
                raise ValueError(f"histogram edges must be finite, got {edge!r} at [{i}]")
            if i and not edge > previous:
                raise ValueError(
                    f"histogram edges must be strictly increasing, got {previous!r} then "
                    f"{edge!r} at [{i}]"
                )
            previous = edge
        self._n = len(values)
        self._edges = <double*>PyMem_Malloc(max(self._n, 1) * sizeof(double))
        self._counts = <uint64_t*>PyMem_Malloc((self._n + 1) * sizeof(uint64_t))
        if self._edges == NULL or self._counts == NULL:
            raise MemoryError()
        for i in range(self._n):
            self._edges[i] = values[i]
        self._edge_values = values
        self.reset()

    def __dealloc__(self):
        PyMem_Free(self._edges)
        PyMem_Free(self._counts)

    cdef inline void _record(self, double value) noexcept nogil:
        # Lower bound: the first edge >= value (le semantics; -0.0 == 0.0), else +Inf.
        cdef Py_ssize_t lo = 0, hi = self._n, mid
        if value != value:
            self._nan_count += 1
            return
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._edges[mid] < value:
                lo = mid + 1
            else:
                hi = mid
        self._counts[lo] += 1
        self._count += 1
        self._sum += value

    def record(self, double value):
        """Counts one value."""
        self._record(value)

    def record_many(self, values):
        """Counts each value of a 1-D float64 array, in order (== record() for each)."""
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"record_many takes a 1-D array, got {array.ndim} dimensions")
        cdef const double[::1] view = np.ascontiguousarray(array)
        cdef Py_ssize_t i
        for i in range(view.shape[0]):
            self._record(view[i])

    def counts(self):
        """Returns the per-bucket counts, uint64 [len(edges) + 1], not cumulative."""
        out = np.empty(self._n + 1, dtype=np.uint64)
        cdef uint64_t[::1] view = out
        memcpy(&view[0], self._counts, (self._n + 1) * sizeof(uint64_t))
        return out

    def reset(self):
        """Zeroes every count and the sum."""
        cdef Py_ssize_t i
        for i in range(self._n + 1):
            self._counts[i] = 0
        self._count = 0
        self._nan_count = 0
        self._sum = 0.0

    @property
    def edges(self):
        """The finite upper bounds, increasing (the +Inf bucket is implied)."""
        return self._edge_values

    @property
    def count(self):
        """Values recorded, NaN excluded."""
        return self._count

    @property
    def sum(self):
        """The float64 sum of the values counted, accumulated in record order."""
        return self._sum

    @property
    def nan_count(self):
        """NaN values recorded (in no bucket)."""
        return self._nan_count

    def __repr__(self):
        return f"Histogram(edges={self._edge_values!r}, count={self._count})"
