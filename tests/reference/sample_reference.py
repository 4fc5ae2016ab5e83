"""The sample-account generator as it was before it was optimised (dpm 0.1): the oracle of its output.

:func:`dpm.portfolio.sample.generate_accounts` was made about twice as fast (per-instrument hedge
deltas instead of per position, fewer passes over the 2.8 million strip positions, no
``scipy.special``) under the rule that it keeps the random stream and the books of this version,
which tests/test_sample.py compares account by account for several seeds, sizes, mixes and
tables. This copy keeps the old code path, including ``scipy.special.ndtr`` for the hedge deltas.
"""
from __future__ import annotations

import math

import numpy as np

from dpm._util.validation import check_memory
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.sample import SAMPLE_TIMESTAMP_MS, default_instruments, load_listing_parameters
from dpm.market.specs import Kind
from dpm.market.table import InstrumentTable
from dpm.portfolio.accounts import DEFAULT_CURRENCIES, AccountBook
from dpm.portfolio.sample import _ARCH_ORDER, _BYTES_PER_ACCOUNT, ARCHETYPES, _segments, _Universe


def nearest_numpy(ids: np.ndarray, key: np.ndarray, start: np.ndarray, count: np.ndarray, grp: np.ndarray,
                  strike: np.ndarray, shift: np.ndarray, big: float = 1.0e12) -> np.ndarray:
    """Ids at the key nearest ``grp * big + strike`` within each group's slice of the sorted keys
    (the upper one on a tie), moved ``shift`` places and clipped to the slice; -1 if the group is
    empty. The numpy search the generator used before it moved to C."""
    out = np.full(len(grp), -1, dtype=np.int64)
    ok = count[grp] > 0
    if not ok.any():
        return out
    g, k = grp[ok], strike[ok]
    pos = np.searchsorted(key, g * big + k)
    lo, hi = start[g], start[g] + count[g] - 1
    pos = np.clip(pos, lo, hi)
    below = np.clip(pos - 1, lo, hi)
    closer = np.abs(key[below] - (g * big + k)) < np.abs(key[pos] - (g * big + k))
    pos = np.where(closer, below, pos)
    out[ok] = ids[np.clip(pos + shift[ok], lo, hi)]
    return out


def _nearest(uv: _Universe, cp: int, grp: np.ndarray, strike: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Option ids of type ``cp`` in groups ``grp`` at the listed strike nearest ``strike``, moved
    ``shift`` listed strikes up (clipped to the group's strikes); -1 if the group has none."""
    return nearest_numpy(*uv.sides[cp], grp, strike, shift)


def _approx_delta(uv: _Universe, ids: np.ndarray, now_ms: int, vol: float = 0.6) -> np.ndarray:
    """Rough Black-76 delta (per coin) of options at the reference price, flat vol: only to size hedges."""
    from scipy.special import ndtr

    t = uv.table
    T = np.maximum((t.expiry_ms[ids] - now_ms) / (365.0 * 86_400_000.0), 1e-6)
    S = uv.price[t.underlying[ids]]
    d1 = (np.log(S / t.strike[ids]) + 0.5 * vol * vol * T) / (vol * np.sqrt(T))
    return np.where(t.option_type[ids] > 0, ndtr(d1), ndtr(d1) - 1.0)


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
        acc_parts.append(acc[keep])
        inst_parts.append(inst[keep])
        qty_parts.append(qty[keep])

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
        u = und[accs]
        cnt = uv.grp_of_und_count[u]
        r = rng.random(len(accs))
        if near_bias:  # nearer expiries trade more
            r = r * r
        g = uv.grp_of_und_start[u] + np.minimum((r * cnt).astype(np.int64), np.maximum(cnt - 1, 0))
        return np.where(cnt > 0, g, -1)

    # ---- market makers: a strip of consecutive options + delta hedge
    mm = np.flatnonzero(arch == 0)
    if len(mm):
        cnt_u = uv.opt_count[und[mm]]
        L = np.minimum(rng.integers(70, 197, size=len(mm)), cnt_u)
        # strips start near the money of a random expiry: uniform start over the underlying's list
        first = (rng.random(len(mm)) * np.maximum(cnt_u - L + 1, 1)).astype(np.int64)
        owner, off = _segments(L)
        ids = uv.opt[uv.opt_start[und[mm]][owner] + first[owner] + off]
        lots = coins(size_usd[mm][owner] * 0.02 * np.exp(rng.normal(0, 0.7, len(owner))), S[mm][owner])
        q = np.where(rng.random(len(owner)) < 0.5, -lots, lots)
        add(mm[owner], ids, q)
        delta_usd = (
            np.bincount(
                owner, weights=q * _approx_delta(uv, ids, now_ms) * t.contract_size[ids], minlength=len(mm)
            )
            * S[mm]
        )
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
            g = random_group(dr[owner], near_bias=True)
            cp = np.where(sign[owner] > 0, 1, -1)
            shift = rng.integers(0, 8, size=len(owner)) * cp.astype(np.int64)
            ids = np.full(len(owner), -1, dtype=np.int64)
            ok = g >= 0
            for c in (1, -1):
                m = ok & (cp == c)
                ids[m] = _nearest(uv, c, g[m], S[dr][owner][m], shift[m])
            q = coins(size_usd[dr][owner] * 0.05 * np.exp(rng.normal(0, 0.5, len(owner))), S[dr][owner])
            add(dr[owner], ids, q)

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
        ok = g >= 0
        c_ids = np.full(len(owner), -1, dtype=np.int64)
        p_ids = np.full(len(owner), -1, dtype=np.int64)
        c_ids[ok] = _nearest(uv, 1, g[ok], spot[ok], width[ok])
        p_ids[ok] = _nearest(uv, -1, g[ok], spot[ok], -width[ok])
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
        n_ids = np.full(len(owner), -1, dtype=np.int64)
        f_ids = np.full(len(owner), -1, dtype=np.int64)
        for c in (1, -1):
            m = ok & (cp == c)
            n_ids[m] = _nearest(uv, c, g_near[m], spot[m], zero[m])
            f_ids[m] = _nearest(uv, c, g_far[m], t.strike[np.maximum(n_ids[m], 0)], zero[m])
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

    acc = np.concatenate(acc_parts) if acc_parts else np.zeros(0, np.int64)
    inst = np.concatenate(inst_parts) if inst_parts else np.zeros(0, np.int64)
    qty = np.concatenate(qty_parts) if qty_parts else np.zeros(0)

    # ---- collateral: gross notional (USD) times a ratio, split over coin and stablecoins
    unit_usd = np.where(
        t.inverse & (t.kind != Kind.OPTION), t.contract_size, t.contract_size * uv.price[t.underlying]
    )
    gross = np.bincount(acc, weights=np.abs(qty) * unit_usd[inst], minlength=n) if n else np.zeros(0)
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
    if n:
        ids[:] = np.char.add("acc-", np.char.zfill(np.arange(n).astype(str), width))
    book = AccountBook.from_arrays(
        acc, inst, qty, table, account_ids=ids, collateral=coll, currencies=currencies, n_accounts=n
    )
    if return_archetypes:
        names = np.array(_ARCH_ORDER, dtype=object)[arch]
        return book, names
    return book
