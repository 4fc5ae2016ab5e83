# cython: language_level=3
"""Pre-trade checks of a live book without the interpreter lock (the binary channel's fast path).

Under a stream of fills, the writer thread holds the interpreter lock most of the time a check
waits for, so a check answered in Python waits for the lock longer than it computes (measured in
docs/benchmarks.md, "Session 17"). This module answers checks -- any number of legs, on an account
whose what-if state is known or can be built from the book's positions -- entirely in C:

* ``CheckTable`` holds what the C path reads: account and instrument name tables, pointers to the
  live book's version / margin / equity arrays and tradable flags, the current aggregation plan,
  and a bounded pool of account records (the positions behind each side's what-if state and the
  state itself, C-owned copies). It has a mutex of its own. The book writes everything the C path
  reads through the table's methods, each one C call that takes the mutex, so the mutex is never
  held while Python code runs (a holder could otherwise wait for the interpreter lock while a
  check waits for it) and a check sees each account's figures from one commit.
* A record whose market generation is old is recomputed in C from the positions it keeps (the
  bits of ``WhatIf.rebuilt``); one whose account version moved is not used (the book republishes
  the records of accounts it changes).
* An account without a record that is unchanged since the book's last compaction gets one built
  here, from the book's CSR of positions (``bind_positions``): the rows the Python path would give
  ``WhatIf``. The book writes the CSR fields the C path reads (an in-place resize, the dirty flag)
  through ``store_account`` and suspends the table while compaction swaps the CSR.
* ``CheckTable.serve`` is the connection loop of ``dpm.service.fastcheck.CheckChannel`` -- ``recv``,
  framing, the C check, ``send`` -- taking the interpreter lock only to call the channel's Python
  answer for anything else (an account changed since the last compaction that has no record, a
  malformed request, an error).

The answer is ``LiveBook.check``'s, bit for bit: the same kernels (``gather.h``) on the same
states, the same selects in the same order, the same reason text ("%.2f" is correctly rounded in
glibc as in Python).
"""
cimport cython
from libc.stdint cimport int64_t, int32_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, free, calloc, realloc
from libc.string cimport memcpy, memcmp, memmove, memset
from libc.math cimport isfinite, fabs
from libc.stdio cimport snprintf
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from dpm._core._live cimport check_offsets
from dpm._core._gather cimport (DPM_PARAMS_CAPSULE, dpm_agg_params, dpm_agg_out, dpm_out_layout, dpm_what_if,
                                dpm_account_state)

import numpy as np

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *a)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_trylock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)

cdef extern from "<sys/types.h>" nogil:
    ctypedef long ssize_t

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int MSG_NOSIGNAL

cdef extern from "<errno.h>" nogil:
    int errno
    int EINTR

cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void **p, size_t alignment, size_t size)

# the binary channel's frame layout (dpm/service/fastcheck.py documents it)
cdef enum:
    MAX_FRAME = 65535
    KIND_CHECK = 1
    KIND_PING = 2
    KIND_CHECK_REPLY = 0x81
    KIND_PONG = 0x82
    MAX_LEGS = 1024      # legs of one CHECK at most (dpm.service.fastcheck.MAX_LEGS)
    REPLY_ROOM = 512     # the largest reply the C path writes (a reason is under 100 bytes)
    # what the C path did with a request
    FALLBACK = 0
    ANSWERED = 1


# ----------------------------------------------------------------------------- name tables
cdef struct NameTable:
    uint64_t *hash      # 0: empty slot
    int64_t *value
    char **key
    uint32_t *klen
    size_t cap          # a power of two
    size_t n


cdef inline uint64_t _fnv1a(const char *s, size_t n) noexcept nogil:
    cdef uint64_t h = 1469598103934665603ULL
    cdef size_t k
    for k in range(n):
        h = (h ^ <uint8_t>s[k]) * 1099511628211ULL
    return h | 1  # never 0 (the empty mark)


cdef Py_ssize_t _nt_slot(const NameTable *t, uint64_t h, const char *s, size_t n) noexcept nogil:
    """The slot holding key ``s`` (hash ``h``), or -1."""
    if t.cap == 0:
        return -1
    cdef size_t j = <size_t>h & (t.cap - 1)
    while t.hash[j] != 0:
        if t.hash[j] == h and t.klen[j] == n and memcmp(t.key[j], s, n) == 0:
            return <Py_ssize_t>j
        j = (j + 1) & (t.cap - 1)
    return -1


cdef int64_t _nt_find(const NameTable *t, const char *s, size_t n) noexcept nogil:
    cdef Py_ssize_t j = _nt_slot(t, _fnv1a(s, n), s, n)
    return t.value[j] if j >= 0 else -1


cdef void _nt_free(NameTable *t) noexcept nogil:
    cdef size_t j
    for j in range(t.cap):
        if t.hash[j] != 0:
            free(t.key[j])
    free(t.hash)
    free(t.value)
    free(t.key)
    free(t.klen)
    t.hash = NULL
    t.value = NULL
    t.key = NULL
    t.klen = NULL
    t.cap = 0
    t.n = 0


cdef int _nt_alloc(NameTable *t, size_t cap) noexcept nogil:
    t.hash = <uint64_t *>calloc(cap, sizeof(uint64_t))
    t.value = <int64_t *>calloc(cap, sizeof(int64_t))
    t.key = <char **>calloc(cap, sizeof(char *))
    t.klen = <uint32_t *>calloc(cap, sizeof(uint32_t))
    t.cap = cap
    t.n = 0
    if t.hash == NULL or t.value == NULL or t.key == NULL or t.klen == NULL:
        _nt_free(t)
        return -1
    return 0


