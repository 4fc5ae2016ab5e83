"""Named historical crypto stress scenarios and user-defined hypothetical scenarios.

Historical scenarios are **computed from the price history, not typed in**: each event names a
search window around a documented date, a driver asset and a horizon; the scenario is the driver's
worst ``horizon``-day close-to-close move inside the window, and every other underlying gets its
own move over exactly the same days (joint BTC/ETH/USDT moves). The tests check that the selected
days are the documented ones (e.g. Black Thursday: BTC 7,911.43 -> 4,970.79 on 2020-03-12, -37.2 %).

Vol shock of a historical scenario (**a proxy**: no implied-vol history is bundled): the relative
change of the 30-day realised vol from the base close to the last day of the scenario,
``expm1(iv_beta * (ln RV30[end] - ln RV30[base]))``. A one-day crash raises RV30 by roughly a
factor ``sqrt(1 + r^2 / (30 RV30^2))``, which is large when the crash comes out of a calm regime
(Black Thursday: BTC RV30 x 2.97). Whether implied vol moved as much cannot be checked with the
bundled data (no implied-vol history); scale with ``iv_beta`` or use a hypothetical scenario for a
documented vol shock of your own.

The output is a :class:`dpm.models.measures.MarketScenarios` — ``price_move[S, U]``,
``vol_shock[S, U]``, ``names[S]`` — the engine's scenario-set format.

Sources of the events (dates; the moves themselves come from the bundled Yahoo Finance closes,
see :mod:`dpm.market.history`):

* 2020-03-12 "Black Thursday" (COVID sell-off, BitMEX outage): e.g. BIS Bulletin No. 1 (2020);
  CoinDesk, 2020-03-13, "Bitcoin's price crash of March 12".
* 2020-03 USDT de-peg: USDT traded away from 1 on 2020-03-12/13 (close 1.0536 then 0.9996 in the
  data); Griffin & Shams, "Is Bitcoin really untethered?", J. Finance 75 (2020), for the context.
* 2021-05-19: China's ban on financial institutions offering crypto services (announcement of
  2021-05-18 by the NIFA/CBA/PCA), Reuters 2021-05-19.
* 2022-05 Terra/LUNA collapse, UST de-peg (USDT traded at 0.95-0.99 intraday on 2022-05-12):
  Reuters 2022-05-12.
* 2022-06-13 Celsius freezes withdrawals (Celsius blog 2022-06-12), Three Arrows Capital distress.
* 2022-11-08/09 FTX insolvency (Binance withdraws its rescue offer on 2022-11-09), Reuters.
* 2023-03-10/13 USDC de-peg after Silicon Valley Bank's failure (Circle statement 2023-03-10);
  USDT traded at a premium.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError
from dpm.market.history import BUNDLED_HISTORY_SOURCE, PriceHistory, load_history
from dpm.models.calibration.ranges import realized_log_vol
from dpm.models.scenarios import MarketScenarios

__all__ = [
    "CRYPTO_STRESS_EVENTS",
    "StressEvent",
    "historical_stress_scenarios",
    "hypothetical_scenarios",
    "stress_event_table",
]


@dataclass(frozen=True)
class StressEvent:
    """Definition of a historical stress event (the move itself is read from the data).

    Attributes
    ----------
    name : str
    search_start, search_end : str
        ISO dates bounding the **last day** of the scenario window.
    driver : str
        Asset whose move selects the days.
    horizon_days : int
        Close-to-close horizon.
    direction : {"down", "up", "abs"}
        Select the most negative, most positive or largest absolute driver move.
    expected_end : str
        The documented day the move ends on (checked by the tests).
    description, source : str
    """

    name: str
    search_start: str
    search_end: str
    driver: str
    horizon_days: int
    direction: str
    expected_end: str
    description: str
    source: str


CRYPTO_STRESS_EVENTS: tuple[StressEvent, ...] = (
    StressEvent("black_thursday_2020", "2020-03-06", "2020-03-20", "BTC", 1, "down", "2020-03-12",
                "COVID sell-off, BTC -37 % close to close",
                "BIS Bulletin No 1 (2020); CoinDesk 2020-03-13"),
    StressEvent("usdt_depeg_2020", "2020-03-06", "2020-03-20", "USDT", 1, "down", "2020-03-13",
                "USDT below peg the day after Black Thursday",
                "Yahoo Finance USDT-USD closes; Griffin & Shams, J. Finance 75 (2020)"),
    StressEvent("china_ban_2021", "2021-05-12", "2021-05-26", "BTC", 1, "down", "2021-05-19",
                "China bars financial institutions from crypto services", "Reuters 2021-05-19"),
    StressEvent("terra_luna_2022", "2022-05-07", "2022-05-15", "USDT", 1, "down", "2022-05-11",
                "Terra/UST collapse, USDT briefly below peg", "Reuters 2022-05-12"),
    StressEvent("celsius_3ac_2022", "2022-06-08", "2022-06-20", "BTC", 1, "down", "2022-06-13",
                "Celsius freezes withdrawals; Three Arrows Capital distress",
                "Celsius blog 2022-06-12; Reuters 2022-06-13"),
    StressEvent("ftx_2022", "2022-11-05", "2022-11-14", "BTC", 2, "down", "2022-11-09",
                "FTX collapse, two-day move 2022-11-07 close -> 2022-11-09 close",
                "Reuters 2022-11-09"),
    StressEvent("usdc_svb_2023", "2023-03-08", "2023-03-15", "USDT", 1, "abs", "2023-03-11",
                "USDC de-peg after SVB failure; USDT at a premium", "Circle statement 2023-03-10"),
)


def _event_days(history: PriceHistory, ev: StressEvent) -> tuple[int, int]:
    """Row indices (base, end) in ``history`` of the event's selected window."""
    dates, close = history.prices(ev.driver)
    offset = len(history.dates) - len(dates)
    lo = int(np.searchsorted(dates, np.datetime64(ev.search_start, "D")))
    hi = int(np.searchsorted(dates, np.datetime64(ev.search_end, "D"), side="right"))
    h = ev.horizon_days
    lo = max(lo, h)
    if hi <= lo:
        raise InvalidInputError(
            f"history: no {ev.driver} data between {ev.search_start} and {ev.search_end} "
            f"for stress event {ev.name!r}")
    lr = np.log(close[lo:hi] / close[lo - h:hi - h])
    if ev.direction == "down":
        k = int(np.argmin(lr))
    elif ev.direction == "up":
        k = int(np.argmax(lr))
    elif ev.direction == "abs":
        k = int(np.argmax(np.abs(lr)))
    else:
        raise InvalidInputError(f"direction: expected 'down', 'up' or 'abs', got {ev.direction!r}")
    end = offset + lo + k
    return end - h, end


