"""Tests of dpm.portfolio.sample: the generated listing and the synthetic account generator."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.names import parse_name
from dpm.market.sample import SAMPLE_TIMESTAMP_MS, default_instruments, load_listing_parameters
from dpm.market.specs import NO_EXPIRY, Kind
from dpm.market.table import InstrumentTable
from dpm.portfolio.accounts import AccountBook
from dpm.portfolio.sample import ARCHETYPES, _approx_delta, _Universe, generate_accounts


def test_sample_timestamp():
    assert SAMPLE_TIMESTAMP_MS == int(dt.datetime(2026, 11, 27, 8, tzinfo=dt.timezone.utc).timestamp()) * 1000


@pytest.fixture(scope="module")
def listing():
    return default_instruments()


def test_listing_sizes_and_contents(listing):
    t = listing
    assert len(t) >= 1500 and t.underlyings == ("BTC", "ETH")
    assert default_instruments() is t  # cached, immutable
    params = load_listing_parameters()
    codes = [e["code"] for e in params["expiries"]]
    assert codes == [
        "28NOV26",
        "29NOV26",
        "4DEC26",
        "11DEC26",
        "25DEC26",
        "29JAN27",
        "26FEB27",
        "26MAR27",
        "25JUN27",
        "24SEP27",
        "31DEC27",
    ]
    expiries = sorted(parse_name(f"BTC-{c}").expiry for c in codes)
    for u, und in enumerate(t.underlyings):
        opt = (t.kind == Kind.OPTION) & (t.underlying == u)
        assert opt.sum() >= 700
        assert sorted(np.unique(t.expiry_ms[opt])) == expiries
        assert t.inverse[opt].all() and (t.contract_size[opt] == 1.0).all()
        # each strike is listed as a call and a put
        calls = set(zip(t.expiry_ms[opt & (t.option_type == 1)], t.strike[opt & (t.option_type == 1)]))
        puts = set(zip(t.expiry_ms[opt & (t.option_type == -1)], t.strike[opt & (t.option_type == -1)]))
        assert calls == puts
        fut = (t.kind == Kind.FUTURE) & (t.underlying == u)
        assert fut.sum() == 9 and t.inverse[fut].all()  # all but the two dailies
        assert set(t.expiry_ms[fut]) == set(expiries[2:])
        assert (t.contract_size[fut] == {"BTC": 10.0, "ETH": 1.0}[und]).all()
    for name in ("BTC-PERPETUAL", "ETH-PERPETUAL", "BTC_USDC-PERPETUAL", "ETH_USDC-PERPETUAL"):
        i = t.index_of(name)
        assert t.kind[i] == Kind.PERPETUAL and t.expiry_ms[i] == NO_EXPIRY
    assert t.contract_size[t.index_of("BTC-PERPETUAL")] == 10.0
    assert not t.inverse[t.index_of("ETH_USDC-PERPETUAL")]
    t.check_not_expired(SAMPLE_TIMESTAMP_MS)
    # every name is canonical Deribit
    assert InstrumentTable.from_names(t.name).equals(t)


def test_strike_ladders_are_wider_for_longer_expiries(listing):
    t = listing
    btc = (t.kind == Kind.OPTION) & (t.underlying == 0)
    exps = np.unique(t.expiry_ms[btc])
    spans = [np.ptp(t.strike[btc & (t.expiry_ms == e)]) for e in exps]
    assert spans[0] < spans[3] < spans[5] < spans[-1]
    near = t.strike[btc & (t.expiry_ms == exps[0])]
    assert 92_000 in near and np.min(np.diff(np.unique(near))) == 500
    for e in exps:  # the reference price is inside every ladder
        k = t.strike[btc & (t.expiry_ms == e)]
        assert k.min() < 92_000 < k.max()


def test_generator_determinism(listing):
    a = generate_accounts(400, listing, seed=5)
    b = generate_accounts(400, listing, seed=5)
    c = generate_accounts(400, listing, seed=6)
    assert a.equals(b)
    assert not a.equals(c)
    g = generate_accounts(400, listing, seed=np.random.default_rng(5))
    assert g.equals(a)


@pytest.fixture(scope="module")
def generated(listing):
    book, arch = generate_accounts(20_000, listing, seed=1, return_archetypes=True)
    return book, arch, None


def test_generator_archetypes(generated, listing):
    book, arch, _ = generated
    assert isinstance(book, AccountBook) and len(book) == 20_000
    counts = np.diff(book.indptr)
    for name, frac in ARCHETYPES.items():
        share = (arch == name).mean()
        assert abs(share - frac) < 0.015, name
    assert (counts[arch == "empty"] == 0).all()
    assert (counts[arch == "single"] == 1).all()
    nonempty = counts[arch != "empty"]
    assert nonempty.min() >= 1 and nonempty.max() <= 200
    assert 35 <= counts.mean() <= 41
    mm = counts[arch == "market_maker"]
    assert mm.min() > 60 and mm.mean() > 100
    # archetype structure
    t = listing
    inst, qty = book.instrument_idx, book.quantity
    owner = book.account_of_position()
    is_opt = t.kind[inst] == Kind.OPTION
    per_acc_opts = np.bincount(owner, weights=is_opt, minlength=len(book))
    per_acc_d1 = np.bincount(owner, weights=~is_opt, minlength=len(book))
    assert (per_acc_d1[arch == "market_maker"] >= 1).all()  # every market maker hedges
    assert (per_acc_opts[arch == "market_maker"] >= 60).all()
    sv = arch == "short_vol"
    short_opt = np.bincount(owner, weights=is_opt & (qty < 0), minlength=len(book))
    assert (short_opt[sv] == per_acc_opts[sv]).all() and (per_acc_opts[sv] >= 2).all()
    calls = np.bincount(owner, weights=is_opt & (t.option_type[inst] == 1), minlength=len(book))
    puts = np.bincount(owner, weights=is_opt & (t.option_type[inst] == -1), minlength=len(book))
    assert (calls[sv] >= 1).all() and (puts[sv] >= 1).all()
    cal = arch == "calendar"
    n_exp = np.array(
        [len(np.unique(t.expiry_ms[inst[s:e]])) for s, e in zip(book.indptr[:-1][cal], book.indptr[1:][cal])]
    )
    assert (n_exp >= 2).all()
    dr = arch == "directional"
    assert (per_acc_d1[dr] >= 1).all()
    # one underlying per account
    und = t.underlying[inst]
    mixed = np.bincount(
        owner, weights=und != und[book.indptr[:-1][owner].clip(max=len(und) - 1)], minlength=len(book)
    )
    assert not mixed.any()


def test_market_maker_hedge_reduces_delta(generated, listing):
    book, arch, _ = generated
    t = listing
    uv = _Universe(t, {"BTC": 92_000.0, "ETH": 3_100.0}, SAMPLE_TIMESTAMP_MS)
    inst, qty, owner = book.instrument_idx, book.quantity, book.account_of_position()
    is_opt = t.kind[inst] == Kind.OPTION
    S = uv.price[t.underlying[inst]]
    delta_usd = np.zeros(len(inst))
    delta_usd[is_opt] = qty[is_opt] * _approx_delta(uv, inst[is_opt], SAMPLE_TIMESTAMP_MS) * S[is_opt]
    d1_usd = np.where(t.inverse[inst], qty * t.contract_size[inst], qty * t.contract_size[inst] * S)
    opt_delta = np.bincount(owner, weights=np.where(is_opt, delta_usd, 0.0), minlength=len(book))
    total = opt_delta + np.bincount(owner, weights=np.where(is_opt, 0.0, d1_usd), minlength=len(book))
    mm = (arch == "market_maker") & (np.abs(opt_delta) > 10_000)
    assert np.median(np.abs(total[mm]) / np.abs(opt_delta[mm])) < 0.05


def test_collateral_mostly_sufficient(generated, listing):
    book, _arch, _ = generated
    assert book.currencies == ("BTC", "ETH", "USDC", "USDT")
    assert (book.collateral >= 0).all()
    prices = np.array([92_000.0, 3_100.0, 1.0, 1.0])
    equity = book.collateral @ prices
    t = listing
    inst, qty = book.instrument_idx, book.quantity
    unit = np.where(
        t.inverse[inst] & (t.kind[inst] != Kind.OPTION),
        t.contract_size[inst],
        t.contract_size[inst] * np.array([92_000.0, 3_100.0])[t.underlying[inst]],
    )
    gross = np.bincount(book.account_of_position(), weights=np.abs(qty) * unit, minlength=len(book))
    has = gross > 0
    ratio = equity[has] / gross[has]
    assert np.mean(ratio > 0.1) > 0.85  # most accounts hold > 10 % of gross notional
    assert np.mean(ratio < 0.06) > 0.02  # a few are thinly collateralised
    # BTC traders hold BTC, ETH traders hold ETH
    und0 = t.underlying[inst[book.indptr[:-1][has]]]
    assert (book.collateral[has][und0 == 0, 1] == 0).all() and (book.collateral[has][und0 == 1, 0] == 0).all()


@pytest.mark.parametrize(("n", "seed", "mix", "eth_only"), [
    (3_000, 0, None, False), (2_000, 7, None, False), (37, 5, None, False), (1, 0, None, False),
    (0, 0, None, False), (400, 2, None, True), (1_500, 11, {"market_maker": 0.5, "directional": 0.5}, False),
    (1_500, 3, {"short_vol": 1.0, "calendar": 1.0}, False), (200, 4, {"single": 1.0}, False),
])
def test_generator_keeps_the_books_of_the_unoptimised_version(listing, n, seed, mix, eth_only):
    """The optimised generator reproduces the old one account by account (same random stream)."""
    from reference.sample_reference import generate_accounts as reference

    table = listing.subset(listing.underlying == 1) if eth_only else listing
    got, arch = generate_accounts(n, table, seed=seed, mix=mix, return_archetypes=True)
    want, want_arch = reference(n, table, seed=seed, mix=mix, return_archetypes=True)
    assert got.equals(want) and got.account_id.tolist() == want.account_id.tolist()
    assert np.array_equal(got.collateral.view(np.int64), want.collateral.view(np.int64))
    assert arch.tolist() == want_arch.tolist()


def test_generator_id_prefix(listing):
    book = generate_accounts(3, listing, seed=1, id_prefix="p7-%-")
    assert book.account_id.tolist() == ["p7-%-000000", "p7-%-000001", "p7-%-000002"]
    assert book.equals(AccountBook(book.account_id, *[getattr(generate_accounts(3, listing, seed=1), a) for a in
                                                      ("indptr", "instrument_idx", "quantity", "collateral")],
                                   book.currencies, listing))
    with pytest.raises(InvalidTypeError, match="id_prefix"):
        generate_accounts(3, listing, id_prefix=5)


def test_generator_small_and_bad_inputs(listing):
    assert len(generate_accounts(0, listing)) == 0
    book = generate_accounts(50, listing, seed=3, mix={"single": 1.0})
    assert (np.diff(book.indptr) == 1).all()
    book = generate_accounts(30, listing, seed=3, mix={"empty": 1.0})
    assert book.n_positions == 0 and len(book) == 30
    eth = listing.subset(listing.underlying == 1)
    book = generate_accounts(200, eth, seed=0)
    assert len(book) == 200 and book.n_positions > 0
    with pytest.raises(InvalidInputError, match="n"):
        generate_accounts(-1, listing)
    with pytest.raises(InvalidTypeError):
        generate_accounts(2.5, listing)
    with pytest.raises(InvalidInputError, match="whale"):
        generate_accounts(10, listing, mix={"whale": 1.0})
    with pytest.raises(InvalidInputError, match="mix"):
        generate_accounts(10, listing, mix={"single": -1.0})