cdef void _nt_place(NameTable *t, uint64_t h, char *key, uint32_t n, int64_t v) noexcept nogil:
    """Insert a key known to be absent (the table has room)."""
    cdef size_t j = <size_t>h & (t.cap - 1)
    while t.hash[j] != 0:
        j = (j + 1) & (t.cap - 1)
    t.hash[j] = h
    t.key[j] = key
    t.klen[j] = n
    t.value[j] = v
    t.n += 1


cdef int _nt_put(NameTable *t, const char *s, size_t n, int64_t v) noexcept nogil:
    """Insert or overwrite ``s -> v``; -1 when out of memory (the table is unchanged)."""
    cdef uint64_t h = _fnv1a(s, n)
    cdef Py_ssize_t j = _nt_slot(t, h, s, n)
    if j >= 0:
        t.value[j] = v
        return 0
    cdef NameTable bigger
    if 2 * (t.n + 1) > t.cap:  # at most half full: short probe chains
        if _nt_alloc(&bigger, t.cap * 2 if t.cap else 64) != 0:
            return -1
        for j in range(t.cap):
            if t.hash[j] != 0:
                _nt_place(&bigger, t.hash[j], t.key[j], t.klen[j], t.value[j])
        free(t.hash)
        free(t.value)
        free(t.key)
        free(t.klen)
        t[0] = bigger
    cdef char *key = <char *>malloc(n + 1)
    if key == NULL:
        return -1
    memcpy(key, s, n)
    _nt_place(t, h, key, <uint32_t>n, v)
    return 0


# ----------------------------------------------------------------------------- records
cdef struct Record:
    int64_t account     # -1: free
    int64_t ver         # the account's version the positions are from
    int64_t gen         # the market generation the states are for
    int shared          # no resting orders: one state serves both sides
    int64_t n_b, n_a
    int64_t *ids_b      # positions + buy orders (strictly increasing ids), then sells
    double *q_b
    int64_t *ids_a
    double *q_a
    double *st_b        # state_size values each (st_a == st_b when shared)
    double *st_a
    void *mem           # one block holding all of the above


cdef inline void _put_u16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF


cdef inline void _put_u32(uint8_t *p, uint32_t v) noexcept nogil:
    cdef int k
    for k in range(4):
        p[k] = (v >> (8 * k)) & 0xFF


cdef inline void _put_u64(uint8_t *p, uint64_t v) noexcept nogil:
    cdef int k
    for k in range(8):
        p[k] = (v >> (8 * k)) & 0xFF


cdef inline void _put_f64(uint8_t *p, double x) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, &x, 8)
    _put_u64(p, v)


cdef inline uint32_t _get_u16(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8)


