"""Tests for dpm.market: forward curves, immutable snapshots, thread-safe swaps, instrument inputs."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import threading
from pathlib import Path

import numpy as np
import pytest

from dpm.errors import InvalidInputError, InvalidTypeError, MarketDataError
from dpm.market.snapshot import MS_PER_YEAR, ForwardCurve, InstrumentInputs, MarketSnapshot, UnderlyingMarket
from dpm.market.surface import VolSurface
from dpm.market.table import InstrumentTable

_spec = importlib.util.spec_from_file_location(
    "surface_reference", Path(__file__).parent / "reference" / "surface_reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

T0 = 1_795_766_400_000          # 2026-11-27 08:00 UTC
DAY = 86_400_000


def _surface(level=0.5):
    P = [[level**2 * 0.05 * 0.8, 0.02, -0.3, 0.0, 0.1], [level**2 * 0.5 * 0.8, 0.1, -0.3, 0.0, 0.3]]
    return VolSurface.from_svi_params(P, [0.05, 0.5])


def _market(S=100.0, ts=T0):
    curve = ForwardCurve.from_futures(S, [0.1, 0.5], [S * 1.01, S * 1.04])
    return MarketSnapshot(ts, {"BTC": UnderlyingMarket(S, curve, _surface(), perpetual_price=S + 0.5,
                                                         funding_rate=1e-4)})


# --------------------------------------------------------------------------- forward curve
def test_forward_curve_hand_values():
    c = ForwardCurve.from_futures(100.0, [0.5, 0.1], [104.0, 101.0])      # unsorted input
    y1, y2 = math.log(1.01) / 0.1, math.log(1.04) / 0.5
    np.testing.assert_allclose(c.times, [0.1, 0.5])
    np.testing.assert_allclose(c.basis, [y1, y2], rtol=1e-15)
    T = np.array([0.0, 0.05, 0.1, 0.3, 0.5, 1.0])
    expect = [100.0,
              100.0 * math.exp(y1 * 0.05),                 # flat basis before the first future
              101.0,
              100.0 * math.exp(0.5 * (y1 + y2) * 0.3),     # basis linear in T: halfway at T = 0.3
              104.0,
              100.0 * 1.04 ** 2]                          # flat basis after the last: exp(2 * y2 * 0.5)
    np.testing.assert_allclose(c.forward(T), expect, rtol=1e-14)
    np.testing.assert_allclose(c.basis_at(0.3), 0.5 * (y1 + y2), rtol=1e-15)
    assert float(c.forward(0.0)) == 100.0
    rng = np.random.default_rng(0)
    Ts = rng.uniform(0, 2, 200)
    np.testing.assert_allclose(c.forward(Ts), [ref.forward(100.0, [0.1, 0.5], [y1, y2], t) for t in Ts], rtol=1e-14)
    assert c.forward(np.zeros((2, 3))).shape == (2, 3)


def test_forward_curve_from_rate_and_with_index():
    c = ForwardCurve.from_rate(3000.0, 0.05)
    np.testing.assert_allclose(c.forward([0.0, 1.0, 2.0]), 3000.0 * np.exp([0.0, 0.05, 0.1]), rtol=1e-15)
    c2 = c.with_index(3300.0)
    np.testing.assert_allclose(c2.forward(1.0), 3300.0 * math.exp(0.05), rtol=1e-15)
    assert c2.basis is c.basis and c2.times is c.times          # read-only arrays are shared


def test_forward_curve_errors():
    with pytest.raises(MarketDataError, match="prices: must be finite and > 0, 'BTC-25DEC26' is -1.0"):
        ForwardCurve.from_futures(100.0, [0.1, 0.2], [101.0, -1.0], labels=["BTC-4DEC26", "BTC-25DEC26"])
    with pytest.raises(MarketDataError, match="disagree"):
        ForwardCurve.from_futures(100.0, [0.1, 0.1], [101.0, 102.0])
    with pytest.raises(MarketDataError, match="times"):
        ForwardCurve.from_futures(100.0, [0.0], [101.0])
    with pytest.raises(InvalidInputError, match="index_price"):
        ForwardCurve.from_futures(float("nan"), [0.1], [101.0])
    with pytest.raises(InvalidTypeError, match="index_price"):
        ForwardCurve.from_rate("100")
    c = ForwardCurve.from_rate(100.0)
    with pytest.raises(InvalidInputError, match="T: time must be finite and >= 0, got -1.0"):
        c.forward([1.0, -1.0])
    merged = ForwardCurve.from_futures(100.0, [0.1, 0.1, 0.2], [101.0, 101.0, 102.0])
    assert merged.times.size == 2


# --------------------------------------------------------------------------- immutability
def test_snapshot_is_immutable():
    snap = _market()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.timestamp_ms = 0
    with pytest.raises(TypeError):
        snap.underlyings["ETH"] = snap["BTC"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap["BTC"].index_price = 1.0
    curve = snap["BTC"].forward_curve
    with pytest.raises(ValueError):
        curve.basis[0] = 0.0
    with pytest.raises(AttributeError):
        snap["BTC"].vol_surface.report = None
    inp = snap.instrument_inputs(InstrumentTable.from_names(["BTC-PERPETUAL"]))
    with pytest.raises(ValueError):
        inp.forward[0] = 1.0


def test_pickle_and_deepcopy_keep_snapshots_immutable():
    import copy
    import pickle

    snap = _market()
    for clone in (pickle.loads(pickle.dumps(snap)), copy.deepcopy(snap)):
        assert clone is not snap and clone.timestamp_ms == snap.timestamp_ms
        btc = clone["BTC"]
        assert not btc.forward_curve.basis.flags.writeable
        assert not btc.vol_surface.times.flags.writeable
        np.testing.assert_array_equal(btc.forward([0.0, 0.3]), snap["BTC"].forward([0.0, 0.3]))
        np.testing.assert_array_equal(btc.vol_surface.implied_vol([90.0, 110.0], 0.2, 100.0),
                                      snap["BTC"].vol_surface.implied_vol([90.0, 110.0], 0.2, 100.0))
        assert btc.perpetual_price == 100.5 and btc.funding_rate == 1e-4
        with pytest.raises(TypeError):
            clone.underlyings["X"] = btc
    inp = snap.instrument_inputs(InstrumentTable.from_names(["BTC-PERPETUAL"]))
    assert not pickle.loads(pickle.dumps(inp)).forward.flags.writeable


def test_caller_arrays_are_copied_not_frozen():
    t = np.array([0.1, 0.5])
    F = np.array([101.0, 104.0])
    c = ForwardCurve.from_futures(100.0, t, F)
    assert t.flags.writeable and F.flags.writeable
    t[0] = 0.2
    assert c.times[0] == 0.1
    under = {"BTC": _market()["BTC"]}
    snap = MarketSnapshot(T0, under)
    under.pop("BTC")
    assert "BTC" in snap


def test_with_updates_shares_parts_and_leaves_old_intact():
    old = _market()
    new = old.with_updates(timestamp_ms=T0 + DAY)
    assert old.timestamp_ms == T0 and new.timestamp_ms == T0 + DAY
    assert new["BTC"] is old["BTC"]
    assert new["BTC"].forward_curve.basis is old["BTC"].forward_curve.basis
    assert np.shares_memory(new["BTC"].vol_surface.times, old["BTC"].vol_surface.times)

    moved = old["BTC"].with_updates(index_price=110.0)
    assert moved.forward_curve.index_price == 110.0 and old["BTC"].index_price == 100.0
    assert moved.forward_curve.basis is old["BTC"].forward_curve.basis
    assert moved.vol_surface is old["BTC"].vol_surface
    np.testing.assert_allclose(moved.forward(0.5), 110 * 1.04, rtol=1e-14)

    eth = UnderlyingMarket(3000.0, ForwardCurve.from_rate(3000.0, 0.05), None)
    both = new.with_underlying("ETH", eth)
    assert set(both.underlyings) == {"BTC", "ETH"} and set(new.underlyings) == {"BTC"}
    assert both["BTC"] is old["BTC"]
    with pytest.raises(InvalidInputError, match="unknown field"):
        old.with_updates(index=1.0)
    with pytest.raises(MarketDataError, match="differs from index_price"):
        UnderlyingMarket(110.0, old["BTC"].forward_curve)
    with pytest.raises(MarketDataError, match="'SOL' is not in the market snapshot"):
        old["SOL"]


def test_snapshot_validation():
    with pytest.raises(InvalidTypeError, match="timestamp_ms"):
        MarketSnapshot(1.5e12, {})
    with pytest.raises(InvalidTypeError, match="UnderlyingMarket"):
        MarketSnapshot(T0, {"BTC": 1.0})
    with pytest.raises(InvalidInputError, match="perpetual_price"):
        UnderlyingMarket(100.0, ForwardCurve.from_rate(100.0), perpetual_price=-1.0)


# --------------------------------------------------------------------------- threads
def _consistent_snapshot(version: int) -> MarketSnapshot:
    """Every field of snapshot ``version`` encodes the version, so a torn read would be visible."""
    S = 1000.0 + version
    curve = ForwardCurve.from_futures(S, [0.1, 0.5], [S * 1.01, S * 1.04])
    und = UnderlyingMarket(S, curve, None, perpetual_price=S + 0.5, funding_rate=version * 1e-6)
    return MarketSnapshot(T0 + version, {"BTC": und, "ETH": und.with_updates(funding_rate=version * 2e-6)})


def test_snapshot_swap_is_all_or_nothing_across_threads():
    shared = [_consistent_snapshot(0)]
    n_versions = 400
    versions = [_consistent_snapshot(v) for v in range(n_versions)]
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def reader():
        while not stop.is_set():
            snap = shared[0]                    # one reference read; everything below uses `snap`
            v = snap.timestamp_ms - T0
            btc, eth = snap["BTC"], snap["ETH"]
            ok = (btc.index_price == 1000.0 + v and btc.perpetual_price == btc.index_price + 0.5
                  and btc.forward_curve.index_price == btc.index_price
                  and float(btc.forward(0.1)) == pytest.approx(btc.index_price * 1.01, rel=1e-14)
                  and btc.funding_rate == v * 1e-6 and eth.funding_rate == v * 2e-6
                  and eth.index_price == btc.index_price)
            if not ok:
                errors.append(f"inconsistent read of version {v}")
            reads[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(5):
        for s in versions:
            shared[0] = s                       # the writer publishes by swapping the reference
    # derived snapshots built while readers run must be consistent as well
    for v in range(n_versions):
        base = versions[v]
        shared[0] = base.with_updates(timestamp_ms=base.timestamp_ms)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert reads[0] > 0


# --------------------------------------------------------------------------- instrument inputs
NAMES = ["BTC-PERPETUAL", "BTC_USDC-PERPETUAL", "BTC-25DEC26", "BTC-25DEC26-100-C", "BTC-25DEC26-90-P",
         "BTC-26MAR27-120-C", "BTC_USDC-26MAR27-120-P"]


def test_instrument_inputs_values():
    table = InstrumentTable.from_names(NAMES)
    snap = _market()
    inp = snap.instrument_inputs(table)
    assert isinstance(inp, InstrumentInputs) and len(inp) == len(NAMES)
    exp = np.asarray(table.expiry_ms)
    T = np.where(np.isin(np.arange(7), [0, 1]), 0.0, (exp - T0) / MS_PER_YEAR)
    T[:2] = 0.0
    np.testing.assert_array_equal(inp.time, T)
    c = snap["BTC"].forward_curve
    np.testing.assert_allclose(inp.forward[:2], 100.5)                     # perpetual mark
    np.testing.assert_allclose(inp.forward[2:], c.forward(T[2:]), rtol=1e-15)
    np.testing.assert_array_equal(inp.index, 100.0)
    assert np.isnan(inp.vol[:3]).all()
    vs = snap["BTC"].vol_surface
    np.testing.assert_allclose(inp.vol[3:], vs.implied_vol(np.asarray(table.strike)[3:], T[3:], inp.forward[3:]),
                               rtol=1e-15)
    assert inp.timestamp_ms == T0
    # 25DEC26 is 28 days away: T = 28/365
    assert inp.time[2] == pytest.approx(28 / 365, rel=1e-15)


def test_instrument_inputs_spot_uses_index():
    from dpm.market.specs import Spot

    table = InstrumentTable.from_specs([Spot("BTC")], underlyings=("BTC",))
    inp = _market().instrument_inputs(table)
    assert inp.forward[0] == 100.0 and inp.time[0] == 0.0 and np.isnan(inp.vol[0])


def test_instrument_inputs_errors_name_the_instrument():
    table = InstrumentTable.from_names(["BTC-PERPETUAL", "ETH-25DEC26-3000-C"])
    with pytest.raises(MarketDataError, match=r"instrument 'ETH-25DEC26-3000-C': underlying 'ETH' is not in"):
        _market().instrument_inputs(table)
    table = InstrumentTable.from_names(["BTC-PERPETUAL", "BTC-4DEC26", "BTC-25DEC26-100-C"])
    late = _market(ts=T0 + 10 * DAY)
    with pytest.raises(MarketDataError, match=r"instrument 'BTC-4DEC26' has expired: expiry 2026-12-04T08:00:00Z"):
        late.instrument_inputs(table)
    at_expiry = _market(ts=T0 + 7 * DAY)                 # expiry_ms == timestamp_ms counts as expired
    with pytest.raises(MarketDataError, match="BTC-4DEC26"):
        at_expiry.instrument_inputs(table)
    no_vol = MarketSnapshot(T0, {"BTC": UnderlyingMarket(100.0, ForwardCurve.from_rate(100.0))})
    with pytest.raises(MarketDataError, match=r"instrument 'BTC-25DEC26-100-C': underlying 'BTC' has no vol surface"):
        no_vol.instrument_inputs(table)
    no_vol.instrument_inputs(InstrumentTable.from_names(["BTC-PERPETUAL", "BTC-4DEC26"]))   # fine without options


def test_snapshot_with_venue_following_surface_feeds_the_engines_inputs():
    """A loaded market (spline smiles): instrument_inputs gives the surface's vols, pickling keeps them."""
    import pickle

    from dpm.market.loaders import load_market
    from dpm.market.loaders.deribit import read_deribit_chain
    from dpm.market.sample import DERIBIT_CHAIN_PATH

    snap = load_market(DERIBIT_CHAIN_PATH, max_age_s=None)
    chain = read_deribit_chain()
    table = chain.table.subset(np.flatnonzero(chain.table.expiry_ms > snap.timestamp_ms))
    inp = snap.instrument_inputs(table)
    vs = snap["BTC"].vol_surface
    np.testing.assert_array_equal(inp.vol, vs.implied_vol(table.strike, inp.time, inp.forward))
    assert np.all(np.isfinite(inp.vol)) and np.all(inp.vol > 0)
    back = pickle.loads(pickle.dumps(snap))
    np.testing.assert_array_equal(back.instrument_inputs(table).vol, inp.vol)
    # flat wings: far out-of-the-money strikes get the last quoted level, not an extrapolated slope
    far = vs.implied_vol([100.0, 1e6], 0.3, 9400.0)
    assert np.all(far < 3.0)
