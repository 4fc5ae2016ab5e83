# cython: language_level=3
"""CSR construction for :class:`dpm.accounts.AccountBook` (validated inputs only).

``count_scatter``, ``sort_merge_rows`` and ``compact_rows`` turn unordered (account, instrument, quantity) triples into CSR rows sorted by
instrument id with duplicates summed in input order:

1. counting sort by account (stable, O(P + N)), skipped when the accounts are already non-decreasing;
2. per account, skipped when the row is already strictly increasing: rows whose instrument-id span
   is small next to their length are sorted and merged through a bitmap over the ids (no comparisons);
   others by a stable insertion sort (short rows) or merge sort, then adjacent duplicates are summed.
   Both paths sum duplicates left to right in input order, so the result is bit-identical to that
   order of summation whatever the path;
3. rows are compacted when duplicates were merged.

The caller (``dpm.accounts``) checks every index range before the call; nothing here can fail except
memory allocation, which is done before the GIL is released.
"""
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memmove

cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil


cdef enum:
    INSERTION_MAX = 32  # rows up to this length use insertion sort


cdef inline void _insertion_sort(int64_t* key, double* val, int64_t n) noexcept nogil:
    cdef int64_t i, j, k
    cdef double v
    for i in range(1, n):
        k = key[i]
        v = val[i]
        j = i - 1
        while j >= 0 and key[j] > k:
            key[j + 1] = key[j]
            val[j + 1] = val[j]
            j -= 1
        key[j + 1] = k
        val[j + 1] = v


cdef void _merge_sort(int64_t* key, double* val, int64_t n,
                      int64_t* tkey, double* tval) noexcept nogil:
    """Stable bottom-up merge sort of (key, val) pairs; tkey/tval are scratch of length n."""
    cdef int64_t width, lo, mid, hi, i, j, k, s
    cdef int64_t* src_k = key
    cdef double* src_v = val
    cdef int64_t* dst_k = tkey
    cdef double* dst_v = tval
    cdef int64_t* sw_k
    cdef double* sw_v
    # sorted runs of INSERTION_MAX first: fewer passes
    s = 0
    while s < n:
        hi = s + INSERTION_MAX
        if hi > n:
            hi = n
        _insertion_sort(key + s, val + s, hi - s)
        s = hi
    width = INSERTION_MAX
    while width < n:
        lo = 0
        while lo < n:
            mid = lo + width
            if mid > n:
                mid = n
            hi = lo + 2 * width
            if hi > n:
                hi = n
            i = lo
            j = mid
            k = lo
            while i < mid and j < hi:
                if src_k[j] < src_k[i]:  # strict: ties take the left run first (stable)
                    dst_k[k] = src_k[j]
                    dst_v[k] = src_v[j]
                    j += 1
                else:
                    dst_k[k] = src_k[i]
                    dst_v[k] = src_v[i]
                    i += 1
                k += 1
            while i < mid:
                dst_k[k] = src_k[i]
                dst_v[k] = src_v[i]
                i += 1
                k += 1
            while j < hi:
                dst_k[k] = src_k[j]
                dst_v[k] = src_v[j]
                j += 1
                k += 1
            lo = hi
        sw_k = src_k
        src_k = dst_k
        dst_k = sw_k
        sw_v = src_v
        src_v = dst_v
        dst_v = sw_v
        width *= 2
    if src_k != key:
        memcpy(key, src_k, <size_t>n * sizeof(int64_t))
        memcpy(val, src_v, <size_t>n * sizeof(double))


cdef inline int64_t _sort_merge_row(int64_t* key, double* val, int64_t n,
                                    int64_t* tkey, double* tval) noexcept nogil:
    """Sort one row by key (stable), sum equal keys in order; return the unique count."""
    cdef int64_t i, w
    cdef bint ordered = True
    if n <= 1:
        return n
    for i in range(1, n):
        if key[i] <= key[i - 1]:
            ordered = False
            break
    if ordered:
        return n
    if n <= INSERTION_MAX:
        _insertion_sort(key, val, n)
    else:
        _merge_sort(key, val, n, tkey, tval)
    w = 0
    for i in range(1, n):
        if key[i] == key[w]:
            val[w] += val[i]
        else:
            w += 1
            key[w] = key[i]
            val[w] = val[i]
    return w + 1


def is_strictly_increasing_pairs(const int64_t[::1] major, const int64_t[::1] minor):
    """(is major non-decreasing, is (major, minor) strictly increasing lexicographically)."""
    cdef Py_ssize_t i, n = major.shape[0]
    cdef bint nondec = True, strict = True
    with nogil:
        for i in range(1, n):
            if major[i] < major[i - 1]:
                nondec = False
                strict = False
                break
            if major[i] == major[i - 1] and minor[i] <= minor[i - 1]:
                strict = False
        if not strict and nondec:
            # finish the non-decreasing check after the first tie
            for i in range(1, n):
                if major[i] < major[i - 1]:
                    nondec = False
                    break
    return bool(nondec), bool(strict)


def count_scatter(const int64_t[::1] account, const int64_t[::1] instrument, const double[::1] quantity,
                  bint account_sorted,
                  int64_t[::1] indptr, int64_t[::1] inst_out, double[::1] qty_out):
    """Counting sort by account (stable): fill ``indptr`` (N+1) and rows of ``inst_out``/``qty_out``."""
    cdef Py_ssize_t p = account.shape[0]
    cdef Py_ssize_t n = indptr.shape[0] - 1
    cdef Py_ssize_t a, j
    cdef int64_t dst
    cdef int64_t* cursor = NULL
    if not account_sorted:
        cursor = <int64_t*>malloc(<size_t>(n + 1) * sizeof(int64_t))
        if cursor == NULL:
            raise MemoryError()
    with nogil:
        for a in range(n + 1):
            indptr[a] = 0
        for j in range(p):
            indptr[account[j] + 1] += 1
        for a in range(n):
            indptr[a + 1] += indptr[a]
        if account_sorted:
            if p > 0:
                memcpy(&inst_out[0], &instrument[0], <size_t>p * sizeof(int64_t))
                memcpy(&qty_out[0], &quantity[0], <size_t>p * sizeof(double))
        else:
            for a in range(n):
                cursor[a] = indptr[a]
            for j in range(p):
                dst = cursor[account[j]]
                cursor[account[j]] = dst + 1
                inst_out[dst] = instrument[j]
                qty_out[dst] = quantity[j]
    free(cursor)


cdef inline int64_t _bitmap_row(int64_t* key, double* val, int64_t n, int64_t kmin, int64_t kmax,
                                uint64_t* bits, double* qsum) noexcept nogil:
    """Sort + merge one row through a bitmap over the ids [kmin, kmax]: O(n + (kmax - kmin) / 64).

    ``qsum[id]`` takes the first quantity of ``id`` and then adds the later ones in input order, so
    the sums equal the left-to-right sums of the comparison-sort path. ``bits`` is all zero on entry
    and on exit.
    """
    cdef int64_t i, k, w, w0 = kmin >> 6, w1 = kmax >> 6, u = 0
    cdef uint64_t word, mask
    for i in range(n):
        k = key[i]
        mask = (<uint64_t>1) << (k & 63)
        if bits[k >> 6] & mask:
            qsum[k] += val[i]
        else:
            bits[k >> 6] |= mask
            qsum[k] = val[i]
    for w in range(w0, w1 + 1):
        word = bits[w]
        while word:
            k = (w << 6) + __builtin_ctzll(word)
            key[u] = k
            val[u] = qsum[k]
            u += 1
            word &= word - 1
        bits[w] = 0
    return u


def sort_merge_rows(const int64_t[::1] indptr, int64_t[::1] inst, double[::1] qty, int64_t[::1] ucount,
                    Py_ssize_t start, Py_ssize_t stop, int64_t n_instruments):
    """Rows ``start:stop``: stable sort by instrument id, sum duplicates; ``ucount[a]`` = unique count.

    Rows whose id span is small next to their length go through a bitmap (no comparisons); others
    through insertion/merge sort. Both sum duplicates left to right in input order. Rows are
    independent, so chunks of rows may run on different threads with identical results.
    """
    cdef Py_ssize_t a
    cdef int64_t s, e, i, n, kmin, kmax, maxlen = 0
    cdef bint ordered
    cdef int64_t* tkey = NULL
    cdef double* tval = NULL
    cdef uint64_t* bits = NULL
    cdef double* qsum = NULL
    for a in range(start, stop):
        if indptr[a + 1] - indptr[a] > maxlen:
            maxlen = indptr[a + 1] - indptr[a]
    try:
        if maxlen > INSERTION_MAX:
            tkey = <int64_t*>malloc(<size_t>maxlen * sizeof(int64_t))
            tval = <double*>malloc(<size_t>maxlen * sizeof(double))
            if tkey == NULL or tval == NULL:
                raise MemoryError()
        if n_instruments > 0:
            bits = <uint64_t*>calloc(<size_t>((n_instruments + 63) >> 6), sizeof(uint64_t))
            qsum = <double*>malloc(<size_t>n_instruments * sizeof(double))
            if bits == NULL or qsum == NULL:
                raise MemoryError()
        with nogil:
            for a in range(start, stop):
                s = indptr[a]
                e = indptr[a + 1]
                n = e - s
                if n <= 1:
                    ucount[a] = n
                    continue
                ordered = True
                kmin = inst[s]
                kmax = inst[s]
                for i in range(s + 1, e):
                    if inst[i] <= inst[i - 1]:
                        ordered = False
                    if inst[i] < kmin:
                        kmin = inst[i]
                    elif inst[i] > kmax:
                        kmax = inst[i]
                if ordered:
                    ucount[a] = n
                elif bits != NULL and ((kmax >> 6) - (kmin >> 6)) <= 2 * n + 8:
                    ucount[a] = _bitmap_row(&inst[s], &qty[s], n, kmin, kmax, bits, qsum)
                else:
                    ucount[a] = _sort_merge_row(&inst[s], &qty[s], n, tkey, tval)
    finally:
        free(tkey)
        free(tval)
        free(bits)
        free(qsum)


def compact_rows(int64_t[::1] indptr, int64_t[::1] inst, double[::1] qty, const int64_t[::1] ucount):
    """Move the first ``ucount[a]`` entries of every row left so rows are contiguous; fix ``indptr``.

    Returns the new number of positions.
    """
    cdef Py_ssize_t n = indptr.shape[0] - 1
    cdef Py_ssize_t a
    cdef int64_t s, u, dst = 0
    with nogil:
        for a in range(n):
            s = indptr[a]  # read before this row's entry is overwritten
            u = ucount[a]
            if dst != s and u > 0:
                # destination never overtakes the source: memmove handles the overlap
                memmove(&inst[dst], &inst[s], <size_t>u * sizeof(int64_t))
                memmove(&qty[dst], &qty[s], <size_t>u * sizeof(double))
            indptr[a] = dst
            dst += u
        indptr[n] = dst
    return dst
