"""Generated sample accounts: a seeded, vectorised generator of realistic account books.

Everything here is **generated**, not exchange data. It gives tests, benchmarks and examples a
current-scale problem (up to millions of accounts over the generated listing of
:func:`dpm.market.sample.default_instruments`) that is reproducible from a seed.
"""

from __future__ import annotations

import math

import numpy as np

from dpm._core import _sample
from dpm._util.parallel import run_chunked
from dpm._util.validation import check_memory
from dpm.errors import InvalidInputError, InvalidTypeError

# the generated listing the accounts are drawn from (re-exported: the sample data travel together)
from dpm.market.sample import SAMPLE_TIMESTAMP_MS, default_instruments, load_listing_parameters  # noqa: F401
from dpm.market.specs import Kind
from dpm.market.table import InstrumentTable
from dpm.portfolio.accounts import DEFAULT_CURRENCIES, AccountBook

__all__ = ["ARCHETYPES", "generate_accounts"]

# ----------------------------------------------------------------------------------------------------
# synthetic accounts
# ----------------------------------------------------------------------------------------------------
#: Default archetype mix of :func:`generate_accounts` (fractions of accounts; they sum to 1).
ARCHETYPES: dict[str, float] = {
    "market_maker": 0.21,
    "directional": 0.34,
    "short_vol": 0.20,
    "calendar": 0.10,
    "single": 0.10,
    "empty": 0.05,
}
#: Peak memory of :func:`generate_accounts` per account (measured with tracemalloc: 3.2 KiB), rounded up.
_BYTES_PER_ACCOUNT = 4096
_ARCH_ORDER = ("market_maker", "directional", "short_vol", "calendar", "single", "empty")
_BIG = 1.0e12  # group key spacing for searchsorted on (group, strike) pairs; strikes are far below it


class _Universe:
    """Index structures over a table used by the generator (all vectorised lookups)."""

    def __init__(self, table: InstrumentTable, prices: dict[str, float], now_ms: int) -> None:
        live = table.expiry_ms > now_ms
        self.table = table
        self.n_und = len(table.underlyings)
        self.price = np.array([prices.get(u, np.nan) for u in table.underlyings])
        opt = live & (table.kind == Kind.OPTION)
        d1 = live & ((table.kind == Kind.FUTURE) | (table.kind == Kind.PERPETUAL))
        und = table.underlying.astype(np.int64)
        # options of each underlying in (expiry, strike, call first) order: MM strips are slices of it
        o = np.flatnonzero(opt)
        o = o[np.lexsort((-table.option_type[o], table.strike[o], table.expiry_ms[o], und[o]))]
        self.opt = o
        self.opt_start = np.searchsorted(und[o], np.arange(self.n_und))
        self.opt_count = np.bincount(und[o], minlength=self.n_und)
        # delta-one instruments per underlying, perpetuals first then futures by expiry
        d = np.flatnonzero(d1)
        d = d[np.lexsort((table.expiry_ms[d], table.kind[d] != Kind.PERPETUAL, und[d]))]
        self.d1 = d
        self.d1_start = np.searchsorted(und[d], np.arange(self.n_und))
        self.d1_count = np.bincount(und[d], minlength=self.n_und)
        # option groups = (underlying, expiry); calls and puts sorted by (group, strike)
        key_exp = table.expiry_ms[o]
        grp_id = np.zeros(len(o), dtype=np.int64)
        if len(o):
            new = np.ones(len(o), dtype=bool)
            new[1:] = (und[o][1:] != und[o][:-1]) | (key_exp[1:] != key_exp[:-1])
            grp_id = np.cumsum(new) - 1
        self.n_grp = int(grp_id.max()) + 1 if len(o) else 0
        self.grp_und = np.zeros(self.n_grp, dtype=np.int64)
        self.grp_exp = np.zeros(self.n_grp, dtype=np.int64)
        if len(o):
            self.grp_und[grp_id] = und[o]
            self.grp_exp[grp_id] = key_exp
        self.grp_of_und_start = np.searchsorted(self.grp_und, np.arange(self.n_und))
        self.grp_of_und_count = np.bincount(self.grp_und, minlength=self.n_und)
        self.sides = {}
        for cp in (1, -1):
            sel = table.option_type[o] == cp
            ids, g = o[sel], grp_id[sel]
            key = g * _BIG + table.strike[ids]
            order = np.argsort(key, kind="stable")
            ids, g, key = ids[order], g[order], key[order]
            start = np.searchsorted(g, np.arange(self.n_grp))
            count = np.bincount(g, minlength=self.n_grp)
            self.sides[cp] = (ids, key, start, count)

    def nearest_typed(self, cp: np.ndarray, grp: np.ndarray, strike: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Option ids at the listed strike nearest ``strike`` in groups ``grp``, of type ``cp`` (1 call,
        -1 put), moved ``shift`` listed strikes up (clipped to the group's strikes of that type); -1
        if the group has none, and for group -1."""
        return _sample.nearest_typed(
            np.ascontiguousarray(cp, dtype=np.int64),
            np.ascontiguousarray(grp, dtype=np.int64),
            np.ascontiguousarray(strike, dtype=np.float64),
            np.ascontiguousarray(shift, dtype=np.int64),
            self.sides[1], self.sides[-1], _BIG,
            lambda fn, n: run_chunked(fn, n, None, min_chunk=65536),  # each query on its own: same ids
        )


def _segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, offset) of every slot when owner i has counts[i] slots."""
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    offset = np.arange(int(counts.sum()), dtype=np.int64) - starts[owner]
    return owner, offset


_SQRT_HALF = math.sqrt(0.5)


def _norm_cdf(x: float) -> float:
    """Standard normal CDF from libm's ``erf``/``erfc`` (the split of cephes ``ndtr``: no cancellation in
    either tail); only sizes hedges, so scipy.special (0.3-0.5 s to import) is not needed for it."""
    z = x * _SQRT_HALF
    if abs(z) < _SQRT_HALF:
        return 0.5 + 0.5 * math.erf(z)
    y = 0.5 * math.erfc(abs(z))
    return 1.0 - y if z > 0 else y


def _option_deltas(uv: _Universe, now_ms: int, vol: float = 0.6) -> np.ndarray:
    """Rough Black-76 delta (per coin) of every option of the table at the reference price, flat vol
    (0 for other instruments): only to size hedges. One value per instrument, gathered by position."""
    t = uv.table
    out = np.zeros(len(t))
    ids = np.flatnonzero(t.kind == Kind.OPTION)
    if ids.size:
        T = np.maximum((t.expiry_ms[ids] - now_ms) / (365.0 * 86_400_000.0), 1e-6)
        S = uv.price[t.underlying[ids]]
        d1 = (np.log(S / t.strike[ids]) + 0.5 * vol * vol * T) / (vol * np.sqrt(T))
        n = np.array([_norm_cdf(v) for v in d1.tolist()])
        out[ids] = np.where(t.option_type[ids] > 0, n, n - 1.0)
    return out


def _approx_delta(uv: _Universe, ids: np.ndarray, now_ms: int, vol: float = 0.6) -> np.ndarray:
    """:func:`_option_deltas` of the options ``ids``."""
    return _option_deltas(uv, now_ms, vol)[ids]


def generate_accounts(
    n: int,
    table: InstrumentTable | None = None,
    seed: int | np.random.Generator = 0,
    *,
    mix: dict[str, float] | None = None,
    prices: dict[str, float] | None = None,
    now_ms: int = SAMPLE_TIMESTAMP_MS,
    currencies: tuple[str, ...] = DEFAULT_CURRENCIES,
    return_archetypes: bool = False,
    id_prefix: str = "acc-",
) -> AccountBook | tuple[AccountBook, np.ndarray]:
    """Generate ``n`` synthetic but realistic accounts (seeded, vectorised).

    Archetypes (default mix :data:`ARCHETYPES`; each account trades one underlying, chosen with
    probability proportional to its number of live options):

    * ``market_maker`` (21 %): a strip of 70–196 consecutive options of the listing (neighbouring
      strikes and expiries near where the strip starts, calls and puts), mixed long/short, plus a
      delta hedge in the perpetual and up to two futures that offsets the strip's rough delta
      (Black-76 at the reference price, 60 % vol). 71–199 positions.
    * ``directional`` (34 %): 1–4 perpetual/futures positions of one sign, and in half the accounts
      1–50 options bought in the same direction (calls if long, puts if short). 1–54 positions.
    * ``short_vol`` (20 %): 1–30 short strangles or straddles (their number geometric with mean
      12.5, capped at 30; call and put of one expiry, 30 % straddles at the money, otherwise strikes
      1–6 listed strikes away from the money), 30 % with a perpetual hedge. 2–61 positions.
    * ``calendar`` (10 %): 1–15 calendar spreads (short the nearer, long the farther expiry at the
      nearest listed strike, 20 % reversed). 2–30 positions.
    * ``single`` (10 %): one position (perpetual 50 %, future 25 %, option 25 %), either sign.
    * ``empty`` (5 %): no positions; 70 % hold some collateral.

    Positions per non-empty account are 1–200 with a mean of about 38 over the whole book (after
    duplicates merge). Sizes: each account has a USD size drawn lognormal (median 50,000, sigma 1.2,
    capped at 50 million); option quantities are coins (rounded to 0.1), inverse futures/perpetuals
    are USD contracts (rounded to whole contracts), linear contracts units (rounded to 0.001).
    Collateral is the account's gross notional times a ratio drawn lognormal (median 0.35), except
    for 5 % of accounts with a ratio of 0.005–0.05 (likely under-margined); it is held 50–100 % in
    the underlying coin and the rest in USDC (60 %) or USDT (40 %), converted at the reference price.

    Parameters
    ----------
    n : int
        Number of accounts (>= 0).
    table : InstrumentTable, optional
        Default :func:`default_instruments`.
    seed : int or numpy.random.Generator
    mix : dict, optional
        Archetype fractions (keys of :data:`ARCHETYPES`), normalised to sum 1.
    prices : dict, optional
        Reference price per underlying (USD); default the listing's reference prices, else the median
        option strike of the underlying.
    now_ms : int
        Instruments expiring at or before this time are not traded.
    currencies : tuple of str
        Collateral currencies of the book.
    return_archetypes : bool
        Also return an object array with the archetype name of every account.
    id_prefix : str
        Account ids are ``id_prefix`` + the zero-padded account number (``acc-000042``); a prefix per
        partition keeps ids unique across separately generated partitions.

    Returns
    -------
    AccountBook, or (AccountBook, ndarray of str)
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise InvalidTypeError(f"n: expected an int number of accounts, got {n!r}")
    if n < 0:
        raise InvalidInputError(f"n: must be >= 0, got {n}")
    n = int(n)
    # measured peak of the generator: about 3.2 KiB per account (38 positions on average)
    check_memory(n * _BYTES_PER_ACCOUNT, f"n: {n:,} accounts")
    table = default_instruments() if table is None else table
    if not isinstance(table, InstrumentTable):
        raise InvalidTypeError(f"table: expected an InstrumentTable, got {type(table).__name__}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    mix = dict(ARCHETYPES if mix is None else mix)
    unknown = [k for k in mix if k not in ARCHETYPES]
    if unknown:
        raise InvalidInputError(f"mix: unknown archetype {unknown[0]!r}; known: {list(ARCHETYPES)}")
    w = np.array([float(mix.get(k, 0.0)) for k in _ARCH_ORDER])
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InvalidInputError(f"mix: fractions must be finite, >= 0 and not all 0, got {mix}")
    w = w / w.sum()

    ref = dict(prices or {})
    listing = load_listing_parameters()["underlyings"]
    for u_i, u in enumerate(table.underlyings):
        if u not in ref:
            if u in listing:
                ref[u] = float(listing[u]["reference_price"])
            else:
                k = table.strike[(table.kind == Kind.OPTION) & (table.underlying == u_i)]
                if len(k) == 0:
                    raise InvalidInputError(f"prices: no reference price for underlying {u!r}; pass prices=")
                ref[u] = float(np.median(k))
    for u, p in ref.items():
        if not (isinstance(p, (int, float, np.floating, np.integer)) and math.isfinite(p) and p > 0):
            raise InvalidInputError(f"prices: reference price of {u!r} must be finite and > 0, got {p!r}")
    uv = _Universe(table, ref, int(now_ms))
    if uv.d1_count.sum() == 0 and uv.opt_count.sum() == 0:
        raise InvalidInputError("table: no live instrument to trade at now_ms")

    # ---- per-account draws
    arch = rng.choice(len(_ARCH_ORDER), size=n, p=w)
    weights_u = uv.opt_count + uv.d1_count
    und = rng.choice(uv.n_und, size=n, p=weights_u / weights_u.sum()) if n else np.zeros(0, np.int64)
    size_usd = np.minimum(np.exp(rng.normal(math.log(50_000.0), 1.2, size=n)), 5e7)
    S = uv.price[und]
    t = uv.table

    acc_parts: list[np.ndarray] = []
    inst_parts: list[np.ndarray] = []
    qty_parts: list[np.ndarray] = []

    def add(acc: np.ndarray, inst: np.ndarray, qty: np.ndarray) -> None:
        keep = inst >= 0
        if not keep.all():
            acc, inst, qty = acc[keep], inst[keep], qty[keep]
        acc_parts.append(np.ascontiguousarray(acc, dtype=np.int64))
        inst_parts.append(np.ascontiguousarray(inst, dtype=np.int64))
        qty_parts.append(np.ascontiguousarray(qty, dtype=np.float64))

    def coins(usd: np.ndarray, spot: np.ndarray) -> np.ndarray:
        return np.maximum(np.round(usd / spot, 1), 0.1)

    def d1_qty(ids: np.ndarray, usd: np.ndarray) -> np.ndarray:
        """Contracts of delta-one ``ids`` worth ``usd`` (signed)."""
        inv = t.inverse[ids]
        cs = t.contract_size[ids]
        spot = uv.price[t.underlying[ids]]
        q_inv = np.round(usd / cs)
        q_lin = np.round(usd / (spot * cs), 3)
        q = np.where(inv, q_inv, q_lin)
        step = np.where(inv, 1.0, 0.001)
        return np.where(q == 0, np.sign(usd) * step, q)

    def pick_d1(accs: np.ndarray, slot: np.ndarray) -> np.ndarray:
        u = und[accs]
        cnt = uv.d1_count[u]
        out = np.full(len(accs), -1, dtype=np.int64)
        ok = cnt > 0
        out[ok] = uv.d1[uv.d1_start[u[ok]] + slot[ok] % cnt[ok]]
        return out

    def random_options(accs: np.ndarray) -> np.ndarray:
        u = und[accs]
        cnt = uv.opt_count[u]
        out = np.full(len(accs), -1, dtype=np.int64)
        ok = cnt > 0
        out[ok] = uv.opt[uv.opt_start[u[ok]] + (rng.random(ok.sum()) * cnt[ok]).astype(np.int64)]
        return out

    def random_group(accs: np.ndarray, near_bias: bool = False) -> np.ndarray:
        """A random expiry of each account's underlying (r**2: nearer expiries trade more), -1 if none."""
        return _sample.random_group(np.ascontiguousarray(accs, dtype=np.int64), und, rng.random(len(accs)),
                                    near_bias, uv.grp_of_und_start, uv.grp_of_und_count)

    # ---- market makers: a strip of consecutive options + delta hedge
    mm = np.flatnonzero(arch == 0)
    if len(mm):
        cnt_u = uv.opt_count[und[mm]]
        L = np.minimum(rng.integers(70, 197, size=len(mm)), cnt_u)
        # strips start near the money of a random expiry: uniform start over the underlying's list
        first = (rng.random(len(mm)) * np.maximum(cnt_u - L + 1, 1)).astype(np.int64)
        # 2.8 million strip positions per 100,000 accounts: one C pass makes the positions, their
        # quantities and each strip's delta from the draws (the same operations as the numpy code)
        n_pos = int(L.sum())
        q = rng.normal(0, 0.7, n_pos)
        np.exp(q, out=q)
        sign_draw = rng.random(n_pos)
        acc_mm, ids, delta_usd = _sample.strip_positions(
            mm, uv.opt_start[und[mm]] + first, L, size_usd[mm], S[mm], uv.opt,
            _option_deltas(uv, now_ms), t.contract_size, sign_draw, q,
            lambda fn, k: run_chunked(fn, k, None, min_chunk=4096),  # each strip on its own: same bits
        )
        del sign_draw
        add(acc_mm, ids, q)
        n_h = rng.integers(1, 4, size=len(mm))
        h_owner, h_off = _segments(n_h)
        h_ids = pick_d1(mm[h_owner], h_off)
        share = np.where(h_off == 0, 0.6, 0.4 / np.maximum(n_h[h_owner] - 1, 1))
        share = np.where(n_h[h_owner] == 1, 1.0, share)
        hedge_usd = -delta_usd[h_owner] * share
        hedge_usd = np.where(np.abs(hedge_usd) < 1.0, size_usd[mm][h_owner] * 0.01, hedge_usd)
        add(mm[h_owner], h_ids, d1_qty(np.maximum(h_ids, 0), hedge_usd))

    # ---- directional traders
    dr = np.flatnonzero(arch == 1)
    if len(dr):
        sign = np.where(rng.random(len(dr)) < 0.6, 1.0, -1.0)
        n_d = rng.integers(1, 5, size=len(dr))
        owner, off = _segments(n_d)
        start = rng.integers(0, 1 << 30, size=len(dr))
        ids = pick_d1(dr[owner], start[owner] + off)
        usd = sign[owner] * size_usd[dr][owner] * rng.uniform(0.5, 3.0, len(owner)) / n_d[owner]
        add(dr[owner], ids, d1_qty(np.maximum(ids, 0), usd))
        n_o = np.where(rng.random(len(dr)) < 0.5, rng.integers(1, 51, size=len(dr)), 0)
        owner, off = _segments(n_o)
        if len(owner):
            acc_o = dr[owner]  # 0.8 million option positions per 100,000 accounts: gathered once
            spot = S[acc_o]
            g = random_group(acc_o, near_bias=True)
            cp = np.where(sign[owner] > 0, 1, -1)
            shift = rng.integers(0, 8, size=len(owner)) * cp.astype(np.int64)
            ids = uv.nearest_typed(cp, g, spot, shift)
            q = coins(size_usd[acc_o] * 0.05 * np.exp(rng.normal(0, 0.5, len(owner))), spot)
            add(acc_o, ids, q)

    # ---- short-vol sellers: short strangles / straddles
    sv = np.flatnonzero(arch == 2)
    if len(sv):
        k = np.minimum(rng.geometric(0.08, size=len(sv)), 30)
        owner, off = _segments(k)
        g = random_group(sv[owner], near_bias=True)
        straddle = rng.random(len(owner)) < 0.3
        width = np.where(straddle, 0, rng.integers(1, 7, size=len(owner)))
        spot = S[sv][owner]
        q = -coins(size_usd[sv][owner] * 0.1 * np.exp(rng.normal(0, 0.5, len(owner))), spot)
        ones = np.ones(len(owner), dtype=np.int64)
        c_ids = uv.nearest_typed(ones, g, spot, width)
        p_ids = uv.nearest_typed(-ones, g, spot, -width)
        add(sv[owner], c_ids, q)
        add(sv[owner], p_ids, q)
        hedged = np.flatnonzero(rng.random(len(sv)) < 0.3)
        if len(hedged):
            h_ids = pick_d1(sv[hedged], np.zeros(len(hedged), dtype=np.int64))
            usd = size_usd[sv][hedged] * rng.normal(0, 0.3, len(hedged))
            add(sv[hedged], h_ids, d1_qty(np.maximum(h_ids, 0), usd))

    # ---- calendar spreads
    cl = np.flatnonzero(arch == 3)
    if len(cl):
        k = rng.integers(1, 16, size=len(cl))
        owner, off = _segments(k)
        u = und[cl][owner]
        cnt = uv.grp_of_und_count[u]
        first = uv.grp_of_und_start[u]
        ok = cnt >= 2
        near = np.where(ok, (rng.random(len(owner)) * np.maximum(cnt - 1, 1)).astype(np.int64), 0)
        far = near + 1 + (rng.random(len(owner)) * np.maximum(cnt - 1 - near, 1)).astype(np.int64)
        far = np.minimum(far, np.maximum(cnt - 1, 0))
        g_near, g_far = first + near, first + far
        cp = np.where(rng.random(len(owner)) < 0.5, 1, -1)
        spot = S[cl][owner] * np.exp(rng.normal(0, 0.08, len(owner)))
        q = coins(size_usd[cl][owner] * 0.1 * np.exp(rng.normal(0, 0.5, len(owner))), S[cl][owner])
        q = np.where(rng.random(len(owner)) < 0.2, -q, q)
        zero = np.zeros(len(owner), dtype=np.int64)
        n_ids = uv.nearest_typed(cp, np.where(ok, g_near, -1), spot, zero)
        f_ids = uv.nearest_typed(cp, np.where(ok, g_far, -1), t.strike[np.maximum(n_ids, 0)], zero)
        f_ids = np.where(n_ids >= 0, f_ids, -1)
        add(cl[owner], n_ids, -q)
        add(cl[owner], f_ids, q)

    # ---- single-position accounts
    sg = np.flatnonzero(arch == 4)
    if len(sg):
        r = rng.random(len(sg))
        sign = np.where(rng.random(len(sg)) < 0.5, 1.0, -1.0)
        slot = np.where(r < 0.5, 0, rng.integers(1, 1 << 30, size=len(sg)))
        d_ids = pick_d1(sg, slot)
        o_ids = random_options(sg)
        use_opt = (r >= 0.75) & (o_ids >= 0) | (d_ids < 0)
        ids = np.where(use_opt, o_ids, d_ids)
        q_opt = sign * coins(size_usd[sg] * 0.2, S[sg])
        q_d1 = d1_qty(np.maximum(ids, 0), sign * size_usd[sg])
        add(sg, ids, np.where(use_opt, q_opt, q_d1))

    # ---- the positions in account rows, and the collateral: gross notional (USD) times a ratio,
    # split over coin and stablecoins. C passes group the parts by account (what concatenating
    # them and the book's counting sort did: 4 M positions, three 30 MB copies fewer), on threads
    # by account range, and sum the gross notional in the concatenation's order.
    unit_usd = np.where(
        t.inverse & (t.kind != Kind.OPTION), t.contract_size, t.contract_size * uv.price[t.underlying]
    )
    rows = _sample.PartsRows(acc_parts, inst_parts, qty_parts, np.ascontiguousarray(unit_usd, dtype=np.float64), n)
    run_chunked(rows.scatter, n, None, min_chunk=8192)  # disjoint account ranges: the same bits on any threads
    indptr, inst, qty, gross = rows.indptr, rows.inst, rows.qty, rows.gross
    del rows
    for parts in (acc_parts, inst_parts, qty_parts):  # the parts' memory goes before the book's
        parts.clear()
    ratio = np.exp(rng.normal(math.log(0.35), 0.4, size=n))
    under = rng.random(n) < 0.05
    ratio = np.where(under, rng.uniform(0.005, 0.05, size=n), ratio)
    equity = gross * ratio
    empty = arch == 5
    equity = np.where(empty, np.where(rng.random(n) < 0.7, size_usd * 0.2, 0.0), equity)
    coin_share = rng.uniform(0.5, 1.0, size=n)
    stable_usdc = rng.random(n) < 0.6
    cur_pos = {c: j for j, c in enumerate(currencies)}
    coll = np.zeros((n, len(currencies)))
    stable_left = np.ones(n)
    for u_i, u in enumerate(table.underlyings):
        m = und == u_i
        if u in cur_pos:
            coll[m, cur_pos[u]] = np.round(equity[m] * coin_share[m] / uv.price[u_i], 8)
            stable_left[m] = 1.0 - coin_share[m]
    for name, mask in (("USDC", stable_usdc), ("USDT", ~stable_usdc)):
        if name in cur_pos:
            coll[mask, cur_pos[name]] += np.round(equity[mask] * stable_left[mask], 2)
        else:  # the book has no such stablecoin: put it in the first stable one it has
            alt = next((c for c in ("USDC", "USDT", "USD") if c in cur_pos), None)
            if alt is not None:
                coll[mask, cur_pos[alt]] += np.round(equity[mask] * stable_left[mask], 2)

    width = max(6, len(str(max(n - 1, 0))))
    ids = np.empty(n, dtype=object)
    if not isinstance(id_prefix, str):
        raise InvalidTypeError(f"id_prefix: expected a str, got {type(id_prefix).__name__}")
    ids[:] = _sample.format_ids(id_prefix, width, n)  # "acc-000042"
    # ids unique and non-empty by construction (one width, distinct numbers)
    book = AccountBook._from_generated_rows(ids, indptr, inst, qty, coll, currencies, table)
    if return_archetypes:
        names = np.array(_ARCH_ORDER, dtype=object)[arch]
        return book, names
    return book
