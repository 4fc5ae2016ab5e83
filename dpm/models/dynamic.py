"""Dynamic risk-matrix parameters: scan ranges, vol shocks and correlations that follow the market.

:func:`dynamic_model` takes a static model (e.g. a preset) and replaces, per underlying, the price
range and the vol-shock sizes with the values a :class:`dpm.models.calibration.DynamicScanRange` set on a
given day (EWMA volatility — or any risk model through
:meth:`dpm.models.risk_model.WalkForward.scan_ranges` — with the anti-procyclicality floor, buffer
and speed limit applied), and, when the ranges carry one and the model offsets underlyings, the
day's correlation matrix. The grid shape (steps, extended moves, add-ons) is kept, so the model stays
comparable with its static version.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np

from dpm.errors import InvalidInputError
from dpm.models.calibration.ranges import DynamicScanRange
from dpm.models.risk_matrix import RiskMatrixModel

__all__ = ["dynamic_model"]


def dynamic_model(base: RiskMatrixModel, ranges: DynamicScanRange, day: int | np.datetime64 | str = -1, *,
                  vol_shocks: bool = True, asset_map: Mapping[str, str] | None = None,
                  correlation: bool = True) -> RiskMatrixModel:
    """``base`` with each underlying's price range (and vol shocks) taken from ``ranges`` on ``day``.

    Parameters
    ----------
    base : RiskMatrixModel
        The static model whose grid shape and add-ons are kept.
    ranges : DynamicScanRange
        Output of :func:`dpm.models.calibration.ranges`.
    day : int, datetime64 or ISO date str
        Row of ``ranges`` (default: the latest) or a date in ``ranges.dates``.
    vol_shocks : bool
        Also replace ``vol_shock.up`` / ``vol_shock.down`` by the dynamic 30-day shock sizes
        (ignored where they are NaN, i.e. before enough history).
    asset_map : mapping, optional
        Underlying name -> asset name in ``ranges`` when they differ.
    correlation : bool
        Replace the model's correlation by the day's ``ranges.correlation`` when both exist. A
        model without correlation (plain sum of underlyings, no offsets) keeps none: the dynamic
        data never add offsets the venue's model does not allow.

    Returns
    -------
    RiskMatrixModel
        Named ``"<base>+dynamic@<date>"``.
    """
    if not isinstance(ranges, DynamicScanRange):
        raise InvalidInputError(f"ranges: expected a DynamicScanRange, got {type(ranges).__name__}")
    n = ranges.range.shape[0]
    if isinstance(day, (str, np.datetime64)):
        if ranges.dates is None:
            raise InvalidInputError("day: ranges has no dates; pass a row number")
        d = np.datetime64(day, "D")
        hits = np.flatnonzero(ranges.dates == d)
        if hits.size == 0:
            raise InvalidInputError(f"day: {day!r} is not in ranges.dates")
        t = int(hits[0])
    else:
        t = int(day)
        if not -n <= t < n:
            raise InvalidInputError(f"day: row {t} out of range for {n} days")
    amap = dict(asset_map or {})
    unds = dict(base.underlyings)
    label = str(ranges.dates[t]) if ranges.dates is not None else f"row {t % n}"
    changed = []
    for j, asset in enumerate(ranges.assets):
        und = next((u for u, a in amap.items() if a == asset), asset)
        rng = float(ranges.range[t, j])
        if not np.isfinite(rng) or rng <= 0:
            raise InvalidInputError(f"ranges: price range of {asset!r} on {label} is {rng!r} (not enough history?)")
        p = base.params(und)
        p = replace(p, price_range=rng)
        if vol_shocks:
            up, down = float(ranges.vol_up[t, j]), float(ranges.vol_down[t, j])
            if np.isfinite(up) and np.isfinite(down):
                p = replace(p, vol_shock=replace(p.vol_shock, up=up, down=min(down, 0.99)))
        unds[und] = p
        changed.append(und)
    if not changed:
        raise InvalidInputError("ranges: no assets to apply")
    extra = {}
    if correlation and ranges.correlation is not None and base.correlation is not None:
        C = np.asarray(ranges.correlation[t], dtype=np.float64)
        if not np.all(np.isfinite(C)):
            raise InvalidInputError(f"ranges: correlation on {label} is not finite (not enough history?)")
        from dpm.models.calibration.correlation import check_correlation  # noqa: PLC0415

        order = tuple(next((u for u, a in amap.items() if a == asset), asset) for asset in ranges.assets)
        # underlyings the ranges do not cover keep the model's own correlations with each other and,
        # for lack of anything better, with the covered ones
        if isinstance(base.correlation, Mapping):
            known = tuple(dict.fromkeys(x for pair in base.correlation for x in pair))
        else:
            known = tuple(base.correlation_order)
        union = order + tuple(x for x in known if x not in order)
        if isinstance(base.correlation, Mapping):
            full = base.correlation_matrix(union)
        else:
            full = np.eye(len(union))
            given = np.asarray(base.correlation, dtype=np.float64)
            pos = {x: i for i, x in enumerate(base.correlation_order)}
            for i, a in enumerate(union):
                for j, b in enumerate(union):
                    if a in pos and b in pos:
                        full[i, j] = given[pos[a], pos[b]]
        k = len(order)
        full[:k, :k] = C
        extra = {"correlation": check_correlation(full, repair=True, names=list(union)),
                 "correlation_order": union}
    return replace(base, name=f"{base.name}+dynamic@{label}", underlyings=unds, **extra,
                   source=f"{base.source}; price ranges/vol shocks{' and correlation' if extra else ''} "
                          f"from the {ranges.model} calibration on {label}")