def historical_stress_scenarios(history: PriceHistory | None = None,
                                events: Sequence[StressEvent] | None = None,
                                underlyings: Sequence[str] = ("BTC", "ETH", "USDT"), *,
                                vol_window: int = 30, iv_beta: float = 1.0) -> MarketScenarios:
    """Joint price moves and vol shocks of named historical stress events, from the data.

    Parameters
    ----------
    history : PriceHistory, optional
        Default: the bundled history.
    events : sequence of StressEvent, optional
        Default: :data:`CRYPTO_STRESS_EVENTS`.
    underlyings : sequence of str
        Columns of the result; each must have prices over every event window.
    vol_window : int
        Realised-vol window of the vol-shock proxy (days).
    iv_beta : float
        Multiplier on the log change of realised vol (1 = take it as it is).

    Returns
    -------
    MarketScenarios
        ``kind="stress"``; ``sources`` records the exact days and the data source per scenario.
    """
    hist = load_history() if history is None else history
    evs = CRYPTO_STRESS_EVENTS if events is None else tuple(events)
    if not evs:
        raise InvalidInputError("events: no stress events given")
    unames = tuple(underlyings)
    cols = []
    for u in unames:
        if u not in hist.assets:
            raise InvalidInputError(f"underlyings: {u!r} is not in the history ({hist.assets})")
        cols.append(hist.assets.index(u))
    close = hist.close[:, cols]
    logp = np.log(close)
    lv = np.full(close.shape, np.nan)
    for j in range(len(cols)):
        first = int(hist.first_index[cols[j]])
        r = np.diff(logp[first:, j])
        if r.size >= vol_window:
            lv[first + 1:, j] = realized_log_vol(r, vol_window)
    moves = np.empty((len(evs), len(unames)))
    vols = np.empty_like(moves)
    names, sources = [], []
    for i, ev in enumerate(evs):
        base, end = _event_days(hist, ev)
        missing = ~np.isfinite(close[base]) | ~np.isfinite(close[end])
        if missing.any():
            j = int(np.flatnonzero(missing)[0])
            raise InvalidInputError(
                f"history: no {unames[j]} price for stress event {ev.name!r} "
                f"({hist.dates[base]} .. {hist.dates[end]})")
        moves[i] = np.expm1(logp[end] - logp[base])
        dlv = lv[end] - lv[base]
        vols[i] = np.where(np.isfinite(dlv), np.expm1(iv_beta * dlv), 0.0)
        names.append(ev.name)
        sources.append(f"{hist.dates[base]} close -> {hist.dates[end]} close; {ev.source}; "
                       f"prices: {BUNDLED_HISTORY_SOURCE if history is None else hist.source}")
    return MarketScenarios(moves, vols, tuple(names), unames,
                           max(ev.horizon_days for ev in evs), "stress", tuple(sources))