cdef inline uint32_t _get_u32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _get_u64(const uint8_t *p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int k
    for k in range(8):
        v |= (<uint64_t>p[k]) << (8 * k)
    return v


cdef inline double _get_f64(const uint8_t *p) noexcept nogil:
    cdef uint64_t v = _get_u64(p)
    cdef double x
    memcpy(&x, &v, 8)
    return x


cdef struct Scratch:
    # one connection's buffers for dpm_what_if (never shared between threads)
    double *work        # 64-byte aligned (posix_memalign), freed as they are
    double *outs
    Py_ssize_t work_size
    Py_ssize_t U
    dpm_agg_out o
    # a request's legs (names point into the request) and its orders by side (buys from 0, sells
    # from MAX_LEGS), MAX_LEGS each
    const char **lname
    uint32_t *llen
    double *lq
    int64_t *oid
    double *oq


cdef int _scratch_legs(Scratch *s) noexcept nogil:
    """The leg buffers (once per connection); -1 out of memory."""
    if s.lname != NULL:
        return 0
    s.lname = <const char **>malloc(MAX_LEGS * sizeof(char *))
    s.llen = <uint32_t *>malloc(MAX_LEGS * sizeof(uint32_t))
    s.lq = <double *>malloc(MAX_LEGS * sizeof(double))
    s.oid = <int64_t *>malloc(2 * MAX_LEGS * sizeof(int64_t))
    s.oq = <double *>malloc(2 * MAX_LEGS * sizeof(double))
    if s.lname == NULL or s.llen == NULL or s.lq == NULL or s.oid == NULL or s.oq == NULL:
        _scratch_free_legs(s)
        return -1
    return 0


cdef void _scratch_free_legs(Scratch *s) noexcept nogil:
    free(<void *>s.lname)
    free(s.llen)
    free(s.lq)
    free(s.oid)
    free(s.oq)
    s.lname = NULL
    s.llen = NULL
    s.lq = NULL
    s.oid = NULL
    s.oq = NULL


cdef void _scratch_free_work(Scratch *s) noexcept nogil:
    free(s.work)
    free(s.outs)
    s.work = NULL
    s.outs = NULL


cdef void _scratch_free(Scratch *s) noexcept nogil:
    _scratch_free_work(s)
    _scratch_free_legs(s)


cdef int _scratch_fit(Scratch *s, Py_ssize_t work_size, Py_ssize_t U) noexcept nogil:
    """Buffers for a plan of ``work_size`` work values and ``U`` underlyings; -1 out of memory."""
    if s.work != NULL and s.work_size == work_size and s.U == U:
        return 0
    _scratch_free_work(s)  # (not the legs: a request may be being answered)
    # 64-byte aligned, as the Python what-if's buffers (the kernels load whole cache lines)
    if posix_memalign(<void **>&s.work, 64, <size_t>work_size * sizeof(double) + 64) != 0:
        s.work = NULL
        return -1
    if posix_memalign(<void **>&s.outs, 64, <size_t>(3 + 6 * U) * sizeof(double) + 64) != 0:
        s.outs = NULL
        return -1
    s.work_size = work_size
    s.U = U
    dpm_out_layout(s.outs, U, &s.o)  # WhatIf's layout of the outputs
    return 0


cdef void _lay_out(Record *r, void *mem, Py_ssize_t S, Py_ssize_t nb, Py_ssize_t na, int shared) noexcept nogil:
    """Lay a record over ``mem``: two states of ``S`` values, the quantities, then the ids (one
    side only when ``shared``: no resting orders)."""
    cdef double *d = <double *>mem
    r.mem = mem
    r.st_b = d
    r.st_a = d if shared else d + S
    r.q_b = d + 2 * S
    r.q_a = r.q_b if shared else d + 2 * S + nb
    r.ids_b = <int64_t *>(d + 2 * S + nb + na)
    r.ids_a = r.ids_b if shared else r.ids_b + nb
    r.n_b = nb
    r.n_a = nb if shared else na
    r.shared = shared


cdef inline bint _ids_ok(const int64_t *ids, int64_t s, int64_t e, Py_ssize_t M) noexcept nogil:
    """Ids ``[s, e)`` are instruments of the table, strictly increasing (what WhatIf requires)."""
    cdef int64_t k
    for k in range(s, e):
        if ids[k] < 0 or ids[k] >= M or (k > s and ids[k] <= ids[k - 1]):
            return False
    return True


cdef bytes _wire_name(str name):
    """An account id as the wire spells it (UTF-8), or None for one no client can name (a lone
    surrogate: never looked up)."""
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError:
        return None


# ----------------------------------------------------------------------------- the table
cdef class CheckTable:
    """What the C check path reads (see the module docstring). Its methods take the table's mutex
    for the duration of one C call; the C path holds it while it reads.

    Parameters
    ----------
    instruments : sequence of str
        The instrument names, in id order.
    max_quantity : float
        The largest order quantity accepted (larger ones go to Python for the error).
    capacity : int
        Account records kept (the oldest is replaced first).
    """
    cdef pthread_mutex_t m
    cdef NameTable accounts
    cdef NameTable instruments
    cdef Py_ssize_t M
    cdef double max_quantity
    # the book, bound by ``bind``
    cdef object keep
    cdef dpm_agg_params p
    cdef Py_ssize_t state_size, work_size, U
    cdef int64_t gen
    cdef double im_factor
    cdef int64_t *ver
    cdef double *tp
    cdef double *tb
    cdef double *ta
    cdef double *im
    cdef double *mm
    cdef double *eq
    cdef uint8_t *tradable
    cdef Py_ssize_t n_rows
    # the records
    cdef Record *recs
    cdef Py_ssize_t n_recs, hand
    cdef int32_t *slot_of
    cdef Py_ssize_t slot_cap
    # the book's positions (CSR: rows of accounts, an account with resting orders has three: the
    # positions, plus its buys, plus its sells), bound by ``bind_positions``
    cdef object keep_pos
    cdef const int64_t *indptr
    cdef const int64_t *pinst
    cdef double *pqty
    cdef const int64_t *row_acc
    cdef const int64_t *acc_row
    cdef uint8_t *dirty
    cdef Py_ssize_t R, P, n_acc
    cdef bint positions_ok
    # counters (under the mutex)
    cdef readonly uint64_t answered, fell_back, rebuilt, built
    #: channels serving from this table: the book publishes records only while there is one
    cdef public int users

    def __cinit__(self, instruments, double max_quantity, Py_ssize_t capacity=8192):
        if capacity < 1:
            raise ValueError("capacity: must be >= 1")
        if pthread_mutex_init(&self.m, NULL) != 0:
            raise MemoryError("CheckTable: pthread_mutex_init failed")
        self.max_quantity = max_quantity
        self.recs = <Record *>calloc(capacity, sizeof(Record))
        if self.recs == NULL:
            raise MemoryError()
        self.n_recs = capacity
        cdef Py_ssize_t k
        for k in range(capacity):
            self.recs[k].account = -1
        self.M = 0
        cdef bytes b
        for name in instruments:
            b = name.encode("utf-8")
            if _nt_put(&self.instruments, b, len(b), self.M) != 0:
                raise MemoryError()
            self.M += 1
        self.n_rows = 0

    def __dealloc__(self):
        cdef Py_ssize_t k
        if self.recs != NULL:
            for k in range(self.n_recs):
                free(self.recs[k].mem)
            free(self.recs)
        free(self.slot_of)
        _nt_free(&self.accounts)
        _nt_free(&self.instruments)
        pthread_mutex_destroy(&self.m)

    # the mutators keep the interpreter lock while they wait for the mutex: a check holds it for
    # microseconds and never waits for the interpreter lock while holding it
    cdef inline void _lock(self) noexcept:
        pthread_mutex_lock(&self.m)

    cdef inline void _unlock(self) noexcept:
        pthread_mutex_unlock(&self.m)

    # ------------------------------------------------------------------ what the book writes
    def bind(self, plan, int64_t gen, double im_factor, int64_t[::1] ver, double[::1] tp,
             double[::1] tb, double[::1] ta, double[::1] im, double[::1] mm, double[::1] eq,
             uint8_t[::1] tradable):
        """Point the table at the book's current arrays and plan (after every change of either).
        From then on the book writes the figures the C path reads through ``store_account``,
        ``store_equity`` and ``mark_untradable``."""
        cdef Py_ssize_t n = ver.shape[0]
        if not (tp.shape[0] == tb.shape[0] == ta.shape[0] == im.shape[0] == mm.shape[0] == eq.shape[0] == n):
            raise ValueError("bind: the account arrays differ in length")
        if tradable.shape[0] != self.M:
            raise ValueError(f"bind: expected {self.M} tradable flags, got {tradable.shape[0]}")
        capsule = getattr(plan, "params_capsule", None)
        capsule = capsule() if callable(capsule) else None
        if capsule is None or not PyCapsule_IsValid(capsule, DPM_PARAMS_CAPSULE):
            raise ValueError("bind: plan must be an AggregationPlan (its params_capsule)")
        cdef const dpm_agg_params *pp = <const dpm_agg_params *>PyCapsule_GetPointer(capsule, DPM_PARAMS_CAPSULE)
        if pp.M != self.M:
            raise ValueError(f"bind: the plan has {pp.M} instruments, the table {self.M}")
        cdef Py_ssize_t state_size = plan.state_size, work_size = plan.state_size + plan.scratch_size
        cdef Py_ssize_t U = plan.n_underlyings
        cdef Py_ssize_t k, cap = max(n, self.slot_cap)
        cdef int32_t *slots = <int32_t *>malloc(cap * sizeof(int32_t)) if n > self.slot_cap else NULL
        if n > self.slot_cap and slots == NULL:
            raise MemoryError()
        keep = (plan, capsule, ver, tp, tb, ta, im, mm, eq, tradable)
        self._lock()
        if slots != NULL:
            for k in range(cap):
                slots[k] = self.slot_of[k] if k < self.slot_cap else -1
            slots, self.slot_of = self.slot_of, slots
            self.slot_cap = cap
        if state_size != self.state_size:
            self._drop_records()  # another layout: no record can be reused
        old, self.keep = self.keep, keep  # the old arrays and plan are released after the unlock
        self.p = pp[0]
        self.state_size = state_size
        self.work_size = work_size
        self.U = U
        self.gen = gen
        self.im_factor = im_factor
        self.ver = &ver[0] if n else NULL
        self.tp = &tp[0] if n else NULL
        self.tb = &tb[0] if n else NULL
        self.ta = &ta[0] if n else NULL
        self.im = &im[0] if n else NULL
        self.mm = &mm[0] if n else NULL
        self.eq = &eq[0] if n else NULL
        self.tradable = &tradable[0] if self.M else NULL
        self.n_rows = n
        self._unlock()
        free(slots)  # the replaced slot array (NULL when none)
        del old

    def store_account(self, int64_t a, bint bump_version, double tp, double tb, double ta, double im, double mm,
                      double eq, bint mark_dirty=False, Py_ssize_t slot=-1, double quantity=0.0):
        """Commit account ``a``'s new figures (and a new version when its positions or orders
        changed) into the bound arrays, as one step for the C path; with ``mark_dirty`` its rows
        have moved to the book's overlay (the C path no longer reads them from the CSR); with a
        ``slot``, the new ``quantity`` of that CSR position (a fill that resized it in place)."""
        if not 0 <= a < self.n_rows:
            raise IndexError(f"store_account: account {a} outside the bound arrays")
        if (mark_dirty or slot >= 0) and not self.positions_ok:
            raise RuntimeError("store_account: the positions are not bound")
        if mark_dirty and a >= self.n_acc:
            raise IndexError(f"store_account: account {a} outside the bound positions")
        if slot >= self.P:
            raise IndexError(f"store_account: position slot {slot} outside the CSR ({self.P})")
        self._lock()
        if slot >= 0:
            self.pqty[slot] = quantity
        if mark_dirty:
            self.dirty[a] = 1
        if bump_version:
            self.ver[a] += 1
        self.tp[a] = tp
        self.tb[a] = tb
        self.ta[a] = ta
        self.im[a] = im
        self.mm[a] = mm
        self.eq[a] = eq
        self._unlock()

    def bind_positions(self, const int64_t[::1] indptr, const int64_t[::1] inst, double[::1] qty,
                       const int64_t[::1] row_acc, const int64_t[::1] acc_row, uint8_t[::1] dirty):
        """Point the C path at the book's CSR of positions (after it is built or rebuilt): a check
        of a clean account without a record then builds the record in C from its rows."""
        cdef Py_ssize_t R = row_acc.shape[0], P = inst.shape[0], n = acc_row.shape[0], k
        if indptr.shape[0] != R + 1 or qty.shape[0] != P or dirty.shape[0] != n:
            raise ValueError("bind_positions: inconsistent array lengths")
        check_offsets(indptr, P, "bind_positions: offsets")  # from 0 to P, never decreasing
        for k in range(n):
            if not -1 <= acc_row[k] < R:
                raise ValueError(f"bind_positions: account {k}'s row {acc_row[k]} outside 0..{R - 1}")
        cdef tuple keep = (indptr, inst, qty, row_acc, acc_row, dirty)
        self._lock()
        old, self.keep_pos = self.keep_pos, keep
        self.indptr = &indptr[0]
        self.pinst = &inst[0] if P else NULL
        self.pqty = &qty[0] if P else NULL
        self.row_acc = &row_acc[0] if R else NULL
        self.acc_row = &acc_row[0] if n else NULL
        self.dirty = &dirty[0] if n else NULL
        self.R = R
        self.P = P
        self.n_acc = n
        self.positions_ok = True
        self._unlock()
        del old

    def suspend_positions(self):
        """The book is rebuilding its CSR: no record is built from it until ``bind_positions``."""
        self._lock()
        self.positions_ok = False
        self._unlock()

    @cython.nonecheck(False)  # self is never None here (the debug build's check needs the GIL)
    cdef Py_ssize_t _build_record(self, int64_t a) noexcept nogil:
        """(Under the mutex.) A record of clean account ``a`` from its CSR rows, computed here on
        the current plan -- the positions, or with resting orders the rows with the buys and the
        sells, exactly what the Python path would give ``WhatIf`` -- in a slot of the pool; its
        slot, or -1 when it cannot be built here (then Python builds it)."""
        if not self.positions_ok or a >= self.n_acc or self.dirty[a]:
            return -1
        cdef int64_t r = self.acc_row[a]
        if r < 0 or r >= self.R:
            return -1
        cdef int shared = not (r + 1 < self.R and self.row_acc[r + 1] == a)
        if not shared and (r + 2 >= self.R or self.row_acc[r + 2] != a):
            return -1
        cdef int64_t sb, eb, sa, ea
        if shared:
            sb, eb = self.indptr[r], self.indptr[r + 1]
            sa, ea = sb, eb
        else:
            sb, eb = self.indptr[r + 1], self.indptr[r + 2]
            sa, ea = self.indptr[r + 2], self.indptr[r + 3]
        if not (_ids_ok(self.pinst, sb, eb, self.M) and _ids_ok(self.pinst, sa, ea, self.M)):
            return -1
        cdef Py_ssize_t S = self.state_size, nb = eb - sb, na = 0 if shared else ea - sa
        cdef size_t need = (2 * S + nb + na) * sizeof(double) + (nb + na) * sizeof(int64_t)
        cdef void *mem = malloc(need if need else 1)
        if mem == NULL:
            return -1
        cdef Record fresh
        _lay_out(&fresh, mem, S, nb, na, shared)
        if nb:
            memcpy(fresh.ids_b, self.pinst + sb, nb * sizeof(int64_t))
            memcpy(fresh.q_b, self.pqty + sb, nb * sizeof(double))
        if na:
            memcpy(fresh.ids_a, self.pinst + sa, na * sizeof(int64_t))
            memcpy(fresh.q_a, self.pqty + sa, na * sizeof(double))
        dpm_account_state(&self.p, fresh.ids_b, fresh.q_b, fresh.n_b, fresh.st_b)
        if not shared:
            dpm_account_state(&self.p, fresh.ids_a, fresh.q_a, fresh.n_a, fresh.st_a)
        fresh.ver = self.ver[a]
        fresh.gen = self.gen
        fresh.account = a
        self.built += 1
        return self._place(a, &fresh)

    @cython.nonecheck(False)  # self is never None here (the debug build's check needs the GIL)
    cdef Py_ssize_t _place(self, int64_t a, Record *fresh) noexcept nogil:
        """(Under the mutex.) Put ``fresh`` in account ``a``'s slot, or a free one, or the oldest
        record's; the memory it replaces is freed. Returns the slot."""
        cdef Py_ssize_t s = self.slot_of[a]
        if s < 0:
            s = self.hand
            self.hand = (self.hand + 1) % self.n_recs
            if self.recs[s].account >= 0:
                self.slot_of[self.recs[s].account] = -1
        free(self.recs[s].mem)
        self.recs[s] = fresh[0]
        self.slot_of[a] = <int32_t>s
        return s

    def store_equity(self, const int64_t[::1] acc, const double[::1] eq):
        """New equities of accounts ``acc`` (cash events: the positions did not change)."""
        cdef Py_ssize_t k, n = acc.shape[0]
        if eq.shape[0] != n:
            raise ValueError("store_equity: one equity per account")
        for k in range(n):
            if not 0 <= acc[k] < self.n_rows:
                raise IndexError(f"store_equity: account {acc[k]} outside the bound arrays")
        self._lock()
        for k in range(n):
            self.eq[acc[k]] = eq[k]
        self._unlock()

    def mark_untradable(self, int64_t i):
        """Instrument ``i`` can no longer be traded (settled); every record is dropped."""
        if not 0 <= i < self.M:
            raise IndexError(f"mark_untradable: instrument {i} outside the table")
        self._lock()
        self.tradable[i] = 0
        self._drop_records()
        self._unlock()

    def set_accounts(self, names):
        """Replace the account names (``names[a]`` is account ``a``) and forget every record."""
        cdef NameTable fresh, old
        memset(&fresh, 0, sizeof(fresh))
        cdef int64_t a = 0
        cdef bytes b
        try:
            for name in names:
                b = _wire_name(name)
                if b is not None and _nt_put(&fresh, b, len(b), a) != 0:
                    raise MemoryError()
                a += 1
        except BaseException:
            _nt_free(&fresh)
            raise
        self._lock()
        old = self.accounts
        self.accounts = fresh
        self._drop_records()
        self._unlock()
        _nt_free(&old)

    def add_account(self, str name, int64_t a):
        """Account ``a`` opened with id ``name``."""
        cdef bytes b = _wire_name(name)
        if b is None:
            return
        self._lock()
        cdef int r = _nt_put(&self.accounts, b, len(b), a)
        self._unlock()
        if r != 0:
            raise MemoryError()

    cdef void _drop_records(self) noexcept:
        """(Under the mutex.)"""
        cdef Py_ssize_t k
        for k in range(self.n_recs):
            if self.recs[k].account >= 0 and self.recs[k].account < self.slot_cap:
                self.slot_of[self.recs[k].account] = -1
            self.recs[k].account = -1

    def clear(self):
        """Forget every record (the book dropped its cached what-if states)."""
        self._lock()
        self._drop_records()
        self._unlock()

    def publish(self, int64_t a, int64_t ver, int64_t gen, const double[::1] st_b, const int64_t[::1] ids_b,
                const double[::1] q_b, const double[::1] st_a, const int64_t[::1] ids_a,
                const double[::1] q_a, bint shared):
        """Record account ``a``'s what-if states (copies) for the C path: ``st_b`` / ``st_a`` from
        the positions plus the buy / sell orders ``(ids_b, q_b)`` / ``(ids_a, q_a)``; ``shared``
        when there are no orders (one state for both sides, ``st_b``)."""
        if not 0 <= a < self.n_rows:
            raise IndexError(f"publish: account {a} outside the bound arrays")
        cdef Py_ssize_t S = self.state_size
        if st_b.shape[0] != S or st_a.shape[0] != S:
            raise ValueError(f"publish: states must hold {S} values")
        if ids_b.shape[0] != q_b.shape[0] or ids_a.shape[0] != q_a.shape[0]:
            raise ValueError("publish: one quantity per instrument id")
        cdef Py_ssize_t k
        for k in range(ids_b.shape[0]):
            if ids_b[k] < 0 or ids_b[k] >= self.M or (k and ids_b[k] <= ids_b[k - 1]):
                raise ValueError("publish: buy-side ids must be increasing ids of the table")
        for k in range(ids_a.shape[0]):
            if ids_a[k] < 0 or ids_a[k] >= self.M or (k and ids_a[k] <= ids_a[k - 1]):
                raise ValueError("publish: sell-side ids must be increasing ids of the table")
        cdef Py_ssize_t nb = ids_b.shape[0], na = 0 if shared else ids_a.shape[0]
        # one block: the states, then the quantities, then the ids (filled before taking the mutex)
        cdef size_t need = (2 * S + nb + na) * sizeof(double) + (nb + na) * sizeof(int64_t)
        cdef void *mem = malloc(need if need else 1)
        if mem == NULL:
            raise MemoryError()
        cdef Record fresh
        _lay_out(&fresh, mem, S, nb, na, shared)
        fresh.ver = ver
        fresh.gen = gen
        fresh.account = a
        if S:
            memcpy(fresh.st_b, &st_b[0], S * sizeof(double))
            if not shared:
                memcpy(fresh.st_a, &st_a[0], S * sizeof(double))
        if nb:
            memcpy(fresh.ids_b, &ids_b[0], nb * sizeof(int64_t))
            memcpy(fresh.q_b, &q_b[0], nb * sizeof(double))
        if na:
            memcpy(fresh.ids_a, &ids_a[0], na * sizeof(int64_t))
            memcpy(fresh.q_a, &q_a[0], na * sizeof(double))
        self._lock()
        self._place(a, &fresh)
        self._unlock()

    def counters(self):
        """``(answered in C, handed to Python, records built in C, records recomputed)``."""
        self._lock()
        out = (self.answered, self.fell_back, self.built, self.rebuilt)
        self._unlock()
        return out

    def has_record(self, int64_t a):
        """Whether account ``a`` has a record (of any version): the book then refreshes it when the
        account changes, so that its next check stays on the C path."""
        cdef bint r
        self._lock()
        r = 0 <= a < self.n_rows and self.slot_of[a] >= 0
        self._unlock()
        return r

    @property
    def records(self):
        """Accounts with a record (tests)."""
        cdef Py_ssize_t k, n = 0
        self._lock()
        for k in range(self.n_recs):
            n += self.recs[k].account >= 0
        self._unlock()
        return n

    # ------------------------------------------------------------------ the C path
    @cython.nonecheck(False)  # self is never None here (the debug build's check needs the GIL)
    cdef int _answer(self, const uint8_t *pl, Py_ssize_t n, uint8_t *out, Py_ssize_t *out_len,
                     Scratch *sc) noexcept nogil:
        """Answer the CHECK payload ``pl[0:n]`` (kind and id included) into ``out``, or FALLBACK."""
        if n < 9 or pl[0] != KIND_CHECK:
            return FALLBACK
        cdef uint64_t rid = _get_u64(pl + 1)
        cdef Py_ssize_t at = 9
        if at + 2 > n:
            return FALLBACK
        cdef Py_ssize_t alen = _get_u16(pl + at)
        at += 2
        if alen == 0 or at + alen + 2 > n:
            return FALLBACK
        cdef const char *acc = <const char *>(pl + at)
        at += alen
        cdef Py_ssize_t nl = _get_u16(pl + at), k, ilen, nb = 0, ns = 0
        at += 2
        if nl < 1 or nl > MAX_LEGS or _scratch_legs(sc) != 0:
            return FALLBACK
        cdef double q
        for k in range(nl):
            if at + 2 > n:
                return FALLBACK
            ilen = _get_u16(pl + at)
            at += 2
            if at + ilen + 8 > n:
                return FALLBACK
            sc.lname[k] = <const char *>(pl + at)
            sc.llen[k] = <uint32_t>ilen
            q = _get_f64(pl + at + ilen)
            at += ilen + 8
            if not isfinite(q) or q == 0.0 or fabs(q) > self.max_quantity:
                return FALLBACK
            sc.lq[k] = q
        if at != n:
            return FALLBACK
        cdef int64_t a, i, s
        cdef Record *r
        cdef double tb, ta, m, x, im_after, im, mm, eq, f
        pthread_mutex_lock(&self.m)
        a = _nt_find(&self.accounts, acc, alen)
        if a < 0 or a >= self.n_rows:
            pthread_mutex_unlock(&self.m)
            return FALLBACK
        # LiveBook.check: the buys on the positions plus resting buys, the sells on the sells side,
        # each in request order
        for k in range(nl):
            i = _nt_find(&self.instruments, sc.lname[k], sc.llen[k])
            if i < 0 or not self.tradable[i]:
                pthread_mutex_unlock(&self.m)
                return FALLBACK
            if sc.lq[k] > 0.0:
                sc.oid[nb] = i
                sc.oq[nb] = sc.lq[k]
                nb += 1
            else:
                sc.oid[MAX_LEGS + ns] = i
                sc.oq[MAX_LEGS + ns] = sc.lq[k]
                ns += 1
        eq = self.eq[a]
        if not isfinite(eq):  # the reason would print it: Python's spelling of nan/inf, not C's
            pthread_mutex_unlock(&self.m)
            return FALLBACK
        s = self.slot_of[a]
        if s < 0 or self.recs[s].ver != self.ver[a]:
            s = self._build_record(a)
        if s < 0 or _scratch_fit(sc, self.work_size, self.U) != 0:
            pthread_mutex_unlock(&self.m)
            return FALLBACK
        r = &self.recs[s]
        if r.gen != self.gen:
            # the same positions on the new market: WhatIf.rebuilt's computation
            dpm_account_state(&self.p, r.ids_b, r.q_b, r.n_b, r.st_b)
            if not r.shared:
                dpm_account_state(&self.p, r.ids_a, r.q_a, r.n_a, r.st_a)
            r.gen = self.gen
            self.rebuilt += 1
        if nb:
            dpm_what_if(&self.p, r.st_b, sc.oid, sc.oq, nb, 1, r.ids_b, r.q_b, r.n_b, sc.work, &sc.o)
            tb = sc.o.total[0]
        else:
            tb = self.tb[a]
        if ns:
            dpm_what_if(&self.p, r.st_a, sc.oid + MAX_LEGS, sc.oq + MAX_LEGS, ns, 1, r.ids_a, r.q_a, r.n_a,
                        sc.work, &sc.o)
            ta = sc.o.total[0]
        else:
            ta = self.ta[a]
        f = self.im_factor
        x = self.tp[a]
        im = self.im[a]
        mm = self.mm[a]
        self.answered += 1
        pthread_mutex_unlock(&self.m)
        # LiveBook.check: f * max(tp, max(tb, ta)), Python's max (the first of equals, NaN kept first)
        m = ta if ta > tb else tb
        if m > x:
            x = m
        im_after = f * x
        cdef int accepted
        cdef int rlen = 0
        cdef char reason[200]
        if not isfinite(im_after):
            accepted = 0
            rlen = snprintf(reason, sizeof(reason), b"the margin is not finite")
        else:
            accepted = eq >= im_after or im_after <= im
            if not accepted:
                rlen = snprintf(reason, sizeof(reason), b"initial margin %.2f would exceed equity %.2f USD",
                                im_after, eq)
        if rlen < 0 or rlen >= <int>sizeof(reason):
            return FALLBACK
        cdef Py_ssize_t size = 1 + 8 + 1 + 32 + 2 + rlen
        _put_u32(out, <uint32_t>size)
        out[4] = KIND_CHECK_REPLY
        _put_u64(out + 5, rid)
        out[13] = accepted
        _put_f64(out + 14, im)
        _put_f64(out + 22, im_after)
        _put_f64(out + 30, mm)
        _put_f64(out + 38, eq)
        _put_u16(out + 46, <uint32_t>rlen)
        memcpy(out + 48, reason, rlen)
        out_len[0] = 4 + size
        return ANSWERED

    def check_frame(self, bytes payload):
        """The C path's reply frame to one payload (kind, id, body), or None when it would hand the
        request to Python (tests compare the two)."""
        cdef Scratch sc
        memset(&sc, 0, sizeof(sc))
        cdef uint8_t out[REPLY_ROOM]
        cdef Py_ssize_t out_len = 0
        cdef const uint8_t *pl = <const uint8_t *>(<char *>payload)
        cdef Py_ssize_t n = len(payload)
        cdef int r
        with nogil:
            r = self._answer(pl, n, out, &out_len, &sc)
            if r == FALLBACK:
                self._count_fallback()
            _scratch_free(&sc)
        if r == ANSWERED:
            return (<char *>out)[:out_len]
        return None

    @cython.nonecheck(False)  # self is never None here (the debug build's check needs the GIL)
    cdef void _count_fallback(self) noexcept nogil:
        pthread_mutex_lock(&self.m)
        self.fell_back += 1
        pthread_mutex_unlock(&self.m)

    def serve(self, int fd, fallback, bad_frame):
        """Serve one connection of the binary channel until the peer closes it, an I/O error, or a
        reply that cannot be sent (the socket's send timeout). ``fallback(payload: bytes) -> bytes``
        answers what the C path does not; ``bad_frame(length: int) -> bytes`` is the ERROR for a
        frame length outside 1..65535, after which the connection ends. ``fd`` must be a blocking
        socket. Returns when the connection should be closed (the caller closes it)."""
        cdef Scratch sc
        memset(&sc, 0, sizeof(sc))
        cdef size_t cap = MAX_FRAME + 4
        cdef uint8_t *buf = <uint8_t *>malloc(cap)
        cdef size_t out_cap = 16384
        cdef uint8_t *out = <uint8_t *>malloc(out_cap)
        if buf == NULL or out == NULL:
            free(buf)
            free(out)
            raise MemoryError()
        cdef int rc
        with nogil:
            rc = self._serve_loop(fd, buf, cap, out, out_cap, &sc, <void *>fallback, <void *>bad_frame)
        _scratch_free(&sc)
        free(buf)
        if rc == -2:
            raise MemoryError()

    @cython.nonecheck(False)  # self is never None here (the debug build's check needs the GIL)
    cdef int _serve_loop(self, int fd, uint8_t *buf, size_t cap, uint8_t *out, size_t out_cap, Scratch *sc,
                         void *fallback, void *bad_frame) noexcept nogil:
        """The connection loop, without the interpreter lock except to call ``fallback`` or
        ``bad_frame`` (borrowed references: ``serve`` holds them). Frees ``out``. Returns 0 when
        the connection ends, -2 when out of memory."""
        cdef size_t have = 0, at, size, out_len
        cdef ssize_t got
        cdef Py_ssize_t reply_len
        cdef uint8_t *grown
        cdef int close_after, done, rc = 0
        while True:
            got = -1
            while got < 0:
                got = recv(fd, buf + have, cap - have, 0)
                if got < 0 and errno != EINTR:
                    break
            if got <= 0:
                break
            have += <size_t>got
            at = 0
            out_len = 0
            close_after = 0
            while have - at >= 4:
                size = _get_u32(buf + at)
                if size < 1 or size > MAX_FRAME:
                    close_after = 1
                    if _python_reply(bad_frame, NULL, size, &out, &out_len, &out_cap) != 0:
                        rc = -1
                    break
                if have - at - 4 < size:
                    break
                if out_len + REPLY_ROOM > out_cap:
                    grown = <uint8_t *>realloc(out, 2 * out_cap + REPLY_ROOM)
                    if grown == NULL:
                        rc = -2
                        break
                    out = grown
                    out_cap = 2 * out_cap + REPLY_ROOM
                if size == 9 and buf[at + 4] == KIND_PING:
                    # the channel's floor: answered here, without the book
                    _put_u32(out + out_len, 9)
                    out[out_len + 4] = KIND_PONG
                    memcpy(out + out_len + 5, buf + at + 5, 8)
                    out_len += 13
                else:
                    done = self._answer(buf + at + 4, size, out + out_len, &reply_len, sc)
                    if done == ANSWERED:
                        out_len += reply_len
                    else:
                        self._count_fallback()
                        if _python_reply(fallback, buf + at + 4, size, &out, &out_len, &out_cap) != 0:
                            rc = -1
                            break
                at += 4 + size
            if rc != 0:
                break
            if out_len and _send_all(fd, out, out_len) != 0:
                break
            if close_after:
                break
            if at:
                memmove(buf, buf + at, have - at)
                have -= at
        free(out)
        return -2 if rc == -2 else 0


cdef int _python_reply(void *fn, const uint8_t *payload, size_t size, uint8_t **out, size_t *out_len,
                       size_t *out_cap) noexcept nogil:
    """Append ``fn(payload bytes)`` (or ``fn(size)`` when ``payload`` is NULL) to the reply buffer,
    taking the interpreter lock for the call; -1 when it fails (the connection then ends)."""
    cdef uint8_t *grown
    cdef size_t n, need
    with gil:
        try:
            if payload == NULL:
                reply = (<object>fn)(size)
            else:
                reply = (<object>fn)((<const char *>payload)[:size])
            if not isinstance(reply, bytes):
                return -1
            n = len(reply)
            need = out_len[0] + n
            if need > out_cap[0]:
                grown = <uint8_t *>realloc(out[0], need + REPLY_ROOM)
                if grown == NULL:
                    return -1
                out[0] = grown
                out_cap[0] = need + REPLY_ROOM
            memcpy(out[0] + out_len[0], <const char *>reply, n)
            out_len[0] = need
            return 0
        except BaseException:
            return -1


cdef int _send_all(int fd, const uint8_t *p, size_t n) noexcept nogil:
    """0 once every byte is sent; -1 on an error or the send timeout (the connection ends)."""
    cdef ssize_t k
    while n:
        k = send(fd, p, n, MSG_NOSIGNAL)
        if k < 0:
            if errno == EINTR:
                continue
            return -1
        p += k
        n -= <size_t>k
    return 0
