# Declarations of gateway._native._glue for other Cython modules (cimport them from here).
from libc.stdint cimport uint64_t

# FNV-1a 64 continued from `state` over `size` bytes; start from FNV_OFFSET (glue.pyx).
cdef uint64_t fnv1a64_update(uint64_t state, const unsigned char* data,
                             Py_ssize_t size) noexcept nogil
# splitmix64's finalizer: stable_hash64(data) = splitmix64_finalize(fnv1a64(data)).
cdef uint64_t splitmix64_finalize(uint64_t z) noexcept nogil
# Column hash of one str (0 for "", 1 for a present value hashing to 0), FNV seeded
# with `prefix_state`.
cdef uint64_t column_hash(object value, uint64_t prefix_state) except? 0
