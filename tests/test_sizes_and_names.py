"""Requests too large for the machine are refused before allocating; market errors name the instrument."""
from __future__ import annotations

import numpy as np
import pytest

from dpm._util import validation
from dpm.errors import InvalidInputError, MarketDataError
from dpm.market.sample import default_instruments, default_market
from dpm.market.snapshot import ForwardCurve
from dpm.portfolio.accounts import AccountBook
from dpm.portfolio.sample import generate_accounts

TRILLION = 10**12


@pytest.fixture(scope="module")
def table():
    return default_instruments()


def test_a_trillion_generated_accounts_is_refused_with_the_size(table) -> None:
    with pytest.raises(InvalidInputError, match=r"n: 1,000,000,000,000 accounts need about [\d.,]+ PiB of memory; "
                                                r"this machine has [\d.,]+ [KMGT]iB"):
        generate_accounts(TRILLION, table)


def test_a_book_with_a_huge_account_index_or_count_is_refused(table) -> None:
    with pytest.raises(InvalidInputError, match=r"1,000,000,000,001 accounts \(account_index\) and 1 positions "
                                                r"need about [\d.,]+ TiB"):
        AccountBook.from_arrays([TRILLION], [0], [1.0], table)
    with pytest.raises(InvalidInputError, match=r"1,000,000,000,000 accounts \(n_accounts\) and 0 positions"):
        AccountBook.from_arrays([], [], [], table, n_accounts=TRILLION)


def test_monte_carlo_paths_beyond_memory_are_refused() -> None:
    from dpm.models.generators.montecarlo import mc_scenarios

    with pytest.raises(InvalidInputError, match=r"n_paths: 1,000,000,000,000 paths of 2 underlyings need about"):
        mc_scenarios(vols=[0.03, 0.04], corr=[[1.0, 0.5], [0.5, 1.0]], n_paths=TRILLION)


def test_the_limit_is_the_machine_memory(table, monkeypatch) -> None:
    monkeypatch.setattr(validation, "memory_limit", lambda: 1_000_000)  # a 1 MB machine
    with pytest.raises(InvalidInputError, match=r"n: 1,000 accounts need about 3.9 MiB of memory; this machine "
                                                r"has 976.6 KiB"):
        generate_accounts(1000, table)
    assert len(generate_accounts(100, table)) == 100
    assert validation.memory_limit() < 2**63


def test_an_infinite_forward_names_the_instrument() -> None:
    market = default_market()
    table = default_instruments()
    btc = market["BTC"]
    # a basis of 800 %/year overflows exp(y T) beyond about 0.9 years
    wild = btc.with_updates(forward_curve=ForwardCurve(btc.index_price, [1.0], [800.0]))
    bad = market.with_underlying("BTC", wild)
    with pytest.raises(MarketDataError, match=r"instrument 'BTC-[0-9A-Z]+': forward is inf \(index 92000.0 \* "
                                              r"exp\(basis 800.0 \* T [\d.]+\)\); the forward curve of 'BTC'"):
        bad.instrument_inputs(table)
    with pytest.raises(MarketDataError, match=r"forward: S \* exp\(y \* T\) is inf at T=2.0"):
        wild.forward([0.5, 2.0])
    assert np.isfinite(wild.forward([0.5])).all()
    from dpm.engines.margin import MarginEngine
    from dpm.models import preset

    with pytest.raises(MarketDataError, match="forward is inf"):
        MarginEngine(bad, table, preset("default"))
