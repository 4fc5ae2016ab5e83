"""Optional matplotlib pictures. Install the extra: ``pip install dpm[plot]``.

matplotlib is imported inside the functions, so ``import dpm.plot`` works without it; calling a function
without matplotlib raises ``ImportError`` naming the extra.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.snapshot import MS_PER_YEAR, MarketSnapshot
from dpm.market.surface import VolSurface

__all__ = ["plot_model_margins", "plot_regimes", "plot_risk_matrix", "plot_smiles"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "dpm.plot needs matplotlib; install the optional extra with `pip install dpm[plot]`"
        ) from exc
    return plt


def plot_risk_matrix(engine: Any, account: Any, index: int | str | None = None, *,
                     underlying: str | None = None, moves: Any = None, vol_shocks: Any = None,
                     ax: Any = None, path: Any = None) -> Any:
    """Heat map of one account's P&L (USD) over price moves x vol shocks of one underlying.

    The grid comes from :meth:`dpm.engines.margin.MarginEngine.risk_matrix` (the engine's model and
    revaluation core); the worst cell is marked, and the model's standard price range is outlined.
    Returns the matplotlib Figure (saved to ``path`` when given).
    """
    mv, vs, pnl, und = engine.risk_matrix(account, index, underlying=underlying, moves=moves,
                                          vol_shocks=vol_shocks)
    plt = _pyplot()
    from matplotlib.colors import TwoSlopeNorm

    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 4.5))
    else:
        fig = ax.figure
    lim = float(np.max(np.abs(pnl))) or 1.0
    dm = (mv[1] - mv[0]) if mv.size > 1 else 0.01
    dv = (vs[1] - vs[0]) if vs.size > 1 else 0.01
    extent = (100 * (mv[0] - dm / 2), 100 * (mv[-1] + dm / 2), vs[0] - dv / 2, vs[-1] + dv / 2)
    im = ax.imshow(pnl, origin="lower", aspect="auto", extent=extent, cmap="RdYlGn",
                   norm=TwoSlopeNorm(vmin=-lim, vcenter=0.0, vmax=lim))
    fig.colorbar(im, ax=ax, label="P&L (USD)")
    r = engine.model.params(und).price_range
    ax.axvline(-100 * r, color="k", lw=0.8, ls="--")
    ax.axvline(100 * r, color="k", lw=0.8, ls="--", label=f"scan range ±{r:.0%}")
    v, m = np.unravel_index(int(np.argmin(pnl)), pnl.shape)
    ax.plot(100 * mv[m], vs[v], marker="x", color="k", ms=10,
            label=f"worst: {pnl[v, m]:,.0f} USD at {mv[m]:+.1%}, vol {vs[v]:+.2f}")
    ax.set_xlabel(f"{und} price move (%)")
    ax.set_ylabel("vol shock (30-day point)")
    ax.set_title(f"risk matrix of account {getattr(account, 'id', index)!s} ({engine.model.name})")
    ax.legend(loc="upper right", fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def _marks_columns(marks: Mapping[str, Any], timestamp_ms: int | None) -> tuple[np.ndarray, ...]:
    """(K, F, T, iv, bid_iv, ask_iv) of the marks: keys strike/forward/time/iv (optional bid_iv/ask_iv), or the
    dpm.market.sample.deribit_marks() keys. Missing bid/ask are NaN."""
    if "iv" in marks:
        K = np.asarray(marks["strike"], float)
        F = np.asarray(marks["forward"], float)
        T = np.asarray(marks["time"], float)
        iv = np.asarray(marks["iv"], float)
    elif "mark_iv" in marks:
        if timestamp_ms is None:
            raise InvalidInputError("marks with expiry_ms need a MarketSnapshot (for the valuation time)")
        K = np.asarray(marks["strike"], float)
        F = np.asarray(marks["underlying_price"], float)
        T = (np.asarray(marks["expiry_ms"], np.int64) - timestamp_ms) / MS_PER_YEAR
        iv = np.asarray(marks["mark_iv"], float)
    else:
        raise InvalidInputError(
            "marks: expected keys strike, forward, time, iv (or the keys of dpm.market.sample.deribit_marks())"
        )
    nan = np.full(iv.shape, np.nan)
    bid = np.asarray(marks["bid_iv"], float) if "bid_iv" in marks else nan
    ask = np.asarray(marks["ask_iv"], float) if "ask_iv" in marks else nan
    return K, F, T, iv, bid, ask


def plot_smiles(
    surface: VolSurface | MarketSnapshot,
    marks: Mapping[str, Any] | None = None,
    ax: Any = None,
    *,
    underlying: str | None = None,
    n_points: int = 200,
    residuals: bool | None = None,
) -> Any:
    """Fitted smiles (implied vol in % against log-moneyness ``k = ln(K/F)``), one line per expiry labelled
    with its days to expiry, with the input marks as dots in the same colour; below them (``residuals``) a
    panel of model minus mark per quote (dots) and the quote's bid/ask around the mark (bars), in vol points.

    Parameters
    ----------
    surface : VolSurface or MarketSnapshot
        The surface, or a snapshot (its ``underlying``'s surface; default the first underlying).
    marks : mapping, optional
        Arrays ``strike``, ``forward``, ``time`` (years), ``iv`` (decimal), or the columns returned by
        :func:`dpm.market.sample.deribit_marks` (needs a snapshot for the time). Marks are matched to the
        slice with the nearest ``T``.
    ax : matplotlib Axes, optional
        Axes to draw on (default: a new figure).
    underlying : str, optional
        Underlying to draw from a snapshot.
    n_points : int
        Points per smile.
    residuals : bool, optional
        Draw the residual panel (default: when ``marks`` are given and ``ax`` is not). Needs a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    ts = None
    title = "smiles"
    if isinstance(surface, MarketSnapshot):
        ts = surface.timestamp_ms
        name = underlying if underlying is not None else next(iter(surface.underlyings), None)
        if name is None:
            raise InvalidInputError("snapshot has no underlyings")
        vs = surface[name].vol_surface
        if vs is None:
            raise InvalidInputError(f"underlying {name!r} has no vol surface")
        title = f"{name} smiles"
        surface = vs
    if not isinstance(surface, VolSurface):
        raise InvalidTypeError(f"surface: expected a VolSurface or MarketSnapshot, got {type(surface).__name__}")
    mk = _marks_columns(marks, ts) if marks is not None else None
    if residuals is None:
        residuals = mk is not None and ax is None
    if residuals and mk is None:
        raise InvalidInputError("residuals: the residual panel needs marks")
    if residuals and ax is not None:
        raise InvalidInputError("residuals: the residual panel needs a new figure (ax=None)")
    rax = None
    if ax is None and residuals:
        fig, (ax, rax) = plt.subplots(2, 1, figsize=(8, 7.5), sharex=True, height_ratios=(3, 2))
    elif ax is None:
        fig, ax = plt.subplots(figsize=(8, 5))
    else:
        fig = ax.figure
    times = surface.times
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(times)))
    for i, (s, c) in enumerate(zip(surface.slices, colours)):
        if np.isfinite(s.k_min):
            lo, hi = s.k_min, s.k_max
        else:
            half = 3.0 * float(np.sqrt(s.total_variance(0.0)))
            lo, hi = -half, half
        pad = 0.05 * (hi - lo)
        k = np.linspace(lo - pad, hi + pad, n_points)
        vol = np.sqrt(surface.total_variance(k, s.T) / s.T)
        ax.plot(k, 100 * vol, color=c, lw=1.5, label=f"{s.label} ({365.0 * s.T:.1f} d)")
        if mk is not None:
            Kq, Fq, Tq, ivq, bidq, askq = mk
            kq = np.log(Kq / Fq)
            nearest = np.abs(Tq[:, None] - times[None, :]).argmin(axis=1)
            sel = nearest == i
            ax.plot(kq[sel], 100 * ivq[sel], "o", color=c, ms=3.5, alpha=0.8)
            if rax is not None and sel.any():
                model = surface.implied_vol(Kq[sel], Tq[sel], Fq[sel])
                rax.plot(kq[sel], 100 * (model - ivq[sel]), "o", color=c, ms=3.5)
                two = np.isfinite(bidq[sel]) & np.isfinite(askq[sel]) & (bidq[sel] > 0) & (askq[sel] > 0)
                if two.any():
                    rax.vlines(kq[sel][two], 100 * (bidq[sel][two] - ivq[sel][two]),
                               100 * (askq[sel][two] - ivq[sel][two]), color=c, lw=0.8, alpha=0.5)
    ax.set_xlabel("log-moneyness k = ln(K/F)")
    ax.set_ylabel("implied vol (%)")
    ax.set_title(title + (" (dots: marks; legend: days to expiry)" if mk is not None else " (legend: days to expiry)"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if rax is not None:
        rax.axhline(0.0, color="black", lw=0.8)
        rax.set_xlabel("log-moneyness k = ln(K/F)")
        rax.set_ylabel("vol points vs mark")
        rax.set_title("model - mark (dots) and bid/ask around the mark (bars)", fontsize=9)
        rax.grid(True, alpha=0.3)
        rax.set_ylim(-8, 8)
    return fig


def _dates(dates: Any, n: int, name: str = "dates") -> np.ndarray:
    d = np.asarray(dates).astype("datetime64[D]")
    if d.shape != (n,):
        raise InvalidInputError(f"{name}: expected {n} dates, got shape {d.shape}")
    return d


def plot_regimes(dates: Any, regime_prob: Any, correlation: Mapping[str, Any], *, prices: Any = None,
                 price_label: str = "BTC", smooth: int | None = 30, ax: Any = None) -> Any:
    """Stressed-regime probability and dynamic correlations over time (two stacked panels).

    Parameters
    ----------
    dates : array_like of datetime64, shape (T,)
    regime_prob : array_like, shape (T,)
        Probability of the stressed regime (e.g. the filtered one of
        :class:`dpm.models.dependence.regimes.GaussianHMMFit`).
    correlation : mapping label -> array (T,)
        Correlation paths to compare (e.g. DCC, EWMA).
    prices : array_like, shape (T,), optional
        Drawn on a log scale behind the regime probability.
    smooth : int or None
        Also draw the trailing ``smooth``-day mean of the probability (daily probabilities of a
        short-lived regime flicker; the mean shows how often the regime was likely).
    ax : sequence of two Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    p = np.asarray(regime_prob, dtype=np.float64)
    d = _dates(dates, p.size)
    if ax is None:
        fig, ax = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    else:
        fig = ax[0].figure
    a0, a1 = ax
    a0.plot(d, p, color="tab:red", alpha=0.35, lw=0.4, label="P(stressed regime)")
    if smooth:
        k = int(smooth)
        c = np.concatenate([[0.0], np.cumsum(p)])
        idx = np.arange(p.size)
        lo = np.maximum(0, idx - k + 1)
        a0.plot(d, (c[idx + 1] - c[lo]) / (idx - lo + 1), color="tab:red", lw=1.4,
                label=f"trailing {k}-day mean")
    a0.set_ylim(0, 1)
    a0.set_ylabel("probability")
    if prices is not None:
        tw = a0.twinx()
        tw.semilogy(d, _check_len(prices, p.size, "prices"), color="0.2", lw=0.8, label=price_label)
        tw.set_ylabel(f"{price_label} (log scale)")
    a0.legend(loc="upper left", fontsize=8)
    a0.set_title("Regime probability (filtered, no look-ahead)")
    for label, c in correlation.items():
        a1.plot(d, _check_len(c, p.size, f"correlation[{label!r}]"), lw=0.9, label=label)
    a1.set_ylabel("correlation")
    a1.set_title("Dynamic correlation forecasts")
    a1.grid(True, alpha=0.3)
    a1.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def _check_len(x: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.shape != (n,):
        raise InvalidInputError(f"{name}: expected shape ({n},), got {a.shape}")
    return a


def plot_model_margins(dates: Any, margins: Mapping[str, Any], realized_pnl: Any, *, ax: Any = None,
                       title: str = "Margin (drawn as -margin) against realised P&L") -> Any:
    """Each model's margin (as ``-margin``) against the realised P&L, breaches of each marked.

    Parameters
    ----------
    dates : array_like of datetime64, shape (T,)
    margins : mapping model name -> array (T,)
    realized_pnl : array_like, shape (T,)
    ax : Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    pnl = np.asarray(realized_pnl, dtype=np.float64)
    d = _dates(dates, pnl.size)
    if not margins:
        raise InvalidInputError("margins: no model to draw")
    if ax is None:
        fig, ax = plt.subplots(figsize=(11, 5))
    else:
        fig = ax.figure
    ax.plot(d, pnl, lw=0.5, color="0.6", label="realised P&L")
    colours = plt.cm.tab10(np.arange(len(margins)) % 10)
    for (label, m), c in zip(margins.items(), colours):
        mm = _check_len(m, pnl.size, f"margins[{label!r}]")
        breach = -pnl > mm
        ax.plot(d, -mm, lw=0.9, color=c, label=f"{label} ({int(breach.sum())} breaches)")
        ax.scatter(d[breach], pnl[breach], s=10, color=c, zorder=3)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
