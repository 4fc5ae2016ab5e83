# cython: language_level=3
# C-level API of _live.pyx that other kernel modules share (the C check path validates the book's
# CSR with the same check as the compaction kernels).
from libc.stdint cimport int64_t

cdef Py_ssize_t check_offsets(const int64_t[::1] ip, Py_ssize_t n_values, str name) except -1
