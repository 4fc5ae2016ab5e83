"""Fail closed: one non-finite or absurd value injected anywhere never gives a finite, lower margin.

Random books on the bundled market under every preset; one value is corrupted — a quantity, a
collateral amount, an index, a perpetual mark, a futures basis, an implied vol, a funding rate, a
scenario move, a model parameter. The result must be a ``DPMError`` naming the culprit (account,
instrument or field), or margins not lower than the clean run's (relative 1e-12), never a finite,
lower number.
"""
from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
import pytest

from dpm.engines.margin import MarginEngine
from dpm.errors import DPMError
from dpm.market.sample import default_instruments, default_market
from dpm.market.snapshot import MarketSnapshot
from dpm.models.presets import PRESETS, preset
from dpm.portfolio.accounts import AccountBook
from dpm.portfolio.sample import generate_accounts

#: absurd values per site: non-finite, or a factor no real number is off by (prices, vols and sizes
#: are scaled by the finite ones; a replaced quantity of 0 would only be another, valid book)
BAD = {
    "quantity": [np.nan, np.inf, -np.inf, 1e300, -1e250],
    "collateral": [np.nan, np.inf, -1.0, 1e308],
    "index": [np.nan, np.inf, 0.0, -1.0, 1e6, 1e-6],
    "perpetual": [np.nan, np.inf, 0.0, -1.0, 1e6, 1e-6],
    "basis": [np.nan, np.inf, 1e6, -1e6],
    "funding": [np.nan, np.inf, -np.inf],
    "vol": [np.nan, np.inf, 0.0, -1.0, 1e6, 1e-6, 100.0],
    "model": [np.nan, np.inf, -1.0],
}


@pytest.fixture(scope="module")
def base():
    return default_market(), default_instruments()


def _margin(market, table, model, book):
    return MarginEngine(market, table, model, workers=1).margin_many(book).initial_margin


def _inject(kind, value, market, table, model, book, rng):
    """The corrupted (market, model, book) and the words an error about it must contain."""
    if kind == "quantity":
        q = book.quantity.copy()
        k = int(rng.integers(q.size))
        q[k] = q[k] * value if np.isfinite(value) else value
        a = int(np.searchsorted(book.indptr, k, side="right") - 1)
        nb = lambda: AccountBook(book.account_id, book.indptr, book.instrument_idx, q, book.collateral,  # noqa: E731
                                 book.currencies, book.table)
        return market, model, nb, ("quantity", str(book.account_id[a]), "margin")
    if kind == "collateral":
        c = book.collateral.copy()
        c[int(rng.integers(c.shape[0])), int(rng.integers(c.shape[1]))] = value
        nb = lambda: AccountBook(book.account_id, book.indptr, book.instrument_idx, book.quantity, c,  # noqa: E731
                                 book.currencies, book.table)
        return market, model, nb, ("collateral", "margin")
    u = str(rng.choice(["BTC", "ETH"]))
    um = market[u]
    if kind == "index":
        mk = lambda: market.with_underlying(u, um.with_updates(index_price=um.index_price * value)  # noqa: E731
                                            if np.isfinite(value) and value > 0 else um.with_updates(index_price=value))
        return mk, model, lambda: book, ("index", "mark", u, "price")
    if kind == "perpetual":
        mk = lambda: market.with_underlying(u, um.with_updates(  # noqa: E731
            perpetual_price=um.perpetual_price * value if np.isfinite(value) and value > 0 else value))
        return mk, model, lambda: book, ("perpetual", u)
    if kind == "basis":
        fc = um.forward_curve
        basis = fc.basis.copy()
        basis[int(rng.integers(basis.size))] = value
        mk = lambda: market.with_underlying(u, um.with_updates(  # noqa: E731
            forward_curve=type(fc)(fc.index_price, fc.times, basis)))
        return mk, model, lambda: book, ("basis", "forward", u)
    if kind == "funding":
        mk = lambda: market.with_underlying(u, um.with_updates(funding_rate=value))  # noqa: E731
        return mk, model, lambda: book, ("funding_rate",)
    if kind == "vol":
        held = np.unique(book.instrument_idx[np.asarray(table.kind)[book.instrument_idx] == 3])
        target = str(table.name[int(rng.choice(held))])
        real = MarketSnapshot.instrument_inputs

        class Broken(MarketSnapshot):
            def instrument_inputs(self, tab):
                inp = real(self, tab)
                vol = np.array(inp.vol, dtype=np.float64)
                hit = np.array([n == target for n in tab.name])
                vol[hit] = vol[hit] * value if np.isfinite(value) and value > 0 else value
                return type(inp)(inp.forward, inp.time, vol, inp.index, inp.timestamp_ms)

        mk = lambda: Broken(market.timestamp_ms, dict(market.underlyings))  # noqa: E731
        return mk, model, lambda: book, (target, "vol")
    if kind == "model":
        field = str(rng.choice(["price_range", "extended_dampener_usd", "short_option_minimum"]))
        md = lambda: model.with_params(u, **{field: value})  # noqa: E731
        return market, md, lambda: book, (field,)
    raise AssertionError(kind)


KINDS = ["quantity", "collateral", "index", "perpetual", "basis", "funding", "vol", "model"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_an_injected_bad_value_errs_or_raises_margin(name, base):
    market, table = base
    model = preset(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    book = generate_accounts(40, table, seed=int(rng.integers(1000)))
    clean = _margin(market, table, model, book)
    outcomes = {"error": 0, "not lower": 0}
    for kind in KINDS:
        for value in BAD[kind]:
            mk, md, nb, words = _inject(kind, value, market, table, model, book, rng)
            try:
                m2 = mk() if callable(mk) else mk
                model2 = md() if callable(md) else md
                book2 = nb()
                bad = _margin(m2, table, model2, book2)
            except DPMError as exc:
                msg = str(exc)
                assert any(w in msg for w in words), f"{kind}={value!r}: the error does not name it: {msg}"
                outcomes["error"] += 1
                continue
            assert np.isfinite(bad).all(), f"{kind}={value!r}: a non-finite margin came back"
            lower = bad < clean * (1 - 1e-12) - 1e-9
            assert not lower.any(), (f"{kind}={value!r}: account {book.account_id[np.flatnonzero(lower)[0]]!r} "
                                     f"margins {bad[lower][0]!r} < {clean[lower][0]!r}")
            outcomes["not lower"] += 1
    assert outcomes["error"] > 0 and outcomes["not lower"] > 0


def test_scenario_set_tampering_is_refused(base):
    market, table = base
    model = preset("default")
    sset = model.scenario_set(("BTC", "ETH"))
    for field, value in (("price_move", np.nan), ("price_move", -1.5), ("vol_shock", np.inf)):
        arr = np.array(getattr(sset, field))
        arr[3, 0] = value
        bad = replace(sset)
        object.__setattr__(bad, field, arr)
        from dpm.engines.risk import ScenarioRiskEngine

        book = generate_accounts(5, table, seed=1)
        with pytest.raises(DPMError, match=field):
            ScenarioRiskEngine(market, table).var_es(book, bad)