def stress_event_table(history: PriceHistory | None = None,
                       events: Sequence[StressEvent] | None = None,
                       underlyings: Sequence[str] = ("BTC", "ETH", "USDT")) -> list[dict[str, Any]]:
    """One dict per event: name, base and end dates, price move and vol shock per underlying."""
    hist = load_history() if history is None else history
    evs = CRYPTO_STRESS_EVENTS if events is None else tuple(events)
    sc = historical_stress_scenarios(hist, evs, underlyings)
    rows = []
    for i, ev in enumerate(evs):
        base, end = _event_days(hist, ev)
        row: dict[str, Any] = {"name": ev.name, "base": str(hist.dates[base]),
                               "end": str(hist.dates[end]), "description": ev.description}
        for j, u in enumerate(sc.underlyings):
            row[f"{u}_move"] = float(sc.price_move[i, j])
            row[f"{u}_vol_shock"] = float(sc.vol_shock[i, j])
        rows.append(row)
    return rows


def hypothetical_scenarios(specs: Sequence[Mapping[str, Any]],
                           underlyings: Sequence[str]) -> MarketScenarios:
    """User-defined joint price and vol moves per underlying.

    Parameters
    ----------
    specs : sequence of mappings
        Each with ``"name"``, ``"price_move"`` (mapping underlying -> relative move) and optionally
        ``"vol_shock"`` (mapping underlying -> relative vol shock) and ``"source"``. Underlyings not
        named move by 0.
    underlyings : sequence of str
        Column order of the result.

    Examples
    --------
    >>> sc = hypothetical_scenarios([{"name": "crash", "price_move": {"BTC": -0.3, "ETH": -0.4},
    ...                               "vol_shock": {"BTC": 0.8, "ETH": 0.8}}], ["BTC", "ETH"])
    >>> sc.price_move.tolist()
    [[-0.3, -0.4]]
    """
    unames = tuple(str(u) for u in underlyings)
    if not specs:
        raise InvalidInputError("specs: no scenarios given")
    pm = np.zeros((len(specs), len(unames)))
    vs = np.zeros_like(pm)
    names, sources = [], []
    for i, spec in enumerate(specs):
        if "name" not in spec or "price_move" not in spec:
            raise InvalidInputError(f"specs: scenario {i} needs 'name' and 'price_move'")
        unknown = set(spec) - {"name", "price_move", "vol_shock", "source"}
        if unknown:
            raise InvalidInputError(f"specs: scenario {spec['name']!r} has unknown keys {sorted(unknown)}")
        for key, arr in (("price_move", pm), ("vol_shock", vs)):
            for u, v in dict(spec.get(key) or {}).items():
                if u not in unames:
                    raise InvalidInputError(
                        f"{key}: scenario {spec['name']!r} names unknown underlying {u!r} "
                        f"(underlyings: {unames})")
                try:
                    arr[i, unames.index(u)] = float(v)
                except (TypeError, ValueError):
                    raise InvalidInputError(
                        f"{key}: scenario {spec['name']!r}, {u}: not a number {v!r}") from None
        names.append(str(spec["name"]))
        sources.append(str(spec.get("source", "hypothetical")))
    return MarketScenarios(pm, vs, tuple(names), unames, 1, "hypothetical", tuple(sources))
