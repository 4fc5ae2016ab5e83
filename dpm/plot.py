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

__all__ = ["plot_risk_matrix", "plot_smiles"]


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
    """(k, T, iv) of the marks: keys strike/forward/time/iv, or the dpm.market.sample.deribit_marks() keys."""
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
    return np.log(K / F), T, iv


def plot_smiles(
    surface: VolSurface | MarketSnapshot,
    marks: Mapping[str, Any] | None = None,
    ax: Any = None,
    *,
    underlying: str | None = None,
    n_points: int = 200,
) -> Any:
    """Fitted SVI smiles (implied vol in % against log-moneyness ``k = ln(K/F)``), one line per expiry,
    with the input marks as dots in the same colour.

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

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    ts = None
    title = "SVI smiles"
    if isinstance(surface, MarketSnapshot):
        ts = surface.timestamp_ms
        name = underlying if underlying is not None else next(iter(surface.underlyings), None)
        if name is None:
            raise InvalidInputError("snapshot has no underlyings")
        vs = surface[name].vol_surface
        if vs is None:
            raise InvalidInputError(f"underlying {name!r} has no vol surface")
        title = f"{name} SVI smiles"
        surface = vs
    if not isinstance(surface, VolSurface):
        raise InvalidTypeError(f"surface: expected a VolSurface or MarketSnapshot, got {type(surface).__name__}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 5))
    else:
        fig = ax.figure
    mk = _marks_columns(marks, ts) if marks is not None else None
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
        ax.plot(k, 100 * vol, color=c, lw=1.5, label=f"{s.label} (T={s.T:.4g})")
        if mk is not None:
            kq, Tq, ivq = mk
            nearest = np.abs(Tq[:, None] - times[None, :]).argmin(axis=1)
            sel = nearest == i
            ax.plot(kq[sel], 100 * ivq[sel], "o", color=c, ms=3.5, alpha=0.8)
    ax.set_xlabel("log-moneyness k = ln(K/F)")
    ax.set_ylabel("implied vol (%)")
    ax.set_title(title + (" (dots: marks)" if mk is not None else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig
